"""Fault matrix, endings slice (issue 12): SIGTERM, SIGINT and exceptions mid-epoch in real fits.

For each fault and each adapter: training ends as the user's code would without the callback
(same exit status, same exception, same steps run), the run's end status and reason are
recorded, no meter thread, socket or ledger file handle is left, and every finished epoch is in
the ledger with the epoch the fault ended inside as a partial record. Signals go to worker
subprocesses (a signal ends the process), sent from inside epoch 1's second training step so
the fault lands at the same place every time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from carbon_callbacks.ledger import Ledger
from tests.helpers.adapter_fits import DRIVERS, Fault, Step

psutil = pytest.importorskip("psutil")
pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[3]
MODULES = {"lightning": "lightning.pytorch", "keras": "keras", "transformers": "transformers"}


def _driver(name):
    pytest.importorskip(MODULES[name])
    return DRIVERS[name]()


def _worker(adapter, action, out, *, without=False):
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    args = [sys.executable, "-m", "tests.helpers.endings_worker", adapter, action, str(out)]
    if without:
        args.append("--without-callback")
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _leftovers():
    """This process's meter threads, inet sockets and open ledger files."""
    me = psutil.Process()
    threads = sorted(t.name for t in threading.enumerate()
                     if t.name.startswith("carbon-callbacks-meter"))
    sockets = sorted((c.laddr, c.raddr) for c in me.net_connections(kind="inet"))
    ledgers = sorted(f.path for f in me.open_files() if "ledger" in Path(f.path).name)
    return threads, sockets, ledgers


# The process ends as it would without us: SIGTERM's default action (-15) for Keras and
# transformers; Lightning turns SIGTERM into SystemExit and Ctrl-C into exit status 1 itself.
SIGNALS = [
    ("lightning", "sigterm", "SIGTERM"),
    ("keras", "sigterm", "SIGTERM"),
    ("transformers", "sigterm", "SIGTERM"),
    ("lightning", "sigint", "SIGINT (KeyboardInterrupt)"),
    ("keras", "sigint", "SIGINT (KeyboardInterrupt)"),
    ("transformers", "sigint", "SIGINT (KeyboardInterrupt)"),
]


@pytest.mark.parametrize(("adapter", "action", "reason"), SIGNALS)
def test_a_signal_mid_epoch_ends_the_process_as_without_us_and_the_run_as_interrupted(
    adapter, action, reason, tmp_path
):
    _driver(adapter)
    ours = _worker(adapter, action, tmp_path / "with")
    theirs = _worker(adapter, action, tmp_path / "without", without=True)
    assert ours.returncode == theirs.returncode, (ours.stderr[-2000:], theirs.stderr[-2000:])
    assert ("FIT RETURNED" in ours.stdout) == ("FIT RETURNED" in theirs.stdout)
    assert not (tmp_path / "without" / "ledger.sqlite").exists()

    ledger = Ledger.open(tmp_path / "with" / "ledger.sqlite")
    [run] = ledger.runs()
    assert (run.status, run.stop_reason) == ("interrupted", reason), ours.stderr[-2000:]
    records = ledger.epochs(run.run_id)
    # Epoch 0 finished and is kept; epoch 1 ended at its second step, as a partial record.
    assert [(r.epoch, r.partial) for r in records] == [(0, False), (1, True)]
    assert records[1].energy_kwh > 0 and records[1].metrics == {}
    assert run.energy_kwh == pytest.approx(sum(r.energy_kwh for r in records))


@pytest.mark.parametrize("adapter", sorted(DRIVERS))
def test_an_exception_mid_epoch_reaches_the_caller_unchanged_and_leaves_nothing_behind(
    adapter, tmp_path
):
    driver = _driver(adapter)
    before = _leftovers()

    def failing_fit(carbon, out):
        step = Step(Fault(epoch=1, batch=1))
        with pytest.raises(RuntimeError) as raised:
            driver.fit(out, carbon, epochs=3, step=step)
        return type(raised.value), str(raised.value), step.seen

    carbon = driver.callback()
    ours = failing_fit(carbon, tmp_path / "with")
    theirs = failing_fit(None, tmp_path / "without")
    assert ours == theirs  # same exception, same message, same steps run
    assert ours[1] == "injected failure at epoch 1 batch 1"
    assert _leftovers() == before

    [run] = Ledger.open().runs()
    assert (run.status, run.error_type, run.stop_reason) == (
        "failed", "RuntimeError", "injected failure at epoch 1 batch 1")
    assert [(r.epoch, r.partial) for r in Ledger.open().epochs(run.run_id)] == [(0, False),
                                                                                 (1, True)]
    assert carbon.end.status == "failed"


@pytest.mark.parametrize("adapter", sorted(DRIVERS))
def test_failed_fits_in_a_notebook_loop_do_not_pile_up_meter_threads(adapter, tmp_path):
    driver = _driver(adapter)
    before = _leftovers()
    for i in range(3):
        with pytest.raises(RuntimeError):
            driver.fit(tmp_path / str(i), driver.callback(), epochs=2,
                       step=Step(Fault(epoch=0, batch=2)))
        assert _leftovers() == before
    runs = Ledger.open().runs()
    assert [r.status for r in runs] == ["failed"] * 3


def test_keras_failing_outside_the_wrapped_step_is_closed_by_the_next_fit(tmp_path):
    """A data loader failing between steps raises where no wrapped method sees it: the run
    stays open (its meter running) until the next fit of the process ends it as failed."""
    _driver("keras")
    from tests.helpers.endings_worker import _failing_data

    driver = DRIVERS["keras"]()
    first = driver.callback()
    model = driver._model(Step())
    with pytest.raises(OSError, match="shard vanished"):
        model.fit(_failing_data(tmp_path), epochs=3, verbose=0, callbacks=[first])
    assert first.tracker.run.active  # nothing told us yet

    assert model.train_function.__name__ == "guarded"  # still wrapped for the dead fit
    driver.fit(tmp_path, driver.callback(), epochs=1)  # the next fit in this process
    assert not first.tracker.run.active
    assert not _leftovers()[0]
    # Closing it undid what the callback had set up for that fit, as its own end would have.
    assert model.train_function.__name__ != "guarded" and "evaluate" not in vars(model)
    runs = {r.run_id: r for r in Ledger.open().runs()}
    closed = runs[first.tracker.run_id]
    assert closed.status == "failed"
    assert "closed when the next fit started" in closed.stop_reason
    assert [(r.epoch, r.partial) for r in Ledger.open().epochs(closed.run_id)] == [
        (0, False), (1, True)]


def test_keras_failing_outside_the_wrapped_step_is_closed_at_exit_with_its_exception(tmp_path):
    _driver("keras")
    ours = _worker("keras", "iterator", tmp_path / "with")
    theirs = _worker("keras", "iterator", tmp_path / "without", without=True)
    assert ours.returncode == theirs.returncode == 1
    assert "shard vanished" in ours.stderr and "shard vanished" in theirs.stderr
    [run] = Ledger.open(tmp_path / "with" / "ledger.sqlite").runs()
    assert (run.status, run.error_type, run.stop_reason) == (
        "failed", "OSError", "training data shard vanished")
