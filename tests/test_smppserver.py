"""``mta smpp-server`` driven by smpplib's client (not our codec) over real loopback sockets,
with the real RabbitMQ and Redis: binds, submits into MMP batches, long and UCS-2 texts, times,
throttling, query_sm, cancel_sm, receipts, malformed PDUs, TLS."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import ssl
import struct
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
import smpplib.client  # type: ignore[import-untyped]
import smpplib.command  # type: ignore[import-untyped]
import smpplib.consts  # type: ignore[import-untyped]
import smpplib.pdu  # type: ignore[import-untyped]
import smpplib.smpp  # type: ignore[import-untyped]
from smpplib.command import Param

from mta.config import ConfigError, load_accounts, load_smpp_clients
from mta.service import Service
from mta.smppserver import SmppServer, parse_smpp_time, to_mmp_time
from tests.conftest import Env, mta_command, sim_accounts

C = smpplib.consts

CLIENTS = """
[[smpp_client]]
system_id = "acme"
password = "secret1"
account_id = 12
throughput = 1000

[[smpp_client]]
system_id = "otp"
password = "${SMPP_TEST_OTP_PASSWORD}"
account_id = 13
throughput = 1000
priority = true

[[smpp_client]]
system_id = "slow"
password = "pw"
account_id = 14
throughput = 5
"""


# --- an ESME made of smpplib's client and PDU classes, driven from a thread --------------


class CancelSM(smpplib.command.Command):  # type: ignore[misc]
    """cancel_sm (smpplib 2.2.4 has no class for it), built on smpplib's own encoder."""

    params = {
        "service_type": Param(type=str, max=6),
        "message_id": Param(type=str, max=65),
        "source_addr_ton": Param(type=int, size=1),
        "source_addr_npi": Param(type=int, size=1),
        "source_addr": Param(type=str, max=21),
        "dest_addr_ton": Param(type=int, size=1),
        "dest_addr_npi": Param(type=int, size=1),
        "destination_addr": Param(type=str, max=21),
    }
    params_order = tuple(params)

    def __init__(self, command: str, **kwargs: Any) -> None:
        super().__init__(command, **kwargs)
        self._set_vars(**dict.fromkeys(self.params))


class CancelSMResp(smpplib.command.Command):  # type: ignore[misc]
    params: dict[str, Param] = {}
    params_order = ()

    def __init__(self, command: str, **kwargs: Any) -> None:
        super().__init__(command, need_sequence=False, **kwargs)


