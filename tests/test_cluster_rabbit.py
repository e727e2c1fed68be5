"""A 3-node RabbitMQ cluster (tests/clusters.py) under ``mta``: MTA_AMQP_URL lists the nodes.

The Broker connects to the first listed node that answers and, when that node is killed -9,
reconnects to another one, where its topology and consumers come back (the quorum queues live
on the other two). Runs of the whole pipeline count finals per message from our own queue:
every message has exactly one. ``CLUSTER_N`` (messages, default 2000) makes the runs bigger:
``make cluster-test`` (which prints the figures).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import aio_pika
import pytest

from mta.broker import Broker, amqp_urls, connect, connect_robust
from mta.topology import Topology
from tests.conftest import Env, sim_accounts
from tests.test_faults import Ledger, check, make_batches, publish_all
from tests.test_process import Proc, procs, spawn  # noqa: F401 - procs is a fixture

if TYPE_CHECKING:  # imported by pytest_plugins below, so that pytest rewrites their asserts
    from tests.clusters import RabbitCluster

pytest_plugins = ["tests.faults", "tests.clusters"]  # fixtures, the `cluster` marker

N = int(os.environ.get("CLUSTER_N", "2000"))
TIMEOUT = max(240, N // 20)  # seconds per test: a shared 2-core machine, and the cluster forms


def figures(line: str) -> None:
    print(f"\n[cluster-test] {line}")  # shown by `make cluster-test` (pytest -s)


def test_amqp_urls_splits_a_list_of_full_urls() -> None:
    assert amqp_urls("amqp://u:p@h1:5672/") == ["amqp://u:p@h1:5672/"]
    assert amqp_urls(" amqp://u:p@h1:5672/ , amqps://u:p,q@h2:5671/v ") == [
        "amqp://u:p@h1:5672/",
        "amqps://u:p,q@h2:5671/v",  # a comma inside a password stays in it
    ]
    assert amqp_urls("amqp://h1/,") == ["amqp://h1/"]
    with pytest.raises(ValueError):
        amqp_urls(" , ")


@pytest.fixture
async def cluster_env(env: Env, rabbit_cluster: RabbitCluster) -> AsyncIterator[Env]:
    """``env`` on the cluster: its MTA_AMQP_URL lists the three nodes; the topology it made
    there is deleted afterwards (Redis is the shared one, cleaned by ``env``)."""
    env.configure(amqp_url=rabbit_cluster.url)
    yield env
    # Whatever a test killed is back before the next one (the module shares the cluster).
    for index, node in enumerate(rabbit_cluster.nodes):
        if not node.running:
            await rabbit_cluster.start(index)
    connection = await connect(rabbit_cluster.url)
    try:
        await Topology(env.prefix).delete(await connection.channel())
    finally:
        await connection.close()


async def test_broker_connects_to_the_first_node_that_answers(
    cluster_env: Env, rabbit_cluster: RabbitCluster, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.faults import free_port

    nobody = f"amqp://guest:s3cretpw@127.0.0.1:{free_port()}/"  # nothing listens there
    broker = Broker(f"{nobody},{rabbit_cluster.url_from(1)}", cluster_env.topology)
    name = f"test-first-{uuid.uuid4().hex[:6]}"
    caplog.set_level(logging.INFO, logger="mta.broker")
    await broker.connect(name=name)
    try:
        assert await asyncio.to_thread(rabbit_cluster.node_of_connection, name) == 1
        await broker.publish(
            cluster_env.topology.reports_exchange, "0.OK", b'{"results": []}', mandatory=False
        )
    finally:
        await broker.close()
    assert "s3cretpw" not in caplog.text
    # None answers: one error naming each node by host:port, never a password.
    with pytest.raises(aio_pika.exceptions.AMQPConnectionError) as caught:
        await connect_robust(f"{nobody},{nobody.replace('s3cretpw', 'otherpw')}")
    assert "no RabbitMQ node answered" in str(caught.value)
    assert "s3cretpw" not in str(caught.value) and "otherpw" not in str(caught.value)


async def test_broker_moves_to_another_node_when_its_node_is_killed(
    cluster_env: Env, rabbit_cluster: RabbitCluster
) -> None:
    """Kill -9 the node the Broker uses: it reconnects to another listed node (past one that
    does not answer), its consumer consumes again there, and a publish (confirmed) goes
    through."""
    from tests.faults import free_port

    topology = cluster_env.topology
    nobody = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    urls = rabbit_cluster.urls
    broker = Broker(f"{urls[2]},{nobody},{urls[1]}", topology)
    name = f"test-move-{uuid.uuid4().hex[:6]}"
    await broker.connect(name=name)
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        await got.put(message.body)
        await message.ack()

    try:
        channel = await broker.consumer_channel(prefetch=10)
        queue = await channel.get_queue(topology.send_queue("bulk"))
        await queue.consume(on_message)
        await broker.publish(topology.send_exchange, "bulk", b"before")
        assert await asyncio.wait_for(got.get(), 20) == b"before"
        assert await asyncio.to_thread(rabbit_cluster.node_of_connection, name) == 2
        assert broker.open
        killed = time.monotonic()
        await rabbit_cluster.kill(2)
        while broker.open:  # not ready while it reconnects (past `nobody`: 5 s at least)
            assert time.monotonic() - killed < 10, "the Broker did not see its node die"
            await asyncio.sleep(0.05)
        # Retried through the outage until a live node confirms it.
        await broker.publish(topology.send_exchange, "bulk", b"after")
        assert await asyncio.wait_for(got.get(), 60) == b"after"
        took = time.monotonic() - killed
        figures(f"Broker: its node killed -9, a publish consumed via another {took:.1f} s later")
        assert await asyncio.to_thread(rabbit_cluster.node_of_connection, name) == 1
        assert broker.open
    finally:
        await broker.close()
    assert not broker.open


async def _mta_node(cluster: RabbitCluster, timeout: float = 30.0) -> int:
    """The node serving the ``mta run`` process's connection."""
    deadline = time.monotonic() + timeout
    while True:
        node = await asyncio.to_thread(cluster.node_of_connection, "mta worker+reporter")
        if node is not None:
            return node
        assert time.monotonic() < deadline, "no connection of mta run on any node"
        await asyncio.sleep(0.5)


