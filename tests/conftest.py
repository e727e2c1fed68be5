"""Fixtures: a fresh prefix per test on the real RabbitMQ and Redis, services, a report tail."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aio_pika
import orjson
import pytest
import redis.asyncio as aioredis

from mta.config import Settings, load_accounts
from mta.contract import ApiStatus, SmsReportRequest, SmsResponse, SmsResult
from mta.registry import Registry, discover
from mta.service import Service
from mta.store import BatchRecord, Pending, Store
from mta.topology import Topology

ROOT = Path(__file__).resolve().parents[1]
AMQP_URL = os.environ.get("MTA_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
REDIS_URL = os.environ.get("MTA_REDIS_URL", "redis://127.0.0.1:6379/0")

SIM_ACCOUNTS = """
[[account]]
id = 0
name = "sim"
adapter = "simulator"
default = true
secret_key = "{secret}"
[account.options]
accept_ratio = {accept}
deliver_ratio = {deliver}
report_delay_s = {delay}
latency_ms = {latency}
seed = "tests"
"""


def batch_record(
    batch_id: str,
    size: int = 2,
    account: str = "acct",
    outbox: dict[str, bytes] | None = None,
    partners: bool = True,
) -> BatchRecord:
    """What a worker writes for a batch of ``size`` OKs of ``account`` (its partner index too,
    unless ``partners`` is False), due in a minute."""
    now = int(time.time() * 1000)
    mids = [f"{batch_id}:{i}" for i in range(size)]
    pending = {
        m: Pending(account, f"p-{m}", "447700900000", 5, 1, "S", now + 3_600_000, now, 1, "",
                   "", 1).pack()
        for m in mids
    }
    return BatchRecord(
        markers={batch_id: {"*": "o"}},
        pending=pending,
        due=dict.fromkeys(mids, now + 60_000),
        held={},
        held_data={},
        outbox=outbox or {},
        partners={account: {f"p-{m}": m for m in mids}} if partners else {},
    )


def batch(n: int, start: int = 0, **fields: Any) -> dict[str, Any]:
    """A send batch of ``n`` valid messages (numbers and texts numbered from ``start``)."""
    return {
        "messages": [
            {"mobileNumber": f"90533{start + i:07d}", "text": f"hello {start + i}", **fields}
            for i in range(n)
        ]
    }


def all_delivered(request: SmsReportRequest) -> SmsResponse:
    """A test partner's Report answer: every asked message DELIVERED."""
    return SmsResponse(
        "",
        [SmsResult(partnerMessageId=p, apiStatus=ApiStatus.DELIVERED) for p in request.messages],
    )


def sim_accounts(
    accept: float = 1.0,
    deliver: float = 1.0,
    delay: float = 0.0,
    latency: float = 0.0,
    secret: str = "",
) -> str:
    return SIM_ACCOUNTS.format(
        accept=accept, deliver=deliver, delay=delay, latency=latency, secret=secret
    )


