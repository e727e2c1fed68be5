"""The generated per-class codec (mta.smpp.pdu.compiled) against the table-driven reference:
the same PDU or the same PduError (status, text, sequence, command id) for any frame, the
same bytes or a PduEncodeError for any PDU; and the session's constant answers."""

from __future__ import annotations

import struct
from dataclasses import fields
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mta.smpp import pdu as P
from mta.smpp.pdu import frames
from mta.smpp.pdu.base import _BY_ID, _KIND

FAST = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CLASSES = sorted(_BY_ID.values(), key=lambda cls: cls.command_id)


def _outcome(decode: Any, frame: bytes) -> Any:
    try:
        pdu = decode(frame)
    except P.PduError as exc:
        return ("error", exc.status, exc.detail, exc.sequence, exc.command_id)
    return ("pdu", type(pdu), pdu)


def _same_decoding(frame: bytes) -> None:
    assert _outcome(P.decode, frame) == _outcome(frames.decode_generic, frame)


def _encoding(encode: Any, pdu: P.Pdu) -> Any:
    try:
        return encode(pdu)
    except P.PduEncodeError as exc:
        return ("error", type(exc.__cause__))


def _value(spec: tuple[str, int, int]) -> st.SearchStrategy[Any]:
    kind, size, _ = spec
    if kind == "c":  # sometimes too long or with a NUL, to reach the encoder's refusals
        return st.text(
            alphabet=st.characters(min_codepoint=0, max_codepoint=300), max_size=size + 2
        )
    if kind == "o":
        return st.binary(max_size=size + 2)
    top = {"B": 0xFF, "H": 0xFFFF, "I": 0xFFFFFFFF}[kind]
    return st.integers(-1, top + 1)


@st.composite
def _pdus(draw: st.DrawFn) -> P.Pdu:
    cls = draw(st.sampled_from(CLASSES))
    values = {f.name: draw(_value(f.metadata[_KIND])) for f in fields(cls) if _KIND in f.metadata}
    tlvs = draw(
        st.dictionaries(
            st.sampled_from([0x0427, 0x001E, 0x0423, 0x0424, 0x020C, 0x1400, 0x3000]),
            st.binary(max_size=6),
            max_size=3,
        )
    )
    seq = draw(st.integers(0, 0x7FFFFFFF))
    status = draw(st.integers(0, 0xFFFFFFFF))
    return cls(**values, sequence=seq, status=status, tlvs=tlvs)


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    """A valid frame of some class, then bytes flipped, cut or added, with the length fixed
    (or not) so every check of the decoders is reached."""
    frame = b""
    while not frame:
        try:
            frame = P.encode(draw(_pdus()))
        except P.PduEncodeError:
            continue
    data = bytearray(frame)
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["flip", "cut", "add", "zero"]))
        if action == "flip" and len(data) > 16:
            i = draw(st.integers(16, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        elif action == "cut" and len(data) > 16:
            del data[draw(st.integers(16, len(data) - 1)) :]
        elif action == "add":
            data += draw(st.binary(min_size=1, max_size=8))
        elif action == "zero" and len(data) > 16:
            data[draw(st.integers(16, len(data) - 1))] = 0
    if draw(st.booleans()):
        struct.pack_into(">I", data, 0, len(data))
    return bytes(data)


@FAST
@given(_mutated())
def test_generated_decoders_match_the_reference_on_mutated_frames(frame: bytes) -> None:
    _same_decoding(frame)


@FAST
@given(st.sampled_from(CLASSES), st.binary(max_size=300), st.integers(0, 0xFFFFFFFF))
def test_generated_decoders_match_the_reference_on_random_bodies(
    cls: type[P.Pdu], body: bytes, status: int
) -> None:
    frame = struct.pack(">IIII", 16 + len(body), cls.command_id, status, 7) + body
    _same_decoding(frame)


@FAST
@given(st.binary(max_size=200))
def test_generated_decoders_match_the_reference_on_random_bytes(data: bytes) -> None:
    _same_decoding(data)


@FAST
@given(_pdus())
def test_generated_encoders_match_the_reference(pdu: P.Pdu) -> None:
    assert _encoding(P.encode, pdu) == _encoding(frames.encode_generic, pdu)


def test_every_class_has_its_generated_functions() -> None:
    for cid, cls in _BY_ID.items():
        assert frames._DECODERS[cid] is not None
        assert frames._ENCODERS[cls] is not None


def test_encode_errors_name_the_same_field() -> None:
    pdu = P.SubmitSm(source_addr="x" * 21)
    for encode in (P.encode, frames.encode_generic):
        try:
            encode(pdu)
        except P.PduEncodeError as exc:
            assert str(exc) == "SubmitSm: field 4 'xxxxxxxxxxxxxxxxxxxxx' too long"
        else:
            raise AssertionError("not refused")
