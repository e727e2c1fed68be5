"""The Infobip adapter against a fake Infobip over a real loopback socket, and end to end."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from mta.adapters.infobip import InfobipAdapter

from mta.adapter import (
    AdapterContext,
    AuthError,
    PermanentError,
    ReceiptMode,
    ReceiptSink,
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
    SmsSendRequest,
    format_time,
    pack_result,
    unpack_result,
)
from mta.testing import assert_conformant
from tests.conftest import Env
from tests.fakes.infobip import FakeInfobip
from tests.httpserver import serve

KEY = "ib-secret-key-7f3a9c"
TOKEN = "hook-token-91bd"


@dataclass
class Partner:
    fake: FakeInfobip
    url: str

    def adapter(self, account: str = "ib-1", tz: tzinfo = UTC, **changes: Any) -> InfobipAdapter:
        options = {o.name: o.default for o in InfobipAdapter.meta.options}
        options.update(url=self.url, api_key=KEY, timeout_s=2.0)
        options.update(changes)
        return InfobipAdapter(options, AdapterContext(account, 7, tz=tz))


def expire_in(minutes: float, tz: tzinfo = UTC) -> str:
    """An MMP ``expireTime`` (``yyyyMMddHHmm`` in ``tz``) about ``minutes`` from now."""
    return format_time(time.time() + minutes * 60, tz)


@pytest.fixture
async def partner() -> AsyncIterator[Partner]:
    fake = FakeInfobip(api_key=KEY)
    async with serve(fake.app) as url:
        yield Partner(fake, url)


def request(*numbers: str, sender: str = "") -> SmsSendRequest:
    return SmsSendRequest(
        [SmsMessage(number, f"hello {n}", sender=sender) for n, number in enumerate(numbers)]
    )


def test_meta_declares_credentials_and_receipts() -> None:
    meta = InfobipAdapter.meta
    api_key = meta.option("api_key")
    assert api_key is not None and api_key.required and api_key.secret
    token = meta.option("webhook_token")
    assert token is not None and token.secret and not token.required
    proxy_password = meta.option("proxy_password")
    assert proxy_password is not None and proxy_password.secret
    assert meta.default_url == "https://api.infobip.com"
    assert meta.pattern == SendPattern.BATCH and meta.max_batch == 100
    assert meta.receipts == ReceiptMode.BOTH
    assert InfobipAdapter({"api_key": KEY}).base_url == "https://api.infobip.com"


async def test_send_batch_with_our_ids_and_per_message_rejection(partner: Partner) -> None:
    partner.fake.rejects["905330000002"] = "REJECTED_DESTINATION"
    adapter = partner.adapter()
    req = SmsSendRequest(
        [
            SmsMessage("905330000001", "hello one", sender="ACME"),
            SmsMessage("905330000002", "hello two", sender="ACME"),
            SmsMessage("905330000003", "hello three"),
        ]
    )
    response = await adapter.send(req)
    await adapter.destroy()
    ok1, rejected, ok3 = response.results
    assert [r.apiStatus for r in response.results] == [ApiStatus.OK, ApiStatus.FAIL, ApiStatus.OK]
    # One request carried the whole batch, each message with our own messageId.
    assert len(partner.fake.bodies) == 1
    body = partner.fake.bodies[0]
    assert response.partnerPacketId == body["bulkId"] and body["bulkId"].endswith("-a1")
    sent_ids = [m["destinations"][0]["messageId"] for m in body["messages"]]
    assert sent_ids == [ok1.partnerMessageId, rejected.partnerMessageId, ok3.partnerMessageId]
    assert len(set(sent_ids)) == 3 and all(i.startswith("mta") for i in sent_ids)
    assert [m["destinations"][0]["to"] for m in body["messages"]] == [
        "905330000001",
        "905330000002",
        "905330000003",
    ]
    assert body["messages"][0]["from"] == "ACME" and "from" not in body["messages"][2]
    assert body["messages"][1]["text"] == "hello two"
    assert all("notifyUrl" not in m for m in body["messages"])  # no callback_base_url
    assert ok1.partnerStatus == "PENDING_ACCEPTED"
    assert rejected.partnerStatus == "REJECTED_DESTINATION"
    assert "Invalid destination address" in rejected.partnerDetail
    assert "905330000002" in rejected.partnerDetail


async def test_sender_rejection_is_marked_for_the_fallback_sender(partner: Partner) -> None:
    partner.fake.reject_senders["BLOCKED"] = "REJECTED_SENDER"
    partner.fake.reject_senders["UNREGD"] = "REJECTED_SOURCE"
    adapter = partner.adapter()
    response = await adapter.send(
        SmsSendRequest(
            [
                SmsMessage("905330000301", "one", sender="BLOCKED"),
                SmsMessage("905330000302", "two", sender="UNREGD"),
                SmsMessage("905330000303", "three", sender="ACME"),
            ]
        )
    )
    await adapter.destroy()
    blocked, unregistered, fine = response.results
    assert (blocked.apiStatus, blocked.reason) == (ApiStatus.FAIL, REASON_SENDER)
    assert blocked.partnerStatus == "REJECTED_SENDER" and "blocklisted" in blocked.partnerDetail
    assert (unregistered.apiStatus, unregistered.reason) == (ApiStatus.FAIL, REASON_SENDER)
    assert (fine.apiStatus, fine.reason) == (ApiStatus.OK, "")
    partner.fake.rejects["905330000304"] = "REJECTED_DESTINATION"
    other = await partner.adapter().send(request("905330000304"))
    assert other.results[0].apiStatus == ApiStatus.FAIL and other.results[0].reason == ""


async def test_expire_time_becomes_validity_period_in_minutes_within_bounds(
    partner: Partner,
) -> None:
    istanbul = ZoneInfo("Europe/Istanbul")  # UTC+3 all year
    adapter = partner.adapter(tz=istanbul)
    expires = [
        expire_in(45, istanbul),
        expire_in(5 * 1440, istanbul),
        expire_in(-1, istanbul),
        "",
        expire_in(300, UTC),  # read in the account's zone: three hours less
    ]
    numbers = [f"90533000040{n}" for n in range(len(expires))]
    response = await adapter.send(
        SmsSendRequest(
            [
                SmsMessage(n, "hi", sender="ACME", expireTime=e)
                for n, e in zip(numbers, expires, strict=True)
            ]
        )
    )
    await adapter.destroy()
    assert [r.apiStatus for r in response.results] == [ApiStatus.OK] * len(numbers)
    sent = [m.get("validityPeriod") for m in partner.fake.bodies[0]["messages"]]
    assert sent[0] in (44, 45)
    assert sent[1] == 2880  # Infobip's 48 hours
    assert sent[2] == 1  # below the minimum still goes, with the minimum
    assert sent[3] is None
    assert sent[4] in (119, 120)


async def test_callback_url_and_token_are_told_to_infobip(partner: Partner) -> None:
    adapter = partner.adapter(callback_base_url="https://mta.example.com/")
    await adapter.send(request("905330000011"))
    await adapter.destroy()
    message = partner.fake.bodies[-1]["messages"][0]
    # Without a webhook_token the webhook is closed: Infobip is told no URL, reports are polled.
    assert "notifyUrl" not in message
    tokened = partner.adapter(callback_base_url="https://mta.example.com", webhook_token=TOKEN)
    await tokened.send(request("905330000012"))
    await tokened.destroy()
    message = partner.fake.bodies[-1]["messages"][0]
    assert message["notifyUrl"] == f"https://mta.example.com/webhooks/ib-1?token={TOKEN}"
    assert message["notifyContentType"] == "application/json"


async def test_report_maps_every_status_group(partner: Partner) -> None:
    outcomes = {
        "905330000021": ["PENDING_ENROUTE"],
        "905330000022": ["DELIVERED_TO_OPERATOR"],
        "905330000023": ["DELIVERED_TO_OPERATOR", "DELIVERED_TO_HANDSET"],
        "905330000024": ["UNDELIVERABLE_NOT_DELIVERED"],
        "905330000025": ["EXPIRED_EXPIRED"],
        "905330000026": ["REJECTED_NETWORK"],
    }
    partner.fake.outcomes.update(outcomes)
    adapter = partner.adapter()
    sent = await adapter.send(request(*outcomes))
    ids = [r.partnerMessageId for r in sent.results]
    response = await adapter.report(SmsReportRequest("", ids))
    await adapter.destroy()
    got = {r.partnerMessageId: r for r in response.results}
    assert set(got) == set(ids)
    expected = [
        (ApiStatus.WAITING, "PENDING_ENROUTE"),
        (ApiStatus.WAITING, "DELIVERED_TO_OPERATOR"),
        (ApiStatus.DELIVERED, "DELIVERED_TO_HANDSET"),
        (ApiStatus.FAIL, "UNDELIVERABLE_NOT_DELIVERED"),
        (ApiStatus.TIMEOUT, "EXPIRED_EXPIRED"),
        (ApiStatus.FAIL, "REJECTED_NETWORK"),
    ]
    assert [(got[i].apiStatus, got[i].partnerStatus) for i in ids] == expected
    undeliverable = got[ids[3]]
    assert "UNDELIVERABLE" in undeliverable.partnerDetail
    assert "EC_ABSENT_SUBSCRIBER" in undeliverable.partnerDetail  # the error object too
    assert got[ids[2]].smsMessageCount == 1 and got[ids[2]].smsOperator == "28601"
    # Drained without filters, at Infobip's largest page size.
    reads = [q for m, p, q in partner.fake.calls if p == "/sms/1/reports"]
    assert reads == ["limit=1000"]


async def test_reports_are_served_once_so_unasked_ones_are_kept(partner: Partner) -> None:
    adapter = partner.adapter()
    sent = await adapter.send(request("905330000031", "905330000032"))
    first, second = (r.partnerMessageId for r in sent.results)
    answer = await adapter.report(SmsReportRequest("", [first, "unknown-id"]))
    assert [(r.partnerMessageId, r.apiStatus) for r in answer.results] == [
        (first, ApiStatus.DELIVERED)
    ]
    assert not partner.fake.reports  # Infobip gave both reports away in that drain
    later = await adapter.report(SmsReportRequest("", [second]))
    assert [(r.partnerMessageId, r.apiStatus) for r in later.results] == [
        (second, ApiStatus.DELIVERED)
    ]
    # A late intermediate report never hides a final one.
    partner.fake.reports.append(partner.fake.report_for(second, "DELIVERED_TO_OPERATOR"))
    again = await adapter.report(SmsReportRequest("", [second]))
    assert again.results[0].apiStatus == ApiStatus.DELIVERED
    # The kept map is bounded.
    small = partner.adapter(reports_kept=1)
    more = await small.send(request("905330000033", "905330000034"))
    kept_ids = [r.partnerMessageId for r in more.results]
    tail = await small.report(SmsReportRequest("", kept_ids))
    assert [r.partnerMessageId for r in tail.results] == [kept_ids[1]]
    await adapter.destroy()
    await small.destroy()


async def test_drained_finals_reach_every_reporter_through_redis(
    partner: Partner, env: Env
) -> None:
    """Reporter A drains a report for a message reporter B holds: B finds it in Redis."""
    store = await env.store()
    sink_a = ReceiptSink("ib-1")
    sink_a.bind(store)
    options = {o.name: o.default for o in InfobipAdapter.meta.options}
    options.update(url=partner.url, api_key=KEY, timeout_s=2.0)
    adapter_a = InfobipAdapter(options, AdapterContext("ib-1", 7, sink_a))
    sent = await adapter_a.send(request("905330000041", "905330000042"))
    mine, theirs = (r.partnerMessageId for r in sent.results)
    answer = await adapter_a.report(SmsReportRequest("", [mine]))
    assert [r.partnerMessageId for r in answer.results] == [mine]
    stored = await store.receipts("ib-1", [mine, theirs])
    assert set(stored) == {mine, theirs}
    assert unpack_result(stored[theirs]).apiStatus == ApiStatus.DELIVERED
    await adapter_a.destroy()
    await store.close()


async def test_drain_pages_while_full_and_concurrent_reports_share_it(partner: Partner) -> None:
    adapter = partner.adapter()
    sent = await adapter.send(request("905330000041"))
    mid = sent.results[0].partnerMessageId
    partner.fake.reports.clear()
    for _ in range(2400):
        partner.fake.reports.append(partner.fake.report_for(mid, "PENDING_ENROUTE"))
    partner.fake.reports.append(partner.fake.report_for(mid, "DELIVERED_TO_HANDSET"))
    response = await adapter.report(SmsReportRequest("", [mid]))
    assert response.results[0].apiStatus == ApiStatus.DELIVERED
    reads = [q for m, p, q in partner.fake.calls if p == "/sms/1/reports"]
    assert reads == ["limit=1000"] * 3  # 1000, 1000, 401: stops after the partial page
    partner.fake.calls.clear()
    partner.fake.fault("/sms/1/reports", delay_s=0.2)  # a slow drain, others arrive meanwhile
    answers = await asyncio.gather(*(adapter.report(SmsReportRequest("", [mid])) for _ in range(4)))
    assert all(a.results[0].apiStatus == ApiStatus.DELIVERED for a in answers)
    reads = [q for m, p, q in partner.fake.calls if p == "/sms/1/reports"]
    assert len(reads) == 1
    await adapter.destroy()


async def test_throttled_with_retry_after(partner: Partner) -> None:
    partner.fake.fault("/sms/2/text/advanced", 429, retry_after="7")
    partner.fake.fault("/sms/1/reports", 429, retry_after="3")
    adapter = partner.adapter()
    with pytest.raises(ThrottledError) as throttled:
        await adapter.send(request("905330000051"))
    assert throttled.value.retry_after == 7.0
    assert "E429" in throttled.value.detail and "Too many requests" in throttled.value.detail
    with pytest.raises(ThrottledError) as report_throttled:
        await adapter.report(SmsReportRequest("", ["x"]))
    assert report_throttled.value.retry_after == 3.0
    assert not partner.fake.sent  # nothing was taken
    await adapter.destroy()


async def test_server_error_is_transient(partner: Partner) -> None:
    partner.fake.fault("/sms/2/text/advanced", 503)
    adapter = partner.adapter()
    with pytest.raises(TransientError) as failed:
        await adapter.send(request("905330000061"))
    assert not isinstance(failed.value, ThrottledError)
    assert "HTTP 503" in failed.value.detail and "GENERAL_ERROR" in failed.value.detail
    await adapter.destroy()


async def test_unauthorized_login_nok_and_send_auth_error(partner: Partner) -> None:
    good = partner.adapter()
    assert await good.login("anything") is True
    assert await good.test_credentials() is True
    assert await good.test_connection() is True
    await good.destroy()
    wrong = partner.adapter(api_key="not-the-key-4242")
    assert await wrong.login("") is False
    assert await wrong.test_credentials() is False
    with pytest.raises(AuthError) as refused:
        await wrong.send(request("905330000071"))
    assert "UNAUTHORIZED: Invalid login details" in refused.value.detail
    assert "not-the-key-4242" not in refused.value.detail
    assert not partner.fake.sent
    await wrong.destroy()


async def test_bad_request_is_permanent_with_infobip_text(partner: Partner) -> None:
    adapter = partner.adapter()
    with pytest.raises(PermanentError) as bad:
        await adapter.send(request("905330000081", sender="AB"))  # Infobip wants 3..14 chars
    assert not isinstance(bad.value, AuthError)
    assert "HTTP 400" in bad.value.detail and "BAD_REQUEST: Bad request" in bad.value.detail
    assert "messages[0].from" in bad.value.detail
    assert KEY not in bad.value.detail
    await adapter.destroy()


async def test_timeout_is_transient_and_resend_reuses_ids(partner: Partner) -> None:
    # Infobip takes the batch but answers after our timeout: the worker retries in place.
    partner.fake.fault("/sms/2/text/advanced", delay_s=1.0)
    adapter = partner.adapter(timeout_s=0.3)
    req = request("905330000091", "905330000092")
    with pytest.raises(TransientError, match="timed out"):
        await adapter.send(req)
    assert len(partner.fake.sent) == 2  # it did act on the request
    again = await adapter.send(req)
    assert [r.apiStatus for r in again.results] == [ApiStatus.OK, ApiStatus.OK]
    assert {r.partnerMessageId for r in again.results} == set(partner.fake.sent)
    assert again.results[0].partnerStatus == "REJECTED_DUPLICATE_MESSAGE_ID"
    assert "earlier attempt" in again.results[0].partnerDetail
    first_bulk, second_bulk = (b["bulkId"] for b in partner.fake.bodies)
    assert first_bulk.endswith("-a1") and second_bulk.endswith("-a2")
    # A new request object is a new submission with new ids.
    fresh = await adapter.send(request("905330000091"))
    assert fresh.results[0].partnerMessageId not in {r.partnerMessageId for r in again.results}
    assert fresh.results[0].partnerStatus == "PENDING_ACCEPTED"
    await adapter.destroy()


async def test_unreachable_partner_login_raises_transient() -> None:
    fake = FakeInfobip(api_key=KEY)
    async with serve(fake.app) as url:
        dead = url
    options = {o.name: o.default for o in InfobipAdapter.meta.options}
    options.update(url=dead, api_key=KEY, timeout_s=0.5)
    adapter = InfobipAdapter(options)
    with pytest.raises(TransientError):
        await adapter.login("")
    assert await adapter.test_credentials() is False
    await adapter.destroy()


async def test_secrets_stay_out_of_reprs_and_errors(partner: Partner) -> None:
    adapter = partner.adapter(webhook_token=TOKEN, proxy_password="px-pass-55")
    for text in (repr(adapter), str(adapter)):
        assert KEY not in text and TOKEN not in text and "px-pass-55" not in text
    partner.fake.fault("/sms/2/text/advanced", 400)
    with pytest.raises(PermanentError) as bad:
        await adapter.send(request("905330000101"))
    with pytest.raises(WebhookError) as forged:
        await adapter.webhook(hook(b'{"results": []}', token="nope"))
    for detail in (bad.value.detail, forged.value.detail, str(bad.value), str(forged.value)):
        assert KEY not in detail and TOKEN not in detail
    await adapter.destroy()


def hook(body: bytes, token: str | None = None) -> WebhookRequest:
    query = {} if token is None else {"token": token}
    return WebhookRequest(
        method="POST",
        url="https://mta.example.com/webhooks/ib-1",
        headers={"content-type": "application/json"},
        query=query,
        body=body,
        form={},
    )


async def test_webhook_parses_reports_and_refuses_malformed(partner: Partner) -> None:
    partner.fake.outcomes.update(
        {"905330000111": ["DELIVERED_TO_HANDSET"], "905330000112": ["UNDELIVERABLE_NOT_DELIVERED"]}
    )
    adapter = partner.adapter()
    sent = await adapter.send(request("905330000111", "905330000112", "905330000113"))
    ids = [r.partnerMessageId for r in sent.results]
    body = partner.fake.webhook_body(ids[:2])
    results = await adapter.webhook(hook(body))
    assert [(r.partnerMessageId, r.apiStatus) for r in results] == [
        (ids[0], ApiStatus.DELIVERED),
        (ids[1], ApiStatus.FAIL),
    ]
    assert results[1].partnerStatus == "UNDELIVERABLE_NOT_DELIVERED"
    assert "Message sent not delivered" in results[1].partnerDetail
    operator = await adapter.webhook(hook(partner.fake.webhook_body([ids[2]], "PENDING_ENROUTE")))
    assert operator[0].apiStatus == ApiStatus.WAITING
    assert await adapter.webhook(hook(b'{"results": []}')) == []
    no_status = orjson.dumps({"results": [{"messageId": "m1", "to": "905330000111"}]})
    bad_group = orjson.dumps({"results": [{"messageId": "m1", "status": {"groupId": "3"}}]})
    for malformed in (b"not json", b"[]", b'{"results": {}}', no_status, bad_group):
        with pytest.raises(WebhookError) as refused:
            await adapter.webhook(hook(malformed))
        assert refused.value.status == 400 and "ib-1" in refused.value.detail
    await adapter.destroy()


async def test_webhook_token_checked_when_configured(partner: Partner) -> None:
    adapter = partner.adapter(webhook_token=TOKEN)
    sent = await adapter.send(request("905330000121"))
    body = partner.fake.webhook_body([sent.results[0].partnerMessageId])
    for forged in (None, "", "hook-token-91bX"):
        with pytest.raises(WebhookError) as refused:
            await adapter.webhook(hook(body, token=forged))
        assert refused.value.status == 403
    results = await adapter.webhook(hook(body, token=TOKEN))
    assert results[0].apiStatus == ApiStatus.DELIVERED
    await adapter.destroy()


async def test_conformance_kit(partner: Partner) -> None:
    report = await assert_conformant(
        InfobipAdapter,
        {"url": partner.url, "api_key": KEY, "webhook_token": TOKEN, "timeout_s": 2.0},
        make_partner_fail=partner.fake.fail_all,
        final_within_s=5.0,
    )
    assert report["send"].outcome.value == "pass" and report["error_kinds"].outcome.value == "pass"
    assert partner.fake.sent  # the kit's messages really went through the fake partner


ACCOUNTS = """
[[account]]
id = 7
name = "ib-1"
adapter = "infobip"
default = true
fallback_sender = "ACMEALT"
[account.options]
url = "{url}"
api_key = "${{IB_TEST_API_KEY}}"
timeout_s = 2.0
"""


async def test_end_to_end_through_worker_and_reporter(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeInfobip(api_key=KEY)
    fake.outcomes.update(
        {
            "905330000201": ["DELIVERED_TO_OPERATOR", "DELIVERED_TO_HANDSET"],
            "905330000202": ["UNDELIVERABLE_NOT_DELIVERED"],
            "905330000203": ["PENDING_ENROUTE", "EXPIRED_EXPIRED"],
            "905330000205": ["PENDING_ENROUTE"],  # its final is pushed to the webhook
        }
    )
    fake.rejects["905330000204"] = "REJECTED_DESTINATION"
    fake.reject_senders["BLOCKED"] = "REJECTED_SENDER"  # 905330000206: retried with ACMEALT
    monkeypatch.setenv("IB_TEST_API_KEY", KEY)
    async with serve(fake.app) as url:
        env.accounts(ACCOUNTS.format(url=url))
        tail = await env.tail()
        await env.start("worker", "reporter")
        numbers = [f"90533000020{n}" for n in range(1, 7)]
        body = {
            "messages": [
                {
                    "mobileNumber": n,
                    "text": f"hi {n}",
                    "sender": "BLOCKED" if n.endswith("6") else "ACME",
                    "accountId": 7,
                }
                for n in numbers
            ]
        }
        mid = await env.publish(body)
        await tail.wait(lambda t: len(t.oks()) >= 5 and len(t.finals()) >= 5)
        # The last one only gets its final by push: as `mta http` would store it.
        oks = {r["mobileNumber"]: r for r in tail.oks()}
        pushed_id = oks["905330000205"]["partnerMessageId"]
        adapter = InfobipAdapter({"api_key": KEY, "url": url}, AdapterContext("ib-1", 7))
        results = await adapter.webhook(
            hook(fake.webhook_body([pushed_id], "DELIVERED_TO_HANDSET"))
        )
        store = await env.store()
        await store.push_receipts(
            "ib-1", {r.partnerMessageId: pack_result(r) for r in results if r.apiStatus.final}
        )
        await store.close()
        finals = await tail.wait_finals(6)
        await asyncio.sleep(0.5)  # nothing more may come
    by_number = {r["mobileNumber"]: r for r in tail.finals()}
    assert len(tail.finals()) == 6 and len(finals) == 6
    assert {n: r["apiStatus"] for n, r in by_number.items()} == {
        "905330000201": "DELIVERED",
        "905330000202": "FAIL",
        "905330000203": "TIMEOUT",
        "905330000204": "FAIL",
        "905330000205": "DELIVERED",
        "905330000206": "DELIVERED",
    }
    # The sender Infobip refused was replaced by the account's fallback sender, once.
    froms = [
        m.get("from")
        for b in fake.bodies
        for m in b["messages"]
        if m["destinations"][0]["to"] == "905330000206"
    ]
    assert froms == ["BLOCKED", "ACMEALT"]
    assert by_number["905330000201"]["partnerStatus"] == "DELIVERED_TO_HANDSET"
    assert by_number["905330000204"]["partnerStatus"] == "REJECTED_DESTINATION"
    assert by_number["905330000204"]["messageId"] == f"{mid}:3"
    assert by_number["905330000201"]["accountId"] == 7
    assert by_number["905330000201"]["partnerMessageId"] == oks["905330000201"]["partnerMessageId"]
    assert by_number["905330000202"]["partnerStatus"] == "UNDELIVERABLE_NOT_DELIVERED"


async def test_end_to_end_refused_sender_goes_again_with_the_fallback_sender(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeInfobip(api_key=KEY)
    fake.reject_senders["BADSENDER"] = "REJECTED_SOURCE"
    monkeypatch.setenv("IB_TEST_API_KEY", KEY)
    async with serve(fake.app) as url:
        env.accounts(
            ACCOUNTS.format(url=url).replace(
                'fallback_sender = "ACMEALT"', 'sender = "BADSENDER"\nfallback_sender = "INFO"'
            )
        )
        tail = await env.tail()
        await env.start("worker", "reporter")
        body = {"messages": [{"mobileNumber": "905330000501", "text": "hi", "accountId": 7}]}
        mid = await env.publish(body)
        (final,) = await tail.wait_finals(1)
    ok = tail.by_id("OK")[f"{mid}:0"]
    assert [m.get("from") for b in fake.bodies for m in b["messages"]] == ["BADSENDER", "INFO"]
    assert "sent with fallback sender 'INFO'" in ok["partnerDetail"]
    assert "rejected sender 'BADSENDER'" in ok["partnerDetail"]
    assert "REJECTED_SOURCE" in ok["partnerDetail"]
    assert final["apiStatus"] == "DELIVERED" and final["partnerMessageId"] == ok["partnerMessageId"]
