"""The sharded Redis layout: a batch's keys in one slot, batches spread over slots, the shard
count recorded and enforced, `mta migrate` from the layout before sharding and between counts,
and the pipeline on both layouts (real Redis, real RabbitMQ)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from mta.contract import ApiStatus, SmsResult, pack_result
from mta.outbox import Forgetting
from mta.store import LayoutError, Store
from mta.store.connect import parse_sentinel_url
from mta.store.keys import outbox_entry_name, receipt_shard_of, shard_of
from tests.conftest import REDIS_URL, Env, batch, batch_record, run_mta

if TYPE_CHECKING:
    from tests.clusters import RedisCluster

pytest_plugins = ["tests.clusters"]  # the redis_cluster fixture


def _slot(key: str) -> int:
    return int(key_slot(key.encode()))


def test_a_batchs_keys_share_one_slot_and_batches_spread_over_slots() -> None:
    store = Store(aioredis.from_url(REDIS_URL), "slots")
    slots = set()
    for n in range(200):
        batch_id = f"batch-{n}"
        keys = store.batch_shard(batch_id)
        mid = f"{batch_id}:7"
        same = {_slot(k) for k in (
            store.markers_key(batch_id), keys.pending, keys.due, keys.lease, keys.poked,
            keys.held, keys.held_data, keys.outbox, keys.outbox_due,
            store.message_shard(mid).pending,
        )}
        assert len(same) == 1, batch_id
        slots |= same
    # Before sharding every key of a prefix sat in the slot of "{prefix}".
    assert len(slots) == 16
    # A pushed receipt and the partner index entry that finds its message share a slot.
    for n in range(50):
        pid = f"partner-id-{n}"
        assert _slot(store.receipt_key("acct", pid)) == _slot(store.partner_index_key("acct", pid))


def test_shard_functions_are_stable() -> None:
    """CRC-32, not hash(): the same shard in every process and release."""
    assert [shard_of(f"b{n}", 16) for n in range(6)] == [
        shard_of(f"b{n}", 16) for n in range(6)
    ]
    assert shard_of("batch-1", 16) == 2
    assert receipt_shard_of("acct", "p-1", 16) == 10
    assert shard_of("anything", 1) == 0


async def test_the_shard_count_is_recorded_and_another_refused(env: Env) -> None:
    first = await Store.open(REDIS_URL, env.prefix, shards=8)
    await first.close()
    with pytest.raises(LayoutError, match=r"MTA_SHARDS=8.*mta migrate"):
        await Store.open(REDIS_URL, env.prefix, shards=16)
    again = await Store.open(REDIS_URL, env.prefix, shards=8)
    await again.delete_all()
    await again.close()


async def test_state_from_before_sharding_is_refused_until_migrated(env: Env) -> None:
    legacy = Store(aioredis.from_url(REDIS_URL), env.prefix, shards=1)
    await legacy.record(batch_record("old-batch"))
    assert legacy.shards[0].tag == "{" + env.prefix + "}"  # the layout before sharding
    with pytest.raises(LayoutError, match=r"before sharding.*mta migrate"):
        await Store.open(REDIS_URL, env.prefix, shards=16)
    await legacy.close()


async def test_migrate_moves_every_kind_of_state_and_back(env: Env) -> None:
    legacy = Store(aioredis.from_url(REDIS_URL), env.prefix, shards=1)
    for n in range(20):
        await legacy.record(batch_record(f"b{n}"))
    await legacy.r.hset(legacy.shards[0].outbox, "w:tok:0", b"5.DELIVERED\n{}")
    await legacy.r.zadd(legacy.shards[0].outbox_due, {"w:tok:0": 0})
    await legacy.r.zadd(legacy.shards[0].held, {"h-batch:0": 0})
    await legacy.r.hset(legacy.shards[0].held_data, "h-batch:0", b"{}")
    delivered = pack_result(SmsResult("p-b3:0", apiStatus=ApiStatus.DELIVERED))
    assert await legacy.push_receipts("acct", {"p-b3:0": delivered}) == 1
    due = legacy.shards[0].due
    await legacy.r.zadd(due, dict.fromkeys(await legacy.r.zrange(due, 0, -1), 0))
    leased = await legacy.claim(5, 600_000)  # a reporter held some when everything stopped
    assert len(leased.records) == 5
    await legacy.close()

    code, out, _ = await run_mta(env, "migrate", MTA_SHARDS="16")
    assert code == 1 and "from 1 to 16" in out, out
    code, out, err = await run_mta(env, "migrate", "--yes", MTA_SHARDS="16")
    assert code == 0, err
    assert "40 pending" in out and "1 held" in out and "1 outbox" in out, out

    store = await Store.open(REDIS_URL, env.prefix, shards=16)
    assert await store.recorded_shards() == 16
    counts = await store.counts()
    assert (counts["pending"], counts["held"], counts["outbox"]) == (40, 1, 1)
    assert counts["due"] == 40 and counts["leased"] == 0
    assert all([await store.has_markers(f"b{n}") for n in range(20)])
    assert await store.receipts("acct", ["p-b3:0"]) == {"p-b3:0": delivered}
    claim = await store.claim(1000, 60_000)  # all due now, the 5 that were leased too
    assert len(claim.records) == 40 and set(leased.records) <= set(claim.records)
    await store.release_token(claim.token)
    await store.close()

    code, out, err = await run_mta(env, "migrate", "--yes", MTA_SHARDS="4")
    assert code == 0, err
    four = await Store.open(REDIS_URL, env.prefix, shards=4)
    assert (await four.counts())["pending"] == 40
    assert await four.receipts("acct", ["p-b3:0"]) == {"p-b3:0": delivered}
    assert all([await four.has_markers(f"b{n}") for n in range(20)])
    index = {int(key_slot(k)) for k in await four.keys("pidx:*")}
    assert len(index) > 1, "the partner index moved to the receipts' shards"
    await four.delete_all()
    await four.close()


async def _lose_one_lease(store: Store) -> tuple[str, list[str]]:
    """40 one-message batches claimed, one lease taken by another reporter, the round
    committed: (the stolen id, every claimed id)."""
    for n in range(40):
        await store.record(batch_record(f"lease-{n}", size=1))
    for keys in store.shards:  # all due now
        members = await store.r.zrange(keys.due, 0, -1)
        if members:
            await store.r.zadd(keys.due, dict.fromkeys(members, 0))
    claim = await store.claim(1000, 60_000)
    assert len(claim.records) == 40
    stolen = next(iter(claim.records))
    await store.r.zadd(store.message_shard(stolen).lease, {stolen: 1})  # another reporter's now
    lost = await store.finish(claim.token, list(claim.records), [], {})
    assert lost == [stolen]
    return stolen, list(claim.records)


async def test_a_lost_lease_on_one_node_commits_nothing(env: Env) -> None:
    """A single node commits a round in one script: all shards or none."""
    store = Store(aioredis.from_url(REDIS_URL), env.prefix)
    await _lose_one_lease(store)
    assert store.failed(["x:0"]) is None
    assert (await store.counts())["pending"] == 40
    await store.delete_all()
    await store.close()


async def test_a_lost_lease_on_a_cluster_leaves_the_other_shards_committed(
    env: Env, redis_cluster: RedisCluster
) -> None:
    store = await Store.open(redis_cluster.url, env.prefix)
    assert store.cluster
    stolen, claimed = await _lose_one_lease(store)
    assert store.failed([stolen]) == {store.message_shard(stolen).index}
    same_shard = [m for m in claimed if store.message_shard(m) == store.message_shard(stolen)]
    assert (await store.counts())["pending"] == len(same_shard)
    await store.delete_all()
    await store.close()


async def test_on_a_cluster_outbox_deletes_do_not_ride_on_records(
    env: Env, redis_cluster: RedisCluster
) -> None:
    """A batch's record on a cluster writes its own shard only: deletes of other batches'
    outbox entries (in other masters' shards) go in the worker's delete loop, so a record
    never waits out another master's failover."""
    store = await Store.open(redis_cluster.url, env.prefix)
    forget = Forgetting(store, asyncio.Event())
    try:
        entries = {outbox_entry_name("w", "tk", s, s): b"1.OK\n{}" for s in range(store.n)}
        outcome = batch_record("one-shard", outbox=entries)
        await store.record(outcome)
        forget.add(list(entries))
        assert forget.ride() == []  # nothing for the next record to carry
        await forget.flush()  # the loop's step
        assert (await store.counts())["outbox"] == 0
    finally:
        await store.delete_all()
        await store.close()


@pytest.mark.parametrize("shards", [1, 16])
async def test_the_pipeline_on_either_layout(env: Env, shards: int) -> None:
    tail = await env.tail()
    await env.start("worker", "reporter", shards=shards, poll_first_s=0.2, poll_max_s=0.5)
    mids = [await env.publish(batch(3, start=3 * n)) for n in range(10)]
    finals = await tail.wait_finals(30, timeout=30)
    assert {f["messageId"].rsplit(":", 1)[0] for f in finals} == set(mids)
    assert len({f["messageId"] for f in finals}) == 30
    store = Store(aioredis.from_url(REDIS_URL), env.prefix, shards)
    assert await store.recorded_shards() == shards
    assert (await store.counts())["pending"] == 0
    await store.close()


def test_sentinel_urls() -> None:
    sentinels, service, options, password = parse_sentinel_url(
        "redis+sentinel://:s3cret@10.0.0.1:26379,10.0.0.2/mymaster/2?sentinel_password=x"
    )
    assert sentinels == [("10.0.0.1", 26379), ("10.0.0.2", 26379)]
    assert (service, options, password) == ("mymaster", {"db": 2, "password": "s3cret"}, "x")
    with pytest.raises(ValueError, match="service"):
        parse_sentinel_url("redis+sentinel://10.0.0.1:26379")


async def test_a_retried_write_that_had_landed_writes_no_pending_record_again(env: Env) -> None:
    """The worker retries a write whose answer an outage took; a reporter may have published
    the finals meanwhile: the retry must not bring their pending records back."""
    store = Store(aioredis.from_url(REDIS_URL), env.prefix)
    outcome = batch_record("landed")
    await store.record(outcome)
    keys = store.batch_shard("landed")
    await store.r.hdel(keys.pending, "landed:0", "landed:1")  # finals published
    await store.r.zrem(keys.due, "landed:0", "landed:1")
    await store.record(outcome)  # the retry
    assert (await store.counts())["pending"] == 0
    fresh = batch_record("fresh")
    fresh.tried = True  # a retry whose first try never reached Redis writes everything
    await store.record(fresh)
    assert (await store.counts())["pending"] == 2
    await store.delete_all()
    await store.close()
