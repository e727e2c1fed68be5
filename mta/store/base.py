"""The shard-aware core of the store: the client, the keys of every shard, and running
commands and scripts over shards (one MULTI or pipeline on a single node, per shard on a
cluster)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.connection import Connection
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from mta.loglimit import LogLimiter
from mta.store import scripts
from mta.store.keys import (
    DEFAULT_SHARDS,
    MAX_SHARDS,
    ShardKeys,
    receipt_shard_of,
    shard_of,
    shard_of_entry,
    shard_of_message,
)

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
#: One script run: the script, its keys, its arguments.
ScriptCall = tuple[AsyncScript, Sequence[str], Sequence[Any]]
_V = TypeVar("_V")


log = logging.getLogger("mta.store")

#: After a WAIT that came back short, writes do not wait for replicas for this long: with no
#: replica left (a failover just promoted it), each write would otherwise wait ``wait_ms``.
ALONE_S = 10


class StoreBase:
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
        self._reserve = client.register_script(scripts.RESERVE)
        self._cancel = client.register_script(scripts.CANCEL)
        self._pidx_add = client.register_script(scripts.PIDX_ADD)
        self._poke = client.register_script(scripts.POKE)
        self._push = client.register_script(scripts.PUSH_RECEIPTS)
        self._admit = client.register_script(scripts.ADMIT_RECEIPTS)
        self._apply = client.register_script(scripts.APPLY)
        self._set_many = client.register_script(scripts.SET_MANY)
        self._release_token = client.register_script(scripts.RELEASE_TOKEN)
        #: Replicas a write must reach before :meth:`replicated` returns (0: do not wait).
        self.wait_replicas = 0
        self.wait_ms = 1000
        self._short = LogLimiter(burst=1, window_s=60.0)
        self._alone_until = 0.0  # after a short WAIT: no replica to wait for until then

    # --- replication ------------------------------------------------------------------
    async def replicated(self, shards: Iterable[int]) -> None:
        """With :attr:`wait_replicas`, return once the writes so far to these shards reached
        that many replicas (or ``wait_ms`` passed: then warn and go on, rather than stop
        while a replica is down). Redis replicates asynchronously: without it, a master that
        dies right after acknowledging a write can lose it in the failover.

        WAIT counts the writes of its own connection, so a small write to the shard's node
        (its ``fence`` key) goes first on that connection; replication is in order, so the
        earlier writes of any connection are covered."""
        if not self.wait_replicas or time.monotonic() < self._alone_until:
            return
        if not self.cluster:
            pipe = self.r.pipeline(transaction=False)
            pipe.incr(f"{self.tag}:fence")
            pipe.wait(self.wait_replicas, self.wait_ms)
            _, acked = await pipe.execute()
            self._check_acked(int(acked), "redis")
            return
        cluster: Any = self.r
        nodes: dict[str, tuple[Any, str]] = {}
        for shard in set(shards):
            key = f"{self.shards[shard].tag}:fence"
            node = cluster.get_node_from_key(key)
            nodes.setdefault(node.name, (node, key))
        await asyncio.gather(*(self._fence(node, key) for node, key in nodes.values()))

    async def _fence(self, node: Any, key: str) -> None:
        connection = node.acquire_connection()
        try:
            await connection.send_packed_command(
                connection.pack_commands(
                    [("INCR", key), ("WAIT", self.wait_replicas, self.wait_ms)]
                )
            )
            await connection.read_response()
            acked = await connection.read_response()
        except BaseException:
            await connection.disconnect()
            raise
        finally:
            node.release(connection)
        self._check_acked(int(acked), node.name)

    def _check_acked(self, acked: int, where: str) -> None:
        if acked < self.wait_replicas:
            self._alone_until = time.monotonic() + ALONE_S
            suppressed = self._short.allow("replicas")
            if suppressed is not None:
                log.warning(
                    "Redis %s: a write reached %d replica(s) within %d ms, not the %d of "
                    "MTA_REDIS_WAIT_REPLICAS; not waiting for replicas for %d s (is a replica "
                    "down?)%s",
                    where, acked, self.wait_ms, self.wait_replicas, ALONE_S,
                    f" [{suppressed} more like it]" if suppressed else "",
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
    async def _multi(
        self, ops: dict[int, list[Op]], script: ScriptCall | None = None
    ) -> Any:
        """Run each shard's commands in a MULTI/EXEC: on a single node one MULTI for all
        shards (one round trip), on a cluster one per shard, concurrently.

        *script* (single node only: its keys may be in any shard) runs in the same MULTI,
        after the commands; its result is returned (None without one). A node that does not
        know the script yet runs it on its own right after (the MULTI's commands stand)."""
        ops = {i: some for i, some in ops.items() if some}
        if script is not None:
            assert not self.cluster, "a script joins a MULTI on a single node only"
            pipe = self.r.pipeline(transaction=True)
            for some in ops.values():
                queue_ops(pipe, some)
            code, keys, args = script
            pipe.evalsha(code.sha, len(keys), *keys, *args)
            out = (await pipe.execute(raise_on_error=False))[-1]
            if isinstance(out, NoScriptError):
                return await code(keys=keys, args=args)
            if isinstance(out, Exception):
                raise out
            return out
        if not ops:
            return None
        if not self.cluster:
            pipe = self.r.pipeline(transaction=True)
            for some in ops.values():
                queue_ops(pipe, some)
            await pipe.execute()
            return None

        # A script, not MULTI: redis-py's cluster transactions run every queued command in a
        # thread of its own with an event loop of its own (~300 us each, the loop blocked).
        await self._eval_many(self._apply, [apply_args(some) for some in ops.values()])
        return None

    def _calls(self, shards: Sequence[int]) -> list[list[int]]:
        """How shards are grouped into script calls: all in one on a single node (one step,
        atomic across shards), one per call on a cluster (one slot per script)."""
        return [[s] for s in shards] if self.cluster else [list(shards)] if shards else []

    async def _pipeline(self, ops: Sequence[Op]) -> list[Any]:
        """Commands in one non-transactional pipeline (a cluster client sends each to its
        node); their results in order."""
        if not ops:
            return []
        pipe = self.r.pipeline(transaction=False)
        queue_ops(pipe, ops)
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
        if self.cluster:  # redis-py's cluster pipeline refuses EVALSHA: concurrent calls
            return list(
                await asyncio.gather(*(script(keys=keys, args=args) for keys, args in calls))
            )
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

    def _split_entries(self, entries: dict[str, bytes]) -> dict[int, dict[str, bytes]]:
        out: dict[int, dict[str, bytes]] = defaultdict(dict)
        for name, value in entries.items():
            out[shard_of_entry(name, self.n)][name] = value
        return out


def per_shard(limit: int, shards: int) -> int:
    return max(1, -(-limit // shards))


def apply_args(ops: Sequence[Op]) -> tuple[list[str], list[Any]]:
    """The keys and arguments of the APPLY script for one shard's commands (HSET with a
    mapping, ZADD with a mapping, ZREM, HDEL: what the store runs atomically)."""
    keys: list[str] = []
    args: list[Any] = []
    for name, values, options in ops:
        key, *rest = values
        keys.append(key)
        if name == "hset":
            command: list[Any] = ["HSET", key]
            for field, value in options["mapping"].items():
                command += (field, value)
        elif name == "zadd":
            command = ["ZADD", key]
            for member, score in rest[0].items():
                command += (score, member)
        elif name in ("zrem", "hdel"):
            command = [name.upper(), key, *rest]
        elif name == "set":
            command = ["SET", key, *rest, "EX", options["ex"]]
        else:  # pragma: no cover - a store bug
            raise ValueError(f"APPLY does not run {name}")
        args += (len(command), *command)
    return keys, args


def queue_ops(pipe: Any, ops: Sequence[Op]) -> None:
    for name, args, kwargs in ops:
        getattr(pipe, name)(*args, **kwargs)


def split_by_shard(values: dict[str, _V], shards: int) -> dict[int, dict[str, _V]]:
    """Per-message values grouped by their message's shard."""
    if shards == 1:
        return {0: values} if values else {}
    out: dict[int, dict[str, _V]] = defaultdict(dict)
    for message_id, value in values.items():
        out[shard_of_message(message_id, shards)][message_id] = value
    return out


def group_by_shard(message_ids: Sequence[str], shards: int) -> dict[int, list[str]]:
    out: dict[int, list[str]] = defaultdict(list)
    for message_id in message_ids:
        out[shard_of_message(message_id, shards)].append(message_id)
    return out

