"""The worker: consumes send batches, hands messages to their accounts' adapters, records results.

One AMQP message is one batch, and the batch is the unit of every cost: one Lua call marks its
messages in flight, one MULTI/EXEC records their outcomes (pending records, held messages,
report bodies in the outbox), the report bodies are published with confirms in flight together,
and only then is the batch acked. So a crash at any point loses nothing:

* before the outcome is recorded, the batch comes back and its in-flight messages follow
  ``MTA_INFLIGHT_POLICY`` (``resubmit`` by default, or ``fail``: see :class:`InFlightPolicy`);
* after it, the batch comes back and every recorded message is skipped, while a report body
  not yet confirmed is published by the outbox recovery of any process.

The partner calls themselves are :class:`mta.sending.Sender`'s; what each message's outcome is,
:class:`mta.outcome.BatchPass`'s. Messages to retry go to a delayed-retry queue
(``<p>.retry.<lane>.<delay>s``) that dead-letters them back onto the send exchange: no consumer
sleeps on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from mta import gctune, metrics, outbox
from mta.broker import Broker
from mta.config import InFlightPolicy, Settings
from mta.contract import (
    BatchError,
    Invalid,
    Rules,
    check_message,
    decode_batch,
    format_time,
    has_surrogate,
)
from mta.internal import Forged, Internal, read_internal
from mta.loops import repeat
from mta.outage import is_outage, until_back
from mta.outcome import BatchPass, Limits, OutgoingMessage
from mta.registry import AccountRuntime, Registry
from mta.sending import Sender
from mta.store import (
    MARK_HELD,
    MARK_INFLIGHT,
    MARK_RETRY,
    MARK_TAKEN,
    BatchRecord,
    Store,
)
from mta.topology import (
    HEADER_DEAD_REASON,
    HEADER_ORIGINAL_KEY,
    INTERNAL_HEADERS,
    LANE_BULK,
    LANE_PRIORITY,
    LANES,
    RETRY_TIERS_S,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

HELD_BATCH = 100
#: How often held messages are looked at when none was due.
HELD_IDLE_S = 1.0
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _delivery_lost(message: AbstractIncomingMessage) -> bool:
    """Whether the channel ``message`` came on is gone (it can be neither acked nor nacked)."""
    try:
        return bool(message.channel.is_closed)
    except Exception:  # aio-pika raises ChannelInvalidStateError for a closed channel
        return True


def batch_id_of(message_id: str | None, body: bytes) -> str:
    """The batch's stable id: its AMQP message_id, else a hash of its body."""
    if message_id:
        return message_id
    return "h" + hashlib.blake2b(body, digest_size=12).hexdigest()


