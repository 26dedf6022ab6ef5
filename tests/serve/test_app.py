"""`carbon-callbacks serve` without a browser: each page's HTML, numbers, escaping and safety.

The app runs on 127.0.0.1 (a free port, in a thread) over a real SQLite ledger opened
read-only; the numbers are checked against `carbon-callbacks report` and the ledger itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import re
import urllib.error
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="serve needs the [serve] extra")
pytest.importorskip("uvicorn", reason="serve needs the [serve] extra")


from carbon_callbacks.cli import main  # noqa: E402
from carbon_callbacks.ledger import Ledger  # noqa: E402
from carbon_callbacks.reports import format_energy, format_grams, summarize  # noqa: E402
from carbon_callbacks.reports.plot import knee_epoch  # noqa: E402
from carbon_callbacks.serve import create_app  # noqa: E402
from carbon_callbacks.serve.compare import front_knee, pareto_front  # noqa: E402
from carbon_callbacks.serve.overview import energy_saved_kwh, planned_epochs  # noqa: E402
from carbon_callbacks.serve.runs import hourly_intensity  # noqa: E402
from tests.helpers.serve_ledger import (  # noqa: E402
    HOSTILE_METRIC,
    HOSTILE_NAME,
    HOSTILE_TAG,
    fill_team_ledger,
    make_study,
    served,
)

# --------------------------------------------------------------------------- helpers


class _Tables(HTMLParser):
    """Rows of every table by id: each cell's text and attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[tuple[str, dict[str, str]]]]] = {}
        self._table: str | None = None
        self._cell: tuple[list[str], dict[str, str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "table":
            self._table = a.get("id", "")
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag == "td" and self._table is not None:
            self._cell = ([], a)

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None and self._table is not None:
            text, attrs = self._cell
            self.tables[self._table][-1].append((" ".join("".join(text).split()), attrs))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell[0].append(data)


def tables(html: str) -> dict[str, list[list[tuple[str, dict[str, str]]]]]:
    parser = _Tables()
    parser.feed(html)
    return {k: [r for r in rows if r] for k, rows in parser.tables.items()}


def get(url: str, **headers: str) -> tuple[int, dict[str, str], str]:
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def report_json(ledger: Path, *args: str) -> list[dict]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["report", "--ledger", str(ledger), "--format", "json", *args]) == 0
    return json.loads(out.getvalue())


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    path = tmp_path_factory.mktemp("serve") / "team.sqlite"
    return path, fill_team_ledger(path)


@pytest.fixture(scope="module")
def site(team: tuple[Path, dict[str, str]]):
    path, _ = team
    ledger = Ledger.open(path, read_only=True)
    with served(create_app(ledger)) as url:
        yield url
    ledger.close()


# --------------------------------------------------------------------------- overview


@pytest.mark.parametrize("key", ["team", "project", "user", "month"])
def test_overview_tables_show_the_numbers_report_prints(
    team: tuple[Path, dict[str, str]], site: str, key: str
) -> None:
    path, _ = team
    status, _, html = get(site + "/")
    assert status == 200
    rows = tables(html)[f"by-{key}"]
    expected = report_json(path, "--by", key)
    assert len(rows) == len(expected) > 1
    for row, want in zip(rows, expected, strict=True):
        cells = {a["data-col"]: (text, a["data-value"]) for text, a in row if "data-col" in a}
        assert row[0][0] == want[key]
        assert int(cells["runs"][1]) == want["runs"]
        assert int(cells["epochs"][1]) == want["epochs"]
        assert float(cells["energy_kwh"][1]) == pytest.approx(want["energy_kwh"], rel=1e-12)
        assert float(cells["co2_g"][1]) == pytest.approx(want["co2_g"], rel=1e-12)
        assert float(cells["car_km"][1]) == pytest.approx(want["car_km"], rel=1e-12)
        # What a person reads is the report's number in the report's units.
        assert cells["energy_kwh"][0] == format_energy(want["energy_kwh"])
        assert cells["co2_g"][0] == format_grams(want["co2_g"])


def test_overview_time_range_matches_report_since_until(
    team: tuple[Path, dict[str, str]], site: str
) -> None:
    path, _ = team
    _, _, html = get(site + "/?since=2023-12-01&until=2024-01-01")
    [want] = report_json(path, "--by", "month", "--since", "2023-12-01", "--until", "2024-01-01")
    [row] = tables(html)["by-month"]
    assert row[0][0] == want["month"] == "2023-12"
    cells = {a["data-col"]: a["data-value"] for _, a in row if "data-col" in a}
    assert int(cells["runs"]) == want["runs"]
    assert float(cells["co2_g"]) == pytest.approx(want["co2_g"], rel=1e-12)


def test_overview_tag_filter_and_totals_with_ranges_and_savings(
    team: tuple[Path, dict[str, str]], site: str
) -> None:
    path, _ = team
    _, _, html = get(site + "/?tag=variant%3Daware")
    runs = Ledger.open(path, read_only=True).runs(tags={"variant": "aware"})
    [total] = summarize(runs, ())
    assert 0 < len(runs) < 12
    assert f'data-value="{total.co2_g}"' in html
    assert f'data-low="{total.co2_g_low}" data-high="{total.co2_g_high}"' in html
    assert total.co2_g_low < total.co2_g < total.co2_g_high
    assert f"{total.stopped_early} of {total.finished} ended runs" in html
    saved = math.fsum(kwh for r in runs if (kwh := energy_saved_kwh(r)) is not None)
    assert saved > 0 and format_energy(saved) in html


def test_overview_of_an_empty_selection_says_so(site: str) -> None:
    status, _, html = get(site + "/?project=nothing-by-this-name")
    assert status == 200 and "No runs match these filters" in html


# --------------------------------------------------------------------------- runs table


def test_runs_page_is_the_ledgers_sorted_page(team: tuple[Path, dict[str, str]], site: str) -> None:
    path, _ = team
    _, _, html = get(site + "/runs?sort=co2&dir=desc&per_page=25&page=1")
    everything = sorted(
        Ledger.open(path, read_only=True).runs(), key=lambda r: (r.co2_g, r.run_id), reverse=True
    )
    shown = re.findall(r'<tr data-run="([0-9a-f]+)">', html)
    assert shown == [r.run_id for r in everything]
    assert 'data-total="12"' in html and "runs 1–12 of 12" in html


def test_runs_page_filters_and_pages(team: tuple[Path, dict[str, str]], site: str) -> None:
    path, roles = team
    _, _, html = get(site + "/runs?status=stopped&sort=started&dir=asc")
    stopped = [r.run_id for r in Ledger.open(path, read_only=True).runs() if r.stopped_early]
    assert re.findall(r'<tr data-run="([0-9a-f]+)">', html) == stopped
    _, _, html = get(site + "/runs?status=running")
    assert re.findall(r'<tr data-run="([0-9a-f]+)">', html) == [roles["running"]]
    assert "running/killed" in html
    _, _, page2 = get(site + "/runs?per_page=25&page=2")
    assert "no runs" not in page2 and 'data-total="12"' in page2
    assert re.findall(r'<tr data-run="', page2) == []  # past the end: no rows


@pytest.mark.parametrize(
    ("query", "name"),
    [("sort=start_wall", "sort"), ("page=0", "page"), ("per_page=7", "per_page"),
     ("status=done", "status"), ("since=yesterday", "since"), ("tag=novalue", "tag"),
     ("dir=up", "dir")],
)  # fmt: skip
def test_a_bad_parameter_is_a_400_page_naming_it(site: str, query: str, name: str) -> None:
    status, _, html = get(site + "/runs?" + query)
    assert status == 400
    message = re.search(r'<p class="error" id="error-message">(.*?)</p>', html)
    assert message and message.group(1).startswith(f"{name}: ")


# --------------------------------------------------------------------------- one run


def test_run_page_shows_user_text_as_text(team: tuple[Path, dict[str, str]], site: str) -> None:
    _, roles = team
    status, _, html = get(site + f"/runs/{roles['hostile']}")
    assert status == 200
    for hostile in (HOSTILE_NAME, HOSTILE_METRIC, HOSTILE_TAG):
        assert hostile not in html
    assert "&lt;script&gt;alert(&#39;run&#39;)&lt;/script&gt;" in html
    # Chart data carries no raw angle brackets, so no text in it can close its script block.
    for block in re.findall(r'<script type="application/json"[^>]*>(.*?)</script>', html, re.S):
        assert "<" not in block and ">" not in block
        json.loads(block)


def test_run_page_marks_shoulder_and_stop_and_lists_regions_and_hours(
    team: tuple[Path, dict[str, str]], site: str
) -> None:
    path, roles = team
    ledger = Ledger.open(path, read_only=True)
    run = ledger.run(roles["stopped"])
    records = ledger.epochs(run.run_id)
    _, _, html = get(site + f"/runs/{run.run_id}")
    # The knee of the metric-vs-CO2e curve, as `carbon-callbacks plot` marks a ledger run's.
    shoulder = knee_epoch(records, "val_acc", "max")
    assert shoulder is not None
    assert f'<strong id="shoulder-epoch">{shoulder}</strong>' in html
    assert f'<strong id="stop-epoch">{records[-1].epoch}</strong>' in html
    assert run.stop_reason in html
    regions = tables(html)["regions"]
    assert len(regions) == 15 and [int(r[0][0]) for r in regions] == list(range(1, 16))
    hours = tables(html)["hours"]
    spanned = math.ceil(records[-1].end_wall / 3600) - math.floor(records[0].start_wall / 3600)
    assert len(hours) == len(hourly_intensity(records)) == spanned
    assert [float(r[3][1]["data-value"]) for r in hours] == pytest.approx([400.0] * spanned)
    assert len(tables(html)["epochs"]) == len(records)
    _, _, cloud = get(site + f"/runs/{run.run_id}?kind=cloud")
    assert {r[2][0] for r in tables(cloud)["regions"]} <= {"gcp", "aws", "azure"}


def test_an_unknown_run_is_a_404_page(site: str) -> None:
    status, _, html = get(site + "/runs/ffffffffffff")
    assert status == 404 and "no run &#39;ffffffffffff&#39;" in html


# --------------------------------------------------------------------------- compare


def test_compare_page_puts_runs_on_the_front(team: tuple[Path, dict[str, str]], site: str) -> None:
    path, _ = team
    ids = [r.run_id for r in Ledger.open(path, read_only=True).runs()]
    _, _, html = get(site + "/compare?run=" + ",".join(ids))
    rows = tables(html)["points"]
    assert len(rows) == len(ids)
    front = [r for r in rows if r[5][0] in ("yes", "knee")]
    assert front and all(r[1][0] in ("completed", "stopped early") for r in front)
    # No shown point both cheaper and better than a front point.
    pts = [(float(r[3][1]["data-value"]), float(r[2][1]["data-value"])) for r in rows]
    for f in front:
        fc, fm = float(f[3][1]["data-value"]), float(f[2][1]["data-value"])
        assert not any(c < fc and m > fm for c, m in pts)


def test_pareto_front_keeps_only_unbeaten_points() -> None:
    pts = [(1.0, 0.80), (2.0, 0.90), (2.5, 0.85), (3.0, 0.95), (4.0, 0.95), (0.5, 0.5)]
    assert pareto_front(pts, maximize=True) == [5, 0, 1, 3]
    losses = [(1.0, 0.5), (2.0, 0.3), (3.0, 0.4)]
    assert pareto_front(losses, maximize=False) == [0, 1]


def test_front_knee_is_where_the_trade_off_bends() -> None:
    bent = [(1.0, 0.5), (2.0, 0.9), (3.0, 0.93), (10.0, 0.95)]
    assert front_knee(bent, maximize=True) == 1
    assert front_knee(bent[:2], maximize=True) is None  # two points: no bend to find
    straight = [(1.0, 0.1), (2.0, 0.2), (3.0, 0.3)]
    assert front_knee(straight, maximize=True) is None


# --------------------------------------------------------------------------- pieces


def test_hourly_intensity_shares_an_epoch_between_the_hours_it_spans() -> None:
    from dataclasses import replace

    from tests.helpers.ledger_records import make_record

    hour = 360_000.0  # 100 h after the epoch: an hour boundary
    # 1.5 Wh over 00:30-01:30 at 100 g/kWh, then 1 Wh over 01:30-01:40 at 300 g/kWh.
    a = replace(make_record(0, energy_kwh=0.003, intensity=100.0), start_wall=hour + 1800.0,
                end_wall=hour + 5400.0)
    b = replace(make_record(1, energy_kwh=0.001, intensity=300.0), start_wall=hour + 5400.0,
                end_wall=hour + 6000.0)
    first, second = hourly_intensity([a, b])
    assert (first.hour, second.hour) == (hour, hour + 3600.0)
    assert first.energy_kwh == pytest.approx(0.0015) and first.g_per_kwh == pytest.approx(100.0)
    assert second.energy_kwh == pytest.approx(0.0025)
    assert second.g_per_kwh == pytest.approx((0.0015 * 100 + 0.001 * 300) / 0.0025)


def test_energy_saved_is_known_only_where_planned_epochs_are(team) -> None:
    path, roles = team
    ledger = Ledger.open(path, read_only=True)
    stopped = ledger.run(roles["stopped"])
    assert planned_epochs(stopped) == 12
    assert energy_saved_kwh(stopped) == pytest.approx(
        (12 - stopped.epochs) * stopped.energy_kwh / stopped.epochs
    )
    assert energy_saved_kwh(ledger.run(roles["completed"])) is None


# --------------------------------------------------------------------------- safety


def test_serving_every_page_leaves_the_ledger_file_as_it_was(team, site) -> None:
    path, roles = team
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    listing = sorted(p.name for p in path.parent.iterdir())
    for page in ("/", "/runs", f"/runs/{roles['hostile']}", f"/compare?run={roles['stopped']}"):
        assert get(site + page)[0] == 200
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in path.parent.iterdir()) == listing


