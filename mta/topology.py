"""Every RabbitMQ exchange, queue, routing key and header name, and their idempotent declaration.

```
<p>.send      direct   bulk     → <p>.send.bulk       (quorum, delivery limit, DLX <p>.dead)
                       priority → <p>.send.priority   (quorum, delivery limit, DLX <p>.dead)
<p>.retry.<lane>.<tier>  quorum, x-message-ttl = tier, dead-letters back to <p>.send/<lane>
<p>.dead      fanout            → <p>.dead            (quorum; header x-mta-dead-reason)
<p>.reports   topic    <accountId>.<apiStatus>        (upstreams bind their own queues)
                       <accountId>.<final> → <p>.smpp.receipts (quorum; bound by mta smpp-server)
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
#: Messages parked while their account is down wait in the last tier: at most 30 s after the
#: account is back. (Before 2026-11 a third tier waited 300 s: a ``<p>.retry.<lane>.300s``
#: queue left by an older version still returns its messages, and may be deleted once empty.)
RETRY_TIERS_S = (5, 30)
#: Deliveries of one batch before the broker dead-letters it (crash loops, poison bodies).
DELIVERY_LIMIT = 10

HEADER_DEAD_REASON = "x-mta-dead-reason"
HEADER_ATTEMPT = "x-mta-attempt"
HEADER_IDS = "x-mta-message-ids"
HEADER_RELEASED = "x-mta-released"
#: Signs the three headers above and the body of an internal republish (keyed BLAKE2b, key in
#: Redis): what an upstream sets in ``x-mta-*`` cannot change which messages are sent, under
#: which ids, or when.
HEADER_SIGNATURE = "x-mta-signature"
#: When the MTA first handled the messages of an internal republish (epoch ms): a message
#: parked while its account is unavailable waits at most MTA_MAX_WAIT_S from then.
HEADER_SINCE = "x-mta-since"
HEADER_ORIGINAL_KEY = "x-mta-original-routing-key"
INTERNAL_HEADERS = (
    HEADER_IDS, HEADER_ATTEMPT, HEADER_RELEASED, HEADER_SINCE, HEADER_SIGNATURE
)


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
    def smpp_receipts_queue(self) -> str:
        """Finals of SMPP clients' messages, consumed by every ``mta smpp-server`` process (it
        binds ``<accountId>.<final status>`` for its clients' account ids)."""
        return f"{self.prefix}.smpp.receipts"

    @property
    def reports_exchange(self) -> str:
        return f"{self.prefix}.reports"

    @staticmethod
    def report_key(account_id: int, api_status: str) -> str:
        return f"{account_id}.{api_status}"

    def exchanges(self) -> list[tuple[str, str]]:
        """(name, type) of every exchange."""
        return [
            (self.send_exchange, "direct"),
            (self.dead_exchange, "fanout"),
            (self.reports_exchange, "topic"),
        ]

    def queues(self) -> list[tuple[str, dict[str, Any]]]:
        """(name, arguments) of every queue; all are durable quorum queues."""
        send_args = {
            "x-queue-type": "quorum",
            "x-delivery-limit": DELIVERY_LIMIT,
            "x-dead-letter-exchange": self.dead_exchange,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }
        out: list[tuple[str, dict[str, Any]]] = [
            (self.dead_queue, {"x-queue-type": "quorum"}),
            (self.smpp_receipts_queue, {"x-queue-type": "quorum"}),
        ]
        for lane in LANES:
            out.append((self.send_queue(lane), dict(send_args)))
            for delay_s in RETRY_TIERS_S:
                out.append(
                    (
                        self.retry_queue(lane, delay_s),
                        {
                            "x-queue-type": "quorum",
                            "x-message-ttl": delay_s * 1000,
                            "x-dead-letter-exchange": self.send_exchange,
                            "x-dead-letter-routing-key": lane,
                            "x-dead-letter-strategy": "at-least-once",
                            "x-overflow": "reject-publish",
                        },
                    )
                )
        return out

    def queue_arguments(self, name: str) -> dict[str, Any]:
        """The declared arguments of one of our queues (consumers declare with them, so a
        robust channel re-declares the queue and restores its consumer after a reconnect)."""
        for queue, args in self.queues():
            if queue == name:
                return args
        raise KeyError(f"{name!r} is not a queue of prefix {self.prefix!r}")

    def bindings(self) -> list[tuple[str, str, str]]:
        """(exchange, queue, routing key) of every binding we own."""
        out = [(self.dead_exchange, self.dead_queue, "")]
        out += [(self.send_exchange, self.send_queue(lane), lane) for lane in LANES]
        return out

    def definitions(self, vhost: str = "/") -> dict[str, Any]:
        """The topology as a RabbitMQ definitions document (``rabbitmqctl import_definitions``
        or the management plugin's ``load_definitions``)."""
        return {
            "exchanges": [
                {
                    "name": name,
                    "vhost": vhost,
                    "type": kind,
                    "durable": True,
                    "auto_delete": False,
                    "internal": False,
                    "arguments": {},
                }
                for name, kind in self.exchanges()
            ],
            "queues": [
                {
                    "name": name,
                    "vhost": vhost,
                    "durable": True,
                    "auto_delete": False,
                    "arguments": args,
                }
                for name, args in self.queues()
            ],
            "bindings": [
                {
                    "source": exchange,
                    "vhost": vhost,
                    "destination": queue,
                    "destination_type": "queue",
                    "routing_key": key,
                    "arguments": {},
                }
                for exchange, queue, key in self.bindings()
            ],
        }

    async def declare(self, channel: AbstractChannel) -> dict[str, AbstractExchange]:
        """Declare everything (idempotent); returns the exchanges by name."""
        declared = {
            name: await channel.declare_exchange(name, aio_pika.ExchangeType(kind), durable=True)
            for name, kind in self.exchanges()
        }
        queues = {
            name: await channel.declare_queue(name, durable=True, arguments=args)
            for name, args in self.queues()
        }
        for exchange, queue, key in self.bindings():
            await queues[queue].bind(declared[exchange], routing_key=key)
        return declared

    async def delete(self, channel: AbstractChannel) -> None:
        """Remove everything under this prefix (tests and ``mta bench`` clean up with it)."""
        for name, _ in self.queues():
            await channel.queue_delete(name)
        for name, _ in self.exchanges():
            await channel.exchange_delete(name)
