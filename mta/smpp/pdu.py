"""SMPP 3.4 PDU codec: command ids, status codes, TLV tags, PDU dataclasses, encode and decode.

A frame is one whole PDU, header included: ``command_length`` (4 octets, counting itself),
``command_id``, ``command_status``, ``sequence_number``, then the mandatory body fields in
spec order and the optional TLVs (tag, length, value). Integers are big-endian, C-octet strings
are NUL-terminated with a maximum size that includes the NUL (docs/protocols.md §1.1-§1.4).

Decoding is strict and never trusts a length: every C-octet string must end within its maximum
size, every length is checked against what is left of the frame, and a frame that cannot be
decoded raises :class:`PduError` carrying the ``command_status`` to answer with (in a
``generic_nack`` or the request's ``_resp``) and the sequence number. TLVs are kept generically
(``tag → value bytes``), unknown tags included; only the lengths of well-known fixed-size TLVs
are checked. A response with a non-zero status (or any response) may come without a body: its
fields then keep their defaults (``message_id == ""``), as some SMSCs omit it.

The codec is table-driven with precompiled :class:`struct.Struct` runs and no per-field objects,
so a ``submit_sm`` encodes and decodes in a few microseconds (``python -m mta.smpp.bench``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from operator import attrgetter
from typing import Any, ClassVar, Final, TypeVar

from mta.smpp.constants import (
    RESPONSE_BIT,
    TLV_SIZES,
    CommandId,
    CommandStatus,
    EsmClass,
    RegisteredDelivery,
    StatusKind,
    Tag,
    classify_status,
    command_name,
    is_response,
    status_name,
)
from mta.smpp.constants import (
    CommandStatus as S,
)

__all__ = [
    "HEADER",
    "INTERFACE_VERSION",
    "MAX_SEQUENCE",
    "AlertNotification",
    "BindReceiver",
    "BindReceiverResp",
    "BindTransceiver",
    "BindTransceiverResp",
    "BindTransmitter",
    "BindTransmitterResp",
    "CancelSm",
    "CancelSmResp",
    "CommandId",
    "CommandStatus",
    "DataSm",
    "DataSmResp",
    "DeliverSm",
    "DeliverSmResp",
    "EnquireLink",
    "EnquireLinkResp",
    "EsmClass",
    "GenericNack",
    "Outbind",
    "Pdu",
    "PduEncodeError",
    "PduError",
    "QuerySm",
    "QuerySmResp",
    "RawPdu",
    "RegisteredDelivery",
    "ReplaceSm",
    "ReplaceSmResp",
    "StatusKind",
    "SubmitSm",
    "SubmitSmResp",
    "Tag",
    "Unbind",
    "UnbindResp",
    "classify_status",
    "command_name",
    "cstr",
    "decode",
    "encode",
    "generic_nack",
    "is_response",
    "response_for",
    "status_name",
    "tlv_cstr",
    "tlv_int",
    "u8",
    "u16",
    "u32",
]

HEADER: Final = struct.Struct(">IIII")  # command_length, command_id, command_status, sequence
_TLV_HEADER: Final = struct.Struct(">HH")
INTERFACE_VERSION: Final = 0x34  # SMPP 3.4 in bind PDUs
MAX_SEQUENCE: Final = 0x7FFFFFFF


class PduError(Exception):
    """A frame that cannot be decoded: answer ``generic_nack`` (or the ``_resp``) with
    ``status``; ``sequence``/``command_id`` are those of the header (``None`` if unreadable)."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        sequence: int | None = None,
        command_id: int | None = None,
    ) -> None:
        super().__init__(f"{status_name(status)}: {detail}")
        self.status = status
        self.detail = detail
        self.sequence = sequence
        self.command_id = command_id


class PduEncodeError(ValueError):
    """A PDU whose fields do not fit the wire format (string too long, value out of range)."""


# --- TLV value helpers -------------------------------------------------------------------


def u8(value: int) -> bytes:
    return _U8.pack(value)


def u16(value: int) -> bytes:
    return _U16.pack(value)


