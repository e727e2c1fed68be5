"""Fuzz: malformed, truncated, mistyped, oversized and unicode-edge batches among good ones.

Every message of a decodable batch gets exactly one final (a FAIL with a detail when it is
bad); every undecodable body lands in ``<prefix>.dead`` with a reason; the worker lives on.
The contract's checks are also fuzzed directly (hypothesis): they raise only ``Invalid``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import resource
import time
from collections import Counter
from datetime import UTC
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from mta.contract import BatchError, Invalid, Rules, check_message, decode_batch, raw_correlation
from tests.conftest import Env

RULES = Rules(tz=UTC)
MAX_BATCH = 20
MAX_BYTES = 32_768

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
FIELDS = [
    "mobileNumber",
    "text",
    "sender",
    "startTime",
    "expireTime",
    "priority",
    "smsType",
    "brandCode",
    "recipientType",
    "messageType",
    "accountId",
    "senderId",
]


@settings(max_examples=2000, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=12) | json_values)
def test_check_message_raises_only_invalid(raw: Any) -> None:
    try:
        checked = check_message(raw, RULES)
    except Invalid as exc:
        assert str(exc).split(":", 1)[0] in {*FIELDS, "message"}
    else:
        orjson.dumps(checked.message)  # whatever passed can be reported
    orjson.dumps(raw_correlation(raw))  # so can whatever failed


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=300))
def test_decode_batch_raises_only_batch_error(body: bytes) -> None:
    with contextlib.suppress(BatchError):
        decode_batch(body, MAX_BYTES, MAX_BATCH)


EDGE_TEXT = [
    "hello",
    "ünïcödé",
    "😀" * 3,
    "\u202eRTL",
    "a\x00b",
    "\ufeffBOM",
    "{}[]~^|€",
    "x" * 1601,
    "",
    "\n\r\t",
    "ﷺ" * 10,
]
EDGE_NUMBERS = [
    "905332141354",
    "+90 (533) 214-13-54",
    "12345",
    "0905332141354",
    "9" * 16,
    "١٢٣٤٥٦٧٨",
    905332141354,
    2**64,
    -1,
    1.5,
    None,
    True,
    [],
    {},
    "9" * 10_000,
]
EDGE_INTS = [0, 12, "12", -1, 2**63, 2**63 - 1, "9" * 25, 1.0, True, None, "x", [], {"a": 1}]
EDGE_STRINGS = ["", "ACME", "A" * 12, "1" * 17, "AC\nME", 7, None, ["x"], "x" * 200, "ÄCME"]


def a_message(rng: random.Random) -> Any:
    if rng.random() < 0.05:
        return rng.choice([None, 1, "x", [], [1, 2], True])
    raw: dict[str, Any] = {
        "mobileNumber": rng.choice(EDGE_NUMBERS) if rng.random() < 0.4 else "905332141354",
        "text": rng.choice(EDGE_TEXT) if rng.random() < 0.4 else "hello",
    }
    for name in rng.sample(FIELDS[2:], rng.randrange(0, 5)):
        pool = EDGE_INTS if name in ("accountId", "senderId") else EDGE_STRINGS
        raw[name] = rng.choice(pool)
    if rng.random() < 0.05:
        del raw[rng.choice(["mobileNumber", "text"])]
    return raw


def a_body(rng: random.Random) -> tuple[bytes, int | None]:
    """A body and its message count, or None when it must be refused whole."""
    kind = rng.random()
    if kind < 0.06:
        return b"\xff" + rng.randbytes(rng.randrange(0, 200)), None
    if kind < 0.10:
        good = json.dumps({"messages": [a_message(rng) for _ in range(3)]}).encode()
        return good[: rng.randrange(1, len(good) - 1)], None  # truncated
    if kind < 0.13:
        return rng.choice([b"[]", b"{}", b'{"messages": {}}', b'"x"', b"null", b"1"]), None
    if kind < 0.15:
        return orjson.dumps(
            {"messages": [{"mobileNumber": "9", "text": "x"}] * (MAX_BATCH + 1)}
        ), None
    if kind < 0.17:
        return orjson.dumps({"messages": [{"text": "x" * MAX_BYTES}]}), None
    messages = [a_message(rng) for _ in range(rng.randrange(1, 6))]
    doc = {"messages": messages, "extra": rng.choice([None, 1, "x"])}
    body = json.dumps(doc, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")
    if kind < 0.22:  # a lone surrogate in one message: decodable, that message FAILs
        body = body.replace(b'"hello"', b'"hel\\ud83dlo"', 1)
    return body, len(messages)


async def test_fuzzed_batches_each_message_one_final_each_bad_body_dead(env: Env) -> None:
    rng = random.Random(7)
    bodies = [a_body(rng) for _ in range(1200)]
    tail = await env.tail()
    service = await env.start("worker", "reporter", max_batch=MAX_BATCH, max_batch_bytes=MAX_BYTES)
    assert service.worker is not None
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    expected: set[str] = set()
    refused: set[str] = set()
    for n, (body, count) in enumerate(bodies):
        mid = await env.publish(body, message_id=f"f{n}")
        if count is None:
            refused.add(mid)
        else:
            expected.update(f"{mid}:{i}" for i in range(count))
    await tail.wait(lambda t: expected <= {r["messageId"] for r in t.finals()}, timeout=120)
    await asyncio.sleep(1.0)
    finals = Counter(r["messageId"] for r in tail.finals())
    assert set(finals) == expected
    assert max(finals.values()) == 1, "a message with more than one final"
    bad = [r for r in tail.finals() if r["apiStatus"] == "FAIL"]
    assert bad and all(r["partnerDetail"] for r in bad), "every FAIL says why"
    assert env.channel is not None
    dead = await env.channel.get_queue(env.topology.dead_queue)
    letters: dict[str, str] = {}
    deadline = time.monotonic() + 20
    while len(letters) < len(refused) and time.monotonic() < deadline:
        message = await dead.get(fail=False)
        if message is None:
            await asyncio.sleep(0.05)
            continue
        await message.ack()
        assert message.headers is not None
        letters[str(message.message_id)] = str(message.headers["x-mta-dead-reason"])
    assert set(letters) == refused
    assert all(letters.values())
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 200, f"grew by {grown_mb:.0f} MB"
    assert not service.worker.stopping.is_set()
