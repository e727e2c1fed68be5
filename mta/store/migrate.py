"""Moving a prefix's Redis state to another shard count (``mta migrate``): from the layout
before sharding (one tag), or from one ``MTA_SHARDS`` to another.

Every mta process of the prefix must be stopped: a batch is found by its shard, and a process
with the old count would look in the wrong one. The move is idempotent (each entry is written
to its new place before it leaves the old one), so a migration that stopped half-way is run
again. Leased messages become due now; pending, held, outbox entries, markers (with their
TTLs), partner index entries and pushed receipts (with their TTLs) keep their values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mta.store.keys import (
    ShardKeys,
    receipt_shard_of,
    shard_of,
    shard_of_entry,
    shard_of_message,
)
from mta.store.records import as_str, now_ms

CHUNK = 500


class Migration:
    """Moves the state of ``prefix`` from ``old`` shards to ``new`` shards on client ``r``."""

    def __init__(self, r: Any, prefix: str, old: int, new: int) -> None:
        self.r = r
        self.prefix = prefix
        self.old = [ShardKeys.of(prefix, i, old) for i in range(old)]
        self.new = [ShardKeys.of(prefix, i, new) for i in range(new)]
        self.n = new
        self.moved: dict[str, int] = {
            "pending": 0, "held": 0, "outbox": 0, "markers": 0, "partner index": 0, "receipts": 0,
        }

    async def run(self) -> dict[str, int]:
        for keys in self.old:
            await self._messages(keys)
            await self._held(keys)
            await self._outbox(keys)
            await self._markers(keys)
            await self._receipts(keys)
        return self.moved

    def _target(self, message_id: str) -> ShardKeys:
        return self.new[shard_of_message(message_id, self.n)]

    async def _messages(self, old: ShardKeys) -> None:
        """Pending records with their due time (a leased one: due now); due and lease entries
        whose record is gone are dropped (a reporter would drop them as orphans)."""
        now = now_ms()
        while True:
            ids = [as_str(m) for m in await self.r.zrange(old.lease, 0, CHUNK - 1)]
            if not ids:
                break
            for mid in ids:
                await self.r.zadd(old.due, {mid: now})
            await self.r.zrem(old.lease, *ids)
        await self.r.delete(old.poked)
        await self._move_indexed(old.due, old.pending, ("due", "pending", "pending"), orphans=False)

    async def _held(self, old: ShardKeys) -> None:
        await self._move_indexed(old.held, old.held_data, ("held", "held_data", "held"),
                                 orphans=True)

    async def _move_indexed(
        self, index: str, data: str, kind: tuple[str, str, str], *, orphans: bool
    ) -> None:
        """Move each member of the sorted set ``index`` whose message now belongs to another
        shard (``kind``: the :class:`ShardKeys` fields naming the set and the hash there, and
        what :attr:`moved` counts them as) with its score and
        its value in the hash ``data`` (one member without a value moves only with
        ``orphans``), then drop the moved ones here."""
        cursor = 0
        gone: list[str] = []
        while True:
            cursor, chunk = await self.r.zscan(index, cursor, count=CHUNK)
            for raw_id, score in chunk:
                mid = as_str(raw_id)
                new = self._target(mid)
                new_index = getattr(new, kind[0])
                if new_index == index:
                    continue
                gone.append(mid)
                value = await self.r.hget(data, mid)
                if value is None and not orphans:
                    continue
                if value is not None:
                    await self.r.hset(getattr(new, kind[1]), mid, value)
                await self.r.zadd(new_index, {mid: int(score)})
                self.moved[kind[2]] += 1
            if cursor == 0:
                break
        for i in range(0, len(gone), CHUNK):
            part = gone[i : i + CHUNK]
            await self.r.zrem(index, *part)
            await self.r.hdel(data, *part)

    async def _outbox(self, old: ShardKeys) -> None:
        entries = {as_str(k): v for k, v in (await self.r.hgetall(old.outbox)).items()}
        scored = await self.r.zrange(old.outbox_due, 0, -1, withscores=True)
        due = {as_str(k): int(v) for k, v in scored}
        gone: list[str] = []
        for name, value in entries.items():
            new = self.new[shard_of_entry(name, self.n)]
            if new.outbox == old.outbox:
                continue
            await self.r.hset(new.outbox, name, value)
            await self.r.zadd(new.outbox_due, {name: due.get(name, now_ms())})
            gone.append(name)
            self.moved["outbox"] += 1
        for i in range(0, len(gone), CHUNK):
            await self.r.hdel(old.outbox, *gone[i : i + CHUNK])
            await self.r.zrem(old.outbox_due, *gone[i : i + CHUNK])

    async def _scan(self, pattern: str) -> list[str]:
        return [as_str(k) async for k in self.r.scan_iter(match=pattern, count=1000)]

    async def _markers(self, old: ShardKeys) -> None:
        head = f"{old.tag}:m:"
        for key in await self._scan(f"{head}*"):
            batch_id = key[len(head) :]
            new_key = self.new[shard_of(batch_id, self.n)].markers(batch_id)
            if new_key == key:
                continue
            await self._copy_hash(key, new_key)
            self.moved["markers"] += 1

    async def _copy_hash(self, key: str, new_key: str) -> None:
        values = await self.r.hgetall(key)
        ttl = await self.r.pttl(key)
        if values:
            await self.r.hset(new_key, mapping=values)
            if ttl and ttl > 0:
                await self.r.pexpire(new_key, ttl)
        await self.r.delete(key)

    async def _receipts(self, old: ShardKeys) -> None:
        head = f"{old.tag}:pidx:"
        for key in await self._scan(f"{head}*"):
            account = key[len(head) :]
            entries = {as_str(k): v for k, v in (await self.r.hgetall(key)).items()}
            moved: list[str] = []
            for partner_id, message_id in entries.items():
                new = self.new[receipt_shard_of(account, partner_id, self.n)]
                if new.partner_index(account) == key:
                    continue
                await self.r.hset(new.partner_index(account), partner_id, message_id)
                moved.append(partner_id)
                self.moved["partner index"] += 1
            await self._hdel(key, moved)
        head = f"{old.tag}:rcpt:"
        for key in await self._scan(f"{head}*"):
            account, _, partner_id = key[len(head) :].partition(":")
            new_key = self.new[receipt_shard_of(account, partner_id, self.n)].receipt(
                account, partner_id
            )
            if new_key == key:
                continue
            value = await self.r.get(key)
            ttl = await self.r.pttl(key)
            if value is not None:
                await self.r.set(new_key, value, px=ttl if ttl and ttl > 0 else None, nx=True)
            await self.r.delete(key)
            self.moved["receipts"] += 1

    async def _hdel(self, key: str, fields: Sequence[str]) -> None:
        for i in range(0, len(fields), CHUNK):
            await self.r.hdel(key, *fields[i : i + CHUNK])
