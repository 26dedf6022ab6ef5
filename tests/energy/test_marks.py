"""MarkBook: what a meter keeps of its readings, and the worst method inside a window."""

from __future__ import annotations

from carbon_callbacks.energy import marks
from carbon_callbacks.energy.marks import MarkBook, MarkDetail
from carbon_callbacks.records import Energy


def detail(method: str) -> MarkDetail:
    return MarkDetail({"cpu": Energy(1.0, 1.0, 1.0, method)}, ())


def test_the_worst_method_between_two_readings_counts_every_reading_inside():
    book = MarkBook()
    for seq, method in enumerate(["counter", "counter", "model", "counter", "counter"]):
        book.add(seq, detail(method))
    assert book.worst("cpu", 0, 1) == "counter"
    assert book.worst("cpu", 1, 2) == "model"
    assert book.worst("cpu", 0, 4) == "model"  # seq 2 lies inside
    assert book.worst("cpu", 2, 4) == "counter"  # seq 2 is the start, read before the window
    assert book.worst("gpu", 0, 4) is None


def test_a_method_flapping_at_every_reading_keeps_its_worst_when_old_runs_go(monkeypatch):
    monkeypatch.setattr(marks, "MAX_MARKS", 4)
    book = MarkBook()
    methods = ["unavailable"] + ["counter", "polled"] * 10
    for seq, method in enumerate(methods):
        book.add(seq, detail(method), keep=0)
    assert book.get(0) is not None and book.get(1) is None  # the start is kept
    assert book.worst("cpu", 0, len(methods) - 1) == "unavailable"  # from the dropped runs
    assert book.worst("cpu", len(methods) - 3, len(methods) - 1) == "polled"
