"""The Twilio adapter against a fake Twilio on a real loopback socket, and through the pipeline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, tzinfo
from typing import Any
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

import pytest
from mta.adapters.twilio import (
    SENDER_CODES,
    STATUS_MAP,
    TwilioAdapter,
    map_status,
    signature,
    url_variants,
)

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
from mta.contract import (
    REASON_SENDER,
    ApiStatus,
    SmsMessage,
    SmsReportRequest,
    SmsResult,
    SmsSendRequest,
    format_time,
    pack_result,
)
from mta.testing import assert_conformant
from tests.conftest import Env
from tests.fakes.twilio import FakeTwilio, Fate, signed_callback, twilio_signature
from tests.httpserver import serve

PUBLIC = "https://mta.example.com"


def options(fake: FakeTwilio, url: str, **changes: Any) -> dict[str, Any]:
    values = {o.name: o.default for o in TwilioAdapter.meta.options}
    values.update(url=url, account_sid=fake.account_sid, auth_token=fake.auth_token)
    values.update(changes)
    return values


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeTwilio, str]]:
    partner = FakeTwilio()
    async with serve(partner.app) as url:
        yield partner, url


def adapter_for(
    fake: FakeTwilio, url: str, name: str = "tw-1", tz: tzinfo = UTC, **changes: Any
) -> TwilioAdapter:
    return TwilioAdapter(options(fake, url, **changes), AdapterContext(name, 7, tz=tz))


def expire_in(minutes: float, tz: tzinfo = UTC) -> str:
    """An MMP ``expireTime`` (``yyyyMMddHHmm`` in ``tz``) about ``minutes`` from now."""
    return format_time(time.time() + minutes * 60, tz)


def msg(number: str, text: str = "hello", sender: str = "15005550006") -> SmsMessage:
    return SmsMessage(mobileNumber=number, text=text, sender=sender)


def assert_no_secret(fake: FakeTwilio, *texts: str) -> None:
    for text in texts:
        assert fake.account_sid not in text and fake.auth_token not in text, text


# --- metadata, mapping, signing ------------------------------------------------------------
def test_meta_declares_credentials_and_patterns() -> None:
    meta = TwilioAdapter.meta
    for name in ("account_sid", "auth_token"):
        spec = meta.option(name)
        assert spec is not None and spec.required and spec.secret, name
    service = meta.option("messaging_service_sid")
    assert service is not None and not service.required and service.default == ""
    assert meta.option("url") is not None and meta.option("callback_base_url") is not None
    assert meta.default_url == "https://api.twilio.com"
    assert meta.pattern == SendPattern.LOOP and meta.max_concurrency == 16
    assert meta.receipts == ReceiptMode.BOTH


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("accepted", ApiStatus.WAITING),
        ("scheduled", ApiStatus.WAITING),
        ("queued", ApiStatus.WAITING),
        ("sending", ApiStatus.WAITING),
        ("sent", ApiStatus.WAITING),
        ("delivered", ApiStatus.DELIVERED),
        ("read", ApiStatus.DELIVERED),
        ("undelivered", ApiStatus.FAIL),
        ("failed", ApiStatus.FAIL),
        ("canceled", ApiStatus.FAIL),
        ("partially_delivered", ApiStatus.FAIL),
        ("receiving", ApiStatus.WAITING),  # not an outbound state: the deadline decides
        ("some-future-state", ApiStatus.WAITING),
    ],
)
def test_status_mapping(status: str, expected: ApiStatus) -> None:
    assert map_status(status) == expected


def test_mapping_table_covers_every_documented_outbound_status() -> None:
    documented = {
        "queued", "sending", "sent", "failed", "delivered", "undelivered", "accepted",
        "scheduled", "read", "partially_delivered", "canceled",
    }  # fmt: skip
    assert documented == set(STATUS_MAP)


def test_signature_matches_twilios_documented_example() -> None:
    # The example of https://www.twilio.com/docs/usage/security#validating-requests
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+12349013030",
        "Digits": "1234",
        "From": "+12349013030",
        "To": "+18005551212",
    }
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert signature("12345", url, params.items()) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    assert signature("12346", url, params.items()) != "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


def test_url_variants_add_or_drop_the_default_port() -> None:
    assert url_variants("https://a.example/x") == ["https://a.example/x", "https://a.example:443/x"]
    assert url_variants("https://a.example:443/x") == [
        "https://a.example:443/x",
        "https://a.example/x",
    ]
    assert url_variants("http://a.example:8080/x") == ["http://a.example:8080/x"]


def test_bad_account_sid_is_a_config_error_that_does_not_echo_it() -> None:
    fake = FakeTwilio()
    with pytest.raises(ValueError, match="letters and digits") as bad:
        adapter_for(fake, "http://127.0.0.1:1", account_sid="AC/../x")
    assert "AC/../x" not in str(bad.value)


# --- send --------------------------------------------------------------------------------
async def test_send_posts_one_form_per_message_and_answers_in_order(
    fake: tuple[FakeTwilio, str],
) -> None:
    partner, url = fake
    adapter = adapter_for(partner, url)
    assert await adapter.login("ignored")
    long_text = "x" * 200
    request = SmsSendRequest(
        [msg("905332141354"), msg("447700900123", long_text, sender="ACME"), msg("4915123456789")]
    )
    response = await adapter.send(request)
    assert [r.apiStatus for r in response.results] == [ApiStatus.OK] * 3
    sent = partner.sent()
    assert len(sent) == 3
    by_to = {form["To"]: form for form in sent}
    assert by_to["+905332141354"] == {
        "To": "+905332141354",
        "From": "+15005550006",  # a numeric sender of 7+ digits is a phone number: E.164
        "Body": "hello",
    }  # no StatusCallback without callback_base_url, no MessagingServiceSid
    assert by_to["+447700900123"] == {"To": "+447700900123", "From": "ACME", "Body": long_text}
    for message, result in zip(request.messages, response.results, strict=True):
        stored = partner.messages[result.partnerMessageId]
        assert stored["to"] == "+" + message.mobileNumber  # results[i] ↔ messages[i]
        assert result.partnerStatus == "queued"
        assert result.smsMessageCount == int(stored["num_segments"])
    assert response.results[1].smsMessageCount == 2
    await adapter.destroy()


async def test_messaging_service_and_callback_url_are_sent(fake: tuple[FakeTwilio, str]) -> None:
    partner, url = fake
    adapter = adapter_for(
        partner, url, messaging_service_sid="MG" + "1" * 32, callback_base_url=PUBLIC + "/"
    )
    response = await adapter.send(SmsSendRequest([msg("905332141354", sender="ACME")]))
    [result] = response.results
    assert result.apiStatus == ApiStatus.OK and result.partnerStatus == "accepted"
    [form] = partner.sent()
    assert form == {
        "To": "+905332141354",
        "Body": "hello",
        "MessagingServiceSid": "MG" + "1" * 32,  # instead of From
        "StatusCallback": f"{PUBLIC}/webhooks/tw-1",
    }
    await adapter.destroy()


async def test_per_message_rejection_is_a_fail_result(fake: tuple[FakeTwilio, str]) -> None:
    partner, url = fake
    partner.rejected.add("+15551230003")
    adapter = adapter_for(partner, url)
    response = await adapter.send(
        SmsSendRequest([msg("15551230001"), msg("15551230003"), msg("15551230002", sender="")])
    )
    ok, rejected, no_sender = response.results
    assert ok.apiStatus == ApiStatus.OK and ok.partnerMessageId.startswith("SM")
    assert rejected.apiStatus == ApiStatus.FAIL and rejected.partnerStatus == "21211"
    assert "Twilio error 21211" in rejected.partnerDetail
    assert "The 'To' number +15551230003 is not a valid phone number." in rejected.partnerDetail
    assert "'tw-1'" in rejected.partnerDetail
    assert no_sender.apiStatus == ApiStatus.FAIL and no_sender.partnerStatus == "NO_SENDER"
    assert "messaging_service_sid" in no_sender.partnerDetail
    assert len(partner.sent()) == 2  # the message without a sender never left
    await adapter.destroy()


async def test_refused_from_is_marked_for_the_fallback_sender(fake: tuple[FakeTwilio, str]) -> None:
    partner, url = fake
    for n, code in enumerate(sorted(SENDER_CODES)):
        partner.reject_senders[f"BAD{n}"] = code
    adapter = adapter_for(partner, url)
    senders = [f"BAD{n}" for n in range(len(SENDER_CODES))]
    response = await adapter.send(
        SmsSendRequest([msg(f"1555123{n:04d}", sender=s) for n, s in enumerate(senders)])
    )
    refused = await adapter.send(SmsSendRequest([msg("15551230100", sender="INFO")]))
    partner.rejected.add("+15551230101")
    to_refused = await adapter.send(SmsSendRequest([msg("15551230101", sender="INFO")]))
    await adapter.destroy()
    got = [(r.apiStatus, r.partnerStatus, r.reason) for r in response.results]
    assert got == [(ApiStatus.FAIL, str(c), REASON_SENDER) for c in sorted(SENDER_CODES)]
    assert {21212, 21606, 21659}.issubset(SENDER_CODES)
    assert "Invalid 'From' Phone Number" in response.results[0].partnerDetail
    assert refused.results[0].apiStatus == ApiStatus.OK
    # A refused To (21211) is not the sender's fault: no fallback.
    assert [(r.partnerStatus, r.reason) for r in to_refused.results] == [("21211", "")]


async def test_expire_time_becomes_validity_period_in_seconds_within_bounds(
    fake: tuple[FakeTwilio, str],
) -> None:
    partner, url = fake
    istanbul = ZoneInfo("Europe/Istanbul")  # UTC+3 all year
    adapter = adapter_for(partner, url, tz=istanbul)
    response = await adapter.send(
        SmsSendRequest(
            [
                SmsMessage("15551230201", "1 h", "ACME", expireTime=expire_in(60, istanbul)),
                SmsMessage("15551230202", "1 day", "ACME", expireTime=expire_in(1440, istanbul)),
                SmsMessage("15551230203", "gone", "ACME", expireTime=expire_in(-3, istanbul)),
                SmsMessage("15551230204", "none", "ACME"),
                SmsMessage("15551230205", "utc", "ACME", expireTime=expire_in(300, UTC)),
            ]
        )
    )
    await adapter.destroy()
    assert [r.apiStatus for r in response.results] == [ApiStatus.OK] * 5
    validity = {f["To"]: f.get("ValidityPeriod") for f in partner.sent()}
    assert 3540 <= int(validity["+15551230201"] or 0) <= 3600
    assert validity["+15551230202"] == "36000"  # Twilio's maximum, 10 hours
    assert validity["+15551230203"] == "1"  # below the minimum still goes, with the minimum
    assert validity["+15551230204"] is None
    assert 7140 <= int(validity["+15551230205"] or 0) <= 7200  # read in the account's zone


async def test_throttled_is_retryable_with_retry_after(fake: tuple[FakeTwilio, str]) -> None:
    partner, url = fake
    partner.throttle, partner.retry_after = 1, "7"
    adapter = adapter_for(partner, url)
    with pytest.raises(ThrottledError) as throttled:
        await adapter.send(SmsSendRequest([msg("905332141354")]))
    assert throttled.value.retry_after == 7.0
    assert "HTTP 429" in throttled.value.detail and "20429" in throttled.value.detail
    assert "'tw-1'" in throttled.value.detail
    assert_no_secret(partner, throttled.value.detail)
    # The throttled request was not processed: the retry goes through.
    response = await adapter.send(SmsSendRequest([msg("905332141354")]))
    assert response.results[0].apiStatus == ApiStatus.OK and len(partner.messages) == 1
    await adapter.destroy()


async def test_server_error_and_timeout_are_transient(fake: tuple[FakeTwilio, str]) -> None:
    partner, url = fake
    adapter = adapter_for(partner, url, timeout_s=0.3)
    partner.server_errors = 1
    with pytest.raises(TransientError) as server:
        await adapter.send(SmsSendRequest([msg("905332141354")]))
    assert not isinstance(server.value, ThrottledError)
    assert "HTTP 500" in server.value.detail and "Twilio error 20500" in server.value.detail
    partner.delay_s = 1.0
    with pytest.raises(TransientError, match="timed out") as slow:
        await adapter.send(SmsSendRequest([msg("905332141354")]))
    assert "may have accepted" in slow.value.detail  # a POST retry can duplicate: say so
    assert_no_secret(partner, server.value.detail, slow.value.detail)
    await adapter.destroy()


async def test_bad_credentials_login_nok_and_auth_errors(fake: tuple[FakeTwilio, str]) -> None:
    partner, url = fake
    adapter = adapter_for(partner, url, auth_token="wrong-token")
    assert await adapter.login("") is False
    assert await adapter.test_credentials() is False
    with pytest.raises(AuthError) as send_error:
        await adapter.send(SmsSendRequest([msg("905332141354")]))
    assert "HTTP 401" in send_error.value.detail and "Twilio error 20003" in send_error.value.detail
    assert "auth_token" in send_error.value.detail  # says what to check
    with pytest.raises(AuthError):
        await adapter.report(SmsReportRequest("", ["SM" + "0" * 32, "SM" + "1" * 32]))
    assert_no_secret(partner, send_error.value.detail)
    assert partner.requests[0].authorization.startswith("Basic ")
    await adapter.destroy()
    good = adapter_for(partner, url)
    assert await good.login("") and await good.test_credentials()
    partner.account_status = "suspended"
    with pytest.raises(AuthError, match="suspended"):
        await good.login("")
    assert await good.test_credentials() is False
    assert await good.test_connection() and await good.test_proxy()
    await good.destroy()


async def test_other_4xx_is_permanent_with_twilios_text_and_masked_sid(
    fake: tuple[FakeTwilio, str],
) -> None:
    partner, url = fake
    adapter = adapter_for(partner, url + "/typo")  # a wrong base URL: Twilio answers 20404
    with pytest.raises(PermanentError) as bad:
        await adapter.send(SmsSendRequest([msg("905332141354")]))
    assert not isinstance(bad.value, AuthError)
    detail = bad.value.detail
    assert "HTTP 404" in detail and "Twilio error 20404" in detail
    assert "/typo/2010-04-01/Accounts/{AccountSid}/Messages.json was not found" in detail
    assert_no_secret(partner, detail)
    await adapter.destroy()


async def test_unreachable_partner_is_transient_on_login() -> None:
    partner = FakeTwilio()
    async with serve(partner.app) as url:
        pass  # closed once the server stops
    adapter = adapter_for(partner, url, timeout_s=0.5)
    with pytest.raises(TransientError) as down:
        await adapter.login("")
    assert_no_secret(partner, down.value.detail)
    assert not await adapter.test_connection()
    await adapter.destroy()


def test_secrets_are_absent_from_repr_and_str() -> None:
    partner = FakeTwilio()
    adapter = adapter_for(partner, "http://127.0.0.1:1")
    assert_no_secret(partner, repr(adapter), str(adapter))


# --- report ------------------------------------------------------------------------------
async def test_report_maps_every_status_group(fake: tuple[FakeTwilio, str]) -> None:
    partner, url = fake
    fates: dict[str, Fate | str] = {
        "+15550000001": Fate("delivered"),
        "+15550000002": Fate("read"),
        "+15550000003": Fate("undelivered", 30003, "Unreachable destination handset"),
        "+15550000004": Fate("failed", 30007, "Message filtered"),
        "+15550000005": Fate("canceled"),
        "+15550000006": Fate("partially_delivered", 30008, "Unknown error"),
        "+15550000007": "stuck",
    }
    partner.fates.update(fates)
    adapter = adapter_for(partner, url)
    sent = await adapter.send(SmsSendRequest([msg(to[1:]) for to in fates]))
    sids = [r.partnerMessageId for r in sent.results]
    expected_waiting = ["sending", "sent"]
    for step in expected_waiting:
        response = await adapter.report(SmsReportRequest("", sids))
        assert {r.partnerMessageId for r in response.results} == set(sids)
        assert {(r.apiStatus, r.partnerStatus) for r in response.results} == {
            (ApiStatus.WAITING, step)
        }
    response = await adapter.report(SmsReportRequest("", sids))
    by_id = {r.partnerMessageId: r for r in response.results}
    got = [(by_id[s].apiStatus, by_id[s].partnerStatus) for s in sids]
    assert got == [
        (ApiStatus.DELIVERED, "delivered"),
        (ApiStatus.DELIVERED, "read"),
        (ApiStatus.FAIL, "undelivered"),
        (ApiStatus.FAIL, "failed"),
        (ApiStatus.FAIL, "canceled"),
        (ApiStatus.FAIL, "partially_delivered"),
        (ApiStatus.WAITING, "sent"),
    ]
    undelivered = by_id[sids[2]].partnerDetail
    assert "30003" in undelivered and "Unreachable destination handset" in undelivered
    assert by_id[sids[0]].partnerDetail == "" and by_id[sids[0]].smsMessageCount == 1
    await adapter.destroy()


async def test_report_unknown_ids_fail_and_errors_leave_ids_waiting(
    fake: tuple[FakeTwilio, str],
) -> None:
    partner, url = fake
    adapter = adapter_for(partner, url)
    sent = await adapter.send(SmsSendRequest([msg("905332141354")]))
    known = sent.results[0].partnerMessageId
    unknown = "SM" + "e" * 32
    response = await adapter.report(SmsReportRequest("", [known, unknown, "../etc"]))
    by_id = {r.partnerMessageId: r for r in response.results}
    assert by_id[known].apiStatus == ApiStatus.WAITING
    assert by_id[unknown].apiStatus == ApiStatus.FAIL
    assert by_id[unknown].partnerDetail.startswith("unknown message")
    assert by_id[unknown].partnerStatus == "20404"
    assert by_id["../etc"].apiStatus == ApiStatus.FAIL
    assert not any(r.path.endswith("etc.json") for r in partner.requests)
    # One of two fetches throttled: the other is answered, the throttled one left out.
    partner.throttle = 1
    response = await adapter.report(SmsReportRequest("", [known, unknown]))
    assert len(response.results) == 1
    # Every fetch throttled: the error reaches the reporter.
    partner.throttle = 2
    with pytest.raises(ThrottledError):
        await adapter.report(SmsReportRequest("", [known, unknown]))
    await adapter.destroy()


async def test_send_of_several_messages_does_not_resend_accepted_ones(
    fake: tuple[FakeTwilio, str],
) -> None:
    """Called with several messages (not what the worker does: LOOP), a transient error on
    one becomes its FAIL result rather than an exception that would resend the others."""
    partner, url = fake
    adapter = adapter_for(partner, url)
    partner.server_errors = 1
    response = await adapter.send(SmsSendRequest([msg("15551230001"), msg("15551230002")]))
    statuses = sorted(r.apiStatus for r in response.results)
    assert statuses == [ApiStatus.FAIL, ApiStatus.OK]
    failed = next(r for r in response.results if r.apiStatus == ApiStatus.FAIL)
    assert failed.partnerStatus == "TRANSIENT" and "HTTP 500" in failed.partnerDetail
    await adapter.destroy()


# --- webhook -----------------------------------------------------------------------------
def webhook_request(url: str, headers: dict[str, str], body: bytes) -> WebhookRequest:
    return WebhookRequest(
        method="POST",
        url=url,
        headers=headers,
        query={},
        body=body,
        form=dict(parse_qsl(body.decode(), keep_blank_values=True)),
    )


async def test_webhook_accepts_signed_callbacks_on_the_public_url() -> None:
    partner = FakeTwilio()
    adapter = adapter_for(partner, "http://127.0.0.1:1", callback_base_url=PUBLIC)
    public = f"{PUBLIC}/webhooks/tw-1"
    internal = "http://10.0.0.5:8080/webhooks/tw-1"  # what the server sees behind a proxy
    sid = "SM" + "a" * 32
    headers, body = signed_callback(partner, public, sid, "undelivered", "30003")
    [result] = await adapter.webhook(webhook_request(internal, headers, body))
    assert result.partnerMessageId == sid and result.apiStatus == ApiStatus.FAIL
    assert result.partnerStatus == "undelivered" and "30003" in result.partnerDetail
    headers, body = signed_callback(partner, public, sid, "delivered")
    [result] = await adapter.webhook(webhook_request(internal, headers, body))
    assert result.apiStatus == ApiStatus.DELIVERED and result.partnerDetail == ""
    headers, body = signed_callback(partner, public, sid, "sent")
    [result] = await adapter.webhook(webhook_request(internal, headers, body))
    assert result.apiStatus == ApiStatus.WAITING
    # Twilio may sign the URL with the default port spelled out.
    headers, body = signed_callback(
        partner, "https://mta.example.com:443/webhooks/tw-1", sid, "read"
    )
    [result] = await adapter.webhook(webhook_request(internal, headers, body))
    assert result.apiStatus == ApiStatus.DELIVERED


async def test_webhook_without_callback_base_url_signs_the_request_url() -> None:
    partner = FakeTwilio()
    adapter = adapter_for(partner, "http://127.0.0.1:1")
    seen = "http://127.0.0.1:8080/webhooks/tw-1"
    headers, body = signed_callback(partner, seen, "SM" + "b" * 32, "failed", "30007")
    [result] = await adapter.webhook(webhook_request(seen, headers, body))
    assert result.apiStatus == ApiStatus.FAIL and "30007" in result.partnerDetail
    with pytest.raises(WebhookError) as moved:  # a proxy changed the URL the server sees
        await adapter.webhook(webhook_request("http://other:9/webhooks/tw-1", headers, body))
    assert moved.value.status == 403 and "callback_base_url" in moved.value.detail


async def test_webhook_refuses_forged_foreign_and_malformed_calls() -> None:
    partner = FakeTwilio()
    adapter = adapter_for(partner, "http://127.0.0.1:1", callback_base_url=PUBLIC)
    public = f"{PUBLIC}/webhooks/tw-1"
    sid = "SM" + "c" * 32

    async def refused(request: WebhookRequest) -> WebhookError:
        with pytest.raises(WebhookError) as caught:
            await adapter.webhook(request)
        assert_no_secret(partner, caught.value.detail)
        return caught.value

    headers, body = signed_callback(partner, public, sid, "delivered")
    tampered = body.replace(b"delivered", b"failed")
    assert (await refused(webhook_request(public, headers, tampered))).status == 403
    unsigned = {k: v for k, v in headers.items() if k != "x-twilio-signature"}
    assert (await refused(webhook_request(public, unsigned, body))).status == 403
    other_key = FakeTwilio(auth_token="another-accounts-token")
    other_key.account_sid = partner.account_sid
    forged_headers, forged = signed_callback(other_key, public, sid, "delivered")
    assert (await refused(webhook_request(public, forged_headers, forged))).status == 403
    # Signed with our token but naming another Twilio account: refused.
    foreign_headers, foreign = signed_callback(
        partner, public, sid, "delivered", extra={"AccountSid": "AC" + "9" * 32}
    )
    foreign_error = await refused(webhook_request(public, foreign_headers, foreign))
    assert foreign_error.status == 403 and "another Twilio account" in foreign_error.detail
    # Correctly signed but without MessageStatus: malformed.
    bare = {"AccountSid": partner.account_sid, "MessageSid": sid}
    bare_headers, _ = signed_callback(partner, public, sid, "x")
    bare_headers["x-twilio-signature"] = twilio_signature(partner.auth_token, public, bare)
    bare_body = "&".join(f"{k}={v}" for k, v in bare.items()).encode()
    assert (await refused(webhook_request(public, bare_headers, bare_body))).status == 400
    # Not a form at all.
    json_headers = {**headers, "content-type": "application/json"}
    assert (await refused(webhook_request(public, json_headers, b'{"a": 1}'))).status == 400


# --- end to end --------------------------------------------------------------------------
ACCOUNTS = """
[[account]]
id = 7
name = "tw"
adapter = "twilio"
default = true
[account.options]
url = "{url}"
account_sid = "${{TEST_TWILIO_SID}}"
auth_token = "${{TEST_TWILIO_TOKEN}}"
callback_base_url = "{public}"
timeout_s = 2.0
"""


async def test_end_to_end_through_worker_and_reporter(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    partner = FakeTwilio()
    partner.fates.update(
        {
            "+15551230001": Fate("delivered"),
            "+15551230002": Fate("undelivered", 30003, "Unreachable destination handset"),
            "+15551230004": "stuck",  # only the pushed status callback finishes it
            "+15551230005": Fate("read"),
        }
    )
    partner.rejected.add("+15551230003")
    monkeypatch.setenv("TEST_TWILIO_SID", partner.account_sid)
    monkeypatch.setenv("TEST_TWILIO_TOKEN", partner.auth_token)
    async with serve(partner.app) as url:
        env.accounts(ACCOUNTS.format(url=url, public=PUBLIC))
        tail = await env.tail()
        await env.start("worker", "reporter")
        numbers = [f"1555123000{i}" for i in range(1, 6)]
        batch = {
            "messages": [
                {"mobileNumber": n, "text": f"hi {n}", "sender": "15005550006", "accountId": 7}
                for n in numbers
            ]
        }
        mid = await env.publish(batch, message_id="tw-e2e")
        await tail.wait(lambda t: len(t.oks()) >= 4 and len(t.finals()) >= 1)
        stuck_sid = next(s for s, m in partner.messages.items() if m["to"] == "+15551230004")
        await tail.wait(
            lambda t: partner.messages[stuck_sid]["status"] == "sent", timeout=10
        )  # polled, still WAITING: now Twilio pushes its final status
        adapter = TwilioAdapter(
            options(partner, url, callback_base_url=PUBLIC), AdapterContext("tw", 7)
        )
        headers, body = signed_callback(partner, f"{PUBLIC}/webhooks/tw", stuck_sid, "delivered")
        results: list[SmsResult] = await adapter.webhook(
            webhook_request("http://127.0.0.1:8080/webhooks/tw", headers, body)
        )
        store = await env.store()
        await store.push_receipts(
            "tw", {r.partnerMessageId: pack_result(r) for r in results if r.apiStatus.final}
        )
        await store.close()
        finals = await tail.wait_finals(5)
        await asyncio.sleep(0.3)  # nothing more may come
        await adapter.destroy()
    assert len(tail.finals()) == 5 and len(finals) == 5
    got = {r["messageId"]: r for r in tail.finals()}
    assert got[f"{mid}:0"]["apiStatus"] == "DELIVERED"
    assert got[f"{mid}:1"]["apiStatus"] == "FAIL"
    assert got[f"{mid}:1"]["partnerStatus"] == "undelivered"
    assert "30003" in got[f"{mid}:1"]["partnerDetail"]
    assert got[f"{mid}:2"]["apiStatus"] == "FAIL" and got[f"{mid}:2"]["partnerStatus"] == "21211"
    assert got[f"{mid}:3"]["apiStatus"] == "DELIVERED"
    assert got[f"{mid}:3"]["partnerMessageId"] == stuck_sid
    assert (
        got[f"{mid}:4"]["apiStatus"] == "DELIVERED" and got[f"{mid}:4"]["partnerStatus"] == "read"
    )
    assert all(r["accountId"] == 7 for r in tail.results)
    forms = partner.sent()
    assert len(forms) == 5
    assert {f["StatusCallback"] for f in forms} == {f"{PUBLIC}/webhooks/tw"}
    assert {f["From"] for f in forms} == {"+15005550006"}
    assert partner.messages[stuck_sid]["status"] == "sent"  # its final came from the push


async def test_conformance_kit(fake: tuple[FakeTwilio, str]) -> None:
    partner, url = fake
    report = await assert_conformant(
        TwilioAdapter,
        {
            "url": url,
            "account_sid": partner.account_sid,
            "auth_token": partner.auth_token,
            "timeout_s": 2.0,
        },
        sender="15005550006",
        final_within_s=10.0,
    )
    assert report["secrets"].outcome.value == "pass"


async def test_end_to_end_refused_sender_goes_again_with_the_fallback_sender(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    partner = FakeTwilio()
    partner.reject_senders["BADSENDER"] = 21212
    monkeypatch.setenv("TEST_TWILIO_SID", partner.account_sid)
    monkeypatch.setenv("TEST_TWILIO_TOKEN", partner.auth_token)
    async with serve(partner.app) as url:
        env.accounts(
            ACCOUNTS.format(url=url, public=PUBLIC).replace(
                "default = true\n",
                'default = true\nsender = "BADSENDER"\nfallback_sender = "INFO"\n',
            )
        )
        tail = await env.tail()
        await env.start("worker", "reporter")
        mid = await env.publish({"messages": [{"mobileNumber": "15551230301", "text": "hi"}]})
        (final,) = await tail.wait_finals(1)
    ok = tail.by_id("OK")[f"{mid}:0"]
    assert [f.get("From") for f in partner.sent()] == ["BADSENDER", "INFO"]
    assert "sent with fallback sender 'INFO'" in ok["partnerDetail"]
    assert "rejected sender 'BADSENDER'" in ok["partnerDetail"]
    assert "Twilio error 21212" in ok["partnerDetail"]
    assert final["apiStatus"] == "DELIVERED" and final["partnerMessageId"] == ok["partnerMessageId"]
