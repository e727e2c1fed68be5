"""Accounts operators can trust: failover, circuit breaker, fallback sender, shared rate limit."""

from __future__ import annotations

import os
import time
from typing import Any, ClassVar

import pytest

from mta import registry as registry_module
from mta.adapter import AdapterMeta, OptionSpec, SendPattern, TransientError
from mta.contract import (
    REASON_SENDER,
    ApiStatus,
    SmsReportRequest,
    SmsResponse,
    SmsResult,
    SmsSendRequest,
)
from tests.conftest import Env


class Partner:
    """A test plugin partner: rejects one sender, or fails transiently while told to."""

    meta: ClassVar[AdapterMeta] = AdapterMeta(
        name="partner",
        description="test partner",
        pattern=SendPattern.BATCH,
        options=(
            OptionSpec("reject_sender", str, default=""),
            OptionSpec("down", bool, default=False),
        ),
    )
    down_calls = 0
    senders: ClassVar[list[str]] = []

    def __init__(self, options: Any) -> None:
        self.reject = options["reject_sender"]
        self.down = options["down"]
        self.n = 0

    async def login(self, secret_key: str) -> bool:
        return secret_key != "nok"

    async def send(self, request: SmsSendRequest) -> SmsResponse:
        if self.down and Partner.down_calls >= 0:
            Partner.down_calls += 1
            raise TransientError("HTTP 503 from partner")
        results = []
        for message in request.messages:
            Partner.senders.append(message.sender)
            self.n += 1
            if self.reject and message.sender == self.reject:
                results.append(
                    SmsResult(
                        partnerStatus="REJECTED_SOURCE",
                        partnerDetail="sender not registered",
                        apiStatus=ApiStatus.FAIL,
                        reason=REASON_SENDER,
                    )
                )
            else:
                results.append(
                    SmsResult(partnerMessageId=f"p{id(self)}-{self.n}", apiStatus=ApiStatus.OK)
                )
        return SmsResponse("", results)

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


EXTRA = {"partner": Partner}


def batch(n: int, **fields: Any) -> dict[str, Any]:
    return {
        "messages": [{"mobileNumber": f"9053300{i:05d}", "text": "hi", **fields} for i in range(n)]
    }


async def test_inactive_account_fails_over(env: Env) -> None:
    env.accounts("""
[[account]]
id = 0
name = "primary"
adapter = "simulator"
default = true
active = false
failover = "backup"

[[account]]
id = 7
name = "backup"
adapter = "simulator"
[account.options]
deliver_ratio = 1.0
report_delay_s = 0.0
""")
    tail = await env.tail()
    await env.start("worker", "reporter")
    await env.publish(batch(3))
    finals = await tail.wait_finals(3)
    assert {f["apiStatus"] for f in finals} == {"DELIVERED"}
    assert {f["accountId"] for f in finals} == {0}, "results keep the message's accountId"
    assert all(
        "via failover account 'backup'" in r["partnerDetail"] and "inactive" in r["partnerDetail"]
        for r in tail.oks()
    )


async def test_inactive_account_without_failover_fails(env: Env) -> None:
    env.accounts("""
[[account]]
id = 0
name = "sim"
adapter = "simulator"
default = true

[[account]]
id = 3
name = "off"
adapter = "simulator"
active = false
""")
    tail = await env.tail()
    service = await env.start("worker", "reporter")
    await env.publish(batch(2, accountId=3))
    finals = await tail.wait_finals(2)
    assert {f["partnerStatus"] for f in finals} == {"INACTIVE"}
    assert all("account 'off' serving 3 is inactive" in f["partnerDetail"] for f in finals)
    assert service.worker is not None and service.worker.stats["sent"] == 0


