"""A Redis Cluster master killed -9 mid-run under ``mta run``: its replica is promoted and every
message still gets exactly one final, counted per message from our own queue. Two cases: the
master MTA_REDIS_URL names, and another one.

mta run has MTA_REDIS_WAIT_REPLICAS=1 (tests/test_cluster_redis.py: CLUSTER_SETTINGS): what a
master acknowledged is on its replica. The victim is a master with a replica, and it is started
again (as a replica) at the end, so the next case finds the cluster whole. In ``make test``
with a small N; ``make cluster-test`` runs it with CLUSTER_N and prints the times.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest

from tests.conftest import Env, sim_accounts
from tests.test_cluster_redis import (  # noqa: F401 - cluster_env and ledger are fixtures
    CLUSTER_SETTINGS,
    TIMEOUT,
    N,
    cluster_env,
    figures,
    ledger,
    pending,
)
from tests.test_faults import Ledger, check, make_batches, publish_all
from tests.test_process import Proc, procs, spawn  # noqa: F401 - procs is a fixture

if TYPE_CHECKING:  # imported by pytest_plugins below, so that pytest rewrites their asserts
    from tests.clusters import RedisCluster

pytest_plugins = ["tests.faults", "tests.clusters"]  # fixtures, the `cluster` marker


@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize("which", ["the-url-node", "another-master"])
async def test_master_killed_mid_run(
    cluster_env: Env,  # noqa: F811
    redis_cluster: RedisCluster,
    procs: list[Proc],  # noqa: F811
    ledger: Ledger,  # noqa: F811
    which: str,
) -> None:
    """kill -9 a master mid-run (batches being recorded, finals being committed): the one
    MTA_REDIS_URL names, or another; its replica is promoted and every message still gets
    exactly one final."""
    env = cluster_env
    env.accounts(sim_accounts(latency=20, delay=0.5))
    await ledger.follow(env.settings.amqp_url, env.topology)
    batches, expected = make_batches(env.prefix, N)
    # Masters with a replica to promote (a test before may have left one without).
    masters = [
        m for m in await asyncio.to_thread(redis_cluster.masters)
        if await asyncio.to_thread(redis_cluster.replicas_of, m)
    ]
    assert len(masters) >= 2, "the cluster needs two masters with a replica"
    named, other = masters[0], masters[1]
    victim = named if which == "the-url-node" else other
    mta = await spawn(env, procs, "run", **CLUSTER_SETTINGS, MTA_REDIS_URL=named.url)
    started = time.monotonic()
    publishing = asyncio.create_task(
        publish_all(env.settings.amqp_url, env.topology, batches, pace_s=0.01)
    )
    deadline = time.monotonic() + 60
    while len(ledger.oks) < len(expected) // 4:  # mid-run: OKs and finals flowing
        assert time.monotonic() < deadline, "the run did not start"
        await asyncio.sleep(0.01)
    finals_at_kill = len(ledger.finals)
    killed = time.monotonic()
    await redis_cluster.kill(victim)  # returns once a replica serves its slots
    promoted = time.monotonic() - killed
    while len(ledger.finals) <= finals_at_kill + 100:
        assert time.monotonic() - killed < 90, (
            f"finals did not resume within 90 s of the kill; mta run:\n{mta.stderr[-4000:]}"
        )
        await asyncio.sleep(0.05)
    resumed = time.monotonic() - killed
    await publishing
    try:
        await ledger.wait(expected, timeout=TIMEOUT - 60)
    except AssertionError as exc:
        missing = sorted(expected - set(ledger.finals))
        batches_missing = sorted({m.rsplit(":", 1)[0] for m in missing})
        with_ok = sum(1 for m in missing if m in ledger.oks)
        # What the run said about those batches, and every error, from the whole log.
        said = [
            line for line in mta.stderr.splitlines()
            if " ERROR " in line or any(b in line for b in batches_missing)
        ]
        raise AssertionError(
            f"{exc}: batches {batches_missing}, {with_ok} of them with an OK; "
            f"{await pending((other if victim is named else named).url, env.prefix)} pending; "
            "mta run's lines about them and its errors:\n" + "\n".join(said[-40:])
            + f"\nmta run:\n{mta.stderr[-6000:]}"
        ) from None
    took = time.monotonic() - started - 2.0  # ledger.wait lingers 2 s for late duplicates
    figures(
        f"Redis master killed -9 mid-run: replica promoted {promoted:.1f} s after the kill, "
        f"finals flowing again after {resumed:.1f} s, the last final "
        f"{time.monotonic() - 2.0 - killed:.1f} s after it; {N} messages, {N / took:.0f} msg/s"
    )
    check(ledger, expected)
    alive = other if victim is named else named
    assert await pending(alive.url, env.prefix) == 0
    await redis_cluster.start(victim)  # back as a replica: the next test finds the cluster whole
