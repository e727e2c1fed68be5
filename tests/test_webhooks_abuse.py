"""``mta http`` under attack: forged receipts, receipt floods, huge and endless bodies, log
forging. Real HTTP over 127.0.0.1 against the real app under uvicorn, real Redis (a prefix per
test, deleted afterwards), fake partners served over HTTP."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx
import orjson
import pytest

from mta.store import Store
from tests.conftest import Env
from tests.fakes.clickatell import FakeClickatell
from tests.fakes.infobip import FakeInfobip
from tests.httpserver import serve

IB_KEY = "ib-test-key-0123456789"
CK_KEY = "ck-0123456789abcdef0123456789abcdef"
TOKEN = "wh-6c1f0e4b9a7d2c35e8f1"


def accounts(ib_url: str, ck_url: str, token: str = "") -> str:
    """An Infobip account (id 0) and a Clickatell account (id 1), with or without a token."""
    token_line = f'webhook_token = "{token}"' if token else ""
    return f"""
[[account]]
id = 0
name = "ib"
adapter = "infobip"
default = true
[account.options]
url = "{ib_url}"
api_key = "{IB_KEY}"
{token_line}

[[account]]
id = 1
name = "ck"
adapter = "clickatell"
[account.options]
url = "{ck_url}"
api_key = "{CK_KEY}"
{token_line}
"""


def infobip_receipt(message_id: str, group: int = 3, status: int = 5) -> dict[str, Any]:
    name = "DELIVERED_TO_HANDSET" if (group, status) == (3, 5) else "STATUS"
    return {"messageId": message_id, "status": {"groupId": group, "id": status, "name": name}}


async def send_one(env: Env, tail: Any, account_id: int, number: str) -> tuple[str, str]:
    """Publish one message to an account; (our message id, the partner's id) once it is OK."""
    before = len(tail.oks())
    mid = await env.publish(
        {"messages": [{"mobileNumber": number, "text": "hi", "accountId": account_id}]}
    )
    await tail.wait(lambda t: len(t.oks()) > before)
    ok = tail.by_id("OK")[f"{mid}:0"]
    return mid, ok["partnerMessageId"]


async def test_unsigned_partners_without_a_token_get_no_webhook(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    """Infobip and Clickatell do not sign callbacks: with no webhook_token (the default), a
    forged DELIVERED must not end a real pending message, and the start says what to set."""
    ib, ck = FakeInfobip(api_key=IB_KEY), FakeClickatell(CK_KEY)
    ib.outcomes["905330000001"] = ["PENDING_ENROUTE"]  # Infobip itself never ends it
    async with serve(ib.app) as ib_url, serve(ck.app) as ck_url:
        env.accounts(accounts(ib_url, ck_url))
        tail = await env.tail()
        with caplog.at_level(logging.WARNING, logger="mta.httpserver"):
            service = await env.start("worker", "reporter", "http")
        assert service.http is not None
        ib_mid, ib_pid = await send_one(env, tail, 0, "905330000001")
        ck_mid, ck_pid = await send_one(env, tail, 1, "447700900001")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.http.port}") as c:
            forged_ib = await c.post("/webhooks/ib", json={"results": [infobip_receipt(ib_pid)]})
            forged_ck = await c.post("/webhooks/ck", json=ck.callback(ck_pid, 5))  # DELIVERED
            # Guessing a token does not open a closed webhook either.
            guessed = await c.post("/webhooks/ck?token=", json=ck.callback(ck_pid, 5))
        assert forged_ib.status_code == 404, forged_ib.text
        assert forged_ck.status_code == 404, forged_ck.text
        assert guessed.status_code == 404, guessed.text
        await asyncio.sleep(1.0)  # several reporter rounds (poll_first_s 0.2, poll_max_s 1)
        assert tail.finals() == [], "a forged receipt ended a message"
        store = await env.store()
        assert await store.receipts("ib", [ib_pid]) == {}
        assert await store.receipts("ck", [ck_pid]) == {}
        for mid in (f"{ib_mid}:0", f"{ck_mid}:0"):
            assert await store.r.hexists(store.message_shard(mid).pending, mid)
        await store.close()
    # The start said which accounts have no webhook, and what to set.
    starts = [r.getMessage() for r in caplog.records if "is closed" in r.getMessage()]
    for name, adapter in (("ib", "infobip"), ("ck", "clickatell")):
        [line] = [m for m in starts if f"account {name!r} ({adapter})" in m]
        assert "set webhook_token" in line and "?token=" in line, line


async def test_with_a_token_the_right_receipt_still_works(env: Env) -> None:
    """The good path after hardening: with webhook_token set, a call without it is refused,
    a call with it ends the message."""
    ib, ck = FakeInfobip(api_key=IB_KEY), FakeClickatell(CK_KEY)
    ib.outcomes["905330000002"] = ["PENDING_ENROUTE"]
    async with serve(ib.app) as ib_url, serve(ck.app) as ck_url:
        env.accounts(accounts(ib_url, ck_url, token=TOKEN))
        tail = await env.tail()
        service = await env.start("worker", "reporter", "http")
        assert service.http is not None
        ib_mid, ib_pid = await send_one(env, tail, 0, "905330000002")
        ck_mid, ck_pid = await send_one(env, tail, 1, "447700900002")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.http.port}") as c:
            no_token = await c.post("/webhooks/ib", json={"results": [infobip_receipt(ib_pid)]})
            assert no_token.status_code == 403
            good_ib = await c.post(
                f"/webhooks/ib?token={TOKEN}", json={"results": [infobip_receipt(ib_pid)]}
            )
            good_ck = await c.post(f"/webhooks/ck?token={TOKEN}", json=ck.callback(ck_pid, 5))
        assert good_ib.status_code == 200 and good_ib.json() == {"received": 1, "stored": 1}
        assert good_ck.status_code == 200 and good_ck.json() == {"received": 1, "stored": 1}
        finals = {f["messageId"]: f for f in await tail.wait_finals(2)}
        assert finals[f"{ib_mid}:0"]["apiStatus"] == "DELIVERED"
        assert finals[f"{ck_mid}:0"]["apiStatus"] == "DELIVERED"


