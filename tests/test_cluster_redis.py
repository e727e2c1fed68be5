"""A Redis Cluster (3 masters, one replica each; tests/clusters.py) under ``mta``:
MTA_REDIS_URL names one of its nodes, the store finds the others (mta/store).

A run of the whole pipeline (on the shared RabbitMQ) counts finals per message from our own
queue: every message has exactly one. ``CLUSTER_N`` (messages, default 2000) makes the run
bigger: ``make cluster-test`` (which prints the figures). The runs with a master killed -9
mid-run are in tests/test_cluster_redis_failover.py.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

from mta.store import Store
from tests.conftest import Env, sim_accounts
from tests.test_faults import Ledger, check, make_batches, publish_all
from tests.test_process import Proc, procs, spawn  # noqa: F401 - procs is a fixture

if TYPE_CHECKING:  # imported by pytest_plugins below, so that pytest rewrites their asserts
    from tests.clusters import RedisCluster

pytest_plugins = ["tests.faults", "tests.clusters"]  # fixtures, the `cluster` marker

N = int(os.environ.get("CLUSTER_N", "2000"))
TIMEOUT = max(240, N // 20)  # seconds per test: a shared 2-core machine, and the cluster forms


#: As the README has it for a Redis with replicas (MTA_REDIS_WAIT_REPLICAS): a change counts
#: once a replica has it too, so a promoted replica lacks nothing the MTA acted on.
CLUSTER_SETTINGS = {"MTA_REDIS_WAIT_REPLICAS": "1"}


def figures(line: str) -> None:
    print(f"\n[cluster-test] {line}")  # shown by `make cluster-test` (pytest -s)


@pytest.fixture
async def cluster_env(env: Env, redis_cluster: RedisCluster) -> AsyncIterator[Env]:
    """``env`` with its MTA_REDIS_URL on a node of the Redis Cluster; this prefix's state there
    is deleted afterwards (RabbitMQ is the shared one, cleaned by ``env``)."""
    env.configure(redis_url=redis_cluster.url)
    yield env
    for node in redis_cluster.nodes:  # whatever a test killed is back before the next one
        if not node.running:
            await redis_cluster.start(node)
    store = await Store.open(redis_cluster.url, env.prefix, check=False)
    try:
        await store.delete_all()
    finally:
        await store.close()


@pytest.fixture
async def ledger() -> AsyncIterator[Ledger]:
    followed = Ledger()
    yield followed
    await followed.close()


async def pending(url: str, prefix: str) -> int:
    store = await Store.open(url, prefix, check=False)
    try:
        return (await store.counts())["pending"]
    finally:
        await store.close()


@pytest.mark.timeout(TIMEOUT)
async def test_pipeline_on_a_redis_cluster(
    cluster_env: Env, redis_cluster: RedisCluster, procs: list[Proc], ledger: Ledger  # noqa: F811
) -> None:
    env = cluster_env
    env.accounts(sim_accounts(latency=20, delay=0.5))
    await ledger.follow(env.settings.amqp_url, env.topology)
    batches, expected = make_batches(env.prefix, N)
    # The whole input waits in the queue first: the figure is the MTA's pace, not ours.
    await publish_all(env.settings.amqp_url, env.topology, batches)
    await spawn(env, procs, "run", **CLUSTER_SETTINGS, MTA_REDIS_URL=redis_cluster.url)
    started = time.monotonic()
    await ledger.wait(expected, timeout=TIMEOUT - 60)
    took = time.monotonic() - started - 2.0  # ledger.wait lingers 2 s for late duplicates
    figures(
        f"pipeline on a 3-master Redis Cluster: {N} messages queued, mta run took them to "
        f"their finals at {N / took:.0f} msg/s"
    )
    check(ledger, expected)
    assert await pending(redis_cluster.url, env.prefix) == 0