class Esme:
    """One SMPP client connection; every call runs smpplib in a worker thread."""

    def __init__(self, port: int, context: ssl.SSLContext | None = None) -> None:
        self.client = smpplib.client.Client(
            "127.0.0.1", port, timeout=10, allow_unknown_opt_params=True, ssl_context=context
        )
        self.received: list[Any] = []  # deliver_sm PDUs, answered ESME_ROK
        self._buffer = bytearray()

    async def connect(self) -> Esme:
        await asyncio.to_thread(self.client.connect)
        return self

    def make(self, command: str, **fields: Any) -> Any:
        if command == "cancel_sm":
            return CancelSM(command, client=self.client, **fields)
        return smpplib.smpp.make_pdu(command, client=self.client, **fields)

    def _take(self, n: int) -> bytes:
        """*n* octets; a socket timeout keeps what was read (the stream stays in sync)."""
        while len(self._buffer) < n:
            chunk = self.client._socket.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the server")
            self._buffer += chunk
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    def _read(self) -> Any:
        while (
            len(self._buffer) < 4 or len(self._buffer) < struct.unpack_from(">L", self._buffer)[0]
        ):
            chunk = self.client._socket.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the server")
            self._buffer += chunk
        (length,) = struct.unpack_from(">L", self._buffer)
        raw = self._take(length)
        if smpplib.pdu.extract_command(raw) == "cancel_sm_resp":
            pdu = CancelSMResp("cancel_sm_resp", client=self.client)
            pdu.parse(raw)
            return pdu
        return smpplib.smpp.parse_pdu(raw, client=self.client, allow_unknown_opt_params=True)

    def _answer(self, pdu: Any) -> bool:
        """Answer what the server asks; True if *pdu* was such a request."""
        if pdu.command == "deliver_sm":
            self.received.append(pdu)
            resp = smpplib.smpp.make_pdu("deliver_sm_resp", client=self.client)
        elif pdu.command == "enquire_link":
            resp = smpplib.smpp.make_pdu("enquire_link_resp", client=self.client)
        else:
            return False
        resp.sequence = pdu.sequence
        self.client._socket.sendall(resp.generate())
        return True

    def _exchange(self, frames: bytes, sequence: int) -> Any:
        self.client._socket.sendall(frames)
        while True:
            pdu = self._read()
            if self._answer(pdu):
                continue
            if pdu.sequence == sequence:
                return pdu

    async def call(self, command: str, **fields: Any) -> Any:
        pdu = self.make(command, **fields)
        return await asyncio.to_thread(self._exchange, pdu.generate(), pdu.sequence)

    async def raw(self, frame: bytes, sequence: int) -> Any:
        return await asyncio.to_thread(self._exchange, frame, sequence)

    async def bind(self, system_id: str, password: str, kind: str = "transceiver") -> Any:
        return await self.call(f"bind_{kind}", system_id=system_id, password=password)

    async def submit(self, text: bytes = b"hello", **fields: Any) -> Any:
        values: dict[str, Any] = {
            "source_addr": "ACME",
            "destination_addr": "905332141354",
            "short_message": text,
        }
        values.update(fields)
        return await self.call("submit_sm", **values)

    async def pipeline(self, pdus: list[Any]) -> list[Any]:
        """Send all, then read all their responses (any order)."""

        def run() -> list[Any]:
            self.client._socket.sendall(b"".join(p.generate() for p in pdus))
            want = {p.sequence for p in pdus}
            got: dict[int, Any] = {}
            while len(got) < len(want):
                pdu = self._read()
                if not self._answer(pdu) and pdu.sequence in want:
                    got[pdu.sequence] = pdu
            return [got[p.sequence] for p in pdus]

        return await asyncio.to_thread(run)

    async def receipts(self, n: int, timeout: float = 15.0) -> list[Any]:
        """Wait until *n* deliver_sm arrived (answering them)."""

        def run() -> None:
            deadline = time.monotonic() + timeout
            self.client._socket.settimeout(0.2)
            try:
                while len(self.received) < n and time.monotonic() < deadline:
                    try:
                        self._answer(self._read())
                    except TimeoutError:
                        continue
            finally:
                self.client._socket.settimeout(10)

        await asyncio.to_thread(run)
        assert len(self.received) >= n, f"expected {n} deliver_sm, got {len(self.received)}"
        return self.received[:n]

    async def closed_by_server(self) -> bool:
        def run() -> bool:  # reads what is left (a generic_nack, a resp) up to the end
            self.client._socket.settimeout(3)
            try:
                while self.client._socket.recv(4096):
                    pass
                return True
            except TimeoutError:
                return False
            except (ConnectionError, OSError):
                return True

        return await asyncio.to_thread(run)

    async def close(self) -> None:
        def run() -> None:
            sock = self.client._socket
            if sock is not None:
                sock.close()
                self.client._socket = None
            self.client.state = C.SMPP_CLIENT_STATE_CLOSED

        await asyncio.to_thread(run)


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture
async def smpp_env(env: Env, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Env]:
    monkeypatch.setenv("SMPP_TEST_OTP_PASSWORD", "otp-pw")
    env.accounts(sim_accounts() + CLIENTS)
    yield env
    for service in list(env.services):
        await env.stop(service)
    assert env.connection is not None
    channel = await env.connection.channel()
    await channel.queue_delete(env.topology.smpp_receipts_queue)
    await channel.close()


async def start_server(env: Env, cert: str = "", key: str = "") -> SmppServer:
    service = Service(
        env.settings,
        ("smpp",),
        env.registry(),
        smpp_listen="127.0.0.1:0",
        smpp_tls_cert=cert,
        smpp_tls_key=key,
    )
    await service.start()
    env.services.append(service)
    assert service.smpp is not None
    return service.smpp


async def esme(server: SmppServer, system_id: str = "acme", kind: str = "transceiver") -> Esme:
    client = await Esme(server.port).connect()
    password = {"acme": "secret1", "otp": "otp-pw", "slow": "pw"}[system_id]
    resp = await client.bind(system_id, password, kind)
    assert resp.status == 0, resp.status
    return client


async def take_batch(env: Env, lane: str = "bulk", timeout: float = 5.0) -> tuple[str, Any]:
    """(AMQP message_id, body) of the next batch on <prefix>.send.<lane>."""
    assert env.channel is not None
    queue = await env.channel.get_queue(env.topology.send_queue(lane))
    deadline = time.monotonic() + timeout
    while True:
        message = await queue.get(no_ack=True, fail=False)
        if message is not None:
            return str(message.message_id), orjson.loads(message.body)
        if time.monotonic() > deadline:
            raise AssertionError(f"no batch on {env.topology.send_queue(lane)}")
        await asyncio.sleep(0.02)


async def until(check: Callable[[], Any], timeout: float = 10.0, what: str = "it") -> None:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def mid(resp: Any) -> str:
    assert resp.status == 0, f"status 0x{resp.status:x}"
    return str(resp.message_id.decode())


# --- configuration -------------------------------------------------------------------------


