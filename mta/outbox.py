"""Report bodies recorded in Redis before publishing: publish them, and recover a dead writer's.

Publishing and forgetting are two steps, each waited through its own outage: a Redis outage
after the broker confirmed a body never publishes that body again (it only delays the delete).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import defaultdict
from collections.abc import Callable, Iterable

from mta import metrics
from mta.broker import Broker
from mta.contract import ReportResult, encode_report
from mta.loops import repeat
from mta.outage import until_back
from mta.store import Store
from mta.store.keys import outbox_entry_name, shard_of_message
from mta.topology import Topology

log = logging.getLogger(__name__)

RECOVERY_EVERY_S = 5.0
#: A deferred delete that no record took along is made on its own within this many seconds.
FORGET_EVERY_S = 0.1


#: Results per report message: with partnerDetail cut to 1000 characters, a report body stays
#: well under a megabyte, far from any broker's message-size limit, whatever the batch size.
MAX_RESULTS = 500


def entry(routing_key: str, body: bytes) -> bytes:
    """An outbox value: the routing key, a newline, the body."""
    return routing_key.encode() + b"\n" + body


def entries(
    store: Store, topology: Topology, writer: str, *results: Iterable[ReportResult]
) -> dict[str, bytes]:
    """Outbox entries for results: one report message per (accountId, apiStatus) — on a
    Redis Cluster per (store shard, accountId, apiStatus), so it is written with its messages'
    other state — so its routing key is true for each result, split into bodies of at most
    :data:`MAX_RESULTS`."""
    groups: dict[tuple[int, int, str], list[ReportResult]] = defaultdict(list)
    n = store.n
    # On a cluster each shard commits on its own, so a body holds one shard's results; on a
    # single node one step commits every shard, so a body holds any shard's.
    by_shard = store.cluster
    for some in results:
        for result in some:
            shard = shard_of_message(result.messageId, n) if by_shard else -1
            groups[(shard, result.accountId, result.apiStatus)].append(result)
    if not groups:
        return {}
    token = os.urandom(8).hex()
    out: dict[str, bytes] = {}
    for (shard, account_id, status), members in groups.items():
        key = topology.report_key(account_id, status)
        if shard < 0:
            shard = shard_of_message(members[0].messageId, n)
        for start in range(0, len(members), MAX_RESULTS):
            body = encode_report("", members[start : start + MAX_RESULTS])
            out[outbox_entry_name(writer, token, shard, len(out))] = entry(key, body)
    return out


class Forgetting:
    """Deletes of published entries deferred to the writer's next record (one Redis round trip
    less per batch), or made on their own by :meth:`loop` when no record takes them along.

    A writer dying before the delete leaves its entries to the recovery, as with an immediate
    delete; deferring only widens that window by up to :data:`FORGET_EVERY_S`.
    """

    def __init__(self, store: Store, stopping: asyncio.Event) -> None:
        self.store = store
        self.stopping = stopping
        self._names: list[str] = []

    def add(self, names: list[str]) -> None:
        """Entries the broker confirmed: delete them soon."""
        self._names += names

    def take(self) -> list[str]:
        """The names to delete now (:meth:`give_back` them if the write fails)."""
        names, self._names = self._names, []
        return names

    def ride(self) -> list[str]:
        """The names a batch's record deletes: on one node (where the record is one MULTI
        anyway); none on a Redis Cluster, where deletes in other masters' shards would make
        every record wait out a failover of any master — there :meth:`loop` deletes them."""
        return [] if self.store.cluster else self.take()

    def give_back(self, names: list[str]) -> None:
        self._names[:0] = names

    async def flush(self) -> None:
        """Delete what waits now, through outages (until stopping)."""
        names = self.take()
        if not names:
            return
        try:
            await until_back("outbox delete", lambda: self.store.outbox_done(names), self.stopping)
        except BaseException:
            self.give_back(names)
            raise

    async def loop(self) -> None:
        async def step() -> bool:
            await self.flush()
            return False

        await repeat("outbox delete", step, self.stopping, FORGET_EVERY_S, log=log)

    async def close(self) -> None:
        """A last delete at stop; what it cannot delete the recovery publishes again."""
        with contextlib.suppress(Exception):
            await self.flush()
        if self._names:
            log.warning(
                "%d published report message(s) not deleted from the outbox at stop: the "
                "outbox recovery publishes them again (same message_id)",
                len(self._names),
            )


async def publish(
    store: Store,
    broker: Broker,
    entries: dict[str, bytes],
    stopping: asyncio.Event | None = None,
    forget: Callable[[list[str]], None] | None = None,
) -> None:
    """Publish recorded entries with confirms in flight together, then delete them (or hand
    their names to *forget*, e.g. :meth:`Forgetting.add`, to delete them later).

    Each entry is published (and retried through outages) on its own, and the delete is a
    step of its own: an entry the broker confirmed is never published again because another
    entry or the delete failed. The entry's name is the report message's AMQP ``message_id``:
    the one copy that can still come twice (a writer dying between the broker's confirm and
    the delete, or a broker dying before it could confirm a body it had stored) carries the
    same id, so a consumer can drop it.
    """
    if not entries:
        return
    exchange = broker.topology.reports_exchange
    done: list[str] = []

    async def one(name: str, value: bytes) -> None:
        key, _, body = value.partition(b"\n")
        await until_back(
            "report publish",
            lambda: broker.publish(
                exchange, key.decode(), body, mandatory=False, message_id=name
            ),
            stopping,
        )
        done.append(name)

    failures: list[BaseException] = []
    if len(entries) == 1:
        [(name, value)] = entries.items()
        try:
            await one(name, value)
        except Exception as exc:
            failures.append(exc)
    else:
        outcomes = await asyncio.gather(
            *(one(name, value) for name, value in entries.items()), return_exceptions=True
        )
        failures = [x for x in outcomes if isinstance(x, BaseException)]
    if done:
        metrics.REPORTS_PUBLISHED.inc(len(done))
        if forget is not None:
            forget(done)
        else:
            await until_back("outbox delete", lambda: store.outbox_done(done), stopping)
    if failures:
        raise failures[0]


async def recover_once(
    store: Store, broker: Broker, stopping: asyncio.Event | None = None
) -> int:
    """Publish entries whose writer did not finish within the grace period (it died)."""
    taken = await store.take_outbox()
    if taken:
        await publish(store, broker, dict(taken), stopping)
        metrics.OUTBOX_RECOVERED.inc(len(taken))
        log.warning(
            "outbox recovery published %d report message(s) of a stopped process", len(taken)
        )
    return len(taken)


async def recovery_loop(store: Store, broker: Broker, stopping: asyncio.Event) -> None:
    async def step() -> bool:
        await recover_once(store, broker, stopping)
        return False  # every RECOVERY_EVERY_S: entries wait their grace period anyway

    await repeat("outbox recovery", step, stopping, RECOVERY_EVERY_S, log=log)
