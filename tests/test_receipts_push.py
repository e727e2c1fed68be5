"""Pushed receipts become finals at once, not at the next poll (real RabbitMQ and Redis)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any, ClassVar

from mta.adapter import AdapterContext, AdapterMeta, OptionSpec, ReceiptMode, SendPattern
from mta.contract import (
    ApiStatus,
    SmsReportRequest,
    SmsResponse,
    SmsResult,
    SmsSendRequest,
    pack_result,
)
from tests.conftest import Env, batch


class Pusher:
    """A partner that pushes each message's receipt ``push_after_s`` after accepting it (0: while
    the Send is still being answered, before the MTA has recorded the message)."""

    meta: ClassVar[AdapterMeta] = AdapterMeta(
        name="pusher",
        description="pushes receipts",
        pattern=SendPattern.BATCH,
        receipts=ReceiptMode.PUSH,
        options=(OptionSpec("push_after_s", float, default=0.5),),
    )
    pushed_at: ClassVar[dict[str, float]] = {}

    def __init__(self, options: Any, context: AdapterContext) -> None:
        self.after = float(options["push_after_s"])
        self.context = context
        self.tasks: set[asyncio.Task[None]] = set()

    async def login(self, secret_key: str) -> bool:
        return True

    async def _push(self, pids: list[str]) -> None:
        await asyncio.sleep(self.after)
        for pid in pids:
            type(self).pushed_at[pid] = time.monotonic()
        await self.context.receipts.push(
            [SmsResult(p, "DELIVRD", "", ApiStatus.DELIVERED) for p in pids]
        )

    async def send(self, request: SmsSendRequest) -> SmsResponse:
        pids = [f"p{time.time_ns()}-{n}" for n in range(len(request.messages))]
        if self.after <= 0:
            await self._push(pids)  # the receipt is stored before the OK is recorded
        else:
            task = asyncio.create_task(self._push(pids))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return SmsResponse("", [SmsResult(p, "ACCEPTED", "", ApiStatus.OK) for p in pids])

    async def report(self, request: SmsReportRequest) -> SmsResponse:
        raise AssertionError("a push-only partner is never polled")

    async def destroy(self) -> None:
        return None


ACCOUNT = (
    '[[account]]\nid = 0\nname = "push"\nadapter = "pusher"\ndefault = true\n'
    "[account.options]\npush_after_s = {after}\n"
)


async def run(env: Env, after: float, batches: int = 5) -> list[float]:
    """Publish, wait for every final; the delays from each push to its final on the exchange."""
    env.accounts(ACCOUNT.format(after=after))
    Pusher.pushed_at = {}
    tail = await env.tail()
    # A first poll 30 s away: a final sooner than that came from the push.
    await env.start(
        "worker", "reporter", extra={"pusher": Pusher}, poll_first_s=30.0, poll_max_s=60.0
    )
    for b in range(batches):
        await env.publish(batch(20, start=b * 20))
    finals = await tail.wait_finals(batches * 20, timeout=20)
    assert Counter(f["apiStatus"] for f in finals) == {"DELIVERED": batches * 20}
    return [
        tail.times[(f["messageId"], "DELIVERED")] - Pusher.pushed_at[f["partnerMessageId"]]
        for f in finals
    ]


async def test_a_pushed_receipt_is_published_within_a_second(env: Env) -> None:
    delays = await run(env, after=0.5)
    assert max(delays) < 1.0, f"slowest receipt → final: {max(delays):.2f} s"


async def test_a_receipt_pushed_before_the_ok_was_recorded_is_not_left_to_the_poll(
    env: Env,
) -> None:
    delays = await run(env, after=0.0)
    assert max(delays) < 1.0, f"slowest receipt → final: {max(delays):.2f} s"


async def test_a_receipt_pushed_while_the_message_is_leased_makes_it_due_at_once(
    env: Env,
) -> None:
    store = await env.store()
    mid, pid = "lease-b:0", "p-1"
    keys = store.message_shard(mid)
    await store.r.hset(keys.pending, mid, b"[]")
    await store.r.zadd(keys.due, {mid: 0})
    await store.r.hset(store.partner_index_key("push", pid), pid, mid)
    claim = await store.claim(10, 60_000)
    assert list(claim.records) == [mid]
    # The receipt arrives while a reporter holds the lease: the due index has no entry to move.
    await store.push_receipts(
        "push", {pid: pack_result(SmsResult(pid, apiStatus=ApiStatus.DELIVERED))}
    )
    assert await store.r.zscore(keys.due, mid) is None
    later = int(time.time() * 1000) + 30_000
    lost = await store.finish(claim.token, [], [(mid, later)], {})
    assert lost == []
    due = await store.r.zscore(keys.due, mid)
    assert due is not None and due <= time.time() * 1000 + 10, "due now, not in 30 s"
    # Without a receipt, the next poll keeps its time.
    claim = await store.claim(10, 60_000)
    await store.finish(claim.token, [], [(mid, later)], {})
    assert await store.r.zscore(keys.due, mid) == later
    await store.close()


async def test_finals_take_their_partner_index_entries_with_them(env: Env) -> None:
    await run(env, after=0.2, batches=1)
    store = await env.store()
    assert not [k async for k in store.r.scan_iter(match=f"{{{env.prefix}:*}}:pidx:*")]
    await store.close()