def test_smpp_clients_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMPP_TEST_OTP_PASSWORD", "otp-pw")
    path = tmp_path / "a.toml"
    path.write_text(sim_accounts() + CLIENTS)
    clients = load_smpp_clients(path)
    assert [(c.system_id, c.account_id, c.throughput, c.priority) for c in clients] == [
        ("acme", 12, 1000.0, False),
        ("otp", 13, 1000.0, True),
        ("slow", 14, 5.0, False),
    ]
    assert clients[1].password == "otp-pw"
    assert "otp-pw" not in repr(clients[1]) and "****" in repr(clients[1])
    assert load_accounts(path, {"simulator": _sim_meta()})  # [[smpp_client]] is accepted
    bad = {
        'system_id = "waytoolongsystemid"\npassword = "x"\naccount_id = 1': "system_id",
        'system_id = "a"\npassword = "x"\naccount_id = -1': "account_id",
        'system_id = "a"\npassword = "x"\naccount_id = 1\nthroughput = 0': "throughput",
        'system_id = "a"\npassword = "${NOPE_NOT_SET}"\naccount_id = 1': "NOPE_NOT_SET",
        'system_id = "a"\npassword = "x"\naccount_id = 1\ncolour = 1': "colour",
        'system_id = "a"\npassword = "x"\naccount_id = 1\npriority = "yes"': "priority",
        'system_id = "a"\npassword = "123456789"\naccount_id = 1': "password",
    }
    for body, field in bad.items():
        path.write_text(f"[[smpp_client]]\n{body}\n")
        with pytest.raises(ConfigError, match=field) as info:
            load_smpp_clients(path)
        assert "smpp_client 'a'" in str(info.value) or "smpp_client 'way" in str(info.value)
    path.write_text('[[smpp_client]]\nsystem_id="a"\npassword="x"\naccount_id=1\n' * 2)
    with pytest.raises(ConfigError, match="system_id: used by two"):
        load_smpp_clients(path)


def _sim_meta() -> Any:
    from mta.registry import discover

    return discover()["simulator"].meta


def test_smpp_times() -> None:
    now = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)
    assert parse_smpp_time("", now) is None
    # absolute, 12:30:10 local at UTC+3 (12 quarter hours ahead) = 09:30:10 UTC
    at = parse_smpp_time("261122123010012+", now)
    assert at == datetime(2026, 11, 22, 9, 30, 10, tzinfo=UTC)
    assert parse_smpp_time("261122123010512+", now) == at + timedelta(milliseconds=500)
    assert parse_smpp_time("261122083000004-", now) == datetime(2026, 11, 22, 9, 30, tzinfo=UTC)
    # relative: 1 month, 2 days, 3 h, 4 min, 5 s
    assert parse_smpp_time("000102030405000R", now) == datetime(2026, 12, 24, 13, 4, 5, tzinfo=UTC)
    for bad in ("2611221230", "261122123010012X", "261399123010000+", "261122123010049+"):
        with pytest.raises(ValueError):
            parse_smpp_time(bad, now)
    istanbul = ZoneInfo("Europe/Istanbul")
    assert to_mmp_time(datetime(2026, 11, 22, 9, 30, tzinfo=UTC), istanbul) == "202611221230"
    assert to_mmp_time(datetime(2026, 11, 22, 9, 30, 1, tzinfo=UTC), UTC) == "202611220931"


# --- binds -------------------------------------------------------------------------------


async def test_binds(smpp_env: Env) -> None:
    server = await start_server(smpp_env)
    server.directory.base_delay = 0.4
    early = await Esme(server.port).connect()
    resp = await early.submit()
    assert resp.command == "submit_sm_resp" and resp.status == C.SMPP_ESME_RINVBNDSTS
    ok = await early.bind("acme", "secret1")
    assert ok.status == 0 and ok.system_id == b"mta"
    again = await early.bind("acme", "secret1", "transmitter")
    assert again.status == C.SMPP_ESME_RALYBND
    assert mid(await early.submit())  # the session is still bound and usable
    enquire = await early.call("enquire_link")
    assert enquire.command == "enquire_link_resp" and enquire.status == 0

    timings = []
    for system_id, password in (("acme", "wrong"), ("nobody", "secret1"), ("acme", "secret")):
        client = await Esme(server.port).connect()
        started = time.monotonic()
        resp = await client.bind(system_id, password)
        timings.append(time.monotonic() - started)
        # one status for an unknown system_id and a wrong password: nothing to enumerate
        assert resp.status == C.SMPP_ESME_RBINDFAIL, (system_id, resp.status)
        assert await client.closed_by_server()  # a refused bind ends the connection
        await client.close()
    # every refused bind is answered after the same delay (bind_fail_delay_s, 1 s ± 10 %)
    assert all(0.85 <= t < 2.0 for t in timings), timings  # 1 s ± 10 %
    # a correct bind is never slowed down, and receivers/transmitters bind too
    started = time.monotonic()
    rx = await esme(server, "acme", "receiver")
    tx = await esme(server, "otp", "transmitter")
    assert time.monotonic() - started < 0.9  # a correct bind is not delayed
    refused = await rx.submit()
    assert refused.status == C.SMPP_ESME_RINVBNDSTS  # a receiver cannot submit
    assert mid(await tx.submit())
    assert server.stats["bind_failures"] == 3
    for client in (early, rx, tx):
        unbound = await client.call("unbind")
        assert unbound.command == "unbind_resp"
        await client.close()
    await until(lambda: not server.sessions, what="sessions to close after unbind")


