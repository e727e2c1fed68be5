"""The window of an SMPP session: how many requests may be outstanding, handed out in order.

A :class:`Window` is a semaphore that can also be taken without waiting (:meth:`Window.try_take`,
for :meth:`mta.smpp.session.Session.try_request`), and that tells an owner when a slot comes free
(``on_free``, e.g. a sender placing a batch's submits over several sessions). Slots go to
waiters first come, first served: a freed slot is handed to the oldest waiter, and
``try_take`` takes none while anyone waits, so a stream of non-waiting takers never starves a
waiting ``request``.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable


class Window:
    """*size* slots; ``async with window`` holds one for the block."""

    def __init__(self, size: int) -> None:
        self.free = size
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.on_free: Callable[[], None] | None = None

    def try_take(self) -> bool:
        """Take a slot if one is free now and nobody waits for one."""
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return True
        return False

    async def take(self) -> None:
        if self.try_take():
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            await future  # the slot is handed over by give(): free is not incremented
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.give()  # handed over just as we were cancelled: pass it on
            else:
                self._waiters.remove(future)
            raise

    def give(self) -> None:
        """Return a slot: to the oldest waiter, else to the free ones."""
        while self._waiters:
            future = self._waiters.popleft()
            if not future.done():
                future.set_result(None)
                return
        self.free += 1
        if self.on_free is not None:
            self.on_free()

    async def __aenter__(self) -> None:
        await self.take()

    async def __aexit__(self, *exc: object) -> None:
        self.give()

