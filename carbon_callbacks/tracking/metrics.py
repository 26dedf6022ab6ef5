"""What the adapters hand the tracker from their framework: its metrics as plain floats, and the
framework object that called them."""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from types import FrameType
from typing import Any


def _scalar(value: Any) -> float | None:
    """A plain float from a number or a one-element tensor/array; None for anything else."""
    if isinstance(value, (bool, int, float)):
        return float(value)
    numel = getattr(value, "numel", None)  # torch tensors
    size = numel() if callable(numel) else getattr(value, "size", 1)  # numpy arrays
    if size != 1:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def scalar_metrics(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    """The finite scalar entries of a framework's metrics mapping, as floats."""
    out: dict[str, float] = {}
    for name, value in (metrics or {}).items():
        number = _scalar(value)
        if number is not None and math.isfinite(number):
            out[str(name)] = number
    return out


def find_caller_instance(kind: type, max_depth: int = 16) -> Any | None:
    """The nearest ``self`` of type ``kind`` up the call stack, or None.

    Adapters use it once per fit to reach the framework object that called them (Keras'
    ``CallbackList``, transformers' ``Trainer``), which neither framework hands to a callback,
    so that our keys can reach the loggers that run in the same event.
    """
    frame: FrameType | None = sys._getframe(1)
    for _ in range(max_depth):
        if frame is None:
            return None
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, kind):
            return candidate
        frame = frame.f_back
    return None