# --- submit_sm → MMP batches ------------------------------------------------------------


async def test_submit_becomes_an_mmp_batch(smpp_env: Env) -> None:
    server = await start_server(smpp_env)
    client = await esme(server)
    resp = await client.submit(b"hello world", source_addr="ACME", destination_addr="+905332141354")
    message_id = mid(resp)
    batch_id, body = await take_batch(smpp_env)
    assert message_id == f"{batch_id}:0" and len(message_id) <= 64
    assert body == {
        "messages": [
            {
                "mobileNumber": "905332141354",
                "text": "hello world",
                "accountId": 12,
                "smsType": "BULK",
                "sender": "ACME",
            }
        ]
    }
    # pipelined submits share micro-batches: ids batch:i, one AMQP message per batch
    pdus = [
        client.make(
            "submit_sm",
            source_addr="ACME",
            destination_addr=f"9053321400{i:02d}",
            short_message=b"n%d" % i,
        )
        for i in range(40)
    ]
    resps = await client.pipeline(pdus)
    ids = [mid(r) for r in resps]
    assert len(set(ids)) == 40
    seen: dict[str, str] = {}
    while len(seen) < 40:
        batch_id, body = await take_batch(smpp_env)
        for i, message in enumerate(body["messages"]):
            seen[f"{batch_id}:{i}"] = message["text"]
    assert [seen[i] for i in ids] == [f"n{i}" for i in range(40)]
    assert server.stats["batches"] < 41
    # the priority lane: priority_flag > 0, or a client configured priority
    flagged = mid(await client.submit(b"urgent", priority_flag=1))
    batch_id, body = await take_batch(smpp_env, "priority")
    assert flagged == f"{batch_id}:0" and body["messages"][0]["text"] == "urgent"
    otp = await esme(server, "otp")
    code = mid(await otp.submit(b"code 1234"))
    batch_id, body = await take_batch(smpp_env, "priority")
    assert code == f"{batch_id}:0" and body["messages"][0]["accountId"] == 13
    for c in (client, otp):
        await c.close()


async def test_refused_submits(smpp_env: Env) -> None:
    server = await start_server(smpp_env)
    client = await esme(server)
    cases: dict[int, list[dict[str, Any]]] = {
        C.SMPP_ESME_RINVDSTADR: [
            {"destination_addr": "0532 214 13 54"},
            {"destination_addr": "05332141354"},
            {"destination_addr": "12ab"},
        ],
        C.SMPP_ESME_RINVSRCADR: [{"source_addr": "ACME-TOO-LONG-NAME"}],
        0x45: [{"data_coding": 4, "short_message": b"\x01\x02"}],  # binary: not a text
        C.SMPP_ESME_RINVMSGLEN: [
            {"short_message": b""},
            {"short_message": b"\x09\x00\x03", "esm_class": 0x40},  # UDH longer than the data
            {"short_message": b"\x05\x00\x03\x01\x02\x03x", "esm_class": 0x40},  # part 3 of 2
        ],
        0x61: [{"schedule_delivery_time": "2611221230"}],  # ESME_RINVSCHED
        0x62: [{"validity_period": "200101000000000+"}],  # ESME_RINVEXPIRY: over
    }
    for status, variants in cases.items():
        for fields in variants:
            text = fields.pop("short_message", b"hello")
            resp = await client.submit(text, **fields)
            assert resp.status == status, (fields, hex(resp.status))
    assert mid(await client.submit(b"still fine"))
    mo = await client.call("deliver_sm", source_addr="ACME", destination_addr="905332141354")
    assert mo.command == "deliver_sm_resp" and mo.status == C.SMPP_ESME_RINVCMDID
    await client.close()


