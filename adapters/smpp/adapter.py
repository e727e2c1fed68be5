"""The ``smpp`` adapter (we are the ESME): windowed, pipelined submit_sm; receipts; query_sm.

Send turns every message into one submit_sm per part (GSM-7 ``data_coding`` 0 when the text
fits the GSM alphabet, else UCS-2 8; long texts as ``long_messages`` says: UDH, SAR TLVs or
one ``message_payload``; ``registered_delivery`` 0x01 on every part; ``validity_period`` the
time left until ``expireTime`` in SMPP's relative form, :mod:`mta.adapters.smpp.validity`) and puts
all the parts of the batch in flight together, spread over the account's bound sessions, each
session keeping at most ``window`` unanswered. Answers (docs/protocols.md §1.8,
:func:`mta.smpp.pdu.classify_status`):

* ESME_ROK → the part is accepted; the message is OK when all its parts are, with the first
  part's id (normalised, see :class:`~mta.adapters.smpp.receipts.IdRules`) as partnerMessageId.
* ESME_RTHROTTLED / ESME_RMSGQFUL → the whole session pauses (``throttle_pause_s``, doubling
  per throttle in a row up to :data:`MAX_THROTTLE_PAUSE_S`, reset by an accepted submit) and
  the part is sent again, up to ``throttle_retries`` times.
* ESME_RSYSERR and other transient codes → the part is sent again after a short wait (3
  times); the "suspicious" ones (ESME_RSUBMITFAIL, ESME_RUNKNOWNERR, …) twice, then FAIL.
* Session-state errors (ESME_RINVBNDSTS, …) → the session is closed (it rebinds) and the part
  goes again.
* Every other status is permanent: the message FAILs with the status name in partnerStatus
  and partnerDetail; ESME_RINVSRCADR/RINVSRCTON/RINVSRCNPI also set ``reason`` to
  :data:`mta.contract.REASON_SENDER`, so the worker may retry with the fallback sender.

**A submit whose answer was lost is never sent again.** When the session closes or the
response timeout passes *after* a submit_sm was written, the SMSC may have accepted (and
delivered) it: sending it again risks a duplicate SMS, which the sources (docs/protocols.md §1.8,
Kannel's ``wait-ack`` trade-off) and our upstreams rate worse than a FAIL they can see. So
that message FAILs with partnerStatus ``UNKNOWN`` and a detail saying the SMSC may have
accepted it. A part whose submit_sm was never written (the session dropped first) is safe to
send: it waits up to :data:`RESUME_WAIT_S` for a session to (re)bind and goes then, on the
same concatenation reference. When *nothing* of a batch was accepted or written without an
answer, Send raises :class:`~mta.adapter.TransientError` (``ThrottledError`` when throttling
was the cause), so the worker moves the batch to its delayed-retry queue — and with no bound
session it raises at once, without waiting: an outage never becomes a busy requeue loop.
A message left unsent inside a batch that was otherwise accepted (no part of it accepted:
``NOT_SUBMITTED``, or throttled out) is answered FAIL with ``reason = REASON_RETRY``, so the
worker sends it again through the delayed-retry queue instead of publishing the FAIL.

Report answers from what is known (the reporter reads pushed receipts first); for ids
submitted at least ``query_when_no_receipt_s`` ago without a receipt it sends query_sm (every
part of a long message) and maps ``message_state``; query failures leave the id WAITING.
``login(secret_key)`` binds every session (the MTA secret key means nothing to SMPP and is
ignored); a bind refused for credentials is NOK (False), a network error raises
TransientError. ``destroy`` unbinds. MO messages (non-receipt deliver_sm) are answered
ESME_ROK and logged, nothing more: MO handling is out of scope.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Mapping
from typing import Any, ClassVar, Final

from mta.adapters.smpp import outcomes
from mta.adapters.smpp.client import (
    ROLE_TRX,
    ROLE_TX,
    BindRefused,
    Client,
    ClientConfig,
    LinkDown,
    Unit,
    open_session,
)
from mta.adapters.smpp.options import META
from mta.adapters.smpp.receipts import IdRules, ReceiptBook, combine
from mta.adapters.smpp.validity import validity_period

from mta.sdk import (
    AdapterContext,
    AdapterMeta,
    ApiStatus,
    ReceiptSink,
    SmsMessage,
    SmsReportRequest,
    SmsResponse,
    SmsResult,
    SmsSendRequest,
    ThrottledError,
    TransientError,
    WebhookError,
    WebhookRequest,
)
from mta.smpp.coding import CodingError, LongMode, encode_parts
from mta.smpp.pdu import (
    AlertNotification,
    CommandStatus,
    DataSm,
    DeliverSm,
    GenericNack,
    Outbind,
    Pdu,
    PduError,
    QuerySm,
    QuerySmResp,
    StatusKind,
    SubmitSm,
    SubmitSmResp,
    classify_status,
    response_for,
    status_name,
)
from mta.smpp.receipt import IdBase, is_receipt
from mta.smpp.session import ResponseTimeout, Session, SessionClosed

log = logging.getLogger(__name__)

#: How long parts whose session dropped mid-batch wait for a session to (re)bind.
RESUME_WAIT_S: Final = 5.0
#: Longest session pause after throttling answers in a row.
MAX_THROTTLE_PAUSE_S: Final = 30.0
#: Tries of a part answered with a transient status (ESME_RSYSERR, …) / a suspicious one.
RETRY_TRIES: Final = 3
RETRY_FEW_TRIES: Final = 2

_SENDERS_KEPT: Final = 4096  # senders whose TON/NPI _job keeps
_MESSAGES: Final = (DeliverSm, DataSm)  # tuples: a union is built anew at each isinstance
_NOTICES: Final = (AlertNotification, Outbind)


class SmppAdapter:
    """SMPP 3.4 client adapter: see the module docstring."""

    meta: ClassVar[AdapterMeta] = META

    def __init__(self, options: Mapping[str, Any], context: AdapterContext | None = None) -> None:
        self.context = context or AdapterContext("smpp", 0, ReceiptSink("smpp"))
        # Defaults filled in and choices/bounds checked from meta.options (ValueError).
        o = self.meta.resolve(options)
        if not o["host"] or not o["system_id"]:
            raise ValueError("host and system_id are required")
        self.long_mode = LongMode(str(o["long_messages"]))
        base = IdBase(str(o["receipt_id_base"]))
        accepted = ApiStatus(str(o["accepted_status"]))
        for name, size in (("system_id", 15), ("password", 8), ("system_type", 12)):
            if len(str(o[name]).encode("latin-1", "replace")) > size:
                raise ValueError(f"{name} is longer than the {size} octets SMPP 3.4 allows")
        self.config = ClientConfig(
            account=self.context.account_name,
            host=str(o["host"]),
            port=int(o["port"]),
            system_id=str(o["system_id"]),
            password=str(o["password"]),
            system_type=str(o["system_type"]),
            mode=ROLE_TRX if o["bind"] == ROLE_TRX else ROLE_TX,
            binds=int(o["binds"]),
            window=int(o["window"]),
            enquire_link_s=float(o["enquire_link_s"]),
            response_timeout_s=float(o["response_timeout_s"]),
            throughput=float(o["throughput"]),
            tls=bool(o["tls"]),
            reconnect_s=float(o["reconnect_s"]),
        )
        self.where = self.config.where
        self.source_ton = int(o["source_ton"])
        self.source_npi = int(o["source_npi"])
        self.dest_ton = int(o["dest_ton"])
        self.dest_npi = int(o["dest_npi"])
        self.service_type = str(o["service_type"])
        self.query_after_s = float(o["query_when_no_receipt_s"])
        self.throttle_pause_s = float(o["throttle_pause_s"])
        self.throttle_retries = int(o["throttle_retries"])
        self.ids = IdRules(base)
        self.book = ReceiptBook(self.context.receipts, self.where, self.ids, accepted)
        self.client = Client(self.config, self._on_request)
        self._ref = random.randrange(0x10000)
        self._sources: dict[str, tuple[int, int]] = {}  # sender → (TON, NPI), for _job
        self.stats = {"submitted": 0, "unknown": 0, "throttled": 0, "queries": 0}

    def __repr__(self) -> str:  # never the password
        c = self.config
        return (
            f"<SmppAdapter account={c.account!r} system_id={c.system_id!r} "
            f"host={c.host!r} port={c.port}>"
        )

    # --- Login / Destroy / probes -------------------------------------------------------------
    async def login(self, secret_key: str) -> bool:
        """Bind every session; False when a bind is refused (credentials), TransientError when
        none could bind for another reason (network). ``secret_key`` is not used by SMPP."""
        del secret_key
        outcomes = await self.client.start()
        refused = [o for o in outcomes if isinstance(o, BindRefused)]
        if refused:
            await self.client.stop()
            log.error("%s: login NOK: %r", self.where, refused[0].detail)
            return False
        if all(o is not None for o in outcomes):
            await self.client.stop()
            raise TransientError(f"{self.where}: cannot bind: {outcomes[0]}; retried later")
        return True

    async def destroy(self) -> None:
        """Unbind every session (outstanding requests get a few seconds) and stop reconnecting."""
        await self.client.stop()

    async def test_connection(self) -> bool:
        """A TCP (TLS) connection to host:port opens."""
        try:
            session = await open_session(self.config, ROLE_TRX, "probe", bind=False)
        except LinkDown:
            return False
        await session.close()
        return True

    async def test_credentials(self) -> bool:
        """A bind with the account's credentials succeeds (then unbinds)."""
        role = ROLE_TRX if self.config.mode == ROLE_TRX else ROLE_TX
        try:
            session = await open_session(self.config, role, "probe")
        except (LinkDown, BindRefused):
            return False
        await session.unbind(2.0)
        return True

    async def test_proxy(self) -> bool:
        """SMPP goes over plain TCP/TLS without a proxy: nothing to test, always True."""
        return True

    async def webhook(self, request: WebhookRequest) -> list[SmsResult]:
        """SMPP receipts arrive as deliver_sm on the bound sessions and are pushed from there;
        nothing comes over HTTP, so a call to ``/webhooks/<account>`` is refused (404)."""
        del request
        raise WebhookError(404, f"{self.where}: SMPP receipts arrive as deliver_sm, not over HTTP")

    # --- incoming requests (receipts, MO) -----------------------------------------------------
    def _on_request(self, session: Session, pdu: Pdu) -> Pdu | Any | None:
        if isinstance(pdu, _MESSAGES):
            if is_receipt(pdu.esm_class):
                return self.book.on_receipt(session, pdu)
            self.book.stats["mo"] += 1
            log.info(
                "%s: MO %s from %r to %r acked and dropped (MO handling is out of scope)",
                self.where,
                pdu.name,
                pdu.source_addr,
                pdu.destination_addr,
            )
            return response_for(pdu)
        if isinstance(pdu, _NOTICES):
            return None
        return response_for(pdu, CommandStatus.ESME_RINVCMDID)

    # --- Send -------------------------------------------------------------------------------
    def _source(self, sender: str) -> tuple[int, int]:
        alpha = bool(sender) and not sender.isdigit()
        ton = self.source_ton if self.source_ton >= 0 else (5 if alpha else 1 if sender else 0)
        npi = self.source_npi if self.source_npi >= 0 else (0 if alpha or not sender else 1)
        return ton, npi

    def _job(self, message: SmsMessage) -> outcomes.Job:
        job = outcomes.Job(message)
        sender = message.sender
        source = self._sources.get(sender)  # senders repeat: checked and typed once each
        if source is None:
            if len(sender.encode("latin-1", "replace")) > 20:
                detail = f"sender {sender!r} is longer than 20 octets"
                job.result = outcomes.fail("INVALID_SENDER", detail)
                return job
            if len(self._sources) >= _SENDERS_KEPT:
                self._sources.clear()
            source = self._sources[sender] = self._source(sender)
        try:
            parts = encode_parts(message.text, self.long_mode, ref=self._next_ref())
        except CodingError as exc:
            job.result = outcomes.fail("INVALID_TEXT", f"text cannot be sent over SMPP: {exc}")
            return job
        ton, npi = source
        priority = 1 if message.priority.lower() in ("yes", "true", "1", "y") else 0
        validity = validity_period(message.expireTime, self.context.tz)
        number = message.mobileNumber
        for n, part in enumerate(parts, 1):
            pdu = SubmitSm(  # positional (half the cost of keywords), in the spec's field order:
                self.service_type,  # service_type
                ton,  # source_addr_ton
                npi,  # source_addr_npi
                sender,  # source_addr
                self.dest_ton,  # dest_addr_ton
                self.dest_npi,  # dest_addr_npi
                number,  # destination_addr
                part.esm_class,  # esm_class
                0,  # protocol_id
                priority,  # priority_flag
                "",  # schedule_delivery_time
                validity,  # validity_period
                1,  # registered_delivery
                0,  # replace_if_present_flag
                part.data_coding,  # data_coding
                0,  # sm_default_msg_id
                part.short_message,  # short_message
                tlvs=part.tlvs,
            )
            job.parts.append(outcomes.Part(pdu, n))
        return job

    def _next_ref(self) -> int:
        self._ref = (self._ref + 1) & 0xFFFF
        return self._ref

    async def send(self, request: SmsSendRequest) -> SmsResponse:
        """Submit every part of the batch, windowed and pipelined (module docstring)."""
        if self.client.pick() is None:
            raise TransientError(
                f"{self.where}: no bound SMPP session ({self.client.last_error()}); "
                "the batch is retried later"
            )
        jobs = [self._job(m) for m in request.messages]
        parts = [p for job in jobs for p in job.parts]
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        others: list[asyncio.Future[None]] = []
        try:
            await self._place(parts, done, others)
            await asyncio.gather(*others)
            return await self._finish(jobs, parts, done)
        finally:
            if not done.done():
                done.set_result(None)
            for part in parts:
                if part.pid:
                    self.book.in_send.pop(part.pid, None)
                if part.flight is not None:  # cancelled while in flight
                    part.flight[0].assigned -= 1
                    part.flight = None

    async def _place(
        self,
        parts: list[outcomes.Part],
        done: asyncio.Future[None],
        others: list[asyncio.Future[None]],
    ) -> None:
        """Submit the parts in order, each as soon as a slot of the least busy session is free,
        without a task of their own; an accepted one is settled here, any other answer (or a
        part no session could take) goes through :meth:`_submit`, which retries as it says."""
        flights = outcomes.Flights()
        for part in parts:
            unit = self.client.pick()
            session = unit.session if unit is not None else None
            if unit is None or session is None:
                others.append(asyncio.ensure_future(self._submit(part, done)))
                continue
            unit.assigned += 1
            try:
                if not session.try_slot():  # (a free slot needs no coroutine)
                    await session.slot()
                part.pdu.sequence = 0
                part.flight = (unit, session, None)
                session.start_call(part.pdu, functools.partial(self._answered, part, done, flights))
            except (SessionClosed, PduError):  # nothing written: _submit decides
                part.flight = None
                unit.assigned -= 1
                others.append(asyncio.ensure_future(self._submit(part, done)))
                continue
            flights.started += 1
        await flights.wait()
        for part in parts:
            if part.flight is not None and part.state == outcomes.PENDING:
                others.append(asyncio.ensure_future(self._submit(part, done, part.flight)))
                part.flight = None

    def _answered(
        self,
        part: outcomes.Part,
        done: asyncio.Future[None],
        flights: outcomes.Flights,
        response: Pdu | None,
        error: BaseException | None,
    ) -> None:
        """An accepted part is settled at once (receipts overtaking the Send find it); any
        other answer is kept on the part for :meth:`_submit`."""
        flights.answered()
        flight = part.flight
        if flight is None:  # the Send was cancelled meanwhile
            return
        if response is not None and response.status == 0 and isinstance(response, SubmitSmResp):
            flight[0].assigned -= 1
            flight[0].throttle_level = 0
            part.flight = None
            self._accepted(part, response, done)
            return
        answer = error if error is not None else response
        part.flight = (flight[0], flight[1], answer)

    def _accepted(
        self, part: outcomes.Part, response: SubmitSmResp, done: asyncio.Future[None]
    ) -> None:
        part.state, part.message_id = outcomes.OK, response.message_id
        part.pid = self.ids.submitted(response.message_id)
        self.book.in_send[part.pid] = done
        self.stats["submitted"] += 1

    async def _finish(
        self, jobs: list[outcomes.Job], parts: list[outcomes.Part], done: asyncio.Future[None]
    ) -> SmsResponse:
        touched = any(p.state in (outcomes.OK, outcomes.UNKNOWN) for p in parts)
        if not touched and any(p.state == outcomes.REFUSED for p in parts):
            refused = [p for p in parts if p.state == outcomes.REFUSED]
            detail = f"{self.where}: the SMSC took nothing of the batch: {refused[0].detail}"
            if any(p.throttled for p in refused):
                pause = self.throttle_pause_s * (2 ** min(self.throttle_retries, 5))
                raise ThrottledError(detail, retry_after=min(pause, MAX_THROTTLE_PAUSE_S))
            raise TransientError(detail)
        results = [outcomes.job_result(job) for job in jobs]
        now = time.time()
        records: dict[str, dict[str, Any]] = {}
        ok = ApiStatus.OK
        for job, result in zip(jobs, results, strict=True):
            if result.apiStatus == ok:
                outcomes.add_records(records, job, result.partnerMessageId, now)
        self.book.keep_local(records)
        done.set_result(None)  # receipts that overtook this Send find their records now
        if records:
            try:
                await self.book.share(records)
            except Exception as exc:  # the submits are done: never fail the batch now
                log.warning(
                    "%s: submission records of %d message(s) not shared (%s); receipts "
                    "reaching other processes may not be matched",
                    self.where,
                    len(records),
                    exc,
                )
        return SmsResponse("", results)

    async def _submit(
        self,
        part: outcomes.Part,
        done: asyncio.Future[None],
        first: tuple[Unit, Session, Pdu | BaseException] | None = None,
    ) -> None:
        """Submit one part (or settle the answer of its *first* submit, placed by
        :meth:`_place`), retrying as the module docstring says."""
        tries = 0
        pdu = part.pdu
        unit: Unit | None
        session: Session | None
        while True:
            if first is not None:
                unit, session, first_answer = first
                answer: Pdu | BaseException | None = first_answer
                first = None
            else:
                answer = None
                unit = self.client.pick() or await self.client.wait_sender(
                    min(RESUME_WAIT_S, self.config.response_timeout_s)
                )
                session = unit.session if unit is not None else None
                if unit is None or session is None:
                    part.state, part.status = outcomes.REFUSED, "NOT_SUBMITTED"
                    part.detail = f"no bound session ({self.client.last_error()})"
                    return
                pdu.sequence = 0
                unit.assigned += 1
            try:
                if answer is None:
                    response = await session.request(pdu)
                elif isinstance(answer, BaseException):
                    raise answer
                else:
                    response = answer
            except ResponseTimeout as exc:
                self._unknown(part, f"no submit_sm_resp: {exc}")
                return
            except SessionClosed as exc:
                if pdu.sequence:
                    self._unknown(part, f"the session closed before the answer: {exc}")
                    return
                if not session.closed:  # unbinding (destroy): do not spin on it
                    part.state, part.status = outcomes.REFUSED, "NOT_SUBMITTED"
                    part.detail = f"session unbinding: {exc}"
                    return
                continue  # never written: safe on another (or the rebound) session
            except PduError as exc:
                self._unknown(part, f"undecodable submit_sm_resp: {exc}")
                return
            finally:
                unit.assigned -= 1
            status = response.status
            if status == 0 and isinstance(response, SubmitSmResp):
                unit.throttle_level = 0
                self._accepted(part, response, done)
                return
            if status == 0:  # generic_nack without a status: the SMSC did not take it
                status = CommandStatus.ESME_RSYSERR
            name = status_name(status)
            kind = classify_status(status)
            tries += 1
            if kind is StatusKind.THROTTLE:
                self.stats["throttled"] += 1
                part.throttled = True
                if tries > self.throttle_retries:
                    outcomes.refused(part, status, f"{name} after {tries} tries")
                    return
                self._throttle(unit, session)
                continue
            if kind is StatusKind.RETRY and tries < RETRY_TRIES:
                await asyncio.sleep(self.throttle_pause_s * tries)
                continue
            if kind is StatusKind.RETRY:
                outcomes.refused(part, status, f"{name} {tries} times")
                return
            if kind is StatusKind.RETRY_FEW and tries < RETRY_FEW_TRIES:
                await asyncio.sleep(self.throttle_pause_s * tries)
                continue
            if kind is StatusKind.RECONNECT and tries < RETRY_TRIES:
                log.warning("%s: %s on submit_sm: rebinding the session", self.where, name)
                await session.close(SessionClosed(f"{name} answered to submit_sm"))
                continue
            part.state, part.status_code, part.status = outcomes.FAIL, status, name
            via = " (generic_nack)" if isinstance(response, GenericNack) else ""
            part.detail = f"{name}{via}: submit_sm refused by the SMSC"
            return

    def _throttle(self, unit: Unit, session: Session) -> None:
        """Pause the whole session; longer for each throttling answer in a row."""
        if session.paused_until > asyncio.get_running_loop().time():
            return  # already paused: the parts in flight were throttled by the same burst
        unit.throttle_level += 1
        pause = self.throttle_pause_s * 2 ** min(unit.throttle_level - 1, 10)
        pause = min(pause, MAX_THROTTLE_PAUSE_S)
        log.info("%s: throttled by the SMSC; session paused %.2f s", self.where, pause)
        session.pause(pause)

    def _unknown(self, part: outcomes.Part, why: str) -> None:
        self.stats["unknown"] += 1
        outcomes.unknown(part, why)

    # --- Report -------------------------------------------------------------------------------
    async def report(self, request: SmsReportRequest) -> SmsResponse:
        """Answer from part states already known; query_sm ids older than
        ``query_when_no_receipt_s`` without a receipt; every other id stays WAITING."""
        ids = list(dict.fromkeys(request.messages))
        try:
            records = await self.book.records(ids)
        except Exception as exc:
            log.warning("%s: submission records unavailable (%s); querying all", self.where, exc)
            records = {}
        now = time.time()
        results = await asyncio.gather(
            *(self._report_one(pid, records.get(pid), now) for pid in ids)
        )
        return SmsResponse("", [r for r in results if r is not None])

    async def _report_one(
        self, pid: str, record: dict[str, Any] | None, now: float
    ) -> SmsResult | None:
        if record is not None and "f" in record:
            return None  # a later part's id is never a partnerMessageId
        parts: list[str] = list(record.get("pr", [])) if record else []
        if parts:
            try:
                known = combine(await self.book.part_states(pid, len(parts)), pid)
            except Exception:
                known = None
            if known is not None:
                return known
        if record is not None and now - float(record.get("t", 0)) < self.query_after_s:
            return outcomes.waiting(pid)
        raws = parts or [str(record.get("r", pid)) if record else pid]
        source = record.get("s", [0, 0, ""]) if record else [0, 0, ""]
        states = await asyncio.gather(*(self._query(raw, source) for raw in raws))
        if any(s is None for s in states):
            return outcomes.waiting(pid)
        finals = [s for s in states if s is not None]
        return outcomes.from_states(pid, finals, self.book.accepted)

    async def _query(self, raw_id: str, source: list[Any]) -> QuerySmResp | None:
        unit = self.client.pick()
        if unit is None or unit.session is None:
            return None
        self.stats["queries"] += 1
        pdu = QuerySm(
            message_id=raw_id,
            source_addr_ton=int(source[0]),
            source_addr_npi=int(source[1]),
            source_addr=str(source[2]),
        )
        try:
            response = await unit.session.request(pdu)
        except (ResponseTimeout, SessionClosed, PduError) as exc:
            log.info("%s: query_sm %r failed (%r); stays WAITING", self.where, raw_id, str(exc))
            return None
        if response.status or not isinstance(response, QuerySmResp):
            log.info(
                "%s: query_sm %r answered %s; stays WAITING",
                self.where,
                raw_id,
                status_name(response.status),
            )
            return None
        return response
