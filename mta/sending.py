"""Hands a batch's messages to their accounts' adapters: failover, circuit, pacing, retries.

For each account's share of a batch: use the account, or its failover when it is inactive,
NOK, down or has its circuit open (one hop); wait for the account's shared rate limit (or
defer); call Send in chunks of the adapter's batch size under the account's concurrency; retry
transient errors in place (tenacity), then to the delayed-retry queues; resend a message once
with the fallback sender when the partner rejected its sender. What each message's outcome is
goes into the :class:`~mta.outcome.BatchPass`; the worker writes and publishes it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from mta import metrics
from mta.adapter import (
    AdapterError,
    PermanentError,
    ReceiptMode,
    SendPattern,
    ThrottledError,
    TransientError,
)
from mta.contract import (
    REASON_RETRY,
    REASON_SENDER,
    ApiStatus,
    SmsResponse,
    SmsSendRequest,
)
from mta.outcome import BatchPass, OutgoingMessage
from mta.registry import AccountRuntime, State
from mta.store import Store
from mta.topology import LANE_PRIORITY

__all__ = ["PROBE_WAIT_S", "RATE_MAX_WAIT_MS", "SEND_TRIES", "Sender"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Tries of a partner call in place, before its messages go to a delayed-retry queue.
SEND_TRIES = 3
#: The longest a bulk batch waits for its account's rate limit before it is deferred to a
#: delayed-retry queue instead (well under RabbitMQ's consumer timeout).
RATE_MAX_WAIT_MS = 60_000
#: How long a batch waits for the probe of its account's open circuit before it is parked.
PROBE_WAIT_S = 5.0


class Sender:
    """The partner side of a worker: one per worker process, shared by its batches."""

    def __init__(
        self,
        store: Store,
        stats: dict[str, int],
        children: metrics.Children,
        infra: Callable[[str, Callable[[], Awaitable[Any]]], Awaitable[Any]],
        policy_fail: bool,
        metrics_on: bool = False,
    ) -> None:
        self.metrics_on = metrics_on  # time partner calls only when this process serves them
        self.store = store
        self.stats = stats
        self.m = children
        self._infra = infra  # a Redis step, waited through outages (the worker's)
        self._policy_fail = policy_fail

    async def submit(
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
                await self.submit(work, failover, items, hop + 1)
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
                self.m.inc(metrics.PARKED, runtime.account.name, kind, n=len(items))
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
            self.m.inc(metrics.RATE_WAIT, account.name, n=wait / 1000)
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
            self.m.inc(metrics.RATE_DEFERRED, name, n=len(items))
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
                    if self.metrics_on:
                        took = time.perf_counter() - started
                        self.m.observe(metrics.PARTNER_CALL, took, name, "send")
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
            self.m.inc(metrics.PARTNER_ERRORS, name, "send", "transient")
            self._retry(work, items, detail, name, "transient")
            return
        except ThrottledError as exc:
            runtime.probe_unused()  # the partner answers: throttling says nothing of an outage
            self.m.inc(metrics.PARTNER_ERRORS, name, "send", "throttled")
            self._retry(work, items, f"throttled: {runtime.scrub(exc.detail)}", name, "throttled")
            return
        except PermanentError as exc:
            runtime.succeeded()  # the partner answered (it refused these messages)
            self.m.inc(metrics.PARTNER_ERRORS, name, "send", "permanent")
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
            self.m.inc(metrics.PARTNER_ERRORS, name, "send", "bug")
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
            self.m.inc(metrics.RETRIES, metrics.label(account), reason, n=len(items))


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
