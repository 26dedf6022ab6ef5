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
    # 12 short epochs: the accuracy levels off around epoch 8 to 10.
    result = run_demo(
        epochs=12,
        output_dir=d,
        ledger=d / "ledger.sqlite",
        intensity=400.0,
        max_loss=0.01,
        progress=True,
        out=out,
    )
    return result, out.getvalue(), d


def test_the_three_runs_follow_one_curve_and_each_stops_where_it_says(demo) -> None:
    result, _, _ = demo
    assert len(result.full) == 12
    # Same seed, same data: the early-stopped and carbon-aware runs are the full run cut short.
    full_acc = [r.metric(MONITOR) for r in result.full]
    for rs in (result.early, result.aware):
        assert [r.metric(MONITOR) for r in rs] == full_acc[: len(rs)]
    if result.stopped:
        assert len(result.aware) < 12
        assert result.stop_reason.startswith(f"stopping at epoch {result.aware[-1].epoch}:")
    else:
        assert len(result.aware) == 12 and result.energy_saved is None
    assert all(r.energy_kwh > 0 and r.co2_g > 0 for r in result.full)
    assert result.full[-1].co2_g == pytest.approx(result.full[-1].energy_kwh * 400.0)


def test_no_saving_is_claimed_between_runs_of_equal_length(demo) -> None:
    result, text, _ = demo
    for value, other, label in (
        (result.energy_saved, result.full, "vs max_epochs"),
        (result.energy_saved_vs_early, result.early, "vs EarlyStopping"),
    ):
        if len(other) == len(result.aware):
            assert value is None
            assert f"energy {label}: no saving claimed (both trained {len(other)} epochs)" in text
        else:
            assert value is not None and f"energy {label}: {abs(value):.0%}" in text


def test_demo_prints_the_table_the_stops_the_benchmark_and_the_paths(demo) -> None:
    result, text, d = demo
    assert re.search(r"epoch\s+accuracy\s+val_loss\s+m?Wh\s+m?g CO2e", text)
    for rec in result.full:  # one row per epoch of the full run
        assert re.search(rf"^\s*{rec.epoch}\s+{rec.metric(MONITOR):.4g}\s", text, re.M)
    for label, rs in (("to max_epochs", result.full), ("EarlyStopping", result.early),
                      ("carbon-aware", result.aware)):  # fmt: skip
        assert re.search(rf"^{label}\s*: {len(rs)} epochs", text, re.M)
    if len(result.early) < 12:
        assert "<- EarlyStopping(val_loss) stopped here" in text
    assert "benchmark (benchmarks/RESULTS.md, 10 tasks x 5 seeds" in text
    assert str(result.plot_path.resolve()) in text
    assert str(d / "ledger.sqlite") in text
    assert "epoch   1/12" in text  # the progress display


def test_demo_writes_the_three_runs_to_the_ledger_but_not_the_warm_up(demo) -> None:
    result, _, d = demo
    ledger = Ledger.open(d / "ledger.sqlite")
    runs = {r.run_id: r for r in ledger.runs(project=PROJECT)}
    assert set(runs) == {result.full_run_id, result.early_run_id, result.aware_run_id}
    full, aware = runs[result.full_run_id], runs[result.aware_run_id]
    assert full.epochs == 12 and not full.stopped_early
    assert aware.epochs == len(result.aware) and aware.stopped_early == result.stopped
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
    assert "no saving claimed (both trained 3 epochs)" in out
    assert len(Ledger.open(tmp_path / "l.sqlite").runs()) == 3


def test_demo_refuses_a_run_too_short_to_stop_early(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="epochs must be >= 2"):
        run_demo(epochs=1, output_dir=tmp_path, ledger=tmp_path / "l.sqlite")


def test_demo_ends_with_the_command_that_opens_its_runs_in_the_browser(demo) -> None:
    import shlex

    from carbon_callbacks.cli import build_parser

    result, text, d = demo
    label, _, command = text.strip().splitlines()[-1].partition(": ")
    assert label == "in the browser"
    argv = shlex.split(command)
    assert argv[0] == "carbon-callbacks"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "serve" and args.ledger == str(d / "ledger.sqlite")
    assert args.compare == [result.full_run_id, result.early_run_id, result.aware_run_id]
