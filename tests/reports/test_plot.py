"""The run plot is a real PNG with the curve, the marks and the energy bars drawn."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from carbon_callbacks.reports.plot import knee_epoch, plot_run, run_figure
from tests.helpers.ledger_records import make_record

Image = pytest.importorskip("PIL.Image", reason="Pillow comes with matplotlib")


def _curve(n: int = 10) -> list:
    # Saturating accuracy: fast gains, then a plateau (a shoulder around epoch 3).
    return [make_record(i, metric=0.95 - 0.45 * 0.5**i) for i in range(n)]


def _count(img, rgb: tuple[int, int, int], tol: int = 12) -> int:
    px = img.convert("RGB").getdata()
    return sum(1 for p in px if all(abs(a - b) <= tol for a, b in zip(p, rgb, strict=True)))


def test_plot_is_a_non_blank_png_of_sane_size(tmp_path: Path) -> None:
    details = {"rule": "CarbonBudget"}
    out = plot_run(_curve(), tmp_path / "run.png", stopped_early=True, stop_details=details)
    assert out == tmp_path / "run.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert 10_000 < out.stat().st_size < 2_000_000
    img = Image.open(out)
    assert img.format == "PNG"
    assert 800 <= img.width <= 2400 and 300 <= img.height <= 1600
    colours = img.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # a drawing, not a flat fill
    white = max(colours)[0] / (img.width * img.height)
    assert white < 0.95  # mostly background, but not all of it


def test_plot_draws_curve_shoulder_stop_and_component_bars(tmp_path: Path) -> None:
    out = plot_run(
        _curve(),
        tmp_path / "run.png",
        stopped_early=True,
        stop_details={"shoulder_epoch": 3, "best_epoch": 5},
    )
    img = Image.open(out)
    assert _count(img, (0x2A, 0x7F, 0x62)) > 300  # the metric curve
    assert _count(img, (0xE1, 0xA1, 0x00)) > 30  # the shoulder marker
    assert _count(img, (0xC0, 0x39, 0x2B)) > 30  # the stop marker
    assert _count(img, (0x4C, 0x72, 0xB0)) > 1000  # CPU bars
    assert _count(img, (0x55, 0xA8, 0x68)) > 300  # RAM bars


def test_without_early_stop_no_stop_marker_is_drawn(tmp_path: Path) -> None:
    img = Image.open(plot_run(_curve(), tmp_path / "run.png", stopped_early=False))
    assert _count(img, (0xC0, 0x39, 0x2B)) == 0


def test_baseline_run_is_drawn_in_grey(tmp_path: Path) -> None:
    baseline = _curve(14)
    img = Image.open(plot_run(_curve(6), tmp_path / "run.png", baseline=baseline))
    assert _count(img, (0xB0, 0xB0, 0xB0), tol=4) > 200


def test_knee_of_a_saturating_curve_and_none_for_a_straight_line() -> None:
    assert knee_epoch(_curve(), "val_acc") in (2, 3, 4)
    line = [make_record(i, metric=0.1 * i) for i in range(8)]
    assert knee_epoch(line, "val_acc") is None


def test_knee_of_a_falling_loss() -> None:
    recs = [
        dataclasses.replace(make_record(i), metrics={"val_loss": 0.2 + 2.0 * 0.5**i})
        for i in range(10)
    ]
    assert knee_epoch(recs, "val_loss") in (2, 3, 4)


def test_empty_records_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_run([], tmp_path / "x.png")


def _falling(name: str, n: int = 10) -> list:
    # A falling error curve (a shoulder around epoch 3), logged under ``name``.
    return [
        dataclasses.replace(make_record(i), metrics={name: 0.2 + 2.0 * 0.5**i}) for i in range(n)
    ]


def test_knee_of_a_falling_mape_reads_it_as_an_error_to_lower() -> None:
    # "map" is inside "mape": a substring rule read this error as a score and found no knee.
    assert knee_epoch(_falling("val_mape"), "val_mape") in (2, 3, 4)
    rising = [
        dataclasses.replace(r, metrics={"val_map": 2.2 - r.metrics["x"]}) for r in _falling("x")
    ]
    assert knee_epoch(rising, "val_map") in (2, 3, 4)


def _legend_corner(fig) -> str:
    """Which corner of the metric panel its legend sits in ("upper right"/"lower right")."""
    fig.canvas.draw()
    ax = fig.axes[0]
    box, frame = ax.get_legend().get_window_extent(), ax.get_window_extent()
    return "upper right" if box.y0 + box.y1 > frame.y0 + frame.y1 else "lower right"


@pytest.mark.parametrize(
    ("records", "monitor", "mode", "corner"),
    [
        (_falling("val_mape"), "val_mape", None, "upper right"),  # a falling error
        (_curve(), "val_acc", None, "lower right"),  # a rising accuracy
        (_curve(), "val_acc", "min", "upper right"),  # mode wins over the name
        (
            [dataclasses.replace(r, metrics={"score": r.metrics["val_acc"]}) for r in _curve()],
            "score",
            "max",
            "lower right",
        ),  # a name that says nothing: mode decides
    ],
)
def test_legend_is_placed_off_the_curve_by_its_direction(records, monitor, mode, corner) -> None:
    fig = run_figure(records, monitor=monitor, mode=mode)
    assert _legend_corner(fig) == corner


def test_a_bad_mode_is_refused_naming_mode(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode must be 'min', 'max' or None"):
        plot_run(_curve(), tmp_path / "x.png", mode="maximize")
