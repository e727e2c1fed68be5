"""SMPP codec, text coding, long messages and receipts: round trips, spec bytes, bad input."""

from __future__ import annotations

import codecs
import contextlib
import struct
from datetime import datetime
from typing import Any

import pytest

from mta.contract import ApiStatus
from mta.smpp import pdu as P
from mta.smpp.coding import (
    CodingError,
    DataCoding,
    LongMode,
    Reassembler,
    concat_info,
    decode_text,
    encode_parts,
    encode_text,
    gsm7_decode,
    gsm7_encode,
    split_udh,
)
from mta.smpp.receipt import (
    IdBase,
    MessageState,
    api_status,
    format_receipt,
    id_twins,
    is_receipt,
    normalise_id,
    parse_receipt,
    parse_receipt_date,
    receipt_state,
    stat_name,
    state_from_stat,
    wants_receipt,
)
from mta.text import GSM7_BASIC, GSM7_EXTENSION, split

S = P.CommandStatus
GRIN = "\U0001f600"
EURO = "\u20ac"

# --- PDU round trips -------------------------------------------------------------------------

SAMPLES: list[P.Pdu] = [
    P.BindTransmitter(system_id="acct-key-1", password="secret", system_type="BULK", sequence=1),
    P.BindReceiver(system_id="r", password="p", addr_ton=1, addr_npi=1, address_range="90*"),
    P.BindTransceiver(system_id="t" * 15, password="p" * 8, system_type="s" * 12, sequence=3),
    P.BindTransmitterResp(system_id="SMSC", sequence=1, tlvs={P.Tag.SC_INTERFACE_VERSION: b"4"}),
    P.BindReceiverResp(system_id="SMSC", sequence=2),
    P.BindTransceiverResp(system_id="", sequence=3, status=S.ESME_RINVPASWD),
    P.Outbind(system_id="smsc", password="pw"),
    P.Unbind(sequence=9),
    P.UnbindResp(sequence=9),
    P.EnquireLink(sequence=0x7FFFFFFF),
    P.EnquireLinkResp(sequence=0x7FFFFFFF),
    P.GenericNack(sequence=4, status=S.ESME_RINVCMDID),
    P.SubmitSm(
        service_type="CMT",
        source_addr_ton=5,
        source_addr="ACME",
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr="905332141354",
        esm_class=0x40,
        protocol_id=0,
        priority_flag=1,
        schedule_delivery_time="000007000000000R",
        validity_period="260102030405000+",
        registered_delivery=1,
        data_coding=8,
        short_message=bytes(range(254)),
        sequence=77,
        tlvs={P.Tag.USER_MESSAGE_REFERENCE: P.u16(42), 0x1401: b"vendor"},
    ),
    P.SubmitSm(tlvs={P.Tag.MESSAGE_PAYLOAD: b"x" * 3000}, sequence=2),
    P.SubmitSmResp(message_id="a" * 64, sequence=77),
    P.DeliverSm(
        esm_class=4,
        source_addr="905332141354",
        destination_addr="ACME",
        short_message=b"id:1 stat:DELIVRD",
        tlvs={P.Tag.RECEIPTED_MESSAGE_ID: P.cstr("1"), P.Tag.MESSAGE_STATE: P.u8(2)},
    ),
    P.DeliverSmResp(sequence=5),
    P.DataSm(source_addr="a", destination_addr="b", data_coding=8, registered_delivery=1),
    P.DataSmResp(message_id="m1", sequence=3),
    P.QuerySm(message_id="abc", source_addr_ton=5, source_addr="ACME", sequence=11),
    P.QuerySmResp(message_id="abc", final_date="260102030405000+", message_state=2, error_code=0),
    P.CancelSm(message_id="abc", source_addr="ACME", destination_addr="9053", sequence=12),
    P.CancelSmResp(sequence=12, status=S.ESME_RCANCELFAIL),
    P.ReplaceSm(message_id="abc", source_addr="ACME", short_message=b"new text"),
    P.ReplaceSmResp(sequence=13),
    P.AlertNotification(source_addr="9053", esme_addr="ACME", tlvs={0x0422: b"\x00"}),
    P.RawPdu(raw_id=P.CommandId.SUBMIT_MULTI, body=b"\x00\x05\x00ACME\x00\x01", sequence=14),
    P.RawPdu(raw_id=P.CommandId.SUBMIT_MULTI_RESP, body=b"m\x00\x00", sequence=14),
]


@pytest.mark.parametrize("pdu", SAMPLES, ids=lambda p: p.name)
def test_round_trip(pdu: P.Pdu) -> None:
    frame = P.encode(pdu)
    assert struct.unpack(">I", frame[:4])[0] == len(frame)
    assert P.decode(frame) == pdu
    assert P.encode(P.decode(frame)) == frame


