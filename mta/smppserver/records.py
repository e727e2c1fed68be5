"""What the SMPP server knows of its clients: credentials, rates, message records, waiting receipts.

* :class:`Directory` checks a bind's ``system_id``/``password`` against the ``[[smpp_client]]``
  entries in constant time (:func:`hmac.compare_digest`, also run for an unknown system_id so
  the answer time does not tell which ids exist) and answers every failure with the same
  ESME_RBINDFAIL, so the status does not tell either. How many attempts a peer may make is
  :class:`mta.smppserver.auth.BindLimiter`'s business.
* :class:`Bucket` is the per-client token bucket behind ESME_RTHROTTLED (rate = the client's
  ``throughput``, burst = one second of it). It is per process: a client bound to N server
  processes at once may get up to N times its rate.
* :class:`Records` holds, in Redis, what ``query_sm``, ``cancel_sm`` and the receipts need of
  every message submitted through the server, and the receipts waiting for a client to bind.
  Keys (``P`` = ``{<prefix>}``, the hash tag every key of the prefix shares):

  ``P:smpp:m:<batchId>``  hash  index → :class:`Record` (a short JSON array) of the message
                          ``<batchId>:<index>``; one HSET per published micro-batch, expires
                          ``RECORD_TTL_S`` (48 h) after its last update.
  ``P:smpp:a:<partId>``   string  the MMP message id of the long message a non-final part
                          belongs to (see :mod:`mta.smppserver` on part ids), same TTL.
  ``P:smpp:rq:<systemId>`` list  receipts waiting for a receiver/transceiver bind of that
                          system_id (RPUSH, trimmed to the newest ``PENDING_RECEIPTS_MAX``,
                          expire ``PENDING_TTL_S`` after the last push).
  ``P:smpp:rc:<owner>:<systemId>`` set  receipts a server process (*owner*, a random id per
                          :class:`Records`) moved out of the list to send (:meth:`Records.claim`,
                          one atomic script) and has not settled yet: answered ones are removed,
                          the others go back to the list (:meth:`Records.settle`), so a process
                          that dies with receipts in flight loses none.
  ``P:smpp:ro:<owner>``   string  the owner's lease (``CLAIM_LEASE_S``, renewed while it runs);
  ``P:smpp:rcs``          set  ``[owner, systemId]`` of every claim set: once an owner's lease
                          expired, any process puts its claimed receipts back in the list
                          (:meth:`Records.recover`).

The key names themselves are spelled in :mod:`mta.store`, with every other Redis key.
"""

from __future__ import annotations

import hmac
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from mta.config import SmppClient
from mta.smpp.pdu import CommandStatus
from mta.smpp.receipt import MessageState
from mta.store import Store

__all__ = [
    "PENDING_RECEIPTS_MAX",
    "RECORD_TTL_S",
    "Bucket",
    "Directory",
    "Job",
    "Record",
    "Records",
]

RECORD_TTL_S: Final = 48 * 3600
PENDING_RECEIPTS_MAX: Final = 10_000
PENDING_TTL_S: Final = 3 * 86400
CLAIM_LEASE_S: Final = 15

# KEYS: list, claim set, claims registry, lease; ARGV: count, registry member, lease seconds
_CLAIM: Final = """
local items = redis.call('LPOP', KEYS[1], ARGV[1])
if not items then return {} end
for i = 1, #items, 1000 do
  redis.call('SADD', KEYS[2], unpack(items, i, math.min(i + 999, #items)))
end
redis.call('SADD', KEYS[3], ARGV[2])
redis.call('SET', KEYS[4], '1', 'EX', ARGV[3])
return items
"""

# KEYS: claim set, list, claims registry, lease; ARGV: registry member, list max, list ttl
_RECOVER: Final = """
if redis.call('EXISTS', KEYS[4]) == 1 then return -1 end
local items = redis.call('SMEMBERS', KEYS[1])
for i = 1, #items, 1000 do
  redis.call('RPUSH', KEYS[2], unpack(items, i, math.min(i + 999, #items)))
end
if #items > 0 then
  redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1)
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[3], ARGV[1])
return #items
"""
_DUMMY: Final = b"\0" * 8  # compared against when the system_id is unknown