def u32(value: int) -> bytes:
    return _U32.pack(value)


def cstr(value: str) -> bytes:
    """A C-octet string TLV value (NUL-terminated), e.g. ``receipted_message_id``."""
    return value.encode("latin-1") + b"\0"


_U8: Final = struct.Struct(">B")
_U16: Final = struct.Struct(">H")
_U32: Final = struct.Struct(">I")


def tlv_int(tlvs: Mapping[int, bytes], tag: int) -> int | None:
    """The big-endian unsigned integer value of TLV *tag*, or ``None`` when absent or empty."""
    value = tlvs.get(tag)
    if not value:
        return None
    return int.from_bytes(value, "big")


def tlv_cstr(tlvs: Mapping[int, bytes], tag: int) -> str | None:
    """The string value of TLV *tag* (trailing NULs dropped, a missing NUL tolerated)."""
    value = tlvs.get(tag)
    if value is None:
        return None
    end = value.find(0)
    if end >= 0:
        value = value[:end]
    return value.decode("latin-1")


# --- field specs ---------------------------------------------------------------------------

_KIND: Final = "smpp"
_CSTR: Final = "c"
_OCTETS: Final = "o"  # short_message: preceded by its 1-octet length (sm_length)


def _c(size: int, err: int = S.ESME_RINVCMDLEN) -> Any:
    """A C-octet string field of at most *size* octets including the NUL."""
    return field(default="", metadata={_KIND: (_CSTR, size, err)})


def _i(fmt: str = "B", default: int = 0) -> Any:
    """An integer field: ``B`` 1 octet, ``H`` 2, ``I`` 4."""
    return field(default=default, metadata={_KIND: (fmt, 0, 0)})


def _sm() -> Any:
    """``short_message`` (0 to 254 octets), with ``sm_length`` implied before it."""
    return field(default=b"", metadata={_KIND: (_OCTETS, 254, S.ESME_RINVMSGLEN)})


# An op is (kind, struct or None, size, err, count): a C-string, a run of integers, or octets.
_Op = tuple[str, struct.Struct | None, int, int, int]


@dataclass(slots=True)
class Pdu:
    """Base of all PDUs: header values and TLVs; subclasses add the mandatory body fields.

    ``sequence`` is set by the session for requests and copied from the request for
    responses; ``status`` is the ``command_status`` (0 in requests).
    """

    command_id: ClassVar[int] = -1
    _ops: ClassVar[tuple[_Op, ...]] = ()
    _get: ClassVar[Callable[[Any], tuple[Any, ...]]]

    sequence: int = field(default=0, kw_only=True)
    status: int = field(default=0, kw_only=True)
    tlvs: dict[int, bytes] = field(default_factory=dict, kw_only=True)

    @property
    def name(self) -> str:
        return command_name(self.command_id)

    @property
    def is_response(self) -> bool:
        return bool(self.command_id & RESPONSE_BIT)


_BY_ID: dict[int, type[Pdu]] = {}
_RESPONSE_OF: dict[type[Pdu], type[Pdu]] = {}
P = TypeVar("P", bound=type[Pdu])


def _register(cid: int) -> Callable[[P], P]:
    def deco(cls: P) -> P:
        cls.command_id = cid
        ops: list[_Op] = []
        names: list[str] = []
        run = ""
        for f in fields(cls):
            spec = f.metadata.get(_KIND)
            if spec is None:
                continue
            names.append(f.name)
            kind, size, err = spec
            if kind in ("B", "H", "I"):
                run += kind
                continue
            if run:
                ops.append(("i", struct.Struct(">" + run), 0, 0, len(run)))
                run = ""
            ops.append((kind, None, size, err, 1))
        if run:
            ops.append(("i", struct.Struct(">" + run), 0, 0, len(run)))
        cls._ops = tuple(ops)
        if len(names) > 1:
            cls._get = attrgetter(*names)
        elif names:
            single = attrgetter(names[0])
            cls._get = lambda pdu: (single(pdu),)
        else:
            cls._get = lambda pdu: ()
        _BY_ID[cid] = cls
        if cid & RESPONSE_BIT and cid != CommandId.GENERIC_NACK:
            request = _BY_ID.get(cid & ~RESPONSE_BIT)
            if request is not None:
                _RESPONSE_OF[request] = cls
        return cls

    return deco