def test_every_command_id_has_a_class_or_raw_body() -> None:
    covered = {type(p).command_id for p in SAMPLES if not isinstance(p, P.RawPdu)}
    covered |= {p.raw_id for p in SAMPLES if isinstance(p, P.RawPdu)}
    assert covered == set(P.CommandId)


# --- known bytes -----------------------------------------------------------------------------

# bind_transmitter, sequence 1: system_id "SMPP3TEST", password "secret08", system_type
# "SUBMIT1", interface_version 0x34, addr_ton 1, addr_npi 1, address_range "" (spec §4.1.1 layout)
BIND_TRANSMITTER = bytes.fromhex(
    "0000002f"  # command_length 47
    "00000002"  # bind_transmitter
    "00000000"  # command_status
    "00000001"  # sequence_number
    "534d50503354455354 00"  # "SMPP3TEST\0"
    "7365637265743038 00"  # "secret08\0"
    "5355424d495431 00"  # "SUBMIT1\0"
    "34"  # interface_version
    "01 01"  # addr_ton, addr_npi
    "00"  # address_range ""
)


def test_decode_known_bind_transmitter() -> None:
    pdu = P.decode(BIND_TRANSMITTER)
    assert pdu == P.BindTransmitter(
        system_id="SMPP3TEST",
        password="secret08",
        system_type="SUBMIT1",
        interface_version=0x34,
        addr_ton=1,
        addr_npi=1,
        address_range="",
        sequence=1,
    )
    assert P.encode(pdu) == BIND_TRANSMITTER


def test_decode_known_submit_sm_and_response() -> None:
    frame = bytes.fromhex(
        "00000036 00000004 00000000 00000005"  # length 54, submit_sm, status 0, sequence 5
        "00"  # service_type ""
        "05 00 41434d45 00"  # source TON 5, NPI 0, "ACME"
        "01 01 393035333332313431333534 00"  # dest TON 1, NPI 1, "905332141354"
        "00 00 00"  # esm_class, protocol_id, priority_flag
        "00 00"  # schedule_delivery_time "", validity_period ""
        "01 00 00 00"  # registered_delivery 1, replace 0, data_coding 0, sm_default_msg_id 0
        "05 68656c6c6f"  # sm_length 5, "hello"
    )
    pdu = P.decode(frame)
    assert isinstance(pdu, P.SubmitSm)
    assert (pdu.sequence, pdu.source_addr_ton, pdu.source_addr) == (5, 5, "ACME")
    assert (pdu.dest_addr_ton, pdu.dest_addr_npi, pdu.destination_addr) == (1, 1, "905332141354")
    assert (pdu.registered_delivery, pdu.short_message, pdu.tlvs) == (1, b"hello", {})
    resp = P.decode(bytes.fromhex("00000019 80000004 00000000 00000005 3132333435363738 00"))
    assert resp == P.SubmitSmResp(message_id="12345678", sequence=5)


def test_enquire_link_and_generic_nack_bytes() -> None:
    assert P.encode(P.EnquireLink(sequence=1)) == bytes.fromhex("00000010000000150000000000000001")
    nack = P.generic_nack(S.ESME_RINVCMDID, 9)
    assert P.encode(nack) == bytes.fromhex("00000010800000000000000300000009")


def test_error_response_without_body_is_tolerated() -> None:
    for cid in (0x80000004, 0x80000003, 0x80000009, 0x80000103):
        frame = struct.pack(">IIII", 16, cid, S.ESME_RTHROTTLED, 8)
        pdu = P.decode(frame)
        assert pdu.status == S.ESME_RTHROTTLED and pdu.sequence == 8
        assert getattr(pdu, "message_id", getattr(pdu, "system_id", "")) == ""


# --- malformed input -------------------------------------------------------------------------


def _frame(cid: int, body: bytes, seq: int = 7, length: int | None = None) -> bytes:
    total = 16 + len(body) if length is None else length
    return struct.pack(">IIII", total, cid, 0, seq) + body


def _submit_body(**fields: Any) -> bytes:
    return P.encode(P.SubmitSm(**fields))[16:]


