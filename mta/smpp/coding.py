"""Text ↔ SMPP short_message: GSM-7/UCS-2/Latin-1 codings, long-message parts, reassembly.

Sending: a text that fits the GSM 03.38 alphabet (:func:`mta.text.is_gsm7`) goes as
``data_coding`` 0, unpacked, one septet per octet, an extension character as ESC (0x1B) + code;
any other text as UCS-2 (``data_coding`` 8, UTF-16BE, a character outside the BMP as a whole
surrogate pair). The GSM tables are taken from the ``gsm0338`` codec ('gsm03.38') once at
import and applied with ``str.translate`` (the codec itself costs ~85 µs per 150 characters,
too slow for a submit path of 10k/s); tests check both agree.

A long text is cut by :func:`mta.text.split` (153 septets / 67 UCS-2 units per part, never
splitting an escape or surrogate pair) and sent in one of three ways (docs/protocols.md §1.11):
``udh`` (a ``05 00 03 ref total seq`` User Data Header in each part, ``esm_class`` |= 0x40),
``sar`` (the ``sar_*`` TLVs), or ``payload`` (the whole text in one ``message_payload`` TLV).

Receiving: :func:`decode_text` reads ``data_coding`` 0 (GSM, or another default alphabet),
1 (IA5), 3 (Latin-1), 8 (UCS-2), the GSM DCS groups, and binary as Latin-1.
:class:`Reassembler` puts parts (UDH with 8- or 16-bit reference, or SAR TLVs) back together,
keyed by (caller's key, reference), bounded in count and bytes, dropping parts that wait
longer than its timeout. The parts' octets are joined before decoding, so a peer that split an
escape or a surrogate pair between parts is still decoded right.
"""

from __future__ import annotations

import codecs
import enum
import importlib
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from mta.smpp.pdu import EsmClass, Tag, tlv_int, u8, u16
from mta.text import is_gsm7, split

__all__ = [
    "Assembled",
    "CodingError",
    "DataCoding",
    "LongMode",
    "Part",
    "Reassembler",
    "concat_info",
    "decode_text",
    "encode_parts",
    "encode_text",
    "gsm7_decode",
    "gsm7_encode",
    "split_udh",
]

_ESC: Final = 0x1B
MAX_PARTS: Final = 255


class DataCoding(enum.IntEnum):
    """SMPP ``data_coding`` values (docs/protocols.md §1.6)."""

    DEFAULT = 0x00  # SMSC default alphabet; GSM 03.38 here
    IA5 = 0x01
    BINARY = 0x02
    LATIN1 = 0x03
    BINARY_4 = 0x04
    JIS = 0x05
    CYRILLIC = 0x06
    HEBREW = 0x07
    UCS2 = 0x08
    PICTOGRAM = 0x09
    ISO2022_JP = 0x0A
    EXTENDED_KANJI = 0x0D
    KS_C_5601 = 0x0E


class LongMode(enum.StrEnum):
    """How a text longer than one SMS travels (the account option ``long_messages``)."""

    UDH = "udh"
    SAR = "sar"
    PAYLOAD = "payload"


class CodingError(ValueError):
    """Text or user data that cannot be encoded or decoded as asked (bad UDH, too many parts)."""


# --- GSM 03.38 tables, from the gsm0338 codec ---------------------------------------------


def _gsm_tables() -> tuple[dict[int, str], dict[int, str], dict[int, int]]:
    """(encode map char → septets, basic decode map, extension decode map code → char)."""
    importlib.import_module("gsm0338")
    codec = codecs.lookup("gsm03.38")
    encode_map: dict[int, str] = {}
    basic: dict[int, str] = {}
    extension: dict[int, int] = {}
    for code in range(128):
        if code == _ESC:
            continue
        char = codec.decode(bytes((code,)))[0]
        basic[code] = char
        encode_map[ord(char)] = chr(code)
        try:
            ext_char = codec.decode(bytes((_ESC, code)))[0]
        except UnicodeDecodeError:
            continue
        extension[code] = ord(ext_char)
        encode_map[ord(ext_char)] = chr(_ESC) + chr(code)
    return encode_map, basic, extension


