"""Faults for real: RabbitMQ and Redis killed -9 and restarted under a running ``mta``, and
``mta`` processes killed -9 at random moments; finals counted per message from our own queue.

The RabbitMQ and Redis that are killed are private ones (tests/faults.py), never the shared
services. ``FAULTS_N`` (messages, default 2000) makes the runs bigger: ``make chaos``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aio_pika
import orjson
import pytest

from mta.store import Store
from mta.topology import Topology
from tests.conftest import Env, batch, sim_accounts
from tests.test_process import Proc, procs, spawn  # noqa: F401 - procs is a fixture

if TYPE_CHECKING:
    from tests.faults import PrivateRabbit, PrivateRedis

pytest_plugins = ["tests.faults"]

N = int(os.environ.get("FAULTS_N", "2000"))
SIZE = 50  # messages per batch


@dataclass
class Ledger:
    """Every report message on the report exchange, read from a durable queue of our own.

    A delivery the broker repeats (``redelivered``, because our ack died with a node) is
    counted once; a second copy that the MTA published is counted as a duplicate.
    """

    seen: set[str] = field(default_factory=set)
    oks: Counter[str] = field(default_factory=Counter)
    finals: Counter[str] = field(default_factory=Counter)
    bodies: dict[str, list[bytes]] = field(default_factory=dict)
    connection: aio_pika.abc.AbstractRobustConnection | None = None
    queue: aio_pika.abc.AbstractQueue | None = None

    async def follow(self, url: str, topology: Topology) -> None:
        self.connection = await aio_pika.connect_robust(url)
        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=200)
        await topology.declare(channel)
        exchange = await channel.get_exchange(topology.reports_exchange)
        queue = await channel.declare_queue(
            f"{topology.prefix}.ledger", durable=True, arguments={"x-queue-type": "quorum"}
        )
        await queue.bind(exchange, routing_key="#")
        await queue.consume(self.on_message)
        self.queue = queue

    async def on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        key = message.message_id or ""
        if not (message.redelivered and key in self.seen):
            self.seen.add(key)
            for result in orjson.loads(message.body)["results"]:
                mid = result["messageId"]
                (self.oks if result["apiStatus"] == "OK" else self.finals)[mid] += 1
                self.bodies.setdefault(mid, []).append(orjson.dumps(result))
        with contextlib.suppress(Exception):
            await message.ack()

    async def wait(self, expected: set[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not expected <= set(self.finals):
            if time.monotonic() > deadline:
                missing = expected - set(self.finals)
                raise AssertionError(f"{len(missing)} of {len(expected)} finals never came")
            await asyncio.sleep(0.2)
        await asyncio.sleep(2.0)  # anything twice would show up now

    def doubles(self, counts: Counter[str]) -> dict[str, int]:
        return {m: n for m, n in counts.items() if n > 1}

    async def close(self) -> None:
        """Delete our queue (the test's own, never left behind) and disconnect."""
        if self.queue is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.queue.delete(if_unused=False, if_empty=False), 10)
        if self.connection is not None:
            await self.connection.close()