class Worker:
    """Consumes ``<p>.send.bulk`` and ``<p>.send.priority``, each with its own concurrency."""

    def __init__(
        self, settings: Settings, registry: Registry, store: Store, broker: Broker
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.store = store
        self.broker = broker
        self.topology = broker.topology
        self.rules = Rules(
            tz=settings.tz, strict_numbers=settings.strict_numbers, max_batch=settings.max_batch
        )
        self.tz = settings.tz
        self.stopping = asyncio.Event()
        self._inflight: set[asyncio.Task[Any]] = set()
        self._consumers: list[tuple[AbstractQueue, str]] = []
        self._loops: list[asyncio.Task[None]] = []
        self.stats: dict[str, int] = defaultdict(int)
        self._limits = Limits(
            max_wait_ms=int(settings.max_wait_s * 1000),
            poll_first_ms=int(settings.poll_first_s * 1000),
            max_attempts=settings.max_attempts,
        )
        self._key = b""
        self._policy_fail = settings.inflight_policy == InFlightPolicy.FAIL
        # Metrics are counted per batch, only when this process serves them.
        self._metrics = bool(settings.metrics_listen)
        self._m = metrics.Children()
        self._forget = outbox.Forgetting(store, self.stopping)
        self.sender = Sender(
            store, self.stats, self._m, self._infra, self._policy_fail, self._metrics
        )

    # --- life cycle ---------------------------------------------------------------------
    async def start(self) -> None:
        gctune.tune()
        concurrency = {
            LANE_BULK: self.settings.bulk_concurrency,
            LANE_PRIORITY: self.settings.priority_concurrency,
        }
        self._key = await self.store.signing_key()
        for lane in LANES:
            channel = await self.broker.consumer_channel(prefetch=concurrency[lane])
            # Declared (not merely looked up), so the robust channel re-declares the queue and
            # restores the consumer after RabbitMQ comes back.
            name = self.topology.send_queue(lane)
            queue = await channel.declare_queue(
                name, durable=True, arguments=self.topology.queue_arguments(name)
            )
            tag = await queue.consume(self._consumer(lane))
            self._consumers.append((queue, tag))
        self._loops.append(asyncio.create_task(self._held_loop(), name="held-release"))
        self._loops.append(asyncio.create_task(self._forget.loop(), name="outbox-delete"))
        self._loops.append(
            asyncio.create_task(
                outbox.recovery_loop(self.store, self.broker, self.stopping), name="outbox-recovery"
            )
        )
        log.info("worker consuming %s", ", ".join(self.topology.send_queue(x) for x in LANES))

    async def stop(self) -> None:
        """Stop taking batches, let in-flight ones finish within the grace period, then return
        the rest to the broker unacked (the channel's close requeues them)."""
        self.stopping.set()
        for queue, tag in self._consumers:
            with contextlib.suppress(Exception):
                await queue.cancel(tag)
        if self._inflight:
            log.info("worker stopping: %d batch(es) in flight", len(self._inflight))
            _, late = await asyncio.wait(
                set(self._inflight), timeout=self.settings.shutdown_grace_s
            )
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
                log.warning(
                    "worker stop: %d batch(es) returned to the broker unfinished", len(late)
                )
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        await self._forget.close()

    def _consumer(self, lane: str) -> Callable[[AbstractIncomingMessage], Awaitable[None]]:
        async def on_message(message: AbstractIncomingMessage) -> None:
            task = asyncio.current_task()
            assert task is not None
            if self.stopping.is_set():
                await message.nack(requeue=True)
                return
            self._inflight.add(task)
            try:
                await self.handle(lane, message)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await message.nack(requeue=True)
                raise
            finally:
                self._inflight.discard(task)

        return on_message

    async def _infra(self, what: str, step: Callable[[], Awaitable[T]]) -> T:
        """Run a Redis/RabbitMQ step, waiting out outages until it works or we stop."""
        return await until_back(what, step, self.stopping)

    # --- one batch ----------------------------------------------------------------------
    async def handle(self, lane: str, message: AbstractIncomingMessage) -> None:
        batch_id = batch_id_of(message.message_id, message.body)
        try:
            await self._handle(lane, message, batch_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self.stopping.is_set() and is_outage(exc):
                raise  # the batch stays unacked and comes back
            if _delivery_lost(message):
                # Its channel died with its broker node (the ack failed): the broker delivers
                # the batch again, whose markers skip what was recorded. Dead-lettering it
                # would leave a stray copy in <prefix>.dead.
                log.warning(
                    "batch %r: its channel closed before the ack (%s); it comes back",
                    batch_id,
                    type(exc).__name__,
                    extra={"batch_id": batch_id},
                )
                return
            # A bug or a deterministic refusal: park the batch with the reason, keep going.
            log.error(  # the traceback is masked by the process's log formatter
                "batch %r: unexpected error (%s); sent to %s",
                batch_id,
                self.registry.scrub(f"{type(exc).__name__}: {exc}"),
                self.topology.dead_queue,
                exc_info=True,
                extra={"batch_id": batch_id},
            )
            reason = self.registry.scrub(f"worker error: {type(exc).__name__}: {exc}")
            await self._dead(message, batch_id, reason[:1000])
            self._m.inc(metrics.DEAD_LETTERS, "worker_error")

    async def _dead(self, message: AbstractIncomingMessage, batch_id: str, reason: str) -> None:
        headers = {k: v for k, v in (message.headers or {}).items() if k not in INTERNAL_HEADERS}
        headers[HEADER_DEAD_REASON] = reason
        headers.setdefault(HEADER_ORIGINAL_KEY, message.routing_key or "")
        await self._infra("keep markers", lambda: self.store.keep_markers(batch_id))
        await self._infra(
            "dead-letter",
            lambda: self.broker.publish(
                self.topology.dead_exchange,
                "",
                message.body,
                headers=headers,
                message_id=message.message_id,
            ),
        )
        await message.ack()
        self.stats["dead"] += 1

    async def _handle(self, lane: str, message: AbstractIncomingMessage, batch_id: str) -> None:
        settings = self.settings
        try:
            raws = decode_batch(message.body, settings.max_batch_bytes, settings.max_batch)
            internal = read_internal(
                self._key,
                batch_id,
                message.body,
                len(raws),
                message.headers or {},
                settings.max_attempts,
            )
        except (BatchError, Forged) as exc:
            log.warning(
                "batch %r refused (%s); sent to %s",
                batch_id,
                exc,
                self.topology.dead_queue,
                extra={"batch_id": batch_id},
            )
            await self._dead(message, batch_id, str(exc))
            self.stats["refused"] += 1
            self._m.inc(metrics.DEAD_LETTERS, "forged" if isinstance(exc, Forged) else "refused")
            return
        given = internal.ids
        ids = given if given is not None else [f"{batch_id}:{i}" for i in range(len(raws))]
        attempt = internal.attempt
        released = internal.released
        # Internal copies (released held messages, delayed retries, rate-limit deferrals) carry
        # their message ids; their markers ('h', 'r') are theirs to take over. A message only
        # taken ('q') by a worker that stopped was never sent: anyone may take it over.
        accept = (
            MARK_TAKEN + (MARK_HELD if released else "") + (MARK_RETRY if given is not None else "")
        )
        now = time.time()
        send_at = format_time(now, self.tz)
        work = BatchPass(
            batch_id, lane, attempt, now, send_at, self._limits, released, size=len(raws)
        )
        work.since_ms = internal.since_ms or int(now * 1000)
        work.suspect = _SURROGATE_ESCAPE.search(message.body) is not None
        if self._metrics:
            work.tally = {}
            self._m.inc(metrics.MESSAGES_IN, lane, n=len(raws))
            self._m.inc(metrics.BATCHES_IN, lane)
        states = await self._infra("begin", lambda: self._begin(work, given, len(raws), accept))
        groups = self._classify(work, raws, ids, states)
        if len(groups) == 1:
            [(runtime, items)] = groups.items()
            await self.sender.submit(work, runtime, items)
        elif groups:
            await asyncio.gather(
                *(self.sender.submit(work, rt, items) for rt, items in groups.items())
            )
        await self._finish(work, message)

    async def _begin(
        self, work: BatchPass, ids: list[str] | None, size: int, accept: str
    ) -> list[str]:
        """Mark messages in flight: one Lua call per originating batch (usually exactly one)."""
        mark = MARK_TAKEN if self._policy_fail else MARK_INFLIGHT
        if ids is None:  # a batch from upstream: every index of this batch
            got = await self.store.begin(work.batch_id, size, accept, mark=mark)
            if got is None:
                work.whole.add(work.batch_id)
                return [""] * size
            return got
        by_batch: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for n, message_id in enumerate(ids):
            batch, index = message_id.rsplit(":", 1)
            by_batch[batch].append((n, index))
        states = [""] * len(ids)
        for batch, members in by_batch.items():
            got = await self.store.begin(batch, [index for _, index in members], accept, mark=mark)
            assert got is not None
            for (n, _), state in zip(members, got, strict=True):
                states[n] = state
        return states

    def _classify(
        self, work: BatchPass, raws: list[Any], ids: list[str], states: list[str]
    ) -> dict[AccountRuntime, list[OutgoingMessage]]:
        groups: dict[AccountRuntime, list[OutgoingMessage]] = defaultdict(list)
        policy_fail = self._policy_fail
        # Only a body with a surrogate escape can hold a lone surrogate (decoded leniently).
        suspect = work.suspect
        for raw, message_id, state in zip(raws, ids, states, strict=True):
            if state == MARK_INFLIGHT:
                if policy_fail:
                    work.fail_raw(
                        message_id,
                        raw,
                        (
                            "outcome unknown: a worker stopped while this message's Send was in "
                            "flight; not resubmitted (MTA_INFLIGHT_POLICY=fail)"
                        ),
                        "UNKNOWN",
                    )
                    continue
                self.stats["resubmitted"] += 1
            elif state:
                self.stats["skipped"] += 1
                continue
            try:
                checked = check_message(raw, self.rules)
                if suspect and has_surrogate(raw):
                    raise Invalid("message: holds a lone surrogate (not valid Unicode text)")
            except Invalid as exc:
                work.fail_raw(message_id, raw, str(exc), "INVALID")
                continue
            item = OutgoingMessage(message_id, raw, checked)
            msg = checked.message
            if checked.expire_at is not None and checked.expire_at <= work.now:
                work.fail(item, f"expireTime: {msg.expireTime} passed before send", "EXPIRED")
            elif checked.start_at is not None and checked.start_at > work.now and not work.released:
                work.held[message_id] = int(checked.start_at * 1000)
                work.held_data[message_id] = orjson.dumps([work.lane, work.attempt, raw])
                work.mark(message_id, MARK_HELD)
            else:
                runtime = self.registry.for_account_id(msg.accountId)
                if runtime is None:
                    work.fail(
                        item,
                        (
                            f"accountId: no account serves {msg.accountId} and no default account "
                            "is configured (MTA_ACCOUNTS)"
                        ),
                        "NO_ACCOUNT",
                    )
                else:
                    groups[runtime].append(item)  # _submit fails over from inactive accounts
        return groups

    # --- recording and publishing -------------------------------------------------------
    async def _finish(self, work: BatchPass, message: AbstractIncomingMessage) -> None:
        if work.retry:
            delay = RETRY_TIERS_S[min(work.attempt, len(RETRY_TIERS_S) - 1)]
            await self._republish(work, work.retry, delay, work.attempt + 1)
            self.stats["retried"] += len(work.retry)
        if work.deferred:
            await self._republish(work, work.deferred, RETRY_TIERS_S[0], work.attempt)
        if work.parked:
            await self._republish(work, work.parked, RETRY_TIERS_S[-1], work.attempt)
            self.stats["parked"] += len(work.parked)
        entries = outbox.entries(self.store, self.topology, "w", work.oks, work.finals)
        outcome = BatchRecord(
            markers=work.compact_markers(),
            pending=work.pending,
            due=work.due,
            held=work.held,
            held_data=work.held_data,
            outbox=entries,
            partners=work.partners,
            forget=self._forget.ride(),  # earlier batches' published entries
        )
        try:
            await self._infra("record", lambda: self.store.record(outcome))
        except BaseException:
            self._forget.give_back(outcome.forget)
            raise
        if entries:
            await outbox.publish(
                self.store, self.broker, entries, self.stopping, self._forget.add
            )
        await message.ack()
        if work.tally:
            for (account, status), n in work.tally.items():
                self._m.inc(metrics.RESULTS, account or metrics.NO_ACCOUNT, status, n=n)
        self.stats["batches"] += 1
        self.stats["oks"] += len(work.oks)
        self.stats["finals"] += len(work.finals)

    async def _republish(
        self, work: BatchPass, items: list[OutgoingMessage], delay: int, attempt: int
    ) -> None:
        """Send items to a delayed-retry queue, which dead-letters them back to the lane."""
        body = orjson.dumps({"messages": [item.raw for item in items]})
        ids = [item.message_id for item in items]
        said = Internal(ids, attempt, work.released, work.since_ms)
        headers = said.headers(self._key, work.batch_id, body)
        queue = self.topology.retry_queue(work.lane, delay)
        await self._infra(
            "retry publish",
            lambda: self.broker.publish("", queue, body, headers=headers, message_id=work.batch_id),
        )

    # --- held messages ------------------------------------------------------------------
    async def _held_loop(self) -> None:
        """Republish held messages whose startTime has come, as internal batches."""

        async def step() -> bool:
            return await self.release_held() > 0

        await repeat("held-message release", step, self.stopping, HELD_IDLE_S, log=log)

    async def release_held(self) -> int:
        lease_ms = int(self.settings.lease_s * 1000)
        ids, vals = await self.store.take_held(HELD_BATCH, lease_ms)
        if not ids:
            return 0
        lanes: dict[tuple[str, int], list[tuple[str, Any]]] = defaultdict(list)
        gone: list[str] = []
        for message_id, val in zip(ids, vals, strict=True):
            if val is None:
                gone.append(message_id)
                continue
            lane, attempt, raw = orjson.loads(val)
            lanes[(lane, attempt)].append((message_id, raw))
        for (lane, attempt), members in lanes.items():
            body = orjson.dumps({"messages": [raw for _, raw in members]})
            message_id = "held-" + hashlib.blake2b(body, digest_size=12).hexdigest()
            ids = [m for m, _ in members]
            headers = Internal(ids, attempt, True).headers(self._key, message_id, body)
            await self.broker.publish(
                self.topology.send_exchange,
                lane,
                body,
                headers=headers,
                message_id=message_id,
            )
        await self.store.drop_held(ids)
        return len(ids)
