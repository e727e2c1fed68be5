"""Hostile and oversized input on the real RabbitMQ and Redis: every sent message is reported,
forged internal headers change nothing, batches are bounded, the fail policy is exact."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import resource
import time
from typing import Any, ClassVar

import aio_pika
import aiormq
import orjson
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, ResponseError

from mta.adapter import AdapterMeta, SendPattern
from mta.contract import (
    ApiStatus,
    SmsReportRequest,
    SmsResponse,
    SmsResult,
    SmsSendRequest,
)
from mta.outage import is_outage
from mta.outbox import MAX_RESULTS
from mta.store import MARK_INFLIGHT, MARK_TAKEN
from mta.topology import HEADER_ATTEMPT, HEADER_IDS, HEADER_RELEASED
from tests.conftest import Env, all_delivered, batch, eventually


async def dead_letters(env: Env, n: int, timeout: float = 10.0) -> list[aio_pika.IncomingMessage]:
    assert env.channel is not None
    queue = await env.channel.get_queue(env.topology.dead_queue)
    got: list[aio_pika.IncomingMessage] = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        message = await queue.get(fail=False)
        if message is None:
            assert time.monotonic() < deadline, f"only {len(got)} of {n} dead letters"
            await asyncio.sleep(0.05)
            continue
        await message.ack()
        got.append(message)  # type: ignore[arg-type]
    return got


def sent(env: Env) -> int:
    return sum(s.worker.stats["sent"] for s in env.services if s.worker is not None)


async def test_an_id_beyond_64_bits_fails_alone_and_the_sent_ones_are_reported(env: Env) -> None:
    tail = await env.tail()
    await env.start("worker", "reporter")
    body = batch(3)
    body["messages"][1]["accountId"] = 99999999999999999999
    body["messages"][2]["senderId"] = "99999999999999999999"
    mid = await env.publish(json.dumps(body).encode())
    finals = {f["messageId"]: f for f in await tail.wait_finals(3)}
    assert finals[f"{mid}:0"]["apiStatus"] == "DELIVERED"
    assert f"{mid}:0" in tail.by_id("OK")
    for index, name in ((1, "accountId"), (2, "senderId")):
        bad = finals[f"{mid}:{index}"]
        assert bad["apiStatus"] == "FAIL" and bad["partnerStatus"] == "INVALID"
        assert bad["partnerDetail"].startswith(f"{name}:"), bad
        assert bad["accountId"] == 0 and bad["senderId"] == 0
    assert sent(env) == 1


async def test_a_lone_surrogate_fails_its_message_only(env: Env) -> None:
    tail = await env.tail()
    await env.start("worker", "reporter")
    body = orjson.dumps(batch(3)).replace(b"hello 1", b"hello \\ud800")
    body = body.replace(b'"hello 2"', b'"hello 2","extra":"\\udfff"')
    mid = await env.publish(body)
    finals = {f["messageId"]: f for f in await tail.wait_finals(3)}
    assert finals[f"{mid}:0"]["apiStatus"] == "DELIVERED"
    for index in (1, 2):
        bad = finals[f"{mid}:{index}"]
        assert bad["partnerStatus"] == "INVALID" and "surrogate" in bad["partnerDetail"]


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({HEADER_ATTEMPT: -10}, HEADER_ATTEMPT),
        ({HEADER_RELEASED: 1}, "signature"),
        ({HEADER_IDS: ["victim:0", "victim:1"]}, "signature"),
        ({HEADER_IDS: ["victim:0"]}, HEADER_IDS),
    ],
)
async def test_forged_internal_headers_change_nothing(
    env: Env, headers: dict[str, Any], reason: str
) -> None:
    tail = await env.tail()
    await env.start("worker", "reporter")
    future = time.strftime("%Y%m%d%H%M", time.gmtime(time.time() + 7200))
    mid = await env.publish(batch(2, startTime=future), headers=headers)
    [letter] = await dead_letters(env, 1)
    assert letter.message_id == mid
    assert letter.headers is not None
    assert reason in str(letter.headers["x-mta-dead-reason"])
    assert not any(k in letter.headers for k in (HEADER_IDS, HEADER_ATTEMPT, HEADER_RELEASED))
    await asyncio.sleep(0.3)
    assert sent(env) == 0 and tail.results == []


async def test_internal_retries_still_pass_their_signature(env: Env) -> None:
    """A released held message is an internal, signed republish: it goes through."""
    tail = await env.tail()
    await env.start("worker", "reporter")
    soon = time.strftime("%Y%m%d%H%M", time.gmtime(time.time() + 60))
    mid = await env.publish(batch(1, startTime=soon))
    store = await env.store()
    await eventually(lambda: _held(store), what="message held")
    await store.r.zadd(store.message_shard(f"{mid}:0").held, {f"{mid}:0": 0})  # due now
    finals = await tail.wait_finals(1, timeout=15)
    assert finals[0]["messageId"] == f"{mid}:0" and finals[0]["apiStatus"] == "DELIVERED"
    await store.close()


async def _held(store: Any) -> bool:
    return bool((await store.counts())["held"])


async def test_oversized_batches_are_refused_whole_and_the_worker_goes_on(env: Env) -> None:
    tail = await env.tail()
    env.configure(max_batch=1000)
    await env.start("worker", "reporter")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tiny = orjson.dumps({"messages": [{"mobileNumber": "9", "text": "x"}] * 300_000})
    assert len(tiny) > 8_000_000
    big = await env.publish(tiny)
    many = await env.publish(batch(1001))
    letters = {m.message_id: m for m in await dead_letters(env, 2, timeout=20)}
    assert letters.keys() == {big, many}
    assert "MTA_MAX_BATCH_BYTES" in str(letters[big].headers["x-mta-dead-reason"])  # type: ignore[index]
    assert "MTA_MAX_BATCH" in str(letters[many].headers["x-mta-dead-reason"])  # type: ignore[index]
    good = await env.publish(batch(2))
    finals = await tail.wait_finals(2)
    assert {f["messageId"] for f in finals} == {f"{good}:0", f"{good}:1"}
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 200, f"the test process grew by {grown_mb:.0f} MB"


async def test_report_bodies_are_split_to_a_bounded_size(env: Env) -> None:
    tail = await env.tail()
    await env.start("worker", "reporter")
    await env.publish(batch(1000))
    await tail.wait(lambda t: len(t.oks()) >= 1000, timeout=30)
    await tail.wait_finals(1000, timeout=30)
    sizes = [len(doc["results"]) for _, doc in tail.messages]
    assert max(sizes) <= MAX_RESULTS and len(tail.messages) >= 4, sizes


async def test_a_long_batch_redelivered_with_the_same_id_is_skipped(env: Env) -> None:
    store = await env.store()
    assert await store.begin("long", 9000) is None
    await store.r.hset(store.markers_key("long"), "17", "o")
    again = await store.begin("long", 9000)
    assert again is not None and len(again) == 9000
    assert again[17] == "o" and set(again) == {"o", MARK_INFLIGHT}
    taken = await store.begin("long", [str(i) for i in range(9000)], accept=MARK_INFLIGHT)
    assert taken == [""] * 17 + ["o"] + [""] * 8982
    await store.close()


def test_deterministic_errors_are_not_outages() -> None:
    assert not is_outage(ResponseError("ERR user_script:1: too many results to unpack"))
    assert not is_outage(aiormq.exceptions.ChannelPreconditionFailed("message too large"))
    assert not is_outage(ValueError("Integer exceeds 64-bit range"))
    assert is_outage(RedisConnectionError("Connection refused"))
    assert is_outage(ReadOnlyError("You can't write against a read only replica."))
    assert is_outage(aiormq.exceptions.AMQPConnectionError("gone"))


async def test_a_connection_redis_py_dropped_mid_command_is_an_outage() -> None:
    """In a Redis Cluster failover redis-py can drop a connection's writer while a command is
    on it; the AttributeError it raises then dead-lettered a batch. It is an outage now; an
    AttributeError of ours is still a bug."""
    from redis.asyncio.connection import Connection

    connection = Connection()
    connection._writer = None  # what a concurrent disconnect leaves
    with pytest.raises(AttributeError) as dropped:
        await connection._send_packed_command([b"PING\r\n"])
    assert is_outage(dropped.value)
    with pytest.raises(AttributeError) as ours:
        None.writelines([])  # type: ignore[attr-defined]
    assert not is_outage(ours.value)


class Gate:
    """A partner whose Send waits until the test opens the gate (one call at a time)."""

    meta: ClassVar[AdapterMeta] = AdapterMeta(
        name="gate", description="blocks", pattern=SendPattern.BATCH, max_concurrency=1
    )
    opened = asyncio.Event()
    calls = 0

    def __init__(self, options: Any) -> None:
        pass

    async def login(self, secret_key: str) -> bool:
        return True

    async def send(self, request: SmsSendRequest) -> SmsResponse:
        type(self).calls += 1
        await type(self).opened.wait()
        return SmsResponse(
            "",
            [
                SmsResult(partnerMessageId=f"g-{time.time_ns()}-{n}", apiStatus=ApiStatus.OK)
                for n in range(len(request.messages))
            ],
        )

    async def report(self, request: SmsReportRequest) -> SmsResponse:
        return all_delivered(request)

    async def destroy(self) -> None:
        return None


async def test_fail_policy_fails_only_messages_whose_send_had_started(env: Env) -> None:
    env.accounts('[[account]]\nid = 0\nname = "g"\nadapter = "gate"\ndefault = true\n')
    Gate.opened = asyncio.Event()
    Gate.calls = 0
    tail = await env.tail()
    store = await env.store()
    first = await env.start(
        "worker", extra={"gate": Gate}, inflight_policy="fail", shutdown_grace_s=0.2
    )
    mids = [await env.publish(batch(2, start=10 * n)) for n in range(4)]
    await eventually(_calls_made, what="one Send in flight")
    await asyncio.sleep(0.3)  # the other batches are prefetched and wait for the account
    markers = {mid: await store.r.hgetall(store.markers_key(mid)) for mid in mids}
    inflight = [m for m, fields in markers.items() if MARK_INFLIGHT.encode() in fields.values()]
    taken = [m for m, fields in markers.items() if fields == {b"*": MARK_TAKEN.encode()}]
    assert len(inflight) == 1 and len(taken) == 3, markers
    await env.stop(first)  # the worker stops with the batches unfinished: they come back
    Gate.opened.set()
    await env.start("worker", "reporter", extra={"gate": Gate}, inflight_policy="fail")
    finals = await tail.wait_finals(8, timeout=20)
    unknown = {f["messageId"] for f in finals if f["partnerStatus"] == "UNKNOWN"}
    assert unknown == {f"{inflight[0]}:0", f"{inflight[0]}:1"}
    delivered = {f["messageId"] for f in finals if f["apiStatus"] == "DELIVERED"}
    assert delivered == {f"{m}:{i}" for m in taken for i in (0, 1)}
    await store.close()


async def _calls_made() -> bool:
    return Gate.calls >= 1


async def test_upstream_strings_cannot_forge_log_lines(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    await env.start("worker")
    caplog.set_level(logging.INFO)
    await env.publish(b"not json", message_id="x\nFORGED line from upstream")
    await dead_letters(env, 1)
    lines = [r.getMessage() for r in caplog.records]
    assert any("FORGED" in line for line in lines)
    assert not any("\nFORGED" in line for line in lines), lines


class Leaky:
    """A buggy partner adapter whose errors carry its credentials in every encoding."""

    meta: ClassVar[AdapterMeta] = AdapterMeta(name="leaky", description="leaks", max_batch=10)
    secret = ""

    def __init__(self, options: Any) -> None:
        pass

    async def login(self, secret_key: str) -> bool:
        type(self).secret = secret_key
        return True

    async def send(self, request: SmsSendRequest) -> SmsResponse:
        token = type(self).secret
        raise RuntimeError(f"boom: key={token} auth={base64.b64encode(f'sid:{token}'.encode())!r}")

    async def report(self, request: SmsReportRequest) -> SmsResponse:
        return SmsResponse("", [])

    async def destroy(self) -> None:
        return None


async def test_adapter_errors_never_carry_the_accounts_secret(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "s3cr3t-Token/+="
    env.accounts(
        '[[account]]\nid = 0\nname = "l"\nadapter = "leaky"\ndefault = true\n'
        f'secret_key = "{secret}"\n'
    )
    caplog.set_level(logging.DEBUG)
    tail = await env.tail()
    await env.start("worker", "reporter", extra={"leaky": Leaky}, max_attempts=1)
    await env.publish(batch(2))
    finals = await tail.wait_finals(2)
    assert {f["partnerStatus"] for f in finals} == {"RETRIES_EXHAUSTED"}
    assert "boom" in finals[0]["partnerDetail"]
    encoded = base64.b64encode(f"sid:{secret}".encode()).decode()
    everything = " ".join(
        [orjson.dumps(tail.results).decode()] + [r.getMessage() for r in caplog.records]
    )
    for variant in (secret, encoded, "s3cr3t"):
        assert variant not in everything


async def test_a_dead_lettered_batch_keeps_its_markers_for_a_replay(env: Env) -> None:
    """A batch that hit a bug after some of its messages were recorded: its markers outlive
    the hour a batch's markers normally live, so `mta dead replay` skips what was recorded."""
    store = await env.store()
    await store.begin("parked-b", 3)
    await store.r.hset(store.markers_key("parked-b"), mapping={"0": "o", "1": "o"})
    await env.start("worker")
    # Refused (a forged header): the worker dead-letters it.
    await env.publish(batch(3), message_id="parked-b", headers={HEADER_ATTEMPT: 99})
    await dead_letters(env, 1)
    assert await store.r.ttl(store.markers_key("parked-b")) > 86400
    await store.close()