async def test_long_and_ucs2_messages(smpp_env: Env) -> None:
    server = await start_server(smpp_env)
    client = await esme(server)
    # UDH, GSM-7: three parts with reference 7
    parts = [b"A" * 153, b"B" * 153, b"C" * 10]
    udh_ids = []
    for n, chunk in enumerate(parts, 1):
        resp = await client.submit(bytes((5, 0, 3, 7, 3, n)) + chunk, esm_class=C.SMPP_GSMFEAT_UDHI)
        udh_ids.append(mid(resp))
    batch_id, body = await take_batch(smpp_env)
    [message] = body["messages"]
    assert message["text"] == "A" * 153 + "B" * 153 + "C" * 10
    assert udh_ids[-1] == f"{batch_id}:0"  # the completing part carries the MMP id
    assert len(set(udh_ids)) == 3 and all(":" not in i for i in udh_ids[:-1])
    # SAR TLVs, UCS-2 (data_coding 8), parts sent out of order
    text = "Привет мир! " * 8  # 96 UCS-2 characters
    halves = [text[:67].encode("utf-16-be"), text[67:].encode("utf-16-be")]
    sar_ids = []
    for seq in (2, 1):
        resp = await client.submit(
            halves[seq - 1],
            data_coding=8,
            sar_msg_ref_num=0x1234,
            sar_total_segments=2,
            sar_segment_seqnum=seq,
        )
        sar_ids.append(mid(resp))
    batch_id, body = await take_batch(smpp_env)
    assert body["messages"][0]["text"] == text
    assert sar_ids[-1] == f"{batch_id}:0"
    # a single UCS-2 message, and message_payload
    mid(await client.submit("ça\u011fr\u0131 ☎".encode("utf-16-be"), data_coding=8))
    _, body = await take_batch(smpp_env)
    assert body["messages"][0]["text"] == "ça\u011fr\u0131 ☎"
    mid(await client.submit(b"", message_payload=b"P" * 200))
    _, body = await take_batch(smpp_env)
    assert body["messages"][0]["text"] == "P" * 200
    # Latin-1 (data_coding 3), and GSM 03.38 with an extension character (ESC e = €)
    mid(await client.submit("café".encode("latin-1"), data_coding=3))
    _, body = await take_batch(smpp_env)
    assert body["messages"][0]["text"] == "café"
    mid(await client.submit(b"price 5\x1be @ \x00", data_coding=0))
    _, body = await take_batch(smpp_env)
    assert body["messages"][0]["text"] == "price 5€ ¡ @"
    # every part id answers query_sm with the state of the whole message
    for part_id in udh_ids:
        resp = await client.call("query_sm", message_id=part_id, source_addr="ACME")
        assert resp.status == 0 and resp.message_state == 1  # ENROUTE
    await client.close()


async def test_schedule_and_validity(smpp_env: Env) -> None:
    smpp_env.configure(timezone="Europe/Istanbul")
    server = await start_server(smpp_env)
    client = await esme(server)
    tz = ZoneInfo("Europe/Istanbul")
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
    # absolute schedule given at UTC-4 (16 quarter hours behind), relative validity of 3 days
    local = start - timedelta(hours=4)
    schedule = local.strftime("%y%m%d%H%M%S") + "016-"
    before = datetime.now(UTC)
    mid(await client.submit(schedule_delivery_time=schedule, validity_period="000003000000000R"))
    _, body = await take_batch(smpp_env)
    message = body["messages"][0]
    assert message["startTime"] == to_mmp_time(start, tz)
    expire = datetime.strptime(message["expireTime"], "%Y%m%d%H%M").replace(tzinfo=tz)
    assert before + timedelta(days=3) <= expire <= before + timedelta(days=3, minutes=2)
    # a schedule in the past means now: no startTime
    mid(await client.submit(schedule_delivery_time="200101000000000+"))
    _, body = await take_batch(smpp_env)
    assert "startTime" not in body["messages"][0]
    await client.close()


async def test_throughput_limit(smpp_env: Env) -> None:
    server = await start_server(smpp_env)
    client = await esme(server, "slow")  # throughput = 5 submit_sm/s
    pdus = [client.make("submit_sm", destination_addr="905332141354", short_message=b"x")]
    pdus += [
        client.make("submit_sm", destination_addr="905332141354", short_message=b"x")
        for _ in range(19)
    ]
    resps = await client.pipeline(pdus)
    statuses = [r.status for r in resps]
    assert statuses.count(0) <= 6 and statuses.count(0) >= 4
    assert statuses.count(C.SMPP_ESME_RTHROTTLED) == 20 - statuses.count(0)
    await asyncio.sleep(0.5)  # the bucket refills at 5/s
    assert mid(await client.submit())
    await client.close()


# --- query_sm and cancel_sm ---------------------------------------------------------------


