"""The ``mta`` command: run the roles, publish batches, tail reports, list adapters and accounts."""

from __future__ import annotations

import asyncio
import csv
import functools
import logging
import sys
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import click
import orjson

from mta.config import MASK, ConfigError, InFlightPolicy, Settings

if TYPE_CHECKING:
    from mta.registry import Registry

F = TypeVar("F", bound=Callable[..., Any])

#: (flag, variable, Settings field, type, help)
_SETTINGS: list[tuple[str, str, str, Any, str]] = [
    ("--amqp-url", "MTA_AMQP_URL", "amqp_url", str, "RabbitMQ URL."),
    ("--redis-url", "MTA_REDIS_URL", "redis_url", str, "Redis URL."),
    (
        "--prefix",
        "MTA_PREFIX",
        "prefix",
        str,
        "Names every exchange, queue and Redis key (mta.send, {mta}:pending, ...).",
    ),
    ("--accounts", "MTA_ACCOUNTS", "accounts", str, "Accounts file (TOML)."),
    (
        "--timezone",
        "MTA_TIMEZONE",
        "timezone",
        str,
        "Zone of startTime/expireTime/sendAt (yyyyMMddHHmm).",
    ),
    (
        "--poll-first-s",
        "MTA_POLL_FIRST_S",
        "poll_first_s",
        float,
        "First Report poll after submission, seconds.",
    ),
    ("--poll-max-s", "MTA_POLL_MAX_S", "poll_max_s", float, "Longest pause between polls."),
    (
        "--max-wait-s",
        "MTA_MAX_WAIT_S",
        "max_wait_s",
        float,
        "TIMEOUT after this long without a final state (unless expireTime comes first).",
    ),
    (
        "--strict-numbers/--no-strict-numbers",
        "MTA_STRICT_NUMBERS",
        "strict_numbers",
        bool,
        "Check numbers against numbering plans (phonenumbers).",
    ),
    (
        "--max-batch",
        "MTA_MAX_BATCH",
        "max_batch",
        int,
        "Messages per batch; a larger batch is refused whole (to <prefix>.dead).",
    ),
    (
        "--max-batch-bytes",
        "MTA_MAX_BATCH_BYTES",
        "max_batch_bytes",
        int,
        "Bytes per batch body; a larger body is refused whole (to <prefix>.dead).",
    ),
    (
        "--inflight-policy",
        "MTA_INFLIGHT_POLICY",
        "inflight_policy",
        click.Choice(InFlightPolicy.ALL),
        "A redelivered message whose Send was in flight when its worker died: send it again "
        "(resubmit) or FAIL it as unknown (fail).",
    ),
    (
        "--max-attempts",
        "MTA_MAX_ATTEMPTS",
        "max_attempts",
        int,
        "Send attempts through the delayed-retry queues before FAIL.",
    ),
    (
        "--bulk-concurrency",
        "MTA_BULK_CONCURRENCY",
        "bulk_concurrency",
        int,
        "Bulk batches handled at once per worker.",
    ),
    (
        "--priority-concurrency",
        "MTA_PRIORITY_CONCURRENCY",
        "priority_concurrency",
        int,
        "Priority batches handled at once per worker.",
    ),
    (
        "--report-batch",
        "MTA_REPORT_BATCH",
        "report_batch",
        int,
        "Messages a reporter claims per round.",
    ),
    (
        "--report-concurrency",
        "MTA_REPORT_CONCURRENCY",
        "report_concurrency",
        int,
        "Report rounds in flight per reporter.",
    ),
    (
        "--lease-s",
        "MTA_LEASE_S",
        "lease_s",
        float,
        "A claim's lease; a dead reporter's claims come back after it.",
    ),
    (
        "--shutdown-grace-s",
        "MTA_SHUTDOWN_GRACE_S",
        "shutdown_grace_s",
        float,
        "On SIGTERM, how long in-flight work may take before it is returned.",
    ),
    (
        "--webhook-max-body",
        "MTA_WEBHOOK_MAX_BODY",
        "webhook_max_body",
        int,
        "mta http: largest webhook body in bytes; larger ones are refused (413) unread.",
    ),
    (
        "--webhook-receipts-cap",
        "MTA_WEBHOOK_RECEIPTS_CAP",
        "webhook_receipts_cap",
        int,
        "mta http: unclaimed pushed receipts stored per account; beyond it webhooks get 429.",
    ),
]


