"""Console commands around the queues: ``mta publish``, ``reports``, ``status``, ``topology``."""

from __future__ import annotations

import asyncio
import csv
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import orjson

from mta.broker import connect as broker_connect
from mta.broker import connect_robust as broker_connect_robust
from mta.cli.settings import _run, settings_options
from mta.config import Settings


def _csv_messages(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(newline="", encoding="utf-8") as handle:
        for n, row in enumerate(csv.reader(handle), start=1):
            if not row or row[0].startswith("#"):
                continue
            if n == 1 and not any(ch.isdigit() for ch in row[0]):
                continue  # a header line (its first cell has no digit at all)
            if len(row) < 2:
                raise click.ClickException(f"{path}:{n}: expected number,text[,sender]")
            message: dict[str, Any] = {"mobileNumber": row[0].strip(), "text": row[1]}
            if len(row) > 2 and row[2]:
                message["sender"] = row[2]
            yield message


@click.command()
@settings_options("amqp_url", "prefix")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--batch-size", default=100, show_default=True, help="Messages per batch (CSV).")
@click.option("--priority", is_flag=True, help="Publish on the priority lane.")
@click.option("--account-id", type=int, default=None, help="Set accountId on CSV messages.")
def publish(
    settings: Settings, file: Path, batch_size: int, priority: bool, account_id: int | None
) -> None:
    """Publish FILE: a JSON batch ({"messages": [...]}) or CSV number,text[,sender]."""
    if file.suffix.lower() == ".csv":
        messages = list(_csv_messages(file))
        if account_id is not None:
            for message in messages:
                message["accountId"] = account_id
        bodies = [
            orjson.dumps({"messages": messages[i : i + batch_size]})
            for i in range(0, len(messages), batch_size)
        ]
        total = len(messages)
    else:
        body = file.read_bytes()
        try:
            doc = orjson.loads(body)
            total = len(doc["messages"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise click.ClickException(f"{file}: not a JSON batch with a 'messages' list") from None
        bodies = [body]
    _run(_publish(settings, bodies, total, priority))


async def _publish(settings: Settings, bodies: list[bytes], total: int, priority: bool) -> None:
    from mta.broker import Broker
    from mta.topology import LANE_BULK, LANE_PRIORITY, Topology

    broker = Broker(settings.amqp_url, Topology(settings.prefix))
    await broker.connect(name="mta publish")
    lane = LANE_PRIORITY if priority else LANE_BULK
    try:
        with click.progressbar(length=total, label="publishing", file=sys.stderr) as bar:
            window = 64
            for i in range(0, len(bodies), window):
                chunk = bodies[i : i + window]
                ids = [uuid.uuid4().hex for _ in chunk]
                await asyncio.gather(
                    *(
                        broker.publish(broker.topology.send_exchange, lane, body, message_id=mid)
                        for body, mid in zip(chunk, ids, strict=True)
                    )
                )
                for body in chunk:
                    bar.update(len(orjson.loads(body)["messages"]))
                for mid in ids:
                    click.echo(mid)
    finally:
        await broker.close()
    click.echo(
        f"published {total} message(s) in {len(bodies)} batch(es) to "
        f"{broker.topology.send_queue(lane)}",
        err=True,
    )


_TABLE = (
    "{apiStatus:<9} {accountId:>7} {mobileNumber:<15} {messageId:<36} {partnerStatus:<9} {detail}"
)
_HEADER = {
    "apiStatus": "STATUS",
    "accountId": "ACCOUNT",
    "mobileNumber": "NUMBER",
    "messageId": "MESSAGE ID",
    "partnerStatus": "PARTNER",
    "detail": "DETAIL / PARTNER ID",
}


def _row(result: dict[str, Any]) -> str:
    values = {k: result.get(k, "") for k in _HEADER}
    values["detail"] = result.get("partnerDetail") or result.get("partnerMessageId", "")
    return _TABLE.format(**values)


@click.command()
@settings_options("amqp_url", "prefix")
@click.option("--json", "as_json", is_flag=True, help="One JSON result per line.")
@click.option(
    "--bind",
    "keys",
    multiple=True,
    default=["#"],
    show_default=True,
    help="Routing keys to follow, e.g. '12.*' or '*.FAIL' (repeatable).",
)
@click.option("--count", type=int, default=0, help="Stop after this many results (0 = never).")
@click.option("--finals", is_flag=True, help="Count only final results (not OK) for --count.")
@click.option(
    "--idle-timeout",
    type=float,
    default=0.0,
    help="Stop when no result came for this many seconds (0 = never).",
)
def reports(
    settings: Settings,
    as_json: bool,
    keys: tuple[str, ...],
    count: int,
    finals: bool,
    idle_timeout: float,
) -> None:
    """Tail the report exchange: a readable table, or --json lines."""
    _run(_reports(settings, as_json, keys, count, finals, idle_timeout))


async def _reports(
    settings: Settings,
    as_json: bool,
    keys: tuple[str, ...],
    count: int,
    finals: bool,
    idle_timeout: float,
) -> None:
    import aio_pika

    from mta.topology import Topology

    topology = Topology(settings.prefix)
    connection = await broker_connect_robust(settings.amqp_url, name="mta reports")
    seen = 0
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            topology.reports_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        for key in keys:
            await queue.bind(exchange, routing_key=key)
        if not as_json:
            click.echo(_TABLE.format(**_HEADER))
        async with queue.iterator() as messages:
            while True:
                try:
                    message = await asyncio.wait_for(
                        messages.__anext__(), timeout=idle_timeout or None
                    )
                except (TimeoutError, StopAsyncIteration):
                    break
                async with message.process():
                    doc = orjson.loads(message.body)
                for result in doc.get("results", []):
                    if as_json:
                        click.echo(orjson.dumps(result).decode())
                    else:
                        click.echo(_row(result))
                    if not finals or result.get("apiStatus") != "OK":
                        seen += 1
                if count and seen >= count:
                    break
    finally:
        await connection.close()


@click.command()
@settings_options("prefix")
@click.option("--vhost", default="/", show_default=True, help="Virtual host of the definitions.")
def topology(settings: Settings, vhost: str) -> None:
    """Print the RabbitMQ topology as a definitions document (rabbitmqctl import_definitions).

    Every process declares the same topology at start; this is for brokers that are
    provisioned ahead (deploy/rabbitmq/definitions.json is this output for prefix mta).
    """
    from mta.topology import Topology

    doc = Topology(settings.prefix).definitions(vhost)
    click.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())


@click.command()
@settings_options("amqp_url", "redis_url", "prefix", "shards")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable.")
def status(settings: Settings, as_json: bool) -> None:
    """Queue depths and Redis state: pending, due now, held, outbox."""
    _run(_status(settings, as_json))


async def _status(settings: Settings, as_json: bool) -> None:
    import aio_pika

    from mta.store import Store
    from mta.topology import Topology

    topology = Topology(settings.prefix)
    store = await Store.open(settings.redis_url, settings.prefix, shards=settings.shards)
    connection = await broker_connect(settings.amqp_url, name="mta status")
    queues: dict[str, int | None] = {}
    try:
        for name, _ in topology.queues():
            channel = await connection.channel()
            try:
                queue = await channel.declare_queue(name, passive=True)
                queues[name] = queue.declaration_result.message_count
            except aio_pika.exceptions.ChannelClosed:
                queues[name] = None  # not declared yet
            finally:
                if not channel.is_closed:
                    await channel.close()
        redis_state = await store.counts()
    finally:
        await connection.close()
        await store.close()
    if as_json:
        click.echo(orjson.dumps({"queues": queues, "redis": redis_state}).decode())
        return
    for name, count in queues.items():
        click.echo(f"{name:<40} {'not declared' if count is None else count:>12}")
    for name, count in redis_state.items():
        click.echo(f"{'redis ' + name:<40} {count:>12}")


@click.command()
@settings_options("amqp_url", "redis_url", "prefix", "shards")
@click.option("--yes", is_flag=True, help="Remove; without it, only print what would go.")
def teardown(settings: Settings, yes: bool) -> None:
    """Remove a prefix: its queues (with their messages), exchanges and Redis keys.

    Without --yes it prints what it would remove and exits with status 1. Stop the prefix's
    processes first: they declare the topology again at start.
    """
    _run(_teardown(settings, yes))


async def _teardown(settings: Settings, yes: bool) -> None:
    import aio_pika

    from mta.redact import mask_url
    from mta.store import Store
    from mta.topology import Topology

    topology = Topology(settings.prefix)
    store = await Store.open(
        settings.redis_url, settings.prefix, shards=settings.shards, check=False
    )
    connection = await broker_connect(settings.amqp_url, name="mta teardown")
    try:
        queues: list[str] = []
        for name, _ in topology.queues():
            count = await _depth(connection, name)
            if count is not None:
                queues.append(f"queue {name} ({count} message(s))")
        exchanges: list[str] = []
        for name, kind in topology.exchanges():
            channel = await connection.channel()
            try:
                await channel.declare_exchange(name, passive=True)
                exchanges.append(f"exchange {name} ({kind})")
            except aio_pika.exceptions.ChannelClosed:
                pass
            finally:
                if not channel.is_closed:
                    await channel.close()
        keys = await store.count_keys()
        found = [*queues, *exchanges]
        if keys:
            found.append(f"{keys} Redis key(s) {store.tag}:* at {mask_url(settings.redis_url)}")
        if not found:
            click.echo(f"nothing of prefix {settings.prefix!r} found", err=True)
            return
        if not yes:
            click.echo(f"mta teardown would remove (prefix {settings.prefix!r}):")
            for line in found:
                click.echo(f"  {line}")
            raise click.ClickException("nothing removed: run again with --yes to remove these")
        channel = await connection.channel()
        await topology.delete(channel)
        await store.delete_all()
        for line in found:
            click.echo(f"removed {line}")
    finally:
        await connection.close()
        await store.close()


async def _depth(connection: Any, name: str) -> int | None:
    """A queue's message count, None when it does not exist (on a channel of its own: a
    passive declare of a missing queue closes the channel)."""
    import aio_pika

    channel = await connection.channel()
    try:
        queue = await channel.declare_queue(name, passive=True)
        return int(queue.declaration_result.message_count or 0)
    except aio_pika.exceptions.ChannelClosed:
        return None
    finally:
        if not channel.is_closed:
            await channel.close()
