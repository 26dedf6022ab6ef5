"""A tracker's endings without a framework: statuses, partial epochs, continued and resumed runs,
runs left open, SIGTERM, and evaluation passes, against a meter with scripted joules."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from carbon_callbacks.ledger import Ledger
from carbon_callbacks.policies import CONTINUE, Decision
from carbon_callbacks.records import JOULES_PER_KWH, RunEnd
from carbon_callbacks.tracking.endings import (
    OpenRuns,
    Sections,
    SigtermEnd,
    end_for_exception,
)
from carbon_callbacks.tracking.tracker import EpochTracker
from tests.tracking.test_tracker import J, ScriptedMeter

INTENSITY = 400.0


def make(meter, tmp_path, **kwargs):
    return EpochTracker(intensity=INTENSITY, meter=meter, ledger=tmp_path / "l.sqlite", **kwargs)


def ledger_runs(tmp_path):
    return Ledger.open(tmp_path / "l.sqlite").runs()


class SIGTERMException(SystemExit):
    """Lightning's, matched by name (the core never imports Lightning)."""


class TrialPruned(Exception):
    """Optuna's, matched by name."""


@pytest.mark.parametrize(
    ("exc", "end"),
    [
        (KeyboardInterrupt(), RunEnd("interrupted", reason="SIGINT (KeyboardInterrupt)")),
        (SIGTERMException(), RunEnd("interrupted", reason="SIGTERM")),
        (SystemExit(3), RunEnd("interrupted", reason="SystemExit(3)")),
        (TrialPruned("trial 4 pruned"), RunEnd("stopped", "pruning", "trial 4 pruned")),
        (ValueError("bad shape"), RunEnd("failed", reason="bad shape", error_type="ValueError")),
    ],
)
def test_an_exception_names_its_ending(exc, end):
    assert end_for_exception(exc) == end


def test_a_huge_exception_message_is_cut_for_the_ledger():
    end = end_for_exception(RuntimeError("x" * 10_000))
    assert len(end.reason) == 500 and end.reason.endswith("...")


def test_a_failure_mid_epoch_records_the_partial_epoch_and_the_run_adds_up(tmp_path):
    # marks: fit start, epoch 0 end, then the failure inside epoch 1
    tracker = make(ScriptedMeter([J(), J(3600), J(1800)]), tmp_path)
    tracker.fit_start()
    tracker.epoch_start(0)
    tracker.epoch_end(0, {"val_acc": 0.5})
    tracker.epoch_start(1)
    summary = tracker.fail(ValueError("nan loss"))
    assert [(r.epoch, r.partial, r.metrics) for r in summary.epochs] == [
        (0, False, {"val_acc": 0.5}), (1, True, {})]
    assert summary.energy_kwh == pytest.approx(5400 / JOULES_PER_KWH)
    assert summary.end == RunEnd("failed", reason="nan loss", error_type="ValueError")
    [run] = ledger_runs(tmp_path)
    assert (run.status, run.epochs) == ("failed", 2)
    assert run.energy_kwh == pytest.approx(5400 / JOULES_PER_KWH)


def test_a_completed_run_has_no_partial_record_and_a_stopped_one_says_who(tmp_path):
    class StopAt1:
        def decide(self, records):
            return Decision(True, "enough") if records[-1].epoch >= 1 else CONTINUE

    tracker = make(ScriptedMeter([J(100)] * 10), tmp_path, policy=StopAt1())
    tracker.fit_start()
    for epoch in range(5):
        tracker.epoch_start(epoch)
        tracker.epoch_end(epoch)
        if tracker.decide().stop:
            break
    summary = tracker.fit_end()
    assert [r.partial for r in summary.epochs] == [False, False]
    assert summary.end == RunEnd("stopped", "policy", "enough") and summary.stopped_early


def test_a_fit_failing_before_its_first_epoch_still_records_what_it_spent(tmp_path):
    tracker = make(ScriptedMeter([J(), J(720)]), tmp_path)
    tracker.fit_start()
    summary = tracker.fail(RuntimeError("sanity check failed"))
    assert [(r.epoch, r.partial) for r in summary.epochs] == [(0, True)]
    assert summary.energy_kwh == pytest.approx(720 / JOULES_PER_KWH)


def test_a_continued_fit_continues_the_totals_and_links_its_run(tmp_path):
    tracker = make(ScriptedMeter([J(100)] * 10), tmp_path)
    for epochs in (range(0, 2), range(2, 4)):
        tracker.fit_start()
        for epoch in epochs:
            tracker.epoch_start(epoch)
            tracker.epoch_end(epoch)
        tracker.fit_end()
    assert [r.energy_kwh_total * JOULES_PER_KWH for r in tracker.records] == pytest.approx(
        [100, 200, 300, 400])
    first, second = ledger_runs(tmp_path)
    assert (second.parent_run, first.parent_run) == (first.run_id, "")
    assert (first.epochs, second.epochs) == (2, 2)


def test_a_new_fit_from_epoch_0_starts_the_totals_again(tmp_path):
    tracker = make(ScriptedMeter([J(100)] * 10), tmp_path)
    for _ in range(2):
        tracker.fit_start()
        tracker.epoch_start(0)
        tracker.epoch_end(0)
        tracker.fit_end()
    assert [r.energy_kwh_total * JOULES_PER_KWH for r in tracker.records] == pytest.approx([100])
    assert [r.parent_run for r in ledger_runs(tmp_path)] == ["", ""]


