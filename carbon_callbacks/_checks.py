"""Argument checks shared by the package: wrong configuration fails at construction, naming the
argument, the bad value and what would be accepted.

The checks live here once so that every room words the same mistake the same way.
"""

from __future__ import annotations

import math
from typing import Literal, cast

Scope = Literal["process", "machine"]
SCOPES: tuple[Scope, ...] = ("process", "machine")


def check_scope(scope: object, name: str = "scope") -> Scope:
    """``scope`` if it is "process" or "machine".

    Raises:
        ValueError: anything else, naming the argument and both accepted values.
    """
    if scope not in SCOPES:
        raise ValueError(
            f"{name}: expected 'process' (this process tree) or 'machine' (the whole machine), "
            f"got {scope!r}"
        )
    return scope


def check_number(
    value: object,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    above: float | None = None,
    unit: str = "",
    fix: str = "",
) -> float:
    """``value`` as a float, if it is a real finite number within the bounds.

    Args:
        value: what the caller passed.
        name: the argument's name, for the message.
        low: the smallest value accepted (inclusive).
        high: the largest value accepted (inclusive).
        above: a value the argument must be strictly greater than (0 for "positive").
        unit: the unit, for the message ("seconds", "W").
        fix: a hint appended to the message (the default, or what to pass instead).

    Raises:
        ValueError: a bool, a non-number, NaN/inf, or a value out of bounds.
    """
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    number = float(cast(float, value)) if ok else math.nan
    ok = ok and math.isfinite(number)
    ok = ok and (low is None or number >= low) and (high is None or number <= high)
    ok = ok and (above is None or number > above)
    if ok:
        return number
    what = "a number"
    if above is not None:
        what = f"a number above {above:g}" if above else "a positive number"
    if low is not None and high is not None:
        what = f"a number from {low:g} to {high:g}"
    elif low is not None:
        what = f"a number of at least {low:g}"
    elif high is not None:
        what = f"a number of at most {high:g}"
    unit_text = f" {unit}" if unit else ""
    hint = f"; {fix}" if fix else ""
    raise ValueError(f"{name}: expected {what}{unit_text}, got {value!r}{hint}")