@pytest.mark.parametrize(
    ("frame", "status", "seq"),
    [
        (b"\x00\x00\x00\x10\x00\x00", S.ESME_RINVCMDLEN, None),
        (_frame(0x15, b"", length=20), S.ESME_RINVCMDLEN, 7),
        (_frame(0x15, b"", length=12), S.ESME_RINVCMDLEN, 7),
        (_frame(0x77, b""), S.ESME_RINVCMDID, 7),
        (_frame(0x80000077, b""), S.ESME_RINVCMDID, 7),
        (_frame(0x04, b""), S.ESME_RINVCMDLEN, 7),  # a request needs its body
        (_frame(0x04, _submit_body()[:10]), S.ESME_RINVCMDLEN, 7),  # truncated
        (_frame(0x02, b"sys\x00pw"), S.ESME_RINVCMDLEN, 7),  # C-string without NUL
        (_frame(0x02, b"x" * 20 + b"\x00pw\x00\x00\x34\x00\x00\x00"), S.ESME_RINVSYSID, 7),
        (_frame(0x02, b"s\x00" + b"p" * 9 + b"\x00\x00\x34\x00\x00\x00"), S.ESME_RINVPASWD, 7),
        (_frame(0x04, b"\x00\x00\x00" + b"1" * 21 + b"\x00"), S.ESME_RINVSRCADR, 7),
        (_frame(0x04, b"\x00\x00\x00A\x00\x01\x01" + b"9" * 30 + b"\x00"), S.ESME_RINVDSTADR, 7),
        (_frame(0x04, _submit_body(short_message=b"abc")[:-2]), S.ESME_RINVMSGLEN, 7),
        (_frame(0x04, _submit_body() + b"\x02\x04"), S.ESME_RINVOPTPARSTREAM, 7),
        (_frame(0x04, _submit_body() + b"\x02\x04\x00\x05ab"), S.ESME_RINVOPTPARSTREAM, 7),
        (_frame(0x05, _submit_body() + b"\x04\x27\x00\x02\x00\x02"), S.ESME_RINVPARLEN, 7),
        (_frame(0x04, _submit_body() + b"\x02\x0c\x00\x01\x07"), S.ESME_RINVPARLEN, 7),
        (_frame(0x80000004, b"x" * 70 + b"\x00"), S.ESME_RINVMSGID, 7),
    ],
)
def test_malformed_frames_raise_with_status(frame: bytes, status: int, seq: int | None) -> None:
    with pytest.raises(P.PduError) as info:
        P.decode(frame)
    assert info.value.status == status, info.value
    assert info.value.sequence == seq


def test_garbage_never_escapes_as_other_errors() -> None:
    import random

    rng = random.Random(3)
    good = [P.encode(p) for p in SAMPLES]
    for _ in range(3000):
        frame = bytearray(rng.choice(good))
        for _ in range(rng.randint(1, 4)):
            frame[rng.randrange(len(frame))] = rng.randrange(256)
        if rng.random() < 0.3:
            frame = frame[: rng.randrange(len(frame) + 1)]
        with contextlib.suppress(P.PduError):
            P.decode(bytes(frame))


def test_encode_rejects_what_does_not_fit() -> None:
    with pytest.raises(P.PduEncodeError):
        P.encode(P.BindTransmitter(system_id="x" * 16))
    with pytest.raises(P.PduEncodeError):
        P.encode(P.SubmitSm(short_message=b"x" * 255))
    with pytest.raises(P.PduEncodeError):
        P.encode(P.SubmitSm(source_addr="a\0b"))
    with pytest.raises(P.PduEncodeError):
        P.encode(P.SubmitSm(esm_class=256))
    with pytest.raises(P.PduEncodeError):
        P.encode(P.SubmitSm(destination_addr="\u015f"))


# --- TLVs, statuses, helpers -----------------------------------------------------------------


def test_tlvs_generic_and_typed_access() -> None:
    pdu = P.DeliverSm(
        tlvs={
            P.Tag.RECEIPTED_MESSAGE_ID: P.cstr("1a2b"),
            P.Tag.MESSAGE_STATE: P.u8(5),
            P.Tag.NETWORK_ERROR_CODE: b"\x03\x00\x45",
            P.Tag.SAR_MSG_REF_NUM: P.u16(0xBEEF),
            0x1500: b"",  # unknown, empty: kept
            0x2001: b"\x01\x02\x03",  # unknown vendor TLV: kept
        }
    )
    back = P.decode(P.encode(pdu))
    assert back.tlvs == pdu.tlvs
    assert P.tlv_cstr(back.tlvs, P.Tag.RECEIPTED_MESSAGE_ID) == "1a2b"
    assert P.tlv_int(back.tlvs, P.Tag.MESSAGE_STATE) == 5
    assert P.tlv_int(back.tlvs, P.Tag.SAR_MSG_REF_NUM) == 0xBEEF
    assert P.tlv_int(back.tlvs, 0x1500) is None
    assert P.tlv_cstr({1: b"no-nul"}, 1) == "no-nul"
    assert P.tlv_int(back.tlvs, 0x7777) is None


