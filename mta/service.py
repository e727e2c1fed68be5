"""Process wiring: settings → registry, store, broker and roles; run until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass, field

from mta.broker import Broker
from mta.config import Settings, load_accounts, load_smpp_clients
from mta.httpserver import HttpServer, create_app, parse_listen
from mta.metrics import MetricsServer, sample_loop
from mta.registry import Registry, discover
from mta.reporter import Reporter
from mta.smppserver import SmppServer, make_ssl_context
from mta.smppserver.auth import SmppLimits
from mta.store import Store
from mta.topology import Topology
from mta.worker import Worker

log = logging.getLogger(__name__)

ROLES = ("worker", "reporter", "http", "smpp")


def build_registry(settings: Settings) -> Registry:
    """Discover adapters, read and check the accounts file (raises ConfigError)."""
    classes = discover()
    accounts = load_accounts(settings.accounts, {name: c.meta for name, c in classes.items()})
    return Registry(accounts, classes, tz=settings.tz)


@dataclass
class Service:
    """The roles of one process, sharing one Redis pool, one AMQP connection, one registry."""

    settings: Settings
    roles: tuple[str, ...]
    registry: Registry
    store: Store = field(init=False)
    broker: Broker = field(init=False)
    listen: str = "127.0.0.1:8080"
    worker: Worker | None = None
    reporter: Reporter | None = None
    http: HttpServer | None = None
    smpp_listen: str = "127.0.0.1:2775"
    smpp_tls_cert: str = ""
    smpp_tls_key: str = ""
    smpp_limits: SmppLimits | None = None  # None: from the MTA_SMPP_* variables
    smpp: SmppServer | None = None
    metrics: MetricsServer | None = None
    _sampler: asyncio.Task[None] | None = None
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.broker = Broker(self.settings.amqp_url, Topology(self.settings.prefix))

    async def start(self) -> None:
        if self.settings.metrics_listen:  # first: /healthz answers while the roles start
            host, port = parse_listen(self.settings.metrics_listen)
            self.metrics = MetricsServer(host, port, self.problems)
            await self.metrics.start()
        self.store = await Store.open(
            self.settings.redis_url,
            self.settings.prefix,
            shards=self.settings.shards,
            wait_replicas=self.settings.redis_wait_replicas,
        )
        await self.store.r.ping()
        await self.broker.connect(name=f"mta {'+'.join(self.roles)}")
        self.registry.bind_store(self.store)
        if set(self.roles) - {"smpp"}:  # the SMPP front alone never calls an adapter
            await self.registry.start()
        if "reporter" in self.roles:
            self.reporter = Reporter(self.settings, self.registry, self.store, self.broker)
            await self.reporter.start()
            if self.metrics is not None:  # reporters sample the Redis state gauges
                self._sampler = asyncio.create_task(
                    sample_loop(self.store, self._stopping), name="metrics-sampler"
                )
        if "worker" in self.roles:
            self.worker = Worker(self.settings, self.registry, self.store, self.broker)
            await self.worker.start()
        if "http" in self.roles:
            host, port = parse_listen(self.listen)
            app = create_app(self.registry, self.store, self.broker, self.settings)
            self.http = HttpServer(app, host, port)
            await self.http.start()
        if "smpp" in self.roles:
            host, port = parse_listen(self.smpp_listen)
            tls = (
                make_ssl_context(self.smpp_tls_cert, self.smpp_tls_key)
                if self.smpp_tls_cert
                else None
            )
            clients = load_smpp_clients(self.settings.accounts)
            self.smpp = SmppServer(
                self.settings,
                clients,
                self.store,
                self.broker,
                host,
                port,
                ssl=tls,
                limits=self.smpp_limits,
            )
            await self.smpp.start()

    async def problems(self) -> list[str]:
        """What keeps this process from being ready (empty: Redis answers, RabbitMQ is open)."""
        found = []
        try:
            if "store" not in self.__dict__:  # start() has not connected yet
                raise ConnectionError("not connected")
            await asyncio.wait_for(self.store.r.ping(), timeout=2)
        except Exception as exc:
            found.append(f"redis: {type(exc).__name__}")
        if not self.broker.open:  # closed, or reconnecting (to this node or the next listed)
            found.append("rabbitmq: connection closed")
        return found

    async def stop(self) -> None:
        self._stopping.set()
        if self._sampler is not None:
            await self._sampler
        if self.smpp is not None:
            await self.smpp.stop()
        if self.http is not None:
            await self.http.stop()
        if self.worker is not None:
            await self.worker.stop()
        if self.reporter is not None:
            await self.reporter.stop()
        await self.registry.close()
        await self.broker.close()
        if "store" in self.__dict__:
            await self.store.close()
        if self.metrics is not None:
            await self.metrics.stop()


async def serve(
    settings: Settings,
    roles: tuple[str, ...],
    registry: Registry,
    listen: str = "127.0.0.1:8080",
    smpp_listen: str = "127.0.0.1:2775",
    smpp_tls_cert: str = "",
    smpp_tls_key: str = "",
    smpp_limits: SmppLimits | None = None,
) -> None:
    """Run ``roles`` until SIGTERM or SIGINT, then stop gracefully."""
    service = Service(
        settings,
        roles,
        registry,
        listen,
        smpp_listen=smpp_listen,
        smpp_tls_cert=smpp_tls_cert,
        smpp_tls_key=smpp_tls_key,
        smpp_limits=smpp_limits,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await service.start()
        log.info("mta %s running (prefix %r)", "+".join(roles), settings.prefix)
        await stop.wait()
        log.info("stopping: no new work; finishing what is in flight")
    finally:
        with contextlib.suppress(Exception):
            await service.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.info("stopped")