@dataclass
class Env:
    """One test's world: its prefix, settings, accounts file, and what it started."""

    prefix: str
    tmp: Path
    settings: Settings
    services: list[Service] = field(default_factory=list)
    connection: aio_pika.abc.AbstractRobustConnection | None = None
    channel: aio_pika.abc.AbstractChannel | None = None

    @property
    def topology(self) -> Topology:
        return Topology(self.prefix)

    def accounts(self, text: str) -> Path:
        path = self.tmp / f"accounts-{uuid.uuid4().hex[:6]}.toml"
        path.write_text(text, encoding="utf-8")
        self.settings = replace(self.settings, accounts=str(path))
        return path

    def configure(self, **changes: Any) -> Settings:
        self.settings = replace(self.settings, **changes)
        return self.settings

    def registry(self, extra: dict[str, type] | None = None) -> Registry:
        classes: dict[str, Any] = dict(discover())
        classes.update(extra or {})
        metas = {name: cls.meta for name, cls in classes.items()}
        return Registry(
            load_accounts(self.settings.accounts, metas), classes, tz=self.settings.tz
        )

    async def start(
        self,
        *roles: str,
        extra: dict[str, type] | None = None,
        listen: str = "127.0.0.1:0",
        **changes: Any,
    ) -> Service:
        settings = replace(self.settings, **changes)
        service = Service(settings, tuple(roles), self.registry(extra), listen)
        await service.start()
        self.services.append(service)
        return service

    async def stop(self, service: Service) -> None:
        await service.stop()
        self.services.remove(service)

    async def publish(
        self,
        body: bytes | dict[str, Any],
        *,
        message_id: str | None = None,
        lane: str = "bulk",
        headers: dict[str, Any] | None = None,
    ) -> str:
        """Publish as an upstream would: a plain aio-pika client, not the project's Broker."""
        assert self.channel is not None
        if isinstance(body, dict):
            body = orjson.dumps(body)
        message_id = message_id if message_id is not None else uuid.uuid4().hex
        exchange = await self.channel.get_exchange(self.topology.send_exchange)
        await exchange.publish(
            aio_pika.Message(
                body,
                message_id=message_id or None,
                headers=headers,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=lane,
        )
        return message_id

    async def tail(self, key: str = "#") -> Tail:
        assert self.channel is not None
        tail = Tail()
        exchange = await self.channel.declare_exchange(
            self.topology.reports_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await self.channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, routing_key=key)
        await queue.consume(tail.on_message, no_ack=True)
        return tail

    async def store(self) -> Store:
        return Store(aioredis.from_url(REDIS_URL), self.prefix)


@dataclass
class Tail:
    """Results seen on the report exchange, with their routing keys."""

    results: list[dict[str, Any]] = field(default_factory=list)
    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    times: dict[tuple[str, str], float] = field(default_factory=dict)

    async def on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        doc = orjson.loads(message.body)
        self.messages.append((message.routing_key or "", doc))
        for result in doc["results"]:
            self.results.append(result)
            self.times.setdefault((result["messageId"], result["apiStatus"]), time.monotonic())

    def finals(self) -> list[dict[str, Any]]:
        return [r for r in self.results if r["apiStatus"] != "OK"]

    def oks(self) -> list[dict[str, Any]]:
        return [r for r in self.results if r["apiStatus"] == "OK"]

    def by_id(self, status: str | None = None) -> dict[str, dict[str, Any]]:
        return {
            r["messageId"]: r for r in self.results if status is None or r["apiStatus"] == status
        }

    async def wait(self, predicate: Callable[[Tail], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout}s; saw {len(self.results)} results: "
                    f"{self.results[-5:]}"
                )
            await asyncio.sleep(0.05)

    async def wait_finals(self, n: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        await self.wait(lambda t: len(t.finals()) >= n, timeout)
        return self.finals()


async def eventually(
    check: Callable[[], Coroutine[Any, Any, bool]], timeout: float = 20.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    settings = Settings(
        amqp_url=AMQP_URL,
        redis_url=REDIS_URL,
        prefix=prefix,
        poll_first_s=0.2,
        poll_max_s=1.0,
        shutdown_grace_s=5.0,
    )
    world = Env(prefix, tmp_path, settings)
    world.accounts(sim_accounts())
    world.connection = await aio_pika.connect_robust(AMQP_URL)
    world.channel = await world.connection.channel()
    await Topology(prefix).declare(world.channel)
    try:
        yield world
    finally:
        for service in list(world.services):
            await service.stop()
        channel = await world.connection.channel()
        await Topology(prefix).delete(channel)
        await world.connection.close()
        store = await world.store()
        await store.delete_all()
        await store.close()


def mta_command(*args: str) -> list[str]:
    """The ``mta`` command line run in a subprocess, as an operator would."""
    return [sys.executable, "-m", "mta.cli", *args]


def process_env(env: Env, **extra: str) -> dict[str, str]:
    """The environment of an ``mta`` process on this test's prefix (no stray MTA_* settings)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("MTA_")}
    base.update(
        MTA_PREFIX=env.prefix,
        MTA_ACCOUNTS=env.settings.accounts,
        MTA_AMQP_URL=env.settings.amqp_url,
        MTA_REDIS_URL=env.settings.redis_url,
    )
    base.update(extra)
    return base


async def run_mta(
    env: Env, *args: str, timeout: float = 20.0, **extra: str
) -> tuple[int, str, str]:
    """Run ``mta ARGS`` as a subprocess on this test's prefix; (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        *mta_command(*args),
        env=process_env(env, **extra),
        cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