@pytest.fixture
async def ledger() -> AsyncIterator[Ledger]:
    followed = Ledger()
    yield followed
    await followed.close()


@pytest.mark.timeout(TIMEOUT)
async def test_pipeline_on_the_cluster(
    cluster_env: Env, rabbit_cluster: RabbitCluster, procs: list[Proc], ledger: Ledger  # noqa: F811
) -> None:
    env = cluster_env
    env.accounts(sim_accounts(latency=20, delay=0.5))
    # Our consumer and publisher use node 1; the MTA lists node 0 first.
    await ledger.follow(rabbit_cluster.urls[1], env.topology)
    batches, expected = make_batches(env.prefix, N)
    # The whole input waits in the queue first: the figure is the MTA's pace, not ours.
    await publish_all(rabbit_cluster.urls[1], env.topology, batches)
    await spawn(env, procs, "run", MTA_AMQP_URL=rabbit_cluster.url)
    started = time.monotonic()
    assert await _mta_node(rabbit_cluster) == 0
    await ledger.wait(expected, timeout=TIMEOUT - 60)
    took = time.monotonic() - started - 2.0  # ledger.wait lingers 2 s for late duplicates
    figures(
        f"pipeline on 3 RabbitMQ nodes: {N} messages queued, mta run took them to their finals "
        f"at {N / took:.0f} msg/s"
    )
    check(ledger, expected)
    # Every queue the MTA declared is replicated on the three nodes (deploy/rabbitmq: the
    # broker's quorum_cluster_size, no queue argument needed).
    members = await asyncio.to_thread(rabbit_cluster.queue_members)
    ours = {name: n for name, n in members.items() if name.startswith(f"{env.prefix}.")}
    assert {name for name, _ in env.topology.queues()} <= set(ours)
    assert set(ours.values()) == {3}, ours


@pytest.mark.timeout(TIMEOUT)
async def test_node_killed_mid_run(
    cluster_env: Env, rabbit_cluster: RabbitCluster, procs: list[Proc], ledger: Ledger  # noqa: F811
) -> None:
    """Kill -9 the node ``mta run`` is connected to, mid-run: it goes on through another node;
    every message gets one final."""
    env = cluster_env
    env.accounts(sim_accounts(latency=20, delay=0.5))
    await ledger.follow(rabbit_cluster.urls[1], env.topology)
    batches, expected = make_batches(env.prefix, N)
    await spawn(env, procs, "run", MTA_AMQP_URL=rabbit_cluster.url)
    victim = await _mta_node(rabbit_cluster)
    assert victim == 0
    started = time.monotonic()
    publishing = asyncio.create_task(
        publish_all(rabbit_cluster.urls[1], env.topology, batches, pace_s=0.01)
    )
    deadline = time.monotonic() + 60
    while len(ledger.oks) < len(expected) // 4:  # mid-run: OKs and finals flowing
        assert time.monotonic() < deadline, "the run did not start"
        assert not publishing.done() or publishing.exception() is None
        await asyncio.sleep(0.01)
    killed = time.monotonic()
    await rabbit_cluster.kill(victim)
    moved_to = await _mta_node(rabbit_cluster, timeout=90)
    recovered = time.monotonic() - killed  # to within a rabbitmqctl call (~1 s)
    assert moved_to != victim
    await publishing
    await ledger.wait(expected, timeout=TIMEOUT - 60)
    took = time.monotonic() - started - 2.0
    figures(
        f"node {victim} killed -9 mid-run: mta run connected to node {moved_to} "
        f"{recovered:.1f} s after the kill; {N} messages, {N / took:.0f} msg/s to the last final"
    )
    check(ledger, expected)
    # OKs too: one whose report message the kill caught unconfirmed waits in the Redis outbox
    # until its recovery publishes it (after 30 s).
    finals_done = time.monotonic()
    for _ in range(120):
        if set(ledger.oks) == expected:
            break
        await asyncio.sleep(0.5)
    late = time.monotonic() - finals_done
    figures(f"OKs: {len(set(ledger.oks))} of {N} messages, {late:.1f} s after their last final")
    assert set(ledger.oks) == expected
    assert not ledger.doubles(ledger.oks)
    # A batch whose ack died with the node comes back and is skipped, not dead-lettered.
    connection = await aio_pika.connect(rabbit_cluster.urls[1])
    try:
        channel = await connection.channel()
        dead = await channel.declare_queue(env.topology.dead_queue, passive=True)
        assert dead.declaration_result.message_count == 0, "batches in <prefix>.dead"
    finally:
        await connection.close()
    with contextlib.suppress(Exception):
        await rabbit_cluster.start(victim)
