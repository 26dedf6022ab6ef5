"""What the adapters hand the tracker from their framework: its metrics as plain floats, and the
framework object that called them."""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Collection, Iterable, Mapping
from types import FrameType
from typing import Any

from carbon_callbacks.records import EpochRecord


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



class MissingMonitors:
    """Warns once per fit about each monitored metric missing from the fit's first record.

    Args:
        logger: where the warning goes.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._armed = True

    def rearm(self) -> None:
        """A new fit: check its first record."""
        self._armed = True

    def check(
        self, record: EpochRecord, monitors: Iterable[str | None], own: Collection[str]
    ) -> None:
        """Warn about each of ``monitors`` (not our ``own`` keys) missing from ``record``."""
        if not self._armed:
            return
        self._armed = False
        for name in dict.fromkeys(n for n in monitors if isinstance(n, str) and n):
            if name not in record.metrics and name not in own:
                self._logger.warning(
                    "monitor %r was not logged by the end of epoch %d; the metrics that exist "
                    "are: %s. Log it, or pass one of these as monitor.",
                    name, record.epoch, ", ".join(sorted(record.metrics)) or "none",
                )
