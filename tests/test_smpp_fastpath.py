"""The fast paths of the SMPP layer against the plain ones they replace: the generated
per-class codec (mta.smpp.pdu.compiled) against the table-driven reference — the same PDU or
the same PduError (status, text, sequence, command id) for any frame, the same bytes or a
PduEncodeError for any PDU — and the receipt text written and read the fast way."""

from __future__ import annotations

import math
import string
import struct
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mta.adapters.smpp import SmppAdapter
from mta.adapters.smpp.validity import relative_time, validity_period

from mta.contract import SmsMessage
from mta.sdk import seconds_until
from mta.smpp import coding
from mta.smpp import pdu as P
from mta.smpp.pdu import frames
from mta.smpp.pdu.base import _BY_ID, _KIND
from mta.smpp.pdu.compiled import build_decoder
from mta.smpp.receipt import (
    _PRINTABLE,
    IdBase,
    MessageState,
    format_receipt,
    is_receipt,
    normalise_id,
    parse_receipt,
    quick_receipt,
    stat_name,
)
from mta.text import GSM7_BASIC, GSM7_EXTENSION, is_gsm7

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


# --- receipts: the fast formatting and reading against the plain ones ----------------------


def _reference_receipt(
    message_id: str,
    state: MessageState,
    submit_date: datetime,
    done_date: datetime,
    err: int,
    text: str,
    submitted: int,
    delivered: int | None,
) -> bytes:
    """format_receipt's text as it was written before it was made fast."""
    if delivered is None:
        delivered = submitted if state is MessageState.DELIVERED else 0
    safe = "".join(c if c in _PRINTABLE else "?" for c in text[:20])
    return (
        f"id:{message_id} sub:{submitted:03d} dlvrd:{delivered:03d}"
        f" submit date:{submit_date:%y%m%d%H%M} done date:{done_date:%y%m%d%H%M}"
        f" stat:{stat_name(state)} err:{err:03d} text:{safe}"
    ).encode("ascii")


ZONES = [
    None,
    UTC,
    timezone(timedelta(hours=3)),
    ZoneInfo("Europe/Istanbul"),
    ZoneInfo("America/New_York"),
]


@FAST
@given(
    st.text(alphabet="0123456789abcdefABCDEF-", min_size=1, max_size=40),
    st.sampled_from(list(MessageState)),
    st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2090, 1, 1)),
    st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2090, 1, 1)),
    st.sampled_from(ZONES),
    st.integers(0, 999),
    st.text(max_size=30),
    st.integers(0, 999),
    st.one_of(st.none(), st.integers(0, 999)),
)
def test_format_receipt_is_byte_identical_to_the_plain_one(
    message_id: str,
    state: MessageState,
    submit: datetime,
    done: datetime,
    zone: Any,
    err: int,
    text: str,
    submitted: int,
    delivered: int | None,
) -> None:
    if zone is not None:  # wall times in a zone, folds and gaps included
        submit, done = submit.replace(tzinfo=zone), done.replace(tzinfo=zone, fold=1)
    expected = _reference_receipt(message_id, state, submit, done, err, text, submitted, delivered)
    for _ in range(2):  # the second time from the dates' cache
        short_message, tlvs = format_receipt(
            message_id,
            state,
            submit_date=submit,
            done_date=done,
            err=err,
            text=text,
            submitted=submitted,
            delivered=delivered,
        )
        assert short_message == expected
        assert tlvs == {
            P.Tag.RECEIPTED_MESSAGE_ID: message_id.encode() + b"\0",
            P.Tag.MESSAGE_STATE: bytes((state,)),
        }


@FAST
@given(
    st.lists(
        st.sampled_from(
            [
                "id:",
                " sub:",
                " dlvrd:",
                " submit date:",
                " done date:",
                " stat:",
                " err:",
                " text:",
                "DELIVRD",
                "undeliv",
                "ab12",
                "001",
                "2611221030",
                " ",
                "\xa0",
                "\x1c",
                "\x85",
                "\t",
                "\n",
                "é",
                "ÿ",
                "",
                "ID:",
                " Stat:",
            ]
        ),
        max_size=24,
    ),
    st.sampled_from([b"\x02", b"\x05", b"\x09", b"\x0b", b""]),
)
def test_quick_receipt_agrees_with_parse_receipt(pieces: list[str], state: bytes) -> None:
    standard = (
        "id:ab12 sub:001 dlvrd:001 submit date:2611221030 done date:2611221031 stat:DELIVRD"
        " err:000 text:hi"
    )
    for text in ("".join(pieces), standard + "".join(pieces)):
        short_message = text.encode("latin-1")
        tlvs: dict[int, bytes] = {P.Tag.RECEIPTED_MESSAGE_ID: b"ab12\0", P.Tag.MESSAGE_STATE: state}
        quick = quick_receipt(short_message, tlvs)
        if quick is None:
            continue
        full = parse_receipt(short_message, tlvs)
        assert full is not None
        assert quick == (full.message_id, full.state, full.stat, full.err, full.done_date)