# --- PDU classes --------------------------------------------------------------------------


@dataclass(slots=True)
class _Bind(Pdu):
    system_id: str = _c(16, S.ESME_RINVSYSID)
    password: str = _c(9, S.ESME_RINVPASWD)
    system_type: str = _c(13, S.ESME_RINVSYSTYP)
    interface_version: int = _i("B", INTERFACE_VERSION)
    addr_ton: int = _i()
    addr_npi: int = _i()
    address_range: str = _c(41)


@_register(CommandId.BIND_RECEIVER)
@dataclass(slots=True)
class BindReceiver(_Bind):
    pass


@_register(CommandId.BIND_TRANSMITTER)
@dataclass(slots=True)
class BindTransmitter(_Bind):
    pass


@_register(CommandId.BIND_TRANSCEIVER)
@dataclass(slots=True)
class BindTransceiver(_Bind):
    pass


@dataclass(slots=True)
class _BindResp(Pdu):
    """``system_id`` of the SMSC; ``sc_interface_version`` (0x0210) travels as a TLV."""

    system_id: str = _c(16, S.ESME_RINVSYSID)


@_register(CommandId.BIND_RECEIVER_RESP)
@dataclass(slots=True)
class BindReceiverResp(_BindResp):
    pass


@_register(CommandId.BIND_TRANSMITTER_RESP)
@dataclass(slots=True)
class BindTransmitterResp(_BindResp):
    pass


@_register(CommandId.BIND_TRANSCEIVER_RESP)
@dataclass(slots=True)
class BindTransceiverResp(_BindResp):
    pass


@_register(CommandId.OUTBIND)
@dataclass(slots=True)
class Outbind(Pdu):
    system_id: str = _c(16, S.ESME_RINVSYSID)
    password: str = _c(9, S.ESME_RINVPASWD)


@_register(CommandId.UNBIND)
@dataclass(slots=True)
class Unbind(Pdu):
    pass


@_register(CommandId.UNBIND_RESP)
@dataclass(slots=True)
class UnbindResp(Pdu):
    pass


@_register(CommandId.ENQUIRE_LINK)
@dataclass(slots=True)
class EnquireLink(Pdu):
    pass


@_register(CommandId.ENQUIRE_LINK_RESP)
@dataclass(slots=True)
class EnquireLinkResp(Pdu):
    pass


@_register(CommandId.GENERIC_NACK)
@dataclass(slots=True)
class GenericNack(Pdu):
    pass


@dataclass(slots=True)
class _ShortMessage(Pdu):
    """The body shared by submit_sm and deliver_sm (docs/protocols.md §1.4)."""

    service_type: str = _c(6, S.ESME_RINVSERTYP)
    source_addr_ton: int = _i()
    source_addr_npi: int = _i()
    source_addr: str = _c(21, S.ESME_RINVSRCADR)
    dest_addr_ton: int = _i()
    dest_addr_npi: int = _i()
    destination_addr: str = _c(21, S.ESME_RINVDSTADR)
    esm_class: int = _i()
    protocol_id: int = _i()
    priority_flag: int = _i()
    schedule_delivery_time: str = _c(17, S.ESME_RINVSCHED)
    validity_period: str = _c(17, S.ESME_RINVEXPIRY)
    registered_delivery: int = _i()
    replace_if_present_flag: int = _i()
    data_coding: int = _i()
    sm_default_msg_id: int = _i()
    short_message: bytes = _sm()


@_register(CommandId.SUBMIT_SM)
@dataclass(slots=True)
class SubmitSm(_ShortMessage):
    pass


@_register(CommandId.DELIVER_SM)
@dataclass(slots=True)
class DeliverSm(_ShortMessage):
    pass


