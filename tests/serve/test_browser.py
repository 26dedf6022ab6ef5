"""`carbon-callbacks serve` in a real headless Chromium: every page, as a person sees it.

The server is the real command (`python -m carbon_callbacks serve --port 0`) on 127.0.0.1,
over a SQLite ledger and an Optuna study storage made here; Debian's `chromium` and
`chromium-driver` drive the pages through Selenium. Each page is checked for its numbers (the
Overview against `carbon-callbacks report`), for charts actually drawn, for no error in the
browser's console (a blocked script would show there), and for user text shown as text; a
screenshot of each page is saved in the test's temp folder (its path is printed).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip(
        "needs Debian's chromium and chromium-driver (`make test` installs them as root with "
        "apt-get; here they are not installed)",
        allow_module_level=True,
    )
pytest.importorskip("selenium", reason="the browser tests drive Chromium with selenium (dev extra)")
pytest.importorskip("starlette", reason="serve needs the [serve] extra")
pytest.importorskip("optuna", reason="the Compare page's study is an Optuna study")

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import NoAlertPresentException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from carbon_callbacks.cli import main  # noqa: E402
from carbon_callbacks.ledger import Ledger  # noqa: E402
from carbon_callbacks.reports import format_energy, format_grams  # noqa: E402
from carbon_callbacks.reports.plot import knee_epoch  # noqa: E402
from tests.helpers.serve_ledger import (  # noqa: E402
    HOSTILE_METRIC,
    HOSTILE_NAME,
    HOSTILE_TAG,
    fill_team_ledger,
    make_study,
)

RUNS = 30  # more than one page of 25


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("screenshots")
    yield folder
    print(f"\nserve screenshots: {folder}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("serve-browser")
    ledger = folder / "team.sqlite"
    roles = fill_team_ledger(ledger, runs=RUNS)
    study = make_study(folder / "study.db")
    proc = subprocess.Popen(
        [sys.executable, "-m", "carbon_callbacks", "serve", "--ledger", str(ledger),
         "--port", "0", "--optuna-storage", f"sqlite:///{folder / 'study.db'}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        found = re.search(r"at (http://127\.0\.0\.1:\d+)/", line)
        if not found:
            proc.kill()
            pytest.fail(f"serve did not start: {line!r} {proc.communicate(timeout=10)}")
        yield {"url": found.group(1), "ledger": ledger, "roles": roles, "study": study}
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1200", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)  # fmt: skip
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver named explicitly: Selenium then looks nothing up on the network.
    try:
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    except Exception as exc:  # noqa: BLE001 - a browser that cannot start here is a skip
        pytest.skip(f"Chromium could not start under chromedriver: {exc}")
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def visit(driver: Any, url: str, shots: Path, name: str) -> None:
    """Load a page, wait for its charts, check the console is clean, save a screenshot."""
    driver.get(url)
    settle(driver)
    screenshot(driver, shots, name)


def click_through(driver: Any, element: Any) -> None:
    """Click a link or button that loads a new page, and wait until that page has settled."""
    from selenium.webdriver.support import expected_conditions

    old = driver.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(driver, 60).until(expected_conditions.staleness_of(old))
    settle(driver)


def settle(driver: Any) -> None:
    WebDriverWait(driver, 60).until(
        lambda d: d.execute_script("return document.body.dataset.chartsDrawn") is not None
    )
    blocks = driver.execute_script(
        "return document.querySelectorAll('script[data-chart]').length"
    )
    assert int(driver.execute_script("return document.body.dataset.chartsDrawn")) == blocks
    for chart in driver.find_elements(By.CSS_SELECTOR, "div.chart"):
        assert chart.find_elements(By.CSS_SELECTOR, "svg.main-svg"), chart.get_attribute("id")
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors  # a script refused by the page's policy would be logged here
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018 - no user text ran as a script


def screenshot(driver: Any, shots: Path, name: str) -> None:
    """The whole page, not only the window, as a PNG a person can open."""
    import base64

    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    width, height = int(size["width"]), min(int(size["height"]), 10_000)
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )
    try:
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    path = shots / f"{name}.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    assert path.stat().st_size > 20_000, path


def column(driver: Any, table: str, index: int) -> list[str]:
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0] + ' tbody tr')]"
        ".map(r => r.cells[arguments[1]].innerText.trim())",
        f"#{table}",
        index,
    )


def report_json(ledger: Path, by: str) -> list[dict[str, Any]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["report", "--ledger", str(ledger), "--format", "json", "--by", by]) == 0
    return json.loads(out.getvalue())


def test_overview_shows_reports_numbers(browser: Any, server: dict, shots: Path) -> None:
    visit(browser, server["url"] + "/", shots, "overview")
    for key in ("team", "project", "user", "month"):
        want = report_json(server["ledger"], key)
        assert column(browser, f"by-{key}", 0) == [w[key] for w in want]
        assert column(browser, f"by-{key}", 1) == [str(w["runs"]) for w in want]
        assert column(browser, f"by-{key}", 2) == [str(w["epochs"]) for w in want]
        assert column(browser, f"by-{key}", 4) == [format_energy(w["energy_kwh"]) for w in want]
        assert column(browser, f"by-{key}", 6) == [format_grams(w["co2_g"]) for w in want]
    total = Ledger.open(server["ledger"], read_only=True).runs()
    cards = browser.find_element(By.ID, "totals").text
    assert format_grams(sum(r.co2_g for r in total)) in cards
    assert f"{len(total)}\n" in cards
    # The month chart is drawn: one bar per month.
    bars = browser.find_elements(By.CSS_SELECTOR, "#chart-months g.point")
    assert len(bars) == len(report_json(server["ledger"], "month"))


def test_runs_table_sorts_and_pages_by_clicking(browser: Any, server: dict, shots: Path) -> None:
    visit(browser, server["url"] + "/runs?per_page=25", shots, "runs")
    click_through(browser, browser.find_element(By.CSS_SELECTOR, "a[data-sort='co2']"))
    runs = Ledger.open(server["ledger"], read_only=True).runs()
    by_co2 = [r.run_id for r in sorted(runs, key=lambda r: (r.co2_g, r.run_id), reverse=True)]
    shown = lambda: browser.execute_script(  # noqa: E731
        "return [...document.querySelectorAll('#runs-table tbody tr')].map(r => r.dataset.run)"
    )
    assert shown() == by_co2[:25]
    assert browser.find_element(By.ID, "runs-count").text == f"runs 1–25 of {RUNS}"
    click_through(browser, browser.find_element(By.ID, "next-page"))
    assert shown() == by_co2[25:]
    # Clicking the sorted column again flips it to ascending.
    click_through(browser, browser.find_element(By.CSS_SELECTOR, "a[data-sort='co2']"))
    assert shown() == by_co2[::-1][:25]
    assert HOSTILE_NAME in browser.find_element(By.ID, "runs-table").text
    assert f"variant={HOSTILE_TAG}" in browser.find_element(By.ID, "runs-table").text


def test_one_run_draws_its_marks_and_shows_html_as_text(
    browser: Any, server: dict, shots: Path
) -> None:
    run_id = server["roles"]["hostile"]
    visit(browser, server["url"] + f"/runs/{run_id}", shots, "run")
    assert browser.find_element(By.ID, "run-name").text == HOSTILE_NAME
    assert browser.title.startswith(f"run {run_id}")
    run = Ledger.open(server["ledger"], read_only=True).run(run_id)
    shoulder = knee_epoch(Ledger.open(server["ledger"], read_only=True).epochs(run_id), "val_acc")
    metric = browser.find_element(By.ID, "chart-metric").text
    assert f"shoulder (epoch {shoulder})" in metric
    assert f"stopped (epoch {run.epochs - 1})" in metric
    assert browser.find_element(By.ID, "stop-reason").text == run.stop_reason
    assert "CPU" in browser.find_element(By.ID, "chart-energy").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#regions tbody tr")) == 15
    assert browser.find_elements(By.CSS_SELECTOR, "#chart-hours g.point")
    # The hostile metric, chosen, is drawn as its own text on the chart's axis.
    options = browser.find_elements(By.CSS_SELECTOR, "#metric-select option")
    assert HOSTILE_METRIC in [o.text for o in options]
    next(o for o in options if o.text == HOSTILE_METRIC).click()
    click_through(browser, browser.find_element(By.CSS_SELECTOR, "form.inline button"))
    assert HOSTILE_METRIC in browser.find_element(By.ID, "chart-metric").text
    screenshot(browser, shots, "run-hostile-metric")


def test_compare_ticked_runs_from_the_table(browser: Any, server: dict, shots: Path) -> None:
    browser.get(server["url"] + "/runs?sort=started&dir=asc")
    settle(browser)
    boxes = browser.find_elements(By.CSS_SELECTOR, "#runs-table input[type=checkbox]")
    picked = [b.get_attribute("value") for b in boxes[:6]]
    for box in boxes[:6]:
        box.click()
    click_through(browser, browser.find_element(By.ID, "compare-button"))
    screenshot(browser, shots, "compare")
    keys = browser.execute_script(
        "return [...document.querySelectorAll('#points tbody tr')].map(r => r.dataset.key)"
    )
    assert sorted(keys) == sorted(picked)
    assert "Pareto front" in browser.find_element(By.ID, "chart-front").text
    assert browser.find_element(By.ID, "compare-title").text == "6 runs"


def test_compare_a_studys_trials_with_pruned_ones(browser: Any, server: dict, shots: Path) -> None:
    visit(browser, server["url"] + f"/compare?study={server['study']}", shots, "study")
    statuses = column(browser, "points", 1)
    assert statuses.count("pruned") == 3 and statuses.count("complete") == 7
    legend = browser.find_element(By.ID, "chart-front").text
    assert "pruned" in legend and "Pareto front" in legend
