"""The Vonage adapter against a fake Vonage SMS API on a real loopback socket."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
import urllib.parse
from datetime import UTC, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from mta.adapters.vonage import VonageAdapter, signature

from mta.adapter import (
    AdapterContext,
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
from tests.fakes.vonage import FakeVonage
from tests.httpserver import serve

KEY = "a1b2c3d4"
SECRET = "S3cr3tVonage0001"
SIG_SECRET = "sigsecret-0123456789abcdef0123456789"


def adapter(url: str, account: str = "vg-1", tz: tzinfo = UTC, **changes: Any) -> VonageAdapter:
    options = {o.name: o.default for o in VonageAdapter.meta.options}
    options.update(url=url, api_key=KEY, api_secret=SECRET, timeout_s=2.0)
    options.update(changes)
    return VonageAdapter(options, AdapterContext(account, 5, tz=tz))


def expire_in(minutes: float, tz: tzinfo = UTC) -> str:
    """An MMP ``expireTime`` (``yyyyMMddHHmm`` in ``tz``) about ``minutes`` from now."""
    return format_time(time.time() + minutes * 60, tz)


def get_dlr(params: dict[str, str]) -> WebhookRequest:
    return WebhookRequest(
        method="GET",
        url="https://mta.example.com/webhooks/vg-1?" + urllib.parse.urlencode(params),
        headers={},
        query=params,
        body=b"",
        form={},
    )


def post_form_dlr(params: dict[str, str]) -> WebhookRequest:
    return WebhookRequest(
        method="POST",
        url="https://mta.example.com/webhooks/vg-1",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        query={},
        body=urllib.parse.urlencode(params).encode(),
        form=params,
    )


def post_json_dlr(doc: Any) -> WebhookRequest:
    return WebhookRequest(
        method="POST",
        url="https://mta.example.com/webhooks/vg-1",
        headers={"Content-Type": "application/json"},
        query={},
        body=doc if isinstance(doc, bytes) else orjson.dumps(doc),
        form={},
    )


def test_meta_declares_partner_facts(tmp_path: Any) -> None:
    meta = VonageAdapter.meta
    assert meta.name == "vonage"
    assert meta.default_url == "https://rest.nexmo.com"
    assert meta.pattern == SendPattern.LOOP and meta.max_concurrency == 8
    assert meta.receipts == ReceiptMode.PUSH
    for name in ("api_key", "api_secret"):
        spec = meta.option(name)
        assert spec is not None and spec.required and spec.secret, name
    sig = meta.option("signature_secret")
    assert sig is not None and sig.secret and not sig.required
    path = tmp_path / "accounts.toml"
    path.write_text(
        '[[account]]\nid = 1\nname = "vg"\nadapter = "vonage"\n[account.options]\napi_key = "k"\n'
    )
    with pytest.raises(Exception, match=r"vg.*api_secret.*required"):
        load_accounts(path, {"vonage": meta})


async def test_send_one_message_with_documented_fields() -> None:
    fake = FakeVonage(KEY, SECRET)
    async with serve(fake.app) as url:
        vg = adapter(url, callback_base_url="https://mta.example.com/")
        response = await vg.send(
            SmsSendRequest(
                [SmsMessage("447700900001", "hello", sender="ACME", smsType="BULK|12-9001-77-1")]
            )
        )
        unicode = await vg.send(
            SmsSendRequest([SmsMessage("905332141354", "Siparişiniz yolda 🚚", sender="ACME")])
        )
        await vg.destroy()
    [result] = response.results
    assert result.apiStatus == ApiStatus.OK and result.partnerStatus == "0"
    assert result.partnerMessageId in fake.sent and result.smsMessageCount == 1
    assert result.smsOperator == "28601"
    first, second = fake.calls
    assert first == {
        "api_key": KEY,
        "api_secret": SECRET,
        "from": "ACME",
        "to": "447700900001",
        "text": "hello",
        "callback": "https://mta.example.com/webhooks/vg-1",
        "client-ref": "12-9001-77-1",
    }
    assert second["type"] == "unicode" and second["text"] == "Siparişiniz yolda 🚚"
    assert "client-ref" not in second
    assert unicode.results[0].apiStatus == ApiStatus.OK


async def test_long_message_uses_the_first_part_id_and_counts_parts() -> None:
    fake = FakeVonage(KEY, SECRET)
    async with serve(fake.app) as url:
        vg = adapter(url)
        text = "x" * 400  # GSM-7: 3 parts of 153
        response = await vg.send(SmsSendRequest([SmsMessage("447700900001", text, sender="ACME")]))
        # A later part rejected after the first was accepted: FAIL, never retried.
        fake.answer_next(
            200,
            {
                "message-count": "2",
                "messages": [
                    {"to": "447700900001", "message-id": "P1", "status": "0"},
                    {"to": "447700900001", "status": "5", "error-text": "Internal Error"},
                ],
            },
        )
        partial = await vg.send(
            SmsSendRequest([SmsMessage("447700900001", "y" * 200, sender="ACME")])
        )
        await vg.destroy()
    [result] = response.results
    assert result.apiStatus == ApiStatus.OK and result.smsMessageCount == 3
    assert fake.sent[result.partnerMessageId]["text"] == text
    assert "type" not in fake.calls[0]
    [broken] = partial.results
    assert broken.apiStatus == ApiStatus.FAIL and broken.partnerMessageId == "P1"
    assert "part 2 of 2" in broken.partnerDetail and "Internal Error" in broken.partnerDetail


async def test_per_message_statuses_map_to_results_and_kinds() -> None:
    fake = FakeVonage(KEY, SECRET)
    fake.statuses = {
        "447700900001": ("1", "Throughput Rate Exceeded - please wait [ 1000 ] and retry"),
        "447700900002": ("5", "Internal Error"),
        "447700900003": ("10", "Too Many Existing Binds"),
        "447700900004": ("8", "Partner Account Barred"),
        "447700900005": ("9", "Partner Quota Violation"),
        "447700900006": ("7", "Number Barred"),
        "447700900007": ("6", "Unroutable message - rejected"),
        "447700900008": ("15", "Illegal Sender Address - rejected"),
    }

    def one(number: str) -> SmsSendRequest:
        return SmsSendRequest([SmsMessage(number, "hi", sender="ACME")])

    details: list[str] = []
    async with serve(fake.app) as url:
        vg = adapter(url)
        with pytest.raises(ThrottledError) as throttled:
            await vg.send(one("447700900001"))
        assert throttled.value.retry_after == 1.0 and "Throughput" in throttled.value.detail
        details.append(throttled.value.detail)
        for number in ("447700900002", "447700900003"):
            with pytest.raises(TransientError) as transient:
                await vg.send(one(number))
            assert not isinstance(transient.value, ThrottledError)
            details.append(transient.value.detail)
        with pytest.raises(AuthError) as barred:
            await vg.send(one("447700900004"))
        assert "status 8" in barred.value.detail
        details.append(barred.value.detail)
        with pytest.raises(PermanentError) as quota:
            await vg.send(one("447700900005"))
        assert not isinstance(quota.value, AuthError) and "top it up" in quota.value.detail
        details.append(quota.value.detail)
        for number, status, text in (
            ("447700900006", "7", "Number Barred"),
            ("447700900007", "6", "Unroutable message - rejected"),
            ("447700900008", "15", "Illegal Sender Address - rejected"),
            ("12345", "3", "Invalid to param"),  # the fake checks the number too
        ):
            [result] = (await vg.send(one(number))).results
            assert result.apiStatus == ApiStatus.FAIL, number
            assert (result.partnerStatus, result.partnerDetail) == (status, text)
        # No sender: Vonage requires one; FAIL without a request.
        before = len(fake.calls)
        [nosender] = (await vg.send(SmsSendRequest([SmsMessage("447700900009", "x")]))).results
        assert nosender.apiStatus == ApiStatus.FAIL and "sender" in nosender.partnerDetail
        assert len(fake.calls) == before
        await vg.destroy()
        # Wrong credentials: status 4 on send, 401 on the balance call.
        wrong = adapter(url, api_secret="WrongSecret00000")
        assert await wrong.login("") is False
        assert await wrong.test_credentials() is False
        with pytest.raises(AuthError) as bad_credentials:
            await wrong.send(one("447700900010"))
        assert "status 4" in bad_credentials.value.detail
        details.append(bad_credentials.value.detail)
        await wrong.destroy()
    assert fake.calls == []  # nothing above was accepted
    for detail in details:
        assert SECRET not in detail and "'vg-1'" in detail, detail


async def test_refused_sender_is_marked_for_the_fallback_sender() -> None:
    fake = FakeVonage(KEY, SECRET)
    fake.sender_statuses = {
        "BADSENDER": ("15", "Illegal Sender Address - rejected"),
        "BAD FROM": ("3", "Invalid from param"),
    }
    fake.statuses["447700900072"] = ("3", "Invalid to param")
    async with serve(fake.app) as url:
        vg = adapter(url)
        results = [
            (await vg.send(SmsSendRequest([SmsMessage(n, "hi", sender=s)]))).results[0]
            for n, s in (
                ("447700900070", "BADSENDER"),
                ("447700900071", "BAD FROM"),
                ("447700900072", "INFO"),
                ("447700900073", "INFO"),
            )
        ]
        await vg.destroy()
    got = [(r.apiStatus, r.partnerStatus, r.reason) for r in results]
    assert got == [
        (ApiStatus.FAIL, "15", REASON_SENDER),
        (ApiStatus.FAIL, "3", REASON_SENDER),  # status 3 naming the from parameter
        (ApiStatus.FAIL, "3", ""),  # status 3 for another parameter is not the sender
        (ApiStatus.OK, "0", ""),
    ]


async def test_expire_time_becomes_ttl_in_milliseconds_within_bounds() -> None:
    istanbul = ZoneInfo("Europe/Istanbul")  # UTC+3 all year
    fake = FakeVonage(KEY, SECRET)
    cases = {
        "447700900081": expire_in(30, istanbul),
        "447700900082": expire_in(10 * 1440, istanbul),
        "447700900083": expire_in(-2, istanbul),
        "447700900084": "",
        "447700900085": expire_in(200, UTC),
    }
    async with serve(fake.app) as url:
        vg = adapter(url, tz=istanbul)
        for number, expire in cases.items():
            [result] = (
                await vg.send(
                    SmsSendRequest([SmsMessage(number, "hi", sender="ACME", expireTime=expire)])
                )
            ).results
            assert result.apiStatus == ApiStatus.OK, result
        await vg.destroy()
    ttl = {call["to"]: call.get("ttl") for call in fake.calls}
    assert 29 * 60_000 <= int(ttl["447700900081"] or 0) <= 30 * 60_000
    assert ttl["447700900082"] == "604800000"  # Vonage's maximum, 7 days
    assert ttl["447700900083"] == "20000"  # below the minimum still goes, with the minimum
    assert ttl["447700900084"] is None
    assert 19 * 60_000 <= int(ttl["447700900085"] or 0) <= 20 * 60_000  # read in the zone


async def test_http_errors_map_to_kinds_without_secrets() -> None:
    fake = FakeVonage(KEY, SECRET)
    one = SmsSendRequest([SmsMessage("447700900001", "hi", sender="ACME")])
    details: list[str] = []
    async with serve(fake.app) as url:
        vg = adapter(url, timeout_s=0.5)
        fake.answer_next(429, {"error": "Too Many Requests"}, {"Retry-After": "2"})
        with pytest.raises(ThrottledError) as throttled:
            await vg.send(one)
        assert throttled.value.retry_after == 2.0
        details.append(throttled.value.detail)
        fake.answer_next(500, {"error": "Internal Server Error"})
        with pytest.raises(TransientError) as server:
            await vg.send(one)
        assert "HTTP 500" in server.value.detail
        details.append(server.value.detail)
        fake.answer_next(400, {"error": f"Bad Request: api_secret={SECRET}"})
        with pytest.raises(PermanentError) as bad:
            await vg.send(one)
        assert not isinstance(bad.value, AuthError) and "Bad Request" in bad.value.detail
        details.append(bad.value.detail)
        fake.answer_next(401, {"error": "Unauthorized"})
        with pytest.raises(AuthError):
            await vg.send(one)
        fake.delay_s = 1.5
        with pytest.raises(TransientError, match="timed out"):
            await vg.send(one)
        fake.delay_s = 0.0
        # A 200 whose body cannot be read: outcome unknown, not retried.
        fake.answer_next(200, {"unexpected": True})
        with pytest.raises(PermanentError, match="outcome unknown"):
            await vg.send(one)
        await vg.destroy()
    for detail in details:
        assert SECRET not in detail, detail
    assert "***" in details[2]


async def test_login_uses_the_balance_call() -> None:
    fake = FakeVonage(KEY, SECRET)
    async with serve(fake.app) as url:
        vg = adapter(url)
        assert await vg.login("") is True
        assert await vg.test_credentials() is True
        assert await vg.test_connection() is True
        assert fake.balance_calls == 2
        await vg.destroy()
        dead = url
    unreachable = adapter(dead, timeout_s=0.5)
    with pytest.raises(TransientError) as down:
        await unreachable.login("")
    assert SECRET not in down.value.detail
    await unreachable.destroy()


async def test_balance_call_credentials_never_reach_the_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeVonage(KEY, SECRET)
    caplog.set_level(logging.DEBUG)
    # The HTTP base keeps httpx at WARNING; an operator who turns it up must still be safe.
    caplog.set_level(logging.INFO, logger="httpx")
    async with serve(fake.app) as url:
        vg = adapter(url)
        assert await vg.login("") is True
        await vg.destroy()
    assert "/account/get-balance?api_key=***&api_secret=***" in caplog.text
    assert SECRET not in caplog.text and KEY not in caplog.text


def test_secrets_are_absent_from_repr_and_str() -> None:
    vg = adapter("http://127.0.0.1:9", signature_secret=SIG_SECRET)
    for text in (repr(vg), str(vg)):
        assert SECRET not in text and SIG_SECRET not in text and KEY not in text
        assert "vg-1" in text


async def test_report_answers_waiting_for_every_id() -> None:
    vg = adapter("http://127.0.0.1:9")
    response = await vg.report(SmsReportRequest("", ["m1", "m2"]))
    assert [(r.partnerMessageId, r.apiStatus) for r in response.results] == [
        ("m1", ApiStatus.WAITING),
        ("m2", ApiStatus.WAITING),
    ]


async def test_webhook_maps_every_dlr_status_in_every_form() -> None:
    fake = FakeVonage(KEY, SECRET)
    vg = adapter("http://127.0.0.1:9")
    expected = {
        "delivered": ApiStatus.DELIVERED,
        "expired": ApiStatus.TIMEOUT,
        "failed": ApiStatus.FAIL,
        "rejected": ApiStatus.FAIL,
        "accepted": ApiStatus.WAITING,
        "buffered": ApiStatus.WAITING,
        "unknown": ApiStatus.WAITING,
        "something-new": ApiStatus.WAITING,
    }
    for status, api_status in expected.items():
        params = fake.dlr("0A00000012345678", status, "6" if status == "failed" else "0")
        for build in (get_dlr, post_form_dlr, post_json_dlr):
            [result] = await vg.webhook(build(params))
            assert result.partnerMessageId == "0A00000012345678"
            assert (result.apiStatus, result.partnerStatus) == (api_status, status), build
            assert result.smsOperator == "28601"
    [failed] = await vg.webhook(get_dlr(fake.dlr("M1", "failed", "6")))
    assert failed.partnerDetail == "failed, err-code 6"


@pytest.mark.parametrize(
    "request_",
    [
        get_dlr({"status": "delivered", "api-key": KEY}),
        get_dlr({"messageId": "M1", "api-key": KEY}),
        post_json_dlr(b"{not json"),
        post_json_dlr([{"messageId": "M1"}]),
        WebhookRequest("POST", "https://x/webhooks/vg-1", {}, {}, b"", {}),
    ],
)
async def test_malformed_dlrs_are_400(request_: WebhookRequest) -> None:
    vg = adapter("http://127.0.0.1:9")
    with pytest.raises(WebhookError) as refused:
        await vg.webhook(request_)
    assert refused.value.status == 400 and "vg-1" in refused.value.detail


async def test_unsigned_dlrs_must_carry_this_accounts_api_key() -> None:
    fake = FakeVonage(KEY, SECRET)
    vg = adapter("http://127.0.0.1:9")
    params = fake.dlr("M1", "delivered")
    assert (await vg.webhook(get_dlr(params)))[0].apiStatus == ApiStatus.DELIVERED
    for forged in (
        {**params, "api-key": "zzzz9999"},
        {k: v for k, v in params.items() if k != "api-key"},
    ):
        with pytest.raises(WebhookError) as refused:
            await vg.webhook(get_dlr(forged))
        assert refused.value.status == 403
        assert KEY not in refused.value.detail


def test_signature_matches_an_independent_computation() -> None:
    params = {
        "messageId": "0A0000001234567B",
        "status": "delivered",
        "msisdn": "447700900000",
        "message-timestamp": "2020-01-01 12:00:00",
        "client-ref": "a=b&c",
        "timestamp": "1582650446",
        "nonce": "ec11dd3e-1e7f-4db5-9467-82b02cd223b9",
    }
    # Sorted by name; '&' and '=' in values become '_'; HMAC-SHA256 keyed by the secret.
    text = (
        "&client-ref=a_b_c&message-timestamp=2020-01-01 12:00:00&messageId=0A0000001234567B"
        "&msisdn=447700900000&nonce=ec11dd3e-1e7f-4db5-9467-82b02cd223b9&status=delivered"
        "&timestamp=1582650446"
    )
    expected = hmac.new(b"secret", text.encode(), hashlib.sha256).hexdigest().upper()
    assert signature(params, "secret") == expected
    assert signature({**params, "sig": "ignored"}, "secret") == expected


async def test_signed_dlrs_are_verified() -> None:
    fake = FakeVonage(KEY, SECRET, signature_secret=SIG_SECRET)
    vg = adapter("http://127.0.0.1:9", signature_secret=SIG_SECRET)
    params = fake.dlr("M1", "delivered", "0")
    assert len(params["sig"]) == 64 and params["sig"] == params["sig"].upper()
    for build in (get_dlr, post_form_dlr, post_json_dlr):
        [ok] = await vg.webhook(build(params))
        assert ok.apiStatus == ApiStatus.DELIVERED
    # Lower-case hex is the same signature.
    [lower] = await vg.webhook(get_dlr({**params, "sig": params["sig"].lower()}))
    assert lower.apiStatus == ApiStatus.DELIVERED
    forged_cases = [
        {**params, "status": "failed"},  # tampered after signing
        {**params, "sig": "0" * 64},
        {k: v for k, v in params.items() if k != "sig"},  # unsigned
        {**params, "sig": "é" * 64},  # not even hex
    ]
    other = FakeVonage(KEY, SECRET, signature_secret="another-secret-0123456789abcdef")
    forged_cases.append(other.dlr("M1", "delivered"))  # signed with another secret
    for forged in forged_cases:
        with pytest.raises(WebhookError) as refused:
            await vg.webhook(get_dlr(forged))
        assert refused.value.status == 403
        assert SIG_SECRET not in refused.value.detail


async def test_end_to_end_through_worker_and_reporter(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeVonage(KEY, SECRET, signature_secret=SIG_SECRET)
    fake.statuses["447700900099"] = ("7", "Number Barred")
    monkeypatch.setenv("MTA_TEST_VONAGE_KEY", KEY)
    monkeypatch.setenv("MTA_TEST_VONAGE_SECRET", SECRET)
    monkeypatch.setenv("MTA_TEST_VONAGE_SIG", SIG_SECRET)
    async with serve(fake.app) as url:
        env.accounts(
            f"""