def settings_options(func: F) -> F:
    """Add every setting as a flag with its MTA_* variable; pass ``settings=Settings(...)``."""
    defaults = Settings()

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = {name: kwargs.pop(name) for _, _, name, _, _ in _SETTINGS}
        try:
            settings = kwargs["settings"] = Settings(**values)
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from None
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            line = _unreachable(exc, settings)
            if line is None:
                raise
            raise click.ClickException(line) from None

    for flag, env, name, kind, text in reversed(_SETTINGS):
        wrapper = click.option(
            flag,
            name,
            envvar=env,
            show_envvar=True,
            default=getattr(defaults, name),
            show_default=True,
            type=None if kind is bool else kind,
            help=text,
        )(wrapper)
    return wrapper  # type: ignore[return-value]


def _unreachable(exc: BaseException, settings: Settings) -> str | None:
    """One line for an error that means RabbitMQ or Redis cannot be reached (the URL's
    password masked, a hint added), else None. Every command that takes the settings reports
    such errors this way (:func:`settings_options`), never with a traceback."""
    from aiormq.exceptions import AMQPConnectionError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from mta.redact import mask_url, redact

    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        error = pending.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, AMQPConnectionError):
            what, url, variable = "RabbitMQ", settings.amqp_url, "MTA_AMQP_URL"
        elif isinstance(error, RedisConnectionError | RedisTimeoutError):
            what, url, variable = "Redis", settings.redis_url, "MTA_REDIS_URL"
        else:
            if isinstance(error, BaseExceptionGroup):
                pending.extend(error.exceptions)
            pending.extend(e for e in (error.__cause__, error.__context__) if e is not None)
            continue
        password = urlsplit(url).password if "@" in url else None
        reason = " ".join(str(error).split()) or type(error).__name__
        reason = redact(reason, [password] if password else [])
        return (
            f"cannot reach {what} at {mask_url(url)} ({reason}); is it running? "
            f"set {variable} (or --{variable[4:].lower().replace('_', '-')})"
        )
    return None


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(coro)


class _RedactingFormatter(logging.Formatter):
    """Formats a log line, then masks credentials in it (URL passwords, Authorization and
    Basic/Bearer values) and, once the accounts are known, every encoding of their secrets:
    a last line of defence for whatever a library or a partner puts in a log line."""

    def __init__(self, fmt: str) -> None:
        from mta.redact import redact_credentials

        super().__init__(fmt)
        self.redact: Callable[[str], str] = redact_credentials

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


_FORMATTER = _RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")


def _drop_transport_error(record: logging.LogRecord) -> bool:
    """aiormq logs a failed connect before raising it; the raise is reported (one line)."""
    return not str(record.msg).startswith("error when creating transport")


logging.getLogger("aiormq.connection").addFilter(_drop_transport_error)


def _logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_FORMATTER)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    logging.getLogger("aio_pika").setLevel(logging.WARNING)
    logging.getLogger("aiormq").setLevel(logging.WARNING)


def _redact_logs(registry: Registry) -> None:
    """From now on, log lines of this process mask every secret of every account."""
    _FORMATTER.redact = registry.redactor()


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="sms-mta")
def main() -> None:
    """sms-mta: an SMS message transfer agent.

    Send batches arrive on RabbitMQ, go to the partner adapter of their account, and every
    outcome is published on the report exchange. Settings come from MTA_* variables or flags.
    """


def _serve(
    settings: Settings,
    roles: tuple[str, ...],
    verbose: bool,
    listen: str = "127.0.0.1:8080",
    **smpp: Any,
) -> None:
    from mta.httpserver import parse_listen
    from mta.service import build_registry, serve

    _logging(verbose)
    if "http" in roles:
        try:
            parse_listen(listen)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    try:
        registry = build_registry(settings)
    except ConfigError as exc:
        raise click.ClickException(f"configuration error: {exc}") from None
    _redact_logs(registry)
    _run(serve(settings, roles, registry, listen, **smpp))


_LISTEN_HELP = "Address of the HTTP server (webhooks, /healthz, /readyz)."


@main.command()
@settings_options
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.option(
    "--http/--no-http",
    "with_http",
    default=False,
    show_default=True,
    help="Also serve webhooks and health checks (mta http) in this process.",
)
@click.option(
    "--listen",
    envvar="MTA_HTTP_LISTEN",
    show_envvar=True,
    default="127.0.0.1:8080",
    show_default=True,
    help=_LISTEN_HELP,
)
def run(settings: Settings, verbose: bool, with_http: bool, listen: str) -> None:
    """Run a worker and a reporter (and, with --http, the HTTP server) in one process."""
    roles = ("worker", "reporter", "http") if with_http else ("worker", "reporter")
    _serve(settings, roles, verbose, listen)