@dataclass(slots=True)
class _MessageIdResp(Pdu):
    message_id: str = _c(65, S.ESME_RINVMSGID)


@_register(CommandId.SUBMIT_SM_RESP)
@dataclass(slots=True)
class SubmitSmResp(_MessageIdResp):
    pass


@_register(CommandId.DELIVER_SM_RESP)
@dataclass(slots=True)
class DeliverSmResp(_MessageIdResp):
    """``message_id`` is unused (empty) in deliver_sm_resp."""


@_register(CommandId.DATA_SM)
@dataclass(slots=True)
class DataSm(Pdu):
    service_type: str = _c(6, S.ESME_RINVSERTYP)
    source_addr_ton: int = _i()
    source_addr_npi: int = _i()
    source_addr: str = _c(65, S.ESME_RINVSRCADR)
    dest_addr_ton: int = _i()
    dest_addr_npi: int = _i()
    destination_addr: str = _c(65, S.ESME_RINVDSTADR)
    esm_class: int = _i()
    registered_delivery: int = _i()
    data_coding: int = _i()


@_register(CommandId.DATA_SM_RESP)
@dataclass(slots=True)
class DataSmResp(_MessageIdResp):
    pass


@_register(CommandId.QUERY_SM)
@dataclass(slots=True)
class QuerySm(Pdu):
    message_id: str = _c(65, S.ESME_RINVMSGID)
    source_addr_ton: int = _i()
    source_addr_npi: int = _i()
    source_addr: str = _c(21, S.ESME_RINVSRCADR)


@_register(CommandId.QUERY_SM_RESP)
@dataclass(slots=True)
class QuerySmResp(Pdu):
    """``final_date`` is empty while the message is not final; ``error_code`` is the network
    error; ``message_state`` as in :class:`mta.smpp.receipt.MessageState`."""

    message_id: str = _c(65, S.ESME_RINVMSGID)
    final_date: str = _c(17)
    message_state: int = _i()
    error_code: int = _i()


@_register(CommandId.CANCEL_SM)
@dataclass(slots=True)
class CancelSm(Pdu):
    service_type: str = _c(6, S.ESME_RINVSERTYP)
    message_id: str = _c(65, S.ESME_RINVMSGID)
    source_addr_ton: int = _i()
    source_addr_npi: int = _i()
    source_addr: str = _c(21, S.ESME_RINVSRCADR)
    dest_addr_ton: int = _i()
    dest_addr_npi: int = _i()
    destination_addr: str = _c(21, S.ESME_RINVDSTADR)


@_register(CommandId.CANCEL_SM_RESP)
@dataclass(slots=True)
class CancelSmResp(Pdu):
    pass


@_register(CommandId.REPLACE_SM)
@dataclass(slots=True)
class ReplaceSm(Pdu):
    message_id: str = _c(65, S.ESME_RINVMSGID)
    source_addr_ton: int = _i()
    source_addr_npi: int = _i()
    source_addr: str = _c(21, S.ESME_RINVSRCADR)
    schedule_delivery_time: str = _c(17, S.ESME_RINVSCHED)
    validity_period: str = _c(17, S.ESME_RINVEXPIRY)
    registered_delivery: int = _i()
    sm_default_msg_id: int = _i()
    short_message: bytes = _sm()


@_register(CommandId.REPLACE_SM_RESP)
@dataclass(slots=True)
class ReplaceSmResp(Pdu):
    pass


@_register(CommandId.ALERT_NOTIFICATION)
@dataclass(slots=True)
class AlertNotification(Pdu):
    source_addr_ton: int = _i()
    source_addr_npi: int = _i()
    source_addr: str = _c(65, S.ESME_RINVSRCADR)
    esme_addr_ton: int = _i()
    esme_addr_npi: int = _i()
    esme_addr: str = _c(65, S.ESME_RINVDSTADR)


@dataclass(slots=True)
class RawPdu(Pdu):
    """A PDU whose command id is known but whose body is not modelled (submit_multi and its
    response): the body is kept as bytes, so the owner can still answer it."""

    raw_id: int = 0
    body: bytes = b""

    @property
    def name(self) -> str:
        return command_name(self.raw_id)

    @property
    def is_response(self) -> bool:
        return bool(self.raw_id & RESPONSE_BIT)


