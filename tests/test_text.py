import random

import pytest

from mta.text import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    Encoding,
    Segments,
    is_gsm7,
    measure,
    segment_count,
    split,
)

EURO = "\u20ac"
GRIN = "\U0001f600"  # 😀, outside the BMP: a surrogate pair in UTF-16
# s-cedilla, g-breve, dotless i, capital I with dot above
TURKISH_NON_GSM = ["\u015f", "\u011f", "\u0131", "\u0130"]
TURKISH_GSM = ["\u00c7", "\u00d6", "\u00dc", "\u00f6", "\u00fc"]  # Ç Ö Ü ö ü


def _units(text: str, encoding: Encoding) -> int:
    """Reference size, computed independently of mta.text's internals."""
    if encoding is Encoding.GSM7:
        return sum(2 if c in GSM7_EXTENSION else 1 for c in text)
    return len(text.encode("utf-16-le")) // 2


def _reference_split(text: str) -> list[str]:
    """Naive char-by-char greedy packing, for comparison."""
    encoding = Encoding.GSM7 if is_gsm7(text) else Encoding.UCS2
    single, part = (160, 153) if encoding is Encoding.GSM7 else (70, 67)
    if not text:
        return []
    if _units(text, encoding) <= single:
        return [text]
    parts: list[str] = []
    current = ""
    used = 0
    for char in text:
        weight = _units(char, encoding)
        if used + weight > part:
            parts.append(current)
            current, used = "", 0
        current += char
        used += weight
    parts.append(current)
    return parts


def _check_parts(text: str) -> None:
    seg = measure(text)
    parts = split(text)
    assert "".join(parts) == text
    assert seg.count == len(parts) == segment_count(text)
    assert seg.units == _units(text, seg.encoding)
    single, part_limit = (160, 153) if seg.encoding is Encoding.GSM7 else (70, 67)
    limit = single if seg.count == 1 else part_limit
    for part in parts:
        assert part
        assert _units(part, seg.encoding) <= limit
    assert parts == _reference_split(text)


# --- character tables -------------------------------------------------------------------


def test_tables_derived_from_gsm0338() -> None:
    assert len(GSM7_BASIC) == 127  # 128 codes minus ESC
    assert frozenset("\f^{}\\[~]|" + EURO) == GSM7_EXTENSION
    assert not GSM7_BASIC & GSM7_EXTENSION
    assert "\x1b" not in GSM7_BASIC
    assert {"\n", "\r", " "} <= GSM7_BASIC
    assert isinstance(GSM7_BASIC, frozenset)
    assert isinstance(GSM7_EXTENSION, frozenset)


@pytest.mark.parametrize("char", ["@", "$", "\u00a7", "\u00a4", "\u00a3", "\u00a5", "\u00e0"])
def test_basic_chars_are_gsm7(char: str) -> None:
    assert char in GSM7_BASIC
    assert is_gsm7(char)
    assert measure(char) == Segments(Encoding.GSM7, 1, 1)


def test_backtick_is_not_gsm7() -> None:
    assert "`" not in GSM7_BASIC
    assert "`" not in GSM7_EXTENSION
    assert not is_gsm7("`")
    assert not is_gsm7("run `ls`")
    assert measure("`") == Segments(Encoding.UCS2, 1, 1)


@pytest.mark.parametrize("char", TURKISH_NON_GSM)
def test_turkish_non_gsm_chars_switch_to_ucs2(char: str) -> None:
    assert not is_gsm7(char)
    text = "Merhaba " + char
    assert measure(text) == Segments(Encoding.UCS2, len(text), 1)


@pytest.mark.parametrize("char", TURKISH_GSM)
def test_turkish_gsm_chars_stay_gsm7(char: str) -> None:
    assert char in GSM7_BASIC
    assert measure("G\u00fcle g\u00fcle " + char).encoding is Encoding.GSM7


def test_encoding_values() -> None:
    assert str(Encoding.GSM7) == "gsm7"
    assert str(Encoding.UCS2) == "ucs2"
    assert Encoding("ucs2") is Encoding.UCS2


def test_empty_text() -> None:
    assert measure("") == Segments(Encoding.GSM7, 0, 0)
    assert segment_count("") == 0
    assert split("") == []
    assert is_gsm7("")


# --- GSM-7 ------------------------------------------------------------------------------


def test_gsm7_single_part_boundary() -> None:
    assert measure("a" * 160) == Segments(Encoding.GSM7, 160, 1)
    assert measure("a" * 161) == Segments(Encoding.GSM7, 161, 2)
    assert split("a" * 160) == ["a" * 160]
    assert split("a" * 161) == ["a" * 153, "a" * 8]


def test_gsm7_multi_part_boundary() -> None:
    assert segment_count("a" * 153 * 2) == 2
    assert segment_count("a" * (153 * 2 + 1)) == 3
    assert segment_count("a" * 153 * 3) == 3
    assert split("a" * (153 * 2 + 1)) == ["a" * 153, "a" * 153, "a"]


