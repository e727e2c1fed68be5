"""Frames: encode a PDU into one whole SMPP frame, and decode a frame strictly, never trusting a
length (a frame that cannot be decoded raises ``PduError`` with the status to answer).

``encode`` and ``decode`` run each class's generated function (:mod:`mta.smpp.pdu.compiled`);
``encode_generic`` and ``decode_generic`` are the table-driven reference they are tested
against."""

from __future__ import annotations

import struct
from typing import Any, Final

from mta.smpp.constants import (
    RESPONSE_BIT,
    TLV_SIZES,
    CommandId,
)
from mta.smpp.constants import CommandStatus as S
from mta.smpp.pdu.base import (
    _BY_ID,
    _CSTR,
    _RESPONSE_OF,
    _TLV_HEADER,
    _U8,
    HEADER,
    Pdu,
    PduEncodeError,
    PduError,
)
from mta.smpp.pdu.commands import (
    _RAW_IDS,
    RawPdu,
    response_for,
)
from mta.smpp.pdu.compiled import (
    Decoder,
    Encoder,
    build_decoder,
    build_encoder,
    cstr_error,
    sm_error,
    truncated,
)

# --- encode -------------------------------------------------------------------------------


def encode(pdu: Pdu) -> bytes:
    """The frame of *pdu* (header included). Raises :class:`PduEncodeError` if a field does
    not fit (a C-string at or over its maximum, a short_message over 254 octets)."""
    encoder = _ENCODERS.get(type(pdu))
    if encoder is None:
        return encode_generic(pdu)
    return encoder(pdu)


def encode_generic(pdu: Pdu) -> bytes:
    """:func:`encode` by the table-driven loop (the reference of the generated encoders)."""
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
    frame, cid, status, seq = _header(frame)
    return decode_body(frame, cid, status, seq)


def _header(frame: bytes) -> tuple[bytes, int, int, int]:
    """The frame as bytes and its (command_id, command_status, sequence), once its
    ``command_length`` is checked against the frame's length."""
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
    return frame, cid, status, seq


def decode_body(frame: bytes, cid: int, status: int, seq: int) -> Pdu:
    """:func:`decode` of a frame whose header the caller has read (*cid*, *status*, *seq*)
    and whose ``command_length`` it has checked to be ``len(frame)`` (at least 16)."""
    decoder = _DECODERS.get(cid)
    if decoder is None or len(frame) == 16:
        return _decode_rest(frame, cid, status, seq)
    return decoder(frame, len(frame), seq, status, cid)


def _decode_rest(frame: bytes, cid: int, status: int, seq: int) -> Pdu:
    """What the generated decoders leave: bodiless frames, raw and unknown command ids."""
    cls = _BY_ID.get(cid)
    if cls is None:
        if cid in _RAW_IDS:
            return RawPdu(raw_id=cid, body=frame[16:], sequence=seq, status=status)
        raise PduError(
            S.ESME_RINVCMDID, f"unknown command_id 0x{cid:08X}", sequence=seq, command_id=cid
        )
    if cid & RESPONSE_BIT or not cls._ops:
        return cls(sequence=seq, status=status)
    raise PduError(
        S.ESME_RINVCMDLEN, f"{cls.__name__} without a body", sequence=seq, command_id=cid
    )


def decode_generic(frame: bytes) -> Pdu:
    """:func:`decode` by the table-driven loop (the reference of the generated decoders):
    the same PDU, or the same :class:`PduError`, for every frame."""
    frame, cid, status, seq = _header(frame)
    n = len(frame)
    cls = _BY_ID.get(cid)
    if cls is None or n == 16:
        return _decode_rest(frame, cid, status, seq)
    values: list[Any] = []
    pos = 16
    for kind, st, size, err, _count in cls._ops:
        if st is not None:
            if pos + st.size > n:
                raise truncated(cls, seq, cid)
            values.extend(st.unpack_from(frame, pos))
            pos += st.size
        elif kind is _CSTR:
            end = frame.find(0, pos, pos + size)
            if end < 0:
                raise cstr_error(cls, frame, pos, size, err, seq, cid)
            values.append(frame[pos:end].decode("latin-1"))
            pos = end + 1
        else:
            if pos >= n:
                raise truncated(cls, seq, cid)
            sm_length = frame[pos]
            pos += 1
            end = pos + sm_length
            if end > n:
                raise sm_error(cls, sm_length, n - pos, err, seq, cid)
            values.append(frame[pos:end])
            pos = end
    tlvs = _decode_tlvs(frame, pos, n, seq, cid) if pos < n else {}
    return cls(*values, sequence=seq, status=status, tlvs=tlvs)


#: TLV_SIZES keyed by plain ints (a lookup with an int key is then an int comparison).
_TLV_BOUNDS: Final[dict[int, tuple[int, int]]] = {int(t): b for t, b in TLV_SIZES.items()}


def _decode_tlvs(frame: bytes, pos: int, n: int, seq: int, cid: int) -> dict[int, bytes]:
    tlvs: dict[int, bytes] = {}
    unpack = _TLV_HEADER.unpack_from
    bounds_of = _TLV_BOUNDS.get
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
        bounds = bounds_of(tag)
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


def response_frame(request: Pdu, status: int = 0) -> bytes:
    """``encode(response_for(request, status))``: the frame of the empty response to
    *request*, written from its class's precomputed body instead of a response object."""
    known = _EMPTY_RESPONSES.get(type(request))
    if known is None:
        return encode(response_for(request, status))
    cid, body = known
    return HEADER.pack(16 + len(body), cid, status, request.sequence) + body


_EMPTY_RESPONSES: dict[type[Pdu], tuple[int, bytes]] = {
    request: (response.command_id, encode_generic(response())[16:])
    for request, response in _RESPONSE_OF.items()
}
_DECODERS: dict[int, Decoder] = {
    cid: build_decoder(cls, _decode_tlvs) for cid, cls in _BY_ID.items()
}
_ENCODERS: dict[type[Pdu], Encoder] = {cls: build_encoder(cls) for cls in _BY_ID.values()}
