"""The fault-injection harness: private servers keep data across kill -9; clients reconnect."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import aio_pika
import pytest
import redis
import redis.asyncio as aioredis
from aio_pika.abc import AbstractChannel

from tests.conftest import AMQP_URL, REDIS_URL

if TYPE_CHECKING:  # imported by pytest_plugins below, so that pytest rewrites its asserts
    from tests.faults import PrivateRabbit, PrivateRedis

pytest_plugins = ["tests.faults"]  # fixtures; their tests get the `faults` marker


@pytest.fixture(scope="module")
def shared_redis_run_id() -> str:
    """The shared Redis's run_id before this module starts anything (it changes on a restart)."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        return str(client.info("server")["run_id"])
    finally:
        client.close()


async def test_private_redis_keeps_data_across_kill(
    private_redis: PrivateRedis, shared_redis_run_id: str
) -> None:
    assert private_redis.url != REDIS_URL
    client = aioredis.from_url(private_redis.url)
    try:
        await client.set("faults:key", "survives")
        await private_redis.kill()
        with pytest.raises(redis.ConnectionError):
            await client.ping()
        await private_redis.start()
        assert await client.get("faults:key") == b"survives"  # the pool reconnects on its own
    finally:
        await client.aclose()


async def _queue_depth(url: str, queue: str, want: int, timeout: float = 15.0) -> int:
    """Messages ready in `queue`, polled until it is `want` (a restarted quorum queue elects
    its leader a moment after the node answers) or timeout."""
    deadline = time.monotonic() + timeout
    async with await aio_pika.connect(url) as conn:
        while True:
            channel = await conn.channel()
            try:
                declared = await channel.declare_queue(queue, passive=True)
                depth = declared.declaration_result.message_count
            finally:
                await channel.close()
            if depth == want or time.monotonic() > deadline:
                return depth
            await asyncio.sleep(0.2)


async def _publish(channel: AbstractChannel, queue: str, body: bytes) -> None:
    await channel.default_exchange.publish(
        aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
        routing_key=queue,
        timeout=5,
    )


async def test_private_rabbit_keeps_quorum_queue_across_kill_and_clients_reconnect(
    private_rabbit: PrivateRabbit, shared_redis_run_id: str
) -> None:
    assert private_rabbit.url != AMQP_URL
    queue = "faults.harness"
    conn = await aio_pika.connect_robust(private_rabbit.url)
    try:
        channel = await conn.channel(publisher_confirms=True)
        await channel.declare_queue(queue, durable=True, arguments={"x-queue-type": "quorum"})
        for i in range(10):
            await _publish(channel, queue, b"before-%d" % i)  # returns once confirmed

        await private_rabbit.kill()
        await private_rabbit.start()
        assert await _queue_depth(private_rabbit.url, queue, 10) == 10

        # The robust connection (and its channel) from before the kill publishes again.
        deadline = time.monotonic() + 30
        while True:
            try:
                await _publish(channel, queue, b"after")
                break
            except (aio_pika.exceptions.AMQPError, ConnectionError, TimeoutError, RuntimeError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
        assert await _queue_depth(private_rabbit.url, queue, 11) == 11

        bodies = []
        consumer = await conn.channel()
        q = await consumer.get_queue(queue, ensure=False)
        while (message := await q.get(fail=False, no_ack=True)) is not None:
            bodies.append(message.body)
        assert bodies == [b"before-%d" % i for i in range(10)] + [b"after"]
    finally:
        await conn.close()


async def test_shared_services_untouched(shared_redis_run_id: str) -> None:
    client = aioredis.from_url(REDIS_URL)
    try:
        assert await client.ping()
        assert (await client.info("server"))["run_id"] == shared_redis_run_id
    finally:
        await client.aclose()
    async with await aio_pika.connect(AMQP_URL) as conn:
        channel = await conn.channel()
        await channel.close()