def test_extension_chars_count_two_septets() -> None:
    assert measure(EURO) == Segments(Encoding.GSM7, 2, 1)
    assert measure("{x}") == Segments(Encoding.GSM7, 5, 1)
    assert measure(EURO * 80) == Segments(Encoding.GSM7, 160, 1)
    assert measure(EURO * 81) == Segments(Encoding.GSM7, 162, 2)
    assert measure("a" * 159 + "^") == Segments(Encoding.GSM7, 161, 2)
    for char in GSM7_EXTENSION:
        assert measure(char) == Segments(Encoding.GSM7, 2, 1)


def test_escape_pair_never_split() -> None:
    text = "a" * 152 + EURO + "b" * 10
    assert measure(text) == Segments(Encoding.GSM7, 164, 2)
    assert split(text) == ["a" * 152, EURO + "b" * 10]
    # Division alone would say 306 septets -> 2 parts; packing needs 3.
    text = "a" * 152 + EURO + "b" * 152
    assert measure(text) == Segments(Encoding.GSM7, 306, 3)
    parts = split(text)
    assert parts == ["a" * 152, EURO + "b" * 151, "b"]
    assert "".join(parts) == text
    assert all(_units(p, Encoding.GSM7) <= 153 for p in parts)


def test_all_extension_text_packs_76_per_part() -> None:
    parts = split(EURO * 200)
    assert [len(p) for p in parts] == [76, 76, 48]
    assert segment_count(EURO * 200) == 3


# --- UCS-2 ------------------------------------------------------------------------------


def test_emoji_switches_to_ucs2_and_counts_two_units() -> None:
    assert not is_gsm7(GRIN)
    assert measure(GRIN) == Segments(Encoding.UCS2, 2, 1)
    assert measure("hello " + GRIN) == Segments(Encoding.UCS2, 8, 1)
    assert measure(GRIN * 35) == Segments(Encoding.UCS2, 70, 1)
    assert measure(GRIN * 36) == Segments(Encoding.UCS2, 72, 2)


def test_surrogate_pair_never_split() -> None:
    text = "a" * 66 + GRIN + "a" * 10
    assert measure(text) == Segments(Encoding.UCS2, 78, 2)
    assert split(text) == ["a" * 66, GRIN + "a" * 10]
    # Division alone would say 134 units -> 2 parts; packing needs 3.
    text = "a" * 66 + GRIN + "a" * 66
    assert measure(text) == Segments(Encoding.UCS2, 134, 3)
    parts = split(text)
    assert parts == ["a" * 66, GRIN + "a" * 65, "a"]
    assert all(_units(p, Encoding.UCS2) <= 67 for p in parts)


def test_ucs2_single_part_boundary() -> None:
    s = "\u015f"
    assert measure(s * 70) == Segments(Encoding.UCS2, 70, 1)
    assert measure(s * 71) == Segments(Encoding.UCS2, 71, 2)
    assert split(s * 71) == [s * 67, s * 4]


def test_ucs2_multi_part_boundary() -> None:
    s = "\u011f"
    assert measure(s * 67 * 3) == Segments(Encoding.UCS2, 201, 3)
    assert segment_count(s * (67 * 3 + 1)) == 4
    assert split(s * 67 * 3) == [s * 67] * 3


def test_ucs2_text_with_extension_chars_counts_them_once() -> None:
    # In UCS-2 an extension char like the euro sign is a single code unit.
    assert measure(EURO + "\u0131") == Segments(Encoding.UCS2, 2, 1)


# --- split / properties -----------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "hi",
        "a" * 160,
        "a" * 400,
        EURO * 81,
        "x" * 150 + "[]{}" * 20,
        "\u015fe" * 100,
        GRIN * 100,
        ("Merhaba d\u00fcnya " + GRIN) * 20,
        "line\nbreak\r\n" * 40,
    ],
)
def test_split_round_trips(text: str) -> None:
    _check_parts(text)


def test_single_part_split_returns_text() -> None:
    for text in ["hello", EURO * 80, GRIN * 35, "\u0130" * 70]:
        assert split(text) == [text]


def test_property_pseudo_random_texts() -> None:
    rng = random.Random(1234)
    basic = sorted(GSM7_BASIC)
    extension = sorted(GSM7_EXTENSION)
    turkish = TURKISH_NON_GSM + TURKISH_GSM
    emoji = [GRIN, "\U0001f44d", "\U0001f680", "\u2764"]
    for i in range(400):
        pools: list[list[str]] = [basic]
        if i % 2:
            pools.append(extension)
        if i % 5 == 0:
            pools.append(turkish)
        if i % 7 == 0:
            pools.append(emoji)
        length = rng.choice([rng.randint(0, 80), rng.randint(60, 200), rng.randint(140, 700)])
        text = "".join(rng.choice(rng.choice(pools)) for _ in range(length))
        _check_parts(text)
        assert is_gsm7(text) == (measure(text).encoding is Encoding.GSM7)