class Directory:
    """The configured clients by system_id, with the bind check."""

    def __init__(self, clients: Iterable[SmppClient]) -> None:
        self.by_id: dict[str, SmppClient] = {c.system_id: c for c in clients}
        self._buckets = {c.system_id: Bucket(c.throughput) for c in self.by_id.values()}

    @property
    def account_ids(self) -> set[int]:
        return {c.account_id for c in self.by_id.values()}

    def bucket(self, system_id: str) -> Bucket:
        return self._buckets[system_id]

    def check(self, system_id: str, password: str) -> tuple[SmppClient | None, int]:
        """(client, ESME_ROK), or (None, ESME_RBINDFAIL) for an unknown system_id and for a
        wrong password alike (the same work is done for both)."""
        client = self.by_id.get(system_id)
        given = password.encode("latin-1", "replace")
        expected = client.password.encode("latin-1", "replace") if client else _DUMMY
        matches = hmac.compare_digest(given, expected)
        if client is None or not matches:
            return None, CommandStatus.ESME_RBINDFAIL
        return client, CommandStatus.ESME_ROK

    def knows(self, system_id: str) -> bool:
        """For the server's own log only, never for an answer."""
        return system_id in self.by_id


class Bucket:
    """A token bucket: ``rate`` tokens per second, at most ``burst`` (default: one second's)."""

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = max(1.0, burst if burst is not None else rate)
        self._tokens = self.burst
        self._last = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True


@dataclass(slots=True)
class Record:
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
        try:
            return MessageState(self.state).final
        except ValueError:
            return False

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
    def unpack(cls, raw: bytes) -> Record:
        return cls(*orjson.loads(raw))


@dataclass(slots=True)
class Job:
    """One receipt to send: the id the client knows, the state, and the message's record."""

    message_id: str
    state: int
    done_ms: int
    record: Record

    def pack(self) -> bytes:
        return orjson.dumps(
            [self.message_id, self.state, self.done_ms, orjson.Fragment(self.record.pack())]
        )

    @classmethod
    def unpack(cls, raw: bytes) -> Job:
        message_id, state, done_ms, record = orjson.loads(raw)
        return cls(message_id, state, done_ms, Record(*record))