def test_status_values_names_and_classes() -> None:
    expected = {
        "ESME_ROK": 0x00,
        "ESME_RINVMSGLEN": 0x01,
        "ESME_RINVCMDLEN": 0x02,
        "ESME_RINVCMDID": 0x03,
        "ESME_RINVBNDSTS": 0x04,
        "ESME_RALYBND": 0x05,
        "ESME_RSYSERR": 0x08,
        "ESME_RINVSRCADR": 0x0A,
        "ESME_RINVDSTADR": 0x0B,
        "ESME_RINVMSGID": 0x0C,
        "ESME_RBINDFAIL": 0x0D,
        "ESME_RINVPASWD": 0x0E,
        "ESME_RINVSYSID": 0x0F,
        "ESME_RCANCELFAIL": 0x11,
        "ESME_RREPLACEFAIL": 0x13,
        "ESME_RMSGQFUL": 0x14,
        "ESME_RINVSERTYP": 0x15,
        "ESME_RINVESMCLASS": 0x43,
        "ESME_RINVSRCTON": 0x48,
        "ESME_RINVSRCNPI": 0x49,
        "ESME_RINVDSTTON": 0x50,
        "ESME_RINVDSTNPI": 0x51,
        "ESME_RTHROTTLED": 0x58,
        "ESME_RINVSCHED": 0x61,
        "ESME_RINVEXPIRY": 0x62,
        "ESME_RX_T_APPN": 0x64,
        "ESME_RX_P_APPN": 0x65,
        "ESME_RX_R_APPN": 0x66,
        "ESME_RQUERYFAIL": 0x67,
        "ESME_RINVOPTPARSTREAM": 0xC0,
        "ESME_ROPTPARNOTALLWD": 0xC1,
        "ESME_RINVPARLEN": 0xC2,
        "ESME_RMISSINGOPTPARAM": 0xC3,
        "ESME_RINVOPTPARAMVAL": 0xC4,
        "ESME_RDELIVERYFAILURE": 0xFE,
        "ESME_RUNKNOWNERR": 0xFF,
    }
    for name, value in expected.items():
        assert P.CommandStatus[name] == value
        assert P.status_name(value) == name
    assert P.status_name(0x401) == "0x00000401"
    K = P.StatusKind
    assert P.classify_status(0) is K.OK
    assert P.classify_status(S.ESME_RTHROTTLED) is K.THROTTLE
    assert P.classify_status(S.ESME_RMSGQFUL) is K.THROTTLE
    assert P.classify_status(S.ESME_RSYSERR) is K.RETRY
    assert P.classify_status(S.ESME_RUNKNOWNERR) is K.RETRY_FEW
    assert P.classify_status(0x401) is K.RETRY_FEW
    assert P.classify_status(S.ESME_RINVBNDSTS) is K.RECONNECT
    assert P.classify_status(S.ESME_RINVPASWD) is K.BIND
    assert P.classify_status(S.ESME_RINVMSGID) is K.KEEP_STATE
    for permanent in (0x0B, 0x0A, 0x48, 0x49, 0x50, 0x51, 0x01, 0x43, 0x62, 0xC0, 0xC4):
        assert P.classify_status(permanent) is K.PERMANENT
    assert P.command_name(4) == "submit_sm" and P.command_name(0x80000000) == "generic_nack"


def test_response_for() -> None:
    assert P.response_for(P.SubmitSm(sequence=5), S.ESME_RTHROTTLED) == P.SubmitSmResp(
        sequence=5, status=S.ESME_RTHROTTLED
    )
    assert isinstance(P.response_for(P.BindTransceiver(sequence=1)), P.BindTransceiverResp)
    assert isinstance(P.response_for(P.Outbind(sequence=1)), P.GenericNack)
    raw = P.response_for(P.RawPdu(raw_id=P.CommandId.SUBMIT_MULTI, sequence=3), 3)
    assert isinstance(raw, P.RawPdu) and raw.raw_id == P.CommandId.SUBMIT_MULTI_RESP


# --- GSM-7 and UCS-2 -------------------------------------------------------------------------


def test_gsm7_at_sign_is_octet_zero_and_extension_is_escaped() -> None:
    assert gsm7_encode("@") == b"\x00"
    assert gsm7_encode("$") == b"\x02"
    assert gsm7_encode(EURO + "{}[]~\\|^\f") == (
        b"\x1b\x65\x1b\x28\x1b\x29\x1b\x3c\x1b\x3e\x1b\x3d\x1b\x2f\x1b\x40\x1b\x14\x1b\x0a"
    )
    text = "@Hello {world} costs 5" + EURO + " @ 10:00 \u00a7\u00a4"
    data_coding, data = encode_text(text)
    assert data_coding == DataCoding.DEFAULT
    assert data[0] == 0 and b"\x1b\x65" in data
    assert decode_text(data, 0) == text
    back = P.decode(P.encode(P.SubmitSm(short_message=data)))
    assert isinstance(back, P.SubmitSm) and back.short_message == data


def test_gsm7_tables_agree_with_the_gsm0338_codec() -> None:
    codec = codecs.lookup("gsm03.38")
    every = "".join(sorted(GSM7_BASIC | GSM7_EXTENSION))
    assert gsm7_encode(every) == codec.encode(every)[0]
    assert gsm7_decode(codec.encode(every)[0]) == every == codec.decode(codec.encode(every)[0])[0]
    with pytest.raises(CodingError):
        gsm7_encode("\u015f")


def test_gsm7_decode_is_tolerant() -> None:
    assert gsm7_decode(b"a\x1b\x01b") == "a\u00a3b"  # unknown extension: basic char (0x01 = £)
    assert gsm7_decode(b"ab\x1b") == "ab"  # trailing ESC dropped
    assert gsm7_decode(b"a\x80") == "a\ufffd"


