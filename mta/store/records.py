"""The records the store keeps: marker letters, TTLs, pending records, a batch's write, a claim.

Plain data, packed as short JSON arrays or hash fields; the keys they live under are spelled in
:mod:`mta.store` only.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

MARK_INFLIGHT = "i"
MARK_TAKEN = "q"
MARK_DONE = "o"
MARK_HELD = "h"
MARK_RETRY = "r"
MARK_CANCELLED = "c"
CANCEL_TTL_S = 2 * 86400

OUTBOX_GRACE_MS = 30_000
MAX_CLAIM = 2000
RECEIPT_TTL_S = 3 * 86400
DEDUP_TTL_S = 3600
#: Markers of a batch the worker sent to ``<prefix>.dead`` are kept this long, so replaying it
#: (``mta dead replay``) within that time never resends a message whose Send was recorded.
DEAD_MARKERS_TTL_S = 7 * 86400


def as_str(value: Any) -> str:
    """A Redis reply (bytes, or already text) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def now_ms() -> int:
    return int(time.time() * 1000)


def pack_pending(*fields: Any) -> bytes:
    """Pack a pending record's fields, in :class:`Pending`'s order, as a short JSON array."""
    return orjson.dumps(fields)


@dataclass(slots=True)
class Pending:
    """What the reporter needs of a submitted message; packed as a short JSON array."""

    account: str
    partner_id: str
    mobile: str
    account_id: int
    sender_id: int
    sms_type: str
    deadline_ms: int
    submitted_ms: int
    count: int
    send_at: str
    packet_id: str
    attempts: int
    note: str = ""  # said before the final's partnerDetail: the fallback sender, a failover

    def pack(self) -> bytes:
        return orjson.dumps(
            [
                self.account,
                self.partner_id,
                self.mobile,
                self.account_id,
                self.sender_id,
                self.sms_type,
                self.deadline_ms,
                self.submitted_ms,
                self.count,
                self.send_at,
                self.packet_id,
                self.attempts,
                *([self.note] if self.note else []),
            ]
        )

    @classmethod
    def unpack(cls, raw: bytes) -> Pending:
        return cls(*orjson.loads(raw))


@dataclass(slots=True)
class BatchRecord:
    """Everything one worker pass over a batch writes, in one MULTI/EXEC."""

    markers: dict[str, dict[str, str]]  # batchId → index → marker
    pending: dict[str, bytes]
    due: dict[str, int]
    held: dict[str, int]
    held_data: dict[str, bytes]
    outbox: dict[str, bytes]
    #: account → partner id → message id, for accounts whose partner pushes receipts
    partners: dict[str, dict[str, str]] = field(default_factory=dict)
    #: outbox entries of earlier batches, confirmed by the broker: deleted in this write
    forget: list[str] = field(default_factory=list)
    #: names this write: a retry after an outage skips the shards where it landed already
    token: str = field(default_factory=lambda: os.urandom(8).hex())
    tried: bool = False


@dataclass(slots=True)
class Claim:
    """Messages a reporter leased, with the token that proves the lease is still its own."""

    token: int
    records: dict[str, bytes]
    orphans: list[str]
