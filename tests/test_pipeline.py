"""Integration: batches through worker and reporter on the real RabbitMQ and Redis."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import orjson

from mta.adapter import AdapterMeta, OptionSpec, SendPattern, TransientError
from mta.contract import (
    REASON_RETRY,
    ApiStatus,
    SmsReportRequest,
    SmsResponse,
    SmsResult,
    SmsSendRequest,
)
from mta.store import MARK_INFLIGHT
from tests.conftest import Env, batch, eventually, sim_accounts


async def test_batch_reaches_finals_with_correlation(env: Env) -> None:
    tail = await env.tail()
    await env.start("worker", "reporter")
    body = {
        "messages": [
            {
                "mobileNumber": "905332141354",
                "text": "hello",
                "sender": "ACME",
                "accountId": 12,
                "senderId": 3,
                "smsType": "BULK|12-9001-77-1",
            },
            {"mobileNumber": "+44 7700 900123", "text": "€ {x}", "smsType": "OTP"},
            {"mobileNumber": "4915123456789", "text": "Siparişiniz 🚚"},
        ]
    }
    mid = await env.publish(body, message_id="b-1")
    finals = await tail.wait_finals(3)
    await asyncio.sleep(0.3)  # nothing more may come
    assert len(tail.finals()) == 3 and len(tail.oks()) == 3
    first = tail.by_id("DELIVERED")[f"{mid}:0"]
    assert first["mobileNumber"] == "905332141354"
    assert first["accountId"] == 12 and first["senderId"] == 3
    assert first["smsType"] == "BULK|12-9001-77-1"
    assert first["partnerMessageId"].startswith("sim-")
    assert len(first["sendAt"]) == 12 and first["smsMessageCount"] == 1
    assert tail.by_id("OK")[f"{mid}:1"]["mobileNumber"] == "447700900123"
    assert tail.by_id("OK")[f"{mid}:1"]["smsMessageCount"] == 1
    assert {f["apiStatus"] for f in finals} == {"DELIVERED"}
    # Routing keys are <accountId>.<apiStatus> and true for every result in the message.
    for key, doc in tail.messages:
        assert doc["partnerPacketId"] == ""
        for result in doc["results"]:
            assert key == f"{result['accountId']}.{result['apiStatus']}"
    keys = {key for key, _ in tail.messages}
    assert {"12.OK", "0.OK", "12.DELIVERED", "0.DELIVERED"} <= keys
    store = await env.store()
    counts = await store.counts()
    await store.close()
    assert counts["pending"] == 0 and counts["due"] == 0 and counts["leased"] == 0
    assert counts["outbox"] == 0


async def test_invalid_messages_fail_with_detail_and_batch_goes_on(env: Env) -> None:
    tail = await env.tail()
    await env.start("worker", "reporter")
    body = {
        "messages": [
            {"mobileNumber": "12345", "text": "short number"},
            {"mobileNumber": "905551112233", "text": ""},
            {"mobileNumber": "905551112234", "text": "x", "expireTime": "202001010000"},
            {"mobileNumber": "905551112235", "text": "x", "smsType": "PROMO"},
            {"mobileNumber": "905551112236", "text": "x", "startTime": "2026-11-22"},
            {"text": "no number"},
            "not an object",
            {"mobileNumber": "905551112237", "text": "fine", "accountId": 7},
            {"mobileNumber": "0555 111 22 38", "text": "national"},
            {"mobileNumber": "905551112239", "text": "x", "sender": "ABCDEFGHIJKLMNOP"},
        ]
    }
    mid = await env.publish(body)
    await tail.wait_finals(10)
    fails = tail.by_id("FAIL")
    details = {int(k.rsplit(":", 1)[1]): v["partnerDetail"] for k, v in fails.items()}
    assert "mobileNumber" in details[0] and "7 to 15" in details[0]
    assert details[1].startswith("text:")
    assert details[2].startswith("expireTime:") and "passed" in details[2]
    assert details[3].startswith("smsType:")
    assert details[4].startswith("startTime:")
    assert details[5].startswith("mobileNumber: required")
    assert details[6].startswith("message: expected an object")
    assert details[8].startswith("mobileNumber:") and "national" in details[8]
    assert details[9].startswith("sender:")
    assert tail.by_id("DELIVERED")[f"{mid}:7"]["accountId"] == 7
    assert fails[f"{mid}:2"]["partnerStatus"] == "EXPIRED"
    assert Counter(r["messageId"] for r in tail.finals()).most_common(1)[0][1] == 1


async def test_malformed_bodies_go_to_dead_with_reason(env: Env) -> None:
    tail = await env.tail()
    await env.start("worker", "reporter")
    await env.publish(b"this is not json", message_id="bad-1")
    await env.publish(b'{"no": "messages"}', message_id="bad-2")
    await env.publish(b"[1, 2, 3]", message_id="bad-3")
    await env.publish(batch(2), message_id="good")  # the process keeps running
    await tail.wait_finals(2)
    assert env.channel is not None
    queue = await env.channel.get_queue(env.topology.dead_queue)
    reasons = {}
    for _ in range(3):
        message = await queue.get(timeout=5, fail=True)
        assert message is not None
        reasons[message.message_id] = message.headers["x-mta-dead-reason"]
        await message.ack()
    assert "not JSON" in str(reasons["bad-1"])
    assert "'messages'" in str(reasons["bad-2"])
    assert "list" in str(reasons["bad-3"]) or "JSON list" in str(reasons["bad-3"])


async def test_redelivered_batch_is_not_resubmitted(env: Env) -> None:
    tail = await env.tail()
    service = await env.start("worker", "reporter")
    assert service.worker is not None
    await env.publish(batch(5), message_id="same-id")
    await tail.wait_finals(5)
    sent = service.worker.stats["sent"]
    assert sent == 5
    # The same batch again (a redelivery after a lost ack looks exactly like this).
    await env.publish(batch(5), message_id="same-id")
    await eventually(lambda: _stat(service, "skipped", 5), what="redelivery skipped")
    await asyncio.sleep(0.5)
    assert service.worker.stats["sent"] == 5
    assert len(tail.oks()) == 5 and len(tail.finals()) == 5


async def _stat(service: Any, name: str, value: int) -> bool:
    return bool(service.worker.stats[name] >= value)


async def test_inflight_policy_resubmit_and_fail(env: Env) -> None:
    tail = await env.tail()
    store = await env.store()
    # A worker died with messages 0 and 1 of batch "crashed" in flight.
    await store.begin("crashed", ["0", "1"])
    await store.begin("crashed2", ["0"])
    await store.begin("crashed3", 2)  # died with a whole batch in flight
    service = await env.start("worker", "reporter")
    await env.publish(batch(3), message_id="crashed")
    await tail.wait_finals(3)
    assert service.worker is not None and service.worker.stats["resubmitted"] == 2
    assert len(tail.oks()) == 3
    await env.publish(batch(2, start=20), message_id="crashed3")
    await tail.wait_finals(5)
    assert service.worker.stats["resubmitted"] == 4
    await env.stop(service)
    await env.start("worker", "reporter", inflight_policy="fail")
    await env.publish(batch(2, start=10), message_id="crashed2")
    await tail.wait_finals(7)
    unknown = tail.by_id("FAIL")["crashed2:0"]
    assert unknown["partnerStatus"] == "UNKNOWN" and "outcome unknown" in unknown["partnerDetail"]
    assert "crashed2:1" in tail.by_id("DELIVERED")
    await store.close()


async def test_two_workers_two_reporters_one_final_each(env: Env) -> None:
    env.accounts(sim_accounts(deliver=0.7, delay=0.3))
    tail = await env.tail()
    for _ in range(2):
        await env.start("worker")
        await env.start("reporter", report_batch=7)
    total = 0
    for b in range(20):
        await env.publish(batch(25, start=b * 25))
        total += 25
    finals = await tail.wait_finals(total, timeout=60)
    await asyncio.sleep(1.0)
    finals = tail.finals()
    counts = Counter(r["messageId"] for r in finals)
    assert len(counts) == total and max(counts.values()) == 1
    assert Counter(r["messageId"] for r in tail.oks()).most_common(1)[0][1] == 1
    statuses = Counter(r["apiStatus"] for r in finals)
    assert statuses["DELIVERED"] > 0 and statuses["FAIL"] > 0
    workers = [s.worker for s in env.services if s.worker is not None]
    assert all(w.stats["sent"] > 0 for w in workers), "both workers took batches"


async def test_start_time_holds_until_due_and_survives_restart(env: Env) -> None:
    tail = await env.tail()
    service = await env.start("worker", "reporter")
    start = (datetime.now(UTC) + timedelta(minutes=2)).strftime("%Y%m%d%H%M")
    mid = await env.publish(batch(2, startTime=start))
    store = await env.store()
    await eventually(lambda: _counts(store, "held", 2), what="messages held")
    assert tail.results == []
    await env.stop(service)  # held messages live in Redis, not in the process
    # Time travel: make them due now instead of waiting for the next minute.
    await store.r.zadd(store.message_shard(f"{mid}:0").held, {f"{mid}:0": 0, f"{mid}:1": 0})
    await env.start("worker", "reporter")
    finals = await tail.wait_finals(2)
    assert {f["messageId"] for f in finals} == {f"{mid}:0", f"{mid}:1"}
    assert {f["apiStatus"] for f in finals} == {"DELIVERED"}
    assert len(tail.oks()) == 2
    await eventually(lambda: _counts(store, "held", 0), what="held set emptied")
    await store.close()


async def _counts(store: Any, name: str, value: int) -> bool:
    return bool((await store.counts())[name] == value)


async def test_timeout_after_max_wait(env: Env) -> None:
    env.accounts(sim_accounts(delay=3600))
    tail = await env.tail()
    await env.start("worker", "reporter", max_wait_s=1.0)
    mid = await env.publish(batch(3))
    finals = await tail.wait_finals(3, timeout=10)
    assert {f["apiStatus"] for f in finals} == {"TIMEOUT"}
    assert "deadline" in finals[0]["partnerDetail"]
    assert {f["messageId"] for f in finals} == {f"{mid}:{i}" for i in range(3)}


async def test_expire_time_bounds_the_deadline(env: Env) -> None:
    env.accounts(sim_accounts(delay=3600))
    await env.start("worker")
    expire = (datetime.now(UTC) + timedelta(minutes=5)).strftime("%Y%m%d%H%M")
    mid = await env.publish(batch(1, expireTime=expire))
    store = await env.store()
    await eventually(lambda: _counts(store, "pending", 1), what="pending record")
    from mta.store import Pending

    record = Pending.unpack(await store.r.hget(store.message_shard(f"{mid}:0").pending, f"{mid}:0"))
    expected = int(datetime.strptime(expire, "%Y%m%d%H%M").replace(tzinfo=UTC).timestamp() * 1000)
    assert record.deadline_ms == expected
    await store.close()


async def test_priority_lane_overtakes_bulk_backlog(env: Env) -> None:
    env.accounts(sim_accounts(latency=150, delay=3600))
    tail = await env.tail()
    for b in range(12):
        await env.publish(batch(1, start=b), lane="bulk")
    await env.start("worker", bulk_concurrency=1, priority_concurrency=1)
    await asyncio.sleep(0.2)
    mid = await env.publish(batch(1, start=99, priority="yes"), lane="priority")
    await tail.wait(lambda t: f"{mid}:0" in t.by_id("OK"), timeout=10)
    bulk_done = len(tail.oks()) - 1
    assert bulk_done <= 3, f"the priority batch waited behind {bulk_done} bulk batches"


class FlakyAdapter:
    """A partner that answers 503 to the first ``failures`` Send calls (a test plugin)."""

    meta: ClassVar[AdapterMeta] = AdapterMeta(
        name="flaky",
        description="fails first",
        pattern=SendPattern.BATCH,
        options=(OptionSpec("failures", int, default=1),),
    )
    calls = 0

    def __init__(self, options: Any) -> None:
        self.failures = options["failures"]

    async def login(self, secret_key: str) -> bool:
        return True

    async def send(self, request: SmsSendRequest) -> SmsResponse:
        type(self).calls += 1
        if type(self).calls <= self.failures:
            raise TransientError("HTTP 503 from partner")
        return SmsResponse(
            "",
            [
                SmsResult(partnerMessageId=f"f-{time.time_ns()}-{n}", apiStatus=ApiStatus.OK)
                for n, _ in enumerate(request.messages)
            ],
        )

    async def report(self, request: SmsReportRequest) -> SmsResponse:
        return SmsResponse(
            "",
            [
                SmsResult(partnerMessageId=p, apiStatus=ApiStatus.DELIVERED)
                for p in request.messages
            ],
        )

    async def destroy(self) -> None:
        return None


async def test_transient_errors_go_through_the_delayed_retry_queue(env: Env) -> None:
    env.accounts(
        '[[account]]\nid = 0\nname = "f"\nadapter = "flaky"\ndefault = true\n'
        "[account.options]\nfailures = 3\n"
    )
    FlakyAdapter.calls = 0
    tail = await env.tail()
    service = await env.start("worker", "reporter", extra={"flaky": FlakyAdapter})
    started = time.monotonic()
    mid = await env.publish(batch(2))
    finals = await tail.wait_finals(2, timeout=20)
    assert time.monotonic() - started >= 4.5, "came back through the 5 s retry queue"
    assert {f["messageId"] for f in finals} == {f"{mid}:0", f"{mid}:1"}
    assert FlakyAdapter.calls == 4  # 3 tries in place, then one after the delay
    assert service.worker is not None and service.worker.stats["retried"] == 2


async def test_login_nok_account_is_never_used(env: Env) -> None:
    env.accounts(sim_accounts(secret="nok"))
    tail = await env.tail()
    service = await env.start("worker", "reporter")
    await env.publish(batch(2))
    finals = await tail.wait_finals(2)
    assert {f["partnerStatus"] for f in finals} == {"LOGIN_NOK"}
    assert "NOK" in finals[0]["partnerDetail"]
    assert service.worker is not None and service.worker.stats["sent"] == 0


async def test_killed_reporter_claims_come_back_after_lease(env: Env) -> None:
    env.accounts(sim_accounts(delay=0))
    tail = await env.tail()
    await env.start("worker")
    await env.publish(batch(4))
    await tail.wait(lambda t: len(t.oks()) == 4)
    store = await env.store()
    await eventually(lambda: _due_now(store, 4), what="messages due")
    claim = await store.claim(100, lease_ms=1000)  # a reporter that then dies
    assert len(claim.records) == 4
    await env.start("reporter")
    await asyncio.sleep(0.5)
    assert tail.finals() == [], "leased messages are not polled by another reporter"
    finals = await tail.wait_finals(4, timeout=10)
    assert len({f["messageId"] for f in finals}) == 4
    # The dead reporter's late commit is refused: its lease is gone.
    lost = await store.finish(claim.token, list(claim.records), [], {})
    assert sorted(lost) == sorted(claim.records)
    await asyncio.sleep(0.3)
    assert len(tail.finals()) == 4
    await store.close()


async def _due_now(store: Any, n: int) -> bool:
    return bool((await store.counts(due_by_ms=int(time.time() * 1000)))["due_now"] >= n)


async def test_outbox_recovery_publishes_a_dead_writers_reports(env: Env) -> None:
    tail = await env.tail()
    store = await env.store()
    body = orjson.dumps(
        {
            "partnerPacketId": "",
            "results": [{"messageId": "x:0", "apiStatus": "DELIVERED", "accountId": 5}],
        }
    )
    keys = store.shards[store.entry_shard("r:dead:0")]
    await store.r.hset(keys.outbox, "r:dead:0", b"5.DELIVERED\n" + body)
    await store.r.zadd(keys.outbox_due, {"r:dead:0": 0})
    await env.start("reporter")
    await tail.wait(lambda t: len(t.results) == 1, timeout=10)
    assert tail.messages[0][0] == "5.DELIVERED"
    await eventually(lambda: _counts(store, "outbox", 0), what="outbox emptied")
    await store.close()


async def test_begin_marks_and_reports_blocking_markers(env: Env) -> None:
    store = await env.store()
    assert await store.begin("b", ["0", "1"]) == ["", ""]
    assert await store.begin("b", ["0", "1", "2"]) == [MARK_INFLIGHT, MARK_INFLIGHT, ""]
    await store.r.hset(store.markers_key("b"), "0", "h")
    assert await store.begin("b", ["0"], accept="h") == [""]
    # A batch seen whole for the first time costs one field, '*'.
    assert await store.begin("w", 3) is None
    assert await store.r.hgetall(store.markers_key("w")) == {b"*": b"i"}
    assert await store.begin("w", 3) == [MARK_INFLIGHT] * 3
    await store.r.hset(store.markers_key("w"), mapping={"*": "o", "1": "h"})
    assert await store.begin("w", 3, accept="h") == ["o", "", "o"]
    assert await store.begin("w", ["1", "2"]) == [MARK_INFLIGHT, "o"]
    assert await store.r.ttl(store.markers_key("b")) > 0
    await store.close()


async def test_poison_batch_is_dead_lettered_after_the_delivery_limit(env: Env) -> None:
    from mta.topology import DELIVERY_LIMIT

    assert env.channel is not None
    await env.publish(batch(1), message_id="poison")
    queue = await env.channel.get_queue(env.topology.send_queue("bulk"))
    for _ in range(DELIVERY_LIMIT + 1):  # a consumer that crashes on it every time
        message = await queue.get(timeout=5, fail=True)
        assert message is not None and message.message_id == "poison"
        await message.nack(requeue=True)
    dead = await env.channel.get_queue(env.topology.dead_queue)
    await asyncio.sleep(0.2)
    parked = await dead.get(timeout=5, fail=True)
    assert parked is not None and parked.message_id == "poison"
    deaths = parked.headers["x-death"]
    assert isinstance(deaths, list) and deaths[0]["reason"] == "delivery_limit"
    await parked.ack()


async def test_cancel_before_a_partner_saw_it(env: Env) -> None:
    from mta.store import MARK_CANCELLED

    tail = await env.tail()
    store = await env.store()
    # Queued, not yet consumed: cancel wins and the worker skips it.
    assert await store.cancel("q1:1") == ""
    assert await store.cancel("q1:1") == MARK_CANCELLED
    service = await env.start("worker", "reporter")
    await env.publish(batch(3), message_id="q1")
    await tail.wait_finals(2)
    await asyncio.sleep(0.3)
    assert {f["messageId"] for f in tail.finals()} == {"q1:0", "q1:2"}
    assert service.worker is not None and service.worker.stats["sent"] == 2
    assert await store.cancel("q1:0") == "o", "too late once the outcome is recorded"
    # Held for its startTime: cancel removes it from the held set.
    start = (datetime.now(UTC) + timedelta(minutes=5)).strftime("%Y%m%d%H%M")
    await env.publish(batch(1, startTime=start), message_id="held1")
    await eventually(lambda: _counts(store, "held", 1), what="held")
    assert await store.cancel("held1:0") == ""
    assert (await store.counts())["held"] == 0
    await store.close()


class HalfAdapter:
    """A partner that, in its first call, accepts the first message and leaves the rest
    unsent (reason 'retry'), as an SMPP session that dropped mid-batch does."""

    meta: ClassVar[AdapterMeta] = AdapterMeta(name="half", description="half", options=())
    calls = 0

    def __init__(self, options: Any) -> None:
        return None

    async def login(self, secret_key: str) -> bool:
        return True

    async def send(self, request: SmsSendRequest) -> SmsResponse:
        type(self).calls += 1
        first = type(self).calls == 1
        return SmsResponse(
            "",
            [
                SmsResult(partnerMessageId=f"h-{time.time_ns()}-{n}", apiStatus=ApiStatus.OK)
                if n == 0 or not first
                else SmsResult(
                    partnerStatus="NOT_SUBMITTED",
                    partnerDetail="never written",
                    apiStatus=ApiStatus.FAIL,
                    reason=REASON_RETRY,
                )
                for n, _ in enumerate(request.messages)
            ],
        )

    async def report(self, request: SmsReportRequest) -> SmsResponse:
        return SmsResponse(
            "",
            [
                SmsResult(partnerMessageId=p, apiStatus=ApiStatus.DELIVERED)
                for p in request.messages
            ],
        )

    async def destroy(self) -> None:
        return None


async def test_unsent_messages_marked_retry_come_back_through_the_retry_queue(env: Env) -> None:
    env.accounts('[[account]]\nid = 0\nname = "h"\nadapter = "half"\ndefault = true\n')
    HalfAdapter.calls = 0
    tail = await env.tail()
    await env.start("worker", "reporter", extra={"half": HalfAdapter})
    mid = await env.publish(batch(3))
    finals = await tail.wait_finals(3, timeout=20)
    assert {f["apiStatus"] for f in finals} == {"DELIVERED"}
    assert {f["messageId"] for f in finals} == {f"{mid}:{i}" for i in range(3)}
    assert HalfAdapter.calls == 2
    assert not [r for r in tail.results if r["apiStatus"] == "FAIL"], "no FAIL was published"