class Records:
    """The server's Redis state under one prefix (see the module docstring for the keys)."""

    def __init__(self, store: Store, owner: str = "") -> None:
        self.r = store.r
        self.owner = owner or uuid.uuid4().hex[:16]
        self.batch_key = store.smpp_batch_key
        self.part_key = store.smpp_part_key
        self.receipts_key = store.smpp_receipts_key
        self.claimed_key = store.smpp_claimed_key
        self.lease_key = store.smpp_lease_key
        self.claims_key = store.smpp_claims_key()
        self._claim = self.r.register_script(_CLAIM)
        self._recover = self.r.register_script(_RECOVER)

    async def add_batch(
        self, batch_id: str, records: Sequence[Record], parts: dict[str, str]
    ) -> None:
        """Record a micro-batch's messages (index → record) and its part ids, in one trip."""
        pipe = self.r.pipeline(transaction=False)
        key = self.batch_key(batch_id)
        pipe.hset(key, mapping={str(i): r.pack() for i, r in enumerate(records)})
        pipe.expire(key, RECORD_TTL_S)
        for part_id, message_id in parts.items():
            pipe.set(self.part_key(part_id), message_id, ex=RECORD_TTL_S)
        await pipe.execute()

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

    async def get(self, message_ids: Sequence[str]) -> dict[str, Record]:
        """The records of MMP message ids (``batch:index``); unknown ids are left out."""
        by_batch: dict[str, list[str]] = {}
        for message_id in message_ids:
            batch, _, index = message_id.rpartition(":")
            if batch and index.isdigit():
                by_batch.setdefault(batch, []).append(message_id)
        if not by_batch:
            return {}
        pipe = self.r.pipeline(transaction=False)
        order: list[list[str]] = []
        for batch, ids in by_batch.items():
            pipe.hmget(self.batch_key(batch), [i.rpartition(":")[2] for i in ids])
            order.append(ids)
        out: dict[str, Record] = {}
        for ids, values in zip(order, await pipe.execute(), strict=True):
            for message_id, raw in zip(ids, values, strict=True):
                if raw is not None:
                    out[message_id] = Record.unpack(raw)
        return out

    async def put(self, records: dict[str, Record]) -> None:
        """Write updated records back (and give their batches a fresh TTL)."""
        if not records:
            return
        by_batch: dict[str, dict[str, bytes]] = {}
        for message_id, record in records.items():
            batch, _, index = message_id.rpartition(":")
            by_batch.setdefault(batch, {})[index] = record.pack()
        pipe = self.r.pipeline(transaction=False)
        for batch, mapping in by_batch.items():
            key = self.batch_key(batch)
            pipe.hset(key, mapping=mapping)  # type: ignore[arg-type]
            pipe.expire(key, RECORD_TTL_S)
        await pipe.execute()

    async def stash(self, jobs: Sequence[Job]) -> None:
        """Keep receipts for clients without a receiving session here (bounded per client)."""
        by_client: dict[str, list[bytes]] = {}
        for job in jobs:
            by_client.setdefault(job.record.system_id, []).append(job.pack())
        pipe = self.r.pipeline(transaction=False)
        for system_id, packed in by_client.items():
            key = self.receipts_key(system_id)
            pipe.rpush(key, *packed)
            pipe.ltrim(key, -PENDING_RECEIPTS_MAX, -1)
            pipe.expire(key, PENDING_TTL_S)
        if by_client:
            await pipe.execute()

    async def take(self, system_id: str, limit: int) -> list[Job]:
        """Pop up to *limit* waiting receipts of *system_id* (oldest first)."""
        raw: Any = await self.r.lpop(self.receipts_key(system_id), limit)
        if not raw:
            return []
        return [Job.unpack(x) for x in raw]

    async def waiting(self, system_id: str) -> int:
        return int(await self.r.llen(self.receipts_key(system_id)))

    async def claim(self, system_id: str, limit: int) -> list[tuple[bytes, Job]]:
        """Move up to *limit* waiting receipts of *system_id* (oldest first) into this owner's
        claim set and return them (packed, unpacked); :meth:`settle` each one later."""
        member = orjson.dumps([self.owner, system_id])
        keys = [
            self.receipts_key(system_id),
            self.claimed_key(self.owner, system_id),
            self.claims_key,
            self.lease_key(self.owner),
        ]
        raw: Any = await self._claim(keys=keys, args=[limit, member, CLAIM_LEASE_S])
        return [(x, Job.unpack(x)) for x in raw or ()]

    async def settle(self, system_id: str, done: Sequence[bytes], back: Sequence[bytes]) -> None:
        """Claimed receipts: *done* ones are forgotten, *back* ones return to the list."""
        if not done and not back:
            return
        claimed = self.claimed_key(self.owner, system_id)
        pipe = self.r.pipeline(transaction=True)
        if back:
            key = self.receipts_key(system_id)
            pipe.rpush(key, *back)
            pipe.ltrim(key, -PENDING_RECEIPTS_MAX, -1)
            pipe.expire(key, PENDING_TTL_S)
        pipe.srem(claimed, *done, *back)
        await pipe.execute()

    async def renew(self) -> None:
        """Keep this owner's lease (its claims are its own while it lives)."""
        await self.r.set(self.lease_key(self.owner), b"1", ex=CLAIM_LEASE_S)

    async def release(self) -> None:
        """This owner stops: its lease ends at once (what it still claims is recovered)."""
        await self.r.delete(self.lease_key(self.owner))

    async def recover(self) -> int:
        """Put the claimed receipts of owners whose lease expired back in their lists; how
        many."""
        moved = 0
        for member in await self.r.smembers(self.claims_key):
            try:
                owner, system_id = orjson.loads(member)
            except (orjson.JSONDecodeError, ValueError, TypeError):
                await self.r.srem(self.claims_key, member)
                continue
            if owner == self.owner:
                continue
            keys = [
                self.claimed_key(owner, system_id),
                self.receipts_key(system_id),
                self.claims_key,
                self.lease_key(owner),
            ]
            n: Any = await self._recover(
                keys=keys, args=[member, PENDING_RECEIPTS_MAX, PENDING_TTL_S]
            )
            moved += max(0, int(n))
        return moved