def test_responses_forbid_outside_scripts_framing_and_other_hosts(site: str) -> None:
    status, headers, html = get(site + "/")
    assert status == 200
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert headers["x-content-type-options"] == "nosniff"
    # Every script and stylesheet is this server's own.
    assert set(re.findall(r'<script src="([^"]+)"', html)) == {
        "/static/plotly.min.js", "/static/app.js"
    }  # fmt: skip
    assert re.findall(r'href="(/static/[^"]+\.css)"', html) == ["/static/app.css"]
    assert "http://" not in html.replace(site, "") and "https://" not in html
    status, headers, js = get(site + "/static/plotly.min.js")
    assert status == 200 and len(js) > 1_000_000 and "javascript" in headers["content-type"]
    assert get(site + "/", Host="attacker.example")[0] == 400
    req = urllib.request.Request(site + "/runs", data=b"x=1", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 405


def test_an_unreachable_database_is_a_503_page_without_its_password() -> None:
    ledger = Ledger.open(
        "postgresql://team:s3cret-pw@127.0.0.1:9/ledger", read_only=True, timeout=1
    )
    with served(create_app(ledger)) as url:
        status, _, html = get(url + "/")
    assert status == 503
    assert "s3cret-pw" not in html
    assert "team:***@127.0.0.1:9" in html


# --------------------------------------------------------------------------- the command


def test_serve_refuses_a_port_in_use_in_one_line(tmp_path: Path, capsys) -> None:
    from carbon_callbacks.serve.server import bind

    taken = bind("127.0.0.1", 0)
    try:
        port = taken.getsockname()[1]
        code = main(["serve", "--ledger", str(tmp_path / "l.sqlite"), "--port", str(port)])
    finally:
        taken.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("carbon-callbacks: error: --port: cannot listen on 127.0.0.1")
    assert not (tmp_path / "l.sqlite").exists()  # reading only: nothing created



# --------------------------------------------------------------------------- an Optuna study


def test_compare_shows_a_studys_trials_with_pruned_ones_off_the_front(tmp_path: Path) -> None:
    pytest.importorskip("optuna")
    db = tmp_path / "study.db"
    name = make_study(db)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    ledger = Ledger.open(tmp_path / "l.sqlite", read_only=True)
    with served(create_app(ledger, optuna_storage=f"sqlite:///{db}")) as url:
        status, _, html = get(url + "/compare?study=" + name)
        _, _, index = get(url + "/compare")
    assert status == 200
    assert f'<option value="{name}"' in index
    rows = {r[0][0]: r for r in tables(html)["points"]}
    assert len(rows) == 10
    pruned = {k for k, r in rows.items() if r[1][0] == "pruned"}
    assert pruned == {"trial 3", "trial 6", "trial 9"}
    for key in pruned:
        assert rows[key][5][0] == ""  # never on the front
        assert float(rows[key][2][1]["data-value"]) > 0  # drawn at its last reported value
    front = [k for k, r in rows.items() if r[5][0] in ("yes", "knee")]
    assert front and all(rows[k][1][0] == "complete" for k in front)
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before  # read, never written


def test_a_study_storage_that_is_not_there_fails_at_start(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path / "l.sqlite", read_only=True)
    with pytest.raises(ValueError, match="--optuna-storage: no SQLite file"):
        create_app(ledger, optuna_storage=f"sqlite:///{tmp_path / 'missing.db'}")
    assert not (tmp_path / "missing.db").exists()
