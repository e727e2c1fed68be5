"""Internal republishes: signing the ``x-mta-*`` headers, and trusting only signed ones.

The worker republishes messages itself — to the delayed-retry queues and, for held messages
whose ``startTime`` came, to the send exchange — with headers that carry their message ids,
attempt number and release. An upstream publishing on the same exchange could set those
headers too; so the worker signs them, with the body, by a keyed BLAKE2b whose key is made once
and kept in Redis (:meth:`mta.store.Store.signing_key`). A batch that carries any of them
without a valid signature is refused whole (``<prefix>.dead``): nothing of it is sent, under
no id, at no time it chose.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from mta.topology import (
    HEADER_ATTEMPT,
    HEADER_IDS,
    HEADER_RELEASED,
    HEADER_SIGNATURE,
    HEADER_SINCE,
    INTERNAL_HEADERS,
)

__all__ = ["Forged", "Internal", "read_internal", "sign"]


@dataclass(slots=True)
class Internal:
    """What the signed ``x-mta-*`` headers of an internal republish say."""

    ids: list[str] | None = None
    attempt: int = 0
    released: bool = False
    since_ms: int = 0  # when the MTA first handled these messages (epoch ms; 0: not said)

    def headers(self, key: bytes, message_id: str, body: bytes) -> dict[str, Any]:
        """The headers of a republish that says this, signed."""
        out: dict[str, Any] = {
            HEADER_IDS: self.ids or [],
            HEADER_ATTEMPT: self.attempt,
            HEADER_SINCE: self.since_ms,
            HEADER_SIGNATURE: sign(key, message_id, body, self),
        }
        if self.released:
            out[HEADER_RELEASED] = 1
        return out


def sign(key: bytes, message_id: str, body: bytes, internal: Internal) -> str:
    """The signature of an internal republish: its id, what its headers say, and its body."""
    mac = hashlib.blake2b(key=key, digest_size=16)
    said = (
        message_id,
        *(internal.ids or []),
        str(internal.attempt),
        "1" if internal.released else "",
        str(internal.since_ms),
    )
    mac.update("\x00".join(said).encode())
    mac.update(b"\x00")
    mac.update(body)
    return mac.hexdigest()


class Forged(ValueError):
    """``x-mta-*`` headers that this MTA did not sign (an upstream's, or a stale key's)."""


def read_internal(
    key: bytes, message_id: str, body: bytes, size: int, headers: dict[str, Any], max_attempts: int
) -> Internal:
    """Trust the internal headers only with a valid signature; raise :class:`Forged` else."""
    if not any(name in headers for name in INTERNAL_HEADERS):
        return Internal()
    raw_ids = headers.get(HEADER_IDS)
    attempt = headers.get(HEADER_ATTEMPT, 0)
    since = headers.get(HEADER_SINCE, 0)
    released = bool(headers.get(HEADER_RELEASED))
    given = headers.get(HEADER_SIGNATURE)
    if isinstance(given, bytes):
        given = given.decode("ascii", "replace")
    ids = None if raw_ids is None else _header_ids(raw_ids, size)
    if raw_ids is not None and ids is None:
        raise Forged(f"header {HEADER_IDS} does not match the messages")
    if type(attempt) is not int or not 0 <= attempt <= max_attempts:
        raise Forged(f"header {HEADER_ATTEMPT} is not an attempt number: {attempt!r:.40}")
    if type(since) is not int or since < 0:
        raise Forged(f"header {HEADER_SINCE} is not a time: {since!r:.40}")
    internal = Internal(ids, attempt, released, since)
    expected = sign(key, message_id, body, internal)
    if not isinstance(given, str) or not hmac.compare_digest(given, expected):
        raise Forged(
            "x-mta-* headers without a valid signature: they are set by the MTA only; "
            "publish batches without them"
        )
    return internal


def _header_ids(header: Any, size: int) -> list[str] | None:
    """Message ids carried by an internal batch (retry, released), or None if malformed."""
    if not isinstance(header, list) or len(header) != size:
        return None
    ids = [x.decode("utf-8", "replace") if isinstance(x, bytes) else x for x in header]
    if not all(isinstance(x, str) and ":" in x for x in ids):
        return None
    return ids
