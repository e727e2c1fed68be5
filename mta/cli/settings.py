"""Settings flags of the ``mta`` commands: ``_SETTINGS`` is the single list of them (flag,
MTA_* variable, :class:`~mta.config.Settings` field, type, help); each command declares the
fields it uses with :func:`settings_options`, so its ``--help`` shows only those."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar
from urllib.parse import urlsplit

import click

from mta.config import LOG_FORMATS, LOG_LEVELS, ConfigError, InFlightPolicy, Settings

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
    (
        "--metrics-listen",
        "MTA_METRICS_LISTEN",
        "metrics_listen",
        str,
        "HOST:PORT serving /metrics (Prometheus), /healthz and /readyz; empty = off.",
    ),
    (
        "--log-format",
        "MTA_LOG_FORMAT",
        "log_format",
        click.Choice(LOG_FORMATS),
        "Log lines as text or as one JSON object per line.",
    ),
    (
        "--log-level",
        "MTA_LOG_LEVEL",
        "log_level",
        click.Choice(LOG_LEVELS, case_sensitive=False),
        "Lowest level logged (-v means DEBUG).",
    ),
]

#: Every Settings field of ``_SETTINGS``: the role commands (run, worker, reporter, http,
#: smpp-server) take them all, so an entry added to the list reaches them without more ado.
EVERY_SETTING: tuple[str, ...] = tuple(name for _, _, name, _, _ in _SETTINGS)


def settings_options(*fields: str) -> Callable[[F], F]:
    """Add the named settings (Settings field names, e.g. ``"amqp_url", "prefix"``) as flags
    with their MTA_* variables, in ``_SETTINGS`` order, and pass ``settings=Settings(...)``
    (the fields not named keep their defaults). An unknown name is an error at import.

    Errors meaning RabbitMQ or Redis cannot be reached become one line (:func:`_unreachable`).
    """
    known = {name: entry for entry in _SETTINGS for name in (entry[2],)}
    unknown = [name for name in fields if name not in known]
    if unknown or not fields:
        raise ValueError(
            f"settings_options: unknown setting(s) {', '.join(map(repr, unknown)) or '(none)'};"
            f" known: {', '.join(known)}"
        )
    chosen = [entry for entry in _SETTINGS if entry[2] in fields]

    def decorate(func: F) -> F:
        defaults = Settings()

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for _, _, name, _, _ in chosen}
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

        for flag, env, name, kind, text in reversed(chosen):
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

    return decorate


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
