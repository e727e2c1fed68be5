"""The per-message records of the SMPP server: what query_sm, cancel_sm and receipts need.

* :class:`MessageRecord` is what the server keeps of every message submitted through it
  (addresses, registered_delivery, state, the ids given to its parts, …);
  :class:`ReceiptDelivery` is one receipt to send: the id the client knows, the state, and the
  message's record.
* :class:`MessageRecords` holds the records in Redis. Keys (``P`` = ``{<prefix>}``, the hash
  tag every key of the prefix shares):

  ``P:smpp:m:<batchId>``  hash  index → :class:`MessageRecord` (a short JSON array) of the
                          message ``<batchId>:<index>``; written by one script per micro-batch,
                          expires ``RECORD_TTL_S`` (48 h) after its last update.
  ``P:smpp:a:<partId>``   string  the MMP message id of the long message a non-final part
                          belongs to (see :mod:`mta.smppserver` on part ids), same TTL.

The receipts waiting for a client to bind are :mod:`mta.smppserver.receipt_stash`'s. The key
names themselves are spelled in :mod:`mta.store`, with every other Redis key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from mta.smpp.receipt import MessageState
from mta.store import Store

__all__ = ["RECORD_TTL_S", "MessageRecord", "MessageRecords", "ReceiptDelivery"]

RECORD_TTL_S: Final = 48 * 3600

# KEYS: the batch's hash, then the key of each part id; ARGV: ttl, n, then n field/record
# pairs (fields "0".."n-1"), then the message id of each part id: one command for the whole
# batch, and the HSET's arguments taken from ARGV as they are (no Lua loop building them)
_ADD_BATCH: Final = """
local ttl = ARGV[1]
local last = 2 + 2 * tonumber(ARGV[2])
for i = 3, last, 1000 do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 999, last)))
end
redis.call('EXPIRE', KEYS[1], ttl)
for k = 2, #KEYS do
  redis.call('SET', KEYS[k], ARGV[last + k - 1], 'EX', ttl)
end
return 1
"""
_FIELDS: Final = tuple(str(i) for i in range(1024))  # the hash's field names, built once
_FINAL_STATES: Final = frozenset(int(s) for s in MessageState if s.final)


@dataclass(slots=True)
class MessageRecord:
    """What the server keeps of one submitted message (packed as a JSON array, ~150 octets).

    ``state`` is a :class:`~mta.smpp.receipt.MessageState` (ENROUTE until the final);
    ``final_ms`` when it became final (0 before); ``parts`` the ids given to the non-final
    parts of a long message (each gets its own receipt); ``text`` the first 20 characters
    (the receipt's ``text:``); ``err`` the receipt's ``err:``.
    """

    state: int
    final_ms: int
    system_id: str
    registered_delivery: int
    source_ton: int
    source_npi: int
    source_addr: str
    dest_ton: int
    dest_npi: int
    dest_addr: str
    submit_ms: int
    text: str
    err: int = 0
    parts: list[str] = field(default_factory=list)
    account_id: int = 0

    @property
    def final(self) -> bool:
        return self.state in _FINAL_STATES

    def pack(self) -> bytes:
        return orjson.dumps(
            [
                self.state,
                self.final_ms,
                self.system_id,
                self.registered_delivery,
                self.source_ton,
                self.source_npi,
                self.source_addr,
                self.dest_ton,
                self.dest_npi,
                self.dest_addr,
                self.submit_ms,
                self.text,
                self.err,
                self.parts,
                self.account_id,
            ]
        )

    @classmethod
    def unpack(cls, raw: bytes) -> MessageRecord:
        return cls(*orjson.loads(raw))


@dataclass(slots=True)
class ReceiptDelivery:
    """One receipt to send: the id the client knows, the state, and the message's record
    (``raw``: what it was unpacked from, for one taken from the stash)."""

    message_id: str
    state: int
    done_ms: int
    record: MessageRecord
    raw: bytes = b""

    def pack(self) -> bytes:
        return orjson.dumps(
            [self.message_id, self.state, self.done_ms, orjson.Fragment(self.record.pack())]
        )

    @classmethod
    def unpack(cls, raw: bytes) -> ReceiptDelivery:
        message_id, state, done_ms, record = orjson.loads(raw)
        return cls(message_id, state, done_ms, MessageRecord(*record), raw)


class MessageRecords:
    """The message records in Redis under one prefix (see the module docstring for the keys)."""

    def __init__(self, store: Store) -> None:
        self.r = store.r
        self.batch_key = store.smpp_batch_key
        self.part_key = store.smpp_part_key
        self._add_batch = self.r.register_script(_ADD_BATCH)

    async def add_batch(
        self, batch_id: str, records: Sequence[MessageRecord], parts: dict[str, str]
    ) -> None:
        """Record a micro-batch's messages (index → record) and its part ids: one script, so
        one command and one answer however many there are."""
        if not records:
            return
        n = len(records)
        keys = [self.batch_key(batch_id)]
        args: list[Any] = [RECORD_TTL_S, n, *([None] * (2 * n))]
        args[2::2] = _FIELDS[:n] if n <= len(_FIELDS) else [str(i) for i in range(n)]
        args[3::2] = [r.pack() for r in records]
        if parts:
            keys += [self.part_key(part_id) for part_id in parts]
            args += parts.values()
        await self._add_batch(keys=keys, args=args)

    async def resolve(self, given_id: str) -> str | None:
        """The MMP message id of an id we gave out (itself, or the one a part id maps to)."""
        if ":" in given_id:
            return given_id
        if not given_id:
            return None
        value = await self.r.get(self.part_key(given_id))
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    async def get(self, message_ids: Sequence[str]) -> dict[str, MessageRecord]:
        """The records of MMP message ids (``batch:index``); unknown ids are left out."""
        by_batch: dict[str, tuple[list[str], list[str]]] = {}  # batch → (ids, indexes)
        for message_id in message_ids:
            batch, _, index = message_id.rpartition(":")
            if batch and index.isdigit():
                found = by_batch.get(batch)
                if found is None:
                    by_batch[batch] = ([message_id], [index])
                else:
                    found[0].append(message_id)
                    found[1].append(index)
        if not by_batch:
            return {}
        pipe = self.r.pipeline(transaction=False)
        for batch, (_, indexes) in by_batch.items():
            pipe.hmget(self.batch_key(batch), indexes)
        out: dict[str, MessageRecord] = {}
        loads, record = orjson.loads, MessageRecord
        for (ids, _), values in zip(by_batch.values(), await pipe.execute(), strict=True):
            for message_id, raw in zip(ids, values, strict=True):
                if raw is not None:
                    out[message_id] = record(*loads(raw))
        return out

    async def put(self, records: dict[str, MessageRecord]) -> None:
        """Write updated records back (and give their batches a fresh TTL)."""
        if not records:
            return
        by_batch: dict[str, dict[str, bytes]] = {}
        for message_id, record in records.items():
            batch, _, index = message_id.rpartition(":")
            mapping = by_batch.get(batch)
            if mapping is None:
                mapping = by_batch[batch] = {}
            mapping[index] = record.pack()
        pipe = self.r.pipeline(transaction=False)
        for batch, mapping in by_batch.items():
            key = self.batch_key(batch)
            pipe.hset(key, mapping=mapping)  # type: ignore[arg-type]
            pipe.expire(key, RECORD_TTL_S)
        await pipe.execute()