@main.command("http")
@settings_options
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.option(
    "--listen",
    envvar="MTA_HTTP_LISTEN",
    show_envvar=True,
    default="127.0.0.1:8080",
    show_default=True,
    help=_LISTEN_HELP,
)
def http_command(settings: Settings, verbose: bool, listen: str) -> None:
    """Serve partner receipt webhooks (/webhooks/<account>), /healthz and /readyz."""
    _serve(settings, ("http",), verbose, listen)


def _smpp_limit_options(func: F) -> F:
    """Each :class:`~mta.smpp.guard.SmppLimits` field as a flag of ``mta smpp-server``, with
    its ``MTA_SMPP_<NAME>`` variable (``--bind-timeout-s`` / ``MTA_SMPP_BIND_TIMEOUT_S``)."""
    import dataclasses

    from mta.smpp.guard import LIMIT_HELP, SmppLimits

    defaults = SmppLimits()
    for f in reversed(dataclasses.fields(SmppLimits)):
        value = getattr(defaults, f.name)
        func = click.option(
            f"--{f.name.replace('_', '-')}",
            f.name,
            envvar=f"MTA_SMPP_{f.name.upper()}",
            show_envvar=True,
            default=value,
            show_default=True,
            type=type(value),
            help=LIMIT_HELP[f.name],
        )(func)
    return func


@main.command("smpp-server")
@settings_options
@_smpp_limit_options
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.option(
    "--listen",
    envvar="MTA_SMPP_LISTEN",
    show_envvar=True,
    default="127.0.0.1:2775",
    show_default=True,
    help="Address of the SMPP 3.4 listener.",
)
@click.option(
    "--tls-cert",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="PEM certificate (chain): serve SMPP over TLS.",
)
@click.option(
    "--tls-key",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="PEM private key of --tls-cert.",
)
def smpp_server(
    settings: Settings,
    verbose: bool,
    listen: str,
    tls_cert: str | None,
    tls_key: str | None,
    **limits: float,
) -> None:
    """Serve SMPP 3.4 to the [[smpp_client]] entries of the accounts file (we are the SMSC):
    binds, submit_sm onto the send exchange, query_sm, cancel_sm, deliver_sm receipts."""
    from mta.config import load_smpp_clients
    from mta.httpserver import parse_listen
    from mta.smpp.guard import SmppLimits

    try:
        parse_listen(listen)
        chosen = SmppLimits(**limits)  # type: ignore[arg-type]
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if bool(tls_cert) != bool(tls_key):
        raise click.UsageError("--tls-cert and --tls-key go together")
    try:
        if not load_smpp_clients(settings.accounts):
            click.echo(
                f"warning: {settings.accounts} has no [[smpp_client]]: every bind is refused",
                err=True,
            )
    except ConfigError as exc:
        raise click.ClickException(f"configuration error: {exc}") from None
    _serve(
        settings,
        ("smpp",),
        verbose,
        smpp_listen=listen,
        smpp_tls_cert=tls_cert or "",
        smpp_tls_key=tls_key or "",
        smpp_limits=chosen,
    )


@main.command()
@settings_options
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def worker(settings: Settings, verbose: bool) -> None:
    """Consume send batches and hand them to the adapters."""
    _serve(settings, ("worker",), verbose)


@main.command()
@settings_options
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def reporter(settings: Settings, verbose: bool) -> None:
    """Poll partners for due messages and publish their finals."""
    _serve(settings, ("reporter",), verbose)


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


@main.command()
@settings_options
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


@main.command()
@settings_options
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
    connection = await aio_pika.connect_robust(settings.amqp_url)
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


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable metadata.")
def adapters(as_json: bool) -> None:
    """List the installed adapters (entry-point group mta.adapters) and their options."""
    from mta.registry import discover

    found = discover()
    if as_json:
        click.echo(
            orjson.dumps(
                [c.meta.as_dict() for c in found.values()], option=orjson.OPT_INDENT_2
            ).decode()
        )
        return
    for name, cls in sorted(found.items()):
        meta = cls.meta
        click.echo(f"{name}: {meta.description}")
        click.echo(
            f"  pattern={meta.pattern.value} max_batch={meta.max_batch} "
            f"max_concurrency={meta.max_concurrency}"
            + (f" url={meta.default_url}" if meta.default_url else "")
        )
        for o in meta.options:
            flags = ", ".join(f for f, on in (("required", o.required), ("secret", o.secret)) if on)
            default = "" if o.required else f" (default {o.default!r})"
            click.echo(
                f"  - {o.name}: {o.type.__name__}{default}"
                + (f" [{flags}]" if flags else "")
                + f"  {o.description}"
            )


