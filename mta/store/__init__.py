"""Every Redis key and Lua script: batch markers, pending records, due index, leases, outbox.

The state is sharded (:mod:`mta.store.keys`): each shard's keys share one hash tag ``T`` =
``{<prefix>:<n>}`` (``{<prefix>}`` with one shard), so every script and MULTI touches one
Redis Cluster slot; a batch and all it leads to live in the batch id's shard. Keys:

``T:m:<batchId>``   hash  index → marker: ``i`` Send in flight (or, under the ``resubmit``
                            policy, taken by a worker), ``q`` taken by a worker whose Send has
                            not started (``fail`` policy only), ``o`` outcome recorded,
                            ``h`` held for its startTime, ``r`` handed to a delayed-retry queue,
                            ``c`` cancelled before it reached a partner (never sent);
                            field ``*`` stands for every index without a field of its own, so
                            a batch handled in one pass costs one or two fields, not hundreds.
                            Expires ``DEDUP_TTL_S`` after the batch's last touch, or
                            ``DEAD_MARKERS_TTL_S`` after the worker dead-lettered it.
``T:pending``       hash  messageId → packed record (:class:`Pending`) while a final is awaited.
``T:due``           zset  messageId → next poll (epoch ms). Reporters claim from its head only,
                            so polling cost grows with due messages, never with all pending.
``T:lease``         zset  messageId → lease token (epoch µs of lease end, random low digits).
                            Claimed messages live here; an expired lease goes back to ``due``.
``T:poked``         set   leased messages whose receipt was pushed during the lease.
``T:held``          zset  messageId → startTime (epoch ms); ``T:held:data`` the message itself.
``T:outbox``        hash  entry → ``routingKey\\n body`` of a report message recorded before it
                            was published; ``T:outbox:due`` (zset) when a recovery may publish it
                            if its writer died. Deleted once the broker confirmed it.

In the shard of (account, partner id) (:func:`mta.store.keys.receipt_shard_of`):

``T:pidx:<account>``  hash  partnerId → messageId of the pending messages of an account whose
                            partner pushes receipts: a pushed receipt makes its message due at
                            once (the reporter publishes its final within a poll round).
``T:rcpt:<account>:<partnerId>``  string  a final state a partner pushed (webhook, SMPP
                            deliver_sm), kept ``RECEIPT_TTL_S``; the first final wins.

Under the prefix's own tag ``P`` = ``{<prefix>}``:

``P:shards``        string  the shard count the state was written with (checked at start).
``P:rcptix:<account>``  zset  partnerId → expiry (epoch ms) of each stored receipt of an
                            account whose receipts are capped (webhooks of unsigned partners):
                            counts them, so webhooks stop storing at the cap.
``P:astate:<account>:<key>``  string  small state an adapter shares across processes (e.g.
                            the SMSC ids of one long message), with the adapter's TTL.
``P:smpp:m:<batchId>``  hash  index → the SMPP server's record of a message it took in
                            (client, addresses, registered_delivery, state) for query_sm,
                            cancel_sm and receipts; ``P:smpp:a:<partId>`` the MMP id a long
                            message's earlier part maps to; ``P:smpp:rq:<systemId>`` (list)
                            receipts waiting for that client to bind; ``P:smpp:rc:<owner>:
                            <systemId>`` (set) the ones a server process took from it and has
                            not settled, ``P:smpp:ro:<owner>`` that process's lease and
                            ``P:smpp:rcs`` (set) who holds such claims (see
                            mta.smppserver.receipt_stash).
``P:rate:<account>`` string  the account's next free send slot (epoch ms), shared by all
                            workers so N workers together keep the account's ``rate_limit``.
``P:signing``       string  the key (random, made once) that signs internal republishes.
``T:rec:<token>``   string  a worker's write landed in this shard (an hour): its retry after an
                            outage skips the shard instead of writing pending records again.
``P:fence``, ``T:fence``  string  a counter written just before a Redis WAIT (only with
                            ``MTA_REDIS_WAIT_REPLICAS``), see :meth:`StoreBase.replicated`.
"""

from __future__ import annotations

