"""Report bodies recorded in Redis before publishing: publish them, and recover a dead writer's."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from mta.broker import Broker
from mta.store import Store

log = logging.getLogger(__name__)

RECOVERY_EVERY_S = 5.0


def entry(routing_key: str, body: bytes) -> bytes:
    """An outbox value: the routing key, a newline, the body."""
    return routing_key.encode() + b"\n" + body


async def publish(store: Store, broker: Broker, entries: dict[str, bytes]) -> None:
    """Publish recorded entries with confirms in flight together, then delete them."""
    if not entries:
        return
    messages = []
    for value in entries.values():
        key, _, body = value.partition(b"\n")
        messages.append((key.decode(), body))
    await broker.publish_reports(messages)
    await store.outbox_done(list(entries))


async def recover_once(store: Store, broker: Broker) -> int:
    """Publish entries whose writer did not finish within the grace period (it died)."""
    taken = await store.take_outbox()
    if taken:
        await publish(store, broker, dict(taken))
        log.warning(
            "outbox recovery published %d report message(s) of a stopped process", len(taken)
        )
    return len(taken)


async def recovery_loop(store: Store, broker: Broker, stopping: asyncio.Event) -> None:
    while not stopping.is_set():
        try:
            await recover_once(store, broker)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("outbox recovery failed: %s; will retry", exc)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=RECOVERY_EVERY_S)
