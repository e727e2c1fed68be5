"""The receipts stash of the SMPP server: receipts waiting in Redis for a receiving session.

:class:`ReceiptStash` keeps, in Redis, the receipts (:class:`~mta.smppserver.records.
ReceiptDelivery`) no receiving session of this process could take, for whichever server
process has one. Keys (``P`` = ``{<prefix>}``, the hash tag every key of the prefix shares):

``P:smpp:rq:<systemId>`` list  receipts waiting for a receiver/transceiver bind of that
                        system_id (RPUSH, trimmed to the newest ``PENDING_RECEIPTS_MAX``,
                        expire ``PENDING_TTL_S`` after the last push).
``P:smpp:rc:<owner>:<systemId>`` set  receipts a server process (*owner*, a random id per
                        :class:`ReceiptStash`) moved out of the list to send
                        (:meth:`ReceiptStash.claim`, one atomic script) and has not settled
                        yet: answered ones are removed, the others go back to the list
                        (:meth:`ReceiptStash.settle`), so a process that dies with receipts in
                        flight loses none.
``P:smpp:ro:<owner>``   string  the owner's lease (``CLAIM_LEASE_S``, renewed while it runs);
``P:smpp:rcs``          set  ``[owner, systemId]`` of every claim set: once an owner's lease
                        expired, any process puts its claimed receipts back in the list
                        (:meth:`ReceiptStash.recover`).

The key names themselves are spelled in :mod:`mta.store`, with every other Redis key.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, Final

import orjson

from mta.smppserver.records import ReceiptDelivery
from mta.store import Store

__all__ = ["CLAIM_LEASE_S", "PENDING_RECEIPTS_MAX", "PENDING_TTL_S", "ReceiptStash"]

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


class ReceiptStash:
    """The receipts waiting in Redis under one prefix (see the module docstring for the keys)."""

    def __init__(self, store: Store, owner: str = "") -> None:
        self.r = store.r
        self.owner = owner or uuid.uuid4().hex[:16]
        self.receipts_key = store.smpp_receipts_key
        self.claimed_key = store.smpp_claimed_key
        self.lease_key = store.smpp_lease_key
        self.claims_key = store.smpp_claims_key()
        self._claim = self.r.register_script(_CLAIM)
        self._recover = self.r.register_script(_RECOVER)

    async def stash(self, jobs: Sequence[ReceiptDelivery]) -> None:
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

    async def take(self, system_id: str, limit: int) -> list[ReceiptDelivery]:
        """Pop up to *limit* waiting receipts of *system_id* (oldest first)."""
        raw: Any = await self.r.lpop(self.receipts_key(system_id), limit)
        if not raw:
            return []
        return [ReceiptDelivery.unpack(x) for x in raw]

    async def waiting(self, system_id: str) -> int:
        return int(await self.r.llen(self.receipts_key(system_id)))

    async def claim(self, system_id: str, limit: int) -> list[tuple[bytes, ReceiptDelivery]]:
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
        return [(x, ReceiptDelivery.unpack(x)) for x in raw or ()]

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
