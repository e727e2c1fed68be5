"""``mta dead list|show|replay|purge``: the operator's hands on ``<prefix>.dead``.

Reading is non-destructive by *rotation*, not by requeue: each letter is fetched (basic.get,
manual ack), a copy of it is published back to ``<prefix>.dead`` with a publisher confirm, and
only then is the original acked; a letter that is replayed or purged is acked without a copy
(a replay only after its publish to ``<prefix>.send`` was confirmed). One pass handles exactly
the letters the queue held when it began, so the queue keeps its order.

Why not read and requeue: quorum queues count a requeue as a delivery (``x-delivery-count``),
and RabbitMQ 4.0 gives every quorum queue a delivery limit of 20 by default; ``<prefix>.dead``
has no dead-letter exchange, so after some twenty listings a letter would be dropped. A
rotated copy is a new message with no deliveries. If a pass is interrupted between a copy's
confirm and the original's ack, that letter is there twice (same message id); replaying both
is safe (the markers), purge removes both. Run one console command at a time per prefix.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aio_pika
import click
import orjson
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage

from mta.broker import connect as broker_connect
from mta.cli.settings import _run, settings_options
from mta.config import Settings
from mta.contract import BatchError, decode_batch
from mta.topology import HEADER_DEAD_REASON, HEADER_IDS, HEADER_ORIGINAL_KEY, LANES, Topology
from mta.worker import batch_id_of

#: A summary of the broker's x-death entries, kept on rotated copies (a broker may not keep a
#: client-set x-death header).
HEADER_DEATHS = "x-mta-deaths"
#: Headers the broker sets on a delivery or a dead-lettering: never copied into a replay.
BROKER_HEADERS = frozenset(
    {
        "x-death",
        "x-delivery-count",
        "x-acquired-count",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
    }
)
#: ``show`` prints at most this many characters of one header value.
HEADER_LIMIT = 200


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


@dataclass
class Letter:
    """One dead letter as the console sees it."""

    message: AbstractIncomingMessage
    topology: Topology

    @property
    def id(self) -> str:
        """The batch id the worker knows it by: its AMQP message_id, else a hash of its body."""
        return batch_id_of(self.message.message_id, self.message.body)

    @property
    def headers(self) -> dict[str, Any]:
        return dict(self.message.headers or {})

    @property
    def deaths(self) -> list[dict[str, Any]]:
        """reason, count and queue of each x-death entry (or of the copy's summary)."""
        raw = self.headers.get("x-death")
        if isinstance(raw, list):
            return [
                {
                    "reason": _text(d.get("reason", "")),
                    "count": int(d.get("count", 0) or 0),
                    "queue": _text(d.get("queue", "")),
                    "routing_keys": [_text(k) for k in d.get("routing-keys") or []],
                }
                for d in raw
                if isinstance(d, dict)
            ]
        summary = self.headers.get(HEADER_DEATHS)
        if summary is None:
            return []
        try:
            kept = orjson.loads(_text(summary))
        except orjson.JSONDecodeError:
            return []
        return kept if isinstance(kept, list) else []

    @property
    def reason(self) -> str:
        reason = self.headers.get(HEADER_DEAD_REASON)
        if reason is not None:
            return _text(reason)
        deaths = self.deaths
        return f"broker: {deaths[0]['reason']}" if deaths else ""

    @property
    def original_key(self) -> str:
        key = self.headers.get(HEADER_ORIGINAL_KEY)
        if key is not None:
            return _text(key)
        for death in self.deaths:
            if death["routing_keys"]:
                return str(death["routing_keys"][0])
        return self.message.routing_key or ""

    @property
    def size(self) -> int:
        return len(self.message.body)

    @property
    def messages(self) -> int | None:
        """How many messages the body holds, None when it is not a batch."""
        try:
            return len(decode_batch(self.message.body))
        except BatchError:
            return None

    def refusal(self, settings: Settings) -> str:
        """Why this letter can never pass the worker as it is ('' when it can)."""
        try:
            decode_batch(self.message.body, settings.max_batch_bytes, settings.max_batch)
        except BatchError as exc:
            return str(exc)
        return ""

    @property
    def internal(self) -> bool:
        """A copy the worker made (delayed retry, released held messages): its body holds some
        messages of one or more batches, whose ids were in headers it no longer has."""
        if HEADER_IDS in self.headers or self.id.startswith("held-"):
            return True
        retry = f"{self.topology.prefix}.retry."
        return any(str(d["queue"]).startswith(retry) for d in self.deaths)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "message_id": self.message.message_id,
            "original_routing_key": self.original_key,
            "reason": self.reason,
            "deaths": [
                {"reason": d["reason"], "count": d["count"], "queue": d["queue"]}
                for d in self.deaths
            ],
            "bytes": self.size,
            "messages": self.messages,
            "internal_copy": self.internal,
        }


