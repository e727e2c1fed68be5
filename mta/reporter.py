"""The reporter: polls partners for the messages that are due, and publishes each final once.

Each round leases up to ``MTA_REPORT_BATCH`` due messages in one Lua call (expired leases of a
dead reporter come back first), asks each account's adapter in batches, then commits in one
Lua call that succeeds only while the lease is still ours: finals leave the pending set and
their report bodies enter the outbox atomically, WAITING messages go back to the due index.
Only then are the bodies published (confirms in flight together) and removed from the outbox.
So N reporters never poll one message at once, and a final is published once per message id;
only a reporter that dies between commit and confirm leaves a body that the outbox recovery
publishes again (at-least-once in that window, never lost).

Polling backoff needs no state: the next poll comes ``clamp(age, MTA_POLL_FIRST_S,
MTA_POLL_MAX_S)`` after this one, so a message is polled at about 10 s, 20 s, 40 s, … then every
5 min, and never later than its deadline (expireTime, or MTA_MAX_WAIT_S after submission),
where it ends TIMEOUT unless the partner gives its final state in that last poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from mta import gctune, metrics, outbox
from mta.adapter import (
    PermanentError,
    ReceiptMode,
    SendPattern,
    ThrottledError,
    TransientError,
)
from mta.broker import Broker
from mta.config import Settings
from mta.contract import (
    MAX_DETAIL,
    ApiStatus,
    ReportResult,
    SmsReportRequest,
    SmsResult,
    unpack_result,
    with_note,
)
from mta.loops import repeat
from mta.outage import until_back
from mta.registry import AccountRuntime, Registry, State
from mta.store import Claim, Pending, Store

log = logging.getLogger(__name__)

IDLE_S = 0.2


class Reporter:
    """Follows every pending message to DELIVERED, FAIL or TIMEOUT."""

    def __init__(
        self, settings: Settings, registry: Registry, store: Store, broker: Broker
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.store = store
        self.broker = broker
        self.topology = broker.topology
        self.stopping = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self.stats: dict[str, int] = defaultdict(int)
        self.first_ms = int(settings.poll_first_s * 1000)
        self.max_ms = int(settings.poll_max_s * 1000)
        #: Accounts whose partner pushes receipts: their pending messages are in the partner
        #: index, a receipt may make them due at any time, and spent receipts are dropped.
        self.pushes = frozenset(
            name
            for name, runtime in registry.by_name.items()
            if runtime.meta.receipts != ReceiptMode.PULL
        )
        # Metrics are counted per round, only when this process serves them.
        self._metrics = bool(settings.metrics_listen)
        self._m = metrics.Children()

    async def start(self) -> None:
        gctune.tune()
        for n in range(max(1, self.settings.report_concurrency)):
            self._loops.append(asyncio.create_task(self._loop(), name=f"reporter-{n}"))
        self._loops.append(
            asyncio.create_task(
                outbox.recovery_loop(self.store, self.broker, self.stopping), name="outbox-recovery"
            )
        )
        log.info(
            "reporter polling %d shard(s) of prefix %r with %d loop(s)",
            self.store.n,
            self.store.prefix,
            self.settings.report_concurrency,
        )

    async def stop(self) -> None:
        """Finish the rounds in progress (each gives back what it cannot finish), then return."""
        self.stopping.set()
        _, late = await asyncio.wait(self._loops, timeout=self.settings.shutdown_grace_s)
        for task in late:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)

    async def _loop(self) -> None:
        await repeat("report round", self.round, self.stopping, IDLE_S, log=log)

    async def round(self) -> bool:
        """One claim → Report → commit → publish round; False when nothing was due."""
        lease_ms = int(self.settings.lease_s * 1000)
        token = self.store.new_token(lease_ms)
        try:
            claim = await self.store.claim(self.settings.report_batch, lease_ms, token)
        except BaseException:
            # The claim may have run with its answer lost (a failover): give back whatever
            # it took once Redis answers, rather than after the lease.
            await self._give_back(token)
            raise
        if claim.orphans:
            await self.store.drop_orphans(claim.orphans)
        if not claim.records:
            return bool(claim.orphans)
        if self._metrics:
            metrics.REPORT_ROUNDS.inc()
            metrics.REPORT_CLAIMED.inc(len(claim.records))
        try:
            await self._process(claim)
        except BaseException:
            # Whatever went wrong, give the claims back now rather than after the lease (a
            # Redis failover: once the new master answers).
            await self._give_back(claim.token)
            raise
        return True

    async def _give_back(self, token: int) -> None:
        with contextlib.suppress(Exception):
            await asyncio.shield(
                until_back(
                    "claims release", lambda: self.store.release_token(token), self.stopping
                )
            )

    async def _process(self, claim: Claim) -> None:
        now = time.time()
        now_ms = int(now * 1000)
        records = {mid: Pending.unpack(raw) for mid, raw in claim.records.items()}
        by_account: dict[str, list[str]] = defaultdict(list)
        for mid, record in records.items():
            by_account[record.account].append(mid)
        answers: dict[str, SmsResult] = {}
        await asyncio.gather(
            *(
                self._ask(name, [records[m].partner_id for m in mids], answers)
                for name, mids in by_account.items()
            )
        )
        finals: dict[str, ReportResult] = {}
        waits: list[tuple[str, int]] = []
        for mid, record in records.items():
            answer = answers.get(f"{record.account}\x00{record.partner_id}")
            status = answer.apiStatus if answer is not None else ApiStatus.WAITING
            if status.final:
                assert answer is not None
                finals[mid] = self._final(mid, record, answer)
            elif now_ms >= record.deadline_ms:
                detail = "no final state from the partner by the deadline"
                if answer is not None and answer.partnerDetail:
                    detail += f" (last: {answer.partnerStatus} {answer.partnerDetail})".rstrip()
                finals[mid] = self._final(
                    mid,
                    record,
                    SmsResult(
                        partnerMessageId=record.partner_id,
                        partnerStatus=answer.partnerStatus if answer else "",
                        partnerDetail=detail,
                        apiStatus=ApiStatus.TIMEOUT,
                    ),
                )
            else:
                age = now_ms - record.submitted_ms
                step = min(max(age, self.first_ms), self.max_ms)
                # A receipt pushed while this round ran makes the message due at once (the
                # store's commit knows: the push marked it).
                waits.append((mid, min(now_ms + step, record.deadline_ms)))
        entries = await self._commit(claim.token, finals, waits)
        await outbox.publish(self.store, self.broker, entries, self.stopping)
        if self._metrics and finals:
            tally: dict[tuple[str, str], int] = defaultdict(int)
            for mid, final in finals.items():
                tally[records[mid].account, final.apiStatus] += 1
            for (account, api_status), n in tally.items():
                self._m.inc(metrics.RESULTS, metrics.label(account), api_status, n=n)
        await self._drop_receipts(records, finals)
        self.stats["finals"] += len(finals)
        self.stats["waiting"] += len(waits)

    async def _commit(
        self, token: int, finals: dict[str, ReportResult], waits: list[tuple[str, int]]
    ) -> dict[str, bytes]:
        """Commit the round; what a lost lease left unchanged (on one node the whole round, on
        a cluster that shard: :meth:`Store.failed`) commits again without the lost finals
        (another reporter owns them now). Drops the lost ones from ``finals``; returns the
        outbox entries committed."""
        store = self.store
        todo, todo_waits = dict(finals), waits
        committed: dict[str, bytes] = {}
        while True:
            entries = outbox.entries(store, self.topology, "r", todo.values())
            # A commit that ran but whose answer an outage took comes back "lost" on the
            # retry: its bodies are in the outbox, which publishes them after its grace.
            lost = await until_back(
                "report commit", _commit_step(store, token, list(todo), todo_waits, entries),
                self.stopping,
            )
            if not lost:
                committed.update(entries)
                return committed
            log.warning(
                "%d claim(s) expired before their finals were committed; another "
                "reporter owns them now",
                len(lost),
            )
            failed = store.failed(lost)
            if failed is not None:  # the other shards committed
                committed.update(
                    {e: v for e, v in entries.items() if store.entry_shard(e) not in failed}
                )
            for mid in lost:
                finals.pop(mid, None)
                todo.pop(mid, None)
            if failed is not None:
                todo = {m: f for m, f in todo.items() if store.message_shard(m).index in failed}
                todo_waits = [w for w in todo_waits if store.message_shard(w[0]).index in failed]

    async def _drop_receipts(self, records: dict[str, Pending], finals: dict[str, Any]) -> None:
        """Pushed receipts that produced a final are spent (their TTL covers any left over)."""
        spent: dict[str, list[str]] = defaultdict(list)
        for mid in finals:
            record = records[mid]
            if record.account in self.pushes:
                spent[record.account].append(record.partner_id)
        for account, partner_ids in spent.items():
            await self.store.drop_receipts(account, partner_ids)

    async def _ask(self, name: str, partner_ids: list[str], answers: dict[str, SmsResult]) -> None:
        """Ask one account's adapter about its messages; silence leaves them WAITING."""
        runtime = self.registry.by_name.get(name)
        if runtime is None:
            log.error("pending messages of account %r, which is no longer configured", name)
            return
        meta = runtime.meta
        if meta.receipts != ReceiptMode.PULL:
            pushed = await self.store.receipts(name, partner_ids)
            prefix = name + "\x00"
            for pid, raw in pushed.items():
                answers[prefix + pid] = unpack_result(raw)
            if meta.receipts == ReceiptMode.PUSH:
                return  # the partner only pushes: the others stay WAITING until it does
            partner_ids = [pid for pid in partner_ids if pid not in pushed]
            if not partner_ids:
                return
        if await runtime.ensure_login() != State.READY:
            return
        size = 1 if meta.pattern == SendPattern.LOOP else max(1, meta.max_batch)
        chunks = [partner_ids[i : i + size] for i in range(0, len(partner_ids), size)]
        await asyncio.gather(*(self._ask_chunk(runtime, chunk, answers) for chunk in chunks))

    async def _ask_chunk(
        self, runtime: AccountRuntime, partner_ids: list[str], answers: dict[str, SmsResult]
    ) -> None:
        name = runtime.account.name
        try:
            async with runtime.semaphore:
                started = time.perf_counter()
                try:
                    response = await runtime.adapter.report(SmsReportRequest("", partner_ids))
                finally:
                    if self._metrics:
                        took = time.perf_counter() - started
                        self._m.observe(metrics.PARTNER_CALL, took, name, "report")
        except Exception as exc:
            self._m.inc(metrics.PARTNER_ERRORS, name, "report", _error_kind(exc))
            log.warning(
                "account %r: Report failed for %d message(s): %s",
                runtime.account.name,
                len(partner_ids),
                runtime.scrub(getattr(exc, "detail", None) or repr(exc)),
                extra={"account": name},
            )
            return
        prefix = runtime.account.name + "\x00"
        wanted = set(partner_ids)
        for result in response.results:
            if result.partnerMessageId in wanted:
                if result.partnerDetail:
                    result.partnerDetail = runtime.scrub(result.partnerDetail)
                answers[prefix + result.partnerMessageId] = result

    @staticmethod
    def _final(mid: str, record: Pending, answer: SmsResult) -> ReportResult:
        return ReportResult(  # positional: this runs for every final
            mid, record.mobile, record.account_id, record.sender_id, record.sms_type,
            answer.apiStatus, record.partner_id, answer.partnerStatus,
            with_note(answer.partnerDetail, record.note)[:MAX_DETAIL],
            answer.sendAt or record.send_at, answer.smsOperator,
            answer.smsMessageCount or record.count,
        )


def _commit_step(
    store: Store,
    token: int,
    finals: list[str],
    waits: list[tuple[str, int]],
    entries: dict[str, bytes],
) -> Callable[[], Awaitable[list[str]]]:
    """One commit attempt, retried as a whole through an outage."""
    return lambda: store.finish(token, finals, waits, entries)


def _error_kind(exc: BaseException) -> str:
    """The ``kind`` label of a failed partner call."""
    if isinstance(exc, ThrottledError):
        return "throttled"
    if isinstance(exc, TransientError):
        return "transient"
    if isinstance(exc, PermanentError):
        return "permanent"
    return "bug"
