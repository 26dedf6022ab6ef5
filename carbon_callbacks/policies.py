"""Carbon-aware stopping rules, framework-free: records in, a decision with a reason out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from carbon_callbacks.records import EpochRecord


@dataclass(frozen=True)
class Decision:
    """What a policy says after an epoch: stop or go on, and why in words a person reads."""

    stop: bool
    reason: str = ""


CONTINUE = Decision(stop=False)


@runtime_checkable
class Policy(Protocol):
    """The interface every stopping rule implements; write your own by providing ``decide``.

    ``decide`` is called once after every training epoch with all of the run's training
    ``EpochRecord``s so far (oldest first). It must not raise for ordinary input and must be
    cheap. Policies that keep state across calls also provide ``state_dict()`` and
    ``load_state_dict(state)`` so a resumed run keeps it.
    """

    def decide(self, records: Sequence[EpochRecord]) -> Decision:
        """Return ``Decision(stop=True, reason=...)`` to end training after this epoch."""
        ...