async def test_query_and_cancel_while_queued(smpp_env: Env) -> None:
    tail = await smpp_env.tail()
    server = await start_server(smpp_env)
    client = await esme(server)
    message_id = mid(await client.submit(b"cancel me", registered_delivery=1))
    resp = await client.call("query_sm", message_id=message_id, source_addr="ACME")
    assert (resp.status, resp.message_state, resp.final_date) == (0, 1, b"")
    other = await esme(server, "otp")
    foreign = await other.call("query_sm", message_id=message_id, source_addr="ACME")
    assert foreign.status == C.SMPP_ESME_RINVMSGID  # another client's message is not visible
    unknown = await client.call("query_sm", message_id="nope:1", source_addr="ACME")
    assert unknown.status == C.SMPP_ESME_RINVMSGID

    cancelled = await client.call(
        "cancel_sm", message_id=message_id, source_addr="ACME", destination_addr="905332141354"
    )
    assert cancelled.command == "cancel_sm_resp" and cancelled.status == 0
    await tail.wait(lambda t: message_id in t.by_id("FAIL"), timeout=10)
    key, doc = next(m for m in tail.messages if m[1]["results"][0]["messageId"] == message_id)
    assert key == "12.FAIL"
    result = doc["results"][0]
    assert result["partnerStatus"] == "CANCELLED" and "acme" in result["partnerDetail"]
    resp = await client.call("query_sm", message_id=message_id, source_addr="ACME")
    assert resp.status == 0 and resp.message_state == 4  # DELETED
    assert resp.final_date and len(resp.final_date) == 16
    again = await client.call("cancel_sm", message_id=message_id, source_addr="ACME")
    assert again.status == C.SMPP_ESME_RCANCELFAIL
    assert (await server.store.counts())["outbox"] == 0  # the FAIL went out through the outbox
    batch_key = server.records.batch_key(message_id.rsplit(":", 1)[0])
    assert await server.store.r.ttl(batch_key) > 47 * 3600  # query_sm works for 48 h
    # the cancelled message's receipt says DELETED
    [receipt] = await client.receipts(1)
    assert receipt.receipted_message_id == message_id.encode()
    assert receipt.message_state == 4 and b"stat:DELETED" in receipt.short_message
    # a worker started now never hands it to the partner
    await smpp_env.start("worker")
    later = mid(await client.submit(b"after"))
    await tail.wait(lambda t: later in t.by_id("OK"), timeout=10)
    assert message_id not in tail.by_id("OK")
    for c in (client, other):
        await c.close()


async def test_cancel_fails_after_handover(smpp_env: Env) -> None:
    smpp_env.accounts(sim_accounts(delay=30.0) + CLIENTS)  # handed over, final much later
    tail = await smpp_env.tail()
    await smpp_env.start("worker")
    server = await start_server(smpp_env)
    client = await esme(server)
    message_id = mid(await client.submit(b"too late"))
    await tail.wait(lambda t: message_id in t.by_id("OK"), timeout=10)
    resp = await client.call("cancel_sm", message_id=message_id, source_addr="ACME")
    assert resp.status == C.SMPP_ESME_RCANCELFAIL
    state = await client.call("query_sm", message_id=message_id, source_addr="ACME")
    assert state.message_state == 1  # still ENROUTE: the partner has it
    await client.close()


# --- receipts ------------------------------------------------------------------------------


async def test_receipt_to_a_bound_transceiver(smpp_env: Env) -> None:
    tail = await smpp_env.tail()
    await smpp_env.start("worker", "reporter")
    server = await start_server(smpp_env)
    client = await esme(server)
    message_id = mid(await client.submit(b"deliver me", registered_delivery=1))
    silent = mid(await client.submit(b"no receipt", registered_delivery=0))
    [receipt] = await client.receipts(1)
    assert receipt.esm_class == 0x04  # SMSC delivery receipt
    assert receipt.receipted_message_id == message_id.encode()
    assert receipt.message_state == 2
    assert receipt.source_addr == b"905332141354" and receipt.destination_addr == b"ACME"
    text = receipt.short_message.decode()
    assert text.startswith(f"id:{message_id} sub:001 dlvrd:001 submit date:")
    assert "stat:DELIVRD err:000 text:deliver me" in text
    resp = await client.call("query_sm", message_id=message_id, source_addr="ACME")
    assert resp.message_state == 2 and resp.final_date
    await tail.wait(lambda t: silent in t.by_id("DELIVERED"), timeout=10)
    await asyncio.sleep(0.3)
    assert len(client.received) == 1  # registered_delivery 0: no receipt
    assert (await client.call("query_sm", message_id=silent)).message_state == 2
    await client.close()


