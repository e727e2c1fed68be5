"""No secret in any form: the redaction function per encoding, and every built-in adapter
against a real "secret-echo partner" that answers each request with its whole echo."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from mta.adapters.clickatell import ClickatellAdapter
from mta.adapters.http_bridge import HttpBridgeAdapter
from mta.adapters.infobip import InfobipAdapter
from mta.adapters.smpp import SmppAdapter
from mta.adapters.twilio import TwilioAdapter
from mta.adapters.vonage import VonageAdapter

from mta.adapter import AdapterContext, ReceiptSink
from mta.config import Account
from mta.contract import SmsMessage, SmsReportRequest, SmsResponse, SmsSendRequest
from mta.redact import MASK, redact, redact_credentials, redactor
from mta.registry import AccountRuntime
from tests.conftest import mta_command
from tests.smsc import TestSmsc

# --- what must never show, in any encoding ---------------------------------------------------


def b64(text: str | bytes) -> str:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return base64.b64encode(data).decode("ascii")


def b64_cores(data: bytes) -> set[str]:
    """Runs of base64 characters that every base64 text containing ``data`` contains (one per
    alignment of ``data`` to the 3-byte groups), standard and URL-safe alphabets."""
    runs: set[str] = set()
    for offset in range(3):
        text = b64(b"\0" * offset + data)
        first = (8 * offset + 5) // 6
        last = 8 * (offset + len(data)) // 6
        run = text[first:last]
        if len(run) >= 6:
            runs |= {run, run.replace("+", "-").replace("/", "_")}
    return runs


def forms(secret: str, users: Iterable[str] = ()) -> set[str]:
    """Every form of ``secret`` a leak could take: plain, percent- and form-encoded,
    JSON-escaped (once and twice), base64 alone, in ``user:secret`` and behind a prefix (any
    alignment), base64 of that base64, and any 8 characters of it in a row."""
    texts = {secret, quote(secret, safe=""), quote(secret), quote_plus(secret)}
    texts |= {json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}
    texts.add(json.dumps(json.dumps(secret))[3:-3])
    found = set(texts)
    for text in {secret, quote_plus(secret), quote(secret, safe="")}:
        for core in b64_cores(text.encode("utf-8")):
            found.add(core)
            found |= b64_cores(core.encode("ascii"))
    for user in users:
        found.add(b64(f"{user}:{secret}").rstrip("="))
    if len(secret) >= 10:
        found |= {secret[i : i + 8] for i in range(len(secret) - 7)}
    return {f for f in found if len(f) >= 4}


def leaks(text: str, forbidden: set[str]) -> list[str]:
    return sorted(f for f in forbidden if f in text)


# --- the redaction function, encoding by encoding --------------------------------------------

ODD = 'Odd "sec"+/ré\\t 42&='


@pytest.mark.parametrize(
    "encoded",
    [
        ODD,
        quote(ODD, safe=""),
        quote(ODD),
        quote_plus(ODD),
        re.sub("%[0-9A-F]{2}", lambda m: m.group().lower(), quote(ODD, safe="")),  # %xx
        quote(quote(ODD, safe=""), safe=""),  # percent-encoded twice
        json.dumps(ODD)[1:-1],
        json.dumps(ODD, ensure_ascii=False)[1:-1],
        json.dumps(json.dumps(ODD))[1:-1],  # JSON inside a JSON string
        json.dumps(ODD).replace("/", "\\/")[1:-1],  # encoders that escape '/'
        b64(ODD),
        b64(ODD).rstrip("="),
        base64.urlsafe_b64encode(ODD.encode()).decode(),
        b64(f"someuser:{ODD}"),
        b64(f"App {ODD}"),  # the secret at another alignment, behind a prefix
        b64(f"xy{ODD}tail"),
        quote(b64(f"u:{ODD}"), safe=""),  # base64 then percent-encoded
        json.dumps(b64(f"u:{ODD}")),
        b64("Basic " + b64(f"u:{ODD}")),  # base64 of an Authorization: Basic value
        b64(quote_plus(ODD)),  # base64 of a form body
    ],
)
def test_redact_masks_every_encoding_of_a_secret(encoded: str) -> None:
    text = f"before {encoded} after"
    out = redact(text, [ODD])
    assert out.startswith("before ") and out.endswith(" after"), out
    assert MASK in out
    assert not leaks(out, forms(ODD, ["someuser", "u"])), out


def test_redact_leaves_other_text_and_short_secrets_alone() -> None:
    text = "HTTP 400: message 12345 rejected (code 21211); ok"
    assert redact(text, ["ok", "zz-not-there-zz"]) == text
    assert redact("", ["secret"]) == ""
    assert redactor(["abcdef"]) is redactor(["abcdef"]), "built once per set of secrets"
    assert "abcdef" not in repr(redactor(["abcdef"]))


def test_short_secret_is_masked_in_a_base64_pair_with_its_user() -> None:
    header = "Proxy-Auth: " + b64("px-user:pw")
    assert b64("px-user:pw") not in redact(header, ["pw"], ["px-user"])


def test_two_secrets_in_one_base64_pair_and_overlapping_secrets() -> None:
    sid, token = "AC0123456789abcdef", "tok-en-4242"
    out = redact(f"Basic {b64(f'{sid}:{token}')} and {sid}{token}", [sid, token])
    assert out == f"Basic {MASK} and {MASK}"


@pytest.mark.parametrize(
    ("text", "gone", "kept"),
    [
        ("Authorization: Basic " + b64("user:pw"), b64("user:pw"), "Authorization: Basic ***"),
        ("authorization: App key-123", "key-123", "authorization: App ***"),
        ('{"Authorization": "rawkey99"}', "rawkey99", '"Authorization": "***"'),
        ("proxy-authorization=Basic%20abcDEF12", "abcDEF12", "proxy-authorization="),
        ("see Bearer eyJhbGciOi.payload.sig", "eyJhbGciOi", "Bearer ***"),
        ("basic " + b64("a:b"), b64("a:b"), "basic ***"),
        ("amqp://guest:Gu3st-pw@127.0.0.1:5672/", "Gu3st-pw", "amqp://guest:***@127.0.0.1"),
        ("http://u:p@ss@proxy:3128/x", "p@ss", "http://u:***@proxy:3128/x"),
        ("http%3A%2F%2Fu%3Apw%2540x%40proxy%3A3128", "pw%2540x", "%3A***%40proxy"),
        ("GET /balance?api_key=k1&api_secret=s3cr3t", "s3cr3t", "api_secret=***"),
        ('{"password": "hunter22", "user": "bob"}', "hunter22", '"user": "bob"'),
    ],
)
def test_credentials_are_masked_whatever_the_secrets(text: str, gone: str, kept: str) -> None:
    out = redact_credentials(text)
    assert gone not in out and kept in out, out


@pytest.mark.parametrize(
    "text",
    [
        "missing or wrong 'Authorization: Bearer' token",
        "Basic authentication failed; the bearer of bad news",
        "http://host:8080/path@x and mailto:someone@example.com",
        "token expired (code 20003)",
    ],
)
def test_prose_is_not_taken_for_credentials(text: str) -> None:
    assert redact_credentials(text) == text


def test_account_runtime_scrub_masks_every_secret_of_the_account() -> None:
    key, proxy_pw = 'Acc-Secret "key" 9/+', "Pr0xy pw/+"
    account = Account(
        id=3,
        name="ib-scrub",
        adapter="infobip",
        secret_key="mmp-secret-key-77",
        options={
            **{o.name: o.default for o in InfobipAdapter.meta.options},
            "api_key": key,
            "proxy_username": "px-u",
            "proxy_password": proxy_pw,
        },
        secret_options=frozenset(o.name for o in InfobipAdapter.meta.options if o.secret),
    )
    runtime = AccountRuntime(account, InfobipAdapter(account.options))
    text = " | ".join(
        [
            "App " + key,
            quote_plus(key),
            json.dumps({"k": key}),
            b64("App " + key),
            b64("px-u:" + proxy_pw),
            "secretKey=" + quote("mmp-secret-key-77"),
            b64("mmp-secret-key-77"),
        ]
    )
    out = runtime.scrub(text)
    for secret in (key, proxy_pw, "mmp-secret-key-77"):
        assert not leaks(out, forms(secret, ["px-u"])), out


# --- the secret-echo partner -----------------------------------------------------------------

PIECES = (
    "all",
    "target",
    "headers",
    "authorization",
    "authorization-b64",
    "proxy-authorization",
    "proxy-authorization-b64",
    "body",
    "body-json",
    "body-b64",
)
KINDS = {400: "permanent", 401: "auth", 500: "transient", 200: "permanent"}


class EchoPartner:
    """An HTTP server on 127.0.0.1 (also usable as a forward proxy) that answers every request
    with ``status`` and a body echoing ``piece`` of the request, as text or inside the JSON
    error fields the adapters read. It records the credentials it was sent."""

    def __init__(self) -> None:
        self.status = 400
        self.piece = "all"
        self.fmt = "text"
        self.credentials: set[str] = set()  # every Authorization / Proxy-Authorization value
        self.requests = 0
        self.server: asyncio.AbstractServer | None = None

    def echo(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes) -> str:
        named = {k.lower(): v for k, v in headers}
        auth, proxy_auth = named.get("authorization", ""), named.get("proxy-authorization", "")
        text = body.decode("utf-8", "replace")
        parts = {
            "target": f"{method} {target}",
            "headers": "\r\n".join(f"{k}: {v}" for k, v in headers),
            "authorization": auth,
            "authorization-b64": b64(auth),
            "proxy-authorization": proxy_auth,
            "proxy-authorization-b64": b64(proxy_auth),
            "body": text,
            "body-json": json.dumps(text),
            "body-b64": b64(body),
        }
        if self.piece == "all":
            return "\n".join(parts.values())
        return parts[self.piece]

    def render(self, echo: str) -> bytes:
        if self.fmt == "text":
            return echo.encode("utf-8")
        entry = {"status": echo, "error-text": echo, "to": "905551112233", "accepted": False}
        entry["error"] = {"code": echo, "description": echo}
        doc = {
            "code": 20003,
            "message": echo,
            "more_info": echo,
            "requestError": {"serviceException": {"messageId": "E400", "text": echo}},
            "errorCode": echo,
            "description": echo,
            "error": {"kind": KINDS[self.status], "detail": echo, "code": echo},
            "messages": [entry],
            "results": echo,
            "ok": echo,
            "sid": "",
        }
        return json.dumps(doc).encode("utf-8")

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = [tuple(x.split(": ", 1)) for x in lines[1:] if ": " in x]
                pairs = [(k, v) for k, v in headers]
                length = int(next((v for k, v in pairs if k.lower() == "content-length"), "0"))
                body = await reader.readexactly(length) if length else b""
                for k, v in pairs:
                    if k.lower() in ("authorization", "proxy-authorization"):
                        self.credentials.add(v)
                self.requests += 1
                payload = self.render(self.echo(method, target, pairs, body))
                kind = "application/json" if self.fmt == "json" else "text/plain"
                writer.write(
                    f"HTTP/1.1 {self.status} Echo\r\nContent-Type: {kind}; charset=utf-8\r\n"
                    f"Content-Length: {len(payload)}\r\n\r\n".encode("latin-1")
                    + (payload if method != "HEAD" else b"")
                )
                await writer.drain()
        finally:
            writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def partner() -> AsyncIterator[tuple[EchoPartner, str]]:
    echo = EchoPartner()
    async with echo as url:
        yield echo, url


PX_USER, PX_PASS = "px-user-77", 'Px-pass+/ 9"q'
SECRET_KEY = 'mmp "secret" ké/1\\x'
ADAPTERS: dict[str, tuple[type[Any], dict[str, Any]]] = {
    "infobip": (
        InfobipAdapter,
        {"api_key": 'ib-Key+/"x 4217', "webhook_token": "ib-hook&tok=9/+"},
    ),
    "twilio": (
        TwilioAdapter,
        {"account_sid": "AC" + "0f3e9a7b" * 4, "auth_token": 'tw-tok"+/ 5521'},
    ),
    "clickatell": (
        ClickatellAdapter,
        {"api_key": 'ck-Key +/"=8832', "webhook_token": "ck-hook-tok-6610"},
    ),
    "vonage": (
        VonageAdapter,
        {"api_key": "vo-key-3391", "api_secret": 'vo sec+/&=é"9', "signature_secret": "vo-sig-77"},
    ),
    "http-bridge": (HttpBridgeAdapter, {"token": 'br-tok+/ 7"z1'}),
}


def make_account(name: str, partner_url: str, via_proxy: bool) -> tuple[Account, Any]:
    cls, secrets = ADAPTERS[name]
    options = {o.name: o.default for o in cls.meta.options}
    options.update(secrets, proxy_username=PX_USER, proxy_password=PX_PASS)
    options["callback_base_url"] = "http://mta.example"
    if via_proxy:  # every request goes to the echo partner as a forward proxy
        options.update(url="http://partner.example", proxy_url=partner_url)
    else:
        options["url"] = partner_url
    account = Account(
        id=5,
        name=f"{name}-echo",
        adapter=name,
        secret_key=SECRET_KEY,
        options=options,
        secret_options=frozenset(o.name for o in cls.meta.options if o.secret),
    )
    adapter = cls(options, AdapterContext(account.name, 5, ReceiptSink(account.name)))
    return account, adapter


def outcome_texts(outcome: Any) -> list[str]:
    """Every text an outcome shows: results' fields, or an exception's str, repr, detail."""
    if isinstance(outcome, BaseException):
        return [str(outcome), repr(outcome), str(getattr(outcome, "detail", ""))]
    if isinstance(outcome, SmsResponse):
        return [outcome.partnerPacketId] + [
            f"{r.partnerMessageId} {r.partnerStatus} {r.partnerDetail} {r.smsOperator}"
            for r in outcome.results
        ]
    return [repr(outcome)]


async def exercise(account: Account, adapter: Any) -> list[str]:
    """Login (also through the registry's AccountRuntime), the probes, Send and Report."""
    texts: list[str] = []
    calls = [
        lambda: adapter.login(SECRET_KEY),
        adapter.test_credentials,
        adapter.test_connection,
        adapter.test_proxy,
        lambda: adapter.send(
            SmsSendRequest([SmsMessage("905551112233", "hello", sender="MTA", smsType="B|c-1")])
        ),
        lambda: adapter.report(SmsReportRequest("", ["SM0123456789abcdef"])),
    ]
    for call in calls:
        try:
            outcome: Any = await call()
        except Exception as exc:
            outcome = exc
        texts.extend(outcome_texts(outcome))
    runtime = AccountRuntime(account, adapter)
    await runtime.ensure_login()
    texts.append(runtime.detail)
    return texts


def forbidden(account: Account, partner: EchoPartner) -> set[str]:
    users = {PX_USER, str(account.options.get("account_sid") or "")} - {""}
    secrets = {account.secret_key} | {
        v for k, v in account.options.items() if k in account.secret_options and v
    }
    found: set[str] = set()
    for secret in secrets:
        found |= forms(secret, users)
    for value in partner.credentials:  # what went over the wire, as the partner saw it
        credential = value.split(" ", 1)[-1]
        found |= {credential, b64(value).rstrip("="), b64(credential).rstrip("=")}
    return {f for f in found if len(f) >= 6}


@pytest.mark.parametrize("via_proxy", [False, True], ids=["direct", "via-proxy"])
@pytest.mark.parametrize("name", sorted(ADAPTERS))
async def test_no_adapter_shows_a_secret_the_partner_echoes(
    name: str,
    via_proxy: bool,
    partner: tuple[EchoPartner, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    echo, url = partner
    caplog.set_level(logging.DEBUG)
    account, adapter = make_account(name, url, via_proxy)
    texts: list[str] = []
    try:
        for status in (400, 401, 500, 200):
            for fmt in ("text", "json"):
                for piece in PIECES:
                    echo.status, echo.fmt, echo.piece = status, fmt, piece
                    texts.extend(await exercise(account, adapter))
    finally:
        await adapter.destroy()
    assert echo.requests > 100, "the adapter talked to the echo partner"
    if name != "vonage":  # Vonage's credentials go in the query and the form body
        assert echo.credentials, "credentials went over the wire (so they could be echoed)"
    if via_proxy:
        assert any(c == "Basic " + b64(f"{PX_USER}:{PX_PASS}") for c in echo.credentials)
    bad = forbidden(account, echo)
    shown = "\n".join(texts)
    assert MASK in shown, "the echoed credentials reached the details, masked"
    assert not leaks(shown, bad), [t for t in texts if leaks(t, bad)][:3]
    logged = "\n".join(
        [r.getMessage() for r in caplog.records] + [r.exc_text or "" for r in caplog.records]
    )
    assert not leaks(logged + caplog.text, bad), leaks(logged + caplog.text, bad)


async def test_a_proxy_password_never_shows_when_the_proxy_is_unreachable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    options = {o.name: o.default for o in InfobipAdapter.meta.options}
    options.update(
        api_key="ib-key-0001",
        url="http://partner.example",
        proxy_url="http://127.0.0.1:1",
        proxy_username=PX_USER,
        proxy_password=PX_PASS,
    )
    adapter = InfobipAdapter(options, AdapterContext("ib-px", 1))
    texts: list[str] = []
    for call in (adapter.test_proxy, adapter.test_connection, lambda: adapter.login("")):
        try:
            texts.extend(outcome_texts(await call()))
        except Exception as exc:
            texts.extend(outcome_texts(exc))
    await adapter.destroy()
    bad = forms(PX_PASS, [PX_USER]) | {b64(f"{PX_USER}:{PX_PASS}")}
    assert not leaks("\n".join(texts) + caplog.text, bad)


# --- smpp: the bind password --------------------------------------------------------------------

SMPP_PW = "Pw+/9 x"


async def test_smpp_password_never_shows_on_a_bind_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    smsc = TestSmsc({"acct": "right-pw"})
    await smsc.start()
    texts: list[str] = []
    try:
        for system_id, port in (("acct", smsc.port), ("nobody", smsc.port), ("acct", 1)):
            options = {o.name: o.default for o in SmppAdapter.meta.options}
            options.update(
                host="127.0.0.1",
                port=port,
                system_id=system_id,
                password=SMPP_PW,
                reconnect_s=0.05,
                response_timeout_s=2.0,
            )
            adapter = SmppAdapter(options, AdapterContext("smpp-pw", 4, ReceiptSink("smpp-pw")))
            account = Account(
                id=4,
                name="smpp-pw",
                adapter="smpp",
                options=options,
                secret_options=frozenset({"password"}),
            )
            for call in (adapter.test_credentials, lambda a=adapter: a.login("")):
                try:
                    texts.extend(outcome_texts(await call()))
                except Exception as exc:
                    texts.extend(outcome_texts(exc))
            runtime = AccountRuntime(account, adapter)
            await runtime.ensure_login()
            texts += [runtime.detail, repr(adapter)]
            await adapter.destroy()
    finally:
        await smsc.stop()
    assert any("ESME_RINVPASWD" in t or "refused" in t for t in [*texts, caplog.text])
    bad = forms(SMPP_PW, ["acct", "nobody"])
    assert not leaks("\n".join(texts) + "\n" + caplog.text, bad)


# --- mta accounts test ----------------------------------------------------------------------------


@pytest.mark.parametrize("piece", ["all", "authorization-b64", "target"])
async def test_accounts_test_output_is_scrubbed(
    partner: tuple[EchoPartner, str], tmp_path: Path, piece: str
) -> None:
    echo, url = partner
    echo.status, echo.piece, echo.fmt = 400, piece, "text"
    key, hook = ADAPTERS["infobip"][1]["api_key"], ADAPTERS["infobip"][1]["webhook_token"]
    path = tmp_path / "accounts.toml"
    path.write_text(
        '[[account]]\nid = 1\nname = "ib-echo"\nadapter = "infobip"\n'
        'secret_key = "${T_SECRET_KEY}"\n[account.options]\n'
        f'url = "{url}"\napi_key = "${{T_API_KEY}}"\nwebhook_token = "${{T_HOOK}}"\n'
        'proxy_username = "px-user-77"\nproxy_password = "${T_PX_PASS}"\n',
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MTA_")}
    env.update(
        MTA_ACCOUNTS=str(path),
        T_SECRET_KEY=SECRET_KEY,
        T_API_KEY=key,
        T_HOOK=hook,
        T_PX_PASS=PX_PASS,
    )
    proc = await asyncio.create_subprocess_exec(
        *mta_command("accounts", "test", "ib-echo"),
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    output = out.decode()
    assert proc.returncode == 1, output  # login failed: HTTP 400
    assert "FAIL  login" in output and "HTTP 400" in output, output
    assert len(output.splitlines()) == 4, output  # one line per check
    bad: set[str] = set()
    for secret in (key, hook, PX_PASS, SECRET_KEY):
        bad |= forms(secret, [PX_USER])
    for value in echo.credentials:
        bad |= {value.split(" ", 1)[-1], b64(value).rstrip("=")}
    assert not leaks(output, {b for b in bad if len(b) >= 6}), output
