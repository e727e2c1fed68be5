"""The operator console: ``mta dead list|show|replay|purge``, ``mta teardown``, ``mta bench
--json`` and per-command settings in ``--help``, run as subprocesses on real RabbitMQ/Redis."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

import aio_pika
import orjson
import pytest

from mta.topology import HEADER_DEAD_REASON, HEADER_IDS, HEADER_ORIGINAL_KEY, Topology
from tests.conftest import Env, batch, eventually, run_mta

#: ``mta ARGS`` in a subprocess on this test's prefix; console commands get 30 s.
mta = partial(run_mta, timeout=30.0)


async def dead_letter(
    env: Env,
    body: bytes | dict[str, Any],
    message_id: str,
    reason: str,
    key: str = "bulk",
    **headers: Any,
) -> None:
    """Park a letter as the worker does: the reason and the original routing key in headers."""
    assert env.channel is not None
    exchange = await env.channel.get_exchange(env.topology.dead_exchange)
    await exchange.publish(
        aio_pika.Message(
            body if isinstance(body, bytes) else orjson.dumps(body),
            message_id=message_id,
            headers={HEADER_DEAD_REASON: reason, HEADER_ORIGINAL_KEY: key, **headers},
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        ),
        routing_key="",
    )


async def depth(env: Env, name: str) -> int:
    assert env.connection is not None
    channel = await env.connection.channel()
    try:
        queue = await channel.declare_queue(name, passive=True)
        return int(queue.declaration_result.message_count or 0)
    finally:
        await channel.close()


async def listed(env: Env) -> list[dict[str, Any]]:
    code, out, err = await mta(env, "dead", "list", "--json")
    assert code == 0, err
    rows = orjson.loads(out)
    assert isinstance(rows, list)
    return rows


# --- dead letters -----------------------------------------------------------------------------


async def test_dead_list_show_replay_purge_round_trip(env: Env) -> None:
    dead = env.topology.dead_queue
    await dead_letter(env, batch(2), "l1", "worker error: RuntimeError: boom", key="priority")
    await dead_letter(env, b"this is not json", "l2", "body is not JSON: unexpected character")
    await dead_letter(env, batch(1, start=5), "l3", "worker error: KeyError: 'x'")

    # Listing reads every letter and leaves each one there, in order, however often it runs
    # (a requeue-based listing would spend quorum deliveries; rotation does not).
    for _ in range(3):
        rows = await listed(env)
        assert [r["id"] for r in rows] == ["l1", "l2", "l3"]
    assert await depth(env, dead) == 3
    first = rows[0]
    assert first["original_routing_key"] == "priority"
    assert first["reason"] == "worker error: RuntimeError: boom"
    assert first["messages"] == 2 and first["bytes"] == len(orjson.dumps(batch(2)))
    assert first["internal_copy"] is False and first["deaths"] == []
    assert rows[1]["messages"] is None  # not a batch at all
    code, out, err = await mta(env, "dead", "list")
    assert code == 0, err
    assert "l2" in out and "body is not JSON" in out and "3 letter(s)" in err

    code, out, err = await mta(env, "dead", "show", "l1", "--max-bytes", "20")
    assert code == 0, err
    assert f"{HEADER_DEAD_REASON}: worker error: RuntimeError: boom" in out
    assert out.count("hello") <= 1 and "more bytes" in out  # the body is cut at 20 bytes
    code, _, err = await mta(env, "dead", "show", "nope")
    assert code == 1 and "no letter 'nope'" in err

    # purge asks first; without an answer (no terminal) nothing goes
    code, _, err = await mta(env, "dead", "purge", "l3")
    assert code == 1 and await depth(env, dead) == 3
    code, _, err = await mta(env, "dead", "purge", "l3", "--yes")
    assert code == 0, err
    assert [r["id"] for r in await listed(env)] == ["l1", "l2"]

    # an undecodable letter is refused without --force, and stays
    code, out, err = await mta(env, "dead", "replay", "l2")
    assert code == 1 and "refused l2" in err and "can never pass" in err
    assert await depth(env, dead) == 2

    # l1 goes back to its original lane, same message id, no x-mta-* header, then leaves
    code, out, err = await mta(env, "dead", "replay", "l1")
    assert code == 0, err
    assert f"replayed l1 (2 message(s)) to {env.topology.send_queue('priority')}" in out
    assert [r["id"] for r in await listed(env)] == ["l2"]
    assert env.channel is not None
    lane = await env.channel.get_queue(env.topology.send_queue("priority"))
    replayed = await lane.get(timeout=5, fail=True)
    assert replayed is not None
    await replayed.ack()
    assert replayed.message_id == "l1" and replayed.body == orjson.dumps(batch(2))
    assert not [h for h in replayed.headers or {} if str(h).startswith("x-mta-")]

    # --force replays even l2 (on the lane asked for); then the queue is empty
    code, out, err = await mta(env, "dead", "replay", "--all", "--force", "--lane", "bulk")
    assert code == 0, err
    assert f"to {env.topology.send_queue('bulk')}" in out
    assert await depth(env, dead) == 0
    code, _, err = await mta(env, "dead", "replay")
    assert code == 2 and "--all" in err  # neither IDs nor --all
    code, _, err = await mta(env, "dead", "replay", "gone")
    assert code == 1 and "not found: gone" in err


async def test_purge_all(env: Env) -> None:
    for n in range(3):
        await dead_letter(env, batch(1, start=n), f"p{n}", "worker error: x")
    code, _, err = await mta(env, "dead", "purge", "--all", "--yes")
    assert code == 0, err
    assert "3 letter(s) removed" in err
    assert await depth(env, env.topology.dead_queue) == 0


async def test_replay_never_resends_recorded_messages(env: Env) -> None:
    tail = await env.tail()
    service = await env.start("worker", "reporter")
    assert service.worker is not None
    await env.publish(batch(3), message_id="rec")
    await tail.wait_finals(3)
    assert service.worker.stats["sent"] == 3
    # The same batch dead-lettered after its messages were recorded (a worker error after
    # submission), and a batch that was never seen.
    await dead_letter(env, batch(3), "rec", "worker error: RuntimeError: after submission")
    await dead_letter(env, batch(2, start=10), "fresh", "worker error: RuntimeError: early")

    code, out, err = await mta(env, "dead", "replay", "rec", "fresh")
    assert code == 0, err
    assert "replayed rec (3 message(s))" in out and "markers found" in out
    assert "replayed fresh (2 message(s))" in out and "no markers" in out

    await tail.wait(lambda t: {"fresh:0", "fresh:1"} <= set(t.by_id("OK")))
    await eventually(
        lambda: _stat(service, "skipped", 3), what="the replayed recorded batch skipped"
    )
    await asyncio.sleep(0.5)
    assert service.worker.stats["sent"] == 5  # 3 once, and the 2 fresh ones
    oks = [r["messageId"] for r in tail.oks()]
    assert sorted(oks) == ["fresh:0", "fresh:1", "rec:0", "rec:1", "rec:2"]
    assert await depth(env, env.topology.dead_queue) == 0


async def _stat(service: Any, name: str, value: int) -> bool:
    return bool(service.worker.stats[name] >= value)


async def test_a_letter_of_the_delivery_limit_keeps_its_x_death_through_listings(
    env: Env,
) -> None:
    from mta.topology import DELIVERY_LIMIT

    assert env.channel is not None
    await env.publish(batch(1), message_id="poison", lane="priority")
    queue = await env.channel.get_queue(env.topology.send_queue("priority"))
    for _ in range(DELIVERY_LIMIT + 1):  # a consumer that crashes on it every time
        message = await queue.get(timeout=5, fail=True)
        assert message is not None
        await message.nack(requeue=True)
    await eventually(
        lambda: _has(env, env.topology.dead_queue, 1), what="the poison batch dead-lettered"
    )
    for _ in range(2):  # the first listing reads the broker's x-death, the next its copy
        [row] = await listed(env)
        assert row["id"] == "poison" and row["original_routing_key"] == "priority"
        assert row["reason"] == "broker: delivery_limit"
        assert row["deaths"] == [
            {"reason": "delivery_limit", "count": 1, "queue": env.topology.send_queue("priority")}
        ]
    code, _, err = await mta(env, "dead", "replay", "poison")
    assert code == 0, err
    message = await queue.get(timeout=5, fail=True)
    assert message is not None
    await message.ack()
    assert message.message_id == "poison"
    headers = message.headers or {}
    assert "x-death" not in headers and not [h for h in headers if h.startswith("x-mta-")]


async def _has(env: Env, name: str, n: int) -> bool:
    return await depth(env, name) >= n


async def test_replay_refuses_a_worker_copy_unless_forced(env: Env) -> None:
    # A delayed-retry copy whose signed ids header came with it: its body's indexes are not
    # the original batch's, so under its own id it would match other messages' markers.
    await dead_letter(env, batch(1), "orig", "broker: delivery_limit", **{HEADER_IDS: ["orig:4"]})
    code, _, err = await mta(env, "dead", "replay", "orig")
    assert code == 1 and "a worker's copy" in err
    assert await depth(env, env.topology.dead_queue) == 1
    code, out, err = await mta(env, "dead", "replay", "orig", "--force")
    assert code == 0, err
    assert " as orig-replay-" in out
    assert env.channel is not None
    lane = await env.channel.get_queue(env.topology.send_queue("bulk"))
    message = await lane.get(timeout=5, fail=True)
    assert message is not None
    await message.ack()
    assert (message.message_id or "").startswith("orig-replay-")
    assert HEADER_IDS not in (message.headers or {})


async def test_dead_list_unreachable_rabbitmq_is_one_line(env: Env) -> None:
    code, out, err = await mta(env, "dead", "list", MTA_AMQP_URL="amqp://guest:s3cret@127.0.0.1:1/")
    assert code == 1 and "cannot reach RabbitMQ" in err
    assert "s3cret" not in err + out and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


# --- teardown ---------------------------------------------------------------------------------


async def _exists(env: Env, kind: str, name: str) -> bool:
    assert env.connection is not None
    channel = await env.connection.channel()
    try:
        if kind == "queue":
            await channel.declare_queue(name, passive=True)
        else:
            await channel.declare_exchange(name, passive=True)
        return True
    except aio_pika.exceptions.ChannelClosed:
        return False
    finally:
        if not channel.is_closed:
            await channel.close()


async def test_teardown_removes_queues_exchanges_and_keys(env: Env) -> None:
    store = await env.store()
    try:
        await store.signing_key()  # one Redis key of the prefix
        await store.begin("some-batch", 2)  # and markers
        assert await store.keys()
        topology = Topology(env.prefix)
        code, out, err = await mta(env, "teardown")
        assert code == 1 and "--yes" in err
        assert f"queue {topology.send_queue('bulk')}" in out and "Redis key(s)" in out
        assert await _exists(env, "queue", topology.dead_queue)  # nothing went
        code, out, err = await mta(env, "teardown", "--yes")
        assert code == 0, err
        for name, _ in topology.queues():
            assert not await _exists(env, "queue", name), name
        for name, _ in topology.exchanges():
            assert not await _exists(env, "exchange", name), name
        assert await store.keys() == []
        code, _, err = await mta(env, "teardown")
        assert code == 0 and "nothing of prefix" in err
    finally:
        await store.close()


# --- bench and help ---------------------------------------------------------------------------


async def test_bench_json_shape(env: Env) -> None:
    code, out, err = await mta(
        env, "bench", "-n", "2000", "--report-delay-s", "0.2", "--json", timeout=180
    )
    assert code == 0, err
    doc = orjson.loads(out)
    assert set(doc) == {
        "config", "publish_msg_s", "adapter_ok_msg_s", "ok", "finals_msg_s",
        "finals_steady_msg_s", "finals", "duplicate_finals", "complete", "latency_ms",
        "cpu_s_per_1000",
        "redis_bytes_per_pending", "peak_pending", "wall_s", "processes",
    }  # fmt: skip
    assert doc["config"]["messages"] == 2000 and doc["config"]["receipts"] == "polled"
    assert doc["ok"] == 2000 and doc["finals"] == 2000 and doc["complete"] is True
    assert doc["duplicate_finals"] == 0
    assert set(doc["latency_ms"]) == {"publish_ok", "publish_final", "receipt_final"}
    assert doc["latency_ms"]["publish_final"]["p50"] >= 200  # the report delay is in it
    assert {"mta", "machine"} <= set(doc["cpu_s_per_1000"])
    assert [p["role"] for p in doc["processes"]] == ["worker", "reporter"]
    assert set(doc["processes"][0]["rss_mb"]) == {"start", "max", "end"}


def test_bench_counts_finals_by_message_and_a_copy_as_doubled() -> None:
    from mta.bench import _Follow

    def body(*ids: str) -> bytes:
        results = [{"messageId": i, "partnerMessageId": f"p-{i}"} for i in ids]
        return orjson.dumps({"partnerPacketId": "", "results": results})

    follow = _Follow(sent_at={}, total=3, report_delay_s=1.0, receipt_time=lambda *_: None)
    follow.on_body("0.OK", body("b0:0", "b0:1"))  # OKs are not finals
    follow.on_body("0.DELIVERED", body("b0:0", "b0:1"))
    assert (follow.final_count, follow.duplicates) == (2, 0) and not follow.done.is_set()
    follow.on_body("0.DELIVERED", body("b0:0", "b0:1"))  # a copy of the same report message
    assert (follow.final_count, follow.duplicates) == (2, 2)
    follow.on_body("0.FAIL", body("b0:2", "b0:0"))
    assert (follow.final_count, follow.duplicates) == (3, 3) and follow.done.is_set()


@pytest.mark.parametrize(
    ("command", "present", "absent"),
    [
        (["publish"], ["--amqp-url", "--prefix"], ["--poll-first-s", "--redis-url"]),
        (["reports"], ["MTA_AMQP_URL"], ["MTA_ACCOUNTS", "MTA_LEASE_S"]),
        (["dead", "replay"], ["--max-batch-bytes", "--redis-url"], ["--poll-max-s"]),
        (["teardown"], ["--redis-url", "--yes"], ["--accounts"]),
        (["worker"], ["--poll-first-s", "--lease-s", "--max-batch"], []),
    ],
)
def test_help_shows_only_the_settings_a_command_uses(
    command: list[str], present: list[str], absent: list[str]
) -> None:
    from click.testing import CliRunner

    from mta.cli import main

    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0, result.output
    for flag in present:
        assert flag in result.output, f"{flag} missing from mta {' '.join(command)} --help"
    for flag in absent:
        assert flag not in result.output, f"{flag} in mta {' '.join(command)} --help"


def test_an_unknown_setting_name_is_an_error_at_import() -> None:
    from mta.cli.settings import settings_options

    with pytest.raises(ValueError, match="'poll_first'"):
        settings_options("amqp_url", "poll_first")
