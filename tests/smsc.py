"""A small test SMSC on 127.0.0.1 whose PDUs are encoded and decoded by smpplib, not our codec.

Configurable per test: credentials, answer statuses (a queue of statuses for the next submits,
per-destination or per-source statuses, or one status for everything), a response delay,
dropping every connection after the N-th submit without answering what is outstanding,
receipts (deliver_sm, esm_class 0x04) in text form and/or TLV form with message ids in hex or
decimal (submit_sm_resp and receipts may use different bases), and query_sm answers. It records
binds, connections, every submit_sm (with its validity_period, and the most outstanding at once
per connection), the long messages it reassembled from UDH (parsed here, byte by byte), SAR
TLVs or message_payload, the receipts' deliver_sm_resp statuses and the queries.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import itertools
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gsm0338  # noqa: F401  (registers the 'gsm03.38' codec used to decode GSM-7)
from smpplib import consts
from smpplib import smpp as smpplib

ROK = consts.SMPP_ESME_ROK
RINVSYSID = consts.SMPP_ESME_RINVSYSID
RINVPASWD = consts.SMPP_ESME_RINVPASWD
RTHROTTLED = consts.SMPP_ESME_RTHROTTLED
RMSGQFUL = consts.SMPP_ESME_RMSGQFUL
RSYSERR = consts.SMPP_ESME_RSYSERR
RINVDSTADR = consts.SMPP_ESME_RINVDSTADR
RINVSRCADR = consts.SMPP_ESME_RINVSRCADR
RINVMSGID = consts.SMPP_ESME_RINVMSGID

ENROUTE, DELIVERED, EXPIRED, UNDELIVERABLE = 1, 2, 3, 5
_STAT = {1: "ENROUTE", 2: "DELIVRD", 3: "EXPIRED", 4: "DELETED", 5: "UNDELIV", 8: "REJECTD"}


class _Seq:
    def __init__(self) -> None:
        self.sequence = 0

    def next_sequence(self) -> int:
        self.sequence += 1
        return self.sequence


def _s(value: Any) -> str:
    if value is None:
        return ""
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


@dataclass
class Submit:
    """One submit_sm as this SMSC decoded it (with smpplib)."""

    system_id: str
    source_addr: str
    source_ton: int
    source_npi: int
    destination_addr: str
    esm_class: int
    data_coding: int
    registered_delivery: int
    short_message: bytes
    payload: bytes | None
    sar: tuple[int, int, int] | None
    udh: bytes | None
    validity_period: str = ""
    message_id: str = ""
    status: int = ROK


@dataclass
class Message:
    """A whole message: its parts reassembled here."""

    destination_addr: str
    text: str
    data_coding: int
    parts: int
    how: str  # 'single', 'udh', 'sar' or 'payload'
    message_ids: list[str]


@dataclass
class Conn:
    writer: asyncio.StreamWriter
    seq: _Seq = field(default_factory=_Seq)
    system_id: str = ""
    role: str = ""
    outstanding: int = 0
    max_outstanding: int = 0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def receives(self) -> bool:
        return self.role in ("bind_transceiver", "bind_receiver")


class TestSmsc:
    """See the module docstring; ``await start()`` returns the port."""

    __test__ = False  # not a pytest class

    def __init__(
        self,
        credentials: dict[str, str] | None = None,
        *,
        submit_id_base: str = "hex",
        receipt_id_base: str = "hex",
        receipt_style: str | None = "both",  # 'text', 'tlv', 'both' or None (no receipts)
        receipt_delay: float = 0.0,
        response_delay: float = 0.0,
        first_id: int = 0x1E240,
    ) -> None:
        self.credentials = dict(credentials or {"acct": "pw-sec91"})
        self.submit_id_base = submit_id_base
        self.receipt_id_base = receipt_id_base
        self.tlv_id_base: str | None = None  # None: as receipt_id_base
        self.receipt_style = receipt_style
        self.receipt_delay = receipt_delay
        self.response_delay = response_delay
        self.statuses: list[int] = []  # answers for the next submits, in order
        self.status_for: dict[str, int] = {}  # destination → status
        self.status_for_source: dict[str, int] = {}  # source_addr → status (ESME_RINVSRCADR)
        self.always: int | None = None  # every submit answered this status
        self.bind_status: int | None = None  # every bind answered this status
        self.drop_after: int | None = None  # drop all connections at the N-th submit
        self.final_state: Callable[[Submit], int] = lambda s: DELIVERED
        self.query_states: dict[str, int] = {}  # raw id → state answered to query_sm
        self.binds: list[tuple[str, str, int]] = []  # (command, system_id, status)
        self.connections = 0
        self.submits: list[Submit] = []
        self.messages: list[Message] = []
        self.receipts_sent: list[tuple[str, str, int]] = []  # (receipt id, stat, ack status)
        self.mo_acks: list[int] = []
        self.queries: list[str] = []
        self.states: dict[str, int] = {}
        self.conns: list[Conn] = []
        self._ids = itertools.count(first_id)
        self._parts: dict[tuple[str, int], dict[int, Submit]] = {}
        self._server: asyncio.Server | None = None
        self._pending_receipts: list[tuple[str, dict[str, Any]]] = []
        self._awaiting: dict[tuple[int, int], str] = {}
        self._max_seen = 0
        self.port = 0

    # --- life cycle -----------------------------------------------------------------------
    async def start(self, port: int = 0, ssl: Any = None) -> int:
        """Listen on 127.0.0.1 (TLS with *ssl*, an ``ssl.SSLContext``); returns the port."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port, ssl=ssl)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        self.drop_all()
        await asyncio.sleep(0)

    def drop_all(self) -> None:
        """Close every connection now, answering nothing more."""
        for conn in list(self.conns):
            for task in conn.tasks:
                task.cancel()
            conn.writer.transport.abort()
        self.conns.clear()

    def fail_all(self, kind: str | None) -> None:
        """The conformance kit's hook: fail every call in that way until ``None``."""
        self.always = {
            None: None,
            "transient": RSYSERR,
            "throttled": RTHROTTLED,
            "permanent": RINVDSTADR,
            "auth": None,
        }[kind]
        self.bind_status = RINVPASWD if kind == "auth" else None

    @property
    def max_outstanding(self) -> int:
        """The most submit_sm one connection had unanswered at once."""
        return max([c.max_outstanding for c in self.conns] + [self._max_seen])

    # --- connection -----------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = Conn(writer)
        self.conns.append(conn)
        try:
            while True:
                header = await reader.readexactly(16)
                (length,) = struct.unpack(">I", header[:4])
                data = header + await reader.readexactly(length - 16)
                pdu = smpplib.parse_pdu(data, client=conn.seq, allow_unknown_opt_params=True)
                if not self._handle(conn, pdu):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._max_seen = max(self._max_seen, conn.max_outstanding)
            with contextlib.suppress(ValueError):
                self.conns.remove(conn)
            writer.close()

    def _send(self, conn: Conn, name: str, **fields: Any) -> None:
        if conn.writer.transport.is_closing():
            return
        sequence = fields.pop("sequence", None)
        pdu = smpplib.make_pdu(name, client=conn.seq, **fields)
        if sequence is not None:  # smpplib ignores a sequence= keyword once its client has one
            pdu.sequence = sequence
        conn.writer.write(pdu.generate())

    def _handle(self, conn: Conn, pdu: Any) -> bool:
        command = pdu.command
        if command.startswith("bind_"):
            system_id, password = _s(pdu.system_id), _s(pdu.password)
            status = self.bind_status
            if status is None:
                if system_id not in self.credentials:
                    status = RINVSYSID
                elif self.credentials[system_id] != password:
                    status = RINVPASWD
                else:
                    status = ROK
            self.binds.append((command, system_id, status))
            if status == ROK:
                conn.system_id, conn.role = system_id, command
            self._send(
                conn, command + "_resp", sequence=pdu.sequence, status=status, system_id="TSMSC"
            )
            if status == ROK and conn.receives:
                self._flush_receipts(conn)
            return True
        if command == "enquire_link":
            self._send(conn, "enquire_link_resp", sequence=pdu.sequence)
            return True
        if command == "unbind":
            self._send(conn, "unbind_resp", sequence=pdu.sequence)
            return False
        if command == "submit_sm":
            return self._submit(conn, pdu)
        if command == "query_sm":
            self._query(conn, pdu)
            return True
        if command == "deliver_sm_resp":
            self._acked(conn, pdu)
            return True
        if command.endswith("_resp"):
            return True
        self._send(conn, "generic_nack", sequence=pdu.sequence, status=consts.SMPP_ESME_RINVCMDID)
        return True

    # --- submit_sm ------------------------------------------------------------------------
    def _submit(self, conn: Conn, pdu: Any) -> bool:
        short_message = pdu.short_message or b""
        esm_class = pdu.esm_class or 0
        udh = None
        if esm_class & 0x40 and short_message:
            udh = short_message[: 1 + short_message[0]]
        sar = None
        if pdu.sar_total_segments is not None:
            sar = (pdu.sar_msg_ref_num, pdu.sar_total_segments, pdu.sar_segment_seqnum)
        submit = Submit(
            system_id=conn.system_id,
            source_addr=_s(pdu.source_addr),
            source_ton=pdu.source_addr_ton or 0,
            source_npi=pdu.source_addr_npi or 0,
            destination_addr=_s(pdu.destination_addr),
            esm_class=esm_class,
            data_coding=pdu.data_coding or 0,
            registered_delivery=pdu.registered_delivery or 0,
            short_message=short_message,
            payload=pdu.message_payload,
            sar=sar,
            udh=udh,
            validity_period=_s(pdu.validity_period),
        )
        self.submits.append(submit)
        conn.outstanding += 1
        conn.max_outstanding = max(conn.max_outstanding, conn.outstanding)
        if self.drop_after is not None and len(self.submits) >= self.drop_after:
            self.drop_after = None
            self.drop_all()
            return False
        if self.response_delay > 0:
            task = asyncio.get_running_loop().create_task(self._answer_later(conn, pdu, submit))
            conn.tasks.add(task)
            task.add_done_callback(conn.tasks.discard)
        else:
            self._answer(conn, pdu, submit)
        return True

    async def _answer_later(self, conn: Conn, pdu: Any, submit: Submit) -> None:
        await asyncio.sleep(self.response_delay)
        self._answer(conn, pdu, submit)

    def _answer(self, conn: Conn, pdu: Any, submit: Submit) -> None:
        conn.outstanding -= 1
        if self.always is not None:
            status = self.always
        elif self.statuses:
            status = self.statuses.pop(0)
        else:
            status = self.status_for.get(
                submit.destination_addr, self.status_for_source.get(submit.source_addr, ROK)
            )
        submit.status = status
        if status != ROK:
            self._send(conn, "submit_sm_resp", sequence=pdu.sequence, status=status)
            return
        number = next(self._ids)
        submit.message_id = self._render(number, self.submit_id_base)
        self.states[submit.message_id] = ENROUTE
        self._send(conn, "submit_sm_resp", sequence=pdu.sequence, message_id=submit.message_id)
        self._assemble(submit)
        if self.receipt_style and submit.registered_delivery & 0x03:
            state = self.final_state(submit)
            loop = asyncio.get_running_loop()
            loop.call_later(self.receipt_delay, self._receipt, conn, submit, number, state)

    @staticmethod
    def _render(number: int, base: str) -> str:
        return format(number, "X") if base == "hex" else str(number)

    def _assemble(self, submit: Submit) -> None:
        if submit.payload:
            how, ref, total, seq = "payload", 0, 1, 1
        elif submit.udh is not None:
            how = "udh"
            ref, total, seq = 0, 1, 1
            pos = 1
            while pos < len(submit.udh):
                iei, iel = submit.udh[pos], submit.udh[pos + 1]
                value = submit.udh[pos + 2 : pos + 2 + iel]
                if iei == 0x00:
                    ref, total, seq = value[0], value[1], value[2]
                elif iei == 0x08:
                    ref, total, seq = (value[0] << 8) | value[1], value[2], value[3]
                pos += 2 + iel
        elif submit.sar is not None:
            how = "sar"
            ref, total, seq = submit.sar
        else:
            how, ref, total, seq = "single", 0, 1, 1
        key = (submit.destination_addr, ref)
        parts = self._parts.setdefault(key, {})
        parts[seq] = submit
        if len(parts) < total:
            return
        del self._parts[key]
        ordered = [parts[n] for n in range(1, total + 1)]
        octets = b"".join(
            (p.payload or p.short_message[len(p.udh) if p.udh else 0 :]) for p in ordered
        )
        coding = submit.data_coding
        text = octets.decode("utf-16-be") if coding == 8 else codecs.decode(octets, "gsm03.38")
        self.messages.append(
            Message(
                submit.destination_addr,
                text,
                coding,
                total,
                how,
                [p.message_id for p in ordered],
            )
        )

    # --- receipts -------------------------------------------------------------------------
    def _receipt(self, conn: Conn, submit: Submit, number: int, state: int) -> None:
        text_id = self._render(number, self.receipt_id_base)
        tlv_id = self._render(number, self.tlv_id_base or self.receipt_id_base)
        self.states[submit.message_id] = state
        stat = _STAT.get(state, "UNKNOWN")
        fields: dict[str, Any] = {
            "source_addr": submit.destination_addr,
            "destination_addr": submit.source_addr,
            "esm_class": 0x04,
        }
        if self.receipt_style in ("text", "both"):
            fields["short_message"] = (
                f"id:{text_id} sub:001 dlvrd:{'001' if state == 2 else '000'} "
                f"submit date:2611220421 done date:2611220422 stat:{stat} err:000 text:hi"
            ).encode("ascii")
        if self.receipt_style in ("tlv", "both"):
            fields["receipted_message_id"] = tlv_id
            fields["message_state"] = state
        target = conn if conn in self.conns and conn.receives else None
        if target is None:
            target = next(
                (c for c in self.conns if c.receives and c.system_id == submit.system_id), None
            )
        fields["key"] = f"{text_id}|{stat}"
        if target is None:  # delivered when a receiving session binds
            self._pending_receipts.append((submit.system_id, fields))
            return
        self._deliver(target, fields)

    def _deliver(self, conn: Conn, fields: dict[str, Any]) -> None:
        fields = dict(fields)
        key = fields.pop("key")
        pdu = smpplib.make_pdu("deliver_sm", client=conn.seq, **fields)
        self._awaiting[(id(conn), pdu.sequence)] = key
        conn.writer.write(pdu.generate())

    def _flush_receipts(self, conn: Conn) -> None:
        waiting, self._pending_receipts = self._pending_receipts, []
        for system_id, fields in waiting:
            if system_id != conn.system_id:
                self._pending_receipts.append((system_id, fields))
                continue
            self._deliver(conn, fields)

    def _acked(self, conn: Conn, pdu: Any) -> None:
        key = self._awaiting.pop((id(conn), pdu.sequence), "?|?")
        receipt_id, _, stat = key.partition("|")
        self.receipts_sent.append((receipt_id, stat, pdu.status))

    # --- query_sm -------------------------------------------------------------------------
    def _query(self, conn: Conn, pdu: Any) -> None:
        message_id = _s(pdu.message_id)
        self.queries.append(message_id)
        state = self.query_states.get(message_id, self.states.get(message_id))
        if state is None:
            self._send(conn, "query_sm_resp", sequence=pdu.sequence, status=RINVMSGID)
            return
        self._send(
            conn,
            "query_sm_resp",
            sequence=pdu.sequence,
            message_id=message_id,
            final_date="261122042200000+" if state != ENROUTE else "",
            message_state=state,
            error_code=0,
        )

    def send_mo(self, system_id: str, text: str = "hello") -> None:
        """Send an MO (non-receipt) deliver_sm to a bound receiving session of *system_id*."""
        conn = next(c for c in self.conns if c.receives and c.system_id == system_id)
        pdu = smpplib.make_pdu(
            "deliver_sm",
            client=conn.seq,
            source_addr="905330000999",
            destination_addr="ACME",
            short_message=text.encode("ascii"),
        )
        self._awaiting[(id(conn), pdu.sequence)] = "MO|MO"
        conn.writer.write(pdu.generate())
