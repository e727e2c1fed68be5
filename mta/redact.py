"""Secret redaction: mask every encoding of given secrets, and any credentials, in a text.

:func:`redact` (and the reusable :class:`Redactor` behind it) replaces with ``***``:

* each secret of 4 or more characters, in any of its text encodings, even mixed: plain,
  percent-encoded (``quote``/``quote_plus``, ``%XX`` in either case, ``+`` for a space,
  ``%25XX`` double-encoded), JSON-escaped (``\\"``, ``\\/``, ``\\n``, ``\\uXXXX``, at any
  escaping depth) and HTML-escaped (``&amp;`` ...);
* base64 of each secret wherever it sits in the encoded bytes (alone, in ``user:secret``,
  after a prefix such as ``App ``), in the standard and the URL-safe alphabets, and base64 of
  such a base64 text (the base64 of an ``Authorization: Basic ...`` value): the whole base64
  run that carries it is masked. A base64 text pins the secret's bytes only where they are
  aligned to its 3-byte groups, so each of the three alignments gives a fixed "core" run of
  characters that every encoding of the secret contains; those cores are what is searched;
* base64 of ``user:secret`` for the given user names, so a secret shorter than 4 characters
  paired with a user is still masked there;
* whatever the secrets, credentials that look like credentials: the value of an
  ``Authorization`` header (or key), a ``Basic <base64 of user:password>`` or
  ``Bearer <token>`` value, the password of a ``scheme://user:password@`` URL (also
  percent-encoded), and the value of ``api_key=``, ``api_secret=``, ``password=``,
  ``token=`` ... parameters and JSON members.

Secrets shorter than 4 characters are not masked on their own: masking "ok" everywhere would
garble every text. Redaction is for error details, log lines and CLI output, not for data.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus, unquote

MASK = "***"
#: Shortest secret (and shortest base64 core) masked on its own.
MIN_LENGTH = 4

_URLSAFE = str.maketrans("+/", "-_")
_JSON_SHORT = {"\n": "n", "\r": "r", "\t": "t", "\b": "b", "\f": "f"}
_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&(?:quot|#34|#x22);", "'": "&(?:#39|#x27);"}


def _hex(value: int, width: int = 2) -> str:
    """``value`` in hex, matched in either case."""
    return "".join(f"[{d.upper()}{d.lower()}]" if d.isalpha() else d for d in f"{value:0{width}x}")


def _char(c: str) -> str:
    """A pattern matching ``c`` plain, percent-encoded, form-encoded, JSON- or HTML-escaped."""
    alts = [r"\\*" + re.escape(c)] if c in '"/\\' else [re.escape(c)]
    if c in _JSON_SHORT:
        alts.append(r"\\+" + _JSON_SHORT[c])
    if c == " ":
        alts.append(r"\+")
    if c in _HTML:
        alts.append(_HTML[c])
    alts.append("".join("%(?:25)?" + _hex(b) for b in c.encode("utf-8")))
    code = ord(c)
    if code < 0x10000:
        alts.append(r"\\+u" + _hex(code, 4))
    else:
        code -= 0x10000
        high, low = 0xD800 + (code >> 10), 0xDC00 + (code & 0x3FF)
        alts.append(r"\\+u" + _hex(high, 4) + r"\\+u" + _hex(low, 4))
    return "(?:" + "|".join(alts) + ")"


def cores(data: bytes) -> set[str]:
    """The base64 runs (standard and URL-safe) found in every base64 text that contains
    ``data``, one per alignment of ``data`` to the 3-byte groups; runs shorter than
    :data:`MIN_LENGTH` are left out."""
    found: set[str] = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + data).decode("ascii")
        start = -(-8 * offset // 6)  # the first character made of data bits only
        end = 8 * (offset + len(data)) // 6  # past the last one
        core = encoded[start:end]
        if len(core) >= MIN_LENGTH:
            found.add(core)
            found.add(core.translate(_URLSAFE))
    return found


def _text_variants(secret: str) -> set[str]:
    """The texts whose base64 is searched: the secret and its percent-encodings."""
    return {secret, quote(secret, safe=""), quote(secret), quote_plus(secret)}


class Redactor:
    """Masks a fixed set of secrets (and credential-looking values); see the module
    docstring. Build it once per set of secrets (:func:`redactor` caches them)."""

    def __init__(self, secrets: Iterable[str] = (), users: Iterable[str] = ()) -> None:
        kept = sorted({s for s in secrets if isinstance(s, str) and len(s) >= MIN_LENGTH})
        self.count = len(kept)
        plain = sorted(kept, key=len, reverse=True)
        self._plain = (
            re.compile("|".join("".join(_char(c) for c in s) for s in plain)) if plain else None
        )
        runs: set[str] = set()
        for secret in kept:
            first: set[str] = set()
            for variant in _text_variants(secret):
                first |= cores(variant.encode("utf-8"))
            runs |= first
            for core in first:  # base64 of a base64 text that carries the secret
                runs |= cores(core.encode("ascii"))
        # A secret of 4+ characters is found by its cores at any alignment, so only the short
        # ones need their user:secret pairs spelled out.
        for user in {u for u in users if isinstance(u, str) and u}:
            for secret in {s for s in secrets if isinstance(s, str) and s} - set(kept):
                encoded = base64.b64encode(f"{user}:{secret}".encode()).decode("ascii")
                runs |= {encoded.rstrip("="), encoded.rstrip("=").translate(_URLSAFE)}
        # Cores by their first characters: a base64 run of the text is checked position by
        # position against the few cores that start there (fast with many secrets).
        self._runs: dict[str, list[str]] = {}
        for run in sorted(runs, key=len, reverse=True):
            if len(run) >= MIN_LENGTH:
                self._runs.setdefault(run[:MIN_LENGTH], []).append(run)
        self._shortest = min((len(r) for r in runs if len(r) >= MIN_LENGTH), default=0)

    def __repr__(self) -> str:  # never the secrets
        return f"<Redactor of {self.count} secret(s)>"

    def __call__(self, text: str) -> str:
        spans: list[tuple[int, int]] = []
        if self._plain is not None:
            spans.extend(m.span() for m in self._plain.finditer(text))
        if self._runs:
            for match in _B64_RUN.finditer(text):
                if match.end() - match.start() >= self._shortest and self._carries(
                    _b64_normal(match.group())
                ):
                    spans.append(match.span())
        if spans:
            text = _mask_spans(text, spans)
        return redact_credentials(text)

    def _carries(self, run: str) -> bool:
        """Whether a base64 run contains one of the secrets' cores."""
        for i in range(len(run) - MIN_LENGTH + 1):
            for core in self._runs.get(run[i : i + MIN_LENGTH], ()):
                if run.startswith(core, i):
                    return True
        return False