import os
import random
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from mta.store import connect
from mta.store.base import (
    Op,
    PackingConnection,
    group_by_shard,
    per_shard,
    split_by_shard,
)
from mta.store.keys import (
    DEFAULT_SHARDS,
    ShardKeys,
    shard_of,
    shard_of_entry,
    shard_of_message,
)
from mta.store.migrate import Migration
from mta.store.receipts import ReceiptStore
from mta.store.records import (
    CANCEL_TTL_S,
    DEAD_MARKERS_TTL_S,
    DEDUP_TTL_S,
    MARK_CANCELLED,
    MARK_DONE,
    MARK_HELD,
    MARK_INFLIGHT,
    MARK_RETRY,
    MARK_TAKEN,
    MAX_CLAIM,
    OUTBOX_GRACE_MS,
    RECEIPT_TTL_S,
    BatchRecord,
    Claim,
    Pending,
    as_str,
    now_ms,
    pack_pending,
)

__all__ = [
    "CANCEL_TTL_S",
    "DEAD_MARKERS_TTL_S",
    "DEDUP_TTL_S",
    "DEFAULT_SHARDS",
    "MARK_CANCELLED",
    "MARK_DONE",
    "MARK_HELD",
    "MARK_INFLIGHT",
    "MARK_RETRY",
    "MARK_TAKEN",
    "MAX_CLAIM",
    "OUTBOX_GRACE_MS",
    "RECEIPT_TTL_S",
    "BatchRecord",
    "Claim",
    "LayoutError",
    "PackingConnection",
    "Pending",
    "Store",
    "now_ms",
    "pack_pending",
]


class LayoutError(RuntimeError):
    """The prefix's state in Redis was written with another shard count than this process's."""


