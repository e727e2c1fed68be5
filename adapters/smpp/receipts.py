"""Delivery receipts of the smpp adapter: what was submitted, part states, pushed finals.

Every accepted message leaves a small record in the account's shared state
(``context.receipts.remember``, Redis, :data:`STATE_TTL_S`), keyed by its normalised
partnerMessageId: ``m:<id>`` → ``{"t": submitted epoch s, "r": the SMSC's id as written,
"s": [source TON, NPI, address], "p": [part ids], "pr": [parts' SMSC ids]}`` ("p"/"pr" only
for long messages); every other part of a long message gets ``m:<part id>`` →
``{"f": first id, "i": part number, "n": parts}``. So whichever process receives a receipt —
the SMSC may deliver it on any session bound for the system_id — finds out which message it
belongs to, and report() knows when a message was submitted (for the query_sm fallback) and
with which source address (query_sm must repeat it).

A receipt (deliver_sm or data_sm whose esm_class says receipt) is matched by its
``receipted_message_id`` TLV and its text ``id:``, each normalised with the receipt base and
the submit base, then their hex/decimal twins, against the records (this process's recent
ones first, then Redis). A single-part message's final is pushed at once
(``context.receipts.push``). A part's final is remembered as ``ps:<first id>:<n>``; once every
part has a final (or one part FAILs) the combined final is pushed for the first id:
DELIVERED only when every part is delivered, FAIL as soon as one part fails, else TIMEOUT
(some part EXPIRED). Two processes that store the last two parts at once both see both
(each writes before it reads), so the combined final is never missed; the receipt store keeps
the first push. A receipt that matches no record yet (it overtook the record on its way to
Redis) is looked up once more after :data:`UNKNOWN_WAIT_S`, then pushed under its own
normalised id.

The deliver_sm_resp goes out only after the receipt is stored (lookups, stores and pushes of
receipts that arrive together are coalesced into one Redis call each); when storing fails the
answer is ESME_RX_T_APPN, so the SMSC delivers the receipt again later instead of losing it.
The usual receipt — a final for a single-part message this process submitted, its record in
memory — takes a shorter way (:meth:`ReceiptBook.on_receipt`): parsed in the session's read
loop, queued, pushed with the others of the same loop turn in one call, answered with
``Session.reply``; no task or future per receipt, and its in-memory record is dropped once its
final is stored (so memory stays flat).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

import orjson

from mta.sdk import ApiStatus, ReceiptSink, SmsResult
from mta.smpp.pdu import CommandStatus, DataSm, DeliverSm, Pdu, response_for
from mta.smpp.receipt import (
    IdBase,
    MessageState,
    Receipt,
    api_status,
    id_twins,
    normalise_id,
    parse_receipt,
    quick_receipt,
)
from mta.smpp.session import Session

log = logging.getLogger(__name__)

#: How long submission records and part states are kept (the reporter's maximum wait is 24 h).
STATE_TTL_S: Final = 3 * 86400
#: A receipt that matches no record is looked up once more after this many seconds.
UNKNOWN_WAIT_S: Final = 1.0
#: Records of this process's recent submissions kept in memory (saves a Redis lookup).
LOCAL_RECORDS: Final = 200_000

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    """Runs ``run(items)`` once for all the items given in the same loop iteration (and
    those that arrive while a run is in progress), answering each caller its own result."""

    def __init__(self, run: Callable[[list[T]], Awaitable[list[R]]]) -> None:
        self._run = run
        self._items: list[T] = []
        self._futures: list[asyncio.Future[R]] = []
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._items.append(item)
        self._futures.append(future)
        if self._task is None:
            self._task = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._items:
                await asyncio.sleep(0)
                items, futures = self._items, self._futures
                self._items, self._futures = [], []
                try:
                    results = await self._run(items)
                except Exception as exc:
                    for future in futures:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for future, result in zip(futures, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._task = None


@dataclass(frozen=True, slots=True)
class IdRules:
    """How SMSC ids become partnerMessageIds (the option ``receipt_id_base``).

    ``auto``: both sides as given (hex-looking ids lower-cased without leading zeros), with
    the hex/decimal twins tried when nothing matches. ``hex``: receipts write ids in hex while
    submit_sm_resp writes them in decimal; ``dec``: receipts in decimal, submit_sm_resp in hex.
    In both, ids are kept as their decimal value, so either side finds the other.
    """

    base: IdBase = IdBase.AUTO

    def submitted(self, raw: str) -> str:
        """The partnerMessageId of an id from submit_sm_resp."""
        if self.base is IdBase.HEX:  # submit_sm_resp in decimal (a non-decimal id is hex)
            value = raw.strip().strip("\0")
            if value.isascii() and value.isdigit():
                return normalise_id(value, IdBase.DEC)
            return normalise_id(value, IdBase.HEX)
        if self.base is IdBase.DEC:
            return normalise_id(raw, IdBase.HEX)
        return normalise_id(raw, IdBase.AUTO)

    def received(self, raw: str) -> str:
        """The partnerMessageId of an id read from a receipt."""
        return normalise_id(raw, self.base)

    def candidates(self, receipt: Receipt, tlv_id: str) -> list[str]:
        """Normalised ids to look for, best first."""
        raws = [r for r in (tlv_id, receipt.text_id) if r]
        out: list[str] = []
        for raw in raws:
            out += [self.received(raw), self.submitted(raw), normalise_id(raw)]
        for raw in raws:
            out += list(id_twins(raw))
        return [c for c in dict.fromkeys(out) if c]


def combine(states: list[dict[str, Any] | None], first_id: str) -> SmsResult | None:
    """The final of a long message from its parts' finals (None while one is missing and no
    part failed): FAIL when a part failed, DELIVERED when all were delivered, else TIMEOUT."""
    total = len(states)
    for n, state in enumerate(states, 1):
        if state is not None and state["a"] == ApiStatus.FAIL:
            return SmsResult(
                partnerMessageId=first_id,
                partnerStatus=state["s"],
                partnerDetail=f"part {n}/{total}: {state['d']}",
                apiStatus=ApiStatus.FAIL,
                smsMessageCount=total,
            )
    if any(state is None for state in states):
        return None
    done = [s for s in states if s is not None]
    if all(s["a"] == ApiStatus.DELIVERED for s in done):
        return SmsResult(
            partnerMessageId=first_id,
            partnerStatus=done[0]["s"],
            partnerDetail=f"all {total} parts delivered",
            apiStatus=ApiStatus.DELIVERED,
            smsMessageCount=total,
        )
    n, late = next((n, s) for n, s in enumerate(done, 1) if s["a"] != ApiStatus.DELIVERED)
    return SmsResult(
        partnerMessageId=first_id,
        partnerStatus=late["s"],
        partnerDetail=f"part {n}/{total}: {late['d']}",
        apiStatus=ApiStatus(late["a"]),
        smsMessageCount=total,
    )


class ReceiptBook:
    """Submission records, receipt matching and storage for one account."""

    def __init__(
        self,
        sink: ReceiptSink,
        where: str,
        ids: IdRules,
        accepted: ApiStatus = ApiStatus.WAITING,
        unknown_wait_s: float = UNKNOWN_WAIT_S,
    ) -> None:
        self.sink = sink
        self.where = where
        self.ids = ids
        self.accepted = accepted
        self.unknown_wait_s = unknown_wait_s
        self.local: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.stats = {"receipts": 0, "pushed": 0, "parts": 0, "unmatched": 0, "mo": 0, "failed": 0}
        # ids accepted by a Send still in progress → done when its records are kept: a
        # receipt that overtakes its submit_sm_resp's Send waits for them here.
        self.in_send: dict[str, asyncio.Future[None]] = {}
        self._recall = Coalescer(self._recall_many)
        self._remember = Coalescer(self._remember_many)
        self._push = Coalescer(self._push_many)
        self._queued: list[tuple[Session, DeliverSm | DataSm, SmsResult]] = []
        #: the apiStatus of each final MessageState for this partner (quick receipts)
        self._finals = {
            state: status
            for state in MessageState
            if (status := api_status(state, accepted=accepted)).final
        }
        self._flusher: asyncio.Task[None] | None = None

    # --- records ----------------------------------------------------------------------------
    def keep_local(self, records: dict[str, dict[str, Any]]) -> None:
        """Keep the records of accepted messages in this process."""
        self.local.update(records)
        while len(self.local) > LOCAL_RECORDS:
            self.local.popitem(last=False)

    async def share(self, records: dict[str, dict[str, Any]]) -> None:
        """Write the records to the shared state, for the other processes."""
        if self.sink.bound and records:
            await self.sink.remember(
                {f"m:{pid}": orjson.dumps(rec) for pid, rec in records.items()}, STATE_TTL_S
            )

    async def records(self, pids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The records of these partnerMessageIds that exist (local first, then Redis)."""
        found: dict[str, dict[str, Any]] = {}
        missing: list[str] = []
        for pid in pids:
            record = self.local.get(pid)
            if record is not None:
                found[pid] = record
            else:
                missing.append(pid)
        if missing and self.sink.bound:
            raw = await self.sink.recall([f"m:{pid}" for pid in missing])
            for pid in missing:
                value = raw.get(f"m:{pid}")
                if value is not None:
                    found[pid] = orjson.loads(value)
        return found

    async def part_states(self, first: str, total: int) -> list[dict[str, Any] | None]:
        keys = [f"ps:{first}:{n}" for n in range(1, total + 1)]
        values = await self._recall(keys)
        return [orjson.loads(values[k]) if k in values else None for k in keys]

    # --- receipts ---------------------------------------------------------------------------
    def on_receipt(self, session: Session, pdu: DeliverSm | DataSm) -> Pdu | Awaitable[Pdu] | None:
        """The session's handler of a receipt PDU. The usual receipt — a final for a
        single-part message this process submitted — is queued and answered with
        ``session.reply`` once the receipts that arrived with it are pushed in one Redis call
        (no task, no future of its own); any other goes the general way (:meth:`handle`)."""
        short_message = pdu.short_message if isinstance(pdu, DeliverSm) else b""
        quick = quick_receipt(short_message, pdu.tlvs)
        if quick is None:
            return self.handle_parsed(pdu, parse_receipt(short_message, pdu.tlvs))
        message_id, state, stat, err, done = quick
        status = self._finals.get(state)  # api_status(state, accepted) when final, else None
        if status is None:
            return self.handle_parsed(pdu, parse_receipt(short_message, pdu.tlvs))
        pid = self.ids.received(message_id)
        record = self.local.get(pid)
        if record is None or "f" in record or "p" in record or not self.sink.bound:
            return self.handle_parsed(pdu, parse_receipt(short_message, pdu.tlvs))
        self.stats["receipts"] += 1
        detail = f"stat:{stat} err:{err} done:{done}" if done else f"stat:{stat} err:{err}"
        result = SmsResult(
            partnerMessageId=pid,
            partnerStatus=stat,
            partnerDetail=detail,
            apiStatus=status,
            smsMessageCount=1,
        )
        self._queued.append((session, pdu, result))
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_queued())
        return None

    async def _flush_queued(self) -> None:
        """Push the queued receipts (one call for all that came meanwhile), then answer them:
        deliver_sm_resp once stored, ESME_RX_T_APPN when storing failed."""
        try:
            while self._queued:
                await asyncio.sleep(0)
                queued, self._queued = self._queued, []
                status = CommandStatus.ESME_ROK
                try:
                    await self.sink.push([result for _, _, result in queued])
                    self.stats["pushed"] += len(queued)
                except Exception as exc:
                    status = CommandStatus.ESME_RX_T_APPN
                    self.stats["failed"] += len(queued)
                    log.warning(
                        "%s: %d receipt(s) not stored (%s: %s); answered ESME_RX_T_APPN so the "
                        "SMSC sends them again",
                        self.where,
                        len(queued),
                        type(exc).__name__,
                        exc,
                    )
                if status == CommandStatus.ESME_ROK:
                    local_pop = self.local.pop
                    for _, _, result in queued:
                        local_pop(result.partnerMessageId, None)  # its final is stored
                for session, pdu, _ in queued:
                    session.answer(pdu, status)
        finally:
            self._flusher = None
            for session, pdu, _ in self._queued:  # cancelled: answered, so the SMSC resends
                session.answer(pdu, CommandStatus.ESME_RX_T_APPN)
            self._queued = []

    @staticmethod
    def _final(pid: str, receipt: Receipt, status: ApiStatus) -> SmsResult:
        detail = f"stat:{receipt.stat or '?'} err:{receipt.err or '-'}"
        if receipt.done_date:
            detail += f" done:{receipt.done_date}"
        return SmsResult(
            partnerMessageId=pid,
            partnerStatus=receipt.stat,
            partnerDetail=detail,
            apiStatus=status,
            smsMessageCount=1,
        )

    async def handle(self, pdu: DeliverSm | DataSm) -> Pdu:
        """Store one receipt PDU, then answer it (ESME_RX_T_APPN when storing failed)."""
        short_message = pdu.short_message if isinstance(pdu, DeliverSm) else b""
        return await self.handle_parsed(pdu, parse_receipt(short_message, pdu.tlvs))

    async def handle_parsed(self, pdu: DeliverSm | DataSm, receipt: Receipt | None) -> Pdu:
        """Store one parsed receipt, then answer it (ESME_RX_T_APPN when storing failed)."""
        if receipt is None:
            log.warning(
                "%s: %s with the receipt bit but no message id; acked", self.where, pdu.name
            )
            return response_for(pdu)
        self.stats["receipts"] += 1
        try:
            await self.store(receipt)
        except Exception as exc:
            self.stats["failed"] += 1
            log.warning(
                "%s: receipt for %r not stored (%s: %s); answered ESME_RX_T_APPN so the SMSC "
                "sends it again",
                self.where,
                receipt.message_id,
                type(exc).__name__,
                exc,
            )
            return response_for(pdu, CommandStatus.ESME_RX_T_APPN)
        return response_for(pdu)

    async def store(self, receipt: Receipt) -> None:
        status = api_status(receipt.state, accepted=self.accepted)
        if not status.final:
            return  # an intermediate notification: the message stays WAITING
        tlv_id = receipt.message_id if receipt.message_id != receipt.text_id else ""
        likely = self.ids.received(receipt.message_id)
        record = self.local.get(likely)  # the usual case: this process sent it, bases as set
        if record is None and likely in self.in_send:
            await asyncio.shield(self.in_send[likely])
            record = self.local.get(likely)
        pid = likely
        candidates: list[str] = []
        if record is None:
            candidates = self.ids.candidates(receipt, tlv_id)
            pid, record = await self._match(candidates)
        if record is None and self.sink.bound and self.unknown_wait_s > 0:
            await asyncio.sleep(self.unknown_wait_s)  # it may have overtaken its record
            pid, record = await self._match(candidates)
        if record is None:
            self.stats["unmatched"] += 1
            pid = self.ids.received(receipt.message_id)
            log.debug("%s: receipt for unknown id %r stored as is", self.where, pid)
        final = self._final(pid, receipt, status)
        if record is not None and "f" in record:
            await self._store_part(
                record["f"],
                int(record["i"]),
                int(record["n"]),
                status,
                receipt,
                final.partnerDetail,
            )
            return
        if record is not None and "p" in record:
            await self._store_part(pid, 1, len(record["p"]), status, receipt, final.partnerDetail)
            return
        await self._push(final)

    async def _store_part(
        self, first: str, n: int, total: int, status: ApiStatus, receipt: Receipt, detail: str
    ) -> None:
        self.stats["parts"] += 1
        state = {"a": status.value, "s": receipt.stat, "d": detail}
        await self._remember({f"ps:{first}:{n}": orjson.dumps(state)})
        final = combine(await self.part_states(first, total), first)
        if final is not None:
            await self._push(final)

    async def _match(self, candidates: list[str]) -> tuple[str, dict[str, Any] | None]:
        for pid in candidates:
            done = self.in_send.get(pid)
            if done is not None:
                await asyncio.shield(done)
                break
        for pid in candidates:
            record = self.local.get(pid)
            if record is not None:
                return pid, record
        if not self.sink.bound:
            return "", None
        keys = [f"m:{pid}" for pid in candidates]
        values = await self._recall(keys)
        for pid, key in zip(candidates, keys, strict=True):
            if key in values:
                return pid, orjson.loads(values[key])
        return "", None

    # --- coalesced Redis calls ----------------------------------------------------------------
    async def _recall_many(self, batches: list[list[str]]) -> list[dict[str, bytes]]:
        keys = list(dict.fromkeys(k for batch in batches for k in batch))
        values = await self.sink.recall(keys)
        return [{k: values[k] for k in batch if k in values} for batch in batches]

    async def _remember_many(self, batches: list[dict[str, bytes]]) -> list[None]:
        merged: dict[str, bytes] = {}
        for batch in batches:
            merged.update(batch)
        await self.sink.remember(merged, STATE_TTL_S)
        return [None] * len(batches)

    async def _push_many(self, results: list[SmsResult]) -> list[None]:
        await self.sink.push(results)
        self.stats["pushed"] += len(results)
        return [None] * len(results)


def now_s() -> float:
    return time.time()
