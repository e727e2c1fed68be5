"""mta http: webhooks store pushed receipts that the reporter turns into finals; health checks."""

from __future__ import annotations

import asyncio
import hmac
from typing import Any, ClassVar

import httpx
import orjson

from mta.adapter import (
    AdapterMeta,
    OptionSpec,
    ReceiptMode,
    SendPattern,
    WebhookError,
    WebhookRequest,
)
from mta.contract import ApiStatus, SmsReportRequest, SmsResponse, SmsResult, SmsSendRequest
from mta.httpserver import create_app
from mta.store import Store
from tests.conftest import Env
from tests.httpserver import serve


class PushAdapter:
    """A partner that only pushes receipts, signed with an HMAC of the body (a test plugin)."""

    meta: ClassVar[AdapterMeta] = AdapterMeta(
        name="push",
        description="push-only partner",
        pattern=SendPattern.BATCH,
        receipts=ReceiptMode.PUSH,
        options=(OptionSpec("signing_key", str, required=True, secret=True),),
    )
    reports = 0

    def __init__(self, options: Any) -> None:
        self.key = options["signing_key"].encode()
        self.n = 0

    async def login(self, secret_key: str) -> bool:
        return True

    async def send(self, request: SmsSendRequest) -> SmsResponse:
        results = []
        for _ in request.messages:
            self.n += 1
            results.append(SmsResult(partnerMessageId=f"p-{self.n}", apiStatus=ApiStatus.OK))
        return SmsResponse("", results)

    async def report(self, request: SmsReportRequest) -> SmsResponse:
        type(self).reports += 1
        return SmsResponse("", [])

    async def destroy(self) -> None:
        return None

    async def webhook(self, request: WebhookRequest) -> list[SmsResult]:
        if request.form:  # the form variant: id=...&state=... (unsigned, for the parser test)
            return [
                SmsResult(
                    partnerMessageId=request.form["id"],
                    partnerStatus="form",
                    apiStatus=ApiStatus(request.form["state"]),
                )
            ]
        expected = hmac.new(self.key, request.body, "sha256").hexdigest()
        if not hmac.compare_digest(expected, request.headers.get("x-signature", "")):
            raise WebhookError(403, "bad signature")
        try:
            doc = orjson.loads(request.body)
            return [
                SmsResult(
                    partnerMessageId=r["id"],
                    partnerStatus=r["state"],
                    apiStatus=ApiStatus(r["state"]),
                )
                for r in doc["receipts"]
            ]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise WebhookError(400, f"malformed receipt: {exc}") from None


ACCOUNTS = """
[[account]]
id = 0
name = "pusher"
adapter = "push"
default = true
[account.options]
signing_key = "k3y"

[[account]]
id = 1
name = "sim"
adapter = "simulator"
"""


def signed(doc: Any) -> tuple[bytes, dict[str, str]]:
    body = orjson.dumps(doc)
    return body, {
        "x-signature": hmac.new(b"k3y", body, "sha256").hexdigest(),
        "content-type": "application/json",
    }


