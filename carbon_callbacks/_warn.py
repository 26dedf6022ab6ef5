"""One warning per cause: the package's single warn-once mechanism.

A failing sensor, provider or store is asked again at every epoch end; the user must hear about
it once, not once per epoch. Each place that degrades keeps one ``WarnOnce`` (module-level for a
process-wide cause, an attribute for a per-object one) and names the cause as its key.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Hashable


class WarnOnce:
    """Logs a warning the first time a key is seen, and never again for that key.

    Thread-safe: the meter's sampler thread and the training thread may report the same cause.

    Args:
        logger: Where the warning goes (the caller's ``logging.getLogger(__name__)``).

    Example::

        _warned = WarnOnce(logger)
        _warned("rapl-unreadable", "cannot read %s; using the CPU model", path)
    """

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._seen: set[Hashable] = set()
        self._lock = threading.Lock()

    def __call__(self, key: Hashable, message: str, *args: object) -> bool:
        """Log ``message % args`` at WARNING unless ``key`` was already warned about.

        Returns:
            True when this call logged, False when the key had been seen.
        """
        with self._lock:
            if key in self._seen:
                return False
            self._seen.add(key)
        self._logger.warning(message, *args)
        return True

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._seen

    def clear(self) -> None:
        """Forget every key, so each cause warns again (tests, or a fresh run in one process)."""
        with self._lock:
            self._seen.clear()
