"""The command line: each subcommand on a real ledger, and errors as one line without traceback."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from carbon_callbacks.cli import main
from carbon_callbacks.ledger import Ledger
from tests.helpers.ledger_records import make_record


def _cli(*args: str, env_ledger: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if env_ledger is not None:
        env["CARBON_CALLBACKS_LEDGER"] = str(env_ledger)
    return subprocess.run(
        [sys.executable, "-m", "carbon_callbacks", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def _one_line_error(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("carbon-callbacks: error: ")
    for w in words:
        assert w in lines[0]


@pytest.fixture
def filled(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "l.sqlite"
    ledger = Ledger.open(path)
    run_id = ledger.start_run({"project": "digits", "team": "ml", "framework": "lightning"})
    for i in range(5):
        ledger.add_epoch(run_id, make_record(i, metric=0.5 + 0.1 * i - 0.01 * i * i))
    ledger.end_run(run_id, stopped_early=True, stop_reason="gain fell; shoulder at epoch 3")
    ledger.close()
    return path, run_id


# --------------------------------------------------------------------------- errors


def test_empty_ledger_is_one_clear_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty.sqlite"
    empty.touch()  # a ledger file with nothing written yet
    for cmd in ("runs", "report", "export"):
        proc = _cli(cmd, env_ledger=empty)
        _one_line_error(proc, "holds no runs yet")


def test_the_default_ledger_before_any_run_holds_no_runs(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CARBON_CALLBACKS_LEDGER"}
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")
    proc = subprocess.run(
        [sys.executable, "-m", "carbon_callbacks", "runs"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    _one_line_error(proc, "holds no runs yet")
    assert not (tmp_path / "xdg").exists()  # reading does not create a ledger


@pytest.mark.parametrize("cmd", ["runs", "report", "export", "show RUN", "plot RUN"])
def test_a_mistyped_ledger_path_says_there_is_no_file_there(tmp_path: Path, cmd: str) -> None:
    typo = tmp_path / "ledgr.sqlite"
    args = [a.replace("RUN", "abc") for a in cmd.split()]
    _one_line_error(_cli(*args, "--ledger", str(typo)), f"no ledger file at {typo}", "--ledger")
    _one_line_error(_cli(*args, env_ledger=typo), f"no ledger file at {typo}", "CARBON_CALLBACKS")
    assert not typo.exists()


@pytest.mark.parametrize("cmd", ["show", "plot", "compare-regions"])
def test_unknown_run_id_is_one_clear_line(filled, cmd: str) -> None:
    path, _ = filled
    _one_line_error(_cli(cmd, "doesnotexist", "--ledger", str(path)), "no run 'doesnotexist'")


def test_unwritable_output_path_is_one_clear_line(filled, tmp_path: Path) -> None:
    path, run_id = filled
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    proc = _cli("plot", run_id, "--ledger", str(path), "-o", str(blocker / "out.png"))
    _one_line_error(proc, "cannot write", "does not exist")
    proc = _cli("export", "--ledger", str(path), "-o", str(tmp_path))
    _one_line_error(proc, "cannot write", "folder")


def test_bad_report_grouping_is_one_clear_line(filled) -> None:
    path, _ = filled
    _one_line_error(_cli("report", "--ledger", str(path), "--by", "colour"), "--by", "colour")


def test_corrupt_ledger_read_is_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"\x00garbage" * 500)
    _one_line_error(_cli("runs", "--ledger", str(bad)), "corrupt")


# --------------------------------------------------------------------------- commands


def test_runs_lists_the_run(filled, capsys) -> None:
    path, run_id = filled
    assert main(["runs", "--ledger", str(path)]) == 0
    out = capsys.readouterr().out
    assert run_id in out and "digits" in out and "stopped early" in out
    assert main(["runs", "--ledger", str(path), "--format", "json"]) == 0
    [run] = json.loads(capsys.readouterr().out)
    assert run["run_id"] == run_id and run["epochs"] == 5


def test_runs_csv_gives_numbers_in_base_units_as_report_does(filled, capsys) -> None:
    path, run_id = filled
    assert main(["runs", "--ledger", str(path), "--format", "csv"]) == 0
    [row] = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert row["run_id"] == run_id and row["status"] == "stopped early"
    assert float(row["energy_kwh"]) == pytest.approx(0.005)
    assert float(row["co2_g"]) == pytest.approx(2.0)
    assert row["started_utc"].endswith("Z") and int(row["epochs"]) == 5
    assert main(["runs", "--ledger", str(path)]) == 0
    assert "5 Wh" in capsys.readouterr().out  # the table keeps readable units


def test_since_is_midnight_utc_even_on_summer_time(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    ledger = Ledger.open(path)
    midnight = 1_719_792_000.0  # 2024-07-01T00:00:00Z, when Paris is on summer time (UTC+2)
    before = ledger.start_run({"project": "p", "start_wall": midnight - 1800})
    after = ledger.start_run({"project": "p", "start_wall": midnight + 1800})
    ledger.close()
    env = dict(os.environ, TZ="Europe/Paris", CARBON_CALLBACKS_LEDGER=str(path))
    for flag, expected in (("--since", [after]), ("--until", [before])):
        cmd = "runs" if flag == "--since" else "report"
        args = [cmd, flag, "2024-07-01", "--format", "json"]
        if cmd == "report":
            args += ["--by", "project"]
        proc = subprocess.run(
            [sys.executable, "-m", "carbon_callbacks", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout)
        if cmd == "runs":
            assert [r["run_id"] for r in out] == expected
        else:
            assert [row["runs"] for row in out] == [len(expected)]


def test_env_var_selects_the_ledger(filled) -> None:
    path, run_id = filled
    proc = _cli("runs", env_ledger=path)
    assert proc.returncode == 0 and run_id in proc.stdout


def test_show_prints_every_epoch_with_metric_and_gain(filled, capsys) -> None:
    path, run_id = filled
    assert main(["show", run_id[:6], "--ledger", str(path)]) == 0
    out = capsys.readouterr().out
    assert "stopped early: gain fell" in out
    assert "val_acc" in out and "gain/kg" in out
    assert main(["show", run_id, "--ledger", str(path), "--format", "csv"]) == 0
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3, 4]
    assert float(rows[4]["val_acc"]) == pytest.approx(0.5 + 0.4 - 0.16)


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_show_of_a_run_longer_than_it_holds_prints_what_the_whole_table_would(
    tmp_path: Path, capsys, monkeypatch, fmt: str
) -> None:
    from carbon_callbacks.cli import commands
    from carbon_callbacks.reports import epochs_rows, render

    monkeypatch.setattr(commands, "SHOW_SAMPLE", 40)  # a long run, in miniature
    path = tmp_path / "l.sqlite"
    ledger = Ledger.open(path)
    run_id = ledger.start_run({"project": "long"})
    records = [make_record(i, metric=0.5 + 0.001 * i) for i in range(150)]
    records[3] = make_record(3, stage="eval")  # not a training epoch: no gain of its own
    ledger.import_runs([({"run_id": run_id}, records)])
    ledger.close()
    assert main(["show", run_id, "--ledger", str(path), "--format", fmt]) == 0
    out = capsys.readouterr().out
    whole = render(*epochs_rows(records), fmt)
    if fmt != "table":
        assert out == (whole if whole.endswith("\n") else whole + "\n")
        return
    # The table's cells are the same; its number columns are as wide as any number below
    # 1e5 prints, since the rows past the first 40 were not seen when the widths were set.
    lines = out.splitlines()
    table = lines[lines.index("") + 1 :]
    expected = whole.splitlines()
    assert table[0].split() == expected[0].split()  # the header; then the rule, then:
    assert [ln.split() for ln in table[2:]] == [ln.split() for ln in expected[2:]]
    assert len({len(ln) for ln in table[2:]}) == 1  # every epoch line aligned


def test_compare_regions_lists_lowest_first(filled, capsys) -> None:
    path, run_id = filled
    assert main(["compare-regions", run_id, "--ledger", str(path), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 20
    assert [r["co2_g"] for r in rows] == sorted(r["co2_g"] for r in rows)
    assert main(["compare-regions", run_id, "--ledger", str(path), "--kind", "cloud"]) == 0
    out = capsys.readouterr().out
    assert "the same energy elsewhere" in out and ("gcp:" in out or "aws:" in out)


def test_plot_writes_the_png_and_prints_its_path(filled, tmp_path: Path, capsys) -> None:
    path, run_id = filled
    out = tmp_path / "run.png"
    assert main(["plot", run_id, "--ledger", str(path), "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_import_then_export_csv(tmp_path: Path, capsys) -> None:
    cc = tmp_path / "emissions.csv"
    cc.write_text(
        "timestamp,project_name,run_id,duration,emissions,energy_consumed,cpu_energy\n"
        "2025-01-02T03:04:05,old-project,r1,100,0.002,0.01,0.01\n"
    )
    path = tmp_path / "l.sqlite"
    assert main(["import", str(cc), "--ledger", str(path)]) == 0
    assert "1 new run" in capsys.readouterr().out
    out = tmp_path / "all.csv"
    assert main(["export", "--ledger", str(path), "--format", "csv", "-o", str(out)]) == 0
    [row] = list(csv.DictReader(out.open()))
    assert row["project"] == "old-project" and float(row["co2_g"]) == pytest.approx(2.0)


def test_import_of_a_missing_file_is_one_clear_line(tmp_path: Path) -> None:
    proc = _cli("import", str(tmp_path / "nope.csv"), "--ledger", str(tmp_path / "l.sqlite"))
    _one_line_error(proc, "cannot read")


def test_spool_flush_writes_records_kept_while_the_file_was_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    path.write_bytes(b"corrupt" * 400)
    ledger = Ledger.open(path)
    run_id = ledger.start_run({"project": "kept"})
    ledger.add_epoch(run_id, make_record(0))
    assert ledger.spooled() == 2

    proc = _cli("spool", "flush", "--ledger", str(path))
    _one_line_error(proc, "corrupt", "move it aside")
    path.rename(tmp_path / "l.sqlite.bad")
    proc = _cli("spool", "status", "--ledger", str(path))
    assert proc.returncode == 0 and proc.stdout.startswith("2 spooled writes")
    proc = _cli("spool", "flush", "--ledger", str(path))
    assert proc.returncode == 0 and "wrote 2 spooled records" in proc.stdout
    assert [e.epoch for e in Ledger.open(path).epochs(run_id)] == [0]


def test_spool_flush_takes_a_spool_file_for_another_ledger(tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    # Records spooled for a database that is gone for good go to a SQLite ledger instead.
    spool = tmp_path / "team.spool.jsonl"
    dead = Ledger.open("postgresql://u:pw@127.0.0.1:9/team", spool=spool, max_wait=5)
    run_id = dead.start_run({"project": "moved"})
    dead.add_epoch(run_id, make_record(0))
    dead.close()
    target = tmp_path / "l.sqlite"
    proc = _cli("spool", "flush", str(spool), "--ledger", str(target))
    assert proc.returncode == 0 and "wrote 2 spooled records" in proc.stdout, proc.stderr
    [run] = Ledger.open(target).runs()
    assert run.run_id == run_id and run.project == "moved" and run.epochs == 1
    _one_line_error(
        _cli("spool", "flush", str(tmp_path / "nope.jsonl"), "--ledger", str(target)),
        "no spool file at",
    )


def test_help_lists_every_subcommand() -> None:
    proc = _cli("--help")
    assert proc.returncode == 0
    for cmd in (
        "detect", "runs", "report", "show", "plot", "compare-regions", "import", "export",
        "spool", "demo",
    ):  # fmt: skip
        assert cmd in proc.stdout


# --------------------------------------------------------------------------- resources


@pytest.fixture
def ledger_calls(monkeypatch) -> dict[str, list]:
    """Which ledgers the CLI opened and closed, and how often it ran the runs() query."""
    calls: dict[str, list] = {"opened": [], "closed": [], "runs": []}
    real_init, real_close, real_runs = Ledger.__init__, Ledger.close, Ledger.runs

    def init(self, *a, **k):
        real_init(self, *a, **k)
        calls["opened"].append(self)

    def close(self):
        calls["closed"].append(self)
        real_close(self)

    def runs(self, **k):
        calls["runs"].append(k)
        return real_runs(self, **k)

    monkeypatch.setattr(Ledger, "__init__", init)
    monkeypatch.setattr(Ledger, "close", close)
    monkeypatch.setattr(Ledger, "runs", runs)
    return calls


@pytest.mark.parametrize("cmd", ["runs", "report", "show", "export", "spool", "import"])
def test_every_command_closes_its_ledger_even_when_it_fails(
    filled, tmp_path: Path, ledger_calls, cmd: str
) -> None:
    path, run_id = filled
    args = {
        "runs": ["runs"],
        "report": ["report"],
        "show": ["show", "no-such-run"],  # fails after opening the ledger
        "export": ["export", "--run", "no-such-run"],
        "spool": ["spool", "flush"],
        "import": ["import", str(tmp_path / "missing.csv")],
    }[cmd]
    main([*args, "--ledger", str(path)])
    assert ledger_calls["opened"] and ledger_calls["closed"] == ledger_calls["opened"]


def test_demo_closes_its_ledger_when_training_is_interrupted(
    tmp_path: Path, ledger_calls, monkeypatch
) -> None:
    pytest.importorskip("lightning", reason="the demo trains with Lightning")

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("carbon_callbacks.cli.demo._fit", interrupted)
    code = main(["demo", "--ledger", str(tmp_path / "l.sqlite"), "--output-dir", str(tmp_path)])
    assert code == 130
    assert len(ledger_calls["opened"]) == 1
    assert ledger_calls["closed"] == ledger_calls["opened"]


def test_export_of_chosen_runs_reads_the_run_list_once(filled, ledger_calls, capsys) -> None:
    path, run_id = filled
    ledger = Ledger.open(path)
    other = ledger.start_run({"project": "other"})
    ledger.add_epoch(other, make_record(0))
    ledger.close()
    ledger_calls["runs"].clear()
    assert main(["export", "--ledger", str(path), "--run", run_id[:6], "--run", other]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert {x["run_id"] for x in lines if x["type"] == "run"} == {run_id, other}
    assert sum(x["type"] == "epoch" for x in lines) == 6
    assert len(ledger_calls["runs"]) == 1


@pytest.mark.parametrize("value", ["0", "-3"])
def test_runs_limit_must_be_positive(filled, value: str) -> None:
    path, _ = filled
    proc = _cli("runs", "--ledger", str(path), "--limit", value)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--limit" in proc.stderr and "positive" in proc.stderr


def test_runs_limit_keeps_the_last_runs(filled, capsys) -> None:
    path, first = filled
    ledger = Ledger.open(path)
    second = ledger.start_run({"project": "later"})
    ledger.close()
    assert main(["runs", "--ledger", str(path), "--limit", "1", "--format", "json"]) == 0
    assert [r["run_id"] for r in json.loads(capsys.readouterr().out)] == [second]
