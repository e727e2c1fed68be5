"""The RabbitMQ connection, declared topology and publishing with confirms (retried on outages)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_delay,
    wait_exponential_jitter,
)

from mta.outage import is_outage
from mta.topology import Topology

log = logging.getLogger(__name__)

class Broker:
    """One robust connection, a confirming publish channel, and the declared exchanges."""

    def __init__(self, url: str, topology: Topology) -> None:
        self.url = url
        self.topology = topology
        self.connection: AbstractRobustConnection | None = None
        self.channel: AbstractChannel | None = None
        self.exchanges: dict[str, AbstractExchange] = {}
        self.publish_timeout_s = 30.0
        self.retry_for_s = 120.0

    async def connect(self, name: str = "mta") -> None:
        self.connection = await aio_pika.connect_robust(
            self.url, client_properties={"connection_name": name}
        )
        self.channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
        self.exchanges = await self.topology.declare(self.channel)
        self.exchanges[""] = self.channel.default_exchange

    async def consumer_channel(self, prefetch: int) -> AbstractChannel:
        assert self.connection is not None, "connect() first"
        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        return channel

    async def close(self) -> None:
        if self.connection is not None:
            await self.connection.close()
            self.connection = None

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        headers: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        mandatory: bool = True,
    ) -> None:
        """Publish persistently and wait for the broker's confirm; retry through outages (for at
        most ``retry_for_s``; what is an outage is :func:`mta.outage.is_outage`'s call)."""
        message = aio_pika.Message(
            body,
            headers=dict(headers) if headers else None,
            message_id=message_id,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        target = self.exchanges[exchange]
        try:  # the common case, without the retry machinery's cost
            await target.publish(
                message, routing_key, mandatory=mandatory, timeout=self.publish_timeout_s
            )
            return
        except Exception as exc:
            if not is_outage(exc):
                raise
            log.warning("publish to %r failed (%s); retrying", exchange, exc)
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(is_outage),
            wait=wait_exponential_jitter(multiplier=0.1, max=5),
            stop=stop_after_delay(self.retry_for_s),
            reraise=True,
        ):
            with attempt:
                await target.publish(
                    message, routing_key, mandatory=mandatory, timeout=self.publish_timeout_s
                )
        log.info("publish to %r succeeded after a retry", exchange)
