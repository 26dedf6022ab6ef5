"""A hardware energy counter read over time, turned into joules the device could have used.

A counter (RAPL ``energy_uj``, NVML total energy) is believed only as far as physics allows:
between two reads a device cannot use more than its power ceiling times the elapsed time, and
a counter never runs backwards except by wrapping at its range. A reading outside that (a
negative value, a value 1 MJ low, a reset to 0 when a driver reloads) is refused. The interval
since the last good reading is then estimated at the neighbouring power, with a range from 0 to
the ceiling, and labelled ``model`` until a later reading settles it:

- it agrees with the last good reading (a one-off glitch): the counter's own difference
  replaces the estimate, so nothing is lost or counted twice;
- it agrees with the refused reading (the counter restarted from a new base, as after a driver
  reload): the estimate stands for the interval up to the restart and counting resumes from
  the new base;
- ``MAX_REFUSED`` refusals in a row: the sensor gives the counter up for its next method.

A counter that wraps (RAPL) is read more often than it can wrap at its ceiling; when two reads
were further apart than that (a thread starved by a busy machine), the number of wraps is
estimated from the neighbouring power, and the range spans every count the ceiling allows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from carbon_callbacks.energy.sensors.ranges import counter_range

PLAUSIBLE_MARGIN = 1.5
"""How far above its power ceiling a device's mean power may read before the reading is
refused: power limits are enforced over averaging windows (short excursions above them are
allowed) and the ceiling itself is a limit, not a measurement."""

STEP_SLACK_S = 0.25
"""Seconds of power at the ceiling allowed on top of the elapsed time, because counters advance
in steps (NVML's every few tens of ms), so a short interval can hold one step's worth."""

MAX_REFUSED = 3
"""Refused readings in a row after which a counter is given up for the next method."""

STUCK_S = 1.0
"""A counter that has not moved for this long while the device draws power is refused."""

MIN_DRAW_W = 1.0
"""Power below which a device could leave its millijoule counter unmoved for ``STUCK_S``."""

POWER_SPAN_S = 1.0
"""The neighbouring power is the mean over at least this long: over the few milliseconds
between two close boundaries a counter's steps (and when the read is made) dominate it."""

Kind = Literal["ok", "wraps", "settled", "rebased", "refused", "late"]


@dataclass(frozen=True)
class Verdict:
    """What one reading did: ``kind`` and, when it is worth a note in the window, why."""

    kind: Kind
    note: str = ""


class CounterTrack:
    """One cumulative energy counter, read by a sensor at its own times.

    Args:
        label: the zone or GPU, for notes.
        unit_j: joules per counter unit (1e-6 for ``energy_uj``, 1e-3 for NVML's mJ).
        ceiling_w: the most power the device can draw (its power limit, or a documented
            plausible maximum).
        wrap: the counter's range in units, where it wraps to 0; None for a counter that does
            not wrap in practice (NVML's 64-bit mJ).
    """

    def __init__(self, label: str, *, unit_j: float, ceiling_w: float,
                 wrap: int | None = None) -> None:
        self.label = label
        self.unit_j = unit_j
        self.ceiling_w = ceiling_w
        self.wrap = wrap
        self.open(0, 0.0)

    def open(self, raw: int, now: float) -> None:
        """Take ``raw`` (a valid reading, see ``valid``) at ``now`` as the baseline."""
        self.exact = 0.0  # read off the counter
        self.estimate = 0.0  # settled estimates: refused intervals, unseen wraps
        self.estimate_top = 0.0  # how high the settled estimates could be
        self.pending = 0.0  # the estimate of the interval since the last good reading
        self.pending_top = 0.0
        self.refused = 0
        self.power_w: float | None = None
        self.estimated = False  # an estimate entered the figures since take_estimated()
        self._good: tuple[int, float] = (raw, now)
        self._moved = now  # when the counter last changed
        self._last_raw = raw
        self._candidate: tuple[int, float] | None = None
        self._late = False
        self._until = now  # the open estimate runs to here
        self._power_from = (0.0, now)  # (joules, time) the neighbouring power is measured from
        self._power_settled = False  # measured over a whole POWER_SPAN_S yet

    # ---- figures -----------------------------------------------------------------------

    @property
    def joules(self) -> float:
        """Point value since ``open()``: never decreases."""
        return self.exact + self.estimate + self.pending

    @property
    def top(self) -> float:
        """The most the device can have used since ``open()``, before the counter's band."""
        return self.exact + self.estimate_top + self.pending_top

    def bounds(self, rel: float, quantum: float = 0.0) -> tuple[float, float, float]:
        """(joules, low, high): the counter's band around what it read, plus every estimate
        between 0 and its ceiling."""
        low, high = counter_range(self.exact, rel, quantum)
        return self.joules, low, high + self.estimate_top + self.pending_top

    def take_estimated(self) -> bool:
        """Whether an estimate entered the figures since the last call (or one is open now)."""
        out = self.estimated
        self.estimated = self._late or self.refused > 0
        return out

    def valid(self, raw: int) -> bool:
        """Whether a raw value can be a reading at all (not negative, within the range)."""
        return raw >= 0 and (self.wrap is None or raw < self.wrap)

    # ---- reading -----------------------------------------------------------------------

    def read(self, raw: int, now: float, *,
             draw_w: Callable[[], float | None] | None = None) -> Verdict:
        """Take one reading.

        Args:
            raw: the counter's value.
            now: when it was read (``time.monotonic()``).
            draw_w: the device's power now, asked only when the counter has not moved for
                ``STUCK_S`` (None: a still counter is believed).

        Returns:
            What the reading did; its note says why when it was refused or settled one.
        """
        was_late, self._late = self._late, False
        if not self.valid(raw):
            why = "below 0" if raw < 0 else f"beyond its range {self.wrap}"
            return self._refuse(now, None, f"read {raw} ({why})")
        if raw != self._last_raw:
            self._last_raw, self._moved = raw, now
        elif draw_w is not None and now - self._moved >= STUCK_S:
            watts = draw_w()
            if watts is not None and watts >= MIN_DRAW_W:
                # Nothing was counted since it stopped: the estimate runs from then.
                if self._good[0] == raw:
                    self._good = (raw, min(self._good[1], self._moved))
                return self._refuse(now, None, f"has not moved for {now - self._moved:.3g} s "
                                               f"while the device draws {watts:.3g} W")
        step = self._step(self._good, raw, now)
        if step is not None:
            if self.refused:
                note = (f"{self.label}: the counter agrees again with its last good reading; "
                        "its own difference replaces the estimate")
                return self._accept(step, raw, now, "settled", note)
            if was_late:
                note = f"{self.label}: answering again; its difference replaces the estimate"
                return self._accept(step, raw, now, "settled", note)
            return self._accept(step, raw, now, "wraps" if step[2] > step[1] else "ok", "")
        if self._candidate is not None:
            step = self._step(self._candidate, raw, now)
            if step is not None:
                # The counter restarted at the refused reading: the estimate up to it stands.
                c_raw, c_t = self._candidate
                span = max(0.0, c_t - self._good[1])
                self._settle(self._power() * span, self._top_w() * span)
                self._good = (c_raw, c_t)
                note = (f"{self.label}: the counter restarted from a new base (a driver reload "
                        f"or reset); counting resumes from it, the {span:.3g} s before it "
                        "estimated")
                return self._accept(step, raw, now, "rebased", note)
        return self._refuse(now, raw, self._implausible(raw, now))

    def late(self, now: float) -> Verdict:
        """The counter could not be read in time: the interval is estimated meanwhile."""
        first = not self._late
        self._late = True
        self._extend(now)
        self.estimated = True
        note = ""
        if first:
            note = (f"{self.label}: no reading in time; the interval is estimated at "
                    f"{self._power():.3g} W (range 0-{self._top_w():.3g} W) until it answers")
        return Verdict("late", note)

    def give_up(self) -> float:
        """Keep the open estimate as final: the counter is not read again.

        Returns:
            The time up to which the figures account for the device's energy.
        """
        until = self._until if self.pending else self._good[1]
        self._settle(self.pending, self.pending_top)
        self.refused = 0
        self._late = False
        self._candidate = None
        return until

    # ---- internals ---------------------------------------------------------------------

    def _ceiling_j(self, dt: float) -> float:
        return self.ceiling_w * (PLAUSIBLE_MARGIN * dt + STEP_SLACK_S)

    def _step(self, base: tuple[int, float], raw: int,
              now: float) -> tuple[float, float, float] | None:
        """(point, sure, most) joules from ``base`` to ``raw``, None when impossible."""
        raw0, t0 = base
        dt = max(0.0, now - t0)
        d = raw - raw0
        if self.wrap is None:
            if d < 0:
                return None
            j = d * self.unit_j
            return (j, j, j) if j <= self._ceiling_j(dt) else None
        if d < 0:
            d += self.wrap
        j = d * self.unit_j
        span = self.wrap * self.unit_j
        most = self.ceiling_w * dt
        if most < span:  # not even one whole range fits: the difference is the energy
            return (j, j, j) if j <= self._ceiling_j(dt) else None
        # Reads further apart than a wrap can take: whole ranges may have gone unseen.
        n = max(0, round((self._power() * dt - j) / span))
        n_most = max(n, int((most - j) // span))
        return j + n * span, j, j + n_most * span

    def _implausible(self, raw: int, now: float) -> str:
        raw0, t0 = self._good
        dt = max(0.0, now - t0)
        d = (raw - raw0) * self.unit_j
        if d < 0 and self.wrap is None:
            return f"went back by {-d:.4g} J in {dt:.3g} s"
        if d < 0:
            j = d + self.wrap * self.unit_j if self.wrap else d
            return (f"fell from {raw0} to {raw} in {dt:.3g} s: as a wrap that is {j:.4g} J, "
                    f"above what {self.ceiling_w:g} W can use (a reset, not a wrap)")
        return (f"rose {d:.4g} J in {dt:.3g} s, {d / max(dt, 1e-9):.4g} W against a "
                f"{self.ceiling_w:g} W ceiling")

    def _measure_power(self, now: float) -> None:
        j0, t0 = self._power_from
        span = now - t0
        if span <= 0:
            return
        if span >= POWER_SPAN_S or not self._power_settled:
            # Until a whole span has passed, the mean since open; capped: a counter that
            # stepped once in a short span reads far above the mean.
            self.power_w = min((self.joules - j0) / span, self.ceiling_w)
        if span >= POWER_SPAN_S:
            self._power_from = (self.joules, now)
            self._power_settled = True

    def _power(self) -> float:
        return self.power_w if self.power_w is not None else self.ceiling_w / 2

    def _top_w(self) -> float:
        return max(self._power(), self.ceiling_w)

    def _extend(self, now: float) -> None:
        self._until = now
        dt = max(0.0, now - self._good[1])
        before = self.joules
        self.pending = max(self.pending, self._power() * dt)
        self.pending_top = max(self.pending_top, self._top_w() * dt)
        self.estimated = self.estimated or self.joules > before

    def _settle(self, point: float, top: float) -> None:
        self.estimate += point
        self.estimate_top += top
        self.estimated = self.estimated or point > 0
        self.pending = self.pending_top = 0.0

    def _refuse(self, now: float, raw: int | None, why: str) -> Verdict:
        self.refused += 1
        if raw is not None:
            self._candidate = (raw, now)
        first = self.refused == 1
        self._extend(now)
        self.estimated = True  # whatever the estimate, this interval was not read
        note = ""
        if first:
            note = (f"{self.label}: counter reading refused, it {why}; this interval is "
                    f"estimated at {self._power():.3g} W (range 0-{self._top_w():.3g} W)")
        return Verdict("refused", note)

    def _accept(self, step: tuple[float, float, float], raw: int, now: float, kind: Kind,
                note: str) -> Verdict:
        point, sure, most = step
        before = self.joules
        dt = now - self._good[1]
        self.pending = self.pending_top = 0.0
        self.exact += sure
        if most > sure:  # whole ranges may have gone unseen: counted by estimate
            self.estimate += point - sure
            self.estimate_top += most - sure
            wraps = round((point - sure) / ((self.wrap or 1) * self.unit_j))
            note = note or (f"{self.label}: {dt:.3g} s between reads, longer than a wrap can "
                            f"take at {self.ceiling_w:g} W: {wraps} unseen wrap(s) estimated "
                            f"from the neighbouring {self._power():.3g} W, range widened by "
                            f"{most - sure:.4g} J")
        elif point > 0:  # a counter that did not move says nothing of the power yet
            self._measure_power(now)
        # Never below what was shown: an estimate above what the counter then read is kept,
        # inside the range, rather than letting the total run backwards.
        short = before - self.joules
        if short > 0:
            self.estimate += short
            self.estimate_top += short
            self.estimated = True
        self._good = (raw, now)
        self._candidate = None
        self.refused = 0
        return Verdict(kind, note)
