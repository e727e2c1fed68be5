"""Every RabbitMQ exchange, queue, routing key and header name, and their idempotent declaration.

```
<p>.send      direct   bulk     → <p>.send.bulk       (quorum, delivery limit, DLX <p>.dead)
                       priority → <p>.send.priority   (quorum, delivery limit, DLX <p>.dead)
<p>.retry.<lane>.<tier>  quorum, x-message-ttl = tier, dead-letters back to <p>.send/<lane>
<p>.dead      fanout            → <p>.dead            (quorum; header x-mta-dead-reason)
<p>.reports   topic    <accountId>.<apiStatus>        (upstreams bind their own queues)
```
Nothing else in the code base spells these names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange

LANE_BULK = "bulk"
LANE_PRIORITY = "priority"
LANES = (LANE_BULK, LANE_PRIORITY)

#: Delays of the delayed-retry tiers, in seconds; attempt n waits RETRY_TIERS_S[min(n, last)].
RETRY_TIERS_S = (5, 30, 300)
#: Deliveries of one batch before the broker dead-letters it (crash loops, poison bodies).
DELIVERY_LIMIT = 10

HEADER_DEAD_REASON = "x-mta-dead-reason"
HEADER_ATTEMPT = "x-mta-attempt"
HEADER_IDS = "x-mta-message-ids"
HEADER_RELEASED = "x-mta-released"


@dataclass(frozen=True)
class Topology:
    """The names under one prefix, and their declaration on a channel."""

    prefix: str = "mta"

    @property
    def send_exchange(self) -> str:
        return f"{self.prefix}.send"

    def send_queue(self, lane: str) -> str:
        return f"{self.prefix}.send.{lane}"

    def retry_queue(self, lane: str, delay_s: int) -> str:
        return f"{self.prefix}.retry.{lane}.{delay_s}s"

    @property
    def dead_exchange(self) -> str:
        return f"{self.prefix}.dead"

    @property
    def dead_queue(self) -> str:
        return f"{self.prefix}.dead"

    @property
    def reports_exchange(self) -> str:
        return f"{self.prefix}.reports"

    @staticmethod
    def report_key(account_id: int, api_status: str) -> str:
        return f"{account_id}.{api_status}"

    def queue_names(self) -> list[str]:
        names = [self.send_queue(lane) for lane in LANES]
        names += [self.retry_queue(lane, d) for lane in LANES for d in RETRY_TIERS_S]
        return [*names, self.dead_queue]

    def exchange_names(self) -> list[str]:
        return [self.send_exchange, self.dead_exchange, self.reports_exchange]

    def _send_queue_args(self) -> dict[str, Any]:
        return {
            "x-queue-type": "quorum",
            "x-delivery-limit": DELIVERY_LIMIT,
            "x-dead-letter-exchange": self.dead_exchange,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }

    async def declare(self, channel: AbstractChannel) -> dict[str, AbstractExchange]:
        """Declare everything (idempotent); returns the exchanges by name."""
        durable = aio_pika.ExchangeType
        send = await channel.declare_exchange(self.send_exchange, durable.DIRECT, durable=True)
        dead = await channel.declare_exchange(self.dead_exchange, durable.FANOUT, durable=True)
        reports = await channel.declare_exchange(self.reports_exchange, durable.TOPIC, durable=True)
        dead_q = await channel.declare_queue(
            self.dead_queue, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await dead_q.bind(dead, routing_key="")
        for lane in LANES:
            queue = await channel.declare_queue(
                self.send_queue(lane), durable=True, arguments=self._send_queue_args()
            )
            await queue.bind(send, routing_key=lane)
            for delay_s in RETRY_TIERS_S:
                await channel.declare_queue(
                    self.retry_queue(lane, delay_s),
                    durable=True,
                    arguments={
                        "x-queue-type": "quorum",
                        "x-message-ttl": delay_s * 1000,
                        "x-dead-letter-exchange": self.send_exchange,
                        "x-dead-letter-routing-key": lane,
                        "x-dead-letter-strategy": "at-least-once",
                        "x-overflow": "reject-publish",
                    },
                )
        return {e.name: e for e in (send, dead, reports)}

    async def delete(self, channel: AbstractChannel) -> None:
        """Remove everything under this prefix (tests and ``mta bench`` clean up with it)."""
        for name in self.queue_names():
            await channel.queue_delete(name)
        for name in self.exchange_names():
            await channel.exchange_delete(name)
