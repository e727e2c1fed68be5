"""The smpp adapter over real loopback sockets against tests/smsc.py (smpplib's codec), and end
to end through the worker and reporter on the real RabbitMQ and Redis."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis.asyncio as aioredis
from mta.adapters.smpp import SmppAdapter
from mta.adapters.smpp.validity import MAX_S, relative_time

from mta.adapter import AdapterContext, ReceiptSink, ThrottledError, TransientError
from mta.contract import (
    REASON_SENDER,
    ApiStatus,
    SmsMessage,
    SmsReportRequest,
    SmsSendRequest,
    format_time,
    unpack_result,
)
from mta.smppserver.times import parse_smpp_time
from mta.store import Store
from mta.testing import assert_conformant
from tests.conftest import REDIS_URL, Env
from tests.smsc import (
    DELIVERED,
    ENROUTE,
    RINVDSTADR,
    RINVSRCADR,
    RMSGQFUL,
    RTHROTTLED,
    UNDELIVERABLE,
    TestSmsc,
)

PW = "pw-sec91"
ACCOUNT = "smpp-1"


@pytest.fixture
async def smsc() -> AsyncIterator[TestSmsc]:
    server = TestSmsc({"acct": PW})
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    """The real Redis, under a fresh prefix."""
    shared = Store(aioredis.from_url(REDIS_URL), f"t{uuid.uuid4().hex[:10]}")
    yield shared
    await shared.delete_all()
    await shared.close()


def make(
    smsc: TestSmsc, store: Store | None = None, tz: tzinfo = UTC, **changes: Any
) -> SmppAdapter:
    options: dict[str, Any] = {o.name: o.default for o in SmppAdapter.meta.options}
    options.update(
        host="127.0.0.1",
        port=smsc.port,
        system_id="acct",
        password=PW,
        reconnect_s=0.05,
        throttle_pause_s=0.05,
        response_timeout_s=5.0,
    )
    options.update(changes)
    sink = ReceiptSink(ACCOUNT)
    if store is not None:
        sink.bind(store)
    return SmppAdapter(options, AdapterContext(ACCOUNT, 9, sink, tz))


def batch(*numbers: str, text: str = "hello", sender: str = "ACME") -> SmsSendRequest:
    return SmsSendRequest(
        [SmsMessage(n, f"{text} {i}", sender=sender) for i, n in enumerate(numbers)]
    )


def numbers(n: int, start: int = 0) -> list[str]:
    return [f"9053300{start + i:05d}" for i in range(n)]


async def until(check: Any, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not (await check() if asyncio.iscoroutinefunction(check) else check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


# --- options, login, probes -------------------------------------------------------------------


def test_meta_and_bad_options(smsc: TestSmsc) -> None:
    meta = SmppAdapter.meta
    assert meta.name == "smpp" and meta.receipts.value == "both" and meta.pattern.value == "batch"
    assert meta.option("password") is not None and meta.option("password").secret  # type: ignore[union-attr]
    for bad in (
        {"bind": "receiver"},
        {"long_messages": "split"},
        {"receipt_id_base": "oct"},
        {"password": "longer-than-8"},
    ):
        with pytest.raises(ValueError):
            make(smsc, **bad)
    adapter = make(smsc)
    assert PW not in repr(adapter) and "acct" in repr(adapter)


async def test_bind_failures_and_probes(smsc: TestSmsc) -> None:
    wrong = make(smsc, password="nope")
    assert await wrong.login("") is False
    assert smsc.binds[-1] == ("bind_transceiver", "acct", 0x0E)  # ESME_RINVPASWD
    assert await wrong.test_credentials() is False
    unknown = make(smsc, system_id="who")
    assert await unknown.login("") is False
    assert smsc.binds[-1][2] == 0x0F  # ESME_RINVSYSID
    assert not wrong.client.running and not unknown.client.running  # NOK: no retry loop

    good = make(smsc)
    assert await good.test_connection() and await good.test_credentials()
    assert await good.test_proxy() is True
    assert await good.login("")
    await good.destroy()
    await good.destroy()  # twice is harmless
    await until(lambda: not smsc.conns, what="the unbound session to close")

    await smsc.stop()
    nothing = make(smsc)
    started = time.monotonic()
    with pytest.raises(TransientError) as raised:
        await nothing.login("")
    assert time.monotonic() - started < 2.0
    assert "cannot connect" in raised.value.detail and PW not in raised.value.detail
    assert await nothing.test_connection() is False and await nothing.test_credentials() is False
    assert not nothing.client.running


async def test_transmitter_plus_receiver_binds_two_sessions(smsc: TestSmsc, store: Store) -> None:
    adapter = make(smsc, store, bind="transmitter+receiver", binds=2)
    assert await adapter.login("")
    kinds = sorted(b[0] for b in smsc.binds)
    assert kinds == ["bind_receiver"] * 2 + ["bind_transmitter"] * 2
    sent = await adapter.send(batch(*numbers(4)))
    assert [r.apiStatus for r in sent.results] == [ApiStatus.OK] * 4
    pids = [r.partnerMessageId for r in sent.results]
    await until(lambda: len(smsc.receipts_sent) == 4, what="receipts on the receiver sessions")
    stored = await store.receipts(ACCOUNT, pids)
    assert set(stored) == set(pids)
    await adapter.destroy()


@pytest.fixture
def tls_cert(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost (openssl CLI): (cert, key)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_tls_bind_with_verification(
    tls_cert: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """tls = true: the certificate is verified (a CA we trust through SSL_CERT_FILE)."""
    cert, key = tls_cert
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    smsc = TestSmsc({"acct": PW})
    await smsc.start(ssl=server_ctx)
    try:
        untrusted = make(smsc, host="localhost", tls=True)
        assert await untrusted.test_connection() is False  # self-signed: refused
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        adapter = make(smsc, host="localhost", tls=True)
        assert await adapter.login("")
        sent = await adapter.send(batch("905330000151"))
        assert sent.results[0].apiStatus == ApiStatus.OK and smsc.messages
        await adapter.destroy()
    finally:
        await smsc.stop()


# --- windowing, throttling, drops ---------------------------------------------------------------


async def test_window_is_kept_and_submits_are_pipelined(smsc: TestSmsc) -> None:
    smsc.response_delay = 0.05
    smsc.receipt_style = None
    adapter = make(smsc, window=5)
    assert await adapter.login("")
    started = time.monotonic()
    sent = await adapter.send(batch(*numbers(40)))
    elapsed = time.monotonic() - started
    assert [r.apiStatus for r in sent.results] == [ApiStatus.OK] * 40
    assert smsc.max_outstanding == 5  # the window filled, and never overflowed
    assert elapsed < 40 * 0.05 / 2  # pipelined: 8 rounds of 5, not 40 round trips
    assert len({r.partnerMessageId for r in sent.results}) == 40
    await adapter.destroy()


@pytest.mark.parametrize("status", [RTHROTTLED, RMSGQFUL])
async def test_throttling_pauses_the_session_then_delivers(
    smsc: TestSmsc, store: Store, status: int
) -> None:
    smsc.statuses = [status, status]
    adapter = make(smsc, store, throttle_pause_s=0.1)
    assert await adapter.login("")
    unit = adapter.client.units[0]
    started = time.monotonic()
    sent = await adapter.send(batch("905330000101"))
    elapsed = time.monotonic() - started
    result = sent.results[0]
    assert result.apiStatus == ApiStatus.OK and adapter.stats["throttled"] == 2
    assert elapsed >= 0.1 + 0.2 - 0.02  # paused 0.1 s, then 0.2 s (doubling), then accepted
    assert unit.throttle_level == 0  # reset by the accepted submit
    assert [s.status for s in smsc.submits] == [status, status, 0]
    await until(lambda: len(smsc.receipts_sent) == 1, what="the receipt")
    stored = await store.receipts(ACCOUNT, [result.partnerMessageId])
    assert unpack_result(stored[result.partnerMessageId]).apiStatus == ApiStatus.DELIVERED

    smsc.always = RTHROTTLED  # never accepted: the batch goes to the delayed-retry queue
    adapter.throttle_retries = 2
    with pytest.raises(ThrottledError) as raised:
        await adapter.send(batch("905330000102", "905330000103"))
    assert "ESME_RTHROTTLED" in raised.value.detail and raised.value.retry_after
    await adapter.destroy()


async def test_session_dropped_mid_window(smsc: TestSmsc) -> None:
    """The 5 submits written before the drop end UNKNOWN (never resent); the 5 never written go
    on the rebound session; one reconnect, no storm; the next batch goes through."""
    smsc.response_delay = 0.2
    smsc.receipt_style = None
    smsc.drop_after = 3
    adapter = make(smsc, window=5)
    assert await adapter.login("")
    dests = numbers(10, 200)
    sent = await adapter.send(batch(*dests))
    states = [r.apiStatus for r in sent.results]
    unknown = [r for r in sent.results if r.partnerStatus == "UNKNOWN"]
    assert len(unknown) == 5 and states.count(ApiStatus.OK) == 5
    assert all(r.apiStatus == ApiStatus.FAIL for r in unknown)
    assert "may have accepted" in unknown[0].partnerDetail
    accepted = {m.destination_addr for m in smsc.messages}
    assert accepted == {d for d, r in zip(dests, sent.results, strict=True) if r.apiStatus == "OK"}
    resent = [s.destination_addr for s in smsc.submits]
    assert len(resent) == len(set(resent))  # nothing was submitted twice
    assert len(smsc.binds) == 2
    await asyncio.sleep(1.0)
    assert len(smsc.binds) == 2  # the rebound session stays: no reconnect storm
    again = await adapter.send(batch("905330000299"))
    assert again.results[0].apiStatus == ApiStatus.OK
    await adapter.destroy()


async def test_response_timeout_is_unknown_never_resent(smsc: TestSmsc) -> None:
    smsc.response_delay = 1.0
    smsc.receipt_style = None
    adapter = make(smsc, response_timeout_s=0.3)
    assert await adapter.login("")
    sent = await adapter.send(batch("905330000251"))
    result = sent.results[0]
    assert result.apiStatus == ApiStatus.FAIL and result.partnerStatus == "UNKNOWN"
    assert "no submit_sm_resp" in result.partnerDetail and "duplicate" in result.partnerDetail
    await asyncio.sleep(0.8)  # the late answer arrives and matches nothing
    assert len(smsc.submits) == 1 and adapter.stats["unknown"] == 1
    await adapter.destroy()


async def test_outage_raises_transient_at_once_without_a_storm(smsc: TestSmsc) -> None:
    adapter = make(smsc)
    assert await adapter.login("")
    await smsc.stop()
    await until(lambda: adapter.client.pick() is None, what="the session to close")
    before = adapter.client.connects
    started = time.monotonic()
    with pytest.raises(TransientError) as raised:
        await adapter.send(batch("905330000301"))
    assert time.monotonic() - started < 0.2
    assert "no bound SMPP session" in raised.value.detail and "acct" in raised.value.detail
    await asyncio.sleep(1.5)
    attempts = adapter.client.connects - before
    assert 1 <= attempts <= 7  # 0.05 s doubling with jitter: about 5, never a busy loop
    await smsc.start(smsc.port)
    await until(lambda: adapter.client.pick() is not None, timeout=10, what="the rebind")
    sent = await adapter.send(batch("905330000302"))
    assert sent.results[0].apiStatus == ApiStatus.OK
    await adapter.destroy()


# --- texts ------------------------------------------------------------------------------------

LONG_GSM = ("Dear customer, your parcel [ref 7781] costs 12€ ~ pay at {shop}. " * 6).strip()
EMOJI = "Merhaba 😀 şirketimizden ğüzel haberler 🎉 " * 3


async def test_long_gsm_text_with_udh(smsc: TestSmsc) -> None:
    adapter = make(smsc)
    assert await adapter.login("")
    sent = await adapter.send(batch("905330000401", text=LONG_GSM))
    result = sent.results[0]
    message = smsc.messages[0]
    assert message.text == f"{LONG_GSM} 0" and message.how == "udh" and message.data_coding == 0
    total = message.parts
    assert total == result.smsMessageCount >= 3
    refs = set()
    for n, submit in enumerate(smsc.submits, 1):
        assert submit.esm_class & 0x40 and submit.registered_delivery == 1
        assert submit.udh is not None and len(submit.udh) == 6
        assert submit.udh[:3] == b"\x05\x00\x03" and submit.udh[4:] == bytes((total, n))
        refs.add(submit.udh[3])
        assert len(submit.short_message) - 6 <= 153 + 1  # septets (ESC pairs stay whole)
        assert not submit.short_message.endswith(b"\x1b")
    assert len(refs) == 1
    assert result.partnerMessageId == adapter.ids.submitted(message.message_ids[0])
    await adapter.destroy()


@pytest.mark.parametrize("mode", ["sar", "payload"])
async def test_long_text_as_sar_or_payload(smsc: TestSmsc, mode: str) -> None:
    adapter = make(smsc, long_messages=mode)
    assert await adapter.login("")
    sent = await adapter.send(batch("905330000402", text=LONG_GSM))
    assert sent.results[0].apiStatus == ApiStatus.OK
    message = smsc.messages[0]
    assert message.text == f"{LONG_GSM} 0" and message.how == mode
    if mode == "sar":
        assert message.parts == len(smsc.submits) >= 3
        refs = {s.sar[0] for s in smsc.submits if s.sar}
        assert len(refs) == 1
        assert [s.sar[1:] for s in smsc.submits if s.sar] == [
            (message.parts, n) for n in range(1, message.parts + 1)
        ]
        assert not any(s.esm_class & 0x40 for s in smsc.submits)
    else:
        assert len(smsc.submits) == 1 and smsc.submits[0].short_message == b""
        assert smsc.submits[0].payload is not None
    await adapter.destroy()


async def test_ucs2_text_with_emoji(smsc: TestSmsc) -> None:
    adapter = make(smsc)
    assert await adapter.login("")
    short = await adapter.send(batch("905330000403", text="Şu 😀"))
    assert short.results[0].smsMessageCount == 1
    assert smsc.submits[0].data_coding == 8 and smsc.messages[0].text == "Şu 😀 0"
    sent = await adapter.send(batch("905330000404", text=EMOJI))
    message = smsc.messages[-1]
    assert message.text == f"{EMOJI} 0" and message.data_coding == 8 and message.parts >= 2
    for submit in smsc.submits[1:]:
        data = submit.short_message[6:]
        assert len(data) <= 134
        data.decode("utf-16-be", "strict")  # no surrogate pair split between two parts
    assert sent.results[0].smsMessageCount == message.parts
    await adapter.destroy()


# --- receipts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("submit_base", "receipt_base", "option", "style"),
    [
        ("hex", "dec", "dec", "text"),
        ("dec", "hex", "hex", "text"),
        ("hex", "dec", "auto", "text"),
        ("hex", "dec", "dec", "both"),
        ("dec", "dec", "auto", "tlv"),
    ],
)
async def test_receipts_in_both_id_bases_are_found(
    smsc: TestSmsc, store: Store, submit_base: str, receipt_base: str, option: str, style: str
) -> None:
    smsc.submit_id_base, smsc.receipt_id_base, smsc.receipt_style = submit_base, receipt_base, style
    smsc.final_state = lambda s: UNDELIVERABLE if s.destination_addr.endswith("2") else DELIVERED
    adapter = make(smsc, store, receipt_id_base=option)
    assert await adapter.login("")
    sent = await adapter.send(batch("905330000501", "905330000502"))
    pids = [r.partnerMessageId for r in sent.results]
    await until(lambda: len(smsc.receipts_sent) == 2, what="two receipts")
    assert [a for _, _, a in smsc.receipts_sent] == [0, 0]  # acked ESME_ROK after storing
    stored = await store.receipts(ACCOUNT, pids)  # what the reporter reads first
    assert set(stored) == set(pids), (pids, smsc.receipts_sent)
    first, second = (unpack_result(stored[p]) for p in pids)
    assert first.apiStatus == ApiStatus.DELIVERED and first.partnerStatus == "DELIVRD"
    assert second.apiStatus == ApiStatus.FAIL and second.partnerStatus == "UNDELIV"
    receipt_ids = {r for r, _, _ in smsc.receipts_sent}
    issued = {s.message_id for s in smsc.submits}
    assert (receipt_ids == issued) is (submit_base == receipt_base)  # really two bases
    assert adapter.book.stats["unmatched"] == 0
    await adapter.destroy()


async def test_long_message_final_waits_for_every_part_then_query_sm(
    smsc: TestSmsc, store: Store
) -> None:
    """Parts 1..n-1 delivered, the last one only ENROUTE: no final yet; query_sm (after
    query_when_no_receipt_s) finds the last part delivered → DELIVERED."""
    smsc.receipt_id_base = "dec"
    smsc.final_state = lambda s: ENROUTE if s.udh and s.udh[5] == s.udh[4] else DELIVERED
    adapter = make(smsc, store, receipt_id_base="dec", query_when_no_receipt_s=0.5)
    assert await adapter.login("")
    sent = await adapter.send(batch("905330000601", text=LONG_GSM))
    pid = sent.results[0].partnerMessageId
    total = sent.results[0].smsMessageCount
    await until(lambda: len(smsc.receipts_sent) == total, what="a receipt per part")
    assert await store.receipts(ACCOUNT, [pid]) == {}  # the last part is not final yet
    early = await adapter.report(SmsReportRequest("", [pid]))
    assert [r.apiStatus for r in early.results] == [ApiStatus.WAITING] and not smsc.queries
    last_id = smsc.messages[0].message_ids[-1]
    smsc.query_states[last_id] = DELIVERED
    await asyncio.sleep(0.6)
    later = await adapter.report(SmsReportRequest("", [pid]))
    assert [r.apiStatus for r in later.results] == [ApiStatus.DELIVERED]
    assert later.results[0].smsMessageCount == total
    assert set(smsc.queries) == set(smsc.messages[0].message_ids)  # every part, as issued

    # A part that fails fails the whole message at once, through the pushed receipt.
    smsc.final_state = lambda s: UNDELIVERABLE if s.udh and s.udh[5] == 2 else DELIVERED
    sent = await adapter.send(batch("905330000602", text=LONG_GSM))
    pid2 = sent.results[0].partnerMessageId
    await until(lambda: len(smsc.receipts_sent) == 2 * total, what="the second set")

    async def pushed() -> bool:
        return bool(await store.receipts(ACCOUNT, [pid2]))

    await until(pushed, what="the combined final")
    final = unpack_result((await store.receipts(ACCOUNT, [pid2]))[pid2])
    assert final.apiStatus == ApiStatus.FAIL and final.partnerDetail.startswith(f"part 2/{total}")
    await adapter.destroy()


async def test_query_sm_fallback_for_a_message_without_receipt(
    smsc: TestSmsc, store: Store
) -> None:
    smsc.receipt_style = None
    adapter = make(smsc, store, query_when_no_receipt_s=0.3)
    assert await adapter.login("")
    sent = await adapter.send(batch("905330000701", "905330000702"))
    pids = [r.partnerMessageId for r in sent.results]
    first = await adapter.report(SmsReportRequest("", pids))
    assert {r.apiStatus for r in first.results} == {ApiStatus.WAITING} and not smsc.queries
    raw = [s.message_id for s in smsc.submits]
    smsc.query_states[raw[0]] = DELIVERED  # the second stays ENROUTE
    await asyncio.sleep(0.35)
    # A second process (another reporter) knows the submission through Redis.
    other = make(smsc, store, query_when_no_receipt_s=0.3)
    assert await other.login("")
    answer = await other.report(SmsReportRequest("", [*pids, "never-issued-1"]))
    by_id = {r.partnerMessageId: r for r in answer.results}
    assert by_id[pids[0]].apiStatus == ApiStatus.DELIVERED
    assert by_id[pids[0]].partnerStatus == "DELIVRD"
    assert by_id[pids[1]].apiStatus == ApiStatus.WAITING
    assert by_id["never-issued-1"].apiStatus == ApiStatus.WAITING  # ESME_RINVMSGID: keep
    assert smsc.queries[:2] == raw  # queried with the ids as the SMSC wrote them
    await smsc.stop()
    await until(lambda: other.client.pick() is None, what="the drop")
    down = await other.report(SmsReportRequest("", pids[1:]))
    assert [r.apiStatus for r in down.results] == [ApiStatus.WAITING]
    await adapter.destroy()
    await other.destroy()


async def test_permanent_statuses_fail_with_their_name(smsc: TestSmsc) -> None:
    smsc.status_for["905330000802"] = RINVDSTADR
    smsc.status_for["905330000803"] = RINVSRCADR
    adapter = make(smsc)
    assert await adapter.login("")
    sent = await adapter.send(batch("905330000801", "905330000802", "905330000803"))
    ok, bad_dest, bad_sender = sent.results
    assert ok.apiStatus == ApiStatus.OK
    assert bad_dest.apiStatus == ApiStatus.FAIL and bad_dest.partnerStatus == "ESME_RINVDSTADR"
    assert "ESME_RINVDSTADR" in bad_dest.partnerDetail and bad_dest.reason == ""
    assert bad_sender.partnerStatus == "ESME_RINVSRCADR" and bad_sender.reason == REASON_SENDER
    assert len(smsc.submits) == 3  # permanent: not retried
    await adapter.destroy()


def test_relative_validity_period_format_and_bounds() -> None:
    assert relative_time(90) == "000000000130000R"
    assert relative_time(2 * 86400 + 3 * 3600 + 4 * 60 + 5) == "000002030405000R"
    assert relative_time(0) == relative_time(-50) == "000000000001000R"  # at least 1 s
    assert relative_time(10**9) == relative_time(MAX_S) == "000099235959000R"
    now = datetime(2026, 11, 22, 10, 30, tzinfo=UTC)
    moment = parse_smpp_time(relative_time(5000), now)  # our SMPP server's parser agrees
    assert moment == now + timedelta(seconds=5000)


async def test_expire_time_becomes_a_relative_validity_period(smsc: TestSmsc) -> None:
    istanbul = ZoneInfo("Europe/Istanbul")  # UTC+3 all year
    adapter = make(smsc, tz=istanbul)
    assert await adapter.login("")
    soon = format_time(time.time() + 90 * 60, istanbul)
    utc = format_time(time.time() + 240 * 60, UTC)  # read in the account's zone: 3 h less
    gone = format_time(time.time() - 120, istanbul)
    request = SmsSendRequest(
        [
            SmsMessage("905330000851", "soon", sender="ACME", expireTime=soon),
            SmsMessage("905330000852", LONG_GSM, sender="ACME", expireTime=soon),
            SmsMessage("905330000853", "none", sender="ACME"),
            SmsMessage("905330000854", "utc", sender="ACME", expireTime=utc),
            SmsMessage("905330000855", "gone", sender="ACME", expireTime=gone),
        ]
    )
    sent = await adapter.send(request)
    await adapter.destroy()
    assert [r.apiStatus for r in sent.results] == [ApiStatus.OK] * 5
    by_dest: dict[str, list[str]] = {}
    for submit in smsc.submits:
        by_dest.setdefault(submit.destination_addr, []).append(submit.validity_period)
    now = datetime.now(UTC)

    def left(value: str) -> float:
        moment = parse_smpp_time(value, now)
        assert moment is not None and value.endswith("R"), value
        return (moment - now).total_seconds()

    assert 89 * 60 <= left(by_dest["905330000851"][0]) <= 90 * 60
    long_parts = by_dest["905330000852"]
    assert len(long_parts) >= 3 and len(set(long_parts)) == 1  # every part the same validity
    assert by_dest["905330000853"] == [""]  # none: the SMSC's default
    assert 59 * 60 <= left(by_dest["905330000854"][0]) <= 60 * 60
    assert by_dest["905330000855"] == ["000000000001000R"]  # passed: the minimum, 1 s


async def test_sender_ton_npi_and_mo_messages(smsc: TestSmsc) -> None:
    adapter = make(smsc)
    assert await adapter.login("")
    await adapter.send(batch("905330000901", sender="ACME"))
    await adapter.send(batch("905330000902", sender="905551112233"))
    alpha, numeric = smsc.submits
    assert (alpha.source_ton, alpha.source_npi) == (5, 0)
    assert (numeric.source_ton, numeric.source_npi) == (1, 1)
    smsc.send_mo("acct", "STOP")
    await until(lambda: any(r == "MO" for r, _, _ in smsc.receipts_sent), what="the MO ack")
    assert ("MO", "MO", 0) in smsc.receipts_sent and adapter.book.stats["mo"] == 1
    await adapter.destroy()


async def test_receipt_not_stored_is_not_acked(smsc: TestSmsc) -> None:
    """Redis unreachable: the receipt is answered ESME_RX_T_APPN so the SMSC re-sends it."""
    dead = Store(aioredis.from_url("redis://127.0.0.1:1/0"), "dead")
    adapter = make(smsc, dead)
    adapter.book.unknown_wait_s = 0.0
    assert await adapter.login("")
    await adapter.send(batch("905330000951"))
    await until(lambda: len(smsc.receipts_sent) == 1, timeout=10, what="the receipt answer")
    assert smsc.receipts_sent[0][2] == 0x64  # ESME_RX_T_APPN
    await adapter.destroy()
    await dead.close()


# --- the kit and the pipeline -----------------------------------------------------------------


async def test_conformance_kit(smsc: TestSmsc) -> None:
    report = await assert_conformant(
        SmppAdapter,
        {
            "host": "127.0.0.1",
            "port": smsc.port,
            "system_id": "acct",
            "password": PW,
            "reconnect_s": 0.05,
            "throttle_pause_s": 0.02,
            "throttle_retries": 3,
            "response_timeout_s": 5.0,
        },
        make_partner_fail=smsc.fail_all,
        final_within_s=5.0,
    )
    assert report["send"].outcome.value == "pass" and report["error_kinds"].outcome.value == "pass"
    assert report["report"].outcome.value == "pass" and smsc.messages


ACCOUNTS = """
[[account]]
id = 9
name = "smpp-1"
adapter = "smpp"
default = true
[account.options]
host = "127.0.0.1"
port = {port}
system_id = "acct"
password = "${{SMPP_TEST_PASSWORD}}"
window = 20
receipt_id_base = "dec"
reconnect_s = 0.1
"""


async def test_end_to_end_receipts_drive_the_finals(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    smsc = TestSmsc({"acct": PW}, submit_id_base="hex", receipt_id_base="dec", receipt_delay=0.2)
    smsc.final_state = lambda s: UNDELIVERABLE if s.destination_addr.endswith("3") else DELIVERED
    smsc.status_for["905330001004"] = RINVDSTADR
    await smsc.start()
    monkeypatch.setenv("SMPP_TEST_PASSWORD", PW)
    try:
        env.accounts(ACCOUNTS.format(port=smsc.port))
        tail = await env.tail()
        await env.start("worker", "reporter")
        dests = [f"90533000100{n}" for n in range(1, 5)]
        texts = ["hello", LONG_GSM, "bye", "nope"]
        body = {
            "messages": [
                {"mobileNumber": d, "text": t, "sender": "ACME", "accountId": 9}
                for d, t in zip(dests, texts, strict=True)
            ]
        }
        mid = await env.publish(body)
        await tail.wait_finals(4, timeout=20)
        await asyncio.sleep(0.5)  # nothing more may come
    finally:
        await smsc.stop()
    finals = {r["mobileNumber"]: r for r in tail.finals()}
    assert len(tail.finals()) == 4
    assert {n: r["apiStatus"] for n, r in finals.items()} == {
        dests[0]: "DELIVERED",
        dests[1]: "DELIVERED",
        dests[2]: "FAIL",
        dests[3]: "FAIL",
    }
    assert finals[dests[1]]["smsMessageCount"] == smsc.messages[1].parts >= 3
    assert finals[dests[2]]["partnerStatus"] == "UNDELIV"
    assert finals[dests[3]]["partnerStatus"] == "ESME_RINVDSTADR"
    assert finals[dests[0]]["messageId"] == f"{mid}:0" and finals[dests[0]]["accountId"] == 9
    oks = {r["mobileNumber"]: r for r in tail.oks()}
    assert finals[dests[0]]["partnerMessageId"] == oks[dests[0]]["partnerMessageId"]
    assert smsc.receipts_sent and all(a == 0 for _, _, a in smsc.receipts_sent)
    assert not smsc.queries  # receipts, not query_sm, drove the finals


async def test_end_to_end_refused_sender_goes_again_with_the_fallback_sender(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    smsc = TestSmsc({"acct": PW}, submit_id_base="hex", receipt_id_base="dec", receipt_delay=0.2)
    smsc.status_for_source["BADSENDER"] = RINVSRCADR
    await smsc.start()
    monkeypatch.setenv("SMPP_TEST_PASSWORD", PW)
    try:
        env.accounts(
            ACCOUNTS.format(port=smsc.port).replace(
                "default = true\n",
                'default = true\nsender = "BADSENDER"\nfallback_sender = "INFO"\n',
            )
        )
        tail = await env.tail()
        await env.start("worker", "reporter")
        body = {"messages": [{"mobileNumber": "905330001101", "text": "hi", "accountId": 9}]}
        mid = await env.publish(body)
        (final,) = await tail.wait_finals(1, timeout=20)
    finally:
        await smsc.stop()
    ok = tail.by_id("OK")[f"{mid}:0"]
    assert [(s.source_addr, s.status) for s in smsc.submits] == [
        ("BADSENDER", RINVSRCADR),
        ("INFO", 0),
    ]
    assert "sent with fallback sender 'INFO'" in ok["partnerDetail"]
    assert "rejected sender 'BADSENDER'" in ok["partnerDetail"]
    assert "ESME_RINVSRCADR" in ok["partnerDetail"]
    assert final["apiStatus"] == "DELIVERED" and final["partnerMessageId"] == ok["partnerMessageId"]
