"""The SMPP server front (``mta smpp-server``): ESMEs bind, submit, query, cancel, get receipts.

We act as the SMSC (docs/protocols.md §1.13). Each connection is a
:class:`~mta.smpp.session.Session` (framing, window, enquire_link, unbind, generic_nack for
malformed or unknown PDUs); this module decides what each request means.

Abuse controls (the decisions in :mod:`mta.smppserver.auth` and
:mod:`mta.smppserver.reassembly`, the limits in :class:`~mta.smppserver.auth.SmppLimits`):
connections at once are capped in total and per IP (excess ones are closed at once); a
connection not bound within ``bind_timeout_s`` is closed, whatever it sends meanwhile; bind
attempts are counted when they start, per IP and per system_id
(:class:`~mta.smppserver.auth.BindLimiter`), and one over the limit is refused without its
password being looked at.

Binds. ``bind_transmitter``/``_receiver``/``_transceiver`` are checked by
:class:`~mta.smppserver.records.Directory` (constant-time compare); every refused bind — unknown
system_id, wrong password or over the attempt limit — is answered ESME_RBINDFAIL after the
same ``bind_fail_delay_s``, and the connection is closed, so failures cannot be pipelined on
one connection. Any PDU but a bind (and
enquire_link/unbind, which the Session answers) before bind gets ESME_RINVBNDSTS; a second bind
ESME_RALYBND; submit_sm on a receiver bind ESME_RINVBNDSTS. query_sm and cancel_sm are taken on
every bind type (clients disagree on where they belong, docs/protocols.md §1.3).

submit_sm. ``destination_addr`` must be an international number, digits only (one leading
``+`` is dropped), else ESME_RINVDSTADR; ``source_addr`` becomes ``sender`` (alphanumeric ≤ 11,
numeric ≤ 16, else ESME_RINVSRCADR). The text comes from ``short_message`` or the
``message_payload`` TLV (both at once: ESME_RINVMSGLEN), in data_coding 0 (GSM 03.38), 1
(IA5), 3 (Latin-1) or 8 (UCS-2); other codings are refused with ESME_RSUBMITFAIL (binary
content cannot become an MMP text). ``schedule_delivery_time``/``validity_period`` (absolute
or relative, docs/protocols.md §1.7) become ``startTime``/``expireTime`` in ``MTA_TIMEZONE``,
rounded *up* to the minute (never earlier than asked, never shorter-lived); a schedule in the
past means now, a validity already over is ESME_RINVEXPIRY, a malformed one
ESME_RINVSCHED/ESME_RINVEXPIRY. Beyond the client's ``throughput``: ESME_RTHROTTLED.

Micro-batches. Accepted messages are collected per lane until the event loop turns (every
submit the sessions decoded from their latest reads: ``linger_ms`` 0, the default; a positive
``linger_ms`` waits that long instead) or until ``batch_size`` (default 500, at most
MTA_MAX_BATCH), then go to ``<prefix>.send`` as
ONE MMP batch (AMQP ``message_id`` = a fresh uuid, routing key ``priority`` when
``priority_flag`` > 0 or the client is configured ``priority``, else ``bulk``) with one publisher
confirm; every message's record is written to Redis before the publish, and each submit_sm_resp
carries the message's MMP ``messageId`` (``<batch uuid>:<index>``, ≤ 64 characters) only after
the confirm. Many batches are in flight at once. Waiting for the loop to turn rather than a
fixed linger was measured better: a client's window of submits arrives in one or two reads, so
it becomes one batch without adding latency (window 50: 7.9k submit_sm/s with it, 5.2k with a
2 ms linger, 4.9k with 5 ms; tests/bench/bench_smpp_server.py). A nack (queue full) answers
ESME_RMSGQFUL, any other failure ESME_RSYSERR: the client retries, nothing is half-accepted. At most
``max_pending`` submits wait for a confirm per process; beyond that ESME_RMSGQFUL.

Long messages (UDH with 8/16-bit reference, or SAR TLVs) are reassembled per (system_id,
source_addr, destination_addr, reference) in this process by
:class:`~mta.smppserver.reassembly.Reassembly` — within a budget per system_id (incomplete messages,
parts, octets; over it the client's own oldest incomplete message is dropped, never another
client's), dropped ``reassembly_timeout_s`` (5 min) after their first part — and published as
ONE MMP message. A repeated part (same reference and number) counts once and gets the same
id. Every part gets its own submit_sm_resp at once: the part that completes the
message gets the MMP message id after the confirm; each other part gets its own part id (32 hex
digits, no ``:``) answered immediately, which Redis maps to the MMP id once the message is
published. query_sm and cancel_sm accept any of them; the final state sends one receipt per id
(as SMSCs do for each part), so a client waiting for every part's receipt gets them all. A part
id whose message never completed is unknown to query_sm (ESME_RINVMSGID). The parts of one
message must come over sessions of the same server process (in practice one session).

query_sm answers from the Redis record (kept 48 h after the last update): ENROUTE until the
final, then DELIVERED / UNDELIVERABLE / EXPIRED / DELETED with ``final_date``. The state stays
ENROUTE while the partner has it (no ACCEPTED: many clients read it as final). An id that is
unknown or belongs to another system_id is ESME_RINVMSGID.

cancel_sm (by message id only) runs :meth:`mta.store.Store.cancel`: while the message is queued,
held or waiting for a retry, it is cancelled, the server publishes its FAIL itself (routing key
``<accountId>.FAIL``, partnerStatus ``CANCELLED``, a detail naming the client; through the
Redis outbox, so a reporter's outbox recovery publishes it if this process dies first) and the
record becomes DELETED; once a worker has handed it to a partner (or it is final): ESME_RCANCELFAIL.

Receipts: :class:`~mta.smppserver.receipts.ReceiptRouter` consumes the finals of this server's
messages from ``<prefix>.smpp.receipts`` and queues each receipt for a receiving session of its
system_id in this process (:class:`~mta.smppserver.receipt_outlet.Outlet`: in memory, at most
``receipt_queue`` per session and ``receipt_hold_s`` each, sent as the session's window frees),
or stashes it in Redis for whichever process has one (``{prefix}:smpp:rq:<system_id>``, drained
at the sessions' pace on bind, after a stash, and every ``flush_s``).

Graceful stop: stop accepting connections, answer new submits ESME_RSYSERR, publish what is
waiting and answer it, unbind every session, stop consuming receipts (unacked ones go back to
the queue).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl as ssl_module
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from mta import metrics, outbox
from mta.broker import Broker
from mta.config import Settings, SmppClient
from mta.contract import ApiStatus, ReportResult, SmsType, encode_report
from mta.smpp import pdu as P
from mta.smpp.guard import LogLimiter
from mta.smpp.receipt import MessageState
from mta.smpp.session import Session, SessionClosed
from mta.smppserver.auth import BindLimiter, ConnectionCaps, SmppLimits
from mta.smppserver.batcher import Entry, Publisher
from mta.smppserver.reassembly import Budget, Reassembly
from mta.smppserver.receipts import ReceiptRouter
from mta.smppserver.records import Directory, Record, Records
from mta.smppserver.submit import Refused, SubmitReader
from mta.smppserver.times import TimeError, final_date, parse_smpp_time, to_mmp_time
from mta.store import Outcome, Store
from mta.topology import LANE_BULK, LANE_PRIORITY

__all__ = [
    "SmppServer",
    "TimeError",
    "make_ssl_context",
    "parse_smpp_time",
    "to_mmp_time",
]

log = logging.getLogger(__name__)

S = P.CommandStatus
SERVER_SYSTEM_ID: Final = "mta"

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


def make_ssl_context(cert: str, key: str) -> ssl_module.SSLContext:
    """A server TLS context from a PEM certificate (chain) and its key."""
    context = ssl_module.create_default_context(ssl_module.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


# --- per-connection state ---------------------------------------------------------------


@dataclass(eq=False)
class Conn:
    """What the server knows of one connection (kept in ``Session.context``)."""

    ip: str
    bound: str = ""  # TX, RX, TRX once bound
    client: SmppClient | None = None
    binding: bool = False
    deadline: asyncio.TimerHandle | None = None  # closes it unless bound by then


# --- the server -------------------------------------------------------------------------


class SmppServer:
    """``mta smpp-server``: the listener, its sessions, the publisher and the receipt consumer."""

    def __init__(
        self,
        settings: Settings,
        clients: Sequence[SmppClient],
        store: Store,
        broker: Broker,
        host: str = "127.0.0.1",
        port: int = 2775,
        *,
        ssl: ssl_module.SSLContext | None = None,
        system_id: str = SERVER_SYSTEM_ID,
        batch_size: int = 500,
        linger_ms: float = 0.0,
        max_pending: int = 20_000,
        flush_s: float = 1.0,
        receipt_timeout_s: float = 30.0,
        receipt_queue: int = 10_000,
        receipt_hold_s: float = 5.0,
        enquire_link_s: float = 30.0,
        window: int = 50,
        limits: SmppLimits | None = None,
    ) -> None:
        self.settings = settings
        self.directory = Directory(clients)
        self.limits = limits = limits if limits is not None else SmppLimits.from_env()
        self.caps = ConnectionCaps(limits.max_connections, limits.max_connections_per_ip)
        self.binds = BindLimiter(
            limits.bind_rate_per_ip, limits.bind_rate_per_system_id, limits.bind_burst
        )
        self._warnings = LogLimiter(burst=20, window_s=60.0)
        self.store = store
        self.records = Records(store)
        self.broker = broker
        self.host = host
        self.port = port
        self.ssl = ssl
        self.system_id = system_id
        self.tz = settings.tz
        self.batch_size = max(1, min(batch_size, settings.max_batch))
        self.linger_s = linger_ms / 1000.0
        self.max_pending = max_pending
        self.receipt_timeout_s = receipt_timeout_s
        self.enquire_link_s = enquire_link_s
        self.window = window
        self._m = metrics.Children()
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "binds",
                "bind_failures",
                "bind_limited",
                "connections_refused",
                "bind_timeouts",
                "parts_evicted",
                "submits",
                "throttled",
                "rejected",
                "batches",
                "published",
                "receipts_sent",
                "receipts_stashed",
                "receipts_dropped",
            ),
            0,
        )
        self.sessions: set[Session] = set()
        self.receipts = ReceiptRouter(
            broker,
            self.records,
            self.tz,
            self.stats,
            flush_s=flush_s,
            receipt_timeout_s=receipt_timeout_s,
            queue_cap=receipt_queue,
            hold_s=receipt_hold_s,
        )
        self._reassembly = Reassembly(
            limits.reassembly_timeout_s,
            Budget(
                limits.reassembly_max_messages,
                limits.reassembly_max_parts,
                limits.reassembly_max_bytes,
            ),
        )
        self._reader = SubmitReader(self.tz, self._reassembly)
        self._server: asyncio.Server | None = None
        self._batcher: Publisher | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False

    # --- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Declare and consume the receipt queue, then listen."""
        self._batcher = Publisher(
            self.broker,
            self.records,
            self.stats,
            batch_size=self.batch_size,
            linger_s=self.linger_s,
            max_pending=self.max_pending,
        )
        await self.receipts.start(self.directory.account_ids)
        self._server = await asyncio.start_server(
            self._accept, self.host, self.port, ssl=self.ssl, reuse_address=True
        )
        sock = self._server.sockets[0].getsockname()
        self.port = int(sock[1])
        log.info(
            "smpp-server listening on %s:%d%s with %d client(s)",
            self.host,
            self.port,
            " (TLS)" if self.ssl else "",
            len(self.directory.by_id),
        )

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, publish and answer what waits, unbind sessions, stop consuming."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        if self._batcher is not None:
            await self._batcher.drain()
        await asyncio.gather(
            *(s.unbind(grace) for s in list(self.sessions)), return_exceptions=True
        )
        await self.receipts.stop(grace)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), grace)
        log.info("smpp-server stopped: %s", self.stats)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        ip = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        if self._stopping:
            writer.close()
            return
        refused = self.caps.admit(ip)
        if refused:
            self.stats["connections_refused"] += 1
            self._warn("conn-cap", "SMPP connection from %s closed at once: %s", ip, refused)
            writer.close()
            return
        session = Session(
            reader,
            writer,
            on_request=self._on_request,
            on_close=self._on_close,
            window=self.window,
            response_timeout=self.receipt_timeout_s,
            enquire_link_s=self.enquire_link_s,
        )
        conn = session.context = Conn(ip)
        conn.deadline = asyncio.get_running_loop().call_later(
            self.limits.bind_timeout_s, self._bind_timeout, session
        )
        self.sessions.add(session)
        session.start()

    def _bind_timeout(self, session: Session) -> None:
        conn: Conn = session.context
        conn.deadline = None
        if conn.bound or session.closed:
            return
        self.stats["bind_timeouts"] += 1
        self._warn(
            "bind-timeout",
            "SMPP %s: not bound within %g s; closed",
            session.name,
            self.limits.bind_timeout_s,
        )
        reason = SessionClosed(f"no bind within {self.limits.bind_timeout_s:g} s")
        self._spawn(session.close(reason))

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

    def _on_close(self, session: Session, reason: BaseException | None) -> None:
        self.sessions.discard(session)
        conn: Conn = session.context
        self.caps.release(conn.ip)
        if conn.deadline is not None:
            conn.deadline.cancel()
            conn.deadline = None
        if conn.client is not None and conn.bound in (RX, TRX):
            self.receipts.remove(conn.client.system_id, session)
        if conn.client is not None and conn.bound:
            self._m.child(metrics.SMPP_SESSIONS, conn.client.system_id).dec()
        log.debug("SMPP %s closed: %s", session.name, reason)

    # --- dispatch -----------------------------------------------------------------------

    def _on_request(self, session: Session, pdu: P.Pdu) -> Any:
        conn: Conn = session.context
        kind = type(pdu)
        if kind is P.SubmitSm:
            assert isinstance(pdu, P.SubmitSm)
            return self._submit(session, conn, pdu)
        if kind in _BIND_KIND:
            return self._bind(session, conn, pdu)
        if not conn.bound:
            return P.response_for(pdu, S.ESME_RINVBNDSTS)
        if kind is P.QuerySm:
            assert isinstance(pdu, P.QuerySm)
            return self._query(conn, pdu)
        if kind is P.CancelSm:
            assert isinstance(pdu, P.CancelSm)
            return self._cancel(conn, pdu)
        # replace_sm, submit_multi, data_sm, deliver_sm from a client, …: not offered here.
        return P.response_for(pdu, S.ESME_RINVCMDID)

    # --- bind ---------------------------------------------------------------------------

    def _bind(self, session: Session, conn: Conn, pdu: P.Pdu) -> P.Pdu | Any:
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

    def _submit(self, session: Session, conn: Conn, pdu: P.SubmitSm) -> P.Pdu | None:
        client = conn.client
        if client is None or conn.bound == RX:
            return P.SubmitSmResp(status=S.ESME_RINVBNDSTS)
        if self._stopping:
            return P.SubmitSmResp(status=S.ESME_RSYSERR)
        self.stats["submits"] += 1
        if not self.directory.bucket(client.system_id).take():
            self.stats["throttled"] += 1
            self._m.inc(metrics.SMPP_SUBMITS, client.system_id, "throttled")
            return P.SubmitSmResp(status=S.ESME_RTHROTTLED)
        batcher = self._batcher
        assert batcher is not None
        if batcher.pending >= batcher.max_pending:
            self._m.inc(metrics.SMPP_SUBMITS, client.system_id, "queue_full")
            return P.SubmitSmResp(status=S.ESME_RMSGQFUL)
        evicted = self._reassembly.evicted(client.system_id)
        try:
            message, record, parts = self._reader.read(client, pdu)
        except Refused as exc:
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
            if self._reassembly.evicted(client.system_id) > evicted:
                self.stats["parts_evicted"] += 1
                self._warn(
                    "reassembly-budget",
                    "SMPP client %r: oldest incomplete long message dropped (its reassembly "
                    "budget is full: complete or stop sending parts)",
                    client.system_id,
                )
        self._m.inc(metrics.SMPP_SUBMITS, client.system_id, "accepted")
        if message is None:  # a part of a long message: its own id, answered now
            return P.SubmitSmResp(message_id=parts[-1])
        lane = LANE_PRIORITY if pdu.priority_flag > 0 or client.priority else LANE_BULK
        batcher.add(lane, Entry(message, record, parts, session, pdu))
        return None

    # --- query_sm and cancel_sm -----------------------------------------------------------

    async def _lookup(self, conn: Conn, given_id: str) -> tuple[str, Record] | None:
        message_id = await self.records.resolve(given_id)
        if message_id is None:
            return None
        record = (await self.records.get([message_id])).get(message_id)
        if record is None or conn.client is None or record.system_id != conn.client.system_id:
            return None
        return message_id, record

    async def _query(self, conn: Conn, pdu: P.QuerySm) -> P.Pdu:
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

    async def _cancel(self, conn: Conn, pdu: P.CancelSm) -> P.Pdu:
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
        await self.store.record(Outcome({}, {}, {}, {}, {}, entries))
        try:
            await outbox.publish(self.store, self.broker, entries)
        except Exception as exc:
            log.warning(
                "SMPP cancel_sm: FAIL of %s left to the outbox recovery: %r", message_id, exc
            )
        log.info("SMPP cancel_sm: %s cancelled by %r", message_id, client.system_id)
        return P.CancelSmResp()

    def bound(self, system_id: str) -> list[Session]:
        """The sessions of *system_id* bound to this process (for tests and status)."""
        return [
            s
            for s in self.sessions
            if s.context.client is not None and s.context.client.system_id == system_id
        ]