async def test_receipt_waits_until_the_client_binds(smpp_env: Env) -> None:
    tail = await smpp_env.tail()
    await smpp_env.start("worker", "reporter")
    server = await start_server(smpp_env)
    sender = await esme(server, "acme", "transmitter")
    message_id = mid(await sender.submit(b"later", registered_delivery=1))
    await tail.wait(lambda t: message_id in t.by_id("DELIVERED"), timeout=10)
    await until(lambda: server.receipt_stash.waiting("acme"), what="the receipt to wait in Redis")
    assert server.stats["receipts_sent"] == 0
    # a second server process (same prefix) where the client binds: it flushes the stash
    other = await start_server(smpp_env)
    receiver = await esme(other, "acme", "receiver")
    [receipt] = await receiver.receipts(1)
    assert receipt.receipted_message_id == message_id.encode() and receipt.message_state == 2
    assert await other.receipt_stash.waiting("acme") == 0
    for c in (sender, receiver):
        await c.close()


# --- robustness --------------------------------------------------------------------------


async def test_malformed_pdus_do_not_hurt(smpp_env: Env) -> None:
    server = await start_server(smpp_env)
    victim = await esme(server)
    bystander = await esme(server, "otp")
    unknown = struct.pack(">IIII", 16, 0x00000999, 0, 4242)
    nack = await victim.raw(unknown, 4242)
    assert nack.command == "generic_nack" and nack.status == C.SMPP_ESME_RINVCMDID
    # a submit_sm whose sm_length runs past the frame
    body = b"\0" + b"\0\0ACME\0" + b"\0\0905332141354\0" + b"\0\0\0\0\0\0\0\0\0" + b"\xff" + b"x"
    broken = struct.pack(">IIII", 16 + len(body), 0x00000004, 0, 4243) + body
    resp = await victim.raw(broken, 4243)
    assert resp.command == "generic_nack" and resp.status == C.SMPP_ESME_RINVMSGLEN
    assert mid(await victim.submit(b"still bound"))  # the session survived both
    # a frame with an impossible command_length ends only that connection
    wrecker = await esme(server)
    await asyncio.to_thread(wrecker.client._socket.sendall, struct.pack(">IIII", 8, 4, 0, 1))
    assert await wrecker.closed_by_server()
    await wrecker.close()
    assert mid(await bystander.submit(b"unaffected"))
    assert mid(await victim.submit(b"unaffected too"))
    for c in (victim, bystander):
        await c.close()