def test_a_resume_keeps_only_the_checkpoints_epochs_before_the_one_resumed(tmp_path):
    first = make(ScriptedMeter([J(100)] * 10), tmp_path)
    first.fit_start()
    for epoch in range(3):
        first.epoch_start(epoch)
        first.epoch_end(epoch)
    state = json.loads(json.dumps(first.state_dict()))
    first.fit_end()

    resumed = make(ScriptedMeter([J(100)] * 10), tmp_path)
    resumed.load_state_dict(state)
    resumed.fit_start()
    resumed.epoch_start(2)  # the weights were saved before epoch 2's end: it is run again
    record = resumed.epoch_end(2)
    assert [r.epoch for r in resumed.records] == [0, 1, 2]
    assert record.energy_kwh_total * JOULES_PER_KWH == pytest.approx(300)
    runs = ledger_runs(tmp_path)
    assert runs[1].parent_run == runs[0].run_id


def test_a_run_whose_fit_frame_is_gone_is_closed_by_the_next_fit_start(tmp_path):
    tracker = make(ScriptedMeter([J(100)] * 10), tmp_path)

    def fit_that_dies_where_no_hook_sees_it():
        import sys as _sys

        tracker.fit_start(frame=_sys._getframe())
        tracker.epoch_start(0)

    fit_that_dies_where_no_hook_sees_it()
    assert tracker.run.active
    other = make(ScriptedMeter([J(100)] * 10), tmp_path)
    other.fit_start()
    assert not tracker.run.active
    assert tracker.run.end.status == "failed"
    assert "closed when the next fit started" in tracker.run.end.reason
    other.fit_end()


def test_a_run_whose_fit_is_still_running_is_left_open():
    registry = OpenRuns()
    ended = []
    registry.add(1, ended.append, sys._getframe())  # this frame is running
    assert registry.close_stale() == 0 and not ended
    registry.discard(1)


def test_a_run_on_a_thread_that_died_is_stale():
    registry = OpenRuns()
    ended = []
    started = threading.Event()

    def fit():
        registry.add(7, ended.append, sys._getframe())
        started.set()

    thread = threading.Thread(target=fit)
    thread.start()
    thread.join()
    assert started.is_set() and registry.close_stale() == 1
    assert ended[0].status == "failed"


def test_a_signal_during_a_boundary_waits_for_its_end():
    sections = Sections()
    seen = []
    with sections.section():
        sections.run(lambda: seen.append("handled"))
        seen.append("boundary written")
    assert seen == ["boundary written", "handled"]


def test_sigterm_is_not_taken_when_ignored_and_is_given_back_after():
    sections = Sections()
    guard = SigtermEnd(lambda end: None, sections)
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        assert not guard.install()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        assert guard.install()
        assert signal.getsignal(signal.SIGTERM) != signal.SIG_DFL
        guard.uninstall()
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_sigterm_records_the_run_then_ends_the_process_as_the_default_action(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal
        from carbon_callbacks.tracking.endings import SigtermEnd
        from carbon_callbacks.tracking.tracker import EpochTracker
        from tests.tracking.test_tracker import J, ScriptedMeter
        tracker = EpochTracker(intensity=1.0, meter=ScriptedMeter([J(100)] * 5),
                               ledger={str(tmp_path / "l.sqlite")!r})
        guard = SigtermEnd(tracker.fit_end, tracker.run.sections)
        tracker.fit_start()
        guard.install()
        tracker.epoch_start(0)
        os.kill(os.getpid(), signal.SIGTERM)
        print("survived")
    """)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, PYTHONPATH=root))
    assert proc.returncode == -signal.SIGTERM, proc.stderr
    assert "survived" not in proc.stdout
    [run] = ledger_runs(tmp_path)
    assert (run.status, run.stop_reason) == ("interrupted", "SIGTERM")
    assert [r.partial for r in Ledger.open(tmp_path / "l.sqlite").epochs(run.run_id)] == [True]


def test_an_evaluation_pass_is_a_run_of_its_own_linked_to_its_fit(tmp_path):
    # marks: fit start, epoch 0 end; then the pass's start and end (its own meter windows)
    tracker = make(ScriptedMeter([J(), J(3600), J(), J(360)]), tmp_path)
    tracker.fit_start()
    tracker.epoch_start(0)
    tracker.epoch_end(0)
    tracker.fit_end()
    tracker.evaluation.start("test")
    record = tracker.evaluation.end({"test_loss": 0.3, "co2_g": 1.0})
    assert (record.stage, record.epoch, record.partial) == ("test", 0, False)
    assert record.energy_kwh == pytest.approx(360 / JOULES_PER_KWH)
    assert record.metrics["test_loss"] == 0.3
    fit, evaluation = ledger_runs(tmp_path)
    assert (evaluation.kind, evaluation.parent_run, evaluation.status) == (
        "test", fit.run_id, "completed")
    assert evaluation.metadata["after_epoch"] == 0
    with pytest.raises(ValueError, match="kind must be one of"):
        tracker.evaluation.start("benchmark")
