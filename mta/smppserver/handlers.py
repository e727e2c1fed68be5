"""What each SMPP request means to the server: one ``smpp_<command>`` handler per command.

The shape is aiosmtpd's ``smtp_<VERB>``: :meth:`CommandHandlers.on_request` looks the
request's ``command_id`` up among the methods named ``smpp_`` + the command's name
(:func:`handled_commands`), and answers in one place a request nobody handles:

* before a bind, anything but a bind: ESME_RINVBNDSTS (in the request's own response type);
* a request the server does not offer (replace_sm, submit_multi, data_sm, a deliver_sm from a
  client, …): ESME_RINVCMDID in its own response type (a generic_nack for outbind and
  alert_notification, which have none).

What never reaches a handler, because the shared :class:`~mta.smpp.session.Session` answers
it (:data:`ANSWERED_BY_SESSION`): ``enquire_link`` (enquire_link_resp at once), ``unbind``
(unbind_resp once every request before it was answered, then the connection closes), every
response (``deliver_sm_resp`` to a receipt, ``enquire_link_resp``, ``unbind_resp``,
``generic_nack``: matched by sequence to the request waiting for it), and a PDU that does not
decode — an unknown ``command_id`` included — answered ``generic_nack`` with the decoder's
status (ESME_RINVCMDID for an unknown id).

:class:`CommandHandlers` is mixed into :class:`~mta.smppserver.server.SmppServer`, whose state
(directory, limits, batcher, records, …) the handlers use; :class:`ClientConnection` is what
the server knows of one connection.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from mta import metrics, outbox
from mta.broker import Broker
from mta.config import SmppClient
from mta.contract import ApiStatus, ReportResult, SmsType, encode_report
from mta.loglimit import LogLimiter
from mta.smpp import pdu as P
from mta.smpp.constants import RESPONSE_BIT
from mta.smpp.receipt import MessageState
from mta.smpp.session import Session, SessionClosed
from mta.smppserver.auth import BindLimiter, ClientDirectory, SmppLimits, ThroughputBucket
from mta.smppserver.batcher import AcceptedSubmit, SubmitBatcher
from mta.smppserver.reassembly import Reassembly
from mta.smppserver.receipts import ReceiptRouter
from mta.smppserver.records import MessageRecord, MessageRecords
from mta.smppserver.submit import SubmitReader, SubmitRefused
from mta.smppserver.times import final_date
from mta.store import BatchRecord, Store
from mta.topology import LANE_BULK, LANE_PRIORITY

__all__ = [
    "ANSWERED_BY_SESSION",
    "BIND_COMMANDS",
    "RX",
    "TRX",
    "TX",
    "ClientConnection",
    "CommandHandlers",
    "handled_commands",
]

log = logging.getLogger(__name__)

S = P.CommandStatus
C = P.CommandId

TX: Final = "transmitter"
RX: Final = "receiver"
TRX: Final = "transceiver"
_BIND_KIND: Final[dict[type[P.Pdu], str]] = {
    P.BindTransmitter: TX,
    P.BindReceiver: RX,
    P.BindTransceiver: TRX,
}
_BindResp = P.BindTransmitterResp | P.BindReceiverResp | P.BindTransceiverResp
_BIND_RESP: Final[dict[str, type[_BindResp]]] = {
    TX: P.BindTransmitterResp,
    RX: P.BindReceiverResp,
    TRX: P.BindTransceiverResp,
}
BIND_COMMANDS: Final = frozenset({C.BIND_TRANSMITTER, C.BIND_RECEIVER, C.BIND_TRANSCEIVER})
"""The only requests taken before a bind."""

ANSWERED_BY_SESSION: Final[dict[P.CommandId, str]] = {
    C.ENQUIRE_LINK: "enquire_link_resp at once",
    C.UNBIND: "unbind_resp once every request before it was answered; then closed",
    C.GENERIC_NACK: "matched by sequence to the request it answers",
    **{
        cid: "matched by sequence to the request it answers"
        for cid in C
        if cid & RESPONSE_BIT and cid != C.GENERIC_NACK
    },
}
"""Commands the shared :class:`~mta.smpp.session.Session` answers itself (none has a
handler here): enquire_link, unbind and every response."""

Handler = Callable[[Session, "ClientConnection", Any], Any]


def handled_commands(cls: type) -> dict[P.CommandId, str]:
    """command id → the name of its handler, for every ``smpp_<command name>`` method of
    *cls*; a ``smpp_`` method named after no SMPP command is a TypeError."""
    by_name = {f"smpp_{cid.name.lower()}": cid for cid in C}
    handled: dict[P.CommandId, str] = {}
    for attr in dir(cls):
        if not attr.startswith("smpp_"):
            continue
        if attr not in by_name:
            raise TypeError(f"{cls.__name__}.{attr}: no SMPP command is named {attr[5:]!r}")
        handled[by_name[attr]] = attr
    return handled


@dataclass(eq=False)
class ClientConnection:
    """What the server knows of one connection (kept in ``Session.context``)."""

    ip: str
    bound: str = ""  # TX, RX, TRX once bound
    client: SmppClient | None = None
    binding: bool = False
    deadline: asyncio.TimerHandle | None = None  # closes it unless bound by then
    bucket: ThroughputBucket | None = None  # the client's throughput, once bound
    lane: str = LANE_BULK  # of its submits without priority_flag
    accepted: int = 0  # submits accepted since mta_smpp_submits_total was last added to
    accepted_metric: Any = None  # that counter's child for the client


def _count_accepted(conn: ClientConnection) -> None:
    """Add the submits *conn* accepted since the last time to ``mta_smpp_submits_total``."""
    if conn.accepted and conn.accepted_metric is not None:
        conn.accepted_metric.inc(conn.accepted)
    conn.accepted = 0


class CommandHandlers:
    """The ``smpp_<command>`` handlers and their dispatch (mixed into the server)."""

    # The server's state the handlers use (SmppServer.__init__ sets each one).
    directory: ClientDirectory
    limits: SmppLimits
    binds: BindLimiter
    records: MessageRecords
    receipts: ReceiptRouter
    store: Store
    broker: Broker
    stats: dict[str, int]
    system_id: str
    _m: metrics.Children
    _warnings: LogLimiter
    _stopping: bool
    _batcher: SubmitBatcher | None
    _reassembly: Reassembly
    _reader: SubmitReader
    _handlers: dict[int, Handler]

    def _dispatch_table(self) -> dict[int, Handler]:
        return {int(cid): getattr(self, name) for cid, name in handled_commands(type(self)).items()}

    def _warn(self, kind: str, message: str, *args: Any, level: int = logging.WARNING) -> None:
        """A line about a peer's behaviour, at most 20 of one *kind* a minute (client-supplied
        strings go in *args* formatted with %r)."""
        suppressed = self._warnings.allow(kind)
        if suppressed is None:
            return
        if suppressed:
            message += " (%d similar lines suppressed)"
            args = (*args, suppressed)
        log.log(level, message, *args)

    # --- dispatch -----------------------------------------------------------------------

    def on_request(self, session: Session, pdu: P.Pdu) -> Any:
        """The Session's ``on_request``: the request's handler, or the one answer for those
        nobody handles (see the module docstring)."""
        conn: ClientConnection = session.context
        cid = pdu.command_id
        if not conn.bound and cid not in BIND_COMMANDS:
            return P.response_for(pdu, S.ESME_RINVBNDSTS)
        handler = self._handlers.get(cid)
        if handler is None:  # replace_sm, submit_multi, data_sm, deliver_sm, …: not offered
            return P.response_for(pdu, S.ESME_RINVCMDID)
        return handler(session, conn, pdu)

    # --- binds --------------------------------------------------------------------------

    def smpp_bind_transmitter(
        self, session: Session, conn: ClientConnection, pdu: P.BindTransmitter
    ) -> P.Pdu | Any:
        return self._bind(session, conn, pdu)

    def smpp_bind_receiver(
        self, session: Session, conn: ClientConnection, pdu: P.BindReceiver
    ) -> P.Pdu | Any:
        return self._bind(session, conn, pdu)

    def smpp_bind_transceiver(
        self, session: Session, conn: ClientConnection, pdu: P.BindTransceiver
    ) -> P.Pdu | Any:
        return self._bind(session, conn, pdu)

    def _bind(self, session: Session, conn: ClientConnection, pdu: P.Pdu) -> P.Pdu | Any:
        kind = _BIND_KIND[type(pdu)]
        resp_cls = _BIND_RESP[kind]
        if conn.bound or conn.binding:
            return resp_cls(status=S.ESME_RALYBND)
        assert isinstance(pdu, P.BindTransmitter | P.BindReceiver | P.BindTransceiver)
        if self._stopping:
            return resp_cls(status=S.ESME_RSYSERR)
        over = self.binds.start(conn.ip, pdu.system_id)
        if over:
            client, status = None, int(S.ESME_RBINDFAIL)
            self.stats["bind_limited"] += 1
            why = f"over the bind attempt limit per {over}"
        else:
            client, status = self.directory.check(pdu.system_id, pdu.password)
            known = self.directory.knows(pdu.system_id)
            why = "wrong password" if known else "unknown system_id"
        if client is not None:
            self.binds.succeeded(conn.ip, client.system_id)
            if conn.deadline is not None:
                conn.deadline.cancel()
                conn.deadline = None
            conn.bound = kind
            conn.client = client
            conn.bucket = self.directory.bucket(client.system_id)
            conn.lane = LANE_PRIORITY if client.priority else LANE_BULK
            conn.accepted_metric = self._m.child(metrics.SMPP_SUBMITS, client.system_id, "accepted")
            self.stats["binds"] += 1
            self._m.inc(metrics.SMPP_BINDS, client.system_id, kind)
            self._m.child(metrics.SMPP_SESSIONS, client.system_id).inc()
            if kind in (RX, TRX):
                self.receipts.add(client.system_id, session)
            log.info("SMPP %s bound %s as %r", session.name, kind, client.system_id)
            resp = resp_cls(system_id=self.system_id)
            resp.tlvs[P.Tag.SC_INTERFACE_VERSION] = P.u8(P.INTERFACE_VERSION)
            return resp
        conn.binding = True
        self.stats["bind_failures"] += 1
        metrics.SMPP_BIND_FAILURES.labels("limit" if over else "credentials").inc()
        if not over:
            self.binds.failed(conn.ip, pdu.system_id)
        # ±10 % so refusals started together are not all answered in one loop turn
        delay = self.limits.bind_fail_delay_s * (0.9 + 0.2 * random.random())
        self._warn(
            "bind-refused",
            "SMPP %s: bind %s refused for system_id %r (%s); %s after %.2f s",
            session.name,
            kind,
            pdu.system_id,
            why,
            P.status_name(status),
            delay,
        )
        return self._refuse(session, pdu, resp_cls(status=status), delay)

    async def _refuse(self, session: Session, pdu: P.Pdu, resp: P.Pdu, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        session.reply(pdu, resp)
        await session.close(SessionClosed("bind refused"))

    # --- submit_sm ----------------------------------------------------------------------

    def smpp_submit_sm(
        self, session: Session, conn: ClientConnection, pdu: P.SubmitSm
    ) -> P.Pdu | None:
        client = conn.client
        if client is None or conn.bound == RX:
            return P.SubmitSmResp(status=S.ESME_RINVBNDSTS)
        if self._stopping:
            return P.SubmitSmResp(status=S.ESME_RSYSERR)
        stats = self.stats
        stats["submits"] += 1
        bucket = conn.bucket
        if bucket is not None and not bucket.take():
            stats["throttled"] += 1
            self._m.inc(metrics.SMPP_SUBMITS, client.system_id, "throttled")
            return P.SubmitSmResp(status=S.ESME_RTHROTTLED)
        batcher = self._batcher
        assert batcher is not None
        if batcher.pending >= batcher.max_pending:
            self._m.inc(metrics.SMPP_SUBMITS, client.system_id, "queue_full")
            return P.SubmitSmResp(status=S.ESME_RMSGQFUL)
        evicted = self._reassembly.evictions
        try:
            message, record, parts = self._reader.read(client, pdu)
        except SubmitRefused as exc:
            self.stats["rejected"] += 1
            self._m.inc(metrics.SMPP_SUBMITS, client.system_id, "refused")
            self._warn(
                "submit-refused",
                "SMPP %s: submit_sm from %r refused: %s (%s)",
                session.name,
                client.system_id,
                P.status_name(exc.status),
                exc.detail,
                level=logging.INFO,
            )
            return P.SubmitSmResp(status=exc.status)
        finally:
            if self._reassembly.evictions != evicted:  # only ever this client's (its budget)
                stats["parts_evicted"] += 1
                self._warn(
                    "reassembly-budget",
                    "SMPP client %r: oldest incomplete long message dropped (its reassembly "
                    "budget is full: complete or stop sending parts)",
                    client.system_id,
                )
        conn.accepted += 1
        if conn.accepted == 1:  # counted once per loop turn, not once per submit
            asyncio.get_running_loop().call_soon(_count_accepted, conn)
        if message is None:  # a part of a long message: its own id, answered now
            return P.SubmitSmResp(message_id=parts[-1])
        lane = LANE_PRIORITY if pdu.priority_flag > 0 else conn.lane
        batcher.add(lane, AcceptedSubmit(message, record, parts, session, pdu))
        return None

    # --- query_sm and cancel_sm -----------------------------------------------------------

    async def _lookup(
        self, conn: ClientConnection, given_id: str
    ) -> tuple[str, MessageRecord] | None:
        message_id = await self.records.resolve(given_id)
        if message_id is None:
            return None
        record = (await self.records.get([message_id])).get(message_id)
        if record is None or conn.client is None or record.system_id != conn.client.system_id:
            return None
        return message_id, record

    async def smpp_query_sm(
        self, session: Session, conn: ClientConnection, pdu: P.QuerySm
    ) -> P.Pdu:
        found = await self._lookup(conn, pdu.message_id)
        if found is None:
            return P.QuerySmResp(status=S.ESME_RINVMSGID)
        _, record = found
        if pdu.source_addr and record.source_addr and pdu.source_addr != record.source_addr:
            return P.QuerySmResp(status=S.ESME_RQUERYFAIL)
        return P.QuerySmResp(
            message_id=pdu.message_id,
            final_date=final_date(record.final_ms),
            message_state=record.state,
            error_code=min(255, record.err),
        )

    async def smpp_cancel_sm(
        self, session: Session, conn: ClientConnection, pdu: P.CancelSm
    ) -> P.Pdu:
        client = conn.client
        assert client is not None
        if not pdu.message_id:
            return P.CancelSmResp(status=S.ESME_RCANCELFAIL)  # cancel by address: not offered
        found = await self._lookup(conn, pdu.message_id)
        if found is None:
            return P.CancelSmResp(status=S.ESME_RINVMSGID)
        message_id, record = found
        if record.final:
            return P.CancelSmResp(status=S.ESME_RCANCELFAIL)
        marker = await self.store.cancel(message_id)
        if marker:
            log.info(
                "SMPP cancel_sm of %s by %r too late (marker %r)",
                message_id,
                client.system_id,
                marker,
            )
            return P.CancelSmResp(status=S.ESME_RCANCELFAIL)
        record.state = MessageState.DELETED
        record.final_ms = int(time.time() * 1000)
        await self.records.put({message_id: record})
        result = ReportResult(
            messageId=message_id,
            mobileNumber=record.dest_addr.lstrip("+"),
            accountId=record.account_id,
            senderId=0,
            smsType=SmsType.BULK.value,
            apiStatus=ApiStatus.FAIL,
            partnerStatus="CANCELLED",
            partnerDetail=(
                f"cancelled by SMPP client {client.system_id!r} (cancel_sm) before it reached "
                "a partner"
            ),
        )
        # Through the outbox, as the worker and reporter publish: if this process dies (or the
        # broker is away) before the confirm, any reporter's outbox recovery publishes it.
        key = self.broker.topology.report_key(record.account_id, ApiStatus.FAIL.value)
        entries = {f"smpp-cancel:{message_id}": outbox.entry(key, encode_report("", [result]))}
        await self.store.record(BatchRecord({}, {}, {}, {}, {}, entries))
        try:
            await outbox.publish(self.store, self.broker, entries)
        except Exception as exc:
            log.warning(
                "SMPP cancel_sm: FAIL of %s left to the outbox recovery: %r", message_id, exc
            )
        log.info("SMPP cancel_sm: %s cancelled by %r", message_id, client.system_id)
        return P.CancelSmResp()
