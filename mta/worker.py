"""The worker: consumes send batches, hands messages to their accounts' adapters, records results.

One AMQP message is one batch, and the batch is the unit of every cost: one Lua call marks its
messages in flight, one MULTI/EXEC records their outcomes (pending records, held messages,
report bodies in the outbox), the report bodies are published with confirms in flight together,
and only then is the batch acked. So a crash at any point loses nothing:

* before the outcome is recorded, the batch comes back and its in-flight messages follow
  ``MTA_INFLIGHT_POLICY`` (``resubmit`` by default, or ``fail``: see :class:`InFlightPolicy`);
* after it, the batch comes back and every recorded message is skipped, while a report body
  not yet confirmed is published by the outbox recovery of any process.

Transient partner errors are retried a few times in place (tenacity, under a second or two),
then the messages go to a delayed-retry queue (``<p>.retry.<lane>.<delay>s``) that dead-letters
them back onto the send exchange: no consumer sleeps on them.
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
from dataclasses import replace
from typing import Any, TypeVar

import orjson
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from mta import metrics, outbox
from mta.adapter import (
    AdapterError,
    PermanentError,
    ReceiptMode,
    SendPattern,
    ThrottledError,
    TransientError,
)
from mta.broker import Broker
from mta.config import InFlightPolicy, Settings
from mta.contract import (
    REASON_RETRY,
    REASON_SENDER,
    ApiStatus,
    BatchError,
    Invalid,
    Rules,
    SmsResponse,
    SmsSendRequest,
    check_message,
    decode_batch,
    format_time,
    has_surrogate,
)
from mta.internal import Forged, Internal, read_internal
from mta.loops import repeat
from mta.outage import is_outage, until_back
from mta.outcome import BatchPass, Limits, OutgoingMessage
from mta.registry import AccountRuntime, Registry, State
from mta.store import (
    MARK_HELD,
    MARK_INFLIGHT,
    MARK_RETRY,
    MARK_TAKEN,
    Outcome,
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

#: Tries of a partner call in place, before its messages go to a delayed-retry queue.
SEND_TRIES = 3
HELD_BATCH = 100
#: How often held messages are looked at when none was due.
HELD_IDLE_S = 1.0
#: The longest a bulk batch waits for its account's rate limit before it is deferred to a
#: delayed-retry queue instead (well under RabbitMQ's consumer timeout).
RATE_MAX_WAIT_MS = 60_000
#: How long a batch waits for the probe of its account's open circuit before it is parked.
PROBE_WAIT_S = 5.0
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


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

    # --- life cycle ---------------------------------------------------------------------
    async def start(self) -> None:
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
            await self._dead(message, reason[:1000])
            self._m.inc(metrics.DEAD_LETTERS, "worker_error")

    async def _dead(self, message: AbstractIncomingMessage, reason: str) -> None:
        headers = {k: v for k, v in (message.headers or {}).items() if k not in INTERNAL_HEADERS}
        headers[HEADER_DEAD_REASON] = reason
        headers.setdefault(HEADER_ORIGINAL_KEY, message.routing_key or "")
        batch_id = batch_id_of(message.message_id, message.body)
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
            await self._dead(message, str(exc))
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
            await self._submit(work, runtime, items)
        elif groups:
            await asyncio.gather(*(self._submit(work, rt, items) for rt, items in groups.items()))
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

    # --- partner calls ------------------------------------------------------------------
    async def _submit(
        self, work: BatchPass, runtime: AccountRuntime, items: list[OutgoingMessage], hop: int = 0
    ) -> None:
        """Send items through an account, or its failover when it cannot take them (one hop:
        it is inactive, its Login is NOK, it is down, or its circuit breaker is open)."""
        inactive = not runtime.account.active
        state = State.NEW if inactive else await runtime.ensure_login()
        if state == State.READY and runtime.probing:
            # A probe of the open circuit is in flight: follow its outcome, not a retry tier.
            await runtime.probe_settled(PROBE_WAIT_S)
        reason = ""
        if inactive:
            reason = "is inactive"
        elif state == State.NOK:
            reason = "has a NOK login"
        elif state != State.READY:
            reason = f"is unavailable ({runtime.detail})"
        elif not runtime.allows():
            reason = "has its circuit open after repeated transient failures"
        if reason:
            failover = runtime.failover
            if (
                hop == 0
                and failover is not None
                and failover.account.active
                and await failover.ensure_login() == State.READY
                and failover.may_send()
            ):
                note = (
                    f"via failover account {failover.account.name!r}: account "
                    f"{runtime.account.name!r} "
                )
                for item in items:
                    item.note = note + reason
                self.stats["failover"] += len(items)
                await self._submit(work, failover, items, hop + 1)
            elif inactive:
                for item in items:
                    account_id = item.checked.message.accountId
                    work.fail(
                        item,
                        f"accountId: account {runtime.account.name!r} serving {account_id} "
                        "is inactive",
                        "INACTIVE",
                        runtime.account.name,
                    )
            elif state == State.NOK:
                for item in items:
                    work.fail(
                        item,
                        f"account {runtime.account.name!r}: {runtime.detail}",
                        "LOGIN_NOK",
                        runtime.account.name,
                    )
            else:
                kind = "unavailable" if state != State.READY else "circuit_open"
                name = runtime.account.name
                work.park(items, f"account {name!r}: {reason}", name)
                self._m.inc(metrics.PARKED, runtime.account.name, kind, n=len(items))
            return
        meta = runtime.meta
        size = 1 if meta.pattern == SendPattern.LOOP else max(1, meta.max_batch)
        chunks = [items[i : i + size] for i in range(0, len(items), size)]
        if len(chunks) == 1:
            await self._send_chunk(work, runtime, chunks[0])
        else:
            await asyncio.gather(*(self._send_chunk(work, runtime, c) for c in chunks))

    async def _pace(self, work: BatchPass, runtime: AccountRuntime, n: int) -> bool:
        """Wait for the account's shared rate limit; False when the wait is too long (the items
        then go to a delayed-retry queue without spending an attempt)."""
        account = runtime.account
        if account.rate_limit <= 0:
            return True
        if work.lane == LANE_PRIORITY:
            # Priority traffic never queues behind bulk reservations; it still counts.
            await self._infra(
                "rate limit",
                lambda: self.store.reserve_rate(account.name, n, account.rate_limit, 1 << 62),
            )
            return True
        wait = await self._infra(
            "rate limit",
            lambda: self.store.reserve_rate(account.name, n, account.rate_limit, RATE_MAX_WAIT_MS),
        )
        if wait is None:
            return False
        if wait:
            self._m.inc(metrics.RATE_WAIT, account.name, n=wait / 1000)
            await asyncio.sleep(wait / 1000)
        return True

    async def _send_chunk(
        self, work: BatchPass, runtime: AccountRuntime, items: list[OutgoingMessage]
    ) -> None:
        account = runtime.account
        messages = [item.checked.message for item in items]
        if account.sender:
            messages = [m if m.sender else replace(m, sender=account.sender) for m in messages]
        request = SmsSendRequest(messages)
        name = account.name
        if account.rate_limit > 0 and not await self._pace(work, runtime, len(messages)):
            runtime.probe_unused()
            work.later(work.deferred, items)
            self.stats["rate_deferred"] += len(items)
            self._m.inc(metrics.RATE_DEFERRED, name, n=len(items))
            return
        try:
            async with runtime.semaphore:
                if self._policy_fail:  # exact: only a message whose Send starts is ever 'i'
                    ids = [item.message_id for item in items]
                    await self._infra("in-flight mark", lambda: self.store.mark_inflight(ids))
                started = time.perf_counter()
                try:
                    response = await runtime.adapter.send(request)
                except Exception as exc:
                    if not _retry_in_place(exc):
                        raise
                    response = await _send_again(runtime, request)
                finally:
                    if self._metrics:
                        took = time.perf_counter() - started
                        self._m.observe(metrics.PARTNER_CALL, took, name, "send")
        except RetryError as exc:
            cause = exc.last_attempt.exception()
            detail = runtime.scrub(cause.detail if isinstance(cause, AdapterError) else repr(cause))
            log.warning(
                "account %r: Send failed %d times (%s); %d message(s) to delayed retry",
                name,
                SEND_TRIES,
                detail,
                len(items),
                extra={"account": name, "batch_id": work.batch_id},
            )
            runtime.failed()
            self._m.inc(metrics.PARTNER_ERRORS, name, "send", "transient")
            self._retry(work, items, detail, name, "transient")
            return
        except ThrottledError as exc:
            runtime.probe_unused()  # the partner answers: throttling says nothing of an outage
            self._m.inc(metrics.PARTNER_ERRORS, name, "send", "throttled")
            self._retry(work, items, f"throttled: {runtime.scrub(exc.detail)}", name, "throttled")
            return
        except PermanentError as exc:
            runtime.succeeded()  # the partner answered (it refused these messages)
            self._m.inc(metrics.PARTNER_ERRORS, name, "send", "permanent")
            for item in items:
                work.fail(item, runtime.scrub(exc.detail), "PERMANENT", name)
            return
        except Exception as exc:  # an adapter bug: the messages retry later, loudly
            detail = runtime.scrub(f"adapter error: {type(exc).__name__}: {exc}")
            # The traceback is masked by the process's log formatter (mta.cli).
            log.error(
                "account %r: Send raised %s",
                name,
                detail,
                exc_info=True,
                extra={"account": name, "batch_id": work.batch_id},
            )
            runtime.probe_unused()
            self._m.inc(metrics.PARTNER_ERRORS, name, "send", "bug")
            self._retry(work, items, detail, name, "bug")
            return
        runtime.succeeded()
        if len(response.results) != len(items):
            detail = (
                f"adapter {runtime.account.adapter!r} answered {len(response.results)} "
                f"results for {len(items)} messages; outcome unknown"
            )
            log.error("account %r: %s", name, detail)
            for item in items:
                work.fail(item, detail, "ADAPTER_ERROR", name)
            return
        pushes = runtime.meta.receipts != ReceiptMode.PULL
        again: list[OutgoingMessage] = []
        later: list[OutgoingMessage] = []
        later_detail = ""
        for item, message, result in zip(items, messages, response.results, strict=True):
            if result.partnerDetail and result.apiStatus == ApiStatus.FAIL:
                result.partnerDetail = runtime.scrub(result.partnerDetail)
            if result.reason == REASON_RETRY and result.apiStatus == ApiStatus.FAIL:
                later.append(item)
                later_detail = later_detail or f"{result.partnerStatus}: {result.partnerDetail}"
                continue
            if (
                result.reason == REASON_SENDER
                and result.apiStatus == ApiStatus.FAIL
                and account.fallback_sender
                and message.sender != account.fallback_sender
                and not item.fallback_tried
            ):
                item.fallback_tried = True
                item.note = (
                    f"sent with fallback sender {account.fallback_sender!r}: the partner "
                    f"rejected sender {message.sender!r} ({result.partnerDetail})"
                )
                item.checked.message = replace(message, sender=account.fallback_sender)
                again.append(item)
                continue
            if (
                result.apiStatus in (ApiStatus.OK, ApiStatus.WAITING)
                and not result.partnerMessageId
            ):
                work.fail(
                    item,
                    f"adapter {runtime.account.adapter!r} accepted the "
                    "message without a partnerMessageId; it cannot be followed",
                    "ADAPTER_ERROR",
                    name,
                )
                continue
            work.result(item, result, name, pushes)
        self.stats["sent"] += len(items) - len(later)
        if later:
            self._retry(work, later, later_detail, name, "partner")
        if again:
            self.stats["fallback_sender"] += len(again)
            await self._send_chunk(work, runtime, again)

    def _retry(
        self, work: BatchPass, items: list[OutgoingMessage], detail: str, account: str, reason: str
    ) -> None:
        """Items to a delayed-retry queue (an attempt spent), or FAIL when none is left."""
        if work.retry_later(items, detail, account):
            self._m.inc(metrics.RETRIES, metrics.label(account), reason, n=len(items))

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
        entries = outbox.entries(self.topology, "w", work.oks, work.finals)
        outcome = Outcome(
            markers=work.compact_markers(),
            pending=work.pending,
            due=work.due,
            held=work.held,
            held_data=work.held_data,
            outbox=entries,
            partners=work.partners,
        )
        await self._infra("record", lambda: self.store.record(outcome))
        if entries:
            await outbox.publish(self.store, self.broker, entries, self.stopping)
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


async def _send_again(runtime: AccountRuntime, request: SmsSendRequest) -> SmsResponse:
    """The tries after a first transient failure, with jittered backoff (tenacity)."""
    async for attempt in AsyncRetrying(
        retry=retry_if_exception(_retry_in_place),
        wait=wait_exponential_jitter(multiplier=0.1, max=1.0),
        stop=stop_after_attempt(SEND_TRIES - 1),
        reraise=False,
    ):
        with attempt:
            return await runtime.adapter.send(request)
    raise AssertionError("unreachable")


def _retry_in_place(exc: BaseException) -> bool:
    """Transient errors are retried in place, except throttling that asks for a long pause."""
    if isinstance(exc, ThrottledError):
        return exc.retry_after is not None and exc.retry_after <= 1.0
    return isinstance(exc, TransientError)
