"""SMPP sessions over real loopback TCP: requests, window, timers, unbind, bad frames, close."""

from __future__ import annotations

import asyncio
import functools
import itertools
import socket
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from mta.smpp import pdu as P
from mta.smpp.session import ResponseTimeout, Session, SessionClosed, connect

S = P.CommandStatus


@dataclass
class Server:
    """An asyncio server whose connections are Sessions built with *options*."""

    port: int = 0
    sessions: list[Session] = field(default_factory=list)
    closed: list[tuple[Session, BaseException | None]] = field(default_factory=list)
    connected: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Any]]:
    servers: list[asyncio.Server] = []
    made: list[Server] = []

    async def start(**options: Any) -> Server:
        state = Server()

        def on_close(session: Session, reason: BaseException | None) -> None:
            state.closed.append((session, reason))

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            session = Session(reader, writer, on_close=on_close, **options)
            session.start()
            state.sessions.append(session)
            state.connected.set()

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        servers.append(server)
        state.port = server.sockets[0].getsockname()[1]
        made.append(state)
        return state

    yield start
    for state in made:
        for session in state.sessions:
            await session.close()
    for server in servers:
        server.close()
        await server.wait_closed()


def submit(n: int = 0) -> P.SubmitSm:
    return P.SubmitSm(source_addr="ACME", destination_addr="905332141354", short_message=b"%d" % n)


def answer_submits(_session: Session, pdu: P.Pdu) -> P.Pdu:
    assert isinstance(pdu, P.SubmitSm)
    return P.SubmitSmResp(message_id="id-" + pdu.short_message.decode())


async def test_request_response_and_bind(serve: Callable[..., Any]) -> None:
    def handler(_session: Session, pdu: P.Pdu) -> P.Pdu:
        if isinstance(pdu, P.BindTransceiver):
            ok = pdu.system_id == "acct" and pdu.password == "pw"
            status = 0 if ok else S.ESME_RINVPASWD
            return P.BindTransceiverResp(system_id="MTA", status=status)
        return answer_submits(_session, pdu)

    server = await serve(on_request=handler)
    client = await connect("127.0.0.1", server.port)
    bad = await client.request(P.BindTransceiver(system_id="acct", password="nope"))
    assert isinstance(bad, P.BindTransceiverResp) and bad.status == S.ESME_RINVPASWD
    bound = await client.request(P.BindTransceiver(system_id="acct", password="pw"))
    assert isinstance(bound, P.BindTransceiverResp) and bound.status == 0
    assert bound.system_id == "MTA"
    results = await asyncio.gather(*(client.request(submit(i)) for i in range(50)))
    assert [r.message_id for r in results if isinstance(r, P.SubmitSmResp)] == [
        f"id-{i}" for i in range(50)
    ]
    assert client.outstanding == 0
    await client.close()


async def test_window_is_never_exceeded(serve: Callable[..., Any]) -> None:
    in_flight = 0
    peak = 0

    async def slow(_session: Session, pdu: P.Pdu) -> P.Pdu:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.02)
        in_flight -= 1
        return answer_submits(_session, pdu)

    server = await serve(on_request=slow)
    client = await connect("127.0.0.1", server.port, window=5)
    seen: list[int] = []

    async def one(i: int) -> P.Pdu:
        seen.append(client.outstanding)
        return await client.request(submit(i))

    results = await asyncio.gather(*(one(i) for i in range(40)))
    assert len(results) == 40 and all(r.status == 0 for r in results)
    assert peak == 5  # the server saw exactly `window` requests at once, never more
    assert max(seen) <= 5
    await client.close()


async def test_response_timeout_frees_the_window(serve: Callable[..., Any]) -> None:
    def first_unanswered(session: Session, pdu: P.Pdu) -> P.Pdu | None:
        if pdu.sequence == 1:
            return None  # never answered
        return answer_submits(session, pdu)

    server = await serve(on_request=first_unanswered)
    client = await connect("127.0.0.1", server.port, window=1)
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(ResponseTimeout):
        await client.request(submit(1), response_timeout=0.2)
    assert 0.19 <= loop.time() - start < 3.0
    assert client.outstanding == 0
    resp = await client.request(submit(2), response_timeout=2)  # window slot came back
    assert isinstance(resp, P.SubmitSmResp) and resp.message_id == "id-2"
    await client.close()


