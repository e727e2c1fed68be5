"""The one periodic loop of every background task: run a step until stopping, idle between.

Held-message release, report rounds, outbox recovery and the metrics sampler all repeat one
step until the process stops. A step returns True when it found work (run it again at once)
or False (wait ``idle_s``, or less if the process stops meanwhile). A step that raises is
logged and retried after ``error_pause_s``: a background task never dies of an outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

__all__ = ["repeat"]


async def repeat(
    what: str,
    step: Callable[[], Awaitable[bool | None]],
    stopping: asyncio.Event,
    idle_s: float,
    *,
    error_pause_s: float = 1.0,
    log: logging.Logger | None = None,
    error_level: int = logging.WARNING,
) -> None:
    """Run ``step`` until ``stopping`` is set (see the module docstring)."""
    logger = log or logging.getLogger(__name__)
    while not stopping.is_set():
        try:
            busy = await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.log(error_level, "%s failed: %s; retrying", what, exc, exc_info=True)
            busy = False
            await _pause(stopping, error_pause_s)
        if not busy:
            await _pause(stopping, idle_s)


async def _pause(stopping: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)
