"""The Clickatell adapter against a fake Clickatell One API on a real loopback socket."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from mta.adapters.clickatell import ClickatellAdapter

from mta.adapter import (
    AdapterContext,
    AdapterError,
    AuthError,
    PermanentError,
    ReceiptMode,
    SendPattern,
    ThrottledError,
    TransientError,
    WebhookError,
    WebhookRequest,
)
from mta.config import load_accounts
from mta.contract import (
    REASON_RETRY,
    REASON_SENDER,
    ApiStatus,
    SmsMessage,
    SmsReportRequest,
    SmsSendRequest,
    format_time,
    pack_result,
)
from mta.testing import assert_conformant
from tests.conftest import Env
from tests.fakes.clickatell import FakeClickatell, Scripted
from tests.httpserver import serve

KEY = "ck-0123456789abcdef0123456789abcdef"


def adapter(url: str, account: str = "ck-1", tz: tzinfo = UTC, **changes: Any) -> ClickatellAdapter:
    options = {o.name: o.default for o in ClickatellAdapter.meta.options}
    options.update(url=url, api_key=KEY, timeout_s=2.0)
    options.update(changes)
    return ClickatellAdapter(options, AdapterContext(account, 7, tz=tz))


def expire_in(minutes: float, tz: tzinfo = UTC) -> str:
    """An MMP ``expireTime`` (``yyyyMMddHHmm`` in ``tz``) about ``minutes`` from now."""
    return format_time(time.time() + minutes * 60, tz)


def callback(doc: Any, query: dict[str, str] | None = None) -> WebhookRequest:
    body = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    return WebhookRequest(
        method="POST",
        url="https://mta.example.com/webhooks/ck-1",
        headers={"content-type": "application/json"},
        query=query or {},
        body=body,
        form={},
    )


def test_meta_declares_partner_facts(tmp_path: Any) -> None:
    meta = ClickatellAdapter.meta
    assert meta.name == "clickatell"
    assert meta.default_url == "https://platform.clickatell.com"
    assert meta.pattern == SendPattern.BATCH and meta.max_batch == 200
    assert meta.receipts == ReceiptMode.PUSH
    api_key = meta.option("api_key")
    assert api_key is not None and api_key.required and api_key.secret
    token = meta.option("webhook_token")
    assert token is not None and token.secret and not token.required
    assert (
        ClickatellAdapter({"api_key": "k"}, AdapterContext("x", 1)).base_url
        == "https://platform.clickatell.com"
    )
    # A missing api_key is a config error naming the account and the option.
    path = tmp_path / "accounts.toml"
    path.write_text('[[account]]\nid = 1\nname = "ck"\nadapter = "clickatell"\n')
    with pytest.raises(Exception, match=r"ck.*api_key.*required"):
        load_accounts(path, {"clickatell": meta})


async def test_send_batch_maps_each_message_and_sends_documented_fields() -> None:
    fake = FakeClickatell(KEY)
    fake.rejects["447700900002"] = (25, "Invalid recipient address")
    async with serve(fake.app) as url:
        ck = adapter(url, callback_base_url="https://mta.example.com")
        messages = [
            SmsMessage("447700900001", "hello", sender="ACME"),
            SmsMessage("447700900002", "rejected one"),
            SmsMessage("447700900003", "Siparişiniz yolda 🚚"),
            SmsMessage("447700900001", "same number again"),
        ]
        response = await ck.send(SmsSendRequest(messages))
        await ck.destroy()
    results = response.results
    assert len(results) == 4
    assert [r.apiStatus for r in results] == [
        ApiStatus.OK,
        ApiStatus.FAIL,
        ApiStatus.OK,
        ApiStatus.OK,
    ]
    assert fake.accepted[results[0].partnerMessageId] == "447700900001"
    assert fake.accepted[results[2].partnerMessageId] == "447700900003"
    assert fake.accepted[results[3].partnerMessageId] == "447700900001"
    assert results[0].partnerMessageId != results[3].partnerMessageId
    assert results[1].partnerStatus == "25"
    assert results[1].partnerDetail == "Invalid recipient address"
    # One call, in the documented batch form; "from" only when a sender is given; the callback
    # URL is configured on the integration, never sent.
    assert len(fake.calls) == 1
    sent = fake.calls[0]["messages"]
    assert sent[0] == {"channel": "sms", "to": "447700900001", "content": "hello", "from": "ACME"}
    assert sent[2] == {"channel": "sms", "to": "447700900003", "content": "Siparişiniz yolda 🚚"}
    assert b"mta.example.com" not in orjson.dumps(fake.calls)
    assert ck.callback_url == "https://mta.example.com/webhooks/ck-1"


async def test_reply_entries_are_matched_by_number_whatever_their_order() -> None:
    fake = FakeClickatell(KEY)
    async with serve(fake.app) as url:
        ck = adapter(url)
        # A reply in another order, with a '+' number, and no entry for the third message.
        fake.script.append(
            Scripted(
                202,
                {
                    "messages": [
                        {"apiMessageId": "id-b", "accepted": True, "to": "447700900011"},
                        {"apiMessageId": "id-a", "accepted": True, "to": "+447700900010"},
                        {
                            "apiMessageId": None,
                            "accepted": False,
                            "to": "447700900010",
                            "error": {"code": 26, "description": "Recipient opted out"},
                        },
                    ],
                    "error": None,
                },
            )
        )
        response = await ck.send(
            SmsSendRequest(
                [
                    SmsMessage("447700900010", "a"),
                    SmsMessage("447700900011", "b"),
                    SmsMessage("447700900012", "c"),
                    SmsMessage("447700900010", "a again"),
                ]
            )
        )
        await ck.destroy()
    ids = [r.partnerMessageId for r in response.results]
    assert ids[:2] == ["id-a", "id-b"]
    missing = response.results[2]
    assert missing.apiStatus == ApiStatus.FAIL and "outcome unknown" in missing.partnerDetail
    again = response.results[3]  # the second entry for the same number, in order
    assert (again.apiStatus, again.partnerStatus) == (ApiStatus.FAIL, "26")
    assert again.partnerDetail == "Recipient opted out"


async def test_207_multi_status_gives_each_message_its_own_result() -> None:
    # Clickatell answers 207 when the messages of a request do not all have the same status
    # (errors table): the accepted ones are OK with their apiMessageId, the refused one FAILs.
    fake = FakeClickatell(KEY)
    fake.rejects["447700900022"] = (26, "Recipient opted out")
    async with serve(fake.app) as url:
        ck = adapter(url)
        response = await ck.send(
            SmsSendRequest(
                [
                    SmsMessage("447700900021", "one", sender="ACME"),
                    SmsMessage("447700900022", "two", sender="ACME"),
                    SmsMessage("447700900023", "three", sender="ACME"),
                ]
            )
        )
        await ck.destroy()
    assert fake.statuses == [207]
    first, refused, third = response.results
    assert (first.apiStatus, third.apiStatus) == (ApiStatus.OK, ApiStatus.OK)
    assert fake.accepted[first.partnerMessageId] == "447700900021"
    assert fake.accepted[third.partnerMessageId] == "447700900023"
    assert (refused.apiStatus, refused.partnerStatus) == (ApiStatus.FAIL, "26")
    assert refused.partnerDetail == "Recipient opted out" and refused.reason == ""


async def test_every_message_refused_is_answered_per_message_not_as_a_global_error() -> None:
    # One message refused: Clickatell answers its error's HTTP status (400) with the entry.
    fake = FakeClickatell(KEY)
    fake.rejects["447700900031"] = (25, "Invalid recipient address")
    async with serve(fake.app) as url:
        ck = adapter(url)
        response = await ck.send(SmsSendRequest([SmsMessage("447700900031", "x")]))
        await ck.destroy()
    assert fake.statuses == [400]
    (result,) = response.results
    assert (result.apiStatus, result.partnerStatus) == (ApiStatus.FAIL, "25")
    assert result.partnerDetail == "Invalid recipient address"


async def test_sender_and_retry_codes_are_marked_per_message() -> None:
    fake = FakeClickatell(KEY)
    fake.reject_senders["BADSENDER"] = (45, "FROM number is not related to integration")
    fake.reject_senders["SUSPENDED"] = (44, "FROM number is suspended")
    fake.reject_senders["BADFROM"] = (23, "Invalid or missing parameter: from")
    fake.reject_senders["BUSY"] = (19, "Internal error, please retry")
    fake.reject_senders["BROKE"] = (20, "Insufficient account balance")
    fake.rejects["447700900049"] = (23, "Invalid or missing parameter: content")
    senders = ["BADSENDER", "SUSPENDED", "BADFROM", "BUSY", "BROKE", "INFO", "INFO"]
    numbers = [f"44770090004{n}" for n in range(len(senders) - 1)] + ["447700900049"]
    async with serve(fake.app) as url:
        ck = adapter(url)
        response = await ck.send(
            SmsSendRequest(
                [SmsMessage(n, "hi", sender=s) for n, s in zip(numbers, senders, strict=True)]
            )
        )
        # Alone, a refused sender is answered 400 with its entry: still marked.
        alone = await ck.send(SmsSendRequest([SmsMessage("447700900041", "hi", "BADSENDER")]))
        await ck.destroy()
    assert fake.statuses == [207, 400]
    got = [(r.apiStatus, r.partnerStatus, r.reason) for r in response.results]
    assert got == [
        (ApiStatus.FAIL, "45", REASON_SENDER),
        (ApiStatus.FAIL, "44", REASON_SENDER),
        (ApiStatus.FAIL, "23", REASON_SENDER),
        (ApiStatus.FAIL, "19", REASON_RETRY),
        (ApiStatus.FAIL, "20", ""),
        (ApiStatus.OK, "ACCEPTED", ""),
        (ApiStatus.FAIL, "23", ""),  # a missing parameter other than 'from' is not the sender
    ]
    assert "top up" in response.results[4].partnerDetail
    assert [(r.partnerStatus, r.reason) for r in alone.results] == [("45", REASON_SENDER)]


async def test_expire_time_becomes_validity_period_in_minutes_within_bounds() -> None:
    istanbul = ZoneInfo("Europe/Istanbul")  # UTC+3 all year
    fake = FakeClickatell(KEY)
    async with serve(fake.app) as url:
        ck = adapter(url, tz=istanbul)
        await ck.send(
            SmsSendRequest(
                [
                    SmsMessage("447700900051", "90 min", expireTime=expire_in(90, istanbul)),
                    SmsMessage("447700900052", "3 days", expireTime=expire_in(3 * 1440, istanbul)),
                    SmsMessage("447700900053", "passed", expireTime=expire_in(-5, istanbul)),
                    SmsMessage("447700900054", "none"),
                    # Written in UTC but read in the account's zone: three hours less.
                    SmsMessage("447700900055", "utc", expireTime=expire_in(240, UTC)),
                ]
            )
        )
        await ck.destroy()
    sent = fake.calls[0]["messages"]
    assert sent[0]["validityPeriod"] in (89, 90)
    assert sent[1]["validityPeriod"] == 1440  # Clickatell's default, the cap
    assert sent[2]["validityPeriod"] == 1  # below the minimum still goes, with the minimum
    assert "validityPeriod" not in sent[3]
    assert sent[4]["validityPeriod"] in (59, 60)


async def test_partner_errors_map_to_kinds_and_never_leak_the_key() -> None:
    fake = FakeClickatell(KEY)
    one = [SmsMessage("447700900001", "hi")]
    details: list[str] = []
    async with serve(fake.app) as url:
        ck = adapter(url, timeout_s=0.5)
        fake.answer_next(429, 43, "Rate limit", {"Retry-After": "3"})
        with pytest.raises(ThrottledError) as throttled:
            await ck.send(SmsSendRequest(one))
        assert throttled.value.retry_after == 3.0
        details.append(throttled.value.detail)

        fake.answer_next(503, 19, "Internal error, please retry")
        with pytest.raises(TransientError) as unavailable:
            await ck.send(SmsSendRequest(one))
        assert not isinstance(unavailable.value, ThrottledError)
        assert "503" in unavailable.value.detail
        details.append(unavailable.value.detail)

        fake.answer_next(400, 23, "Invalid or missing parameter: to")
        with pytest.raises(PermanentError) as bad:
            await ck.send(SmsSendRequest(one))
        assert not isinstance(bad.value, AuthError)
        assert "Invalid or missing parameter: to" in bad.value.detail
        assert "code 23" in bad.value.detail and "'ck-1'" in bad.value.detail
        details.append(bad.value.detail)

        fake.answer_next(402, 20, "Insufficient account balance")
        with pytest.raises(PermanentError) as broke:
            await ck.send(SmsSendRequest(one))
        assert "top up" in broke.value.detail and "Insufficient" in broke.value.detail
        details.append(broke.value.detail)
        fake.script.append(Scripted(402, {"messages": [], "error": "Out of funds"}))
        with pytest.raises(PermanentError, match="top up"):
            await ck.send(SmsSendRequest(one))

        # A partner that echoes the key in its error text: the detail must not carry it.
        fake.answer_next(400, 23, f"bad request from key {KEY}")
        with pytest.raises(PermanentError) as echoed:
            await ck.send(SmsSendRequest(one))
        details.append(echoed.value.detail)

        fake.delay_s = 1.5
        with pytest.raises(TransientError, match="timed out"):
            await ck.send(SmsSendRequest(one))
        fake.delay_s = 0.0
        assert fake.calls == []  # none of the above was accepted
        await ck.destroy()

        wrong = adapter(url, api_key="ck-wrong-key")
        assert await wrong.login("") is False
        assert await wrong.test_credentials() is False
        with pytest.raises(AuthError) as refused:
            await wrong.send(SmsSendRequest(one))
        assert "401" in refused.value.detail
        details.append(refused.value.detail)
        await wrong.destroy()
    for detail in details:
        assert KEY not in detail, detail
    assert "***" in details[4]


async def test_login_and_credentials_use_the_balance_call() -> None:
    fake = FakeClickatell(KEY)
    async with serve(fake.app) as url:
        ck = adapter(url)
        assert await ck.login("") is True
        assert await ck.test_credentials() is True
        assert await ck.test_connection() is True
        assert await ck.test_proxy() is True
        assert fake.balance_calls == 2
        await ck.destroy()
        dead = url
    unreachable = adapter(dead, timeout_s=0.5)
    with pytest.raises(TransientError):
        await unreachable.login("")
    await unreachable.destroy()


def test_secrets_are_absent_from_repr_and_str() -> None:
    ck = adapter("http://127.0.0.1:9", webhook_token="tok-secret-123")
    for text in (repr(ck), str(ck)):
        assert KEY not in text and "tok-secret-123" not in text
        assert "ck-1" in text


async def test_report_answers_waiting_for_every_id() -> None:
    ck = adapter("http://127.0.0.1:9")
    response = await ck.report(SmsReportRequest("p-1", ["a", "b"]))
    assert response.partnerPacketId == "p-1"
    assert [(r.partnerMessageId, r.apiStatus) for r in response.results] == [
        ("a", ApiStatus.WAITING),
        ("b", ApiStatus.WAITING),
    ]


async def test_webhook_maps_every_status_group() -> None:
    fake = FakeClickatell(KEY)
    ck = adapter("http://127.0.0.1:9")
    expected = {
        1: ApiStatus.WAITING,
        2: ApiStatus.WAITING,
        3: ApiStatus.WAITING,
        4: ApiStatus.WAITING,
        5: ApiStatus.DELIVERED,
        6: ApiStatus.DELIVERED,
        20: ApiStatus.TIMEOUT,
        **{code: ApiStatus.FAIL for code in range(21, 30)},
        100: ApiStatus.FAIL,
        7: ApiStatus.WAITING,  # unknown codes wait
        999: ApiStatus.WAITING,
    }
    for code, status in expected.items():
        results = await ck.webhook(callback(fake.callback(f"m-{code}", code)))
        assert len(results) == 1
        result = results[0]
        assert (result.partnerMessageId, result.apiStatus) == (f"m-{code}", status), code
        assert result.partnerStatus == str(code)
    failed = (await ck.webhook(callback(fake.callback("m-x", 23))))[0]
    assert "DELIVERY_FAILURE" in failed.partnerDetail
    unknown = (await ck.webhook(callback(fake.callback("m-y", 999))))[0]
    assert "unknown" in unknown.partnerDetail
    # A string statusCode and a list of callbacks are read too.
    many = await ck.webhook(
        callback([{"messageId": "m-1", "statusCode": "5"}, {"messageId": "m-2", "statusCode": 23}])
    )
    assert [(r.partnerMessageId, r.apiStatus) for r in many] == [
        ("m-1", ApiStatus.DELIVERED),
        ("m-2", ApiStatus.FAIL),
    ]


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1]",
        orjson.dumps({"statusCode": 5}),
        orjson.dumps({"messageId": "m-1"}),
        orjson.dumps({"messageId": "m-1", "statusCode": "five"}),
        orjson.dumps({"messageId": "m-1", "statusCode": True}),
        orjson.dumps({"messageId": 12, "statusCode": 5}),
    ],
)
async def test_malformed_callbacks_are_400(body: bytes) -> None:
    ck = adapter("http://127.0.0.1:9")
    with pytest.raises(WebhookError) as refused:
        await ck.webhook(callback(body))
    assert refused.value.status == 400 and "ck-1" in refused.value.detail


async def test_webhook_token_is_required_when_configured() -> None:
    ck = adapter("http://127.0.0.1:9", webhook_token="tok-secret-123")
    body = {"messageId": "m-1", "statusCode": 5}
    for query in ({}, {"token": "forged"}, {"token": "tok-secret-12"}):
        with pytest.raises(WebhookError) as forged:
            await ck.webhook(callback(body, query))
        assert forged.value.status == 403
        assert "tok-secret-123" not in forged.value.detail
    ok = await ck.webhook(callback(body, {"token": "tok-secret-123"}))
    assert ok[0].apiStatus == ApiStatus.DELIVERED


async def test_end_to_end_through_worker_and_reporter(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeClickatell(KEY)
    fake.rejects["447700900099"] = (25, "Invalid recipient address")
    monkeypatch.setenv("MTA_TEST_CLICKATELL_KEY", KEY)
    async with serve(fake.app) as url:
        env.accounts(
            f"""