_RAW_IDS: Final = frozenset({CommandId.SUBMIT_MULTI, CommandId.SUBMIT_MULTI_RESP})


def response_for(request: Pdu, status: int = 0) -> Pdu:
    """An empty response to *request* (same sequence) with *status*; a request without a
    response type (generic_nack, outbind, alert_notification) gets a generic_nack."""
    if isinstance(request, RawPdu):
        if request.raw_id & RESPONSE_BIT:
            return generic_nack(status, request.sequence)
        raw_id = request.raw_id | RESPONSE_BIT
        return RawPdu(raw_id=raw_id, sequence=request.sequence, status=status)
    cls = _RESPONSE_OF.get(type(request))
    if cls is None:
        return generic_nack(status, request.sequence)
    return cls(sequence=request.sequence, status=status)


def generic_nack(status: int, sequence: int | None) -> GenericNack:
    return GenericNack(sequence=sequence or 0, status=status)


# --- encode -------------------------------------------------------------------------------


def encode(pdu: Pdu) -> bytes:
    """The frame of *pdu* (header included). Raises :class:`PduEncodeError` if a field does
    not fit (a C-string at or over its maximum, a short_message over 254 octets)."""
    cls = type(pdu)
    try:
        if cls is RawPdu:
            assert isinstance(pdu, RawPdu)
            cid = pdu.raw_id
            parts: list[bytes] = [pdu.body]
        else:
            cid = cls.command_id
            parts = []
            values = cls._get(pdu)
            i = 0
            for kind, st, size, _err, count in cls._ops:
                if st is not None:
                    parts.append(st.pack(*values[i : i + count]))
                    i += count
                    continue
                value = values[i]
                i += 1
                if kind is _CSTR:
                    raw = value.encode("latin-1")
                    if len(raw) >= size or 0 in raw:
                        raise PduEncodeError(f"{cls.__name__}: field {i} {value!r} too long")
                    parts.append(raw)
                    parts.append(b"\0")
                else:
                    if len(value) > size:
                        raise PduEncodeError(
                            f"{cls.__name__}: short_message of {len(value)} octets (max {size});"
                            " use the message_payload TLV"
                        )
                    parts.append(_U8.pack(len(value)))
                    parts.append(value)
        for tag, tvalue in pdu.tlvs.items():
            parts.append(_TLV_HEADER.pack(tag, len(tvalue)))
            parts.append(tvalue)
        body = b"".join(parts)
        return HEADER.pack(16 + len(body), cid, pdu.status, pdu.sequence) + body
    except (struct.error, UnicodeEncodeError, AttributeError, TypeError) as exc:
        raise PduEncodeError(f"{cls.__name__}: {exc}") from exc


# --- decode -------------------------------------------------------------------------------