async def test_webhook_receipts_become_finals(env: Env) -> None:
    env.accounts(ACCOUNTS)
    PushAdapter.reports = 0
    tail = await env.tail()
    service = await env.start("worker", "reporter", "http", extra={"push": PushAdapter})
    assert service.http is not None
    base = f"http://127.0.0.1:{service.http.port}"
    mid = await env.publish(
        {
            "messages": [
                {"mobileNumber": "905332141354", "text": "a"},
                {"mobileNumber": "905332141355", "text": "b"},
            ]
        }
    )
    await tail.wait(lambda t: len(t.oks()) == 2)
    pids = {r["messageId"]: r["partnerMessageId"] for r in tail.oks()}
    async with httpx.AsyncClient(base_url=base) as client:
        body, headers = signed(
            {
                "receipts": [
                    {"id": pids[f"{mid}:0"], "state": "DELIVERED"},
                    {"id": pids[f"{mid}:1"], "state": "WAITING"},
                ]
            }
        )
        answer = await client.post("/webhooks/pusher", content=body, headers=headers)
        assert answer.status_code == 200 and answer.json() == {"received": 2, "stored": 1}
        finals = await tail.wait_finals(1)
        assert finals[0]["messageId"] == f"{mid}:0" and finals[0]["apiStatus"] == "DELIVERED"
        # A forged call is refused and stores nothing.
        forged = await client.post(
            "/webhooks/pusher",
            content=orjson.dumps({"receipts": [{"id": pids[f"{mid}:1"], "state": "FAIL"}]}),
            headers={"x-signature": "00", "content-type": "application/json"},
        )
        assert forged.status_code == 403
        body, headers = signed({"nothing": 1})
        assert (
            await client.post("/webhooks/pusher", content=body, headers=headers)
        ).status_code == 400
        assert (await client.post("/webhooks/nobody", content=b"{}")).status_code == 404
        assert (await client.post("/webhooks/sim", content=b"{}")).status_code == 404
        await asyncio.sleep(0.6)
        assert len(tail.finals()) == 1, "the forged FAIL must not become a final"
        body, headers = signed({"receipts": [{"id": pids[f"{mid}:1"], "state": "FAIL"}]})
        assert (
            await client.post("/webhooks/pusher", content=body, headers=headers)
        ).status_code == 200
        finals = await tail.wait_finals(2)
        assert {f["apiStatus"] for f in finals} == {"DELIVERED", "FAIL"}
        form = await client.post(
            "/webhooks/pusher",
            content=b"id=p-x&state=DELIVERED",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert form.status_code == 200 and form.json() == {"received": 1, "stored": 1}
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert PushAdapter.reports == 0, "a push-only partner is never polled"
    store = await env.store()
    assert await store.receipts("pusher", list(pids.values())) == {}, "spent receipts removed"
    await store.close()


async def test_readyz_says_unavailable_when_redis_is_gone(env: Env) -> None:
    env.accounts(ACCOUNTS)
    dead_redis = Store.connect("redis://127.0.0.1:1/0", env.prefix)
    app = create_app(env.registry({"push": PushAdapter}), dead_redis, None)
    async with serve(app) as base, httpx.AsyncClient(base_url=base) as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and "redis" in ready.json()["problems"][0]
        assert (await client.get("/healthz")).status_code == 200
    await dead_redis.close()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_twilio_signed_callbacks_through_mta_http(env: Env) -> None:
    """The whole push path for a real partner adapter: Twilio accepts, its signed status
    callback reaches /webhooks/<account> over HTTP, and the reporter publishes the final."""
    from tests.fakes.twilio import FakeTwilio, signed_callback

    fake = FakeTwilio(fates={"+905330000001": "stuck"})  # polling never ends it
    port = _free_port()
    public = f"http://127.0.0.1:{port}"
    async with serve(fake.app) as partner_url:
        env.accounts(f"""
[[account]]
id = 0
name = "tw"
adapter = "twilio"
default = true
[account.options]
url = "{partner_url}"
account_sid = "{fake.account_sid}"
auth_token = "{fake.auth_token}"
callback_base_url = "{public}"
""")
        tail = await env.tail()
        await env.start("worker", "reporter", "http", listen=f"127.0.0.1:{port}")
        mid = await env.publish(
            {"messages": [{"mobileNumber": "905330000001", "text": "hi", "sender": "15005550006"}]}
        )
        await tail.wait(lambda t: len(t.oks()) == 1)
        sid = tail.oks()[0]["partnerMessageId"]
        assert fake.sent()[0]["StatusCallback"] == f"{public}/webhooks/tw"
        async with httpx.AsyncClient(base_url=public) as client:
            headers, body = signed_callback(
                fake, f"{public}/webhooks/tw", sid, "undelivered", error_code="30003"
            )
            forged = dict(headers, **{"x-twilio-signature": "AAAA"})
            assert (
                await client.post("/webhooks/tw", content=body, headers=forged)
            ).status_code == 403
            answer = await client.post("/webhooks/tw", content=body, headers=headers)
            assert answer.status_code == 200 and answer.json()["stored"] == 1
        finals = await tail.wait_finals(1)
        assert finals[0]["messageId"] == f"{mid}:0" and finals[0]["apiStatus"] == "FAIL"
        assert "30003" in finals[0]["partnerDetail"] + finals[0]["partnerStatus"]