@main.group()
def accounts() -> None:
    """Inspect the accounts file."""


@accounts.command("list")
@settings_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable, secrets masked.")
def accounts_list(settings: Settings, as_json: bool) -> None:
    """List the configured accounts; secrets are masked."""
    from mta.config import load_accounts
    from mta.registry import account_redactor, discover

    try:
        found = load_accounts(settings.accounts, {n: c.meta for n, c in discover().items()})
    except ConfigError as exc:
        raise click.ClickException(f"configuration error: {exc}") from None
    rows: list[dict[str, Any]] = []
    for a in found:
        # Secret options show as MASK; every other text is scrubbed of the account's secrets
        # and of credentials (a URL's user:password@), in case one was put there.
        scrub = account_redactor(a)
        options = {k: scrub(v) if isinstance(v, str) else v for k, v in a.masked_options().items()}
        rows.append(
            {
                "id": a.id,
                "name": a.name,
                "adapter": a.adapter,
                "default": a.default,
                "active": a.active,
                "secret_key": MASK if a.secret_key else "",
                "concurrency": a.concurrency,
                "sender": scrub(a.sender),
                "fallback_sender": scrub(a.fallback_sender),
                "failover": a.failover,
                "rate_limit": a.rate_limit,
                "options": options,
            }
        )
    if as_json:
        click.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    for row in rows:
        flags = " ".join(
            f for f, on in (("default", row["default"]), ("inactive", not row["active"])) if on
        )
        listed = " ".join(f"{k}={v}" for k, v in row["options"].items())
        for key in ("rate_limit", "failover", "fallback_sender", "sender", "secret_key"):
            if row[key]:
                listed = f"{key}={row[key]} {listed}"
        click.echo(f"{row['id']:>5}  {row['name']:<16} {row['adapter']:<12} {flags:<16} {listed}")


@accounts.command("test")
@settings_options
@click.argument("name")
@click.option("--to", "number", default="", help="Also send a real test message to NUMBER.")
@click.option("--text", default="sms-mta test message", show_default=True)
@click.option(
    "--sender",
    default=None,
    help="With --to: the test message's sender (default: the account's sender).",
)
@click.option(
    "--wait",
    "wait_s",
    default=30.0,
    show_default=True,
    help="With --to: seconds to poll Report for the final state.",
)
def accounts_test(
    settings: Settings, name: str, number: str, text: str, sender: str | None, wait_s: float
) -> None:
    """Test account NAME: TestConnection, TestCredentials, TestProxy, Login, and with --to a
    real test message from --sender (default: the account's sender), as the worker would send
    it. One pass/fail line each; exit status 1 when any fails."""
    from mta.service import build_registry

    try:
        registry = build_registry(settings)
    except ConfigError as exc:
        raise click.ClickException(f"configuration error: {exc}") from None
    runtime = registry.by_name.get(name)
    if runtime is None:
        known = ", ".join(sorted(registry.by_name)) or "none"
        raise click.ClickException(f"no account named {name!r} (accounts: {known})")
    ok = _run(
        _accounts_test(
            runtime.adapter,
            runtime.account.secret_key,
            number,
            text,
            wait_s,
            runtime.scrub,
            runtime.account.sender if sender is None else sender,
        )
    )
    if not ok:
        sys.exit(1)