async def test_tls_listener(smpp_env: Env, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    await asyncio.to_thread(
        subprocess.run,
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    server = await start_server(smpp_env, str(cert), str(key))
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    client = await Esme(server.port, context).connect()
    assert (await client.bind("acme", "secret1")).status == 0
    assert mid(await client.submit(b"over tls"))
    await client.close()
    # a plain-text client gets no SMPP answer
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(struct.pack(">IIII", 16, 0x15, 0, 1))  # enquire_link in the clear
    data = b""
    with contextlib.suppress(TimeoutError, ConnectionError):
        data = await asyncio.wait_for(reader.read(16), 1.0)
    assert data[:8] != struct.pack(">II", 16, 0x80000015)
    writer.close()


async def test_graceful_stop_unbinds(smpp_env: Env) -> None:
    service = Service(smpp_env.settings, ("smpp",), smpp_env.registry(), smpp_listen="127.0.0.1:0")
    await service.start()
    assert service.smpp is not None
    client = await esme(service.smpp)
    assert mid(await client.submit(b"before stop"))

    def read_unbind() -> Any:
        pdu = client._read()
        if pdu.command == "unbind":
            resp = smpplib.smpp.make_pdu("unbind_resp", client=client.client)
            resp.sequence = pdu.sequence
            client.client._socket.sendall(resp.generate())
        return pdu

    reader = asyncio.create_task(asyncio.to_thread(read_unbind))
    await service.stop()
    assert (await reader).command == "unbind"
    await client.close()
    assert smpp_env.topology.smpp_receipts_queue == f"{smpp_env.prefix}.smpp.receipts"


# --- the full loop: smpplib client → mta smpp-server → worker → smpp adapter → test SMSC ---

LOOP_ACCOUNTS = """
[[account]]
id = 9
name = "smsc"
adapter = "smpp"
default = true
[account.options]
host = "127.0.0.1"
port = {port}
system_id = "upstream"
password = "${{SMPP_TEST_UPSTREAM_PASSWORD}}"
window = 20
receipt_id_base = "dec"
reconnect_s = 0.1
"""


async def test_full_loop_through_the_smpp_adapter(
    smpp_env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.smsc import DELIVERED, UNDELIVERABLE, TestSmsc

    smsc = TestSmsc(
        {"upstream": "up-pw-7"}, submit_id_base="hex", receipt_id_base="dec", receipt_delay=0.2
    )
    smsc.final_state = lambda s: UNDELIVERABLE if s.destination_addr.endswith("3") else DELIVERED
    await smsc.start()
    monkeypatch.setenv("SMPP_TEST_UPSTREAM_PASSWORD", "up-pw-7")
    try:
        smpp_env.accounts(LOOP_ACCOUNTS.format(port=smsc.port) + CLIENTS)
        await smpp_env.start("worker", "reporter")
        server = await start_server(smpp_env)
        client = await esme(server)
        ok_id = mid(
            await client.submit(b"loop ok", destination_addr="905330002001", registered_delivery=1)
        )
        bad_id = mid(
            await client.submit(b"loop bad", destination_addr="905330002003", registered_delivery=1)
        )
        long_text = "Ü" + "x" * 100  # UCS-2, two parts over there (67 per part)
        halves = [long_text[:60].encode("utf-16-be"), long_text[60:].encode("utf-16-be")]
        part_ids = [
            mid(
                await client.submit(
                    bytes((5, 0, 3, 9, 2, n)) + half,
                    esm_class=0x40,
                    data_coding=8,
                    destination_addr="905330002005",
                    registered_delivery=1,
                )
            )
            for n, half in enumerate(halves, 1)
        ]
        receipts = await client.receipts(4, timeout=20)
        states = {r.receipted_message_id.decode(): r.message_state for r in receipts}
        assert states == {ok_id: 2, bad_id: 5, part_ids[0]: 2, part_ids[1]: 2}
        # what the SMSC got: the texts, through the smpp adapter
        texts = sorted(m.text for m in smsc.messages)
        assert texts == sorted(["loop ok", "loop bad", long_text])
        for message_id, state in ((ok_id, 2), (bad_id, 5), (part_ids[0], 2)):
            resp = await client.call("query_sm", message_id=message_id, source_addr="ACME")
            assert resp.message_state == state
        await client.close()
    finally:
        await smsc.stop()


async def test_the_smpp_server_command(smpp_env: Env) -> None:
    """``mta smpp-server`` as an operator runs it: a process, MTA_* settings, SIGTERM."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = smpp_env.settings
    environ = dict(
        os.environ,
        MTA_PREFIX=settings.prefix,
        MTA_ACCOUNTS=settings.accounts,
        MTA_AMQP_URL=settings.amqp_url,
        MTA_REDIS_URL=settings.redis_url,
        MTA_SMPP_LISTEN=f"127.0.0.1:{port}",
    )
    usage = await asyncio.create_subprocess_exec(
        *mta_command("smpp-server", "--tls-cert", settings.accounts),
        env=environ,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await usage.communicate()
    assert usage.returncode == 2 and b"--tls-cert and --tls-key go together" in err
    proc = await asyncio.create_subprocess_exec(
        *mta_command("smpp-server"), env=environ, stderr=asyncio.subprocess.PIPE
    )
    try:
        client = Esme(port)
        await until(lambda: _listening(port), what="mta smpp-server to listen")
        await client.connect()
        assert (await client.bind("acme", "secret1")).status == 0
        message_id = mid(await client.submit(b"via the command"))
        batch_id, body = await take_batch(smpp_env)
        assert message_id == f"{batch_id}:0" and body["messages"][0]["text"] == "via the command"
        await client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert b"secret1" not in err and b"otp-pw" not in err  # no password is ever logged


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


async def test_waiting_receipts_are_bounded(smpp_env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    from mta.smppserver import receipt_stash
    from mta.smppserver.records import MessageRecord, ReceiptDelivery

    monkeypatch.setattr(receipt_stash, "PENDING_RECEIPTS_MAX", 10)
    store = await smpp_env.store()
    records = receipt_stash.ReceiptStash(store)
    record = MessageRecord(1, 0, "acme", 1, 0, 0, "ACME", 1, 1, "905332141354", 0, "hi")
    await records.stash([ReceiptDelivery(f"b:{i}", 2, 0, record) for i in range(15)])
    assert await records.waiting("acme") == 10  # the oldest went
    jobs = await records.take("acme", 100)
    assert [j.message_id for j in jobs] == [f"b:{i}" for i in range(5, 15)]
    assert jobs[0].record == record
    await store.close()


async def test_many_receipts_all_arrive_once(smpp_env: Env) -> None:
    """More receipts than the session's window: the overflow waits for window space."""
    await smpp_env.start("worker", "reporter")
    server = await start_server(smpp_env)
    client = await esme(server)
    pdus = [
        client.make(
            "submit_sm",
            source_addr="ACME",
            destination_addr=f"9053300030{i:02d}",
            short_message=b"m%d" % i,
            registered_delivery=1,
        )
        for i in range(80)
    ]
    ids = {mid(r) for r in await client.pipeline(pdus)}
    receipts = await client.receipts(80, timeout=20)
    got = [r.receipted_message_id.decode() for r in receipts]
    assert set(got) == ids and len(got) == 80
    await asyncio.sleep(1.2)  # one more flush round: nothing comes twice
    assert len(client.received) == 80
    assert await server.receipt_stash.waiting("acme") == 0
    await client.close()
