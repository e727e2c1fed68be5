"""The role commands: ``mta run``, ``worker``, ``reporter``, ``http`` and ``smpp-server``.
They take every setting (:data:`~mta.cli.settings.EVERY_SETTING`)."""

from __future__ import annotations

from typing import Any

import click

from mta.cli.logs import _logging, _redact_logs
from mta.cli.settings import EVERY_SETTING, F, _run, settings_options
from mta.config import ConfigError, Settings


def _serve(
    settings: Settings,
    roles: tuple[str, ...],
    verbose: bool,
    listen: str = "127.0.0.1:8080",
    **smpp: Any,
) -> None:
    from mta.httpserver import parse_listen
    from mta.service import build_registry, serve

    _logging(verbose, settings)
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


@click.command()
@settings_options(*EVERY_SETTING)
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


@click.command("http")
@settings_options(*EVERY_SETTING)
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
    """Each :class:`~mta.smppserver.auth.SmppLimits` field as a flag of ``mta smpp-server``, with
    its ``MTA_SMPP_<NAME>`` variable (``--bind-timeout-s`` / ``MTA_SMPP_BIND_TIMEOUT_S``)."""
    import dataclasses

    from mta.smppserver.auth import LIMIT_HELP, SmppLimits

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


@click.command("smpp-server")
@settings_options(*EVERY_SETTING)
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
    from mta.smppserver.auth import SmppLimits

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


@click.command()
@settings_options(*EVERY_SETTING)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def worker(settings: Settings, verbose: bool) -> None:
    """Consume send batches and hand them to the adapters."""
    _serve(settings, ("worker",), verbose)


@click.command()
@settings_options(*EVERY_SETTING)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def reporter(settings: Settings, verbose: bool) -> None:
    """Poll partners for due messages and publish their finals."""
    _serve(settings, ("reporter",), verbose)
