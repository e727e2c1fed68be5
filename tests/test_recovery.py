"""A partner outage: messages park without spending attempts and come back soon after the
partner does (real RabbitMQ and Redis; the partner is a test adapter that fails while down)."""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar

from mta.adapter import AdapterMeta, SendPattern, TransientError
from mta.contract import ApiStatus, SmsReportRequest, SmsResponse, SmsResult, SmsSendRequest
from mta.topology import RETRY_TIERS_S
from tests.conftest import Env, all_delivered, batch


class Outage:
    """A partner that answers 503 until ``up_at`` (monotonic), then accepts everything in a
    second (slow enough that batches arrive while the open circuit's probe is in flight)."""

    meta: ClassVar[AdapterMeta] = AdapterMeta(
        name="outage", description="down, then up", pattern=SendPattern.BATCH
    )
    up_at = 0.0
    first_ok = 0.0

    def __init__(self, options: Any) -> None:
        pass

    async def login(self, secret_key: str) -> bool:
        return True

    async def send(self, request: SmsSendRequest) -> SmsResponse:
        if time.monotonic() < type(self).up_at:
            raise TransientError("HTTP 503 from partner (outage)")
        await asyncio.sleep(1.0)
        type(self).first_ok = type(self).first_ok or time.monotonic()
        return SmsResponse(
            "",
            [
                SmsResult(f"o-{time.time_ns()}-{n}", "ACCEPTED", "", ApiStatus.OK)
                for n in range(len(request.messages))
            ],
        )

    async def report(self, request: SmsReportRequest) -> SmsResponse:
        return all_delivered(request)

    async def destroy(self) -> None:
        return None


async def test_parked_messages_come_back_soon_after_the_partner_does(env: Env) -> None:
    env.accounts('[[account]]\nid = 0\nname = "o"\nadapter = "outage"\ndefault = true\n')
    Outage.up_at = time.monotonic() + 3.0
    Outage.first_ok = 0.0
    tail = await env.tail()
    service = await env.start("worker", "reporter", extra={"outage": Outage})
    assert service.worker is not None
    for b in range(12):  # enough failed Sends to open the account's circuit
        await env.publish(batch(5, start=b * 5))
    finals = await tail.wait_finals(60, timeout=90)
    assert {f["apiStatus"] for f in finals} == {"DELIVERED"}, "no attempt budget was spent"
    last = max(tail.times[(f["messageId"], "DELIVERED")] for f in finals)
    assert Outage.first_ok, "the partner came back"
    # Once the circuit's probe succeeded, nothing waits for a long retry tier.
    assert last - Outage.first_ok < RETRY_TIERS_S[-1] + 5, f"{last - Outage.first_ok:.0f} s"
    assert service.worker.stats["parked"] > 0, "the premise: messages parked while it was down"