#: A run of base64 characters (both alphabets), with '+', '/' and '=' also percent-encoded
#: (once or twice) or '/' JSON-escaped, as encoders leave them.
_B64_RUN = re.compile(r"(?:[A-Za-z0-9+/_=\-]|%(?:25)?(?:2[bBfF]|3[dD])|\\/)+")
_B64_ESCAPES = re.compile(r"%(?:25)?(2[bBfF]|3[dD])|\\/")


def _b64_normal(run: str) -> str:
    """A base64 run with its escapes undone."""
    if "%" not in run and "\\" not in run:
        return run
    return _B64_ESCAPES.sub(lambda m: unquote("%" + m.group(1)) if m.group(1) else "/", run)


def _mask_spans(text: str, spans: list[tuple[int, int]]) -> str:
    spans.sort()
    out: list[str] = []
    position = 0
    for start, end in spans:
        if end <= position:
            continue
        if start > position:
            out.append(text[position:start])
            out.append(MASK)
        elif not out or out[-1] != MASK:
            out.append(MASK)
        position = end
    out.append(text[position:])
    return "".join(out)


# --- credentials found by their look, whatever the secrets ---------------------------------
_SEP = r"(?:\s+|%20|\+)"
_BASIC = re.compile(r"(?i)\b(basic" + _SEP + r")((?:[A-Za-z0-9+/_\-]|\\/|%2[bBfF])+(?:=|%3[dD])*)")
_BEARER = re.compile(r"(?i)\b(bearer" + _SEP + r")((?:[A-Za-z0-9+/_.~\-]|\\/|%[0-9a-fA-F]{2})+=*)")
_SCHEMES = r"(?:basic|bearer|app|token|key|digest)"
_AUTH_HEADER = re.compile(
    r"(?i)(\b(?:proxy-)?authori[sz]ation\\*[\"']?\s*(?:[:=]|%3[aA])\s*\\*[\"']?)"
    r"((?>(?:" + _SCHEMES + r"(?:\s+|%20|\+))?))"
    r"(?!" + _SCHEMES + r"(?:[\"'\\\s,;&<>]|$))"  # a scheme named alone is no credential
    r"([^\"'\\\s,;&<>]+)"
)
_USERINFO = re.compile(
    r"(?i)\b([a-z][a-z0-9+.\-]*:(?:\\?/){2}[^\s/@:\"'<>\\]*:)([^\s/\"'<>\\]+)(@)"
)
_USERINFO_ENCODED = re.compile(
    r"(?i)\b([a-z][a-z0-9+.\-]*%3a%2f%2f(?:(?!%2f|%40)[^\s&\"'<>])*?%3a)"
    r"((?:(?!%2f)[^\s&\"'<>])+)(%40)"
)
_NAMES = (
    r"(?:api[_\-]?(?:key|secret)|auth[_\-]?token|access[_\-]?token|secret[_\-]?key|"
    r"signature[_\-]?secret|client[_\-]?secret|password|passwd|secret|token|"
    r"proxy[_\-]?password)"
)
_PARAM = re.compile(r"(?i)(\b" + _NAMES + r"=)([^&\s\"'<>]+)")
_JSON_MEMBER = re.compile(r"(?i)(\\*\"" + _NAMES + r"\\*\"\s*:\s*\\*\")((?:[^\"\\]|\\[^\"])+)")