async def test_receipts_for_unknown_ids_are_bounded(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    """9,000 receipts for ids the MTA never sent: at most the cap is stored, the rest get 429
    (with Retry-After), and the refusals are logged a bounded number of times."""
    cap = 100
    ib, ck = FakeInfobip(api_key=IB_KEY), FakeClickatell(CK_KEY)
    async with serve(ib.app) as ib_url, serve(ck.app) as ck_url:
        env.accounts(accounts(ib_url, ck_url, token=TOKEN))
        service = await env.start("http", webhook_receipts_cap=cap)
        assert service.http is not None
        statuses: list[int] = []
        with caplog.at_level(logging.WARNING, logger="mta.httpserver"):
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{service.http.port}"
            ) as client:
                for batch in range(90):
                    doc = {
                        "results": [
                            infobip_receipt(f"bogus-{batch}-{n}", group=2, status=9)
                            for n in range(100)
                        ]
                    }
                    answer = await client.post(f"/webhooks/ib?token={TOKEN}", json=doc)
                    statuses.append(answer.status_code)
                    if answer.status_code == 429:
                        assert answer.headers["retry-after"].isdigit()
        assert statuses[0] == 200 and set(statuses[1:]) == {429}, statuses[:5]
        store = await env.store()
        keys = await store.keys()
        receipt_keys = await store.keys("rcpt:*")
        assert len(receipt_keys) <= cap, len(receipt_keys)
        assert len(keys) <= cap + 2, "receipts, one index per account, the shard count"
        assert await store.stored_receipts("ib") == cap
        await store.close()
    cap_lines = [r for r in caplog.records if "unclaimed receipts" in r.getMessage()]
    assert 1 <= len(cap_lines) <= 2, "refusals are logged at most once a minute"


