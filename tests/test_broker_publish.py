"""Broker.publish_once (aiormq's basic_publish on the confirming channel) keeps what aio-pika's
Exchange.publish gave: persistent messages with their properties, a returned message raised
as PublishError, a nacked one as DeliveryError (real RabbitMQ)."""

from __future__ import annotations

import aio_pika
import aiormq
import pytest

from mta.broker import Broker
from tests.conftest import AMQP_URL, Env


async def _broker(env: Env) -> Broker:
    broker = Broker(AMQP_URL, env.topology)
    await broker.connect(name="test-broker-publish")
    return broker


async def test_a_published_message_carries_its_properties(env: Env) -> None:
    broker = await _broker(env)
    assert env.channel is not None
    queue = await env.channel.declare_queue("", exclusive=True)
    await queue.bind(env.topology.reports_exchange, "7.OK")
    try:
        await broker.publish(
            env.topology.reports_exchange, "7.OK", b'{"results":[]}',
            headers={"x-test": "one"}, message_id="m-1",
        )
        message = await queue.get(timeout=5)
        assert message.body == b'{"results":[]}'
        assert message.message_id == "m-1"
        assert message.headers == {"x-test": "one"}
        assert message.content_type == "application/json"
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        await message.ack()
    finally:
        await broker.close()


async def test_an_unroutable_message_is_returned_as_publish_error(env: Env) -> None:
    broker = await _broker(env)
    try:
        with pytest.raises(aiormq.exceptions.PublishError):
            await broker.publish_once(env.topology.reports_exchange, "nobody.listens", b"{}")
        # Without mandatory the broker drops it silently.
        await broker.publish_once(
            env.topology.reports_exchange, "nobody.listens", b"{}", mandatory=False
        )
    finally:
        await broker.close()


async def test_a_nacked_message_raises_delivery_error(env: Env) -> None:
    broker = await _broker(env)
    assert env.channel is not None
    queue = await env.channel.declare_queue(
        "", exclusive=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"}
    )
    await queue.bind(env.topology.reports_exchange, "9.FAIL")
    try:
        await broker.publish_once(env.topology.reports_exchange, "9.FAIL", b"{}")
        with pytest.raises(aiormq.exceptions.DeliveryError):
            await broker.publish_once(env.topology.reports_exchange, "9.FAIL", b"{}")
    finally:
        await broker.close()