async def test_enquire_link_answered_and_sent_when_idle(serve: Callable[..., Any]) -> None:
    server = await serve()
    client = await connect("127.0.0.1", server.port, enquire_link_s=0.1)
    resp = await client.request(P.EnquireLink())
    assert isinstance(resp, P.EnquireLinkResp) and resp.status == 0
    await server.connected.wait()
    first = server.sessions[0].last_received
    await asyncio.sleep(0.35)
    # nothing but the client's keepalive travelled, and the server answered it
    assert server.sessions[0].last_received > first
    assert client.last_received > first and not client.closed
    await client.close()


async def test_unanswered_enquire_links_close_the_session() -> None:
    frames: list[bytes] = []

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(4096):
            frames.append(data)
        writer.close()

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reasons: list[BaseException | None] = []
    client = await connect(
        "127.0.0.1",
        port,
        enquire_link_s=0.05,
        response_timeout=0.1,
        enquire_link_misses=2,
        on_close=lambda _s, reason: reasons.append(reason),
    )
    await asyncio.wait_for(client.wait_closed(), 3)
    assert isinstance(reasons[0], ResponseTimeout)
    sent = b"".join(frames)
    assert sent.count(bytes.fromhex("0000001000000015")) == 2  # two enquire_link, no more
    server.close()
    await server.wait_closed()


async def test_unbind_closes_both(serve: Callable[..., Any]) -> None:
    server = await serve(on_request=answer_submits)
    client_reasons: list[BaseException | None] = []
    client = await connect(
        "127.0.0.1", server.port, on_close=lambda _s, r: client_reasons.append(r)
    )
    assert (await client.request(submit())).status == 0
    await client.unbind()
    assert client.closed and client_reasons == [None]
    await asyncio.wait_for(server.sessions[0].wait_closed(), 2)
    (closed_session, reason), *_ = server.closed
    assert closed_session is server.sessions[0]
    assert isinstance(reason, SessionClosed) and "unbind" in str(reason)
    with pytest.raises(SessionClosed):
        await client.request(submit())


async def test_unbind_from_peer_fails_pending_requests(serve: Callable[..., Any]) -> None:
    server = await serve(on_request=lambda s, p: None)  # never answers submits
    client = await connect("127.0.0.1", server.port)
    pending = asyncio.ensure_future(client.request(submit()))
    await server.connected.wait()
    await asyncio.sleep(0.05)
    await server.sessions[0].unbind(grace=0.05)
    with pytest.raises(SessionClosed):
        await pending
    await asyncio.wait_for(client.wait_closed(), 2)
    assert server.sessions[0].closed


