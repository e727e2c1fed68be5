"""A log-flood limiter: at most so many lines of one kind per window, whatever peers send.

:class:`LogLimiter` lets at most *burst* warnings of one kind through per window; the next
allowed one says how many were suppressed. It only decides (no loop), with an injectable
clock. SMPP sessions (both directions), the SMPP server and ``mta http``'s webhooks use it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["LogLimiter"]

Clock = Callable[[], float]


class LogLimiter:
    """At most *burst* log lines of one kind per *window_s* seconds."""

    def __init__(self, burst: int = 10, window_s: float = 60.0, clock: Clock = time.monotonic):
        self.burst = burst
        self.window_s = window_s
        self._clock = clock
        self._windows: dict[str, list[float]] = {}  # kind → [window start, logged, suppressed]

    def allow(self, kind: str) -> int | None:
        """None: do not log this one. Else log it, adding how many of this kind were
        suppressed before it (0: none)."""
        now = self._clock()
        window = self._windows.get(kind)
        if window is None or now - window[0] >= self.window_s:
            suppressed = int(window[2]) if window is not None else 0
            self._windows[kind] = [now, 1, 0]
            return suppressed
        if window[1] < self.burst:
            window[1] += 1
            return 0
        window[2] += 1
        return None
