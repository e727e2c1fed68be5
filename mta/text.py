"""Segments and encodings of SMS text: GSM 03.38 (7-bit) or UCS-2, as operators count them.

A text is sent as GSM-7 when every character is in the GSM 03.38 basic table or its
extension table; an extension character costs two septets (ESC + code). A single SMS
holds 160 septets, a part of a concatenated SMS 153 (the UDH takes the rest). Any other
text is sent as UCS-2 (UTF-16 code units): 70 units in a single SMS, 67 per part, and a
character outside the BMP (most emoji) costs two units (a surrogate pair). Parts are
packed greedily and never split an escape pair or a surrogate pair, so a character that
does not fit whole in the current part starts the next one.
"""

from __future__ import annotations

import codecs
import enum
import functools
import importlib
from dataclasses import dataclass
from typing import Final

__all__ = [
    "GSM7_BASIC",
    "GSM7_EXTENSION",
    "GSM7_PART",
    "GSM7_SINGLE",
    "UCS2_PART",
    "UCS2_SINGLE",
    "Encoding",
    "Segments",
    "is_gsm7",
    "measure",
    "segment_count",
    "split",
]


class Encoding(enum.StrEnum):
    GSM7 = "gsm7"
    UCS2 = "ucs2"


@dataclass(frozen=True, slots=True)
class Segments:
    encoding: Encoding
    units: int  # GSM-7 septets (extension chars count 2) or UTF-16 code units
    count: int  # number of SMS parts (0 for empty text)


_ESCAPE: Final = 0x1B


def _derive_tables() -> tuple[frozenset[str], frozenset[str]]:
    """Build the basic and extension character sets from the gsm0338 codec.

    Importing gsm0338 registers the 'gsm03.38' codec; each 7-bit code is decoded on its
    own (basic table, ESC excluded) and after ESC (extension table, unmapped codes raise).
    """
    importlib.import_module("gsm0338")
    codec = codecs.lookup("gsm03.38")
    basic: set[str] = set()
    extension: set[str] = set()
    for code in range(128):
        if code == _ESCAPE:
            continue
        char, _ = codec.decode(bytes((code,)))
        basic.add(char)
        try:
            ext_char, _ = codec.decode(bytes((_ESCAPE, code)))
        except UnicodeDecodeError:
            continue
        extension.add(ext_char)
    for char in basic | extension:
        expected = 1 if char in basic else 2
        if len(char) != 1 or len(codec.encode(char)[0]) != expected:
            raise RuntimeError(f"gsm0338 table does not round-trip for {char!r}")
    return frozenset(basic), frozenset(extension)


_TABLES: Final = _derive_tables()
GSM7_BASIC: Final[frozenset[str]] = _TABLES[0]
GSM7_EXTENSION: Final[frozenset[str]] = _TABLES[1]


def _check_tables() -> None:
    codec = codecs.lookup("gsm03.38")
    problems: list[str] = []
    if len(GSM7_BASIC) != 127:  # 128 codes minus ESC
        problems.append(f"basic table has {len(GSM7_BASIC)} chars, expected 127")
    for char, code in (("@", 0x00), ("$", 0x02), ("\u00a7", 0x5F), ("\u00a4", 0x24)):
        if char not in GSM7_BASIC or codec.encode(char)[0] != bytes((code,)):
            problems.append(f"{char!r} is not basic code {code:#04x}")
    if "`" in GSM7_BASIC or "`" in GSM7_EXTENSION:
        problems.append("backtick must not be in the GSM 03.38 alphabet")
    if frozenset("\f^{}\\[~]|\u20ac") != GSM7_EXTENSION:
        problems.append(f"unexpected extension table {sorted(GSM7_EXTENSION)!r}")
    if GSM7_BASIC & GSM7_EXTENSION:
        problems.append("basic and extension tables overlap")
    if problems:
        raise RuntimeError("gsm0338 tables are not GSM 03.38: " + "; ".join(problems))


_check_tables()

