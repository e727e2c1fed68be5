"""Every Redis key and Lua script: batch markers, pending records, due index, leases, outbox.

All keys of one prefix share the hash tag ``{<prefix>}``, so every script and MULTI touches one
Redis Cluster slot. Keys (``P`` = ``{<prefix>}``):

``P:m:<batchId>``   hash  index → marker: ``i`` Send in flight (or, under the ``resubmit``
                            policy, taken by a worker), ``q`` taken by a worker whose Send has
                            not started (``fail`` policy only), ``o`` outcome recorded,
                            ``h`` held for its startTime, ``r`` handed to a delayed-retry queue,
                            ``c`` cancelled before it reached a partner (never sent);
                            field ``*`` stands for every index without a field of its own, so
                            a batch handled in one pass costs one or two fields, not hundreds.
                            Expires ``DEDUP_TTL_S`` after the batch's last touch, or
                            ``DEAD_MARKERS_TTL_S`` after the worker dead-lettered it.
``P:pending``       hash  messageId → packed record (:class:`Pending`) while a final is awaited.
``P:due``           zset  messageId → next poll (epoch ms). Reporters claim from its head only,
                            so polling cost grows with due messages, never with all pending.
``P:lease``         zset  messageId → lease token (epoch µs of lease end, random low digits).
                            Claimed messages live here; an expired lease goes back to ``due``.
``P:held``          zset  messageId → startTime (epoch ms); ``P:held:data`` the message itself.
``P:pidx:<account>``  hash  partnerId → messageId of the pending messages of an account whose
                            partner pushes receipts: a pushed receipt makes its message due at
                            once (the reporter publishes its final within a poll round).
``P:rcpt:<account>:<partnerId>``  string  a final state a partner pushed (webhook, SMPP
                            deliver_sm), kept ``RECEIPT_TTL_S``; the first final wins.
``P:rcptix:<account>``  zset  partnerId → expiry (epoch ms) of each stored receipt of the
                            account: counts them, so webhooks stop storing at a cap.
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
``P:outbox``        hash  entry → ``routingKey\\n body`` of a report message recorded before it
                            was published; ``P:outbox:due`` (zset) when a recovery may publish it
                            if its writer died. Deleted once the broker confirmed it.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import Connection

from mta.store import scripts
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


class Store:
    """The Redis side of the MTA, under one prefix."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.r = client
        tag = "{" + prefix + "}"
        self.tag = tag
        self.k_pending = f"{tag}:pending"
        self.k_due = f"{tag}:due"
        self.k_lease = f"{tag}:lease"
        self.k_held = f"{tag}:held"
        self.k_held_data = f"{tag}:held:data"
        self.k_outbox = f"{tag}:outbox"
        self.k_outbox_due = f"{tag}:outbox:due"
        self.k_signing = f"{tag}:signing"
        self._begin = client.register_script(scripts.BEGIN)
        self._claim = client.register_script(scripts.CLAIM)
        self._finish = client.register_script(scripts.FINISH)
        self._take = client.register_script(scripts.TAKE)
        self._release = client.register_script(scripts.RELEASE)
        self._reserve = client.register_script(scripts.RESERVE)
        self._cancel = client.register_script(scripts.CANCEL)
        self._due_if_receipt = client.register_script(scripts.DUE_IF_RECEIPT)

    @classmethod
    def connect(cls, url: str, prefix: str, max_connections: int = 64) -> Store:
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=20, connection_class=PackingConnection
        )
        return cls(aioredis.Redis(connection_pool=pool), prefix)

    @classmethod
    async def open(cls, url: str, prefix: str, max_connections: int = 64) -> Store:
        """Connect to the Redis that ``url`` names (a single node, or any node of a cluster)."""
        return cls.connect(url, prefix, max_connections)

    async def close(self) -> None:
        await self.r.aclose()

    def markers_key(self, batch_id: str) -> str:
        return f"{self.tag}:m:{batch_id}"

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

    async def count_keys(self) -> int:
        """How many Redis keys this prefix holds (SCAN: fine for an operator's command)."""
        return sum([1 async for _ in self.r.scan_iter(match=f"{self.tag}:*", count=1000)])

    async def mark_inflight(self, message_ids: Sequence[str]) -> None:
        """Mark messages whose Send is about to start (the ``fail`` policy's exact record)."""
        by_batch: dict[str, dict[str, str]] = {}
        for message_id in message_ids:
            batch, index = message_id.rsplit(":", 1)
            by_batch.setdefault(batch, {})[index] = MARK_INFLIGHT
        pipe = self.r.pipeline(transaction=True)
        for batch, fields in by_batch.items():
            pipe.hset(self.markers_key(batch), mapping=fields)  # type: ignore[arg-type]
        if len(pipe):
            await pipe.execute()

    async def signing_key(self) -> bytes:
        """The key that signs internal republishes (created once, shared by every worker), so
        an upstream cannot forge the ``x-mta-*`` headers that carry message ids and attempts."""
        await self.r.set(self.k_signing, os.urandom(32).hex(), nx=True)
        value = await self.r.get(self.k_signing)
        if value is None:  # pragma: no cover - just set
            raise RuntimeError(f"Redis key {self.k_signing} vanished")
        return bytes.fromhex(value.decode() if isinstance(value, bytes) else str(value))

    async def record(self, outcome: BatchRecord) -> None:
        """Write a batch's outcomes atomically: markers, pending + due, held, outbox."""
        pipe = self.r.pipeline(transaction=True)
        for batch_id, markers in outcome.markers.items():
            if markers:
                pipe.hset(self.markers_key(batch_id), mapping=markers)  # type: ignore[arg-type]
        if outcome.pending:
            pipe.hset(self.k_pending, mapping=outcome.pending)  # type: ignore[arg-type]
            pipe.zadd(self.k_due, outcome.due)
        if outcome.partners:
            early: list[str] = []
            for account, ids in outcome.partners.items():
                pipe.hset(self.partner_index_key(account), mapping=ids)  # type: ignore[arg-type]
                for partner_id, message_id in ids.items():
                    early += (message_id, self.receipt_key(account, partner_id))
            # Queued in the MULTI (awaiting a pipeline command only queues it).
            await self._due_if_receipt(
                keys=[self.k_due], args=early, client=pipe
            )
        if outcome.held:
            pipe.zadd(self.k_held, outcome.held)
            pipe.hset(self.k_held_data, mapping=outcome.held_data)  # type: ignore[arg-type]
        if outcome.outbox:
            pipe.hset(self.k_outbox, mapping=outcome.outbox)  # type: ignore[arg-type]
            grace = now_ms() + OUTBOX_GRACE_MS
            pipe.zadd(self.k_outbox_due, dict.fromkeys(outcome.outbox, grace))
        if len(pipe):
            await pipe.execute()

    async def cancel(self, message_id: str) -> str:
        """Cancel a message that has not reached a partner yet; '' when cancelled, else the
        marker that makes it too late. The worker then skips it (``c`` is never taken over);
        the caller publishes its FAIL."""
        batch, index = message_id.rsplit(":", 1)
        out = await self._cancel(
            keys=[self.markers_key(batch), self.k_held, self.k_held_data],
            args=[index, message_id, CANCEL_TTL_S],
        )
        return out.decode() if isinstance(out, bytes) else str(out)

    async def take_held(self, limit: int, lease_ms: int) -> tuple[list[str], list[bytes | None]]:
        """Lease held messages whose startTime has come; :meth:`drop_held` once republished."""
        now = now_ms()
        ids, vals = await self._take(
            keys=[self.k_held, self.k_held_data], args=[now, now + lease_ms, limit]
        )
        return [i.decode() for i in ids], list(vals)

    async def drop_held(self, ids: Sequence[str]) -> None:
        if ids:
            pipe = self.r.pipeline(transaction=True)
            pipe.zrem(self.k_held, *ids)
            pipe.hdel(self.k_held_data, *ids)
            await pipe.execute()

    # --- outbox -------------------------------------------------------------------------
    async def outbox_done(self, entries: Sequence[str]) -> None:
        if entries:
            pipe = self.r.pipeline(transaction=True)
            pipe.hdel(self.k_outbox, *entries)
            pipe.zrem(self.k_outbox_due, *entries)
            await pipe.execute()

    async def take_outbox(self, limit: int = 100) -> list[tuple[str, bytes]]:
        """Lease outbox entries whose writer did not delete them in time (it died)."""
        now = now_ms()
        ids, vals = await self._take(
            keys=[self.k_outbox_due, self.k_outbox], args=[now, now + OUTBOX_GRACE_MS, limit]
        )
        out = [(i.decode(), v) for i, v in zip(ids, vals, strict=True) if v is not None]
        gone = [i.decode() for i, v in zip(ids, vals, strict=True) if v is None]
        if gone:
            await self.r.zrem(self.k_outbox_due, *gone)
        return out

    # --- reporter -----------------------------------------------------------------------
    async def claim(self, limit: int, lease_ms: int) -> Claim:
        """Lease up to ``limit`` due messages (and return expired leases to ``due`` first).

        At most :data:`MAX_CLAIM` per call: Lua's ``unpack`` takes a few thousand values."""
        limit = min(limit, MAX_CLAIM)
        now = time.time()
        token = int((now * 1000 + lease_ms) * 1000) + random.randrange(1000)
        ids, vals = await self._claim(
            keys=[self.k_due, self.k_lease, self.k_pending],
            args=[int(now * 1000), int(now * 1_000_000), token, limit],
        )
        records: dict[str, bytes] = {}
        orphans: list[str] = []
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
        waits: Sequence[tuple[str, int, str]],
        outbox: dict[str, bytes],
        partners: Sequence[tuple[str, str]] = (),
    ) -> list[str]:
        """Commit a poll round; returns finals whose lease was lost (nothing changed then).

        ``waits`` are (message id, next poll, receipt key or ''): a message whose receipt was
        pushed meanwhile is due at once. ``partners`` are (account, partner id) of finals whose
        partner index entry goes with them."""
        args: list[Any] = [token, now_ms() + OUTBOX_GRACE_MS, len(finals), *finals, len(waits)]
        for message_id, due, receipt in waits:
            args += (message_id, due, receipt)
        args.append(len(partners))
        for account, partner_id in partners:
            args += (self.partner_index_key(account), partner_id)
        for entry, payload in outbox.items():
            args += (entry, payload)
        lost = await self._finish(
            keys=[self.k_lease, self.k_due, self.k_pending, self.k_outbox, self.k_outbox_due],
            args=args,
        )
        return [x.decode() for x in lost]

    async def release(self, token: int, ids: Sequence[str]) -> None:
        """Give leased messages back to ``due`` now (graceful stop)."""
        if ids:
            await self._release(keys=[self.k_lease, self.k_due], args=[token, now_ms(), *ids])

    async def drop_orphans(self, ids: Sequence[str]) -> None:
        if ids:
            await self.r.zrem(self.k_lease, *ids)

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

    # --- pushed receipts --------------------------------------------------------------

    def receipt_key(self, account: str, partner_id: str) -> str:
        return f"{self.tag}:rcpt:{account}:{partner_id}"

    def partner_index_key(self, account: str) -> str:
        return f"{self.tag}:pidx:{account}"

    def receipt_index_key(self, account: str) -> str:
        return f"{self.tag}:rcptix:{account}"

    async def push_receipts(self, account: str, receipts: dict[str, bytes]) -> int:
        """Store pushed final states (partner id → packed result); an earlier final is kept.
        No cap: for receipts from authenticated sources (SMPP deliver_sm, a pull drain)."""
        stored, _ = await self.store_receipts(account, receipts, None)
        return stored

    async def store_receipts(
        self, account: str, receipts: dict[str, bytes], cap: int | None
    ) -> tuple[int, int]:
        """Like :meth:`push_receipts`, but while the account already holds ``cap`` stored
        receipts (None = no cap) the rest are refused; returns (stored, refused). One script:
        O(log n) per receipt plus the expired index entries it drops."""
        if not receipts:
            return 0, 0
        script = self.__dict__.get("_push_script")
        if script is None:
            script = self.__dict__["_push_script"] = self.r.register_script(scripts.PUSH_RECEIPTS)
        keys = [self.receipt_index_key(account)]
        args: list[Any] = [
            RECEIPT_TTL_S,
            -1 if cap is None else max(0, cap),
            self.partner_index_key(account),
            self.k_due,
        ]
        for partner_id, packed in receipts.items():
            keys.append(self.receipt_key(account, partner_id))
            args += (partner_id, packed)
        stored, refused = await script(keys=keys, args=args)
        return int(stored), int(refused)

    async def stored_receipts(self, account: str) -> int:
        """How many receipts the account holds (expired ones may count until the next push)."""
        return int(await self.r.zcard(self.receipt_index_key(account)))

    async def receipts(self, account: str, partner_ids: Sequence[str]) -> dict[str, bytes]:
        """The pushed receipts stored for these partner ids (one MGET)."""
        if not partner_ids:
            return {}
        values = await self.r.mget([self.receipt_key(account, pid) for pid in partner_ids])
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
        """Delete spent receipts (and their index entries, so they stop counting)."""
        if partner_ids:
            pipe = self.r.pipeline(transaction=True)
            pipe.delete(*(self.receipt_key(account, pid) for pid in partner_ids))
            pipe.zrem(self.receipt_index_key(account), *partner_ids)
            await pipe.execute()

    # --- inspection and clean-up --------------------------------------------------------
    async def counts(self) -> dict[str, int]:
        pipe = self.r.pipeline(transaction=False)
        pipe.hlen(self.k_pending)
        pipe.zcard(self.k_due)
        pipe.zcard(self.k_lease)
        pipe.zcard(self.k_held)
        pipe.hlen(self.k_outbox)
        pending, due, lease, held, outbox = await pipe.execute()
        return {"pending": pending, "due": due, "leased": lease, "held": held, "outbox": outbox}

    async def pending_footprint(self, accounts: Sequence[str] = ()) -> tuple[int, int]:
        """(pending messages, bytes of the pending hash + due and lease indexes + the partner
        indexes of ``accounts``), read in one MULTI so both describe the same moment (for
        ``mta bench``)."""
        pipe = self.r.pipeline(transaction=True)
        pipe.hlen(self.k_pending)
        partner_indexes = [self.partner_index_key(a) for a in accounts]
        for key in (self.k_pending, self.k_due, self.k_lease, *partner_indexes):
            pipe.memory_usage(key, samples=0)
        count, *sizes = await pipe.execute()
        return int(count), sum(int(x or 0) for x in sizes)

    async def delete_all(self) -> None:
        """Remove every key of this prefix (tests and benchmarks clean up with it)."""
        keys = [k async for k in self.r.scan_iter(match=f"{self.tag}:*", count=1000)]
        for i in range(0, len(keys), 500):
            await self.r.delete(*keys[i : i + 500])
