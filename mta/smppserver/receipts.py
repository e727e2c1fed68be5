"""Receipts of the SMPP server front: consume finals, update records, send deliver_sm or stash.

Every ``mta smpp-server`` process consumes the durable quorum queue ``<prefix>.smpp.receipts``
(``Topology.smpp_receipts_queue``), bound to ``<accountId>.DELIVERED|FAIL|TIMEOUT`` for its
clients' account ids, competitively. For a final of a message submitted through the server (its
record exists) the record is updated, and when the message's ``registered_delivery`` asks
(:func:`~mta.smpp.receipt.wants_receipt`) a deliver_sm receipt (esm_class 0x04, Appendix B
text, ``receipted_message_id`` and ``message_state`` TLVs) goes to a session of that system_id
bound as receiver or transceiver *in this process* (round robin), one per id the client was
given (the message id and each part id).

Each receiving session has an :class:`~mta.smppserver.receipt_outlet.ReceiptOutlet`: its
receipts wait there, in memory (at most ``queue_cap``, at most ``hold_s`` each), for a slot of
the session's window and go out as the client's ``deliver_sm_resp`` free slots — pipelined, at
the client's pace. The report message is acked only after each of its receipts was answered (or
refused for good, logged) or stashed in Redis (``P:smpp:rq:<systemId>``,
:meth:`~mta.smppserver.receipt_stash.ReceiptStash.stash`). A receipt is stashed when this
process has no receiving session of its system_id, when the session's queue is full, or the
receipt waited ``hold_s``, or the client did not answer in time, answered a temporary error or
closed; a stalled or throttling client accepts nothing for a while, so it never holds the
report queue (and other clients' receipts) up.

The stash is drained by every process that has a receiving session of the system_id — at once
when one binds, when this process stashed something for it, and every ``flush_s`` (for receipts
stashed by other processes) — as fast as the sessions take them: receipts are claimed (moved
atomically to a claim set of this process, :meth:`ReceiptStash.claim`) as the sessions' windows
have room, and each is settled as it is answered or given back, so a process that dies while
sending them loses none (another process recovers its claims once its lease expired,
:meth:`ReceiptStash.recover`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import tzinfo
from typing import Any, Final

import aio_pika
import orjson
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from mta.broker import Broker
from mta.contract import ApiStatus
from mta.smpp.receipt import MessageState, receipt_state, wants_receipt
from mta.smpp.session import Session
from mta.smppserver.receipt_outlet import ReceiptOutlet, Ticket
from mta.smppserver.receipt_stash import ReceiptStash
from mta.smppserver.records import MessageRecord, MessageRecords, ReceiptDelivery

__all__ = ["ReceiptRouter"]

log = logging.getLogger(__name__)

_FINAL_STATUSES: Final = (ApiStatus.DELIVERED, ApiStatus.FAIL, ApiStatus.TIMEOUT)
#: apiStatus of a final → the receipt's state (receipt_state, looked up once)
_STATE_OF: Final[dict[str, MessageState]] = {s.value: receipt_state(s) for s in _FINAL_STATUSES}
_CLAIM_MAX: Final = 1000  # stashed receipts claimed at once


class ReceiptRouter:
    """The receipt consumer and the receiving sessions of one server process."""

    def __init__(
        self,
        broker: Broker,
        records: MessageRecords,
        receipt_stash: ReceiptStash,
        tz: tzinfo,
        stats: dict[str, int],
        *,
        flush_s: float = 1.0,
        receipt_timeout_s: float = 30.0,
        queue_cap: int = 10_000,
        hold_s: float = 5.0,
        prefetch: int = 64,
    ) -> None:
        self.broker = broker
        self.records = records
        self.receipt_stash = receipt_stash
        self.tz = tz
        self.stats = stats
        self.flush_s = flush_s
        self.receipt_timeout_s = receipt_timeout_s
        self.queue_cap = queue_cap
        self.hold_s = hold_s
        self.prefetch = prefetch
        self.stopping = False
        self.receivers: dict[str, list[ReceiptOutlet]] = {}
        self._rr = itertools.count()
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._drains: dict[str, asyncio.Task[None]] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._more: set[str] = set()  # system_ids whose stash may hold receipts
        self._ticker: asyncio.Task[None] | None = None
        self._wants: dict[tuple[int, int], bool] = {}  # wants_receipt, computed once per pair

    async def start(self, account_ids: Iterable[int]) -> None:
        """Declare, bind and consume the receipts queue; start the periodic drain."""
        topology = self.broker.topology
        self._channel = await self.broker.consumer_channel(prefetch=self.prefetch)
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
        await self.receipt_stash.renew()
        self._consumer_tag = await self._queue.consume(self._on_report)
        self._ticker = asyncio.create_task(self._tick(), name="smpp-receipt-tick")

    async def stop(self, grace: float) -> None:
        """Stop draining and consuming (unacked report messages go back to the queue; claimed
        receipts not answered go back to the stash)."""
        self.stopping = True
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        if self._queue is not None and self._consumer_tag is not None:
            with contextlib.suppress(Exception):
                await self._queue.cancel(self._consumer_tag)
        for outlets in self.receivers.values():
            for outlet in outlets:
                outlet.close()
        for wake in self._wake.values():
            wake.set()
        if self._drains:
            await asyncio.wait(list(self._drains.values()), timeout=grace)
        if not self._drains:  # every claim settled: nothing for another process to recover
            with contextlib.suppress(Exception):
                await self.receipt_stash.release()
        if self._channel is not None:
            with contextlib.suppress(Exception):
                await self._channel.close()

    def add(self, system_id: str, session: Session) -> None:
        """A session bound as receiver/transceiver: its stashed receipts are drained now."""
        outlet = ReceiptOutlet(
            session,
            self.tz,
            self.stats,
            cap=self.queue_cap,
            hold_s=self.hold_s,
            timeout_s=self.receipt_timeout_s,
            system_id=system_id,
        )
        if system_id in self._wake:  # a drain runs: it hears of this one's progress too
            outlet.on_progress = self._progress_hook(system_id)
        self.receivers.setdefault(system_id, []).append(outlet)
        self.drain_soon(system_id)

    def remove(self, system_id: str, session: Session) -> None:
        """The session closed: what waited for it goes back (to be stashed)."""
        outlets = self.receivers.get(system_id, [])
        for outlet in [o for o in outlets if o.session is session]:
            outlets.remove(outlet)
            outlet.close()
        if not outlets:
            self.receivers.pop(system_id, None)
        self._progress(system_id)

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
        finals: dict[str, tuple[MessageState, dict[str, Any]]] = {}
        state_of = _STATE_OF
        for result in results:
            if not isinstance(result, dict):
                continue
            message_id = result.get("messageId")
            status = result.get("apiStatus")
            if isinstance(message_id, str) and isinstance(status, str) and status in state_of:
                finals[message_id] = (state_of[status], result)
        if not finals:
            return
        records = await self.records.get(list(finals))
        if not records:
            return  # finals of messages that did not come through this server
        now_ms = int(time.time() * 1000)
        changed: dict[str, MessageRecord] = {}
        jobs: list[ReceiptDelivery] = []
        wants = self._wants
        deleted, delivered = MessageState.DELETED, MessageState.DELIVERED
        for message_id, record in records.items():
            state, result = finals[message_id]
            if record.state == deleted:
                state = deleted  # our own cancel's FAIL
            if not record.final:
                record.state = state
                record.final_ms = now_ms
                record.err = 0 if state == delivered else _err_code(result)
                changed[message_id] = record
            key = (record.registered_delivery, state)
            want = wants.get(key)
            if want is None:
                want = wants[key] = wants_receipt(record.registered_delivery, state)
            if want:
                done = record.final_ms or now_ms
                jobs.append(ReceiptDelivery(message_id, state, done, record))
                for given in record.parts:
                    jobs.append(ReceiptDelivery(given, state, done, record))
        await self.records.put(changed)
        if jobs:
            await self._deliver(jobs)

    def _offer(self, jobs: Sequence[ReceiptDelivery], ticket: Ticket) -> list[ReceiptDelivery]:
        """Queue *jobs* on *ticket* to receiving sessions here (round robin over those of each
        system_id that take receipts now); those none took."""
        by_client: dict[str, list[ReceiptDelivery]] = {}
        for job in jobs:
            system_id = job.record.system_id
            group = by_client.get(system_id)
            if group is None:
                group = by_client[system_id] = []
            group.append(job)
        left: list[ReceiptDelivery] = []
        for system_id, group in by_client.items():
            outlets = [] if self.stopping else self._accepting(system_id)
            if len(outlets) == 1:  # the usual case: all to the one session, in order
                taken = outlets[0].offer_many(group, ticket)
                left += group[taken:]
                continue
            for job in group:
                for _ in range(len(outlets)):
                    if outlets[next(self._rr) % len(outlets)].offer(job, ticket):
                        break
                else:
                    left.append(job)
        return left

    async def _deliver(self, jobs: Sequence[ReceiptDelivery]) -> int:
        """Send each receipt to a receiving session here, or stash it in Redis; how many were
        stashed. Returns once each one was answered or stashed."""
        ticket = Ticket(asyncio.get_running_loop())
        later = self._offer(jobs, ticket)
        ticket.close()
        await ticket.future
        later += ticket.back
        if later:
            await self.receipt_stash.stash(later)
            self.stats["receipts_stashed"] += len(later)
            for system_id in {job.record.system_id for job in later}:
                self.drain_soon(system_id)
        return len(later)

    # --- the stash ------------------------------------------------------------------------

    def drain_soon(self, system_id: str) -> None:
        """Send the receipts stashed for *system_id* while it has a receiving session here
        (starts a drain, or tells the running one that more may have come)."""
        if self.stopping or not self.receivers.get(system_id):
            return
        self._more.add(system_id)
        wake = self._wake.get(system_id)
        if wake is not None:
            wake.set()
        if system_id in self._drains:
            return
        task = asyncio.create_task(self._drain(system_id), name=f"smpp-drain {system_id!r}")
        self._drains[system_id] = task
        task.add_done_callback(lambda _t: self._drains.pop(system_id, None))

    async def _drain(self, system_id: str) -> None:
        """Claim stashed receipts as the receiving sessions have room for them (two windows
        each, waiting or in flight); settle each as it is answered or given back."""
        wake = self._wake[system_id] = asyncio.Event()
        self._watch(system_id, self._progress_hook(system_id))
        ticket = Ticket(asyncio.get_running_loop(), keep_sent=True)
        try:
            while True:
                wake.clear()
                outlets = [] if self.stopping else self._accepting(system_id)
                want = min(_CLAIM_MAX, sum(max(0, 2 * o.window - o.load) for o in outlets))
                enough = max(1, min((o.window for o in outlets), default=1) // 2)
                if system_id in self._more and want and (want >= enough or not ticket.left):
                    claimed = await self.receipt_stash.claim(system_id, want)
                    if len(claimed) < want:
                        self._more.discard(system_id)  # the list is empty (for now)
                    refused = self._offer([job for _, job in claimed], ticket)
                    if refused:
                        back = [job.raw for job in refused]
                        await self.receipt_stash.settle(system_id, (), back)
                    continue
                sent = ticket.sent
                if sent or ticket.back:
                    done = [job.raw for job in sent] if sent else []
                    back = [job.raw for job in ticket.back]
                    ticket.back.clear()
                    if sent:
                        sent.clear()
                    await self.receipt_stash.settle(system_id, done, back)
                    self.stats["receipts_stashed"] += len(back)
                    continue
                if not ticket.left and (not outlets or system_id not in self._more):
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), self.flush_s)
        except Exception as exc:
            log.warning("SMPP receipts for %r: drain failed (%r); retried", system_id, exc)
        finally:
            if self._wake.get(system_id) is wake:
                del self._wake[system_id]
                self._watch(system_id, None)

    def _accepting(self, system_id: str) -> list[ReceiptOutlet]:
        return [o for o in self.receivers.get(system_id, ()) if o.accepting]

    def _progress_hook(self, system_id: str) -> Callable[[ReceiptOutlet], None]:
        return lambda _outlet: self._progress(system_id)

    def _watch(self, system_id: str, hook: Callable[[ReceiptOutlet], None] | None) -> None:
        """Outlets tell of their progress (a receipt settled, room again) only while a drain
        of their system_id waits for it: no call per receipt otherwise."""
        for outlet in self.receivers.get(system_id, ()):
            outlet.on_progress = hook

    def _progress(self, system_id: str) -> None:
        wake = self._wake.get(system_id)
        if wake is not None:
            wake.set()

    async def _tick(self) -> None:
        """Every ``flush_s``: renew the claim lease, recover dead owners' claims, and drain
        the stash of every system_id with a receiving session here."""
        while True:
            await asyncio.sleep(self.flush_s)
            try:
                await self.receipt_stash.renew()
                if await self.receipt_stash.recover():
                    log.info("SMPP receipts: claims of a stopped server process recovered")
            except Exception as exc:
                log.warning("SMPP receipts: lease or recovery failed (%r)", exc)
            for system_id in [sid for sid, outlets in self.receivers.items() if outlets]:
                self.drain_soon(system_id)


def _err_code(result: dict[str, Any]) -> int:
    """The receipt's ``err:`` for a non-delivered final: the partner's status when it is a
    number of at most 3 digits, else 1 (MMP results carry free-text statuses)."""
    status = str(result.get("partnerStatus") or "")
    if status.isascii() and status.isdigit() and len(status) <= 3:
        return int(status)
    return 1
