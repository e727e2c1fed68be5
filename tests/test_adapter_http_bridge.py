"""The http-bridge adapter against the example bridge service of examples/ over real sockets."""

from __future__ import annotations

import asyncio
import importlib.util
import re
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest
from mta.adapters.http_bridge import BRIDGE_OPTIONS, HttpBridgeAdapter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mta.adapter import (
    AdapterContext,
    AuthError,
    PermanentError,
    ReceiptMode,
    SendPattern,
    ThrottledError,
    TransientError,
)
from mta.config import MASK, ConfigError, load_accounts
from mta.contract import (
    REASON_RETRY,
    REASON_SENDER,
    ApiStatus,
    SmsMessage,
    SmsReportRequest,
    SmsSendRequest,
)
from mta.testing import assert_conformant, build
from tests.conftest import Env
from tests.httpserver import serve

EXAMPLE_PATH = Path(__file__).resolve().parents[1] / "examples" / "bridge_adapter.py"


def _load_example() -> ModuleType:
    """examples/ is not a package: load the example service from its path, as a user runs it."""
    spec = importlib.util.spec_from_file_location("bridge_adapter_example", EXAMPLE_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


example = _load_example()

SECRET_KEY = "key-0f9a8b7c"
TOKEN = "tok-5e4d3c2b1a"


def options(url: str, **changes: Any) -> dict[str, Any]:
    values = {o.name: o.default for o in BRIDGE_OPTIONS}
    values.update({"url": url, "timeout_s": 2.0, **changes})
    return values


def bridge(url: str, **changes: Any) -> HttpBridgeAdapter:
    return HttpBridgeAdapter(options(url, **changes), AdapterContext("bridge-1", 7))


def batch(*numbers: str) -> SmsSendRequest:
    return SmsSendRequest([SmsMessage(n, f"hello {n}", sender="ACME") for n in numbers])


@dataclass
class Seen:
    """What reached the service: (path, Authorization header or None, decoded body)."""

    calls: list[tuple[str, str | None, Any]] = field(default_factory=list)

    def wrap(self, app: Any) -> Callable[..., Awaitable[None]]:
        """An ASGI wrapper that records each request, then hands it to ``app`` unchanged."""

        async def recorded(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            chunks = []
            more = True
            while more:
                event = await receive()
                chunks.append(event.get("body", b""))
                more = event.get("more_body", False)
            body = b"".join(chunks)
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            self.calls.append((scope["path"], headers.get("authorization"), orjson.loads(body)))
            replayed = False

            async def replay() -> Any:
                nonlocal replayed
                if replayed:
                    return await receive()
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}

            await app(scope, replay, send)

        return recorded


async def fail_next(url: str, endpoint: str, kind: str, **extra: Any) -> None:
    """Ask the example service to fail its next call of ``endpoint`` (its test hook)."""
    import httpx

    async with httpx.AsyncClient() as client:
        body = {"endpoint": endpoint, "kind": kind, "count": 1, **extra}
        answer = await client.post(f"{url}/_control/fail", json=body)
        assert answer.status_code == 200, answer.text


# --- Login -------------------------------------------------------------------------------


async def test_login_ok_only_for_the_configured_secret_key() -> None:
    seen = Seen()
    app = example.create_app(secret_key=SECRET_KEY)
    async with serve(seen.wrap(app)) as url:
        adapter = bridge(url)
        assert await adapter.login(SECRET_KEY) is True
        assert await adapter.login("wrong-key") is False
        await adapter.destroy()
    assert seen.calls[0] == ("/login", None, {"secretKey": SECRET_KEY})
    assert seen.calls[1] == ("/login", None, {"secretKey": "wrong-key"})
    assert seen.calls[2] == ("/destroy", None, {})


async def test_login_refused_by_the_service_is_nok_and_unreachable_is_transient() -> None:
    app = example.create_app(secret_key=SECRET_KEY)
    async with serve(app) as url:
        adapter = bridge(url)
        await fail_next(url, "login", "auth", detail="token expired")
        assert await adapter.login(SECRET_KEY) is False
        await fail_next(url, "login", "transient")
        with pytest.raises(TransientError, match="POST /login"):
            await adapter.login(SECRET_KEY)
        await adapter.destroy()
    adapter = bridge(url)  # the port is closed now
    with pytest.raises(TransientError, match="cannot reach the bridge service"):
        await adapter.login(SECRET_KEY)
    await adapter.destroy()


# --- Send and Report ---------------------------------------------------------------------


async def test_send_forwards_the_batch_and_answers_results_one_to_one() -> None:
    seen = Seen()
    app = example.create_app(reject_prefix="999")
    async with serve(seen.wrap(app)) as url:
        adapter = bridge(url)
        request = batch("905330000001", "99912345678", "905330000003")
        response = await adapter.send(request)
        await adapter.destroy()
    path, _, body = seen.calls[0]
    assert path == "/send"
    mmp_fields = {f.name for f in fields(SmsMessage)}
    assert [set(m) for m in body["messages"]] == [mmp_fields] * 3
    assert [m["mobileNumber"] for m in body["messages"]] == [
        "905330000001",
        "99912345678",
        "905330000003",
    ]
    assert body["messages"][0]["sender"] == "ACME" and body["messages"][0]["smsType"] == "BULK"
    statuses = [r.apiStatus for r in response.results]
    assert statuses == [ApiStatus.OK, ApiStatus.FAIL, ApiStatus.OK]
    first, rejected, third = response.results
    assert first.partnerMessageId.startswith("ex-") and third.partnerMessageId.startswith("ex-")
    assert first.partnerMessageId != third.partnerMessageId
    assert first.partnerStatus == "ACCEPTED" and len(first.sendAt) == 12
    assert rejected.partnerStatus == "REJECTED"
    assert rejected.partnerDetail == "unknown subscriber 99912345678"
    assert set(app.state.partner.accepted) == {first.partnerMessageId, third.partnerMessageId}


async def test_report_answers_waiting_then_delivered_and_leaves_unknown_ids_out() -> None:
    seen = Seen()
    app = example.create_app(delivery_delay_s=0.3)
    async with serve(seen.wrap(app)) as url:
        adapter = bridge(url)
        sent = await adapter.send(batch("905330000001", "905330000002"))
        ids = [r.partnerMessageId for r in sent.results]
        early = await adapter.report(SmsReportRequest("", [*ids, "ex-unknown"]))
        await asyncio.sleep(0.4)
        late = await adapter.report(SmsReportRequest("", ids))
        await adapter.destroy()
    assert seen.calls[1] == (
        "/report",
        None,
        {"partnerPacketId": "", "messages": [*ids, "ex-unknown"]},
    )
    assert {r.partnerMessageId: r.apiStatus for r in early.results} == {
        ids[0]: ApiStatus.WAITING,
        ids[1]: ApiStatus.WAITING,
    }
    assert all(r.partnerStatus == "ENROUTE" for r in early.results)
    assert {r.partnerMessageId: r.apiStatus for r in late.results} == {
        ids[0]: ApiStatus.DELIVERED,
        ids[1]: ApiStatus.DELIVERED,
    }
    assert all(r.partnerStatus == "DELIVRD" and len(r.sendAt) == 12 for r in late.results)


# --- errors --------------------------------------------------------------------------------


async def test_each_error_kind_maps_to_its_adapter_error() -> None:
    app = example.create_app()
    async with serve(app) as url:
        adapter = bridge(url)
        request = batch("905330000001")

        await fail_next(url, "send", "transient", detail="partner link down")
        with pytest.raises(TransientError) as transient:
            await adapter.send(request)
        assert not isinstance(transient.value, ThrottledError)
        assert "account 'bridge-1'" in transient.value.detail
        assert "POST /send" in transient.value.detail
        assert "transient error" in transient.value.detail
        assert (
            "HTTP 503" in transient.value.detail and "partner link down" in transient.value.detail
        )

        await fail_next(url, "send", "throttled", retryAfter=3)
        with pytest.raises(ThrottledError) as throttled:
            await adapter.send(request)
        assert throttled.value.retry_after == 3.0

        await fail_next(url, "send", "permanent", detail="sender ACME not registered")
        with pytest.raises(PermanentError) as permanent:
            await adapter.send(request)
        assert not isinstance(permanent.value, AuthError)
        assert "sender ACME not registered" in permanent.value.detail

        await fail_next(url, "send", "auth", detail="partner refused our API key")
        with pytest.raises(AuthError, match="partner refused our API key"):
            await adapter.send(request)

        await fail_next(url, "report", "throttled", retryAfter=0.5)
        with pytest.raises(ThrottledError, match="POST /report") as report_throttled:
            await adapter.report(SmsReportRequest("", ["ex-1"]))
        assert report_throttled.value.retry_after == 0.5

        # nothing queued any more: the next call goes through
        assert (await adapter.send(request)).results[0].apiStatus == ApiStatus.OK
        await adapter.destroy()


def _canned(answers: dict[str, tuple[int, bytes, dict[str, str]]]) -> Starlette:
    """A broken bridge service: each path answers what the test put in ``answers``."""

    async def answer(request: Request) -> Response:
        status, body, headers = answers[request.url.path]
        return Response(body, status, headers, media_type="application/json")

    paths = ("/login", "/send", "/report", "/destroy")
    return Starlette(routes=[Route(p, answer, methods=["POST"]) for p in paths])


async def test_error_statuses_without_an_error_object_map_by_http_status() -> None:
    answers: dict[str, tuple[int, bytes, dict[str, str]]] = {}
    async with serve(_canned(answers)) as url:
        adapter = bridge(url)
        request = batch("905330000001")
        cases: list[tuple[int, bytes, dict[str, str], type[Exception]]] = [
            (502, b"<html>Bad Gateway</html>", {}, TransientError),
            (429, b"", {"Retry-After": "4"}, ThrottledError),
            (403, b"forbidden", {}, AuthError),
            (404, b"Not Found", {}, PermanentError),
            (400, b'{"error": {"kind": "fatal", "detail": "x"}}', {}, PermanentError),
        ]
        for status, body, headers, kind in cases:
            answers["/send"] = (status, body, headers)
            with pytest.raises(kind) as caught:
                await adapter.send(request)
            detail = str(caught.value)
            assert f"HTTP {status}" in detail and "without a valid error object" in detail
            if kind is PermanentError:
                assert not isinstance(caught.value, (AuthError, TransientError))
        assert "unknown error kind 'fatal'" in detail
        # the body's kind wins over the status; Retry-After fills in a missing retryAfter
        answers["/send"] = (
            400,
            b'{"error": {"kind": "throttled", "detail": "slow down"}}',
            {"Retry-After": "6"},
        )
        with pytest.raises(ThrottledError) as throttled:
            await adapter.send(request)
        assert throttled.value.retry_after == 6.0
        await adapter.destroy()


async def test_malformed_answers_are_permanent_and_name_the_endpoint() -> None:
    answers: dict[str, tuple[int, bytes, dict[str, str]]] = {}
    good = {"partnerMessageId": "p1", "apiStatus": "OK"}
    cases: list[tuple[str, Any, str]] = [
        ("/send", b"<html>ok</html>", "body is not JSON"),
        ("/send", [], "its JSON is list, not an SmsResponse object"),
        ("/send", {"partnerPacketId": "", "result": []}, "it has no 'results' list"),
        ("/send", {"partnerPacketId": 5, "results": []}, "partnerPacketId is int"),
        ("/send", {"results": [good, "p2"]}, "results[1] is str, not an object"),
        ("/send", {"results": [{"partnerMessageId": "p1", "apiStatus": "SENT"}]},
         "results[0].apiStatus is 'SENT', not one of OK, FAIL, DELIVERED, TIMEOUT, WAITING"),
        ("/send", {"results": [{"partnerMessageId": "p1"}]}, "results[0].apiStatus is None"),
        ("/report", {"results": [{"partnerMessageId": 17, "apiStatus": "DELIVERED"}]},
         "results[0].partnerMessageId is int, not a string"),
        ("/report", {"results": [{**good, "smsMessageCount": "2"}]},
         "results[0].smsMessageCount is '2', not an integer >= 0"),
        ("/login", {"ok": "yes"}, "ok is 'yes'"),
        ("/login", {"status": "ok"}, "ok is None"),
    ]  # fmt: skip
    async with serve(_canned(answers)) as url:
        adapter = bridge(url)
        for path, body, problem in cases:
            raw = body if isinstance(body, bytes) else orjson.dumps(body)
            answers[path] = (200, raw, {})
            with pytest.raises(PermanentError) as caught:
                if path == "/send":
                    await adapter.send(batch("905330000001"))
                elif path == "/report":
                    await adapter.report(SmsReportRequest("", ["p1"]))
                else:
                    await adapter.login(SECRET_KEY)
            detail = caught.value.detail
            assert not isinstance(caught.value, AuthError)
            assert f"POST {path}" in detail and "answered HTTP 200" in detail, detail
            assert problem in detail, detail
            assert "docs/adapters/http-bridge.md" in detail
        # nulls read as defaults, unknown fields are ignored
        answers["/report"] = (
            200,
            orjson.dumps(
                {
                    "partnerPacketId": None,
                    "results": [
                        {
                            "partnerMessageId": "p1",
                            "apiStatus": "TIMEOUT",
                            "partnerStatus": None,
                            "smsMessageCount": None,
                            "vendorExtra": {"x": 1},
                        }
                    ],
                    "elapsedMs": 3,
                }
            ),
            {},
        )
        response = await adapter.report(SmsReportRequest("", ["p1"]))
        assert response.partnerPacketId == ""
        (only,) = response.results
        assert (only.partnerMessageId, only.apiStatus, only.partnerStatus) == (
            "p1",
            ApiStatus.TIMEOUT,
            "",
        )
        assert only.smsMessageCount == 0
        await adapter.destroy()


async def test_timeout_is_transient() -> None:
    async def slow(request: Request) -> Response:
        await asyncio.sleep(1.0)
        return Response(b'{"results": []}', media_type="application/json")

    app = Starlette(routes=[Route("/send", slow, methods=["POST"])])
    async with serve(app) as url:
        adapter = bridge(url, timeout_s=0.2)
        with pytest.raises(TransientError, match=r"POST /send: no answer within 0\.2 s"):
            await adapter.send(batch("905330000001"))
        await adapter.destroy()


# --- credentials and secrets ------------------------------------------------------------


async def test_bearer_token_sent_when_configured_and_absent_otherwise() -> None:
    seen = Seen()
    app = example.create_app(secret_key=SECRET_KEY, token=TOKEN)
    async with serve(seen.wrap(app)) as url:
        with_token = bridge(url, token=TOKEN)
        assert await with_token.login(SECRET_KEY) is True
        assert (await with_token.send(batch("905330000001"))).results[0].apiStatus == ApiStatus.OK
        assert await with_token.test_credentials() is True
        await with_token.destroy()
        assert [auth for _, auth, _ in seen.calls] == [f"Bearer {TOKEN}"] * 4

        seen.calls.clear()
        without = bridge(url)
        assert await without.login(SECRET_KEY) is False  # the service refuses us: NOK
        with pytest.raises(AuthError, match="Bearer"):
            await without.send(batch("905330000001"))
        assert await without.test_credentials() is False
        await without.destroy()  # never logged in: no /destroy call
        assert [(path, auth) for path, auth, _ in seen.calls] == [
            ("/login", None),
            ("/send", None),
            ("/login", None),
        ]

        wrong = bridge(url, token="tok-wrong")
        assert await wrong.test_credentials() is False
        # test_credentials checks the token, not the secret key: a NOK login still proves it
        right = bridge(url, token=TOKEN)
        assert await right.login("not-the-key") is False
        assert await right.test_credentials() is True
        await wrong.destroy()
        await right.destroy()


async def test_secrets_never_appear_in_repr_or_error_details() -> None:
    async def echo(request: Request) -> Response:
        """A careless service that echoes what it got (token and secret key) in its errors."""
        body = (await request.body()).decode()
        auth = request.headers.get("authorization", "")
        detail = f"refused {auth} with {body}"
        error = {"error": {"kind": "permanent", "detail": detail}}
        return Response(orjson.dumps(error), 422, media_type="application/json")

    paths = ("/login", "/send")
    app = Starlette(routes=[Route(p, echo, methods=["POST"]) for p in paths])
    async with serve(app) as url:
        adapter = bridge(url, token=TOKEN)
        texts = [repr(adapter), str(adapter)]
        with pytest.raises(PermanentError) as login_error:
            await adapter.login(SECRET_KEY)
        with pytest.raises(PermanentError) as send_error:
            await adapter.send(batch("905330000001"))
        texts += [login_error.value.detail, str(login_error.value), send_error.value.detail]
        await adapter.destroy()
    assert "refused Bearer ***" in login_error.value.detail
    assert '{"secretKey":"***"}' in login_error.value.detail
    for text in texts:
        for secret in (TOKEN, SECRET_KEY):
            assert secret not in text, text
    with pytest.raises(ValueError, match="carries credentials") as userinfo:
        bridge("http://bridge-user:pw-9f8e7d6c@127.0.0.1:8090", token=TOKEN)
    assert "pw-9f8e7d6c" not in str(userinfo.value)


def test_meta_and_config_url_required_token_masked(tmp_path: Path) -> None:
    meta = HttpBridgeAdapter.meta
    assert (meta.pattern, meta.max_batch, meta.max_concurrency, meta.receipts) == (
        SendPattern.BATCH,
        100,
        8,
        ReceiptMode.PULL,
    )
    url_spec, token_spec = meta.option("url"), meta.option("token")
    assert url_spec is not None and url_spec.required and url_spec.default is None
    assert token_spec is not None and token_spec.secret and not token_spec.required
    assert meta.option("callback_base_url") is None

    path = tmp_path / "accounts.toml"
    path.write_text(
        '[[account]]\nid = 1\nname = "b"\nadapter = "http-bridge"\n'
        '[account.options]\ntoken = "t-123456"\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="url: required"):
        load_accounts(path, {"http-bridge": meta})
    path.write_text(
        '[[account]]\nid = 1\nname = "b"\nadapter = "http-bridge"\n'
        '[account.options]\nurl = "http://127.0.0.1:8090"\ntoken = "t-123456"\n',
        encoding="utf-8",
    )
    (account,) = load_accounts(path, {"http-bridge": meta})
    assert account.masked_options()["token"] == MASK
    assert "t-123456" not in repr(account)

    with pytest.raises(ValueError, match="'url' is required"):
        HttpBridgeAdapter(options(""))
    with pytest.raises(ValueError, match="http:// or https://"):
        HttpBridgeAdapter(options("ftp://example.com"))


async def test_destroy_posts_only_after_login_and_never_raises() -> None:
    app = example.create_app(secret_key=SECRET_KEY)
    async with serve(app) as url:
        idle = bridge(url)
        await idle.destroy()
        assert app.state.partner.calls.get("destroy", 0) == 0
        used = bridge(url)
        assert await used.login(SECRET_KEY)
        await used.destroy()
        assert app.state.partner.calls["destroy"] == 1
        gone = bridge(url)
        assert await gone.login(SECRET_KEY)
    await gone.destroy()  # the service is gone: logged, not raised


# --- end to end ------------------------------------------------------------------------------


async def test_end_to_end_through_the_pipeline(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_E2E_TOKEN", TOKEN)
    app = example.create_app(
        secret_key=SECRET_KEY,
        token=TOKEN,
        delivery_delay_s=0.3,
        reject_prefix="999",
        fail_next_sends=1,  # the worker retries the transient failure in place
    )
    async with serve(app) as url:
        env.accounts(
            f"""
[[account]]
id = 0
name = "bridge"
adapter = "http-bridge"
default = true
secret_key = "{SECRET_KEY}"
[account.options]
url = "{url}"
token = "${{BRIDGE_E2E_TOKEN}}"
timeout_s = 2.0
"""
        )
        tail = await env.tail()
        await env.start("worker", "reporter")
        numbers = ["905330000001", "99912345678", "905330000003"]
        batch_id = await env.publish(
            {"messages": [{"mobileNumber": n, "text": "hi", "sender": "ACME"} for n in numbers]}
        )
        finals = await tail.wait_finals(3, timeout=15)
    by_number = {r["mobileNumber"]: r for r in finals}
    assert len(finals) == 3 and set(by_number) == set(numbers)
    assert {r["messageId"] for r in finals} == {f"{batch_id}:{i}" for i in range(3)}
    assert by_number["905330000001"]["apiStatus"] == "DELIVERED"
    assert by_number["905330000003"]["apiStatus"] == "DELIVERED"
    assert by_number["905330000001"]["partnerStatus"] == "DELIVRD"
    assert by_number["905330000001"]["partnerMessageId"].startswith("ex-")
    rejected = by_number["99912345678"]
    assert rejected["apiStatus"] == "FAIL"
    assert rejected["partnerDetail"] == "unknown subscriber 99912345678"
    assert len(tail.oks()) == 2
    calls = app.state.partner.calls
    assert calls["send"] == 2  # one injected transient failure, then the accepted batch
    assert calls["login"] >= 1 and calls["report"] >= 1


async def test_conformance_kit() -> None:
    app = example.create_app(secret_key=SECRET_KEY, token=TOKEN, delivery_delay_s=0.1)
    async with serve(app) as url:
        report = await assert_conformant(
            HttpBridgeAdapter,
            {"url": url, "token": TOKEN, "timeout_s": 2.0},
            secret_key=SECRET_KEY,
            bad_secret_key="wrong-" + SECRET_KEY,
            final_within_s=5.0,
        )
    assert report["nok_login"].outcome.value == "pass"


# --- reason, pattern and max_batch (issue 8, item 13) ------------------------------------------


async def test_a_send_result_reason_maps_to_sender_or_retry() -> None:
    answers: dict[str, tuple[int, bytes, dict[str, str]]] = {}

    def results(*reasons: Any) -> bytes:
        items = [
            {"partnerMessageId": "", "partnerStatus": "X", "apiStatus": "FAIL", "reason": r}
            for r in reasons
        ]
        return orjson.dumps({"results": items})

    async with serve(_canned(answers)) as url:
        adapter = bridge(url)
        answers["/send"] = (200, results("sender", "retry", "", None), {})
        response = await adapter.send(batch(*["905330000001"] * 4))
        assert [r.reason for r in response.results] == [REASON_SENDER, REASON_RETRY, "", ""]
        answers["/send"] = (200, results("later"), {})
        with pytest.raises(PermanentError, match=r"results\[0\]\.reason is 'later', not one of"):
            await adapter.send(batch("905330000001"))
        # a report answer is final as it is: a reason there is ignored, not an error
        answers["/report"] = (
            200,
            orjson.dumps(
                {"results": [{"partnerMessageId": "p1", "apiStatus": "FAIL", "reason": "retry"}]}
            ),
            {},
        )
        (only,) = (await adapter.report(SmsReportRequest("", ["p1"]))).results
        assert (only.apiStatus, only.reason) == (ApiStatus.FAIL, "")
        await adapter.destroy()


def test_pattern_and_max_batch_are_bounded_options_that_shape_the_instance_meta() -> None:
    meta = HttpBridgeAdapter.meta
    pattern, max_batch = meta.option("pattern"), meta.option("max_batch")
    assert pattern is not None and pattern.choices == ("batch", "loop")
    assert max_batch is not None
    assert (max_batch.default, max_batch.minimum, max_batch.maximum) == (100, 1, 1000)

    default = build(HttpBridgeAdapter, {"url": "http://127.0.0.1:8090"})
    assert (default.meta.pattern, default.meta.max_batch) == (SendPattern.BATCH, 100)
    small = build(HttpBridgeAdapter, {"url": "http://127.0.0.1:8090", "max_batch": "25"})
    assert (small.meta.pattern, small.meta.max_batch) == (SendPattern.BATCH, 25)
    loop = build(HttpBridgeAdapter, {"url": "http://127.0.0.1:8090", "pattern": "loop"})
    assert (loop.meta.pattern, loop.meta.max_batch) == (SendPattern.LOOP, 1)
    assert HttpBridgeAdapter.meta.pattern is SendPattern.BATCH  # the class is unchanged

    refused = [
        ({"max_batch": 0}, "options.max_batch: is 0; at least 1"),
        ({"max_batch": 5000}, "options.max_batch: is 5000; at most 1000"),
        ({"pattern": "stream"}, "options.pattern: is 'stream'; one of 'batch', 'loop'"),
    ]
    for changes, problem in refused:  # refused when the accounts file is loaded
        with pytest.raises(ConfigError, match=re.escape(problem)):
            build(HttpBridgeAdapter, {"url": "http://127.0.0.1:8090", **changes})
        with pytest.raises(ValueError, match=re.escape(problem.split(": ", 1)[1])):
            HttpBridgeAdapter({"url": "http://127.0.0.1:8090", **changes})  # and when built


async def test_the_kit_passes_in_loop_pattern_and_with_a_small_max_batch() -> None:
    app = example.create_app(secret_key=SECRET_KEY, delivery_delay_s=0.1)
    async with serve(app) as url:
        for extra, expected in (
            ({"pattern": "loop"}, "(one per call)"),
            ({"max_batch": 2}, "(batch)"),
        ):
            report = await assert_conformant(
                HttpBridgeAdapter,
                {"url": url, "timeout_s": 2.0, **extra},
                secret_key=SECRET_KEY,
                bad_secret_key="wrong-" + SECRET_KEY,
                final_within_s=5.0,
            )
            assert expected in report["send"].message
