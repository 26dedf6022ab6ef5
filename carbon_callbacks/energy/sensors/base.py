"""What every energy source looks like to the meter, and how one degrades to the next.

A sensor keeps cumulative joules for one component (``cpu``, ``gpu`` or ``ram``) since it was
opened, with a low/high range set by how it measures. The meter's thread calls ``sample()`` so
counters never wrap unseen and polled sources get their samples; a boundary calls ``totals()``
synchronously. Sensors raise ``SensorError`` internally; ``FallbackChain`` turns that into a
switch to the next method with one note, so nothing ever raises into training.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from carbon_callbacks._checks import check_number
from carbon_callbacks._warn import WarnOnce
from carbon_callbacks.records import Energy, Method

logger = logging.getLogger(__name__)
# One warning per cause per process: a meter per Optuna trial must not repeat it.
_warned = WarnOnce(logger)


class SensorError(Exception):
    """A sensor could not read its source; the chain falls back to the next method.

    Args:
        message: what failed and, where there is one, the fix.
        cause: a key shared by failures with one cause (several files unreadable for one
            reason), so that they make one warning between them.
    """

    def __init__(self, message: str, *, cause: str = "") -> None:
        super().__init__(message)
        self.cause = cause


class SourceMissing(SensorError):
    """This machine has no such source (no powercap folder): the next method is used, silently.

    Not a failure, so no warning; ``detect`` and ``describe()`` still say why it was passed over.
    """


class DeviceAbsent(SensorError):
    """The component does not exist here (no GPU): the meter leaves it out, it is not a failure."""


MIN_INTERVAL_S = 0.01
MAX_INTERVAL_S = 3600.0


def check_interval(interval: object, name: str = "interval") -> float:
    """Seconds between the meter thread's reads, from ``MIN_INTERVAL_S`` to ``MAX_INTERVAL_S``.

    Raises:
        ValueError: not a number in that span (the message names the argument).
    """
    return check_number(interval, name, low=MIN_INTERVAL_S, high=MAX_INTERVAL_S,
                        unit="seconds", fix="the default is 1.0")


Totals = Energy
"""What ``Sensor.totals()`` returns: the component's cumulative ``Energy`` since ``open()``.
(The name custom sensors written against earlier versions import.)"""


class Sensor(ABC):
    """One source of energy for one component.

    Subclasses set ``component`` and ``method`` and implement ``open``, ``totals`` and, where
    the source needs reading between boundaries, ``sample`` with a ``poll_interval``.

    Attributes:
        component: "cpu", "gpu" or "ram".
        method: "counter", "polled", "model" or "unavailable".
        poll_interval: seconds between the thread's ``sample()`` calls, or None for never.
    """

    component: str = ""
    method: str = "unavailable"
    poll_interval: float | None = None
    _reporter: Callable[[str, str], None] | None = None

    def report(self, message: str, cause: str = "") -> None:
        """Note a partial degradation (one GPU of several) without failing the sensor.

        Inside a ``FallbackChain`` the note reaches the window's reason and one warning per
        cause is logged; a bare sensor only logs the warning once.
        """
        if self._reporter is not None:
            self._reporter(message, cause)
        else:
            _warned(cause or message, "%s", message)

    @abstractmethod
    def open(self, now: float) -> None:
        """Take the baseline; energy is counted from ``now`` (a ``time.monotonic()`` value).

        Raises:
            SensorError: the source cannot be read at all.
        """

    def sample(self, now: float) -> None:  # noqa: B027 - most sources need no polling
        """Called by the meter's thread every ``poll_interval`` seconds.

        Raises:
            SensorError: the source failed.
        """

    @abstractmethod
    def totals(self, now: float) -> Energy:
        """Cumulative energy since ``open()``, read now.

        Raises:
            SensorError: the source failed.
        """

    def close(self) -> None:  # noqa: B027 - most sources hold nothing
        """Release what ``open()`` took. Never raises."""

    def last_good(self) -> Energy | None:
        """The totals as of the last successful read, used when this sensor fails."""
        return None

    def describe(self) -> str:
        """One line: what this sensor reads and how."""
        return f"{self.component}: {self.method}"


def _then(before: Energy | None, since: Energy) -> Energy:
    """What a failed source counted plus what its successor counted since; the successor's
    method and reason describe the reading from the switch on."""
    if before is None:
        return since
    return dataclasses.replace(before + since, method=since.method, reason=since.reason)


@dataclass(frozen=True)
class ChainStatus:
    """Where one component's chain stands, as fields (for reports that must not parse text).

    Attributes:
        component: "cpu", "gpu" or "ram".
        method: the active sensor's method.
        reason: the active sensor's own account of what it reads ("" when it gives none).
        absent: why no source measures the component ("" when one does).
        skipped: the sources passed over at open, each with why.
        notes: the degradations recorded since.
        line: ``describe()``'s one line.
    """

    component: str
    method: str
    reason: str
    absent: str
    skipped: tuple[str, ...]
    notes: tuple[str, ...]
    line: str


class FallbackChain(Sensor):
    """Several sensors for one component, best first: the first that works is used.

    When the active sensor fails (at open or mid-run), the energy it counted so far is kept,
    the next one is opened at that moment, one warning is logged and a note is recorded, so a
    window that spans the switch says so in its method and reason.

    Args:
        sensors: candidates for one component, best method first.
    """

    def __init__(self, sensors: Sequence[Sensor]) -> None:
        if not sensors:
            raise ValueError("sensors: give at least one sensor for the component")
        comps = {s.component for s in sensors}
        if len(comps) != 1:
            raise ValueError(f"sensors: all must measure one component, got {sorted(comps)}")
        self.component = sensors[0].component
        self._sensors = list(sensors)
        for s in self._sensors:
            s._reporter = self._record
        self._index = 0
        self._offset: Energy | None = None
        self._last: Energy | None = None
        self.notes: list[str] = []
        self.absent: str = ""
        self.skipped: list[str] = []

    @property
    def active(self) -> Sensor:
        """The sensor in use now."""
        return self._sensors[self._index]

    # Read-only where Sensor has plain attributes: a chain's are its active sensor's.
    @property
    def method(self) -> str:  # type: ignore[override]
        return self.active.method

    @property
    def poll_interval(self) -> float | None:  # type: ignore[override]
        return self.active.poll_interval

    def _note(self, failed: Sensor, exc: BaseException) -> None:
        nxt = self._sensors[self._index + 1] if self._index + 1 < len(self._sensors) else None
        then = (f"using {nxt.method} from now on" if nxt
                else "no other source; it stays at its last value")
        msg = f"{self.component}: {failed.method} source failed ({exc}); {then}"
        self._record(msg, getattr(exc, "cause", "") or f"{type(failed).__name__}:{exc}")

    def _record(self, message: str, cause: str = "") -> None:
        self.notes.append(message)
        _warned(cause or message, "%s", message)

    def _degrade(self, exc: BaseException, now: float) -> None:
        failed = self.active
        # The failed source's own last good total is later than our last boundary read; a
        # sensor broken enough to fail may fail here too, so nothing it does may escape.
        try:
            last = failed.last_good() or self._last
        except Exception:
            logger.debug("last_good failed for %r", failed, exc_info=True)
            last = self._last
        self._offset = _then(self._offset, last) if last is not None else self._offset
        self._last = None
        self._note(failed, exc)
        try:
            failed.close()
        except Exception:  # close never raises (see Sensor.close), even when a sensor's does
            logger.debug("close failed for %r", failed, exc_info=True)
        if self._index + 1 >= len(self._sensors):
            self._sensors.append(Unavailable(self.component, f"{failed.method} failed: {exc}"))
        self._index += 1
        self._open_from(now)

    def _open_from(self, now: float) -> None:
        while self._index < len(self._sensors):
            try:
                self.active.open(now)
                return
            except DeviceAbsent as exc:
                self.absent = str(exc)
                self._sensors.append(Unavailable(self.component, str(exc)))
                self._index = len(self._sensors) - 1
                return
            except SourceMissing as exc:
                self.skipped.append(f"{type(self.active).__name__}: {exc}")
                if self._index + 1 >= len(self._sensors):
                    self._sensors.append(Unavailable(self.component, str(exc)))
                self._index += 1
                continue
            except Exception as exc:  # SensorError, or a bug in a sensor: never raise
                if self._index + 1 >= len(self._sensors):
                    self._note(self.active, exc)
                    self._sensors.append(Unavailable(self.component, str(exc)))
                    self._index += 1
                    self.active.open(now)
                    return
                self._note(self.active, exc)
                self._index += 1

    def open(self, now: float) -> None:
        self._index = 0
        self._offset = None
        self._last = None
        self.notes = []
        self.absent = ""
        self.skipped = []
        self._sensors = [s for s in self._sensors if not isinstance(s, Unavailable)] or [
            self._sensors[0]
        ]
        self._open_from(now)

    def sample(self, now: float) -> None:
        try:
            self.active.sample(now)
        except SensorError as exc:
            self._degrade(exc, now)
        except Exception as exc:  # a sensor bug must not take training down
            self._degrade(exc, now)

    def totals(self, now: float) -> Energy:
        # Each failure moves to the next source, which may fail at once too; the chain ends in
        # Unavailable, whose totals cannot fail, so this never raises into training.
        while True:
            try:
                cur = self.active.totals(now)
                break
            except Exception as exc:  # SensorError or a bug: degrade, never raise
                self._degrade(exc, now)
        self._last = cur
        return cur if self._offset is None else _then(self._offset, cur)

    def close(self) -> None:
        for s in self._sensors:
            try:
                s.close()
            except Exception:  # close never raises (see Sensor.close)
                logger.debug("close failed for %r", s, exc_info=True)

    def describe(self) -> str:
        text = self.active.describe()
        if self.skipped:
            text += " [passed over: " + "; ".join(self.skipped) + "]"
        return text

    def status(self) -> ChainStatus:
        """This chain's state as fields (see ``ChainStatus``)."""
        reason = getattr(self.active, "reason", "")
        return ChainStatus(
            component=self.component,
            method=self.method,
            reason=reason if isinstance(reason, str) else "",
            absent=self.absent,
            skipped=tuple(self.skipped),
            notes=tuple(self.notes),
            line=self.describe(),
        )


class Unavailable(Sensor):
    """A component with no working source: 0 J, method ``unavailable``, and the reason why."""

    method = "unavailable"

    def __init__(self, component: str, reason: str) -> None:
        self.component = component
        self.reason = reason

    def open(self, now: float) -> None:
        return None

    def totals(self, now: float) -> Energy:
        return Energy(0.0, 0.0, 0.0, Method.UNAVAILABLE, self.reason)

    def describe(self) -> str:
        return f"{self.component}: unavailable - {self.reason}"


def monotonic() -> float:
    """The clock every sensor and the meter share."""
    return time.monotonic()