async def publish_all(
    url: str, topology: Topology, batches: list[tuple[str, bytes]], pace_s: float = 0.0
) -> None:
    """Publish as an upstream that keeps its word: confirms, and a retry with the same
    message_id when the broker did not confirm (the MTA recognises the redelivery)."""
    connection = await aio_pika.connect_robust(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(topology.send_exchange)
        for mid, body in batches:
            for _ in range(120):
                try:
                    await exchange.publish(
                        aio_pika.Message(
                            body, message_id=mid, delivery_mode=aio_pika.DeliveryMode.PERSISTENT
                        ),
                        routing_key="bulk",
                        timeout=5,
                    )
                    break
                except Exception:
                    await asyncio.sleep(0.5)
            else:
                raise AssertionError(f"batch {mid} could not be published")
            if pace_s:
                await asyncio.sleep(pace_s)
    finally:
        await connection.close()


def make_batches(prefix: str, n: int) -> tuple[list[tuple[str, bytes]], set[str]]:
    batches = [
        (f"{prefix}-b{b}", orjson.dumps(batch(SIZE, start=b * SIZE))) for b in range(n // SIZE)
    ]
    return batches, {f"{mid}:{i}" for mid, _ in batches for i in range(SIZE)}


async def consumers(rabbit: PrivateRabbit, queue: str) -> int:
    out = await rabbit.ctl("list_queues", "-q", "--no-table-headers", "name", "consumers")
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == queue:
            return int(parts[1])
    return 0


@pytest.fixture
async def ledger() -> Any:
    followed = Ledger()
    yield followed
    await followed.close()


def check(ledger: Ledger, expected: set[str]) -> None:
    print(  # the figures `make chaos` shows (pytest -s)
        f"\n{len(expected)} messages: {len(set(ledger.finals) & expected)} with a final, "
        f"{sum(ledger.finals.values())} finals, {sum(ledger.oks.values())} OKs, "
        f"{len(ledger.doubles(ledger.finals))} duplicate finals, "
        f"{len(ledger.doubles(ledger.oks))} duplicate OKs"
    )
    assert set(ledger.finals) == expected
    for what, counts in (("finals", ledger.finals), ("OKs", ledger.oks)):
        doubles = ledger.doubles(counts)
        sample = dict(list(doubles.items())[:5])
        assert not doubles, f"{len(doubles)} messages with duplicate {what}, e.g. {sample}"


async def test_rabbitmq_killed_and_restarted_mid_run(
    env: Env, procs: list[Proc], private_rabbit: PrivateRabbit, ledger: Ledger  # noqa: F811
) -> None:
    env.accounts(sim_accounts(latency=20, delay=0.5))
    topology = env.topology
    await ledger.follow(private_rabbit.url, topology)
    batches, expected = make_batches(env.prefix, N)
    half = len(batches) // 2
    await spawn(env, procs, "run", MTA_AMQP_URL=private_rabbit.url)
    await publish_all(private_rabbit.url, topology, batches[:half])
    await asyncio.sleep(1.0)  # mid-run: batches in flight, reports being published
    await private_rabbit.kill()
    await asyncio.sleep(3.0)
    await private_rabbit.start()
    back = time.monotonic()
    while await consumers(private_rabbit, topology.send_queue("bulk")) < 1:
        assert time.monotonic() - back < 10, "the worker did not consume within 10 s"
        await asyncio.sleep(0.5)
    await publish_all(private_rabbit.url, topology, batches[half:])
    await ledger.wait(expected, timeout=120)
    check(ledger, expected)


async def test_redis_killed_and_restarted_mid_run(
    env: Env, procs: list[Proc], private_redis: PrivateRedis, ledger: Ledger  # noqa: F811
) -> None:
    env.accounts(sim_accounts(latency=20, delay=0.5))
    await ledger.follow(env.settings.amqp_url, env.topology)
    batches, expected = make_batches(env.prefix, N)
    await spawn(env, procs, "run", MTA_REDIS_URL=private_redis.url)
    publishing = asyncio.create_task(
        publish_all(env.settings.amqp_url, env.topology, batches)
    )
    # Mid-run: batches being recorded, reports being published, finals being committed.
    deadline = time.monotonic() + 30
    while len(ledger.oks) < len(expected) // 5:
        assert time.monotonic() < deadline, "the run did not start"
        await asyncio.sleep(0.01)
    await private_redis.kill()
    await asyncio.sleep(3.0)
    await private_redis.start()
    await publishing
    await ledger.wait(expected, timeout=120)
    check(ledger, expected)
    store = Store.connect(private_redis.url, env.prefix)
    assert (await store.counts())["pending"] == 0
    await store.close()


@pytest.mark.parametrize("policy", ["resubmit", "fail"])
async def test_workers_and_reporters_killed_at_random_moments(
    env: Env, procs: list[Proc], policy: str, ledger: Ledger  # noqa: F811
) -> None:
    env.accounts(sim_accounts(latency=100, delay=0.3))
    await ledger.follow(env.settings.amqp_url, env.topology)
    batches, expected = make_batches(env.prefix, N // 2)
    extra: dict[str, Any] = {"MTA_INFLIGHT_POLICY": policy, "MTA_LEASE_S": "2"}
    worker = await spawn(env, procs, "worker", **extra)
    reporter = await spawn(env, procs, "reporter", **extra)
    publishing = asyncio.create_task(publish_all(env.settings.amqp_url, env.topology, batches))
    rng = random.Random(policy)
    for _ in range(3):
        await asyncio.sleep(rng.uniform(0.3, 1.5))
        victim = rng.choice(["worker", "reporter"])
        proc = worker if victim == "worker" else reporter
        proc.proc.send_signal(signal.SIGKILL)
        await proc.wait_exit(10)
        if victim == "worker":
            worker = await spawn(env, procs, "worker", **extra)
        else:
            reporter = await spawn(env, procs, "reporter", **extra)
    await publishing
    await ledger.wait(expected, timeout=120)
    assert set(ledger.finals) == expected, "every message has a final"
    # The one window the README names: a process killed after its reports were stored in the
    # outbox and confirmed by the broker, before it deleted them; the outbox recovery then
    # publishes the same report message again (same AMQP message_id, byte-identical results).
    for counts in (ledger.finals, ledger.oks):
        for mid in ledger.doubles(counts):
            copies = ledger.bodies[mid]
            assert all(c in copies[:2] for c in copies), f"{mid}: different results {copies}"
    statuses = Counter(orjson.loads(b[0])["partnerStatus"] for b in ledger.bodies.values())
    if policy == "resubmit":
        assert "UNKNOWN" not in statuses


async def test_reporters_killed_while_receipts_are_pushed(
    env: Env, procs: list[Proc], ledger: Ledger  # noqa: F811
) -> None:
    """Pushed receipts make their message due through the partner index; reporters killed -9
    mid-round leave their leases to expire, and a receipt that lands on a leased message is
    kept for the next round. Every message still gets its one final (the partner — the
    simulator in the worker — pushes each receipt once, so a lost one would never come)."""
    env.accounts(sim_accounts(latency=20, delay=0.3) + "push_receipts = true\n")
    await ledger.follow(env.settings.amqp_url, env.topology)
    batches, expected = make_batches(env.prefix, N // 2)
    extra: dict[str, Any] = {"MTA_LEASE_S": "2", "MTA_POLL_FIRST_S": "30", "MTA_POLL_MAX_S": "60"}
    await spawn(env, procs, "worker", **extra)
    reporters = [await spawn(env, procs, "reporter", **extra) for _ in range(2)]
    publishing = asyncio.create_task(publish_all(env.settings.amqp_url, env.topology, batches))
    rng = random.Random("push")
    for _ in range(3):
        await asyncio.sleep(rng.uniform(0.3, 1.5))
        n = rng.randrange(len(reporters))
        reporters[n].proc.send_signal(signal.SIGKILL)
        await reporters[n].wait_exit(10)
        reporters[n] = await spawn(env, procs, "reporter", **extra)
    await publishing
    # With the first poll 30 s away, finals this soon came from the pushes.
    await ledger.wait(expected, timeout=25)
    check_finals_once_or_copies(ledger, expected)


def check_finals_once_or_copies(ledger: Ledger, expected: set[str]) -> None:
    """Every message has a final; a second one is only the outbox's byte-identical copy."""
    assert set(ledger.finals) == expected, "every message has a final"
    for mid in ledger.doubles(ledger.finals):
        copies = ledger.bodies[mid]
        finals = [c for c in copies if orjson.loads(c)["apiStatus"] != "OK"]
        assert len(set(finals)) == 1, f"{mid}: different finals {finals}"
