"""The RabbitMQ connection, declared topology and publishing with confirms (retried on outages).

``MTA_AMQP_URL`` names one broker, or the nodes of one RabbitMQ cluster as full URLs separated
by commas (``amqp://u:p@h1:5672/,amqp://u:p@h2:5672/``). Every connection made from it goes
through :func:`connect_robust` (long-lived, reconnecting) or :func:`connect` (one-shot): the
first node that answers is used; a robust connection that loses its node moves on to the next
listed one (:class:`ClusterConnection`), where its channels re-declare what they declared and
its consumers consume again (quorum queues live on the surviving nodes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final
from urllib.parse import urlsplit

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractRobustConnection,
)
from aio_pika.connection import make_url
from aio_pika.exceptions import CONNECTION_EXCEPTIONS, AMQPConnectionError
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_delay,
    wait_exponential_jitter,
)
from yarl import URL

from mta.outage import is_outage
from mta.redact import mask_url, redact
from mta.topology import Topology

log = logging.getLogger(__name__)

_PERSISTENT: Final = 2  # AMQP delivery_mode: written to disk
#: A comma that starts the next URL of a list (a comma inside a password stays in it).
_NEXT_URL = re.compile(r"\s*,\s*(?=[A-Za-z][A-Za-z0-9+.\-]*://)")


def amqp_urls(value: str | Sequence[str]) -> list[str]:
    """The broker addresses of ``MTA_AMQP_URL``: one URL, or several full URLs separated by
    commas (a comma is a separator only where a ``scheme://`` follows it), in order."""
    parts = [value] if isinstance(value, str) else list(value)
    urls = [u.strip().strip(",").strip() for part in parts for u in _NEXT_URL.split(part)]
    urls = [u for u in urls if u]
    if not urls:
        raise ValueError("no RabbitMQ URL given")
    return urls


def _where(url: str | URL) -> str:
    """``host:port`` of a broker URL: enough to say which node, nothing secret."""
    parts = urlsplit(str(url))
    try:
        port = parts.port
    except ValueError:
        port = None
    default = 5671 if parts.scheme == "amqps" else 5672
    return f"{parts.hostname or 'localhost'}:{port or default}"


def _reason(exc: BaseException, urls: Sequence[str | URL]) -> str:
    """An exception as one line, with every listed URL's password (and any credential) masked."""
    secrets = [URL(str(u)).password or "" for u in urls]
    text = " ".join(str(exc).split()) or type(exc).__name__
    return redact(text, [s for s in secrets if s])


class ClusterConnection(aio_pika.RobustConnection):
    """A robust connection over the nodes of one cluster: every failed connection attempt and
    every lost connection moves it to the next listed address (round robin), so it reconnects
    to a node that lives while another is down. With one address it is aio-pika's
    RobustConnection unchanged.

    aio-pika calls :meth:`_on_connection_close` both when an open connection closes and when a
    connection attempt fails (before the robust loop waits ``reconnect_interval`` and tries
    again), and each attempt connects to ``self.url``: moving ``self.url`` there is all it takes.
    """

    def __init__(self, urls: Sequence[str | URL], start: int = 0, **kwargs: Any) -> None:
        if not urls:
            raise ValueError("no RabbitMQ URL given")
        self.urls = [URL(str(u)) for u in urls]
        self.index = start % len(self.urls)
        super().__init__(self.urls[self.index], **kwargs)

    @property
    def node(self) -> str:
        """``host:port`` of the address this connection uses (or tries) now."""
        return _where(self.url)

    async def _on_connection_close(self, closing: asyncio.Future[Any]) -> None:
        was_open = self.connected.is_set()
        if len(self.urls) > 1 and not self._close_called and not self.is_closed:
            before = self.node
            self.index = (self.index + 1) % len(self.urls)
            self.url = self.urls[self.index]
            if was_open:
                reason = "closed"
                if closing.done() and not closing.cancelled() and closing.exception():
                    reason = _reason(closing.exception() or Exception(), self.urls)
                log.warning(
                    "RabbitMQ connection to %s lost (%s); reconnecting to %s",
                    before, reason, self.node,
                )
            else:
                log.info("RabbitMQ at %s did not answer; next attempt: %s", before, self.node)
        await super()._on_connection_close(closing)


def _unreachable(urls: Sequence[str], errors: Sequence[BaseException]) -> BaseException:
    """What to raise when no listed node answered: with one URL its own error, as aio-pika
    raised it; with several, one error naming each node by host:port (no password)."""
    if len(urls) == 1:
        return errors[0]
    detail = "; ".join(
        f"{_where(u)}: {_reason(e, urls)}" for u, e in zip(urls, errors, strict=True)
    )
    return AMQPConnectionError(f"no RabbitMQ node answered ({detail})")


async def connect_robust(
    url: str | Sequence[str],
    *,
    name: str | None = None,
    attempt_timeout_s: float | None = None,
    **kwargs: Any,
) -> AbstractRobustConnection:
    """A robust connection to the first of the listed nodes (:func:`amqp_urls`) that answers;
    it reconnects to the next ones when its node goes (:class:`ClusterConnection`). Raises
    :class:`AMQPConnectionError` (passwords masked) when none answers; ``attempt_timeout_s``
    bounds each node's attempt."""
    urls = amqp_urls(url)
    if name is not None:
        kwargs["client_properties"] = {"connection_name": name}
    errors: list[BaseException] = []
    for start, address in enumerate(urls):
        connection = ClusterConnection(urls, start=start, **kwargs)
        try:
            await connection.connect(timeout=attempt_timeout_s)
        except CONNECTION_EXCEPTIONS as exc:
            errors.append(exc)
            with contextlib.suppress(Exception):
                await connection.close()
            if len(urls) > 1:
                log.warning(
                    "RabbitMQ at %s did not answer (%s)", _where(address), _reason(exc, urls)
                )
            continue
        if start:
            log.info("connected to RabbitMQ at %s", mask_url(address))
        return connection
    raise _unreachable(urls, errors) from errors[-1]


async def connect(
    url: str | Sequence[str],
    *,
    name: str | None = None,
    attempt_timeout_s: float | None = None,
    **kwargs: Any,
) -> AbstractConnection:
    """A plain (not reconnecting) connection to the first listed node that answers, for
    short-lived commands; raises :class:`AMQPConnectionError` (passwords masked) when none does."""
    urls = amqp_urls(url)
    if name is not None:
        kwargs["client_properties"] = {"connection_name": name}
    errors: list[BaseException] = []
    for address in urls:
        try:
            connection: AbstractConnection = await aio_pika.connect(
                make_url(address), timeout=attempt_timeout_s, **kwargs
            )
            return connection
        except CONNECTION_EXCEPTIONS as exc:
            errors.append(exc)
    raise _unreachable(urls, errors) from errors[-1]


class Broker:
    """One robust connection, a confirming publish channel, and the declared exchanges."""

    def __init__(self, url: str, topology: Topology) -> None:
        self.url = url  # MTA_AMQP_URL: one URL or a comma-separated list (amqp_urls)
        self.topology = topology
        self.connection: AbstractRobustConnection | None = None
        self.channel: AbstractChannel | None = None
        self.exchanges: dict[str, AbstractExchange] = {}
        self.publish_timeout_s = 30.0
        self.retry_for_s = 120.0

    async def connect(self, name: str = "mta") -> None:
        self.connection = await connect_robust(self.url, name=name)
        self.channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
        self.exchanges = await self.topology.declare(self.channel)
        self.exchanges[""] = self.channel.default_exchange

    @property
    def open(self) -> bool:
        """Connected right now: False before connect(), after close(), and while the robust
        connection reconnects (to this node or, in a cluster, to the next listed one)."""
        connection = self.connection
        return (
            connection is not None
            and not connection.is_closed
            and connection.connected.is_set()
        )

    async def consumer_channel(self, prefetch: int) -> AbstractChannel:
        assert self.connection is not None, "connect() first"
        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        return channel

    async def close(self) -> None:
        if self.connection is not None:
            await self.connection.close()
            self.connection = None

    async def publish_once(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        headers: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        mandatory: bool = True,
    ) -> None:
        """Publish persistently and wait for the broker's confirm, once: raises
        ``aiormq.exceptions.PublishError`` when the broker returns it (``mandatory``, no queue
        bound), ``DeliveryError`` when it nacks it (a full queue), a connection error as is.

        aiormq's ``basic_publish`` on the confirming channel, as aio-pika's
        ``Exchange.publish`` does after building a ``Message`` and its properties (~30 us of
        CPU per publish here): the same frames, confirm and errors."""
        channel = self.channel
        if channel is None:
            raise aiormq.exceptions.ChannelInvalidStateError("not connected: connect() first")
        if channel.is_closed:
            raise aiormq.exceptions.ChannelInvalidStateError(f"{channel!r} closed")
        name = self.exchanges[exchange].name  # only the topology's exchanges (and "")
        underlay = await channel.get_underlay_channel()
        await underlay.basic_publish(
            body,
            exchange=name,
            routing_key=routing_key,
            properties=aiormq.spec.Basic.Properties(
                content_type="application/json",
                delivery_mode=_PERSISTENT,
                headers=dict(headers) if headers else None,
                message_id=message_id,
            ),
            mandatory=mandatory,
            timeout=self.publish_timeout_s,
        )

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
        try:  # the common case, without the retry machinery's cost
            await self.publish_once(
                exchange, routing_key, body, headers=headers, message_id=message_id,
                mandatory=mandatory,
            )
            return
        except Exception as exc:
            if not is_outage(exc):
                raise
            log.warning("publish to %r failed (%s); retrying", exchange, exc)
        message = aio_pika.Message(
            body,
            headers=dict(headers) if headers else None,
            message_id=message_id,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        target = self.exchanges[exchange]
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