_ENCODE_MAP, _BASIC, _EXTENSION = _gsm_tables()
# bytes → str through latin-1, then this table: each octet 0..127 becomes its GSM character.
_DECODE_MAP: Final[dict[int, str]] = {
    code: char for code, char in _BASIC.items() if chr(code) != char
}
# Octets above 0x7F are not GSM septets: shown as U+FFFD.
_DECODE_MAP.update({code: "\ufffd" for code in range(0x80, 0x100)})
# The GSM characters within Latin-1 that are one septet: a text of only these encodes with
# bytes.translate on its Latin-1 octets (a 256-octet table, in C) instead of str.translate
# with a dict per character; the same septets.
_ONE_SEPTET: Final = {
    code: ord(_ENCODE_MAP[code])
    for code in range(256)
    if code in _ENCODE_MAP and len(_ENCODE_MAP[code]) == 1 and is_gsm7(chr(code))
}
_FAST_GSM: Final = frozenset(map(chr, _ONE_SEPTET))
_FAST_TABLE: Final = bytes(_ONE_SEPTET.get(code, code) for code in range(256))


def gsm7_encode(text: str) -> bytes:
    """*text* as unpacked GSM 03.38 septets (one per octet; extension chars as ESC + code)."""
    if not is_gsm7(text):
        raise CodingError("text has characters outside the GSM 03.38 alphabet")
    return text.translate(_ENCODE_MAP).encode("latin-1")


def gsm7_decode(data: bytes) -> str:
    """Unpacked GSM 03.38 septets → text. An unknown extension code shows its basic-table
    character (as 3GPP TS 23.038 asks of a receiver); a trailing lone ESC is dropped."""
    if _ESC not in data:
        return data.decode("latin-1").translate(_DECODE_MAP)
    pieces = data.split(b"\x1b")
    out = [pieces[0].decode("latin-1").translate(_DECODE_MAP)]
    for piece in pieces[1:]:
        if not piece:
            continue  # ESC at the end, or ESC ESC (reserved): nothing to show
        code = piece[0]
        ext = _EXTENSION.get(code)
        head = chr(ext) if ext is not None else _BASIC.get(code, "\ufffd")
        out.append(head + piece[1:].decode("latin-1").translate(_DECODE_MAP))
    return "".join(out)


# --- texts ---------------------------------------------------------------------------------


def encode_text(text: str) -> tuple[int, bytes]:
    """(data_coding, octets): GSM-7 (0) when *text* fits the alphabet, else UCS-2 (8)."""
    if _FAST_GSM.issuperset(text):
        return DataCoding.DEFAULT, text.encode("latin-1").translate(_FAST_TABLE)
    if is_gsm7(text):
        return DataCoding.DEFAULT, text.translate(_ENCODE_MAP).encode("latin-1")
    return DataCoding.UCS2, text.encode("utf-16-be", "surrogatepass")


_CODECS: Final[dict[int, str]] = {
    DataCoding.IA5: "ascii",
    DataCoding.BINARY: "latin-1",
    DataCoding.LATIN1: "latin-1",
    DataCoding.BINARY_4: "latin-1",
    DataCoding.CYRILLIC: "iso8859_5",
    DataCoding.HEBREW: "iso8859_8",
    DataCoding.UCS2: "utf-16-be",
    DataCoding.ISO2022_JP: "iso2022_jp",
    DataCoding.KS_C_5601: "euc_kr",
}


def _alphabet(data_coding: int) -> str:
    """'gsm', 'ucs2', '8bit' or a Python codec name for *data_coding*."""
    if data_coding <= 0x0F:
        if data_coding == DataCoding.DEFAULT:
            return "gsm"
        return _CODECS.get(data_coding, "latin-1")
    group = data_coding & 0xF0
    if group <= 0x30:  # GSM DCS general data coding: alphabet in bits 3..2
        return ("gsm", "8bit", "ucs2", "gsm")[(data_coding >> 2) & 0x03]
    if group in (0xC0, 0xD0):  # message waiting indication, GSM 7-bit
        return "gsm"
    if group == 0xE0:  # message waiting indication, UCS-2
        return "ucs2"
    if group == 0xF0:  # data coding / message class: bit 2 = 8-bit
        return "8bit" if data_coding & 0x04 else "gsm"
    return "latin-1"


def decode_text(data: bytes, data_coding: int, default_alphabet: str = "gsm") -> str:
    """The text in *data* (user data without UDH) for *data_coding*.

    ``default_alphabet`` is what data_coding 0 means for this peer: ``gsm`` (default), or a
    Python codec name such as ``latin-1`` or ``ascii`` (docs/protocols.md §1.6: SMSC-specific).
    Undecodable octets become U+FFFD; binary codings decode as Latin-1 (lossless).
    """
    alphabet = _alphabet(data_coding)
    if alphabet == "gsm":
        alphabet = default_alphabet
        if alphabet == "gsm":
            return gsm7_decode(data)
    if alphabet == "ucs2" or alphabet == "utf-16-be":
        return data.decode("utf-16-be", "replace")
    if alphabet == "8bit":
        return data.decode("latin-1")
    return data.decode(alphabet, "replace")