[[account]]
id = 0
name = "vg-e2e"
adapter = "vonage"
default = true
[account.options]
url = "{url}"
api_key = "${{MTA_TEST_VONAGE_KEY}}"
api_secret = "${{MTA_TEST_VONAGE_SECRET}}"
signature_secret = "${{MTA_TEST_VONAGE_SIG}}"
callback_base_url = "https://mta.example.com"
timeout_s = 2.0
"""
        )
        tail = await env.tail()
        await env.start("worker", "reporter")
        body = {
            "messages": [
                {"mobileNumber": "447700900001", "text": "one", "sender": "ACME"},
                {"mobileNumber": "447700900002", "text": "x" * 300, "sender": "ACME"},
                {"mobileNumber": "447700900003", "text": "three", "sender": "ACME"},
                {"mobileNumber": "447700900099", "text": "barred", "sender": "ACME"},
            ]
        }
        mid = await env.publish(body, message_id="vg-batch-1")
        await tail.wait(lambda t: len(t.oks()) == 3 and len(t.finals()) == 1)
        barred = tail.by_id("FAIL")[f"{mid}:3"]
        assert (barred["partnerStatus"], barred["partnerDetail"]) == ("7", "Number Barred")
        oks = tail.by_id("OK")
        assert oks[f"{mid}:1"]["smsMessageCount"] == 2
        assert len(fake.calls) == 3
        assert {c["callback"] for c in fake.calls} == {"https://mta.example.com/webhooks/vg-e2e"}

        pids = {i: oks[f"{mid}:{i}"]["partnerMessageId"] for i in range(3)}
        receiver = VonageAdapter(
            {o.name: o.default for o in VonageAdapter.meta.options}
            | {"api_key": KEY, "api_secret": SECRET, "signature_secret": SIG_SECRET},
            AdapterContext("vg-e2e", 0),
        )
        results = []
        for i, status in ((0, "accepted"), (0, "delivered"), (1, "failed"), (2, "expired")):
            results += await receiver.webhook(get_dlr(fake.dlr(pids[i], status, "6")))
        store = await env.store()
        await store.push_receipts(
            "vg-e2e", {r.partnerMessageId: pack_result(r) for r in results if r.apiStatus.final}
        )
        await store.close()
        await tail.wait_finals(4)
        await asyncio.sleep(0.3)  # no more finals may come
    finals = {r["messageId"]: r for r in tail.finals()}
    assert len(tail.finals()) == 4
    assert finals[f"{mid}:0"]["apiStatus"] == "DELIVERED"
    assert finals[f"{mid}:1"]["apiStatus"] == "FAIL"
    assert finals[f"{mid}:1"]["partnerDetail"] == "failed, err-code 6"
    assert finals[f"{mid}:1"]["smsMessageCount"] == 2
    assert finals[f"{mid}:2"]["apiStatus"] == "TIMEOUT"


async def test_passes_the_conformance_kit() -> None:
    fake = FakeVonage(KEY, SECRET)
    async with serve(fake.app) as url:
        report = await assert_conformant(
            VonageAdapter,
            {
                "url": url,
                "api_key": KEY,
                "api_secret": SECRET,
                "signature_secret": SIG_SECRET,
                "timeout_s": 2.0,
            },
            make_partner_fail=fake.fail_all,
            sender="ACME",
            account_name="vg-kit",
        )
    assert report["send"].outcome.value == "pass"
    assert report["error_kinds"].outcome.value == "pass"
    assert report["secrets"].outcome.value == "pass"
    # Login ignores secret_key (credentials are options), so the kit's NOK-login check is
    # skipped; refused credentials are tested above.
    assert report["nok_login"].outcome.value == "skip"
    assert any(c.get("type") == "unicode" for c in fake.calls)  # the kit's Unicode message


async def test_end_to_end_refused_sender_goes_again_with_the_fallback_sender(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeVonage(KEY, SECRET)
    fake.sender_statuses["BADSENDER"] = ("15", "Illegal Sender Address - rejected")
    monkeypatch.setenv("MTA_TEST_VONAGE_KEY", KEY)
    monkeypatch.setenv("MTA_TEST_VONAGE_SECRET", SECRET)
    async with serve(fake.app) as url:
        env.accounts(
            f"""
