"""Receipts of the SMPP server front: consume finals, update records, send deliver_sm or stash.

Every ``mta smpp-server`` process consumes the durable quorum queue ``<prefix>.smpp.receipts``
(``Topology.smpp_receipts_queue``), bound to ``<accountId>.DELIVERED|FAIL|TIMEOUT`` for its
clients' account ids, competitively. For a final of a message submitted through the server
(its record exists) the record is updated, and when the message's ``registered_delivery``
asks (:func:`~mta.smpp.receipt.wants_receipt`) a deliver_sm receipt (esm_class 0x04,
Appendix B text, ``receipted_message_id`` and ``message_state`` TLVs) goes to a session of
that system_id bound as receiver or transceiver *in this process* (round robin), one per id
the client was given (the message id and each part id). When there is none, or the send
fails, the receipt is stashed in Redis (:meth:`mta.smppclients.Records.stash`); every process
flushes the stash of each system_id it has a receiving session for when it binds and every
``flush_s``. The report message is acked only after each of its receipts was answered or
stashed. A receipt the client refuses with a permanent status is dropped (logged); a
throttling or temporary status, a timeout or a closed session stashes it again. A receiving
session whose window is full of unanswered deliver_sm gets no more: its receipts are stashed,
so a client slow to answer never holds up the report queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, tzinfo
from typing import Any, Final

import aio_pika
import orjson
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from mta.broker import Broker
from mta.contract import ApiStatus
from mta.smpp import pdu as P
from mta.smpp.receipt import MessageState, format_receipt, receipt_state, wants_receipt
from mta.smpp.session import ResponseTimeout, Session, SessionClosed
from mta.smppclients import Job, Record, Records

__all__ = ["ReceiptRouter"]

log = logging.getLogger(__name__)

S = P.CommandStatus
_FINAL_STATUSES: Final = (ApiStatus.DELIVERED, ApiStatus.FAIL, ApiStatus.TIMEOUT)
_RETRY_LATER: Final = frozenset(
    {S.ESME_RTHROTTLED, S.ESME_RMSGQFUL, S.ESME_RX_T_APPN, S.ESME_RSYSERR, S.ESME_RINVBNDSTS}
)
_FLUSH_CHUNK: Final = 100


class ReceiptRouter:
    """The receipt consumer and the receiving sessions of one server process."""

    def __init__(
        self,
        broker: Broker,
        records: Records,
        tz: tzinfo,
        stats: dict[str, int],
        *,
        flush_s: float = 1.0,
        receipt_timeout_s: float = 30.0,
    ) -> None:
        self.broker = broker
        self.records = records
        self.tz = tz
        self.stats = stats
        self.flush_s = flush_s
        self.receipt_timeout_s = receipt_timeout_s
        self.stopping = False
        self.receivers: dict[str, list[Session]] = {}
        self._rr = itertools.count()
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._flushing: set[str] = set()
        self._flusher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, account_ids: Iterable[int]) -> None:
        """Declare, bind and consume the receipts queue; start the periodic flush."""
        topology = self.broker.topology
        self._channel = await self.broker.consumer_channel(prefetch=64)
        exchange = await self._channel.declare_exchange(
            topology.reports_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        self._queue = await self._channel.declare_queue(
            topology.smpp_receipts_queue,
            durable=True,
            arguments={"x-queue-type": "quorum"},
        )
        for account_id in sorted(account_ids):
            for status in _FINAL_STATUSES:
                await self._queue.bind(exchange, topology.report_key(account_id, status.value))
        self._consumer_tag = await self._queue.consume(self._on_report)
        self._flusher = asyncio.create_task(self._flush_loop(), name="smpp-receipt-flush")

    async def stop(self, grace: float) -> None:
        """Stop flushing and consuming (unacked report messages go back to the queue)."""
        self.stopping = True
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        if self._queue is not None and self._consumer_tag is not None:
            with contextlib.suppress(Exception):
                await self._queue.cancel(self._consumer_tag)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        if self._channel is not None:
            with contextlib.suppress(Exception):
                await self._channel.close()

    def add(self, system_id: str, session: Session) -> None:
        """A session bound as receiver/transceiver: its stashed receipts are flushed now."""
        self.receivers.setdefault(system_id, []).append(session)
        task = asyncio.create_task(self.flush(system_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def remove(self, system_id: str, session: Session) -> None:
        receivers = self.receivers.get(system_id, [])
        if session in receivers:
            receivers.remove(session)

    async def _on_report(self, message: AbstractIncomingMessage) -> None:
        try:
            await self.handle_report(message.body)
        except Exception as exc:
            log.warning("SMPP receipts: report message not handled (%r); requeued", exc)
            await asyncio.sleep(1.0)
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)
            return
        await message.ack()

    async def handle_report(self, body: bytes) -> None:
        """One report message: update the records of its finals, send or stash receipts."""
        try:
            doc = orjson.loads(body)
            results = doc["results"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("SMPP receipts: a report body that is not a result list; ignored")
            return
        finals: dict[str, dict[str, Any]] = {}
        for result in results:
            if not isinstance(result, dict):
                continue
            message_id = result.get("messageId")
            if isinstance(message_id, str) and result.get("apiStatus") in _FINAL_STATUSES:
                finals[message_id] = result
        if not finals:
            return
        records = await self.records.get(list(finals))
        if not records:
            return  # finals of messages that did not come through this server
        now_ms = int(time.time() * 1000)
        changed: dict[str, Record] = {}
        jobs: list[Job] = []
        for message_id, record in records.items():
            result = finals[message_id]
            if record.state == MessageState.DELETED:
                state = MessageState.DELETED  # our own cancel's FAIL
            else:
                state = receipt_state(result["apiStatus"])
            if not record.final:
                record.state = state
                record.final_ms = now_ms
                record.err = 0 if state == MessageState.DELIVERED else _err_code(result)
                changed[message_id] = record
            if wants_receipt(record.registered_delivery, state):
                done = record.final_ms or now_ms
                for given in (message_id, *record.parts):
                    jobs.append(Job(given, state, done, record))
        await self.records.put(changed)
        if jobs:
            await self._deliver(jobs)

    def _receiver(self, system_id: str) -> Session | None:
        sessions = [s for s in self.receivers.get(system_id, ()) if not s.closed]
        if not sessions:
            return None
        return sessions[next(self._rr) % len(sessions)]

    async def _deliver(self, jobs: Sequence[Job]) -> int:
        """Send each receipt to a receiving session here, or stash it in Redis; how many were
        stashed."""
        outcomes = await asyncio.gather(*(self._send(job) for job in jobs))
        later = [job for job, sent in zip(jobs, outcomes, strict=True) if not sent]
        if later:
            await self.records.stash(later)
            self.stats["receipts_stashed"] += len(later)
        return len(later)

    async def _send(self, job: Job) -> bool:
        """True when the receipt is done with (answered, or refused for good)."""
        session = self._receiver(job.record.system_id)
        if session is None or self.stopping or session.outstanding >= session.window:
            return False  # a client slow to answer must not hold other clients' receipts up
        record = job.record
        state = MessageState(job.state)
        text, tlvs = format_receipt(
            job.message_id,
            state,
            submit_date=datetime.fromtimestamp(record.submit_ms / 1000, self.tz),
            done_date=datetime.fromtimestamp(job.done_ms / 1000, self.tz),
            err=record.err,
            text=record.text,
        )
        deliver = P.DeliverSm(
            source_addr_ton=record.dest_ton,
            source_addr_npi=record.dest_npi,
            source_addr=record.dest_addr,
            dest_addr_ton=record.source_ton,
            dest_addr_npi=record.source_npi,
            destination_addr=record.source_addr,
            esm_class=P.EsmClass.DELIVERY_RECEIPT,
            short_message=text,
            tlvs=tlvs,
        )
        try:
            resp = await session.request(deliver, self.receipt_timeout_s)
        except (SessionClosed, ResponseTimeout, P.PduError) as exc:
            log.info("SMPP receipt %s to %r not answered: %s", job.message_id, session.name, exc)
            return False
        if resp.status == S.ESME_ROK:
            self.stats["receipts_sent"] += 1
            return True
        if resp.status in _RETRY_LATER:
            return False
        self.stats["receipts_dropped"] += 1
        log.warning(
            "SMPP receipt %s refused by %r with %s; dropped",
            job.message_id,
            record.system_id,
            P.status_name(resp.status),
        )
        return True

    async def flush(self, system_id: str) -> None:
        """Send the receipts stashed for *system_id* while it has a receiving session here."""
        if system_id in self._flushing:
            return
        self._flushing.add(system_id)
        try:
            while not self.stopping and self._receiver(system_id) is not None:
                jobs = await self.records.take(system_id, _FLUSH_CHUNK)
                if not jobs:
                    return
                stashed = await self._deliver(jobs)
                if stashed or len(jobs) < _FLUSH_CHUNK:
                    return  # the rest on the next round
        except Exception as exc:
            log.warning("SMPP receipts for %r: flush failed (%r); retried later", system_id, exc)
        finally:
            self._flushing.discard(system_id)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)
            for system_id in [sid for sid, ss in self.receivers.items() if ss]:
                await self.flush(system_id)


def _err_code(result: dict[str, Any]) -> int:
    """The receipt's ``err:`` for a non-delivered final: the partner's status when it is a
    number of at most 3 digits, else 1 (MMP results carry free-text statuses)."""
    status = str(result.get("partnerStatus") or "")
    if status.isascii() and status.isdigit() and len(status) <= 3:
        return int(status)
    return 1