def test_ucs2_with_emoji_keeps_surrogate_pairs() -> None:
    text = "Merhaba \u015feker " + GRIN + " ok"
    data_coding, data = encode_text(text)
    assert data_coding == DataCoding.UCS2
    assert data == text.encode("utf-16-be")
    assert b"\xd8\x3d\xde\x00" in data  # U+1F600 as the pair D83D DE00
    assert decode_text(data, 8) == text


def test_other_codings_decode() -> None:
    assert decode_text("caf\u00e9".encode("latin-1"), 3) == "caf\u00e9"
    assert decode_text(b"plain", 1) == "plain"
    assert decode_text(b"\xff\x00", 4) == "\xff\x00"
    assert decode_text("\u0416".encode("iso8859_5"), 6) == "\u0416"
    assert decode_text(b"x\x00", 0xF0) == "x@"  # DCS class group, GSM 7-bit
    assert decode_text("\u015f".encode("utf-16-be"), 0x18) == "\u015f"  # DCS group, UCS-2
    assert decode_text(b"caf\xe9", 0, default_alphabet="latin-1") == "caf\u00e9"


# --- long messages ---------------------------------------------------------------------------

LONG_GSM = ("Line one { with } escapes " + EURO + " and @ signs. ") * 9
LONG_UCS2 = ("\u015eeker " + GRIN + " g\u00fczel ") * 20


@pytest.mark.parametrize("text", [LONG_GSM, LONG_UCS2])
def test_udh_parts(text: str) -> None:
    parts = encode_parts(text, "udh", ref=0x1A7)
    pieces = split(text)
    assert len(parts) == len(pieces) > 1
    for seq, (part, piece) in enumerate(zip(parts, pieces, strict=True), 1):
        assert part.esm_class & 0x40 and part.tlvs == {}
        assert part.short_message[:6] == bytes((5, 0, 3, 0xA7, len(parts), seq))
        user_data = part.short_message[6:]
        assert decode_text(user_data, part.data_coding) == piece
        if part.data_coding == DataCoding.UCS2:
            assert len(user_data) <= 134
            assert not 0xD8 <= user_data[-2] <= 0xDB  # never ends on a high surrogate
        else:
            assert len(user_data) <= 153
            assert user_data[-1] != 0x1B  # never ends between ESC and its code
        assert len(part.short_message) <= 254


def test_sar_parts() -> None:
    parts = encode_parts(LONG_GSM, LongMode.SAR, ref=0x1234, esm_class=3)
    assert len(parts) > 1
    for seq, part in enumerate(parts, 1):
        assert part.esm_class == 3 and part.data_coding == 0
        assert part.tlvs == {
            P.Tag.SAR_MSG_REF_NUM: b"\x12\x34",
            P.Tag.SAR_TOTAL_SEGMENTS: bytes((len(parts),)),
            P.Tag.SAR_SEGMENT_SEQNUM: bytes((seq,)),
        }
    assert "".join(decode_text(p.short_message, 0) for p in parts) == LONG_GSM


def test_payload_and_single_parts() -> None:
    (part,) = encode_parts(LONG_UCS2, "payload")
    assert part.short_message == b"" and part.data_coding == 8
    assert decode_text(part.tlvs[P.Tag.MESSAGE_PAYLOAD], 8) == LONG_UCS2
    frame = P.encode(P.SubmitSm(short_message=part.short_message, tlvs=part.tlvs))
    assert P.decode(frame).tlvs[P.Tag.MESSAGE_PAYLOAD] == part.tlvs[P.Tag.MESSAGE_PAYLOAD]
    for mode in LongMode:
        assert encode_parts("short @", mode) == [(0, 0, b"short \x00", {})]
    assert encode_parts("", "udh") == [(0, 0, b"", {})]
    with pytest.raises(CodingError):
        encode_parts("x" * 153 * 256, "udh")


def _feed(reassembler: Reassembler, key: Any, parts: list[Any]) -> list[Any]:
    return [reassembler.add(key, p[0], p[1], p[2], p[3]) for p in parts]


@pytest.mark.parametrize("mode", ["udh", "sar", "payload"])
@pytest.mark.parametrize("text", [LONG_GSM, LONG_UCS2, "one part " + GRIN])
def test_reassembly_round_trip(mode: str, text: str) -> None:
    parts = encode_parts(text, mode, ref=200)
    reassembler = Reassembler()
    results = _feed(reassembler, "905", list(reversed(parts)))
    assert results[:-1] == [None] * (len(parts) - 1)
    assert results[-1].text == text and results[-1].parts == len(parts)
    assert len(reassembler) == 0