[[account]]
id = 0
name = "vg-fb"
adapter = "vonage"
default = true
sender = "BADSENDER"
fallback_sender = "INFO"
[account.options]
url = "{url}"
api_key = "${{MTA_TEST_VONAGE_KEY}}"
api_secret = "${{MTA_TEST_VONAGE_SECRET}}"
timeout_s = 2.0
"""
        )
        tail = await env.tail()
        await env.start("worker", "reporter")
        mid = await env.publish({"messages": [{"mobileNumber": "447700900091", "text": "hi"}]})
        await tail.wait(lambda t: len(t.oks()) == 1)
        ok = tail.by_id("OK")[f"{mid}:0"]
        receiver = adapter(url, account="vg-fb")
        results = await receiver.webhook(get_dlr(fake.dlr(ok["partnerMessageId"], "delivered")))
        store = await env.store()
        await store.push_receipts("vg-fb", {r.partnerMessageId: pack_result(r) for r in results})
        await store.close()
        (final,) = await tail.wait_finals(1)
    assert [call["from"] for call in fake.calls] == ["INFO"]  # the refused one was not taken
    assert "sent with fallback sender 'INFO'" in ok["partnerDetail"]
    assert "rejected sender 'BADSENDER'" in ok["partnerDetail"]
    assert "Illegal Sender Address" in ok["partnerDetail"]
    assert final["apiStatus"] == "DELIVERED" and final["messageId"] == f"{mid}:0"