async def _accounts_test(
    adapter: Any,
    secret_key: str,
    number: str,
    text: str,
    wait_s: float,
    scrub: Callable[[str], str],
    sender: str = "",
) -> bool:
    import time

    from mta.contract import (
        Invalid,
        SmsMessage,
        SmsReportRequest,
        SmsSendRequest,
        normalise_number,
    )

    passed = True

    def line(ok: bool | None, what: str, detail: str = "") -> None:
        nonlocal passed
        mark = "PASS" if ok else ("SKIP" if ok is None else "FAIL")
        passed = passed and ok is not False
        detail = " ".join(scrub(detail).split())  # one line, no secret in any encoding
        click.echo(f"{mark:<5} {what}" + (f": {detail}" if detail else ""))

    try:
        for method in ("test_connection", "test_credentials", "test_proxy"):
            probe = getattr(adapter, method, None)
            if probe is None:
                line(None, method, "not implemented by this adapter")
                continue
            try:
                line(bool(await probe()), method)
            except Exception as exc:
                line(False, method, getattr(exc, "detail", None) or repr(exc))
        try:
            logged_in = bool(await adapter.login(secret_key))
            line(logged_in, "login", "" if logged_in else "NOK: check secret_key and credentials")
        except Exception as exc:
            logged_in = False
            line(False, "login", getattr(exc, "detail", None) or repr(exc))
        if not number:
            return passed
        if not logged_in:
            line(False, "send", "skipped: login failed")
            return False
        try:
            digits = normalise_number(number, False)
        except Invalid as exc:
            line(False, "send", str(exc))
            return False
        try:
            response = await adapter.send(SmsSendRequest([SmsMessage(digits, text, sender=sender)]))
        except Exception as exc:
            line(False, "send", getattr(exc, "detail", None) or repr(exc))
            return False
        sent_from = f" from {sender!r}" if sender else " without a sender"
        result = response.results[0] if response.results else None
        if result is None or result.apiStatus.value != "OK":
            line(
                False,
                "send",
                f"{result.partnerStatus} {result.partnerDetail}{sent_from}"
                if result
                else "no result",
            )
            return False
        line(True, "send", f"accepted{sent_from}, partner id {result.partnerMessageId}")
        deadline = time.monotonic() + wait_s
        status = "WAITING"
        while time.monotonic() < deadline:
            try:
                answer = await adapter.report(SmsReportRequest("", [result.partnerMessageId]))
            except Exception as exc:
                line(False, "report", getattr(exc, "detail", None) or repr(exc))
                return False
            for item in answer.results:
                if item.partnerMessageId == result.partnerMessageId:
                    status = item.apiStatus.value
            if status != "WAITING":
                break
            await asyncio.sleep(1.0)
        if status == "WAITING":
            line(
                None,
                "report",
                f"no final state within {wait_s:g} s (partners that push "
                "receipts report through mta http)",
            )
        else:
            line(status == "DELIVERED", "report", status)
        return passed
    finally:
        await adapter.destroy()


@main.command()
@settings_options
@click.option("--vhost", default="/", show_default=True, help="Virtual host of the definitions.")
def topology(settings: Settings, vhost: str) -> None:
    """Print the RabbitMQ topology as a definitions document (rabbitmqctl import_definitions).

    Every process declares the same topology at start; this is for brokers that are
    provisioned ahead (deploy/rabbitmq/definitions.json is this output for prefix mta).
    """
    from mta.topology import Topology

    doc = Topology(settings.prefix).definitions(vhost)
    click.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())


@main.command()
@settings_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable.")
def status(settings: Settings, as_json: bool) -> None:
    """Queue depths and Redis state: pending, due now, held, outbox."""
    _run(_status(settings, as_json))


async def _status(settings: Settings, as_json: bool) -> None:
    import aio_pika

    from mta.store import Store
    from mta.topology import Topology

    topology = Topology(settings.prefix)
    store = Store.connect(settings.redis_url, settings.prefix)
    connection = await aio_pika.connect(settings.amqp_url)
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


@main.command()
@settings_options
@click.option(
    "-n", "--messages", "total", default=100_000, show_default=True, help="Messages to publish."
)
@click.option("-b", "--batch", "batch", default=100, show_default=True, help="Messages per batch.")
@click.option(
    "--report-delay-s",
    default=1.0,
    show_default=True,
    help="Simulator: when the final state is known.",
)
@click.option("--workers", default=1, show_default=True, help="Worker processes.")
@click.option("--reporters", default=1, show_default=True, help="Reporter processes.")
@click.option(
    "--rate",
    default=0.0,
    show_default=True,
    help="Publish at this many messages/s (0 = as fast as possible); paced runs "
    "measure latency without a backlog.",
)
@click.option(
    "--push/--poll",
    default=False,
    show_default=True,
    help="Simulator pushes each final as a receipt (as an SMSC or a webhook does) instead of "
    "answering Report polls.",
)
def bench(
    settings: Settings,
    total: int,
    batch: int,
    report_delay_s: float,
    workers: int,
    reporters: int,
    rate: float,
    push: bool,
) -> None:
    """Measure the pipeline: publish N messages through worker and reporter processes.

    Starts its own worker(s) and reporter(s) on a fresh prefix with the simulator (latency 0),
    prints publish rate, messages/s into the adapter, finals/s, latencies, CPU per 1,000
    messages and Redis bytes per pending message, then cleans up. A benchmark, not a test.
    """
    from mta.bench import BenchConfig, run_bench

    _logging(False)
    config = BenchConfig(
        total=total,
        batch=batch,
        report_delay_s=report_delay_s,
        workers=workers,
        reporters=reporters,
        rate=rate,
        push=push,
    )
    report = _run(run_bench(settings, config))
    click.echo(report)


if __name__ == "__main__":  # pragma: no cover
    main()
