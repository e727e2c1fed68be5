"""The shared HTTP base maps partner answers to error kinds, over a real loopback socket."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest
from mta.adapters.httpbase import HTTP_OPTIONS, HttpAdapter, retry_after_s
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mta.adapter import (
    AdapterContext,
    AdapterMeta,
    AuthError,
    OptionSpec,
    PermanentError,
    ThrottledError,
    TransientError,
)
from tests.httpserver import serve


class Probe(HttpAdapter):
    meta: ClassVar[AdapterMeta] = AdapterMeta(
        name="probe", description="test", options=HTTP_OPTIONS, default_url="http://unused"
    )

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": "Key s3cret"}


async def answer(request: Request) -> Response:
    code = int(request.path_params["code"])
    if code == 999:
        await asyncio.sleep(2)
        code = 200
    headers = {"Retry-After": "7"} if code == 429 else {}
    seen = request.headers.get("authorization", "")
    return JSONResponse({"error": f"code {code}", "auth": seen}, status_code=code, headers=headers)


APP = Starlette(routes=[Route("/status/{code}", answer, methods=["GET", "HEAD"])])


def options(**changes: Any) -> dict[str, Any]:
    values = {o.name: o.default for o in HTTP_OPTIONS}
    values.update(changes)
    return values


async def test_statuses_map_to_error_kinds() -> None:
    async with serve(APP) as url:
        adapter = Probe(options(url=url, timeout_s=0.5), AdapterContext("acct", 1))
        ok = await adapter.call("GET", "/status/200")
        assert ok.json()["auth"] == "Key s3cret"
        with pytest.raises(ThrottledError) as throttled:
            await adapter.call("GET", "/status/429")
        assert throttled.value.retry_after == 7.0
        with pytest.raises(TransientError) as server_error:
            await adapter.call("GET", "/status/503")
        assert "HTTP 503" in server_error.value.detail and "code 503" in server_error.value.detail
        with pytest.raises(AuthError):
            await adapter.call("GET", "/status/401")
        with pytest.raises(PermanentError) as bad:
            await adapter.call("GET", "/status/400")
        assert not isinstance(bad.value, AuthError) and "code 400" in bad.value.detail
        with pytest.raises(TransientError, match="timed out"):
            await adapter.call("GET", "/status/999")
        assert await adapter.test_connection()
        assert await adapter.test_proxy()  # no proxy configured
        assert "s3cret" not in repr(adapter)
        await adapter.destroy()


async def test_unreachable_partner_is_transient_and_connection_test_fails() -> None:
    async with serve(APP) as url:
        dead = url  # the port is closed once the server stops
    adapter = Probe(options(url=dead, timeout_s=0.5))
    with pytest.raises(TransientError):
        await adapter.call("GET", "/status/200")
    assert not await adapter.test_connection()
    await adapter.destroy()


def test_callback_url_names_the_account() -> None:
    adapter = Probe(
        options(callback_base_url="https://mta.example.com/"), AdapterContext("ib-1", 3)
    )
    assert adapter.callback_url == "https://mta.example.com/webhooks/ib-1"
    assert Probe(options()).callback_url is None


def test_retry_after_forms() -> None:
    assert retry_after_s("3") == 3.0
    assert retry_after_s(None) is None
    assert retry_after_s("garbage") is None
    assert 0 <= (retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") or 0) == 0


class ForwardProxy:
    """A minimal HTTP forward proxy on loopback that requires Basic proxy credentials."""

    def __init__(self, user: str, password: str) -> None:
        import base64

        self.expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.seen: list[tuple[str, str]] = []  # (request target, Proxy-Authorization)
        self.server: asyncio.AbstractServer | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        import httpx

        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            method, target, _ = head[0].split(" ", 2)
            headers = dict(line.split(": ", 1) for line in head[1:] if ": " in line)
            auth = next((v for k, v in headers.items() if k.lower() == "proxy-authorization"), "")
            self.seen.append((target, auth))
            if auth != self.expected:
                writer.write(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                    b"Content-Length: 0\r\nConnection: close\r\n\r\n"
                )
            else:
                forward = {
                    k: v
                    for k, v in headers.items()
                    if not k.lower().startswith("proxy-") and k.lower() != "host"
                }
                async with httpx.AsyncClient() as client:
                    upstream = await client.request(method, target, headers=forward)
                writer.write(
                    f"HTTP/1.1 {upstream.status_code} X\r\nContent-Length: "
                    f"{len(upstream.content)}\r\nConnection: close\r\n\r\n".encode()
                    + upstream.content
                )
            await writer.drain()
        finally:
            writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


async def test_requests_go_through_the_accounts_proxy_with_its_credentials() -> None:
    proxy = ForwardProxy("px-user", "px-pass-9")
    async with serve(APP) as url, proxy as proxy_url:
        adapter = Probe(
            options(
                url=url, proxy_url=proxy_url, proxy_username="px-user", proxy_password="px-pass-9"
            )
        )
        answer = await adapter.call("GET", "/status/200")
        assert answer.json()["auth"] == "Key s3cret"
        assert proxy.seen[-1][0] == f"{url}/status/200", "the request went through the proxy"
        assert proxy.seen[-1][1] == proxy.expected
        assert await adapter.test_proxy()
        await adapter.destroy()
        wrong = Probe(
            options(url=url, proxy_url=proxy_url, proxy_username="px-user", proxy_password="nope")
        )
        with pytest.raises(PermanentError, match="HTTP 407"):
            await wrong.call("GET", "/status/200")
        await wrong.destroy()
    dead = Probe(options(url="http://127.0.0.1:9", proxy_url=proxy_url))
    assert not await dead.test_proxy(), "the proxy is gone: the proxy test fails"
    await dead.destroy()


# --- secrets: masked in every encoding, before any shortening; no credentials in proxy_url ------

KEY = 'Key-Secret+/"42 x'


class Keyed(HttpAdapter):
    meta: ClassVar[AdapterMeta] = AdapterMeta(
        name="keyed",
        description="test",
        options=(*HTTP_OPTIONS, OptionSpec("api_key", str, secret=True, default="")),
        default_url="http://unused",
    )

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"App {self.options['api_key']}"}


async def echo_auth(request: Request) -> Response:
    """A 400 whose body echoes the Authorization header far into the text (past the 300
    characters a detail keeps), then again base64-encoded and form-encoded."""
    import base64
    from urllib.parse import quote_plus

    auth = request.headers.get("authorization", "")
    filler = "x" * int(request.path_params["at"])
    body = f"{filler} {auth} {base64.b64encode(auth.encode()).decode()} {quote_plus(auth)}"
    return Response(body, status_code=400)


ECHO = Starlette(routes=[Route("/echo/{at}", echo_auth)])


@pytest.mark.parametrize("at", [0, 270, 285, 292])
async def test_error_details_mask_every_encoding_and_are_scrubbed_before_shortening(
    at: int,
) -> None:
    import base64
    from urllib.parse import quote_plus

    async with serve(ECHO) as url:
        adapter = Keyed(options(url=url, api_key=KEY), AdapterContext("keyed-1", 1))
        with pytest.raises(PermanentError) as info:
            await adapter.call("GET", f"/echo/{at}")
        await adapter.destroy()
    detail = info.value.detail
    assert "keyed-1" in detail and "HTTP 400" in detail
    for form in (KEY, quote_plus(KEY), base64.b64encode(f"App {KEY}".encode()).decode()):
        assert form not in detail, detail
        for i in range(len(form) - 7):  # not even a cut part of it
            assert form[i : i + 8] not in detail, (form[i : i + 8], detail)


@pytest.mark.parametrize(
    "proxy_url",
    [
        "http://px-user:Pa55-word-9@proxy.example:3128",
        "ftp://px-user:Pa55-word-9@proxy.example:3128",
        "http://px-user:Pa55-word-9@proxy.example:port",
        "proxy.example:3128",
    ],
)
def test_a_bad_proxy_url_is_refused_at_construction_without_its_password(
    proxy_url: str,
) -> None:
    with pytest.raises(ValueError, match=r"probe account 'acct': option proxy_url") as info:
        Probe(options(proxy_url=proxy_url), AdapterContext("acct", 1))
    assert "Pa55-word-9" not in str(info.value)