async def _raw(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def _read_pdu(reader: asyncio.StreamReader) -> P.Pdu:
    header = await asyncio.wait_for(reader.readexactly(16), 2)
    length = struct.unpack(">I", header[:4])[0]
    return P.decode(header + await reader.readexactly(length - 16))


async def test_malformed_pdus_get_generic_nack_and_the_session_survives(
    serve: Callable[..., Any],
) -> None:
    def handler(session: Session, pdu: P.Pdu) -> P.Pdu:
        if isinstance(pdu, P.QuerySm):
            raise RuntimeError("handler bug")
        return answer_submits(session, pdu)

    server = await serve(on_request=handler)
    other = await connect("127.0.0.1", server.port)  # a second client, must not be disturbed
    reader, writer = await _raw(server.port)
    writer.write(struct.pack(">IIII", 16, 0x77, 0, 5))  # unknown command id
    nack = await _read_pdu(reader)
    assert isinstance(nack, P.GenericNack)
    assert (nack.status, nack.sequence) == (S.ESME_RINVCMDID, 5)
    long_source = P.encode(submit(1))[:19] + b"1" * 30 + b"\x00"
    writer.write(struct.pack(">I", len(long_source)) + long_source[4:])
    nack = await _read_pdu(reader)
    assert isinstance(nack, P.GenericNack) and nack.status == S.ESME_RINVSRCADR
    truncated = P.encode(P.SubmitSm(sequence=6, source_addr="ACME"))[:24]
    writer.write(struct.pack(">I", len(truncated)) + truncated[4:])
    nack = await _read_pdu(reader)
    assert (nack.status, nack.sequence) == (S.ESME_RINVCMDLEN, 6)
    writer.write(P.encode(P.QuerySm(message_id="x", sequence=7)))  # the handler raises
    error = await _read_pdu(reader)
    assert isinstance(error, P.QuerySmResp) and error.status == S.ESME_RSYSERR
    writer.write(P.encode(P.GenericNack(sequence=99)))  # a stray nack is not answered
    writer.write(P.encode(submit(8)) + P.encode(P.EnquireLink(sequence=9)))
    resp = await _read_pdu(reader)
    assert isinstance(resp, P.SubmitSmResp) and resp.message_id == "id-8"
    assert isinstance(await _read_pdu(reader), P.EnquireLinkResp)
    assert server.sessions[1].nacked == 3
    # a command_length that cannot be framed: generic_nack, then the connection is closed
    writer.write(struct.pack(">IIII", 8, 4, 0, 10))
    nack = await _read_pdu(reader)
    assert (nack.status, nack.sequence) == (S.ESME_RINVCMDLEN, 10)
    assert await asyncio.wait_for(reader.read(), 2) == b""
    writer.close()
    huge_reader, huge_writer = await _raw(server.port)
    huge_writer.write(struct.pack(">IIII", 10_000_000, 4, 0, 11))
    nack = await _read_pdu(huge_reader)
    assert nack.status == S.ESME_RINVCMDLEN
    huge_writer.close()
    assert (await other.request(submit(12))).status == 0
    await other.close()


async def test_bad_response_fails_its_request_fast(serve: Callable[..., Any]) -> None:
    async def evil(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        header = await reader.readexactly(16)
        body = await reader.readexactly(struct.unpack(">I", header[:4])[0] - 16)
        seq = P.decode(header + body).sequence
        broken = b"x" * 80 + b"\x00"  # message_id over 65 octets
        writer.write(struct.pack(">IIII", 16 + len(broken), 0x80000004, 0, seq) + broken)
        await reader.read()

    server = await asyncio.start_server(evil, "127.0.0.1", 0)
    client = await connect("127.0.0.1", server.sockets[0].getsockname()[1])
    with pytest.raises(P.PduError) as info:
        await client.request(submit(), response_timeout=5)
    assert info.value.status == S.ESME_RINVMSGID
    assert not client.closed
    await client.close()
    server.close()
    await server.wait_closed()


async def test_close_fails_pending_requests_clearly(serve: Callable[..., Any]) -> None:
    server = await serve(on_request=lambda s, p: None)
    closed: list[BaseException | None] = []
    client = await connect(
        "127.0.0.1", server.port, window=3, on_close=lambda _s, r: closed.append(r)
    )
    tasks = [asyncio.ensure_future(client.request(submit(i))) for i in range(5)]
    await asyncio.sleep(0.05)
    assert client.outstanding == 3  # two wait for the window
    await client.close()
    for task in tasks:
        with pytest.raises(SessionClosed, match="closed"):
            await task
    assert closed == [None] and client.outstanding == 0
    await client.close()  # idempotent
    assert len(closed) == 1


async def test_peer_disconnect_closes_with_reason(serve: Callable[..., Any]) -> None:
    server = await serve(on_request=lambda s, p: None)
    reasons: list[BaseException | None] = []
    client = await connect("127.0.0.1", server.port, on_close=lambda _s, r: reasons.append(r))
    pending = asyncio.ensure_future(client.request(submit()))
    await server.connected.wait()
    await asyncio.sleep(0.05)
    server.sessions[0]._writer.transport.abort()
    with pytest.raises(SessionClosed):
        await pending
    assert client.closed and reasons and reasons[0] is not None


async def test_tcp_nodelay_on_both_sockets(serve: Callable[..., Any]) -> None:
    server = await serve()
    client = await connect("127.0.0.1", server.port)
    await server.connected.wait()
    for session in (client, server.sessions[0]):
        sock = session._writer.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    await client.close()


async def test_pause_holds_new_requests(serve: Callable[..., Any]) -> None:
    def throttle_first(session: Session, pdu: P.Pdu) -> P.Pdu:
        if pdu.sequence == 1:
            return P.SubmitSmResp(status=S.ESME_RTHROTTLED)
        return answer_submits(session, pdu)

    server = await serve(on_request=throttle_first)
    client = await connect("127.0.0.1", server.port)
    loop = asyncio.get_running_loop()
    first = await client.request(submit(1))
    assert first.status == S.ESME_RTHROTTLED
    assert P.classify_status(first.status) is P.StatusKind.THROTTLE
    client.pause(0.3)
    start = loop.time()
    second = await client.request(submit(2))
    assert second.status == 0 and loop.time() - start >= 0.29
    await client.close()


async def test_throughput_paces_requests(serve: Callable[..., Any]) -> None:
    server = await serve(on_request=answer_submits)
    client = await connect("127.0.0.1", server.port, throughput=50, window=10)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.gather(*(client.request(submit(i)) for i in range(11)))
    assert loop.time() - start >= 0.19  # 11 requests at 50/s: the last leaves after 0.2 s
    await client.close()


async def test_sequence_numbers_wrap(serve: Callable[..., Any]) -> None:
    server = await serve(on_request=answer_submits)
    client = await connect("127.0.0.1", server.port)
    client._seq = P.MAX_SEQUENCE - 1
    sequences = []
    for i in range(3):
        resp = await client.request(submit(i))
        sequences.append(resp.sequence)
    assert sequences == [P.MAX_SEQUENCE, 1, 2]
    await client.close()


async def test_receipts_interleaved_with_submits(serve: Callable[..., Any]) -> None:
    """Server submits' answers go with deliver_sm receipts back over the same session."""
    receipts: list[P.DeliverSm] = []
    all_in = asyncio.Event()

    async def smsc(session: Session, pdu: P.Pdu) -> P.Pdu:
        assert isinstance(pdu, P.SubmitSm)
        message_id = pdu.short_message.decode()
        asyncio.get_running_loop().create_task(
            session.request(
                P.DeliverSm(
                    esm_class=4,
                    short_message=f"id:{message_id} stat:DELIVRD".encode(),
                    tlvs={P.Tag.RECEIPTED_MESSAGE_ID: P.cstr(message_id)},
                )
            )
        )
        return P.SubmitSmResp(message_id=message_id)

    def esme(_session: Session, pdu: P.Pdu) -> P.Pdu:
        assert isinstance(pdu, P.DeliverSm)
        receipts.append(pdu)
        if len(receipts) == 2000:
            all_in.set()
        return P.DeliverSmResp()

    server = await serve(on_request=smsc, window=50)
    client = await connect("127.0.0.1", server.port, window=20, on_request=esme)
    loop = asyncio.get_running_loop()
    start = loop.time()
    results = await asyncio.gather(*(client.request(submit(i)) for i in range(2000)))
    assert all(r.status == 0 for r in results)
    await asyncio.wait_for(all_in.wait(), 10)
    elapsed = loop.time() - start
    assert len(receipts) == 2000
    assert sorted(P.tlv_cstr(r.tlvs, P.Tag.RECEIPTED_MESSAGE_ID) or "" for r in receipts) == sorted(
        str(i) for i in range(2000)
    )
    print(f"\n  2000 submits + 2000 receipts over loopback in {elapsed:.2f} s")
    await client.unbind()


async def test_smpplib_client_against_our_session(serve: Callable[..., Any]) -> None:
    """A client that is not ours (smpplib, synchronous, in a thread) binds and submits."""
    client_module = pytest.importorskip("smpplib.client")

    def handler(_session: Session, pdu: P.Pdu) -> P.Pdu:
        if isinstance(pdu, P.BindTransceiver):
            return P.BindTransceiverResp(system_id="MTA")
        return answer_submits(_session, pdu)

    server = await serve(on_request=handler)
    responses: list[Any] = []

    def run() -> None:
        client = client_module.Client(
            "127.0.0.1", server.port, timeout=5, allow_unknown_opt_params=True
        )
        client.set_message_sent_handler(lambda pdu: responses.append(pdu))
        client.connect()
        client.bind_transceiver(system_id="acct", password="pw")
        for i in range(3):
            client.send_message(
                source_addr="ACME", destination_addr="905332141354", short_message=b"%d" % i
            )
            client.read_once()
        client.unbind()
        client.disconnect()

    await asyncio.wait_for(asyncio.to_thread(run), 20)
    assert [r.message_id for r in responses] == [b"id-0", b"id-1", b"id-2"]
    await asyncio.wait_for(server.sessions[0].wait_closed(), 2)


async def test_handler_failures_answer_rsyserr(serve: Callable[..., Any]) -> None:
    async def handler(_session: Session, pdu: P.Pdu) -> P.Pdu:
        if isinstance(pdu, P.QuerySm):
            raise RuntimeError("async handler bug")
        if isinstance(pdu, P.CancelSm):
            return P.CancelSmResp(status=-1)  # cannot be encoded
        return answer_submits(_session, pdu)

    server = await serve(on_request=handler)
    client = await connect("127.0.0.1", server.port)
    query = await client.request(P.QuerySm(message_id="x"))
    assert isinstance(query, P.QuerySmResp) and query.status == S.ESME_RSYSERR
    cancel = await client.request(P.CancelSm(message_id="x"))
    assert isinstance(cancel, P.CancelSmResp) and cancel.status == S.ESME_RSYSERR
    assert (await client.request(submit(1))).status == 0
    assert not server.sessions[0].closed
    await client.close()


async def test_requests_without_handler_are_refused(serve: Callable[..., Any]) -> None:
    server = await serve()
    client = await connect("127.0.0.1", server.port)
    resp = await client.request(submit())
    assert isinstance(resp, P.SubmitSmResp) and resp.status == S.ESME_RINVCMDID
    await client.close()


async def test_close_wakes_requests_held_by_a_pause(serve: Callable[..., Any]) -> None:
    server = await serve(on_request=answer_submits)
    client = await connect("127.0.0.1", server.port)
    client.pause(30)
    held = asyncio.ensure_future(client.request(submit()))
    await asyncio.sleep(0.05)
    await client.close()
    with pytest.raises(SessionClosed):
        await asyncio.wait_for(held, 2)


async def test_unbind_lets_outstanding_requests_finish(serve: Callable[..., Any]) -> None:
    async def slow(session: Session, pdu: P.Pdu) -> P.Pdu:
        await asyncio.sleep(0.1)
        return answer_submits(session, pdu)

    server = await serve(on_request=slow)
    client = await connect("127.0.0.1", server.port, window=5)
    in_flight = [asyncio.ensure_future(client.request(submit(i))) for i in range(5)]
    await asyncio.sleep(0.02)
    await client.unbind(grace=2)
    assert [t.result().status for t in in_flight] == [0] * 5
    assert client.closed
    await asyncio.wait_for(server.sessions[0].wait_closed(), 2)


async def test_start_call_answers_expires_in_deadline_order_and_closes(
    serve: Callable[..., Any],
) -> None:
    def hold_some(session: Session, pdu: P.Pdu) -> P.Pdu | None:
        assert isinstance(pdu, P.SubmitSm)
        return None if pdu.short_message.startswith(b"hold") else answer_submits(session, pdu)

    server = await serve(on_request=hold_some)
    client = await connect("127.0.0.1", server.port, window=4, response_timeout=5)
    loop = asyncio.get_running_loop()
    answers: dict[str, tuple[float, P.Pdu | None, BaseException | None]] = {}
    long_done = asyncio.Event()

    def hook(name: str) -> Callable[[P.Pdu | None, BaseException | None], None]:
        def on_answer(pdu: P.Pdu | None, error: BaseException | None) -> None:
            assert name not in answers  # called once
            answers[name] = (loop.time(), pdu, error)
            if name == "long":
                long_done.set()

        return on_answer

    start = loop.time()
    for name, pdu, timeout in [
        ("ok", submit(7), None),
        ("long", P.SubmitSm(short_message=b"hold-long"), 1.0),
        ("short", P.SubmitSm(short_message=b"hold-short"), 0.2),  # before "long" expires
        ("closed", P.SubmitSm(short_message=b"hold-closed"), None),
    ]:
        assert client.try_slot()
        client.start_call(pdu, hook(name), timeout)
    assert not client.try_slot()  # the window of 4 is full
    await asyncio.wait_for(long_done.wait(), 5)
    at, response, error = answers["ok"]
    assert isinstance(response, P.SubmitSmResp) and response.message_id == "id-7" and not error
    at, response, error = answers["short"]
    assert isinstance(error, ResponseTimeout) and response is None
    assert 0.19 <= at - start < 0.9
    at, response, error = answers["long"]
    assert isinstance(error, ResponseTimeout) and 0.99 <= at - start < 4.0
    assert client.outstanding == 1 and client.try_slot()  # three slots came back
    client.start_call(P.SubmitSm(short_message=b"hold-too"), hook("too"))
    await client.close()
    assert isinstance(answers["closed"][2], SessionClosed)
    assert isinstance(answers["too"][2], SessionClosed) and client.outstanding == 0
    with pytest.raises(SessionClosed):
        client.start_call(submit(8), hook("late"))


async def test_answered_requests_leave_no_deadline_behind(serve: Callable[..., Any]) -> None:
    server = await serve(on_request=answer_submits)
    client = await connect("127.0.0.1", server.port, window=20)
    await asyncio.gather(*(client.request(submit(i)) for i in range(300)))
    assert client.outstanding == 0 and len(client._deadlines) <= 20
    await client.close()


async def test_frames_split_anywhere_are_read_whole(serve: Callable[..., Any]) -> None:
    server = await serve(on_request=answer_submits)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    frames = b"".join(
        P.encode(P.SubmitSm(short_message=b"%d" % i, sequence=i)) for i in range(1, 7)
    )
    cuts = [0, 1, 5, 16, 17, 40, 90, 91, 200, len(frames)]  # inside headers, bodies, between
    for a, b in itertools.pairwise(cuts):
        writer.write(frames[a:b])
        await writer.drain()
        await asyncio.sleep(0.02)
    answers = []
    for _ in range(6):
        header = await asyncio.wait_for(reader.readexactly(16), 3)
        body = await reader.readexactly(int.from_bytes(header[:4], "big") - 16)
        answers.append(P.decode(header + body))
    assert [(a.sequence, a.message_id) for a in answers if isinstance(a, P.SubmitSmResp)] == [
        (i, f"id-{i}") for i in range(1, 7)
    ]
    writer.close()


def test_response_deadlines_under_uvloop() -> None:
    """uvloop (the processes' loop) rounds timers to the millisecond: every request still
    expires at its deadline or later, each once, without the timer being turned over."""
    uvloop = pytest.importorskip("uvloop")

    async def main() -> list[tuple[float, BaseException | None]]:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            Session(reader, writer, on_request=lambda _s, _p: None).start()  # never answers

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = await connect("127.0.0.1", port, window=100, response_timeout=0.05)
        loop = asyncio.get_running_loop()
        got: list[tuple[float, BaseException | None]] = []

        def note(sent: float, _response: P.Pdu | None, error: BaseException | None) -> None:
            got.append((loop.time() - sent, error))

        for _ in range(40):
            sent = loop.time()
            assert client.try_slot()
            client.start_call(P.SubmitSm(), functools.partial(note, sent))
            await asyncio.sleep(0.002)
        for _ in range(300):
            if len(got) == 40:
                break
            await asyncio.sleep(0.01)
        await client.close()
        server.close()
        return got

    got = uvloop.run(main())
    assert len(got) == 40
    assert all(isinstance(error, ResponseTimeout) for _, error in got)
    assert min(waited for waited, _ in got) >= 0.049
