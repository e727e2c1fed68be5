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
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.connection import Connection
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from mta.store import connect, scripts
from mta.store.keys import (
    DEFAULT_SHARDS,
    MAX_SHARDS,
    ShardKeys,
    outbox_entry_name,
    receipt_shard_of,
    shard_of,
    shard_of_entry,
    shard_of_message,
)
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

_pack: Callable[..., bytes] | None
try:
    import hiredis

    _pack = hiredis.pack_command
except ImportError:  # pragma: no cover - hiredis comes with redis[hiredis]
    _pack = None

class PackingConnection(Connection):
    """A connection that packs commands with hiredis (C) instead of redis-py's Python packer.

    redis-py's asyncio packer joins bytes per argument; for one HSET of a hundred records that
    is ~150 µs against ~20 µs in hiredis, and a worker sends such commands for every batch.
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        if _pack is None:
            return super().pack_command(*args)
        first = args[0]
        if isinstance(first, str | bytes) and (
            " " in first if isinstance(first, str) else b" " in first
        ):
            args = (*first.split(), *args[1:])
        return [_pack(args)]

#: One command for a pipeline: method name, positional and keyword arguments.
Op = tuple[str, tuple[Any, ...], dict[str, Any]]
_V = TypeVar("_V")


class LayoutError(RuntimeError):
    """The prefix's state in Redis was written with another shard count than this process's."""


class Store:
    """The Redis side of the MTA, under one prefix, over ``shards`` shards.

    ``client`` is a single Redis (one MULTI may span shards there: they are only hash tags) or
    a Redis Cluster client (``cluster=True``: one MULTI per shard, scripts per shard)."""

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        shards: int = DEFAULT_SHARDS,
        *,
        cluster: bool = False,
    ) -> None:
        if not 1 <= shards <= MAX_SHARDS:
            raise ValueError(f"MTA_SHARDS must be between 1 and {MAX_SHARDS}, not {shards}")
        self.r = client
        self.prefix = prefix
        self.n = shards
        self.cluster = cluster
        tag = "{" + prefix + "}"
        self.tag = tag
        self.shards = [ShardKeys.of(prefix, i, shards) for i in range(shards)]
        self.k_signing = f"{tag}:signing"
        self.k_shards = f"{tag}:shards"
        self._begin = client.register_script(scripts.BEGIN)
        self._claim = client.register_script(scripts.CLAIM)
        self._finish = client.register_script(scripts.FINISH)
        self._take = client.register_script(scripts.TAKE)
        self._release = client.register_script(scripts.RELEASE)
        self._reserve = client.register_script(scripts.RESERVE)
        self._cancel = client.register_script(scripts.CANCEL)
        self._pidx_add = client.register_script(scripts.PIDX_ADD)
        self._poke = client.register_script(scripts.POKE)
        self._push = client.register_script(scripts.PUSH_RECEIPTS)
        self._admit = client.register_script(scripts.ADMIT_RECEIPTS)

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
                store = cls(connect.cluster_client(url, max_connections), prefix, shards,
                            cluster=True)
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
        recorded = await self.r.get(self.k_shards)
        if recorded is None:
            if self.n != 1 and await self._has_unsharded_state():
                raise LayoutError(
                    f"prefix {self.prefix!r} holds state written before sharding (one shard), "
                    f"but MTA_SHARDS is {self.n}: stop every mta process and run "
                    f"`mta migrate`, or set MTA_SHARDS=1"
                )
            await self.r.set(self.k_shards, self.n, nx=True)
            recorded = await self.r.get(self.k_shards)
        count = int(recorded or 0)
        if count != self.n:
            raise LayoutError(
                f"prefix {self.prefix!r} holds state written with MTA_SHARDS={count}, but this "
                f"process has MTA_SHARDS={self.n}: set MTA_SHARDS={count}, or stop every mta "
                f"process and run `mta migrate`"
            )

    async def _has_unsharded_state(self) -> bool:
        old = ShardKeys.of(self.prefix, 0, 1)
        return bool(
            await self.r.exists(old.pending)
            or await self.r.exists(old.due)
            or await self.r.exists(old.held)
            or await self.r.exists(old.outbox)
        )

    # --- where things are ---------------------------------------------------------------
    def batch_shard(self, batch_id: str) -> ShardKeys:
        return self.shards[shard_of(batch_id, self.n)]

    def message_shard(self, message_id: str) -> ShardKeys:
        return self.shards[shard_of_message(message_id, self.n)]

    def receipt_shard(self, account: str, partner_id: str) -> ShardKeys:
        return self.shards[receipt_shard_of(account, partner_id, self.n)]

    def entry_shard(self, entry: str) -> int:
        """The shard of an outbox entry (its name says it)."""
        return shard_of_entry(entry, self.n)

    def entry_name(self, writer: str, token: str, message_id: str, n: int) -> str:
        """The name of the ``n``-th outbox entry of a write whose results are all in
        ``message_id``'s shard."""
        return outbox_entry_name(writer, token, shard_of_message(message_id, self.n), n)

    def markers_key(self, batch_id: str) -> str:
        return self.batch_shard(batch_id).markers(batch_id)

    def receipt_key(self, account: str, partner_id: str) -> str:
        return self.receipt_shard(account, partner_id).receipt(account, partner_id)

    def partner_index_key(self, account: str, partner_id: str) -> str:
        return self.receipt_shard(account, partner_id).partner_index(account)

    def smpp_batch_key(self, batch_id: str) -> str:
        return f"{self.tag}:smpp:m:{batch_id}"

    def smpp_part_key(self, part_id: str) -> str:
        return f"{self.tag}:smpp:a:{part_id}"

    def smpp_receipts_key(self, system_id: str) -> str:
        return f"{self.tag}:smpp:rq:{system_id}"

    def smpp_claimed_key(self, owner: str, system_id: str) -> str:
        return f"{self.tag}:smpp:rc:{owner}:{system_id}"

    def smpp_lease_key(self, owner: str) -> str:
        return f"{self.tag}:smpp:ro:{owner}"

    def smpp_claims_key(self) -> str:
        return f"{self.tag}:smpp:rcs"

    # --- running commands over shards ---------------------------------------------------
    async def _multi(self, ops: dict[int, list[Op]]) -> None:
        """Run each shard's commands in a MULTI/EXEC: on a single node one MULTI for all
        shards (one round trip), on a cluster one per shard, concurrently."""
        ops = {i: some for i, some in ops.items() if some}
        if not ops:
            return
        if not self.cluster:
            pipe = self.r.pipeline(transaction=True)
            for some in ops.values():
                _queue(pipe, some)
            await pipe.execute()
            return

        async def one(some: list[Op]) -> None:
            pipe = self.r.pipeline(transaction=True)
            _queue(pipe, some)
            await pipe.execute()

        await asyncio.gather(*(one(some) for some in ops.values()))

    async def _pipeline(self, ops: Sequence[Op]) -> list[Any]:
        """Commands in one non-transactional pipeline (a cluster client sends each to its
        node); their results in order."""
        if not ops:
            return []
        pipe = self.r.pipeline(transaction=False)
        _queue(pipe, ops)
        return list(await pipe.execute())

    async def _eval_many(
        self, script: AsyncScript, calls: Sequence[tuple[Sequence[str], Sequence[Any]]]
    ) -> list[Any]:
        """One script run per call (each in one shard) in one pipeline; results in order. A
        node that does not know the script yet (new, or a promoted replica) is taught it."""
        if len(calls) == 1:
            keys, args = calls[0]
            return [await script(keys=keys, args=args)]
        if not calls:
            return []
        pipe = self.r.pipeline(transaction=False)
        for keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        out = list(await pipe.execute(raise_on_error=False))
        for i, result in enumerate(out):
            if isinstance(result, NoScriptError):
                keys, args = calls[i]
                out[i] = await script(keys=keys, args=args)
            elif isinstance(result, Exception):
                raise result
        return out

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
        return [v.decode() if isinstance(v, bytes) else str(v) for v in out]

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
        return bytes.fromhex(value.decode() if isinstance(value, bytes) else str(value))

    async def record(self, outcome: BatchRecord) -> None:
        """Write a batch's outcomes: markers, pending + due, held and outbox atomically per
        shard (a batch's are in one shard); then the partner index, whose receipts may have
        come first (their messages are due at once)."""
        n = self.n
        ops: dict[int, list[Op]] = defaultdict(list)
        for batch_id, markers in outcome.markers.items():
            if markers:
                ops[shard_of(batch_id, n)].append(
                    ("hset", (self.markers_key(batch_id),), {"mapping": markers})
                )
        for shard, part in _split(outcome.pending, n).items():
            keys = self.shards[shard]
            ops[shard].append(("hset", (keys.pending,), {"mapping": part}))
        for shard, times in _split(outcome.due, n).items():
            ops[shard].append(("zadd", (self.shards[shard].due, times), {}))
        for shard, times in _split(outcome.held, n).items():
            ops[shard].append(("zadd", (self.shards[shard].held, times), {}))
        for shard, data in _split(outcome.held_data, n).items():
            ops[shard].append(("hset", (self.shards[shard].held_data,), {"mapping": data}))
        if outcome.outbox:
            grace = now_ms() + OUTBOX_GRACE_MS
            for shard, entries in self._split_entries(outcome.outbox).items():
                keys = self.shards[shard]
                ops[shard].append(("hset", (keys.outbox,), {"mapping": entries}))
                ops[shard].append(("zadd", (keys.outbox_due, dict.fromkeys(entries, grace)), {}))
        await self._multi(ops)
        if outcome.partners:
            await self._index_partners(outcome.partners)

    async def _index_partners(self, partners: dict[str, dict[str, str]]) -> None:
        calls: list[tuple[list[str], list[Any]]] = []
        for account, ids in partners.items():
            groups: dict[int, list[str]] = defaultdict(list)
            for partner_id, message_id in ids.items():
                groups[receipt_shard_of(account, partner_id, self.n)] += (partner_id, message_id)
            for shard, pairs in groups.items():
                keys = self.shards[shard]
                calls.append(([keys.partner_index(account)], [keys.receipt(account, ""), *pairs]))
        found: list[str] = []
        for out in await self._eval_many(self._pidx_add, calls):
            found += [m.decode() if isinstance(m, bytes) else str(m) for m in out]
        await self.poke(found)

    async def poke(self, message_ids: Sequence[str]) -> None:
        """Make messages whose receipt was pushed due now (a leased one: when its lease ends)."""
        if not message_ids:
            return
        groups: dict[int, list[str]] = defaultdict(list)
        for message_id in message_ids:
            groups[shard_of_message(message_id, self.n)].append(message_id)
        await self._eval_many(
            self._poke,
            [([self.shards[s].due, self.shards[s].lease, self.shards[s].poked], ids)
             for s, ids in groups.items()],
        )

    def _split_entries(self, entries: dict[str, bytes]) -> dict[int, dict[str, bytes]]:
        out: dict[int, dict[str, bytes]] = defaultdict(dict)
        for name, value in entries.items():
            out[shard_of_entry(name, self.n)][name] = value
        return out

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
        return out.decode() if isinstance(out, bytes) else str(out)

    async def take_held(self, limit: int, lease_ms: int) -> tuple[list[str], list[bytes | None]]:
        """Lease held messages whose startTime has come; :meth:`drop_held` once republished."""
        now = now_ms()
        per = _per_shard(limit, self.n)
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
        for shard, some in _group(ids, self.n).items():
            keys = self.shards[shard]
            ops[shard] += [("zrem", (keys.held, *some), {}), ("hdel", (keys.held_data, *some), {})]
        await self._multi(ops)

    # --- outbox -------------------------------------------------------------------------
    async def outbox_done(self, entries: Sequence[str]) -> None:
        ops: dict[int, list[Op]] = defaultdict(list)
        by_shard: dict[int, list[str]] = defaultdict(list)
        for name in entries:
            by_shard[shard_of_entry(name, self.n)].append(name)
        for shard, names in by_shard.items():
            keys = self.shards[shard]
            ops[shard] += [("hdel", (keys.outbox, *names), {}),
                           ("zrem", (keys.outbox_due, *names), {})]
        await self._multi(ops)

    async def take_outbox(self, limit: int = 100) -> list[tuple[str, bytes]]:
        """Lease outbox entries whose writer did not delete them in time (it died)."""
        now = now_ms()
        per = _per_shard(limit, self.n)
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
    async def claim(self, limit: int, lease_ms: int) -> Claim:
        """Lease up to about ``limit`` due messages, an even part from every shard (and return
        expired leases to ``due`` first); one pipelined script per shard.

        At most :data:`MAX_CLAIM` per shard: Lua's ``unpack`` takes a few thousand values."""
        per = min(_per_shard(limit, self.n), MAX_CLAIM)
        now = time.time()
        token = int((now * 1000 + lease_ms) * 1000) + random.randrange(1000)
        args = [int(now * 1000), int(now * 1_000_000), token, per]
        outs = await self._eval_many(
            self._claim, [([k.due, k.lease, k.pending], args) for k in self.shards]
        )
        records: dict[str, bytes] = {}
        orphans: list[str] = []
        for ids, vals in outs:
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
        """Commit a poll round, one script per shard; returns finals whose lease was lost.

        A shard that lost any changed nothing (its finals, waits and outbox entries are to be
        committed again without the lost ones); the other shards committed. ``waits`` are
        (message id, next poll); a message whose receipt was pushed meanwhile is due at once."""
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
        for shard, (fins, wts, entries) in parts.items():
            keys = self.shards[shard]
            args: list[Any] = [token, grace, len(fins), *fins, len(wts) // 2, *wts]
            for entry, payload in entries.items():
                args += (entry, payload)
            calls.append(
                ([keys.lease, keys.due, keys.pending, keys.outbox, keys.outbox_due, keys.poked],
                 args)
            )
        lost: list[str] = []
        for out in await self._eval_many(self._finish, calls):
            lost += [x.decode() for x in out]
        return lost

    async def release(self, token: int, ids: Sequence[str]) -> None:
        """Give leased messages back to ``due`` now (graceful stop)."""
        if ids:
            now = now_ms()
            await self._eval_many(
                self._release,
                [([self.shards[s].lease, self.shards[s].due], [token, now, *some])
                 for s, some in _group(ids, self.n).items()],
            )

    async def drop_orphans(self, ids: Sequence[str]) -> None:
        await self._pipeline(
            [("zrem", (self.shards[s].lease, *some), {}) for s, some in _group(ids, self.n).items()]
            + [("srem", (self.shards[s].poked, *some), {})
               for s, some in _group(ids, self.n).items()]
        )

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

    # --- pushed receipts ----------------------------------------------------------------
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
            admitted = {p.decode() if isinstance(p, bytes) else str(p) for p in out[1:]}
            receipts = {pid: v for pid, v in receipts.items() if pid in admitted}
            if not receipts:
                return 0, refused
        n = self.n
        groups: dict[int, tuple[list[str], list[Any]]] = {}
        for partner_id, packed in receipts.items():
            shard = receipt_shard_of(account, partner_id, n)
            group = groups.get(shard)
            if group is None:
                keys = self.shards[shard]
                group = groups[shard] = ([], [RECEIPT_TTL_S, keys.partner_index(account)])
            group[0].append(self.shards[shard].receipt(account, partner_id))
            group[1].extend((partner_id, packed))
        stored = 0
        found: list[str] = []
        for out in await self._eval_many(self._push, list(groups.values())):
            stored += int(out[0])
            found += [m.decode() if isinstance(m, bytes) else str(m) for m in out[1:]]
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
        else:
            order: dict[int, list[int]] = defaultdict(list)
            for i, pid in enumerate(partner_ids):
                order[receipt_shard_of(account, pid, self.n)].append(i)
            got = await self._pipeline(
                [("mget", ([keys[i] for i in members],), {}) for members in order.values()]
            )
            values = [None] * len(keys)
            for members, vals in zip(order.values(), got, strict=True):
                for i, v in zip(members, vals, strict=True):
                    values[i] = v
        return {
            pid: v if isinstance(v, bytes) else str(v).encode()
            for pid, v in zip(partner_ids, values, strict=True)
            if v is not None
        }

    async def put_state(self, account: str, values: dict[str, bytes], ttl_s: int) -> None:
        """Adapter state shared by every process (``ReceiptSink.remember``), with a TTL."""
        pipe = self.r.pipeline(transaction=False)
        for key, value in values.items():
            pipe.set(f"{self.tag}:astate:{account}:{key}", value, ex=ttl_s)
        await pipe.execute()

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


def _per_shard(limit: int, shards: int) -> int:
    return max(1, -(-limit // shards))


def _queue(pipe: Any, ops: Sequence[Op]) -> None:
    for name, args, kwargs in ops:
        getattr(pipe, name)(*args, **kwargs)


def _split(values: dict[str, _V], shards: int) -> dict[int, dict[str, _V]]:
    """Per-message values grouped by their message's shard."""
    if shards == 1:
        return {0: values} if values else {}
    out: dict[int, dict[str, _V]] = defaultdict(dict)
    for message_id, value in values.items():
        out[shard_of_message(message_id, shards)][message_id] = value
    return out


def _group(message_ids: Sequence[str], shards: int) -> dict[int, list[str]]:
    out: dict[int, list[str]] = defaultdict(list)
    for message_id in message_ids:
        out[shard_of_message(message_id, shards)].append(message_id)
    return out
