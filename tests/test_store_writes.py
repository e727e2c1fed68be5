"""How a worker's writes reach Redis: the partner index inside the batch's MULTI on one node
(also when the node does not know the script yet), and deletes of published outbox entries
carried by the next record or made on their own soon after (real Redis)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis.asyncio as aioredis

from mta.outbox import FORGET_EVERY_S, Forgetting
from mta.store import Store
from mta.store.keys import outbox_entry_name, shard_of_message
from tests.conftest import Env, batch_record, eventually
from tests.faults import PrivateRedis

pytest_plugins = ["tests.faults"]  # the private_redis fixture


def _name(store: Store, batch_id: str, token: str, n: int) -> str:
    return outbox_entry_name("w", token, shard_of_message(f"{batch_id}:0", store.n), n)


async def _commands(r: aioredis.Redis) -> dict[str, int]:
    stats: dict[str, Any] = await r.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


async def test_partner_index_is_written_in_the_batchs_multi(private_redis: PrivateRedis) -> None:
    """One node: markers, pending records and the partner index in one MULTI/EXEC (one round
    trip); a receipt pushed before the write makes its message due at once; a node without the
    script (restarted, flushed) still gets the index, by the script run on its own."""
    r = aioredis.from_url(private_redis.url)
    store = Store(r, "pw")
    try:
        # A receipt for the third message came before its Send was recorded.
        await store.push_receipts("acct", {"p-b1:2": b"DELIVERED"})
        await r.script_flush()
        await r.config_resetstat()
        await store.record(batch_record("b1", 3))
        # The EVALSHA inside the MULTI met NOSCRIPT: the script was run again on its own.
        assert (await _commands(r)).get("exec") == 1
        index = store.partner_index_key("acct", "p-b1:0")
        assert await r.hget(index, "p-b1:0") == b"b1:0"
        due = await r.zscore(store.message_shard("b1:2").due, "b1:2")
        assert due is not None and due <= time.time() * 1000 + 1  # poked: due now
        later = await r.zscore(store.message_shard("b1:0").due, "b1:0")
        assert later is not None and later > time.time() * 1000 + 30_000

        await r.config_resetstat()
        await store.record(batch_record("b2", 3))
        # Known script: one MULTI holding the HSETs, ZADDs and the EVALSHA; nothing after it
        # (another client sees EXEC as the last command of the store's connection).
        observer = aioredis.from_url(private_redis.url)
        try:
            last = {c["cmd"] for c in await observer.client_list() if c["cmd"] != "client|list"}
        finally:
            await observer.aclose()
        assert last == {"exec"}, last
        calls = await _commands(r)
        assert calls.get("multi") == 1 and calls.get("exec") == 1
        assert calls.get("evalsha") == 1, calls
        assert await r.hget(store.partner_index_key("acct", "p-b2:1"), "p-b2:1") == b"b2:1"
    finally:
        await store.delete_all()
        await store.close()


async def test_published_entries_are_deleted_by_the_next_record(env: Env) -> None:
    store = await env.store()
    forget = Forgetting(store, asyncio.Event())
    try:
        first = {_name(store, "b1", "t1", 0): b"1.OK\n{}"}
        await store.record(batch_record("b1", 3, outbox=first, partners=False))
        forget.add(list(first))
        assert (await store.counts())["outbox"] == 1  # published, not yet deleted

        assert forget.ride() == list(first) and forget.take() == []  # one node: they ride
        forget.add(list(first))
        second = {_name(store, "b2", "t2", 0): b"1.OK\n{}"}
        record = batch_record("b2", 3, outbox=second, partners=False)
        record.forget = forget.ride()
        await store.record(record)
        outbox = store.message_shard("b1:0").outbox
        assert await store.r.hexists(outbox, next(iter(first))) is False
        assert (await store.counts())["outbox"] == 1  # the second batch's own entry

        # No record comes: the loop deletes within FORGET_EVERY_S.
        forget.add(list(second))
        loop = asyncio.create_task(forget.loop())
        try:
            started = time.monotonic()

            async def emptied() -> bool:
                return (await store.counts())["outbox"] == 0

            await eventually(emptied, timeout=20 * FORGET_EVERY_S, what="outbox emptied")
            assert time.monotonic() - started < 20 * FORGET_EVERY_S
            assert forget.take() == []
        finally:
            loop.cancel()
    finally:
        await store.close()


async def test_a_failed_record_gives_its_deletes_back_and_close_makes_them(env: Env) -> None:
    store = await env.store()
    forget = Forgetting(store, asyncio.Event())
    try:
        entries = {_name(store, "b3", "t3", i): b"1.OK\n{}" for i in range(2)}
        await store.record(batch_record("b3", 3, outbox=entries, partners=False))
        forget.add(list(entries)[:1])
        taken = forget.take()
        forget.add(list(entries)[1:])
        forget.give_back(taken)  # the record that took them failed
        assert forget.take() == list(entries)
        forget.give_back(list(entries))
        await forget.close()  # at stop: deleted, nothing left for the recovery
        assert (await store.counts())["outbox"] == 0
        assert forget.take() == []
    finally:
        await store.close()