async def _raw_exchange(
    port: int, head: bytes, body_chunks: Any, timeout: float = 10.0
) -> tuple[bytes, int, float]:
    """Send ``head`` then chunks from ``body_chunks`` (an iterator) until the server answers;
    returns (the answer's first bytes, body bytes written by then, seconds taken)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = 0
    started = time.monotonic()

    async def write() -> None:
        nonlocal sent
        writer.write(head)
        await writer.drain()
        for chunk in body_chunks:
            writer.write(chunk)
            await writer.drain()
            sent += len(chunk)

    writing = asyncio.create_task(write())
    try:
        answer = await asyncio.wait_for(reader.read(4096), timeout)
        written = sent
    finally:
        writing.cancel()
        await asyncio.gather(writing, return_exceptions=True)
        writer.close()
    return answer, written, time.monotonic() - started


async def test_huge_body_with_content_length_is_refused_unread(env: Env) -> None:
    """A 50 MB body declared by Content-Length: 413 at once, long before the client could
    send it (the server stops reading; most of the body is never written)."""
    ib, ck = FakeInfobip(api_key=IB_KEY), FakeClickatell(CK_KEY)
    size = 50 * 1024 * 1024
    async with serve(ib.app) as ib_url, serve(ck.app) as ck_url:
        env.accounts(accounts(ib_url, ck_url, token=TOKEN))
        service = await env.start("http")
        assert service.http is not None
        head = (
            f"POST /webhooks/ib?token={TOKEN} HTTP/1.1\r\nHost: t\r\n"
            f"Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
        ).encode()
        chunk = b"x" * 65536
        answer, written, took = await _raw_exchange(
            service.http.port, head, (chunk for _ in range(size // len(chunk)))
        )
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert written < size // 10, f"the client got to write {written} bytes first"
        assert took < 5.0
        # The server is still fine afterwards.
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.http.port}") as c:
            assert (await c.get("/healthz")).status_code == 200


async def test_chunked_body_over_the_limit_is_refused_while_streaming(env: Env) -> None:
    """No Content-Length (chunked): the server counts while reading and answers 413 once the
    body passes the limit (1 MiB), without waiting for a body that never ends."""
    ib, ck = FakeInfobip(api_key=IB_KEY), FakeClickatell(CK_KEY)
    async with serve(ib.app) as ib_url, serve(ck.app) as ck_url:
        env.accounts(accounts(ib_url, ck_url, token=TOKEN))
        service = await env.start("http")
        assert service.http is not None
        head = (
            f"POST /webhooks/ck?token={TOKEN} HTTP/1.1\r\nHost: t\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        ).encode()
        data = b"y" * 32768
        chunk = f"{len(data):x}\r\n".encode() + data + b"\r\n"
        # 4 MiB of chunks and never the closing 0-chunk: only a streaming check can answer.
        answer, _, took = await _raw_exchange(service.http.port, head, [chunk] * 128)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert took < 5.0


async def test_limits_come_from_settings_and_small_bodies_pass(env: Env) -> None:
    """webhook_max_body is the limit: a body just over it is refused, one under it parsed."""
    ib, ck = FakeInfobip(api_key=IB_KEY), FakeClickatell(CK_KEY)
    async with serve(ib.app) as ib_url, serve(ck.app) as ck_url:
        env.accounts(accounts(ib_url, ck_url, token=TOKEN))
        service = await env.start("http", webhook_max_body=2048)
        assert service.http is not None
        small = orjson.dumps({"results": [infobip_receipt("x-1")]})
        big = orjson.dumps({"results": [infobip_receipt(f"x-{n}") for n in range(40)]})
        assert len(small) < 2048 < len(big)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.http.port}") as c:
            url = f"/webhooks/ib?token={TOKEN}"
            assert (await c.post(url, content=small)).status_code == 200
            assert (await c.post(url, content=big)).status_code == 413

            async def chunks() -> Any:
                yield big[:1000]
                yield big[1000:]

            assert (await c.post(url, content=chunks())).status_code == 413


async def test_caller_strings_cannot_forge_log_lines(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    """An account name or partner id with a newline is logged escaped, on one line."""
    ib, ck = FakeInfobip(api_key=IB_KEY), FakeClickatell(CK_KEY)
    async with serve(ib.app) as ib_url, serve(ck.app) as ck_url:
        env.accounts(accounts(ib_url, ck_url, token=TOKEN))
        service = await env.start("http")
        assert service.http is not None
        forged = "x\n2030-01-01 00:00:00 INFO mta.reporter: all good"
        with caplog.at_level(logging.WARNING, logger="mta.httpserver"):
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.http.port}") as c:
                assert (await c.post("/webhooks/x%0Afake", content=b"{}")).status_code == 404
                answer = await c.post(
                    f"/webhooks/ck?token={TOKEN}",
                    json={"messageId": forged, "statusCode": "4\n5"},
                )
                assert answer.status_code == 400
                long_id = forged + "z" * 300
                answer = await c.post(
                    f"/webhooks/ck?token={TOKEN}", json={"messageId": long_id, "statusCode": 5}
                )
                assert answer.status_code == 200 and answer.json()["stored"] == 0
        lines = [r.getMessage() for r in caplog.records if r.name == "mta.httpserver"]
        assert len(lines) == 3, lines
        assert all("\n" not in line for line in lines), lines
        assert any("'x\\nfake'" in line for line in lines)


async def test_store_failures_and_unstorable_results_are_answered_not_crashed(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis down → 503 with Retry-After (the partner retries); a result no JSON can hold
    (a bug in an adapter) → 400 and an error line, never a 500 or a stored receipt."""
    from mta.contract import ApiStatus, SmsResult
    from mta.httpserver import create_app
    from tests.test_httpserver import ACCOUNTS, PushAdapter

    class Huge(PushAdapter):
        async def webhook(self, request: Any) -> list[SmsResult]:
            return [SmsResult("p-1", apiStatus=ApiStatus.DELIVERED, smsMessageCount=2**70)]

    form = {"content-type": "application/x-www-form-urlencoded"}
    env.accounts(ACCOUNTS)
    dead = Store.connect("redis://127.0.0.1:1/0", env.prefix)
    async with serve(create_app(env.registry({"push": PushAdapter}), dead, None)) as base:
        async with httpx.AsyncClient(base_url=base) as client:
            answer = await client.post(
                "/webhooks/pusher", content=b"id=p-1&state=DELIVERED", headers=form
            )
        assert answer.status_code == 503 and answer.headers["retry-after"].isdigit()
    await dead.close()
    store = await env.store()
    with caplog.at_level(logging.ERROR, logger="mta.httpserver"):
        app = create_app(env.registry({"push": Huge}), store, None)
        async with serve(app) as base, httpx.AsyncClient(base_url=base) as client:
            answer = await client.post("/webhooks/pusher", content=b"{}")
    assert answer.status_code == 400
    assert any("TypeError" in r.getMessage() for r in caplog.records)
    assert await store.receipts("pusher", ["p-1"]) == {}
    await store.close()