def decode(frame: bytes) -> Pdu:
    """The PDU in *frame* (exactly one PDU, header included).

    Raises :class:`PduError` with the status to answer: ``ESME_RINVCMDLEN`` for a bad
    ``command_length`` or a truncated body, ``ESME_RINVCMDID`` for an unknown command id,
    ``ESME_RINVMSGLEN`` for a short_message longer than the body, the field's own status for
    an over-long C-string (e.g. ``ESME_RINVSRCADR``), ``ESME_RINVOPTPARSTREAM`` /
    ``ESME_RINVPARLEN`` for broken TLVs.
    """
    if not isinstance(frame, bytes):
        frame = bytes(frame)
    n = len(frame)
    if n < 16:
        raise PduError(S.ESME_RINVCMDLEN, f"frame of {n} octets is shorter than a header")
    length, cid, status, seq = HEADER.unpack_from(frame)
    if length != n:
        raise PduError(
            S.ESME_RINVCMDLEN,
            f"command_length {length} but frame of {n} octets",
            sequence=seq,
            command_id=cid,
        )
    cls = _BY_ID.get(cid)
    if cls is None:
        if cid in _RAW_IDS:
            return RawPdu(raw_id=cid, body=frame[16:], sequence=seq, status=status)
        raise PduError(
            S.ESME_RINVCMDID, f"unknown command_id 0x{cid:08X}", sequence=seq, command_id=cid
        )
    if n == 16:
        if cid & RESPONSE_BIT or not cls._ops:
            return cls(sequence=seq, status=status)
        raise PduError(
            S.ESME_RINVCMDLEN, f"{cls.__name__} without a body", sequence=seq, command_id=cid
        )
    values: list[Any] = []
    pos = 16
    for kind, st, size, err, _count in cls._ops:
        if st is not None:
            if pos + st.size > n:
                raise _truncated(cls, seq, cid)
            values.extend(st.unpack_from(frame, pos))
            pos += st.size
        elif kind is _CSTR:
            end = frame.find(0, pos, pos + size)
            if end < 0:
                if frame.find(0, pos) < 0:
                    raise _truncated(cls, seq, cid)
                raise PduError(
                    err,
                    f"{cls.__name__}: C-string at offset {pos} exceeds {size} octets",
                    sequence=seq,
                    command_id=cid,
                )
            values.append(frame[pos:end].decode("latin-1"))
            pos = end + 1
        else:
            if pos >= n:
                raise _truncated(cls, seq, cid)
            sm_length = frame[pos]
            pos += 1
            end = pos + sm_length
            if end > n:
                raise PduError(
                    err,
                    f"{cls.__name__}: sm_length {sm_length} exceeds the {n - pos} octets left",
                    sequence=seq,
                    command_id=cid,
                )
            values.append(frame[pos:end])
            pos = end
    tlvs = _decode_tlvs(frame, pos, n, seq, cid) if pos < n else {}
    return cls(*values, sequence=seq, status=status, tlvs=tlvs)


def _truncated(cls: type[Pdu], seq: int, cid: int) -> PduError:
    return PduError(
        S.ESME_RINVCMDLEN, f"{cls.__name__}: body truncated", sequence=seq, command_id=cid
    )


def _decode_tlvs(frame: bytes, pos: int, n: int, seq: int, cid: int) -> dict[int, bytes]:
    tlvs: dict[int, bytes] = {}
    unpack = _TLV_HEADER.unpack_from
    while pos < n:
        if pos + 4 > n:
            raise PduError(
                S.ESME_RINVOPTPARSTREAM,
                f"{n - pos} stray octets after the mandatory fields",
                sequence=seq,
                command_id=cid,
            )
        tag, length = unpack(frame, pos)
        pos += 4
        end = pos + length
        if end > n:
            raise PduError(
                S.ESME_RINVOPTPARSTREAM,
                f"TLV 0x{tag:04X} of length {length} exceeds the frame",
                sequence=seq,
                command_id=cid,
            )
        bounds = TLV_SIZES.get(tag)
        if bounds is not None and not bounds[0] <= length <= bounds[1]:
            raise PduError(
                S.ESME_RINVPARLEN,
                f"TLV 0x{tag:04X} has length {length}, expected {bounds[0]}..{bounds[1]}",
                sequence=seq,
                command_id=cid,
            )
        tlvs[tag] = frame[pos:end]
        pos = end
    return tlvs


def _check_layout() -> None:
    """Every registered class has fields, and every request has its response type."""
    for request_id in CommandId:
        if request_id & RESPONSE_BIT or request_id in _RAW_IDS:
            continue
        if request_id not in _BY_ID:
            raise RuntimeError(f"no PDU class for {request_id.name}")
    for cid, cls in _BY_ID.items():
        if not hasattr(cls, "_get"):
            raise RuntimeError(f"{cls.__name__} is not compiled")
        answered = cid not in (CommandId.OUTBIND, CommandId.ALERT_NOTIFICATION)
        if not cid & RESPONSE_BIT and answered and cls not in _RESPONSE_OF:
            raise RuntimeError(f"{cls.__name__} has no response class")


_check_layout()