async def test_nok_login_fails_over_and_without_failover_fails(env: Env) -> None:
    env.accounts("""
[[account]]
id = 0
name = "primary"
adapter = "partner"
default = true
secret_key = "nok"
failover = "backup"

[[account]]
id = 1
name = "lonely"
adapter = "partner"
secret_key = "nok"

[[account]]
id = 7
name = "backup"
adapter = "partner"
""")
    tail = await env.tail()
    await env.start("worker", "reporter", extra=EXTRA)
    await env.publish(batch(2))
    await env.publish(batch(1, accountId=1))
    finals = await tail.wait_finals(3)
    by_account = {(f["accountId"], f["apiStatus"]) for f in finals}
    assert by_account == {(0, "DELIVERED"), (1, "FAIL")}
    assert all("has a NOK login" in r["partnerDetail"] for r in tail.oks())
    assert next(f for f in finals if f["accountId"] == 1)["partnerStatus"] == "LOGIN_NOK"


async def test_circuit_breaker_sends_to_failover_then_closes_after_a_probe(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry_module, "BREAKER_FAILURES", 1)
    monkeypatch.setattr(registry_module, "BREAKER_OPEN_S", 1.0)
    env.accounts("""
[[account]]
id = 0
name = "primary"
adapter = "partner"
default = true
failover = "backup"
[account.options]
down = true

[[account]]
id = 7
name = "backup"
adapter = "partner"
""")
    Partner.down_calls = 0
    tail = await env.tail()
    service = await env.start("worker", "reporter", extra=EXTRA)
    await env.publish(batch(1))  # fails 3 times in place: the circuit opens, message retries
    await tail.wait(lambda t: Partner.down_calls >= 3, timeout=10)
    await env.publish(batch(2, text="second"))
    await tail.wait(lambda t: len(t.oks()) >= 2, timeout=10)
    assert all("circuit open" in r["partnerDetail"] for r in tail.oks())
    primary = service.registry.by_name["primary"]
    assert primary.open_until > 0
    # After BREAKER_OPEN_S one probe goes to the primary again; it is fixed now.
    primary.adapter.down = False  # type: ignore[attr-defined]
    await tail.wait(lambda t: len(t.finals()) >= 3, timeout=20)  # the retried one, via probe
    assert primary.open_until == 0 and primary.failures == 0, "the probe closed the circuit"


async def test_fallback_sender_after_the_partner_rejects_the_sender(env: Env) -> None:
    env.accounts("""
[[account]]
id = 0
name = "acct"
adapter = "partner"
default = true
sender = "BADSENDER"
fallback_sender = "GOODSENDER"
[account.options]
reject_sender = "BADSENDER"
""")
    Partner.senders = []
    tail = await env.tail()
    await env.start("worker", "reporter", extra=EXTRA)
    await env.publish(
        batch(2)
        | {
            "messages": [
                {"mobileNumber": "905330000001", "text": "no sender"},
                {"mobileNumber": "905330000002", "text": "own sender", "sender": "MINE"},
            ]
        }
    )
    finals = await tail.wait_finals(2)
    assert {f["apiStatus"] for f in finals} == {"DELIVERED"}
    oks = sorted(tail.oks(), key=lambda r: r["messageId"])
    assert "fallback sender 'GOODSENDER'" in oks[0]["partnerDetail"]
    assert "rejected sender 'BADSENDER'" in oks[0]["partnerDetail"]
    assert oks[1]["partnerDetail"] == ""
    assert Partner.senders == ["BADSENDER", "MINE", "GOODSENDER"]
    # The final says it too: the upstream may only read finals.
    final = {f["messageId"]: f for f in finals}[oks[0]["messageId"]]
    assert "fallback sender 'GOODSENDER'" in final["partnerDetail"]
    assert "rejected sender 'BADSENDER'" in final["partnerDetail"]
    other = {f["messageId"]: f for f in finals}[oks[1]["messageId"]]
    assert "fallback" not in other["partnerDetail"]


