"""Property-based fuzzing of the SMPP PDU decoder (hypothesis), and ``mta smpp-server`` fed
junk over real sockets: the decoder returns a PDU or raises :class:`~mta.smpp.pdu.PduError`,
never anything else, and the server stays up for everyone else."""

from __future__ import annotations

import asyncio
import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mta.smpp import pdu as P
from mta.smpp.session import Session
from tests.conftest import Env
from tests.test_smppserver import esme, smpp_env, start_server

__all__ = ["smpp_env"]  # the fixture, imported for the socket test

S = P.CommandStatus
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check(frame: bytes) -> None:
    """The decoder's contract on any bytes."""
    try:
        pdu = P.decode(frame)
    except P.PduError as exc:
        assert isinstance(exc.status, int) and exc.status != S.ESME_ROK
        return
    assert isinstance(pdu, P.Pdu)
    assert len(frame) >= 16 and struct.unpack_from(">L", frame)[0] == len(frame)
    # nothing decoded is larger than the frame it came from (a response may come without a
    # body: it then re-encodes as the empty PDU of its class)
    try:
        again = P.encode(pdu)
        empty = P.encode(type(pdu)())
    except P.PduEncodeError:
        return  # e.g. a RawPdu or a value our encoder refuses; decoding it was still safe
    assert len(again) <= max(len(frame), len(empty))


def _valid_frames() -> st.SearchStrategy[bytes]:
    text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=15)
    submit = st.builds(
        P.SubmitSm,
        source_addr=text,
        destination_addr=st.text(alphabet="0123456789", max_size=20),
        esm_class=st.integers(0, 255),
        data_coding=st.integers(0, 255),
        short_message=st.binary(max_size=254),
        tlvs=st.dictionaries(st.integers(0x1400, 0x14FF), st.binary(max_size=40), max_size=3),
    )
    bind = st.builds(P.BindTransceiver, system_id=text, password=text.map(lambda t: t[:8]))
    simple = st.sampled_from([P.EnquireLink(), P.Unbind(), P.GenericNack(), P.SubmitSmResp()])
    query = st.builds(P.QuerySm, message_id=text, source_addr=text)

    def encoded(pdu: P.Pdu, seq: int) -> bytes:
        pdu.sequence = seq
        return P.encode(pdu)

    return st.builds(encoded, st.one_of(submit, bind, simple, query), st.integers(1, 0x7FFFFFFF))


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes_decode_or_raise_pdu_error(data: bytes) -> None:
    _check(data)


@FUZZ
@given(st.binary(min_size=16, max_size=600), st.integers(0, 0xFFFFFFFF))
def test_any_header_with_a_matching_length(body: bytes, command_id: int) -> None:
    frame = struct.pack(">LL", len(body), command_id) + body[8:]
    frame = struct.pack(">L", len(frame)) + frame[4:]
    _check(frame)


@FUZZ
@given(_valid_frames(), st.data())
def test_truncated_and_mutated_valid_pdus(frame: bytes, data: st.DataObject) -> None:
    _check(frame)  # the valid one itself
    cut = data.draw(st.integers(0, len(frame)))
    _check(frame[:cut])  # truncated, its command_length now wrong
    _check(struct.pack(">L", cut) + frame[4:cut] if cut >= 4 else frame[:cut])  # fixed length
    mutated = bytearray(frame)
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(16, max(16, len(frame) - 1)))
        if at < len(mutated):
            mutated[at] = data.draw(st.integers(0, 255))
    _check(bytes(mutated))


@FUZZ
@given(_valid_frames(), st.integers(1, 0xFFFFFFFF))
def test_over_long_command_lengths_are_refused(frame: bytes, extra: int) -> None:
    length = (len(frame) + extra) & 0xFFFFFFFF
    lying = struct.pack(">L", length) + frame[4:]
    with pytest.raises(P.PduError) as caught:
        P.decode(lying)
    assert caught.value.status == S.ESME_RINVCMDLEN


def _junk(rng: random.Random) -> bytes:
    """One connection's worth of junk: random bytes, valid frames mutated, lying lengths."""
    kind = rng.randrange(4)
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 300))
    submit = P.SubmitSm(
        source_addr="ACME", destination_addr="905332141354", short_message=b"junk", sequence=7
    )
    frame = bytearray(P.encode(submit))
    if kind == 1:  # mutated body, length kept
        for _ in range(rng.randrange(1, 10)):
            frame[rng.randrange(16, len(frame))] = rng.randrange(256)
        return bytes(frame) * rng.randrange(1, 4)
    if kind == 2:  # a command_length beyond the limit
        return struct.pack(">L", rng.choice([70_000, 0xFFFFFFFF, 15, 0])) + bytes(frame[4:])
    return struct.pack(">LLLL", 16, rng.randrange(1 << 32), 0, 1) + rng.randbytes(8)


async def test_the_server_stays_up_when_fed_junk(smpp_env: Env) -> None:
    server = await start_server(smpp_env)
    good = await esme(server)
    rng = random.Random(20261127)

    async def feed(blob: bytes) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(blob)
        try:
            async with asyncio.timeout(0.5):
                await reader.read(65536)
        except (TimeoutError, ConnectionError):
            pass
        writer.close()

    for _ in range(4):
        await asyncio.gather(*(feed(_junk(rng)) for _ in range(50)))
    # a bound session fed a malformed PDU answers generic_nack and carries on
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    session = Session(reader, writer, enquire_link_s=0)
    session.start()
    bind = await session.request(P.BindTransceiver(system_id="acme", password="secret1"))
    assert bind.status == S.ESME_ROK
    writer.write(struct.pack(">LLLL", 16, 0x00000777, 0, 99))
    assert (await session.request(P.EnquireLink())).status == S.ESME_ROK
    assert session.unmatched == 1 and not session.closed  # its generic_nack, then on
    # the process and its other clients never noticed
    resp = await good.submit(b"still here")
    assert resp.status == 0 and b":" in resp.message_id
    await session.close()
    await good.close()
