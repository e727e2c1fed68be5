"""The SMPP server's dispatch: every command id it accepts maps to exactly one ``smpp_<name>``
handler (or is stated as the shared Session's to answer), and a real server on 127.0.0.1 fed
every command over a real socket answers each as the table says — an unknown command id with
generic_nack, a command it does not offer with ESME_RINVCMDID — and stays up."""

from __future__ import annotations

import asyncio
import inspect
import struct
from collections import Counter
from typing import Any

import pytest

from mta.smpp import pdu as P
from mta.smppserver import CommandHandlers, SmppServer
from mta.smppserver.handlers import ANSWERED_BY_SESSION, BIND_COMMANDS, handled_commands
from tests.conftest import Env
from tests.test_smppserver import smpp_env, start_server

__all__ = ["smpp_env"]  # the fixture, imported for the socket tests

S = P.CommandStatus
C = P.CommandId

HANDLED = {
    C.BIND_TRANSMITTER,
    C.BIND_RECEIVER,
    C.BIND_TRANSCEIVER,
    C.SUBMIT_SM,
    C.QUERY_SM,
    C.CANCEL_SM,
}
NOT_OFFERED = {  # decoded, but no handler: ESME_RINVCMDID in one place
    C.REPLACE_SM,
    C.DATA_SM,
    C.DELIVER_SM,
    C.SUBMIT_MULTI,
    C.OUTBIND,
    C.ALERT_NOTIFICATION,
}


# --- the table -----------------------------------------------------------------------------


def test_every_accepted_command_maps_to_exactly_one_handler() -> None:
    handled = handled_commands(SmppServer)
    assert set(handled) == HANDLED
    for cid, name in handled.items():
        assert name == f"smpp_{cid.name.lower()}"
        method = getattr(SmppServer, name)
        assert callable(method) and method.__qualname__.startswith("CommandHandlers.")
        assert list(inspect.signature(method).parameters) == ["self", "session", "conn", "pdu"]
    # one handler per command, no handler without a command
    assert len(set(handled.values())) == len(handled)
    assert sorted(a for a in dir(SmppServer) if a.startswith("smpp_")) == sorted(handled.values())
    # the Session's own answers are never a handler's, and together with the handlers and the
    # commands not offered they cover every command id exactly once
    assert not set(handled) & set(ANSWERED_BY_SESSION)
    groups = [set(handled), set(ANSWERED_BY_SESSION), NOT_OFFERED]
    assert Counter(cid for group in groups for cid in group) == Counter(set(C))
    assert {C.ENQUIRE_LINK, C.UNBIND, C.GENERIC_NACK, C.DELIVER_SM_RESP} <= set(ANSWERED_BY_SESSION)
    assert BIND_COMMANDS < HANDLED


def test_a_handler_named_after_no_command_is_refused() -> None:
    class Stray(CommandHandlers):
        def smpp_submit_sm_twice(self) -> None: ...

    with pytest.raises(TypeError, match="submit_sm_twice"):
        handled_commands(Stray)


# --- a real server over a real socket ------------------------------------------------------


class Peer:
    """A raw TCP peer speaking our codec; answers what the server asks meanwhile."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.seq = 100

    @classmethod
    async def open(cls, port: int) -> Peer:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def _read(self) -> tuple[int, int, int, bytes]:
        header = await asyncio.wait_for(self.reader.readexactly(16), 10.0)
        length, cid, status, seq = struct.unpack(">IIII", header)
        body = await asyncio.wait_for(self.reader.readexactly(length - 16), 10.0)
        return cid, status, seq, header + body

    async def exchange(self, frame: bytes, seq: int) -> tuple[str, int]:
        """Send *frame*; (command name, status) of the PDU answering sequence *seq*."""
        self.writer.write(frame)
        await self.writer.drain()
        while True:
            cid, status, got, raw = await self._read()
            if not cid & P.RESPONSE_BIT and cid != C.GENERIC_NACK:  # the server asks
                self.writer.write(P.encode(P.response_for(P.decode(raw))))
                continue
            if got == seq:
                return P.command_name(cid), status

    async def call(self, pdu: P.Pdu) -> tuple[str, int]:
        self.seq += 1
        pdu.sequence = self.seq
        return await self.exchange(P.encode(pdu), self.seq)

    async def raw(self, command_id: int, body: bytes = b"") -> tuple[str, int]:
        self.seq += 1
        frame = struct.pack(">IIII", 16 + len(body), command_id, 0, self.seq) + body
        return await self.exchange(frame, self.seq)

    async def submit(self) -> tuple[str, int, str]:
        self.seq += 1
        pdu = P.SubmitSm(source_addr="ACME", destination_addr="905332141354", short_message=b"hi")
        pdu.sequence = self.seq
        self.writer.write(P.encode(pdu))
        await self.writer.drain()
        while True:
            cid, status, got, raw = await self._read()
            if got == self.seq and cid & P.RESPONSE_BIT:
                resp = P.decode(raw)
                assert isinstance(resp, P.SubmitSmResp)
                return resp.name, status, resp.message_id

    async def close(self) -> None:
        self.writer.close()
        await asyncio.gather(self.writer.wait_closed(), return_exceptions=True)


def _spy(server: SmppServer) -> Counter[str]:
    """Count the calls of each handler in the server's dispatch table (calling through)."""
    calls: Counter[str] = Counter()
    for cid, handler in list(server._handlers.items()):

        def counted(*args: Any, _h: Any = handler, _name: str = handler.__name__) -> Any:
            calls[_name] += 1
            return _h(*args)

        server._handlers[cid] = counted
    return calls


