"""Pushed receipts in the store: stored in the shard of (account, partner id), found from
there by the partner index, and the messages they belong to made due at once."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from mta.store.base import Op, StoreBase, group_by_shard
from mta.store.keys import receipt_shard_of
from mta.store.records import RECEIPT_TTL_S, as_str


class ReceiptStore(StoreBase):
    """Receipts pushed by partners (webhooks, SMPP deliver_sm) and adapter state."""

    async def _index_partners(self, partners: dict[str, dict[str, str]]) -> set[int]:
        """Write the partner index (one script on a single node, one per shard on a cluster);
        returns the shards written."""
        calls, shards = self._partner_calls(partners)
        found: list[str] = []
        for out in await self._eval_many(self._pidx_add, calls):
            found += [as_str(m) for m in out]
        await self.poke(found)
        return shards

    def _partner_calls(
        self, partners: dict[str, dict[str, str]]
    ) -> tuple[list[tuple[list[str], list[Any]]], set[int]]:
        """The PIDX_ADD calls that write the partner index (one on a single node), and the
        shards they write."""
        groups: dict[int, list[tuple[str, str, list[str]]]] = defaultdict(list)
        for account, ids in partners.items():
            pairs: dict[int, list[str]] = defaultdict(list)
            for partner_id, message_id in ids.items():
                pairs[receipt_shard_of(account, partner_id, self.n)] += (partner_id, message_id)
            for shard, some in pairs.items():
                keys = self.shards[shard]
                groups[shard].append((keys.partner_index(account), keys.receipt(account, ""), some))
        calls: list[tuple[list[str], list[Any]]] = []
        for call in self._calls(sorted(groups)):
            index_keys: list[str] = []
            args: list[Any] = []
            for shard in call:
                for index, prefix, some in groups[shard]:
                    index_keys.append(index)
                    args += (prefix, len(some) // 2, *some)
            calls.append((index_keys, args))
        return calls, set(groups)

    async def poke(self, message_ids: Sequence[str]) -> None:
        """Make messages whose receipt was pushed due now (a leased one: when its lease ends)."""
        if not message_ids:
            return
        groups = group_by_shard(message_ids, self.n)
        calls: list[tuple[list[str], list[Any]]] = []
        for call in self._calls(sorted(groups)):
            keys: list[str] = []
            args: list[Any] = []
            for shard in call:
                k = self.shards[shard]
                keys += (k.due, k.lease, k.poked)
                args += (len(groups[shard]), *groups[shard])
            calls.append((keys, args))
        await self._eval_many(self._poke, calls)

    async def push_receipts(self, account: str, receipts: dict[str, bytes]) -> int:
        """Store pushed final states (partner id → packed result); an earlier final is kept.
        No cap: for receipts from authenticated sources (SMPP deliver_sm, a pull drain)."""
        stored, _ = await self.store_receipts(account, receipts, None)
        return stored

    async def store_receipts(
        self, account: str, receipts: dict[str, bytes], cap: int | None
    ) -> tuple[int, int]:
        """Like :meth:`push_receipts`, but while the account already holds ``cap`` stored
        receipts (None = no cap) the rest are refused; returns (stored, refused). A cap is
        counted in one index per account (one script); then one script per shard holding
        some of the receipts (one pipeline), then the messages they belong to are made due."""
        if not receipts:
            return 0, 0
        refused = 0
        if cap is not None:
            out = await self._admit(
                keys=[self.receipt_index_key(account)],
                args=[RECEIPT_TTL_S, max(0, cap), *receipts],
            )
            refused = int(out[0])
            admitted = {as_str(p) for p in out[1:]}
            receipts = {pid: v for pid, v in receipts.items() if pid in admitted}
            if not receipts:
                return 0, refused
        n = self.n
        groups: dict[int, list[str]] = defaultdict(list)
        for partner_id in receipts:
            groups[receipt_shard_of(account, partner_id, n)].append(partner_id)
        calls: list[tuple[list[str], list[Any]]] = []
        for call in self._calls(sorted(groups)):
            keys: list[str] = []
            args: list[Any] = [RECEIPT_TTL_S]
            for shard in call:
                k = self.shards[shard]
                args += (k.partner_index(account), len(groups[shard]))
                for partner_id in groups[shard]:
                    keys.append(k.receipt(account, partner_id))
                    args += (partner_id, receipts[partner_id])
            calls.append((keys, args))
        stored = 0
        found: list[str] = []
        for out in await self._eval_many(self._push, calls):
            stored += int(out[0])
            found += [as_str(m) for m in out[1:]]
        await self.replicated(groups)
        await self.poke(found)
        return stored, refused

    def receipt_index_key(self, account: str) -> str:
        """The index that counts an account's stored receipts against a cap (webhooks)."""
        return f"{self.tag}:rcptix:{account}"

    async def stored_receipts(self, account: str) -> int:
        """How many receipts a capped account holds (expired ones may count until the next
        push); receipts stored without a cap are not counted."""
        return int(await self.r.zcard(self.receipt_index_key(account)))

    async def receipts(self, account: str, partner_ids: Sequence[str]) -> dict[str, bytes]:
        """The pushed receipts stored for these partner ids (one MGET; on a cluster one per
        shard, pipelined)."""
        if not partner_ids:
            return {}
        keys = [self.receipt_key(account, pid) for pid in partner_ids]
        if not self.cluster:
            values = await self.r.mget(keys)
        else:  # one MGET per slot, results in order
            cluster: Any = self.r
            values = await cluster.mget_nonatomic(keys)
        return {
            pid: v if isinstance(v, bytes) else str(v).encode()
            for pid, v in zip(partner_ids, values, strict=True)
            if v is not None
        }

    async def put_state(self, account: str, values: dict[str, bytes], ttl_s: int) -> None:
        """Adapter state shared by every process (``ReceiptSink.remember``), with a TTL."""
        if values:  # one script: a pipeline of SETs costs ~14 us of client CPU per key
            await self._set_many(
                keys=[f"{self.tag}:astate:{account}:{key}" for key in values],
                args=[ttl_s, *values.values()],
            )

    async def get_state(self, account: str, keys: Sequence[str]) -> dict[str, bytes]:
        values = await self.r.mget([f"{self.tag}:astate:{account}:{key}" for key in keys])
        return {
            key: v if isinstance(v, bytes) else str(v).encode()
            for key, v in zip(keys, values, strict=True)
            if v is not None
        }

    async def drop_receipts(self, account: str, partner_ids: Sequence[str]) -> None:
        """Delete spent receipts, their index entries (so they stop counting) and the partner
        index entries of their messages (final now)."""
        groups: dict[int, list[str]] = defaultdict(list)
        for pid in partner_ids:
            groups[receipt_shard_of(account, pid, self.n)].append(pid)
        ops: list[Op] = []
        for shard, pids in groups.items():
            keys = self.shards[shard]
            ops += [
                ("delete", tuple(keys.receipt(account, pid) for pid in pids), {}),
                ("hdel", (keys.partner_index(account), *pids), {}),
            ]
        if ops:
            ops.append(("zrem", (self.receipt_index_key(account), *partner_ids), {}))
        await self._pipeline(ops)