class Store(ReceiptStore):
    """The Redis side of the MTA: markers, pending records, leases, held messages, outbox,
    rate limits (and, from :class:`ReceiptStore`, pushed receipts), over ``shards`` shards."""

    @classmethod
    def connect(
        cls, url: str, prefix: str, max_connections: int = 64, shards: int = DEFAULT_SHARDS
    ) -> Store:
        """A store on a single Redis node (no layout check; see :meth:`open`)."""
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=20, connection_class=PackingConnection
        )
        return cls(aioredis.Redis(connection_pool=pool), prefix, shards)

    @classmethod
    async def open(
        cls,
        url: str,
        prefix: str,
        max_connections: int = 64,
        shards: int = DEFAULT_SHARDS,
        *,
        check: bool = True,
        wait_replicas: int = 0,
    ) -> Store:
        """Connect to the Redis that ``url`` names: a single node, any node of a Redis Cluster
        (asked with ``INFO cluster``), or ``redis+sentinel://`` sentinels (the master they
        name). With ``check``, refuse a prefix whose state has another shard layout."""
        if connect.is_sentinel_url(url):
            client = connect.sentinel_client(url, max_connections)
            store = cls(client, prefix, shards)
        else:
            store = cls.connect(url, prefix, max_connections, shards)
            try:
                info = await store.r.info("cluster")
            except Exception:
                await store.close()
                raise
            if info.get("cluster_enabled"):
                await store.close()
                client = connect.cluster_client(url, max_connections, PackingConnection)
                store = cls(client, prefix, shards, cluster=True)
        store.wait_replicas = wait_replicas
        if check:
            try:
                await store.check_layout()
            except BaseException:
                await store.close()
                raise
        return store

    async def close(self) -> None:
        await self.r.aclose()

    async def check_layout(self) -> None:
        """Record this prefix's shard count, or refuse to run with another one: with another
        count a batch would be looked for in the wrong shard (run ``mta migrate``)."""
        count = await self.recorded_shards()
        if count is None or count == self.n:
            await self.r.set(self.k_shards, self.n, nx=True)
            count = int(await self.r.get(self.k_shards) or 0)
        if count != self.n:
            before = " (the layout before sharding)" if count == 1 else ""
            raise LayoutError(
                f"prefix {self.prefix!r} holds state written with MTA_SHARDS={count}{before}, "
                f"but this process has MTA_SHARDS={self.n}: set MTA_SHARDS={count}, or stop "
                f"every mta process and run `mta migrate`"
            )

    async def recorded_shards(self) -> int | None:
        """The shard count the prefix's state was written with (1: written before sharding;
        None: no state yet)."""
        recorded = await self.r.get(self.k_shards)
        if recorded is not None:
            return int(recorded)
        return 1 if await self._has_unsharded_state() else None

    async def migrate(self) -> tuple[int, dict[str, int]]:
        """Move the prefix's state from its recorded shard count to this store's (every mta
        process of the prefix stopped); returns (the old count, what moved)."""
        old = await self.recorded_shards() or self.n
        moved: dict[str, int] = {}
        if old != self.n:
            moved = await Migration(self.r, self.prefix, old, self.n).run()
        await self.r.set(self.k_shards, self.n)
        return old, moved

    async def _has_unsharded_state(self) -> bool:
        old = ShardKeys.of(self.prefix, 0, 1)
        return bool(await self.r.exists(old.pending, old.due, old.held, old.outbox))

    # --- worker -------------------------------------------------------------------------
    async def begin(
        self, batch_id: str, indexes: Sequence[str] | int, accept: str = "",
        ttl_s: int = DEDUP_TTL_S, mark: str = MARK_INFLIGHT,
    ) -> list[str] | None:
        """Mark free messages of a batch with ``mark`` (in flight, or taken).

        ``indexes`` is either the batch size (every index) or a list of indexes. Returns, per
        index, '' (ours now) or the marker that stops it; ``None`` when the whole batch was new
        (all ours, recorded as the single field ``*``).
        """
        key = [self.markers_key(batch_id)]
        if isinstance(indexes, int):
            out = await self._begin(keys=key, args=[ttl_s, accept, mark, "n", indexes])
            if not out:
                return None
        elif not indexes:
            return []
        else:
            out = await self._begin(keys=key, args=[ttl_s, accept, mark, "i", *indexes])
        return [as_str(v) for v in out]

    async def keep_markers(self, batch_id: str, ttl_s: int = DEAD_MARKERS_TTL_S) -> None:
        """Keep a dead-lettered batch's markers (if any) for ``ttl_s``: a replay then skips
        every message whose outcome was recorded."""
        await self.r.expire(self.markers_key(batch_id), ttl_s)

    async def has_markers(self, batch_id: str) -> bool:
        """Whether the worker has marked messages of this batch (and would skip recorded ones)."""
        return bool(await self.r.exists(self.markers_key(batch_id)))

    async def keys(self, suffix: str = "*") -> list[bytes]:
        """Keys of this prefix matching ``<tag>:<suffix>`` over every shard and the prefix's
        own tag (SCAN: for operators' commands and tests)."""
        found: list[bytes] = []
        for tag in (self.tag, "{" + self.prefix + ":[0-9]*}"):
            found += [k async for k in self.r.scan_iter(match=f"{tag}:{suffix}", count=1000)]
        return found

    async def count_keys(self) -> int:
        """How many Redis keys this prefix holds."""
        return len(await self.keys())

    async def mark_inflight(self, message_ids: Sequence[str]) -> None:
        """Mark messages whose Send is about to start (the ``fail`` policy's exact record)."""
        by_batch: dict[str, dict[str, str]] = {}
        for message_id in message_ids:
            batch, index = message_id.rsplit(":", 1)
            by_batch.setdefault(batch, {})[index] = MARK_INFLIGHT
        ops: dict[int, list[Op]] = defaultdict(list)
        for batch, fields in by_batch.items():
            ops[shard_of(batch, self.n)].append(("hset", (self.markers_key(batch),),
                                                 {"mapping": fields}))
        await self._multi(ops)

    async def signing_key(self) -> bytes:
        """The key that signs internal republishes (created once, shared by every worker), so
        an upstream cannot forge the ``x-mta-*`` headers that carry message ids and attempts."""
        await self.r.set(self.k_signing, os.urandom(32).hex(), nx=True)
        value = await self.r.get(self.k_signing)
        if value is None:  # pragma: no cover - just set
            raise RuntimeError(f"Redis key {self.k_signing} vanished")
        return bytes.fromhex(as_str(value))

    async def record(self, outcome: BatchRecord) -> None:
        """Write a batch's outcomes: markers, pending + due, held and outbox atomically per
        shard (a batch's are in one shard), the deletes of earlier batches' published outbox
        entries (``forget``); and the partner index, whose receipts may have come first (their
        messages are due at once): in the same MULTI on a single node, after it on a cluster."""
        n = self.n
        ops: dict[int, list[Op]] = defaultdict(list)
        for batch_id, markers in outcome.markers.items():
            if markers:
                ops[shard_of(batch_id, n)].append(
                    ("hset", (self.markers_key(batch_id),), {"mapping": markers})
                )
        for shard, part in split_by_shard(outcome.pending, n).items():
            keys = self.shards[shard]
            ops[shard].append(("hset", (keys.pending,), {"mapping": part}))
        for shard, times in split_by_shard(outcome.due, n).items():
            ops[shard].append(("zadd", (self.shards[shard].due, times), {}))
        for shard, times in split_by_shard(outcome.held, n).items():
            ops[shard].append(("zadd", (self.shards[shard].held, times), {}))
        for shard, data in split_by_shard(outcome.held_data, n).items():
            ops[shard].append(("hset", (self.shards[shard].held_data,), {"mapping": data}))
        if outcome.outbox:
            grace = now_ms() + OUTBOX_GRACE_MS
            for shard, entries in self._split_entries(outcome.outbox).items():
                keys = self.shards[shard]
                ops[shard].append(("hset", (keys.outbox,), {"mapping": entries}))
                ops[shard].append(("zadd", (keys.outbox_due, dict.fromkeys(entries, grace)), {}))
        self._outbox_deletes(outcome.forget, ops)
        # A retry after an outage (the first try's answer lost, e.g. in a failover) must not
        # write pending records again: a reporter may have published their finals meanwhile.
        done = f"rec:{outcome.token}"
        touched = set(ops)
        if outcome.tried:
            shards = sorted(ops)
            landed = await self._pipeline(
                [("exists", (f"{self.shards[s].tag}:{done}",), {}) for s in shards]
            )
            for shard, found in zip(shards, landed, strict=True):
                if found:
                    del ops[shard]
        outcome.tried = True
        for shard, some in ops.items():
            if some:
                some.append(("set", (f"{self.shards[shard].tag}:{done}", 1), {"ex": DEDUP_TTL_S}))
        if outcome.partners and not self.cluster:
            # One node: the partner index joins the MULTI (one round trip less per batch).
            [(index_keys, args)], indexed = self._partner_calls(outcome.partners)
            found = await self._multi(ops, (self._pidx_add, index_keys, args))
            await self.poke([as_str(m) for m in found])
            touched |= indexed
        else:
            await self._multi(ops)
            if outcome.partners:
                touched |= await self._index_partners(outcome.partners)
        await self.replicated(touched)


    async def cancel(self, message_id: str) -> str:
        """Cancel a message that has not reached a partner yet; '' when cancelled, else the
        marker that makes it too late. The worker then skips it (``c`` is never taken over);
        the caller publishes its FAIL."""
        batch, index = message_id.rsplit(":", 1)
        keys = self.batch_shard(batch)
        out = await self._cancel(
            keys=[keys.markers(batch), keys.held, keys.held_data],
            args=[index, message_id, CANCEL_TTL_S],
        )
        return as_str(out)

    async def take_held(self, limit: int, lease_ms: int) -> tuple[list[str], list[bytes | None]]:
        """Lease held messages whose startTime has come; :meth:`drop_held` once republished."""
        now = now_ms()
        per = per_shard(limit, self.n)
        ids: list[str] = []
        vals: list[bytes | None] = []
        for got_ids, got_vals in await self._eval_many(
            self._take,
            [([k.held, k.held_data], [now, now + lease_ms, per]) for k in self.shards],
        ):
            ids += [i.decode() for i in got_ids]
            vals += got_vals
        return ids, vals

    async def drop_held(self, ids: Sequence[str]) -> None:
        ops: dict[int, list[Op]] = defaultdict(list)
        for shard, some in group_by_shard(ids, self.n).items():
            keys = self.shards[shard]
            ops[shard] += [("zrem", (keys.held, *some), {}), ("hdel", (keys.held_data, *some), {})]
        await self._multi(ops)

    # --- outbox -------------------------------------------------------------------------
    def _outbox_deletes(self, entries: Sequence[str], ops: dict[int, list[Op]]) -> None:
        """Add to ``ops`` the commands that delete these outbox entries, in their shards."""
        by_shard: dict[int, list[str]] = defaultdict(list)
        for name in entries:
            by_shard[shard_of_entry(name, self.n)].append(name)
        for shard, names in by_shard.items():
            keys = self.shards[shard]
            ops[shard] += [("hdel", (keys.outbox, *names), {}),
                           ("zrem", (keys.outbox_due, *names), {})]

    async def outbox_done(self, entries: Sequence[str]) -> None:
        """Delete published outbox entries (their writer's grace is then not needed)."""
        ops: dict[int, list[Op]] = defaultdict(list)
        self._outbox_deletes(entries, ops)
        await self._multi(ops)
        # A delete lost in a failover would publish these again (the recovery): replicated.
        await self.replicated(ops)

    async def take_outbox(self, limit: int = 100) -> list[tuple[str, bytes]]:
        """Lease outbox entries whose writer did not delete them in time (it died)."""
        now = now_ms()
        per = per_shard(limit, self.n)
        outs = await self._eval_many(
            self._take,
            [([k.outbox_due, k.outbox], [now, now + OUTBOX_GRACE_MS, per]) for k in self.shards],
        )
        out: list[tuple[str, bytes]] = []
        gone: list[Op] = []
        for keys, (ids, vals) in zip(self.shards, outs, strict=True):
            out += [(i.decode(), v) for i, v in zip(ids, vals, strict=True) if v is not None]
            missing = [i.decode() for i, v in zip(ids, vals, strict=True) if v is None]
            if missing:
                gone.append(("zrem", (keys.outbox_due, *missing), {}))
        await self._pipeline(gone)
        return out

    # --- reporter -----------------------------------------------------------------------
    @staticmethod
    def new_token(lease_ms: int) -> int:
        """A claim token: the lease's end (epoch µs) with random low digits."""
        return int((time.time() * 1000 + lease_ms) * 1000) + random.randrange(1000)

    async def release_token(self, token: int) -> None:
        """Give back every claim made with ``token`` (a claim whose answer an outage took)."""
        calls = []
        for group in self._calls(range(self.n)):
            keys = [k for s in group for k in (self.shards[s].lease, self.shards[s].due)]
            calls.append((keys, [token, now_ms()]))
        await self._eval_many(self._release_token, calls)

    async def claim(self, limit: int, lease_ms: int, token: int | None = None) -> Claim:
        """Lease up to ``limit`` due messages, an even part from every shard first (expired
        leases return to ``due`` before): one script for all shards on a single node, one per
        shard (concurrently) on a cluster.

        At most :data:`MAX_CLAIM` per call: Lua's ``unpack`` takes a few thousand values."""
        limit = min(limit, MAX_CLAIM)
        per = per_shard(limit, self.n)
        now = time.time()
        if token is None:
            token = self.new_token(lease_ms)
        calls = []
        for group in self._calls(range(self.n)):
            keys = [k for s in group for k in (self.shards[s].due, self.shards[s].lease,
                                               self.shards[s].pending)]
            total = per if self.cluster else limit
            calls.append((keys, [int(now * 1000), int(now * 1_000_000), token, total, per]))
        records: dict[str, bytes] = {}
        orphans: list[str] = []
        for ids, vals in await self._eval_many(self._claim, calls):
            for raw_id, val in zip(ids, vals, strict=True):
                if val is None:
                    orphans.append(raw_id.decode())
                else:
                    records[raw_id.decode()] = val
        return Claim(token, records, orphans)

    async def finish(
        self,
        token: int,
        finals: Sequence[str],
        waits: Sequence[tuple[str, int]],
        outbox: dict[str, bytes],
    ) -> list[str]:
        """Commit a poll round; returns finals whose lease was lost (see :meth:`failed`).

        ``waits`` are (message id, next poll); a message whose receipt was pushed meanwhile is
        due at once. On a single node one script commits all shards or nothing; on a cluster
        one script per shard: a shard that lost a lease changed nothing, the others
        committed."""
        n = self.n
        parts: dict[int, tuple[list[str], list[Any], dict[str, bytes]]] = {}

        def part(shard: int) -> tuple[list[str], list[Any], dict[str, bytes]]:
            found = parts.get(shard)
            if found is None:
                found = parts[shard] = ([], [], {})
            return found

        for message_id in finals:
            part(shard_of_message(message_id, n))[0].append(message_id)
        for message_id, due in waits:
            part(shard_of_message(message_id, n))[1].extend((message_id, due))
        for shard, entries in self._split_entries(outbox).items():
            part(shard)[2].update(entries)
        grace = now_ms() + OUTBOX_GRACE_MS
        calls: list[tuple[list[str], list[Any]]] = []
        for group in self._calls(sorted(parts)):
            keys: list[str] = []
            args: list[Any] = [token, grace]
            tail: list[Any] = []
            for number, shard in enumerate(group, 1):
                k = self.shards[shard]
                keys += (k.lease, k.due, k.pending, k.outbox, k.outbox_due, k.poked)
                fins, wts, entries = parts[shard]
                args += (len(fins), *fins, len(wts) // 2, *wts)
                for entry, payload in entries.items():
                    tail += (number, entry, payload)
            calls.append((keys, args + tail))
        lost: list[str] = []
        for out in await self._eval_many(self._finish, calls):
            lost += [x.decode() for x in out]
        await self.replicated(parts)
        return lost

    def failed(self, lost: Sequence[str]) -> set[int] | None:
        """The shards a :meth:`finish` that lost ``lost`` left unchanged (None: all)."""
        return {shard_of_message(m, self.n) for m in lost} if self.cluster else None

    async def drop_orphans(self, ids: Sequence[str]) -> None:
        ops: list[Op] = []
        for s, some in group_by_shard(ids, self.n).items():
            keys = self.shards[s]
            ops += [("zrem", (keys.lease, *some), {}), ("srem", (keys.poked, *some), {})]
        await self._pipeline(ops)

    # --- shared rate limits -------------------------------------------------------------
    async def reserve_rate(
        self, account: str, messages: int, per_second: float, max_wait_ms: int
    ) -> int | None:
        """Reserve send slots for ``messages`` under the account's rate; returns the ms to
        wait before sending, or None (nothing reserved) when that would exceed max_wait_ms."""
        wait = await self._reserve(
            keys=[f"{self.tag}:rate:{account}"],
            args=[now_ms(), 1000.0 / per_second, messages, max_wait_ms],
        )
        return None if int(wait) < 0 else int(wait)

    # --- inspection and clean-up --------------------------------------------------------
    async def counts(self, due_by_ms: int | None = None) -> dict[str, int]:
        """Pending, due, leased, held and outbox sizes over all shards (and, with
        ``due_by_ms``, how many are due by then: ``due_now``)."""
        ops: list[Op] = []
        for k in self.shards:
            ops += [("hlen", (k.pending,), {}), ("zcard", (k.due,), {}),
                    ("zcard", (k.lease,), {}), ("zcard", (k.held,), {}),
                    ("hlen", (k.outbox,), {})]
            if due_by_ms is not None:
                ops.append(("zcount", (k.due, "-inf", due_by_ms), {}))
        got = await self._pipeline(ops)
        names = ["pending", "due", "leased", "held", "outbox"]
        if due_by_ms is not None:
            names.append("due_now")
        out = dict.fromkeys(names, 0)
        for i, value in enumerate(got):
            out[names[i % len(names)]] += int(value)
        return out

    async def pending_footprint(self, accounts: Sequence[str] = ()) -> tuple[int, int]:
        """(pending messages, bytes of the pending hashes + due and lease indexes + the partner
        indexes of ``accounts``) over all shards (for ``mta bench``)."""
        ops: list[Op] = []
        for k in self.shards:
            ops.append(("hlen", (k.pending,), {}))
            for key in (k.pending, k.due, k.lease, *(k.partner_index(a) for a in accounts)):
                ops.append(("memory_usage", (key,), {"samples": 0}))
        got = await self._pipeline(ops)
        per = 4 + len(accounts)
        count = sum(int(got[i]) for i in range(0, len(got), per))
        size = sum(int(x or 0) for i, x in enumerate(got) if i % per)
        return count, size

    async def delete_all(self) -> None:
        """Remove every key of this prefix (tests and benchmarks clean up with it)."""
        keys = await self.keys()
        for i in range(0, len(keys), 500):
            await self.r.delete(*keys[i : i + 500])