def test_reassembly_udh_16_bit_reference_and_split_pairs() -> None:
    # a peer that splits an ESC pair and a surrogate pair between parts is still decoded right
    gsm = b"price 5\x1b" + b"\x65 ok"
    first, second = gsm[:8], gsm[8:]
    reassembler = Reassembler()
    udh = bytes.fromhex("06 08 04 BEEF 02 01".replace(" ", ""))
    assert reassembler.add("k", 0x40, 0, udh + first, {}) is None
    udh2 = udh[:-1] + b"\x02"
    assembled = reassembler.add("k", 0x40, 0, udh2 + second, {})
    assert assembled is not None and assembled.text == "price 5" + EURO + " ok"
    ucs2 = ("a" + GRIN).encode("utf-16-be")
    assert reassembler.add("u", 0x40, 8, b"\x05\x00\x03\x09\x02\x01" + ucs2[:4], {}) is None
    done = reassembler.add("u", 0x40, 8, b"\x05\x00\x03\x09\x02\x02" + ucs2[4:], {})
    assert done is not None and done.text == "a" + GRIN


def test_reassembly_keys_duplicates_reuse_and_bounds() -> None:
    now = [0.0]
    reassembler = Reassembler(timeout=10, max_pending=2, clock=lambda: now[0])
    a = encode_parts(LONG_GSM, "udh", ref=1)
    assert reassembler.add("alice", *a[0]) is None
    assert reassembler.add("bob", *a[0]) is None  # same ref, other sender: its own slot
    assert reassembler.add("alice", *a[0]) is None  # duplicate part kept once
    assert len(reassembler) == 2
    # same ref with a different total restarts alice's message
    other = encode_parts("x" * 200, "udh", ref=1)
    assert len(other) != len(a)
    assert reassembler.add("alice", *other[0]) is None
    last = [reassembler.add("alice", *p) for p in other[1:]][-1]
    assert last is not None and last.text == "x" * 200
    # a third waiting message evicts the oldest (bounded)
    assert reassembler.add("carol", *a[0]) is None
    assert reassembler.add("dave", *a[0]) is None
    assert len(reassembler) == 2 and reassembler.dropped == 1
    now[0] = 11.0
    assert sorted(reassembler.expire()) == [("carol", 1), ("dave", 1)]
    assert len(reassembler) == 0


def test_reassembly_rejects_broken_udh_and_numbering() -> None:
    reassembler = Reassembler()
    with pytest.raises(CodingError):
        reassembler.add("k", 0x40, 0, b"\x09\x00\x03", {})  # UDH longer than the data
    with pytest.raises(CodingError):
        reassembler.add("k", 0x40, 0, b"\x05\x00\x03\x01\x02\x03abc", {})  # part 3 of 2
    with pytest.raises(CodingError):
        reassembler.add("k", 0, 0, b"abc", {P.Tag.SAR_TOTAL_SEGMENTS: b"\x00"})
    with pytest.raises(CodingError):
        split_udh(b"")
    # a UDH without a concatenation IE (e.g. port addressing) is a single message
    assert concat_info(0x40, b"\x04\x05\x02\x0b\x84hi", {}).data == b"hi"


# --- receipts --------------------------------------------------------------------------------


def test_receipt_from_text_only() -> None:
    text = (
        b"id:0A1B2C3D sub:001 dlvrd:001 submit date:2601021030 done date:260102103112"
        b" stat:DELIVRD err:000 text:Hello there"
    )
    receipt = parse_receipt(text)
    assert receipt is not None
    assert receipt.message_id == "0A1B2C3D" and receipt.state is MessageState.DELIVERED
    assert (receipt.submitted, receipt.delivered, receipt.err) == (1, 1, "000")
    assert receipt.submit_date == "2601021030" and receipt.done_date == "260102103112"
    assert receipt.text == "Hello there" and receipt.final
    assert receipt.api_status() is ApiStatus.DELIVERED
    assert parse_receipt_date(receipt.submit_date) == datetime(2026, 1, 2, 10, 30)
    assert parse_receipt_date(receipt.done_date) == datetime(2026, 1, 2, 10, 31, 12)
    assert parse_receipt_date("26010") is None


def test_receipt_text_is_read_tolerantly() -> None:
    receipt = parse_receipt("ID:  12345 Stat:undeliv Err:45 Submit_Date:2601021030 Text:stat:x")
    assert receipt is not None
    assert receipt.message_id == "12345" and receipt.state is MessageState.UNDELIVERABLE
    assert receipt.err == "45" and receipt.submitted is None and receipt.text == "stat:x"
    assert receipt.api_status() is ApiStatus.FAIL
    assert parse_receipt(b"no receipt here") is None
    weird = parse_receipt("id:9 stat:WHATEVER")
    assert weird is not None and weird.state is None and weird.api_status() is ApiStatus.WAITING