def _basic(match: re.Match[str]) -> str:
    """Mask a Basic value when it decodes to ``user:password``."""
    token = unquote(match.group(2).replace("\\/", "/"))
    try:
        decoded = base64.b64decode(token + "=" * (-len(token) % 4), altchars=None, validate=False)
    except (binascii.Error, ValueError):
        decoded = b""
    if b":" not in decoded:
        try:
            decoded = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            return match.group(0)
    return match.group(1) + MASK if b":" in decoded else match.group(0)


def _bearer(match: re.Match[str]) -> str:
    token = match.group(2)
    if len(token) < 8 or re.fullmatch(r"[A-Za-z][a-z]*", token):
        return match.group(0)  # a word of prose ("bearer of bad news"), not a token
    return match.group(1) + MASK


def redact_credentials(text: str) -> str:
    """``text`` with credential-looking values masked, whatever the configured secrets:
    ``Authorization`` values, ``Basic``/``Bearer`` tokens, URL passwords and
    ``password=``-like parameters (module docstring)."""
    if not text:
        return text
    text = _AUTH_HEADER.sub(lambda m: m.group(1) + (m.group(2) or "") + MASK, text)
    text = _BASIC.sub(_basic, text)
    text = _BEARER.sub(_bearer, text)
    text = _USERINFO.sub(lambda m: m.group(1) + MASK + m.group(3), text)
    text = _USERINFO_ENCODED.sub(lambda m: m.group(1) + MASK + m.group(3), text)
    text = _PARAM.sub(lambda m: m.group(1) + MASK, text)
    return _JSON_MEMBER.sub(lambda m: m.group(1) + MASK, text)


@functools.lru_cache(maxsize=512)
def _cached(secrets: frozenset[str], users: frozenset[str]) -> Redactor:
    return Redactor(secrets, users)


def redactor(secrets: Iterable[str] = (), users: Iterable[str] = ()) -> Redactor:
    """The (cached) :class:`Redactor` of these secrets and user names."""
    return _cached(
        frozenset(s for s in secrets if isinstance(s, str) and s),
        frozenset(u for u in users if isinstance(u, str) and u),
    )


def redact(text: str, secrets: Iterable[str] = (), users: Iterable[str] = ()) -> str:
    """``text`` with every encoding of every secret, and any credential, masked as ``***``.

    ``users`` are user names that may be paired with a secret as ``user:secret`` (Basic auth,
    URL userinfo); their base64 pairs are masked even for secrets shorter than 4 characters.
    """
    return redactor(secrets, users)(text)


def mask_url(url: str) -> str:
    """``url`` for display: the password of its ``user:password@`` replaced by ``***``."""
    return redact_credentials(url)
