"""The PDU machinery: the header, TLV value helpers, field specs, the ``Pdu`` base class and the
registry that compiles each command's fields into ``struct`` runs (docs/protocols.md §1.1-§1.4)."""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from operator import attrgetter
from typing import Any, ClassVar, Final, TypeVar

from mta.smpp.constants import (
    RESPONSE_BIT,
    CommandId,
    command_name,
    status_name,
)
from mta.smpp.constants import (
    CommandStatus as S,
)

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