def test_receipt_tlvs_win_over_text() -> None:
    tlvs: dict[int, bytes] = {
        P.Tag.RECEIPTED_MESSAGE_ID: P.cstr("1e240"),  # hex, while the text says decimal
        P.Tag.MESSAGE_STATE: P.u8(3),
        P.Tag.NETWORK_ERROR_CODE: b"\x03\x00\x0b",
    }
    receipt = parse_receipt(b"id:123456 stat:DELIVRD", tlvs)
    assert receipt is not None
    assert receipt.message_id == "1e240" and receipt.text_id == "123456"
    assert receipt.state is MessageState.EXPIRED and receipt.stat == "DELIVRD"
    assert receipt.api_status() is ApiStatus.TIMEOUT
    tlv_only = parse_receipt(b"", tlvs)
    assert tlv_only is not None and tlv_only.stat == "EXPIRED" and tlv_only.err == "11"
    # both readings of the id agree once normalised with their own bases
    assert normalise_id(receipt.message_id, "hex") == normalise_id(receipt.text_id, "dec")


def test_message_state_names_and_api_mapping() -> None:
    names = {1: "ENROUTE", 2: "DELIVRD", 3: "EXPIRED", 4: "DELETED", 5: "UNDELIV"}
    names |= {6: "ACCEPTD", 7: "UNKNOWN", 8: "REJECTD", 0: "SCHEDLD"}
    for number, name in names.items():
        assert stat_name(number) == name
        assert state_from_stat(name.lower()) == number
    assert state_from_stat("Delivered") is MessageState.DELIVERED
    W, D, F, T = ApiStatus.WAITING, ApiStatus.DELIVERED, ApiStatus.FAIL, ApiStatus.TIMEOUT
    expected = {0: W, 1: W, 2: D, 3: T, 4: F, 5: F, 6: W, 7: W, 8: F, 9: F}
    assert {s: api_status(s) for s in expected} == expected
    assert api_status(MessageState.ACCEPTED, accepted=D) is D
    assert api_status(MessageState.UNKNOWN, unknown=F) is F
    assert api_status(None) is W
    assert is_receipt(0x04) and is_receipt(0x44) and is_receipt(0x20)
    assert not is_receipt(0x00) and not is_receipt(0x40) and not is_receipt(0x08)


def test_id_bases() -> None:
    assert normalise_id("1A", IdBase.HEX) == normalise_id("26", IdBase.DEC) == "26"
    assert normalise_id("001a", "hex") == "26"
    assert normalise_id(" 0026\0", "dec") == "26"
    assert normalise_id("00AB") == "ab"
    assert normalise_id("msg-XyZ") == "msg-XyZ"
    assert normalise_id("msg-XyZ", "hex") == "msg-XyZ"
    assert normalise_id("0") == "0"
    assert id_twins("26") == ("1a", "38")
    assert id_twins("1a") == ("26",)
    assert id_twins("msg-1") == ()
    # auto lookup: stored hex id, receipt in decimal
    stored = normalise_id("0001E240")
    assert stored != normalise_id("123456") and stored in id_twins("123456")


def test_format_receipt_for_the_server_side() -> None:
    when = datetime(2026, 1, 2, 10, 30, 59)
    short_message, tlvs = format_receipt(
        "abc123",
        MessageState.UNDELIVERABLE,
        submit_date=when,
        done_date=when,
        err=45,
        text="Hi @ all, your code is {1234} " + EURO,
        network_error=b"\x03\x00\x2d",
    )
    assert short_message == (
        b"id:abc123 sub:001 dlvrd:000 submit date:2601021030 done date:2601021030"
        b" stat:UNDELIV err:045 text:Hi ? all, your code "
    )
    receipt = parse_receipt(short_message, tlvs)
    assert receipt is not None
    assert receipt.message_id == "abc123" and receipt.state is MessageState.UNDELIVERABLE
    assert receipt.err == "045" and receipt.network_error == b"\x03\x00\x2d"
    frame = P.encode(P.DeliverSm(esm_class=4, short_message=short_message, tlvs=tlvs))
    assert P.decode(frame).tlvs == tlvs
    assert receipt_state("DELIVERED") is MessageState.DELIVERED
    assert receipt_state(ApiStatus.FAIL) is MessageState.UNDELIVERABLE
    assert receipt_state(ApiStatus.FAIL, rejected=True) is MessageState.REJECTED
    assert receipt_state(ApiStatus.TIMEOUT) is MessageState.EXPIRED
    assert receipt_state(ApiStatus.WAITING) is MessageState.ENROUTE
    assert wants_receipt(0x01, MessageState.DELIVERED)
    assert not wants_receipt(0x02, MessageState.DELIVERED)
    assert wants_receipt(0x02, MessageState.UNDELIVERABLE)
    assert not wants_receipt(0x00, MessageState.UNDELIVERABLE)
    assert not wants_receipt(0x01, MessageState.ENROUTE)
    assert wants_receipt(0x11, MessageState.ENROUTE)


# --- interop with smpplib (a codec that is not ours) -----------------------------------------

smpplib = pytest.importorskip("smpplib.smpp")