UNKNOWN_IDS = (0x00000999, 0x00000777, 0x0000FFFF, 0x80000999)


async def test_unknown_command_ids_get_generic_nack_before_and_after_bind(
    smpp_env: Env,
) -> None:
    server = await start_server(smpp_env)
    calls = _spy(server)
    peer = await Peer.open(server.port)
    for cid in UNKNOWN_IDS:
        assert await peer.raw(cid) == ("generic_nack", S.ESME_RINVCMDID), hex(cid)
    assert await peer.call(P.EnquireLink()) == ("enquire_link_resp", S.ESME_ROK)
    assert await peer.call(P.BindTransceiver(system_id="acme", password="secret1")) == (
        "bind_transceiver_resp",
        S.ESME_ROK,
    )
    for cid in UNKNOWN_IDS:
        assert await peer.raw(cid, b"\0" * 8) == ("generic_nack", S.ESME_RINVCMDID), hex(cid)
    name, status, message_id = await peer.submit()  # the session carries on
    assert (name, status) == ("submit_sm_resp", S.ESME_ROK) and ":" in message_id
    assert calls == {"smpp_bind_transceiver": 1, "smpp_submit_sm": 1}  # no handler saw junk
    assert await peer.call(P.Unbind()) == ("unbind_resp", S.ESME_ROK)
    await peer.close()


async def test_each_command_goes_to_its_handler_or_the_one_refusal(smpp_env: Env) -> None:
    server = await start_server(smpp_env)
    calls = _spy(server)
    peer = await Peer.open(server.port)

    # before a bind, only binds reach a handler; every other request: ESME_RINVBNDSTS
    unbound = {
        C.SUBMIT_SM: P.SubmitSm(destination_addr="905332141354", short_message=b"x"),
        C.QUERY_SM: P.QuerySm(message_id="a:0"),
        C.CANCEL_SM: P.CancelSm(message_id="a:0"),
        C.REPLACE_SM: P.ReplaceSm(message_id="a:0"),
        C.DATA_SM: P.DataSm(destination_addr="905332141354"),
    }
    for cid, pdu in unbound.items():
        assert await peer.call(pdu) == (f"{cid.name.lower()}_resp", S.ESME_RINVBNDSTS), cid
    assert not calls

    bind = P.BindTransceiver(system_id="acme", password="secret1")
    assert await peer.call(bind) == ("bind_transceiver_resp", S.ESME_ROK)
    name, status, message_id = await peer.submit()
    assert (name, status) == ("submit_sm_resp", S.ESME_ROK)
    assert await peer.call(P.QuerySm(message_id=message_id)) == ("query_sm_resp", S.ESME_ROK)
    assert await peer.call(P.CancelSm(message_id="nope:0")) == (
        "cancel_sm_resp",
        S.ESME_RINVMSGID,
    )
    for again in (P.BindTransmitter, P.BindReceiver, P.BindTransceiver):
        pdu = again(system_id="acme", password="secret1")
        assert await peer.call(pdu) == (f"{pdu.name}_resp", S.ESME_RALYBND)
    assert calls == {
        "smpp_bind_transmitter": 1,
        "smpp_bind_receiver": 1,
        "smpp_bind_transceiver": 2,
        "smpp_submit_sm": 1,
        "smpp_query_sm": 1,
        "smpp_cancel_sm": 1,
    }
    assert set(calls) == {f"smpp_{cid.name.lower()}" for cid in HANDLED}

    # commands the server does not offer: ESME_RINVCMDID, in their own response type when
    # they have one, and no handler sees them
    not_offered: dict[P.CommandId, tuple[str, int]] = {
        C.REPLACE_SM: await peer.call(P.ReplaceSm(message_id=message_id)),
        C.DATA_SM: await peer.call(P.DataSm(destination_addr="905332141354")),
        C.DELIVER_SM: await peer.call(P.DeliverSm(destination_addr="905332141354")),
        C.SUBMIT_MULTI: await peer.raw(C.SUBMIT_MULTI, b"\0" * 20),
        C.OUTBIND: await peer.call(P.Outbind(system_id="acme", password="secret1")),
        C.ALERT_NOTIFICATION: await peer.call(P.AlertNotification()),
    }
    assert set(not_offered) == NOT_OFFERED
    for cid, answer in not_offered.items():
        expected = "generic_nack" if cid in (C.OUTBIND, C.ALERT_NOTIFICATION) else None
        assert answer == (expected or f"{cid.name.lower()}_resp", S.ESME_RINVCMDID), cid
    assert sum(calls.values()) == 7  # unchanged

    # the Session's own: enquire_link, then unbind
    assert await peer.call(P.EnquireLink()) == ("enquire_link_resp", S.ESME_ROK)
    assert await peer.call(P.Unbind()) == ("unbind_resp", S.ESME_ROK)
    await peer.close()