_GSM7_ALL: Final = GSM7_BASIC | GSM7_EXTENSION
_GSM7_EXT_CHARS: Final = tuple(sorted(GSM7_EXTENSION))

GSM7_SINGLE: Final = 160
GSM7_PART: Final = 153
UCS2_SINGLE: Final = 70
UCS2_PART: Final = 67


def _gsm7_extra(text: str) -> int:
    """Number of extension characters (each costs one more septet)."""
    return sum(map(text.count, _GSM7_EXT_CHARS))


def _ucs2_extra(text: str) -> int:
    """Number of non-BMP characters (each costs one more UTF-16 code unit)."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2 - len(text)


def _is_wide_gsm7(char: str) -> bool:
    return char in GSM7_EXTENSION


def _is_wide_ucs2(char: str) -> bool:
    return ord(char) > 0xFFFF


def _cuts(text: str, encoding: Encoding) -> list[int]:
    """Greedy part boundaries (start index of each part) for a multi-part text.

    Each part takes the longest prefix of what remains whose weight fits the part limit;
    a double-width character that does not fit starts the next part.
    """
    if encoding is Encoding.GSM7:
        limit, extra_of, is_wide = GSM7_PART, _gsm7_extra, _is_wide_gsm7
    else:
        limit, extra_of, is_wide = UCS2_PART, _ucs2_extra, _is_wide_ucs2
    starts: list[int] = []
    pos = 0
    n = len(text)
    while pos < n:
        starts.append(pos)
        window = text[pos : pos + limit]
        extra = extra_of(window)
        if extra == 0:
            pos += len(window)
            continue
        # The first limit - extra chars fit whatever they are; extend one char at a time.
        k = limit - extra
        used = k + extra_of(window[:k])
        while k < len(window):
            weight = 2 if is_wide(window[k]) else 1
            if used + weight > limit:
                break
            used += weight
            k += 1
        pos += k
    return starts


def _count(units: int, length: int, single: int, part: int) -> int:
    if units <= single:
        return 1
    if units == length:  # no double-width char: nothing to keep together
        return -(-units // part)
    return 0  # caller must pack


def _classify(text: str) -> tuple[Encoding, int]:
    # issuperset() iterates the str directly and stops at the first miss: no set is built.
    if GSM7_BASIC.issuperset(text):
        return Encoding.GSM7, len(text)
    if _GSM7_ALL.issuperset(text):
        return Encoding.GSM7, len(text) + _gsm7_extra(text)
    return Encoding.UCS2, len(text) + _ucs2_extra(text)


def measure(text: str) -> Segments:
    """Encoding, size in septets / UTF-16 units, and number of SMS parts of *text*."""
    if not text:
        return Segments(Encoding.GSM7, 0, 0)
    encoding, units = _classify(text)
    if encoding is Encoding.GSM7:
        count = _count(units, len(text), GSM7_SINGLE, GSM7_PART)
    else:
        count = _count(units, len(text), UCS2_SINGLE, UCS2_PART)
    if count == 0:
        count = len(_cuts(text, encoding))
    return Segments(encoding, units, count)


@functools.lru_cache(maxsize=4096)
def segment_count(text: str) -> int:
    """Number of SMS parts needed for *text* (0 for empty text).

    Cached: bulk campaigns send one text to many numbers, so most calls are repeats.
    """
    return measure(text).count


def split(text: str) -> list[str]:
    """*text* cut into its SMS parts; ``[text]`` if it fits one SMS, ``[]`` if empty."""
    if not text:
        return []
    encoding, units = _classify(text)
    single = GSM7_SINGLE if encoding is Encoding.GSM7 else UCS2_SINGLE
    if units <= single:
        return [text]
    starts = _cuts(text, encoding)
    ends = [*starts[1:], len(text)]
    return [text[a:b] for a, b in zip(starts, ends, strict=True)]


def is_gsm7(text: str) -> bool:
    """True if every character of *text* is in the GSM 03.38 basic or extension table."""
    return _GSM7_ALL.issuperset(text)