async def test_rate_limit_is_shared_by_two_workers(env: Env) -> None:
    env.accounts("""
[[account]]
id = 0
name = "slow"
adapter = "simulator"
default = true
rate_limit = 20
[account.options]
report_delay_s = 0.0
""")
    tail = await env.tail()
    first = await env.start("worker", bulk_concurrency=2)
    second = await env.start("worker", bulk_concurrency=2)
    started = time.monotonic()
    for n in range(6):
        await env.publish(batch(10, text=f"b{n}"))
    await tail.wait(lambda t: len(t.oks()) == 60, timeout=20)
    elapsed = time.monotonic() - started
    # 60 messages at 20/s: the first 10 go at once, the other 50 need 2.5 s together.
    assert elapsed >= 2.3, f"two workers sent 60 messages in {elapsed:.2f}s, above 20/s"
    assert elapsed < 8, f"far slower than the limit: {elapsed:.2f}s"
    assert first.worker is not None and second.worker is not None
    assert first.worker.stats["sent"] > 0 and second.worker.stats["sent"] > 0


async def _mta(env: Env, *args: str) -> tuple[int, str]:
    import asyncio

    from tests.conftest import mta_command

    proc = await asyncio.create_subprocess_exec(
        *mta_command(*args),
        env={**os.environ, "MTA_ACCOUNTS": env.settings.accounts},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_accounts_test_command(env: Env) -> None:
    env.accounts("""
[[account]]
id = 0
name = "good"
adapter = "simulator"
default = true
[account.options]
report_delay_s = 0.0
deliver_ratio = 1.0

[[account]]
id = 1
name = "refused"
adapter = "simulator"
secret_key = "nok"
""")
    code, out = await _mta(
        env, "accounts", "test", "good", "--to", "+90 533 214 13 54", "--wait", "5"
    )
    assert code == 0, out
    for line in (
        "PASS  test_connection",
        "PASS  test_credentials",
        "PASS  test_proxy",
        "PASS  login",
        "PASS  send: accepted",
        "PASS  report: DELIVERED",
    ):
        assert line in out
    code, out = await _mta(env, "accounts", "test", "refused", "--to", "905332141354")
    assert code == 1 and "FAIL  login: NOK" in out and "FAIL  send: skipped" in out
    code, out = await _mta(env, "accounts", "test", "nobody")
    assert code != 0 and "no account named 'nobody'" in out and "good, refused" in out


async def test_rate_limited_batches_beyond_the_longest_wait_are_deferred_not_lost(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mta import sending

    monkeypatch.setattr(sending, "RATE_MAX_WAIT_MS", 200)
    env.accounts("""
[[account]]
id = 0
name = "slow"
adapter = "simulator"
default = true
rate_limit = 10
[account.options]
report_delay_s = 0.0
deliver_ratio = 1.0
""")
    tail = await env.tail()
    service = await env.start("worker", "reporter", bulk_concurrency=1)
    await env.publish(batch(10, text="first"))
    await env.publish(batch(10, text="second"))  # its slot is ~1 s away: deferred, not slept
    await tail.wait(lambda t: len(t.finals()) == 20, timeout=20)
    assert service.worker is not None and service.worker.stats["rate_deferred"] >= 10
    assert {f["apiStatus"] for f in tail.finals()} == {"DELIVERED"}
    assert len({f["messageId"] for f in tail.finals()}) == 20


def test_registry_gives_adapters_the_time_zone_of_mmp_times(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import UTC
    from zoneinfo import ZoneInfo

    from mta.config import load_accounts
    from mta.registry import Registry, discover

    env.accounts("""
[[account]]
id = 0
name = "ib"
adapter = "infobip"
default = true
[account.options]
api_key = "k-123456"
""")
    classes = discover()
    accounts = load_accounts(env.settings.accounts, {n: c.meta for n, c in classes.items()})
    istanbul = ZoneInfo("Europe/Istanbul")
    given = Registry(accounts, classes, tz=istanbul).by_name["ib"].adapter
    assert given.context.tz == istanbul  # type: ignore[attr-defined]
    monkeypatch.delenv("MTA_TIMEZONE", raising=False)
    assert Registry(accounts, classes).by_name["ib"].adapter.context.tz == UTC  # type: ignore[attr-defined]
    monkeypatch.setenv("MTA_TIMEZONE", "America/New_York")
    from_env = Registry(accounts, classes).by_name["ib"].adapter
    assert from_env.context.tz == ZoneInfo("America/New_York")  # type: ignore[attr-defined]
