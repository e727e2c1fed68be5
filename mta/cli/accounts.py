"""``mta adapters`` and ``mta accounts list|test``: what is installed and configured."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

import click
import orjson

from mta.cli.settings import _run, settings_options
from mta.config import MASK, ConfigError, Settings


@click.command()
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
            bounds = o.bounds()
            click.echo(
                f"  - {o.name}: {o.type.__name__}{default}"
                + (f" [{flags}]" if flags else "")
                + (f" {{{bounds}}}" if bounds else "")
                + f"  {o.description}"
            )


@click.group()
def accounts() -> None:
    """Inspect the accounts file."""


@accounts.command("list")
@settings_options("accounts")
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
@settings_options("accounts", "timezone")
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