class _Sequencer:
    sequence = 0

    def next_sequence(self) -> int:
        self.sequence += 1
        return self.sequence


def test_smpplib_encodes_we_decode() -> None:
    client = _Sequencer()
    made = smpplib.make_pdu(
        "submit_sm",
        client=client,
        source_addr_ton=5,
        source_addr="ACME",
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr="905332141354",
        esm_class=0x40,
        registered_delivery=1,
        data_coding=8,
        short_message=b"\x05\x00\x03\x07\x02\x01" + "\u015f".encode("utf-16-be"),
        user_message_reference=99,
    )
    pdu = P.decode(made.generate())
    assert isinstance(pdu, P.SubmitSm) and pdu.sequence == made.sequence
    assert (pdu.source_addr, pdu.destination_addr, pdu.esm_class) == ("ACME", "905332141354", 64)
    assert P.tlv_int(pdu.tlvs, P.Tag.USER_MESSAGE_REFERENCE) == 99
    info = concat_info(pdu.esm_class, pdu.short_message, pdu.tlvs)
    assert (info.ref, info.total, info.seq) == (7, 2, 1)
    assert decode_text(info.data, pdu.data_coding) == "\u015f"

    bind = smpplib.make_pdu(
        "bind_transceiver",
        client=client,
        system_id="acct",
        password="pw",
        system_type="",
        interface_version=0x34,
        addr_ton=0,
        addr_npi=0,
        address_range="",
    )
    decoded = P.decode(bind.generate())
    assert decoded == P.BindTransceiver(system_id="acct", password="pw", sequence=bind.sequence)

    receipt = smpplib.make_pdu(
        "deliver_sm",
        client=client,
        esm_class=4,
        source_addr="905332141354",
        destination_addr="ACME",
        short_message=b"id:1E240 sub:001 dlvrd:001 stat:DELIVRD err:000",
        receipted_message_id="1E240",
        message_state=2,
    )
    got = P.decode(receipt.generate())
    assert isinstance(got, P.DeliverSm) and is_receipt(got.esm_class)
    parsed = parse_receipt(got.short_message, got.tlvs)
    assert parsed is not None and parsed.message_id == "1E240"
    assert parsed.state is MessageState.DELIVERED
    for name in ("enquire_link", "unbind"):
        assert P.decode(smpplib.make_pdu(name, client=client).generate()).name == name


def test_we_encode_smpplib_decodes() -> None:
    client = _Sequencer()
    parts = encode_parts(LONG_UCS2, "sar", ref=0x0102)
    submit = P.SubmitSm(
        source_addr_ton=5,
        source_addr="ACME",
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr="905332141354",
        registered_delivery=1,
        esm_class=parts[0].esm_class,
        data_coding=parts[0].data_coding,
        short_message=parts[0].short_message,
        tlvs=parts[0].tlvs,
        sequence=41,
    )
    theirs = smpplib.parse_pdu(P.encode(submit), client=client)
    assert theirs.command == "submit_sm" and theirs.sequence == 41
    assert theirs.source_addr == b"ACME" and theirs.destination_addr == b"905332141354"
    assert theirs.short_message == parts[0].short_message and theirs.data_coding == 8
    assert (theirs.sar_msg_ref_num, theirs.sar_total_segments, theirs.sar_segment_seqnum) == (
        0x0102,
        len(parts),
        1,
    )
    short_message, tlvs = format_receipt(
        "1e240",
        MessageState.DELIVERED,
        submit_date=datetime(2026, 1, 2),
        done_date=datetime(2026, 1, 2),
    )
    deliver = P.DeliverSm(esm_class=4, short_message=short_message, tlvs=tlvs, sequence=42)
    theirs = smpplib.parse_pdu(P.encode(deliver), client=client)
    assert theirs.command == "deliver_sm" and theirs.esm_class == 4
    assert theirs.receipted_message_id == b"1e240" and theirs.message_state == 2
    assert theirs.short_message == short_message
    resp = smpplib.parse_pdu(P.encode(P.SubmitSmResp(message_id="abc", sequence=41)), client=client)
    assert resp.command == "submit_sm_resp" and resp.message_id == b"abc" and resp.sequence == 41
    query = P.QuerySmResp(message_id="abc", final_date="", message_state=2, error_code=0)
    theirs = smpplib.parse_pdu(P.encode(query), client=client)
    assert theirs.command == "query_sm_resp" and theirs.message_state == 2
    nack = smpplib.parse_pdu(P.encode(P.generic_nack(S.ESME_RINVCMDID, 7)), client=client)
    assert nack.command == "generic_nack" and nack.status == 3 and nack.sequence == 7


# --- speed (printed, never asserted) ---------------------------------------------------------


def test_codec_speed_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    from mta.smpp.bench import codec_figures

    figures = codec_figures(seconds=0.2)
    with capsys.disabled():
        print()
        for name, value in figures.items():
            print(f"  {name:45s} {value:>12,.0f}/s")