# --- long messages: sending ---------------------------------------------------------------


class Part(NamedTuple):
    """One submit_sm's worth of a text."""

    esm_class: int
    data_coding: int
    short_message: bytes
    tlvs: dict[int, bytes]


def encode_parts(
    text: str, mode: LongMode | str = LongMode.UDH, ref: int = 0, esm_class: int = 0
) -> list[Part]:
    """The submit_sm parts of *text*: one part when it fits one SMS (or in ``payload``
    mode), else one per :func:`mta.text.split` part carrying the concatenation reference
    *ref* (its low 8 bits in a UDH, 16 bits in SAR). An empty text gives one empty part."""
    if type(mode) is not LongMode:
        mode = LongMode(mode)
    pieces = split(text)
    if len(pieces) <= 1:
        data_coding, data = encode_text(text)
        return [Part(esm_class, int(data_coding), data, {})]
    data_coding = int(DataCoding.DEFAULT if is_gsm7(text) else DataCoding.UCS2)
    if mode is LongMode.PAYLOAD:
        _, data = encode_text(text)
        return [Part(esm_class, data_coding, b"", {Tag.MESSAGE_PAYLOAD: data})]
    total = len(pieces)
    if total > MAX_PARTS:
        raise CodingError(f"text needs {total} parts; at most {MAX_PARTS} can be concatenated")
    if data_coding == DataCoding.DEFAULT:
        encoded = [piece.translate(_ENCODE_MAP).encode("latin-1") for piece in pieces]
    else:
        encoded = [piece.encode("utf-16-be", "surrogatepass") for piece in pieces]
    if mode is LongMode.UDH:
        ref8 = ref & 0xFF
        udh_esm = esm_class | int(EsmClass.UDHI)
        return [
            Part(udh_esm, data_coding, bytes((5, 0, 3, ref8, total, seq)) + data, {})
            for seq, data in enumerate(encoded, 1)
        ]
    ref_tlv = u16(ref & 0xFFFF)
    total_tlv = u8(total)
    return [
        Part(
            esm_class,
            data_coding,
            data,
            {
                Tag.SAR_MSG_REF_NUM: ref_tlv,
                Tag.SAR_TOTAL_SEGMENTS: total_tlv,
                Tag.SAR_SEGMENT_SEQNUM: u8(seq),
            },
        )
        for seq, data in enumerate(encoded, 1)
    ]


# --- long messages: receiving -------------------------------------------------------------