def _copy(letter: Letter, headers: dict[str, Any], message_id: str | None) -> aio_pika.Message:
    source = letter.message
    return aio_pika.Message(
        source.body,
        headers=headers or None,
        message_id=message_id,
        content_type=source.content_type or "application/json",
        content_encoding=source.content_encoding,
        correlation_id=source.correlation_id,
        timestamp=source.timestamp,
        type=source.type,
        app_id=source.app_id,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


#: What a pass does with one letter (on the pass's confirming channel): True = it is dealt
#: with, remove it; False = keep it.
Decide = Callable[[AbstractChannel, Letter], Awaitable[bool]]


async def _pass(settings: Settings, decide: Decide) -> int:
    """One pass through ``<prefix>.dead`` (see the module's doc); returns the letters seen."""
    topology = Topology(settings.prefix)
    connection = await broker_connect(settings.amqp_url, name="mta dead")
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        queue = await _dead_queue(channel, topology)
        count = queue.declaration_result.message_count or 0
        seen = 0
        for _ in range(count):
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            seen += 1
            letter = Letter(message, topology)
            if not await decide(channel, letter):
                await _keep(channel, letter)
            await message.ack()
        return seen
    finally:
        await connection.close()


async def _dead_queue(channel: AbstractChannel, topology: Topology) -> aio_pika.abc.AbstractQueue:
    try:
        return await channel.declare_queue(topology.dead_queue, passive=True)
    except aio_pika.exceptions.ChannelClosed:
        raise click.ClickException(
            f"queue {topology.dead_queue} does not exist: is MTA_PREFIX {topology.prefix!r} "
            "right? (every mta process declares it at start)"
        ) from None


async def _keep(channel: AbstractChannel, letter: Letter) -> None:
    """Publish the letter's copy back to the dead queue (confirmed) before its original goes."""
    headers = {k: v for k, v in letter.headers.items() if k not in BROKER_HEADERS}
    headers[HEADER_ORIGINAL_KEY] = letter.original_key
    deaths = letter.deaths
    if deaths:
        headers[HEADER_DEATHS] = orjson.dumps(deaths).decode()
    await channel.default_exchange.publish(
        _copy(letter, headers, letter.message.message_id),
        routing_key=letter.topology.dead_queue,
        mandatory=True,
    )


def _cut(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


_ROW = "{id:<34} {key:<9} {messages:>8} {bytes:>9}  {deaths:<24} {reason}"


@click.group()
def dead() -> None:
    """Inspect, replay and purge the dead letters (<prefix>.dead)."""


@dead.command("list")
@settings_options("amqp_url", "prefix")
@click.option("--json", "as_json", is_flag=True, help="A JSON array of the letters.")
def dead_list(settings: Settings, as_json: bool) -> None:
    """List every letter: id, original routing key, messages, bytes, x-death, reason.

    Nothing is consumed: each letter is read and a copy put back (confirmed) before the
    original is acked, so quorum queues' delivery limits never drop a letter for being read.
    """
    rows: list[dict[str, Any]] = []

    async def collect(channel: AbstractChannel, letter: Letter) -> bool:
        rows.append(letter.as_dict())
        return False

    _run(_pass(settings, collect))
    if as_json:
        click.echo(orjson.dumps(rows).decode())
        return
    click.echo(
        _ROW.format(
            id="ID",
            key="KEY",
            messages="MESSAGES",
            bytes="BYTES",
            deaths="X-DEATH",
            reason="REASON",
        )
    )
    for row in rows:
        deaths = ", ".join(f"{d['reason']} x{d['count']}" for d in row["deaths"]) or "-"
        count = "-" if row["messages"] is None else row["messages"]
        click.echo(
            _ROW.format(
                id=_cut(row["id"], 34),
                key=_cut(row["original_routing_key"] or "-", 9),
                messages=count,
                bytes=row["bytes"],
                deaths=_cut(deaths, 24),
                reason=_cut(row["reason"] or "-", 200),
            )
        )
    click.echo(f"{len(rows)} letter(s) in {Topology(settings.prefix).dead_queue}", err=True)


@dead.command("show")
@settings_options("amqp_url", "prefix")
@click.argument("letter_id", metavar="ID")
@click.option(
    "--max-bytes",
    default=4096,
    show_default=True,
    type=click.IntRange(min=0),
    help="Print at most this many bytes of the body.",
)
def dead_show(settings: Settings, letter_id: str, max_bytes: int) -> None:
    """Print the headers and (the start of) the body of the letter(s) with id ID."""
    found: list[tuple[dict[str, Any], dict[str, Any], bytes]] = []

    async def pick(channel: AbstractChannel, letter: Letter) -> bool:
        if letter.id == letter_id:
            found.append((letter.as_dict(), letter.headers, letter.message.body))
        return False

    _run(_pass(settings, pick))
    if not found:
        raise click.ClickException(
            f"no letter {letter_id!r} in {Topology(settings.prefix).dead_queue}"
        )
    for summary, headers, body in found:
        click.echo(f"id: {summary['id']}")
        click.echo(f"message_id: {summary['message_id']}")
        click.echo(f"original routing key: {summary['original_routing_key']}")
        click.echo(f"reason: {_cut(summary['reason'], 1000)}")
        click.echo(f"bytes: {summary['bytes']}  messages: {summary['messages']}")
        click.echo("headers:")
        for name, value in sorted(headers.items()):
            click.echo(f"  {name}: {_cut(_text(value), HEADER_LIMIT)}")
        text = body[:max_bytes].decode("utf-8", "replace")
        click.echo("body:")
        click.echo(text)
        if len(body) > max_bytes:
            click.echo(f"... ({len(body) - max_bytes} more bytes; --max-bytes to see more)")


def _selection(ids: tuple[str, ...], every: bool) -> Callable[[Letter], bool]:
    if bool(ids) == every:
        raise click.UsageError("name letter IDs or give --all (not both)")
    wanted = set(ids)
    return lambda letter: every or letter.id in wanted


@dead.command("replay")
@settings_options(
    "amqp_url", "redis_url", "prefix", "shards", "max_batch", "max_batch_bytes"
)
@click.argument("ids", nargs=-1, metavar="[ID]...")
@click.option("--all", "every", is_flag=True, help="Replay every letter.")
@click.option(
    "--lane",
    type=click.Choice(LANES),
    default=None,
    help="Publish on this lane (default: the letter's original routing key, else bulk).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Also replay letters that can never pass (not JSON, too big) and worker copies "
    "(those under a new message id).",
)
def dead_replay(
    settings: Settings, ids: tuple[str, ...], every: bool, lane: str | None, force: bool
) -> None:
    """Publish the letters ID... (or --all) back to <prefix>.send, then remove them.

    Each goes out with its own AMQP message id, so the worker's markers skip every message
    whose submission was recorded (markers live an hour), without x-mta-* or x-death headers,
    with a publisher confirm; a letter leaves the dead queue only after that confirm.
    Exit status 1 when a letter was refused or an ID not found.
    """
    chosen = _selection(ids, every)
    failed = _run(_replay(settings, chosen, set(ids), lane, force))
    if failed:
        raise SystemExit(1)


async def _replay(
    settings: Settings,
    chosen: Callable[[Letter], bool],
    ids: set[str],
    lane: str | None,
    force: bool,
) -> bool:
    from mta.store import Store

    topology = Topology(settings.prefix)
    store = await Store.open(settings.redis_url, settings.prefix, shards=settings.shards)
    failed = False
    seen: set[str] = set()
    replayed = 0
    exchanges: dict[int, AbstractExchange] = {}

    async def replay(channel: AbstractChannel, letter: Letter) -> bool:
        nonlocal failed, replayed
        if not chosen(letter):
            return False
        seen.add(letter.id)
        refusal = letter.refusal(settings)
        if refusal and not force:
            click.echo(
                f"refused {letter.id}: it can never pass ({refusal}); remove it with "
                f"'mta dead purge {letter.id}', or replay it anyway with --force",
                err=True,
            )
            failed = True
            return False
        message_id = letter.message.message_id
        if letter.internal:
            if not force:
                click.echo(
                    f"refused {letter.id}: a worker's copy (delayed retry or released held "
                    "messages) without its message ids; under its id the worker would match "
                    "other messages' markers. --force publishes it under a new id (a message "
                    "of it that was submitted may be sent again)",
                    err=True,
                )
                failed = True
                return False
            message_id = f"{letter.id}-replay-{uuid.uuid4().hex[:8]}"
        target = lane or (letter.original_key if letter.original_key in LANES else "bulk")
        headers = {
            k: v
            for k, v in letter.headers.items()
            if not k.startswith("x-mta-") and k not in BROKER_HEADERS
        }
        recorded = await store.has_markers(letter.id)
        if id(channel) not in exchanges:
            exchanges[id(channel)] = await channel.get_exchange(topology.send_exchange)
        # Confirmed (the channel confirms, an unroutable message raises) before the pass acks
        # the letter away.
        await exchanges[id(channel)].publish(
            _copy(letter, headers, message_id), target, mandatory=True
        )
        replayed += 1
        click.echo(
            f"replayed {letter.id} ({letter.messages} message(s)) to "
            f"{topology.send_queue(target)}"
            + (f" as {message_id}" if message_id != letter.message.message_id else "")
            + (
                ": markers found, messages recorded as submitted are not sent again"
                if recorded
                else ": no markers, every message of it is sent"
            )
        )
        return True

    try:
        await _pass(settings, replay)
    finally:
        await store.close()
    for missing in sorted(ids - seen):
        click.echo(f"not found: {missing}", err=True)
        failed = True
    click.echo(f"{replayed} letter(s) replayed", err=True)
    return failed


@dead.command("purge")
@settings_options("amqp_url", "prefix")
@click.argument("ids", nargs=-1, metavar="[ID]...")
@click.option("--all", "every", is_flag=True, help="Purge every letter.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (for scripts).")
def dead_purge(settings: Settings, ids: tuple[str, ...], every: bool, yes: bool) -> None:
    """Remove the letters ID... (or --all) from <prefix>.dead for good."""
    chosen = _selection(ids, every)
    queue = Topology(settings.prefix).dead_queue
    what = "every letter" if every else f"letter(s) {', '.join(ids)}"
    if not yes and not click.confirm(f"remove {what} from {queue} for good?", err=True):
        raise click.ClickException("nothing removed (--yes skips this question)")
    removed: list[str] = []

    async def purge(channel: AbstractChannel, letter: Letter) -> bool:
        if chosen(letter):
            removed.append(letter.id)
            return True
        return False

    _run(_pass(settings, purge))
    click.echo(f"{len(removed)} letter(s) removed from {queue}", err=True)
    missing = sorted(set(ids) - set(removed))
    if missing:
        raise click.ClickException(f"not found: {', '.join(missing)}")
