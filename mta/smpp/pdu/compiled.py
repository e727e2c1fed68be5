"""Per-class encode and decode functions, generated once at import from each class's field ops.

The table-driven loops of :mod:`mta.smpp.pdu.frames` (kept there as the reference,
``encode_generic`` / ``decode_generic``) pay for the table on every PDU: a loop over the ops,
a list of values, a slice per struct run. As :mod:`dataclasses` does for ``__init__``, this
module writes each registered class's loop out as straight-line source — one line per field,
the sizes and statuses as constants — and compiles it, so the hot PDUs (submit_sm and its
response, deliver_sm and its response, enquire_link) cost a fraction of the loop. The
generated functions check exactly what the loops check, in the same order, and raise the same
errors with the same texts (tests/test_smpp_fastpath.py holds both to that on random and
mutated frames).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import fields
from typing import Any, Final

from mta.smpp.constants import CommandStatus as S
from mta.smpp.pdu.base import _CSTR, _KIND, _TLV_HEADER, HEADER, Pdu, PduEncodeError, PduError

Decoder = Callable[[bytes, int, int, int, int], Pdu]
Encoder = Callable[[Pdu], bytes]

#: The fields of every PDU besides its body's (header values and TLVs).
_HEADER_FIELDS: Final = ("sequence", "status", "tlvs")
#: The one-octet ``sm_length`` of each short_message length (0..254); over that is refused.
_SM_LENGTH = tuple(bytes((n,)) for n in range(255))


def cstr_error(
    cls: type[Pdu], frame: bytes, pos: int, size: int, err: int, seq: int, cid: int
) -> PduError:
    """The error for a C-string with no NUL within its *size* octets from *pos*."""
    if frame.find(0, pos) < 0:
        return truncated(cls, seq, cid)
    return PduError(
        err,
        f"{cls.__name__}: C-string at offset {pos} exceeds {size} octets",
        sequence=seq,
        command_id=cid,
    )


def sm_error(cls: type[Pdu], sm_length: int, left: int, err: int, seq: int, cid: int) -> PduError:
    return PduError(
        err,
        f"{cls.__name__}: sm_length {sm_length} exceeds the {left} octets left",
        sequence=seq,
        command_id=cid,
    )


def truncated(cls: type[Pdu], seq: int, cid: int) -> PduError:
    return PduError(
        S.ESME_RINVCMDLEN, f"{cls.__name__}: body truncated", sequence=seq, command_id=cid
    )


def build_decoder(
    cls: type[Pdu], decode_tlvs: Callable[[bytes, int, int, int, int], dict[int, bytes]]
) -> Decoder:
    """``decode(frame, n, seq, status, cid)`` of *cls*: the body of a frame of ``n`` octets
    (``n > 16``; the caller checked the header), as the generic loop decodes it."""
    env: dict[str, Any] = {
        "cls": cls,
        "new": object.__new__,
        "truncated": truncated,
        "cstr_error": cstr_error,
        "sm_error": sm_error,
        "decode_tlvs": decode_tlvs,
    }
    body: list[str] = []
    names: list[str] = []
    fixed = True  # pos is a known constant so far
    at = 16
    for i, (kind, st, size, err, count) in enumerate(cls._ops):
        pos = str(at) if fixed else "pos"
        if st is not None:
            env[f"unpack{i}"] = st.unpack_from
            run = [f"v{len(names) + j}" for j in range(count)]
            names += run
            body.append(f"if {pos} + {st.size} > n: raise truncated(cls, seq, cid)")
            body.append(f"{', '.join(run)}, = unpack{i}(frame, {pos})")
            if fixed:
                at += st.size
            else:
                body.append(f"pos += {st.size}")
        elif kind is _CSTR:
            v = f"v{len(names)}"
            names.append(v)
            body.append(f"end = frame.find(0, {pos}, {pos} + {size})")
            body.append(f"if end < 0: raise cstr_error(cls, frame, {pos}, {size}, {err}, seq, cid)")
            body.append(f"{v} = frame[{pos}:end].decode('latin-1') if end > {pos} else ''")
            body.append("pos = end + 1")
            fixed = False
        else:
            v = f"v{len(names)}"
            names.append(v)
            body.append(f"if {pos} >= n: raise truncated(cls, seq, cid)")
            body.append(f"end = {pos} + 1 + frame[{pos}]")
            body.append(
                f"if end > n: raise sm_error(cls, end - {pos} - 1, n - {pos} - 1, {err}, seq, cid)"
            )
            body.append(f"{v} = frame[{pos} + 1:end]")
            body.append("pos = end")
            fixed = False
    if fixed:
        body.append(f"pos = {at}")
    body.append("tlvs = decode_tlvs(frame, pos, n, seq, cid) if pos < n else {}")
    if {f.name for f in fields(cls)} == {*_field_names(cls), *_HEADER_FIELDS}:
        body.append("pdu = new(cls)")  # every field is set here: __init__ is not needed
        for name, v in zip(_field_names(cls), names, strict=True):
            body.append(f"pdu.{name} = {v}")
        body += ["pdu.sequence = seq", "pdu.status = status", "pdu.tlvs = tlvs", "return pdu"]
    else:  # a field that is not on the wire: __init__ gives it its default
        body.append(f"return cls({', '.join(names)}, sequence=seq, status=status, tlvs=tlvs)")
    source = "def decode(frame, n, seq, status, cid):\n" + "".join(f"    {b}\n" for b in body)
    # our own source, written from the class's ops
    exec(compile(source, f"<decode {cls.__name__}>", "exec"), env)
    decoder: Decoder = env["decode"]
    return decoder


def build_encoder(cls: type[Pdu]) -> Encoder:
    """``encode(pdu)`` of *cls*: the whole frame, as the generic loop encodes it."""
    env: dict[str, Any] = {
        "cls": cls,
        "name": cls.__name__,
        "cid": cls.command_id,
        "header": HEADER.pack,
        "tlv_header": _TLV_HEADER.pack,
        "sm_length": _SM_LENGTH,
        "PduEncodeError": PduEncodeError,
        "struct_error": struct.error,
    }
    body: list[str] = []
    parts: list[str] = []  # laid out as the generic encoder's list of parts
    index = 0  # the field number in the generic encoder's messages (1-based after the field)
    names = _field_names(cls)
    k = 0
    for i, (kind, st, size, _err, count) in enumerate(cls._ops):
        if st is not None:
            env[f"pack{i}"] = st.pack
            args = ", ".join(f"pdu.{f}" for f in names[k : k + count])
            body.append(f"p{i} = pack{i}({args})")
            parts.append(f"p{i}")
            k += count
            index += count
            continue
        field_name = names[k]
        k += 1
        index += 1
        if kind is _CSTR:
            body.append(f"p{i} = pdu.{field_name}.encode('latin-1')")
            body.append(f"if len(p{i}) >= {size} or 0 in p{i}:")
            bad = f"{{pdu.{field_name}!r}}"
            body.append(f"    raise PduEncodeError(f'{{name}}: field {index} {bad} too long')")
            parts += [f"p{i}", "b'\\0'"]
        else:
            body.append(f"p{i} = pdu.{field_name}")
            body.append(f"if len(p{i}) > {size}:")
            body.append(
                "    raise PduEncodeError("
                f"f'{{name}}: short_message of {{len(p{i})}} octets (max {size});"
                " use the message_payload TLV')"
            )
            parts += [f"sm_length[len(p{i})]", f"p{i}"]
    if parts:
        body.append(f"body = b''.join(({', '.join(parts)},))")
    else:
        body.append("body = b''")
    body.append("tlvs = pdu.tlvs")
    body.append("if tlvs:")
    body.append("    body += b''.join([tlv_header(t, len(b)) + b for t, b in tlvs.items()])")
    body.append("return header(16 + len(body), cid, pdu.status, pdu.sequence) + body")
    source = (
        "def encode(pdu):\n    try:\n"
        + "".join(f"        {b}\n" for b in body)
        + "    except (struct_error, UnicodeEncodeError, AttributeError, TypeError) as exc:\n"
        + "        raise PduEncodeError(f'{name}: {exc}') from exc\n"
    )
    # our own source, written from the class's ops
    exec(compile(source, f"<encode {cls.__name__}>", "exec"), env)
    encoder: Encoder = env["encode"]
    return encoder


def _field_names(cls: type[Pdu]) -> list[str]:
    """The names of *cls*'s body fields, in the order of its ops."""
    return [f.name for f in fields(cls) if _KIND in f.metadata]