def test_is_receipt_reads_the_message_type_bits() -> None:
    for esm_class in range(256):
        kind = esm_class & 0x3C
        assert is_receipt(esm_class) == (kind in (0x04, 0x20))


def test_response_frames_are_the_encoded_empty_responses() -> None:
    for cls in CLASSES:
        request = cls(sequence=77)
        for status in (0, 8, 0x58, 0xFFFFFFFF):
            assert P.response_frame(request, status) == P.encode(P.response_for(request, status))
    raw = P.RawPdu(raw_id=P.CommandId.SUBMIT_MULTI, sequence=5)
    assert P.response_frame(raw, 3) == P.encode(P.response_for(raw, 3))


def test_validity_period_as_computed_each_time() -> None:
    zone = ZoneInfo("Europe/Istanbul")
    now = datetime.now(zone)
    for value in (
        "",
        "bad",
        "20200101000",
        "202001010000",
        *((now + timedelta(minutes=m)).strftime("%Y%m%d%H%M") for m in (1, 90, 3000, 10**6)),
    ):
        for _ in range(2):  # the second from the caches
            before = _plain_validity(value, zone)
            got = validity_period(value, zone)
            assert got in (before, _plain_validity(value, zone)), value


def _plain_validity(value: str, zone: Any) -> str:
    left = seconds_until(value, zone)
    return "" if left is None else relative_time(math.ceil(left))


# --- the Send's per-message work ----------------------------------------------------------

GSM_TEXT = st.text(
    alphabet=st.sampled_from([*sorted(GSM7_BASIC | GSM7_EXTENSION), "é", "€", "ß", "😀", "Ω"]),
    max_size=200,
)


@FAST
@given(GSM_TEXT)
def test_encode_text_fast_gsm_path_gives_the_same_septets(text: str) -> None:
    if is_gsm7(text):
        expected = (0, text.translate(coding._ENCODE_MAP).encode("latin-1"))
    else:
        expected = (8, text.encode("utf-16-be", "surrogatepass"))
    assert coding.encode_text(text) == expected
    assert coding.gsm7_decode(expected[1]) == text or not is_gsm7(text)


def test_encode_text_fast_gsm_path_every_character() -> None:
    for code in range(0x3000):
        char = chr(code)
        if is_gsm7(char):
            assert coding.encode_text(char) == (0, coding.gsm7_encode(char)), repr(char)


def _reference_normalise_id(message_id: str, base: IdBase | str = IdBase.AUTO) -> str:
    """normalise_id as it was written before its fast path for ``auto``."""
    value = message_id.strip().strip("\0")
    base = IdBase(base)
    if base is IdBase.DEC and value.isascii() and value.isdigit():
        return str(int(value))
    hexa = bool(value) and frozenset(string.hexdigits).issuperset(value)
    if base is IdBase.HEX and hexa:
        return str(int(value, 16))
    if base is IdBase.AUTO and hexa:
        return value.lower().lstrip("0") or "0"
    return value


@FAST
@given(
    st.text(alphabet="0123456789abcdefABCDEFxX-_ \0\t", max_size=20),
    st.sampled_from([*IdBase, "auto", "hex", "dec"]),
)
def test_normalise_id_as_before(message_id: str, base: IdBase | str) -> None:
    assert normalise_id(message_id, base) == _reference_normalise_id(message_id, base)


def test_submit_sm_of_a_message_has_every_field_in_place() -> None:
    adapter = SmppAdapter(
        {
            "host": "127.0.0.1",
            "system_id": "acct",
            "service_type": "CMT",
            "dest_ton": 1,
            "dest_npi": 1,
        }
    )
    message = SmsMessage(
        mobileNumber="905332141354",
        text="Your code is 4821",
        sender="ACME",
        priority="yes",
        expireTime="209912312359",
    )
    job = adapter._job(message)
    (part,) = job.parts
    expected = P.SubmitSm(
        service_type="CMT",
        source_addr_ton=5,
        source_addr_npi=0,
        source_addr="ACME",
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr="905332141354",
        esm_class=0,
        protocol_id=0,
        priority_flag=1,
        schedule_delivery_time="",
        validity_period=part.pdu.validity_period,
        registered_delivery=1,
        replace_if_present_flag=0,
        data_coding=0,
        sm_default_msg_id=0,
        short_message=b"Your code is 4821",
        tlvs={},
    )
    assert part.pdu == expected and part.pdu.validity_period.endswith("000R")


@dataclass(slots=True)
class _Noted(P.SubmitSmResp):
    """A PDU class with a field that is not on the wire."""

    note: str = "kept"


def test_a_class_with_a_field_off_the_wire_is_built_by_its_init() -> None:
    decoder = build_decoder(_Noted, frames._decode_tlvs)
    frame = P.encode(P.SubmitSmResp(message_id="abc", sequence=9))
    pdu = decoder(frame, len(frame), 9, 0, P.CommandId.SUBMIT_SM_RESP)
    assert isinstance(pdu, _Noted) and pdu.message_id == "abc" and pdu.note == "kept"
    assert pdu.sequence == 9 and pdu.tlvs == {}