[[account]]
id = 0
name = "ck-e2e"
adapter = "clickatell"
default = true
[account.options]
url = "{url}"
api_key = "${{MTA_TEST_CLICKATELL_KEY}}"
timeout_s = 2.0
"""
        )
        tail = await env.tail()
        await env.start("worker", "reporter")
        body = {
            "messages": [
                {"mobileNumber": "447700900001", "text": "one", "sender": "ACME"},
                {"mobileNumber": "447700900002", "text": "two", "smsType": "OTP"},
                {"mobileNumber": "447700900003", "text": "three"},
                {"mobileNumber": "447700900099", "text": "rejected"},
            ]
        }
        mid = await env.publish(body, message_id="ck-batch-1")
        await tail.wait(lambda t: len(t.oks()) == 3 and len(t.finals()) == 1)
        rejected = tail.by_id("FAIL")[f"{mid}:3"]
        assert rejected["partnerStatus"] == "25"
        assert rejected["partnerDetail"] == "Invalid recipient address"
        assert len(fake.calls) == 1 and len(fake.calls[0]["messages"]) == 4

        # Clickatell pushes the states; the webhook's results become pushed receipts.
        oks = tail.by_id("OK")
        pids = {i: oks[f"{mid}:{i}"]["partnerMessageId"] for i in range(3)}
        receiver = ClickatellAdapter(
            {o.name: o.default for o in ClickatellAdapter.meta.options} | {"api_key": KEY},
            AdapterContext("ck-e2e", 0),
        )
        results = []
        for i, code in ((0, 5), (1, 23), (2, 20)):
            results += await receiver.webhook(callback(fake.callback(pids[i], code)))
        results += await receiver.webhook(callback(fake.callback(pids[0], 4)))  # late, ignored
        store = await env.store()
        await store.push_receipts(
            "ck-e2e", {r.partnerMessageId: pack_result(r) for r in results if r.apiStatus.final}
        )
        await store.close()
        await tail.wait_finals(4)
        await asyncio.sleep(0.3)  # no more finals may come
    finals = {r["messageId"]: r for r in tail.finals()}
    assert len(tail.finals()) == 4
    assert finals[f"{mid}:0"]["apiStatus"] == "DELIVERED"
    assert finals[f"{mid}:1"]["apiStatus"] == "FAIL"
    assert finals[f"{mid}:1"]["partnerStatus"] == "23"
    assert finals[f"{mid}:1"]["smsType"] == "OTP"
    assert finals[f"{mid}:2"]["apiStatus"] == "TIMEOUT"
    assert finals[f"{mid}:0"]["partnerMessageId"] == pids[0]


async def test_errors_are_adapter_error_kinds() -> None:
    # Nothing listens on port 9: a network failure is transient, never a bare httpx error.
    ck = adapter("http://127.0.0.1:9", timeout_s=0.5)
    with pytest.raises(AdapterError) as failed:
        await ck.send(SmsSendRequest([SmsMessage("447700900001", "x")]))
    assert isinstance(failed.value, TransientError)
    await ck.destroy()


async def test_passes_the_conformance_kit() -> None:
    fake = FakeClickatell(KEY)
    async with serve(fake.app) as url:
        report = await assert_conformant(
            ClickatellAdapter,
            {"url": url, "api_key": KEY, "webhook_token": "tok-secret-123", "timeout_s": 2.0},
            make_partner_fail=fake.fail_all,
            account_name="ck-kit",
        )
    assert report["send"].outcome.value == "pass"
    assert report["error_kinds"].outcome.value == "pass"
    assert report["secrets"].outcome.value == "pass"
    # Login ignores secret_key (the key is an option), so the kit's NOK-login check is skipped;
    # refused credentials are tested above.
    assert report["nok_login"].outcome.value == "skip"
    assert fake.calls  # the kit's messages really went through the fake partner


async def test_end_to_end_refused_sender_goes_again_with_the_fallback_sender(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeClickatell(KEY)
    fake.reject_senders["BADSENDER"] = (45, "FROM number is not related to integration")
    monkeypatch.setenv("MTA_TEST_CLICKATELL_KEY", KEY)
    async with serve(fake.app) as url:
        env.accounts(
            f"""
