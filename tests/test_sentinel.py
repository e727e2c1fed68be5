"""Redis Sentinel: MTA_REDIS_URL=redis+sentinel://… finds the master the sentinels name, and
after the master is killed -9 and a replica promoted, the pipeline carries on with it.

Private servers on loopback (tests/faults.py): a master, its replica, one sentinel (quorum 1).
The shared Redis is never touched."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from mta.store import Store
from tests.conftest import Env, batch
from tests.faults import PrivateRedis

SERVICE = "mtamaster"


class PrivateSentinel(PrivateRedis):
    """redis-server --sentinel watching one master (quorum 1, down after 1 s)."""

    def __init__(self, master_port: int) -> None:
        self.master_port = master_port
        super().__init__()

    def _argv(self) -> list[str]:
        config = Path(self.dir) / "sentinel.conf"
        if not config.exists():  # sentinel rewrites its own file: keep it across restarts
            config.write_text(
                f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.master_port} 1\n"
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 3000\n",
                encoding="utf-8",
            )
        return [self.binary, str(config), "--sentinel"]


def _replica_ready(port: int) -> bool:
    info = redis.Redis(port=port).info("replication")
    return bool(info.get("master_link_status") == "up")


@pytest.fixture
def sentinel_set() -> Iterator[tuple[PrivateRedis, PrivateRedis, PrivateSentinel]]:
    master = PrivateRedis()
    master.start_sync()
    replica = PrivateRedis(extra_args=("--replicaof", "127.0.0.1", str(master.port)))
    sentinel = PrivateSentinel(master.port)
    try:
        replica.start_sync()
        deadline = time.monotonic() + 20
        while not _replica_ready(replica.port):
            assert time.monotonic() < deadline, "replica never linked"
            time.sleep(0.1)
        sentinel.start_sync()
        yield master, replica, sentinel
    finally:
        for server in (sentinel, replica, master):
            server.close_sync()


def _master_port(sentinel: PrivateSentinel) -> int:
    host_port = redis.Redis(port=sentinel.port).execute_command(
        "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE
    )
    return int(host_port[1])


async def test_the_pipeline_survives_a_sentinel_failover(
    env: Env, sentinel_set: tuple[PrivateRedis, PrivateRedis, PrivateSentinel]
) -> None:
    master, replica, sentinel = sentinel_set
    url = f"redis+sentinel://127.0.0.1:{sentinel.port}/{SERVICE}/0"
    store = await Store.open(url, env.prefix)
    assert (await store.r.info("server"))["tcp_port"] == master.port
    await store.close()

    tail = await env.tail()
    # Each state change waits for the replica (Redis replicates asynchronously): the master
    # is killed while batches flow, and what it acknowledged is on the replica.
    await env.start(
        "worker", "reporter", redis_url=url, redis_wait_replicas=1,
        poll_first_s=0.2, poll_max_s=0.5,
    )
    first = [await env.publish(batch(10, start=10 * n)) for n in range(10)]
    await tail.wait_finals(30, timeout=30)
    await master.kill()
    later = [await env.publish(batch(10, start=100 + 10 * n)) for n in range(10)]
    deadline = time.monotonic() + 30
    while _master_port(sentinel) != replica.port:
        assert time.monotonic() < deadline, "the sentinel never promoted the replica"
        await asyncio.sleep(0.2)
    finals = await tail.wait_finals(200, timeout=60)
    copies = Counter(f["messageId"] for f in finals)
    expected = {f"{b}:{i}" for b in first + later for i in range(10)}
    assert set(copies) == expected, f"lost: {len(expected - set(copies))}"
    assert max(copies.values()) == 1, "a final came twice"
    assert all(f["apiStatus"] == "DELIVERED" for f in finals)


async def test_writes_wait_for_the_replica_and_go_on_without_it(
    env: Env,
    sentinel_set: tuple[PrivateRedis, PrivateRedis, PrivateSentinel],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """MTA_REDIS_WAIT_REPLICAS=1: a write returns once the replica has it; with the replica
    stopped (SIGSTOP) it waits ``wait_ms``, warns, then stops waiting for a while."""
    master, replica, _ = sentinel_set
    store = await Store.open(master.url, env.prefix, wait_replicas=1)
    store.wait_ms = 700
    mirror = redis.Redis(port=replica.port)
    await store.push_receipts("acct", {"p-1": b"x"})  # returns once replicated
    assert mirror.get(store.receipt_key("acct", "p-1")) == b"x"
    assert replica.proc is not None
    os.kill(replica.proc.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="mta.store"):
            await store.push_receipts("acct", {"p-2": b"y"})
        assert time.monotonic() - started >= 0.6
        assert "reached 0 replica(s)" in caplog.text
        started = time.monotonic()
        await store.push_receipts("acct", {"p-3": b"z"})  # no replica: no wait for a while
        assert time.monotonic() - started < 0.3
    finally:
        os.kill(replica.proc.pid, signal.SIGCONT)
        await store.close()
