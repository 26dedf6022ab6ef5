"""A fit's life: live in the process from its start, in the ledger from its first epoch, ended once.

``FitRun`` holds what a fit is between the tracker's hooks: whether it is running and inside an
epoch, the ledger run it writes to (opened at the first epoch, when it is known whether the fit
continues an earlier one), its entry in the process's open runs (so a fit that ends where no
hook sees it is still ended), and how it ended.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any

from carbon_callbacks.records import RunEnd
from carbon_callbacks.tracking.endings import Sections, open_runs
from carbon_callbacks.tracking.sinks import LedgerSink, Warn
from carbon_callbacks.tracking.state import RunTotals

Describe = Callable[..., dict[str, Any]]
"""``describe(kind, metadata, **extra)``: a run's ledger metadata."""


class FitRun:
    """The current fit of a tracker, from ``start`` to ``finish``.

    Args:
        key: what identifies the tracker in ``open_runs`` (its id).
        ledger: the tracker's ``ledger=`` argument.
        warn: the tracker's warn-once.
    """

    def __init__(self, key: int, ledger: Any, warn: Warn) -> None:
        self._key = key
        self._ledger_arg = ledger
        self._warn = warn
        self.sections = Sections()
        """Boundaries a signal handler must not interrupt (see ``endings.SigtermEnd``)."""
        self.active = False
        """True from ``start`` to ``finish``."""
        self.previous_run = ""
        """The ledger run id of the last fit that ended (what a continuing fit continues)."""
        self._restored = False
        self._reset()

    def _reset(self) -> None:
        self.ledger = LedgerSink(self._ledger_arg, self._warn)
        self.opened = self.in_epoch = False
        self.primary = True
        self.epoch = 0
        self.metadata: Mapping[str, Any] | None = None
        self.end: RunEnd | None = None
        """How the fit ended (None while it runs)."""

    def restored(self) -> None:
        """A checkpoint's totals were loaded: the next run to open continues them."""
        self._restored = not (self.active and self.opened)

    def start(
        self,
        end: Callable[[RunEnd], Any],
        frame: FrameType | None,
        *,
        primary: bool,
        metadata: Mapping[str, Any] | None,
    ) -> None:
        """A new fit: end the runs whose fit is gone (this one's earlier fit included)."""
        open_runs.close_stale()
        if self.active:  # its fit ended where no hook of ours saw it
            open_runs.close(self._key, "closed when the next fit of its callback started")
        self._reset()
        self.active, self.primary, self.metadata = True, primary, metadata
        open_runs.add(self._key, end, frame)

    def open(self, first_epoch: int | None, totals: RunTotals, describe: Describe) -> None:
        """Settle what the fit continues (``RunTotals.begin``) and record it in the ledger."""
        restored, self._restored, self.opened = self._restored, False, True
        parent = totals.begin(first_epoch, restored=restored, previous_run=self.previous_run)
        if self.primary:
            meta = describe("fit", self.metadata, parent_run=parent)
            self.ledger.start(lambda: meta)

    def finish(self, end: RunEnd) -> None:
        """Record the ending in the ledger and leave the open runs."""
        self.active = False
        open_runs.discard(self._key)
        self.end = end
        self.ledger.end(end)
        self.previous_run = self.ledger.run_id