def split_udh(user_data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """(information elements [(iei, value)], the rest) of user data that starts with a UDH."""
    if not user_data:
        raise CodingError("UDHI set but the user data is empty")
    udhl = user_data[0]
    end = 1 + udhl
    if end > len(user_data):
        raise CodingError(f"UDH length {udhl} exceeds the {len(user_data) - 1} octets of data")
    ies: list[tuple[int, bytes]] = []
    pos = 1
    while pos < end:
        if pos + 2 > end:
            raise CodingError("truncated information element in the UDH")
        iei, iel = user_data[pos], user_data[pos + 1]
        pos += 2
        if pos + iel > end:
            raise CodingError(f"information element 0x{iei:02X} overruns the UDH")
        ies.append((iei, user_data[pos : pos + iel]))
        pos += iel
    return ies, user_data[end:]


class ConcatInfo(NamedTuple):
    """Where a part belongs: reference, total parts, its 1-based number, its user data."""

    ref: int
    total: int
    seq: int
    data: bytes


def concat_info(esm_class: int, short_message: bytes, tlvs: Mapping[int, bytes]) -> ConcatInfo:
    """The concatenation facts of one submit_sm/deliver_sm: from the UDH (IE 0x00, 8-bit
    reference; IE 0x08, 16-bit) when ``esm_class`` has UDHI, else from the SAR TLVs; a
    message that is not a part is ``ConcatInfo(0, 1, 1, data)``. The user data is the
    ``message_payload`` TLV when present, else ``short_message``, without its UDH."""
    payload = tlvs.get(Tag.MESSAGE_PAYLOAD)
    data = payload if payload is not None and not short_message else short_message
    ref, total, seq = 0, 1, 1
    if esm_class & EsmClass.UDHI:
        ies, data = split_udh(data)
        for iei, value in ies:
            if iei == 0x00 and len(value) == 3:
                ref, total, seq = value[0], value[1], value[2]
            elif iei == 0x08 and len(value) == 4:
                ref, total, seq = (value[0] << 8) | value[1], value[2], value[3]
    else:
        sar_total = tlv_int(tlvs, Tag.SAR_TOTAL_SEGMENTS)
        if sar_total is not None:
            ref = tlv_int(tlvs, Tag.SAR_MSG_REF_NUM) or 0
            total = sar_total
            seq = tlv_int(tlvs, Tag.SAR_SEGMENT_SEQNUM) or 0
    if total == 0 or not 1 <= seq <= total:
        raise CodingError(f"part {seq} of {total} is not a valid concatenation")
    return ConcatInfo(ref, total, seq, data)


@dataclass(frozen=True, slots=True)
class Assembled:
    """A whole message: its text, the octets it was decoded from, and how many parts."""

    text: str
    data_coding: int
    user_data: bytes
    parts: int


@dataclass(slots=True)
class _Pending:
    total: int
    data_coding: int
    deadline: float
    parts: dict[int, bytes] = field(default_factory=dict)
    size: int = 0


class Reassembler:
    """Joins the parts of concatenated messages, keyed by (*key*, reference).

    *key* is the caller's choice of who sent the parts (e.g. ``(system_id, source_addr,
    destination_addr)``). At most ``max_pending`` messages and ``max_bytes`` octets wait at a
    time; beyond that, and after ``timeout`` seconds, the oldest incomplete messages are
    dropped (counted in :attr:`dropped`, listed by :meth:`expire`). A part repeated is kept
    once; a part whose total differs from the waiting ones starts the message afresh (the
    reference was reused).
    """

    def __init__(
        self,
        timeout: float = 300.0,
        max_pending: int = 10_000,
        max_bytes: int = 16 << 20,
        default_alphabet: str = "gsm",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.timeout = timeout
        self.max_pending = max_pending
        self.max_bytes = max_bytes
        self.default_alphabet = default_alphabet
        self.dropped = 0
        self._clock = clock
        self._pending: OrderedDict[tuple[Hashable, int], _Pending] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._pending)

    def add(
        self,
        key: Hashable,
        esm_class: int,
        data_coding: int,
        short_message: bytes,
        tlvs: Mapping[int, bytes],
    ) -> Assembled | None:
        """Take one PDU's content; the whole message once its last part arrived, else None.
        Raises :class:`CodingError` for a broken UDH or part numbering."""
        info = concat_info(esm_class, short_message, tlvs)
        if info.total == 1:
            return self._assembled(data_coding, info.data, 1)
        now = self._clock()
        self.expire(now)
        slot = (key, info.ref)
        entry = self._pending.get(slot)
        if entry is not None and entry.total != info.total:
            self._drop(slot)
            entry = None
        if entry is None:
            entry = _Pending(info.total, data_coding, now + self.timeout)
            self._pending[slot] = entry
        old = entry.parts.get(info.seq)
        if old is not None:
            entry.size -= len(old)
            self._bytes -= len(old)
        entry.parts[info.seq] = info.data
        entry.size += len(info.data)
        self._bytes += len(info.data)
        if len(entry.parts) == entry.total:
            del self._pending[slot]
            self._bytes -= entry.size
            data = b"".join(entry.parts[i] for i in range(1, entry.total + 1))
            return self._assembled(entry.data_coding, data, entry.total)
        while self._pending and (
            len(self._pending) > self.max_pending or self._bytes > self.max_bytes
        ):
            oldest = next(iter(self._pending))
            self._drop(oldest)
            self.dropped += 1
        return None

    def expire(self, now: float | None = None) -> list[tuple[Hashable, int]]:
        """Drop the incomplete messages whose time is up; their (key, reference) pairs."""
        if now is None:
            now = self._clock()
        gone: list[tuple[Hashable, int]] = []
        while self._pending:
            slot, entry = next(iter(self._pending.items()))
            if entry.deadline > now:
                break
            self._drop(slot)
            gone.append(slot)
        self.dropped += len(gone)
        return gone

    def _drop(self, slot: tuple[Hashable, int]) -> None:
        entry = self._pending.pop(slot)
        self._bytes -= entry.size

    def _assembled(self, data_coding: int, data: bytes, parts: int) -> Assembled:
        text = decode_text(data, data_coding, self.default_alphabet)
        return Assembled(text, data_coding, data, parts)
