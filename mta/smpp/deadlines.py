"""Response deadlines of one SMPP session's outstanding requests, kept with one timer.

A ``asyncio.TimerHandle`` per request (``call_later`` at send, ``cancel`` at answer)
costs a heap push and a cancelled entry left in the loop's heap per request — at 10,000
requests/s with a 60 s timeout, hundreds of thousands of dead timers. Requests of one session
mostly share one timeout, so their deadlines come in order: they wait in a deque, answered ones
leave it from the front, and one timer, set for the oldest deadline, expires what is due when it
fires. A request whose deadline comes before the last one queued (a shorter timeout than the
others, e.g. an unbind's grace) gets a timer of its own. Either way a request expires at its
deadline exactly as with ``call_later`` (the loop's clock resolution included).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Mapping
from typing import Final

_RESOLUTION: Final = time.get_clock_info("monotonic").resolution  # as asyncio's timers use


class Deadlines:
    """Deadlines of the requests in *pending* (sequence → waiter); ``expire(seq, waiter,
    delay)`` is called for each still pending (the same waiter) at its deadline."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        pending: Mapping[int, object],
        expire: Callable[[int, object, float], None],
    ) -> None:
        self._loop = loop
        self._pending = pending
        self._expire = expire
        self._queue: collections.deque[tuple[float, int, object, float]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at = 0.0  # when the timer fires

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, seq: int, waiter: object, delay: float) -> None:
        """Expire *waiter* (pending under *seq*) *delay* seconds from now."""
        deadline = self._loop.time() + delay
        queue = self._queue
        if queue and deadline < queue[-1][0]:
            self._loop.call_at(deadline, self._expire_one, seq, waiter, delay)
            return
        queue.append((deadline, seq, waiter, delay))
        if self._timer is None or deadline < self._armed_at:
            self._arm(deadline)

    def trim(self) -> None:
        """Drop answered requests from the front (call after an answer)."""
        queue = self._queue
        pending = self._pending
        while queue:
            head = queue[0]
            if pending.get(head[1]) is head[2]:
                return
            queue.popleft()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queue.clear()

    def _sweep(self) -> None:
        self._timer = None
        queue = self._queue
        pending = self._pending
        # what the timer was set for is due now: a loop may fire a timer a little early (uvloop
        # rounds delays to the millisecond), as it did each request's own call_later timer
        due = max(self._loop.time() + _RESOLUTION, self._armed_at)
        while queue:
            deadline, seq, waiter, delay = queue[0]
            if pending.get(seq) is not waiter:
                queue.popleft()
                continue
            if deadline > due:
                if self._timer is None or deadline < self._armed_at:
                    self._arm(deadline)  # (expire() may have armed it for a later one)
                return
            queue.popleft()
            self._expire(seq, waiter, delay)

    def _arm(self, deadline: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(deadline, self._sweep)
        self._armed_at = deadline

    def _expire_one(self, seq: int, waiter: object, delay: float) -> None:
        if self._pending.get(seq) is waiter:
            self._expire(seq, waiter, delay)
