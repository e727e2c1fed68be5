"""Settings flags of the ``mta`` commands, made from :class:`~mta.config.Settings`: each field
is declared there once with its MTA_* variable and help (:func:`mta.config.setting`), and
``_SETTINGS`` lists them as (flag, variable, field, type, help); each command declares the
fields it uses with :func:`settings_options`, so its ``--help`` shows only those."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import typing
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar
from urllib.parse import urlsplit

import click

from mta.config import ConfigError, Settings

F = TypeVar("F", bound=Callable[..., Any])


def _declared() -> list[tuple[str, str, str, Any, str]]:
    """(flag, variable, Settings field, type, help) of every :class:`Settings` field, from
    its declaration (:func:`mta.config.setting`): the flag is ``--<field with dashes>``
    (``--x/--no-x`` for a bool), the type the field's (a :class:`click.Choice` when it has
    choices). A field declared without a variable and a help is an error at import."""
    hints = typing.get_type_hints(Settings)
    entries: list[tuple[str, str, str, Any, str]] = []
    for item in dataclasses.fields(Settings):
        meta = item.metadata
        if not meta.get("env") or not meta.get("help"):
            raise TypeError(
                f"Settings.{item.name}: declare it with mta.config.setting(default, "
                "'MTA_...', help) so it gets a variable and a flag"
            )
        flag = "--" + item.name.replace("_", "-")
        kind: Any = hints[item.name]
        if kind is bool:
            flag = f"{flag}/--no-{flag[2:]}"
        if meta.get("choices"):
            kind = click.Choice(meta["choices"], case_sensitive=meta.get("case_sensitive", True))
        entries.append((flag, meta["env"], item.name, kind, meta["help"]))
    return entries


#: (flag, variable, Settings field, type, help) of every setting, made from the
#: declarations of :class:`~mta.config.Settings` (one place per setting).
_SETTINGS: list[tuple[str, str, str, Any, str]] = _declared()

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
