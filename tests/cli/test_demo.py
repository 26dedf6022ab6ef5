"""The demo end to end, kept short: real Lightning fits on the bundled digits, on CPU."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

pytest.importorskip("lightning", reason="the demo trains with Lightning")
pytest.importorskip("sklearn", reason="the demo uses scikit-learn's bundled digits")

from carbon_callbacks.cli import main  # noqa: E402
from carbon_callbacks.cli.demo import MONITOR, PROJECT, run_demo  # noqa: E402
from carbon_callbacks.ledger import Ledger  # noqa: E402


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple:
    d = tmp_path_factory.mktemp("demo")
    out = io.StringIO()
    # 12 short epochs and a 2-epoch window: the accuracy levels off around epoch 8 to 10.
    result = run_demo(
        epochs=12,
        output_dir=d,
        ledger=d / "ledger.sqlite",
        intensity=400.0,
        window=2,
        patience=1,
        progress=True,
        out=out,
    )
    return result, out.getvalue(), d


def test_carbon_aware_run_stops_before_max_epochs_and_follows_the_same_curve(demo) -> None:
    result, _, _ = demo
    assert len(result.full) == 12
    assert result.stopped and "shoulder" in result.stop_reason
    assert 2 < len(result.aware) < len(result.full)
    # Same seed, same data: the carbon-aware run is the full run cut short.
    full_acc = [r.metric(MONITOR) for r in result.full]
    aware_acc = [r.metric(MONITOR) for r in result.aware]
    assert aware_acc == full_acc[: len(aware_acc)]
    assert result.aware_accuracy == pytest.approx(aware_acc[-1])
    assert all(r.energy_kwh > 0 and r.co2_g > 0 for r in result.full)
    assert result.full[-1].co2_g == pytest.approx(result.full[-1].energy_kwh * 400.0)


def test_demo_prints_the_table_the_stop_the_savings_and_the_paths(demo) -> None:
    result, text, d = demo
    assert re.search(r"epoch\s+accuracy\s+m?Wh\s+m?g CO2e\s+gain per kg", text)
    for rec in result.full:  # one row per epoch of the full run
        assert re.search(rf"^\s*{rec.epoch}\s+{rec.metric(MONITOR):.4g}\s", text, re.M)
    stop_epoch = result.aware[-1].epoch
    assert f"stopped at epoch {stop_epoch}:" in text
    assert "<- carbon-aware run stopped here" in text
    assert "energy saved" in text and "accuracy kept" in text
    assert str(result.plot_path.resolve()) in text
    assert str(d / "ledger.sqlite") in text
    assert "epoch   1/12" in text  # the progress display


def test_demo_writes_both_runs_to_the_ledger_and_a_png(demo) -> None:
    result, _, d = demo
    ledger = Ledger.open(d / "ledger.sqlite")
    runs = {r.run_id: r for r in ledger.runs(project=PROJECT)}
    full, aware = runs[result.full_run_id], runs[result.aware_run_id]
    assert full.epochs == 12 and not full.stopped_early
    assert aware.epochs == len(result.aware) and aware.stopped_early
    assert aware.stop_reason == result.stop_reason
    assert ledger.epochs(result.aware_run_id) == list(result.aware)
    assert full.framework == "lightning" and full.hyperparameters["hidden"] == 32
    png = result.plot_path.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_cli_demo_with_tiny_settings(tmp_path: Path, capsys) -> None:
    code = main(
        [
            "demo", "--epochs", "3", "--samples", "300", "--intensity", "FR", "--no-progress",
            "--output-dir", str(tmp_path), "--ledger", str(tmp_path / "l.sqlite"),
        ]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "did not stop before 3 epochs" in out
    assert (tmp_path / "carbon-demo.png").exists()
    assert len(Ledger.open(tmp_path / "l.sqlite").runs()) == 2


def test_demo_refuses_a_run_too_short_to_stop_early(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="epochs must be >= 2"):
        run_demo(epochs=1, output_dir=tmp_path, ledger=tmp_path / "l.sqlite")
