"""The echo adapter passes the sms-mta conformance kit and is found under its entry point."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from mta.sdk import SmsMessage, SmsSendRequest
from mta.testing import FailureKind, assert_conformant, build, discoverable

from mta_adapter_echo import EchoAdapter
from mta_adapter_echo.partner import PARTNER

# As [account.options] in accounts.toml; the kit checks them against EchoAdapter.meta.
OPTIONS = {"api_key": "echo-test-key-8f2c41"}

# What the partner answers for each failure the kit asks for.
OUTAGES: dict[FailureKind, int] = {
    "transient": 503,
    "throttled": 429,
    "permanent": 400,
    "auth": 401,
}


def make_partner_fail(kind: FailureKind | None) -> None:
    PARTNER.outage = OUTAGES[kind] if kind else None


@pytest.fixture(autouse=True)
def healthy_partner() -> Iterator[None]:
    yield
    PARTNER.outage = None


async def test_the_kit_passes() -> None:
    await assert_conformant(
        EchoAdapter,
        OPTIONS,
        secret_key="platform-secret",
        bad_secret_key="",  # the echo partner refuses an empty secret key
        make_partner_fail=make_partner_fail,
        final_within_s=2.0,
    )


async def test_a_rejected_number_fails_alone() -> None:
    adapter = build(EchoAdapter, OPTIONS)
    assert await adapter.login("platform-secret")
    batch = [SmsMessage("447700900001", "hi"), SmsMessage("99912345678", "hi")]
    response = await adapter.send(SmsSendRequest(batch))
    assert [r.apiStatus.value for r in response.results] == ["OK", "FAIL"]
    assert "999" in response.results[1].partnerDetail


def test_the_mta_finds_it_by_entry_point() -> None:
    assert discoverable("echo") is EchoAdapter