[[account]]
id = 0
name = "ck-fb"
adapter = "clickatell"
default = true
sender = "BADSENDER"
fallback_sender = "INFO"
[account.options]
url = "{url}"
api_key = "${{MTA_TEST_CLICKATELL_KEY}}"
timeout_s = 2.0
"""
        )
        tail = await env.tail()
        await env.start("worker", "reporter")
        mid = await env.publish({"messages": [{"mobileNumber": "447700900061", "text": "hi"}]})
        await tail.wait(lambda t: len(t.oks()) == 1)
        ok = tail.by_id("OK")[f"{mid}:0"]
        receiver = ClickatellAdapter(
            {o.name: o.default for o in ClickatellAdapter.meta.options} | {"api_key": KEY},
            AdapterContext("ck-fb", 0),
        )
        results = await receiver.webhook(callback(fake.callback(ok["partnerMessageId"], 5)))
        store = await env.store()
        await store.push_receipts("ck-fb", {r.partnerMessageId: pack_result(r) for r in results})
        await store.close()
        (final,) = await tail.wait_finals(1)
    assert [m.get("from") for c in fake.calls for m in c["messages"]] == ["BADSENDER", "INFO"]
    assert "sent with fallback sender 'INFO'" in ok["partnerDetail"]
    assert "rejected sender 'BADSENDER'" in ok["partnerDetail"]
    assert "FROM number is not related to integration" in ok["partnerDetail"]
    assert final["apiStatus"] == "DELIVERED" and final["messageId"] == f"{mid}:0"
