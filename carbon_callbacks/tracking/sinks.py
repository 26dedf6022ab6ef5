"""Where a tracker sends each epoch besides the adapter's logger: the ledger and a trial.

The tracker knows no optimisation framework: an adapter that was given an Optuna trial wraps
it in a ``TrialSink`` (``carbon_callbacks.integrations``) and passes that in.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, Literal, NoReturn, Protocol, TypeAlias, runtime_checkable

from carbon_callbacks.ledger import Ledger, RunRecorder
from carbon_callbacks.ledger.location import check_location, default_location, run_location
from carbon_callbacks.records import EpochRecord, RunEnd

Warn = Callable[..., None]
"""``warn(cause, message, *args)``: one warning per cause (the tracker's warn-once)."""

LedgerSpec: TypeAlias = RunRecorder | str | os.PathLike[str] | Literal[False] | None
"""What ``ledger=`` takes: a ``RunRecorder`` (a ``Ledger``), a path or URL to open, False for
none, or None for the default ledger."""


@runtime_checkable
class TrialSink(Protocol):
    """A hyperparameter-search trial: told each epoch's cumulative CO2e, asked whether to stop."""

    @property
    def number(self) -> object:
        """The trial's number, for messages."""

    def report(self, record: EpochRecord, value: float | None) -> None:
        """Report the epoch's cumulative CO2e and energy (and the monitored metric's value)."""

    def should_prune(self) -> bool:
        """Whether the search wants this trial stopped now."""

    def raise_pruned(self, reason: str) -> NoReturn:
        """Raise the search's own "pruned" exception."""


def is_ledger_arg(ledger: object) -> bool:
    """Whether ``ledger`` is something ``EpochTracker(ledger=...)`` takes."""
    return (
        ledger is None
        or ledger is False
        or isinstance(ledger, (str, os.PathLike))
        or all(callable(getattr(ledger, n, None)) for n in ("start_run", "add_epoch"))
    )


def open_ledger(ledger: LedgerSpec) -> tuple[RunRecorder | None, Ledger | None]:
    """The ``ledger=`` argument as a recorder, and the Ledger we opened (and must close), if any."""
    if ledger is False:
        return None, None
    if ledger is None or isinstance(ledger, (str, os.PathLike)):
        opened = Ledger.open(ledger)
        return opened, opened
    return ledger, None


class LedgerSink:
    """One run in the ledger: its row at fit start, a row per epoch, its end. Never raises.

    Args:
        ledger: the tracker's ``ledger=`` argument (None, a path or URL, a Ledger, or False).
        warn: the tracker's warn-once, told of every failure.

    Raises:
        ValueError: for a location ``Ledger()`` would refuse (``sqlite://`` without a path, a
            database URL whose driver is missing...), checked here without opening it, so
            the run is refused where it is configured rather than left unrecorded.
    """

    def __init__(self, ledger: LedgerSpec, warn: Warn) -> None:
        if ledger is None or isinstance(ledger, (str, os.PathLike)):
            check_location(default_location() if ledger is None else ledger)
        self._arg = ledger
        self._warn = warn
        self._ledger: RunRecorder | None = None
        self._opened: Ledger | None = None
        self.run_id = ""
        """The ledger run id ("" before ``start`` or without a ledger)."""

    def start(self, metadata: Callable[[], Mapping[str, Any]]) -> None:
        """Open the ledger and record the run with ``metadata()`` (called only if there is one)."""
        try:
            self._ledger, self._opened = open_ledger(self._arg)
            if self._ledger is None:
                return
            self.run_id = self._ledger.start_run(metadata())
        except Exception as exc:  # noqa: BLE001 - the ledger must not take training down
            self._warn("ledger", "ledger unavailable (%s); this run is not recorded", exc)
            self._ledger = None

    def add(self, record: EpochRecord) -> None:
        """Write one epoch's record."""
        if self._ledger is None or not self.run_id:
            return
        try:
            self._ledger.add_epoch(self.run_id, record)
        except Exception as exc:  # noqa: BLE001
            self._warn("ledger", "ledger write failed (%s); epochs are not recorded", exc)

    def end(self, end: RunEnd) -> None:
        """Record how the run ended, and close a ledger we opened."""
        if self._ledger is None or not self.run_id:
            return
        try:
            end_run = getattr(self._ledger, "end_run", None)
            if callable(end_run):
                end_run(self.run_id, end=end)
            if self._opened is not None:
                self._opened.close()
        except Exception as exc:  # noqa: BLE001
            self._warn("ledger", "ledger end of run failed (%s)", exc)
        self._ledger = None


def run_metadata(
    base: Mapping[str, Any],
    source: Any,
    pue: float,
    meter: Any,
    **extra: Any,
) -> dict[str, Any]:
    """A run's ledger metadata: ``base`` (framework, the user's and the adapter's metadata), the
    intensity, location, PUE and the meter's methods and sensors, and ``extra`` where set.

    ``extra`` takes what the tracker knows (``monitor``, ``policy``, ``kind``, ``parent_run``);
    None and "" are left out.
    """
    meta: dict[str, Any] = dict(base)
    meta.setdefault("intensity_source", str(source))
    location = run_location(source)
    if location:
        meta.setdefault("location", location)
    meta.setdefault("pue", pue)
    for key, value in extra.items():
        if value is not None and value != "":
            meta.setdefault(key, value)
    methods = getattr(meter, "methods", None)
    if isinstance(methods, Mapping):
        meta.setdefault("methods", dict(methods))
    describe = getattr(meter, "describe", None)
    if callable(describe):
        meta.setdefault("hardware", {"sensors": list(describe())})
    return meta
