"""``AnyOf``: stop when any of several rules says stop."""

from __future__ import annotations

from collections.abc import Sequence

from carbon_callbacks.policies._base import CONTINUE, Decision, Policy
from carbon_callbacks.records import EpochRecord


class AnyOf:
    """Stops when any of its policies says stop; every policy sees every epoch.

    The reasons of all that say stop are joined, and their details kept by position under
    ``details["policies"]`` (the first stopping rule's details are also merged at the top, so
    ``details["shoulder_epoch"]`` works through an ``AnyOf``).

    Example::

        policy = AnyOf(CarbonBudget(max_co2_g=100.0), DiminishingReturns("val_acc"))

    Args:
        *policies: Objects with a ``decide(records) -> Decision`` method.

    Raises:
        ValueError: With no policy.
        TypeError: When an argument has no ``decide`` method.
    """

    def __init__(self, *policies: Policy) -> None:
        if not policies:
            raise ValueError("AnyOf needs at least one policy, e.g. AnyOf(CarbonBudget(50.0)).")
        for i, p in enumerate(policies):
            if not callable(getattr(p, "decide", None)):
                raise TypeError(
                    f"AnyOf argument {i} ({type(p).__name__}) is not a policy: it needs a "
                    "decide(records) -> Decision method."
                )
        self.policies = tuple(policies)

    def __repr__(self) -> str:
        return f"AnyOf({', '.join(repr(p) for p in self.policies)})"

    @property
    def monitor(self) -> str | None:
        """The first monitored metric among the policies (the tracker warns when it is absent)."""
        return next((m for p in self.policies if (m := getattr(p, "monitor", None))), None)

    def decide(self, records: Sequence[EpochRecord]) -> Decision:
        """Ask every policy; stop if any says stop."""
        decisions = [p.decide(records) for p in self.policies]
        stopping = [d for d in decisions if d.stop]
        if not stopping:
            return CONTINUE
        details = {**stopping[0].details, "policies": [dict(d.details) for d in decisions]}
        reason = "; and ".join(d.reason for d in stopping if d.reason) or "stopped"
        return Decision(True, reason, details)
