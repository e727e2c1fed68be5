"""The ACME adapter against a fake ACME API (mta.testing.FakePartner), through the kit."""

from __future__ import annotations

import itertools
from typing import Any

from acme_adapter import AcmeAdapter
from starlette.requests import Request

from mta.sdk import SmsMessage, SmsSendRequest
from mta.testing import FailureKind, FakePartner, assert_conformant, build

API_KEY = "acme-key-5b1f9c0d"
OUTAGES: dict[FailureKind, int] = {
    "transient": 503,
    "throttled": 429,
    "permanent": 400,
    "auth": 401,
}


def acme_partner() -> FakePartner:
    """ACME's API as its documentation describes it; it keeps what it accepted."""
    partner = FakePartner()
    accepted: dict[str, str] = {}
    ids = itertools.count(1)

    def refused(request: Request) -> tuple[int, dict[str, str]] | None:
        if request.headers.get("authorization") != f"Bearer {API_KEY}":
            return 401, {"error": "invalid api key"}
        return None

    @partner.route("GET", "/v1/account")
    def account(request: Request) -> Any:
        return refused(request) or {"balance": 100}

    @partner.route("POST", "/v1/sms")
    async def submit(request: Request) -> Any:
        if answer := refused(request):
            return answer
        answers = []
        for message in (await request.json())["messages"]:
            if message["to"].startswith("999"):
                answers.append({"status": "REJECTED", "error": "no route to +999"})
            else:
                accepted[pid := f"acme-{next(ids)}"] = "DELIVERED"
                answers.append({"id": pid, "status": "QUEUED"})
        return 201, {"messages": answers}

    @partner.route("POST", "/v1/sms/status")
    async def status(request: Request) -> Any:
        if answer := refused(request):
            return answer
        wanted = (await request.json())["ids"]
        return {"messages": [{"id": i, "status": accepted[i]} for i in wanted if i in accepted]}

    return partner


async def test_the_kit_passes() -> None:
    async with acme_partner() as partner:

        def make_partner_fail(kind: FailureKind | None) -> None:
            retry = {"Retry-After": "1"} if kind == "throttled" else None
            partner.fail(OUTAGES[kind] if kind else None, {"error": f"acme {kind}"}, retry)

        await assert_conformant(
            AcmeAdapter,
            {"url": partner.url, "api_key": API_KEY},
            bad_options={"url": partner.url, "api_key": "acme-key-revoked"},  # login NOK
            make_partner_fail=make_partner_fail,
            final_within_s=2.0,
        )


async def test_send_is_what_acme_documents() -> None:
    async with acme_partner() as partner:
        adapter = build(AcmeAdapter, {"url": partner.url, "api_key": API_KEY})
        batch = [SmsMessage("447700900001", "hi", sender="ACME"), SmsMessage("99912345", "hi")]
        response = await adapter.send(SmsSendRequest(batch))
        await adapter.destroy()
    (sent,) = partner.seen("/v1/sms")
    assert sent.method == "POST" and sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert sent.json() == {
        "messages": [
            {"to": "447700900001", "text": "hi", "from": "ACME"},
            {"to": "99912345", "text": "hi", "from": ""},
        ]
    }
    assert [r.apiStatus.value for r in response.results] == ["OK", "FAIL"]
    assert response.results[1].partnerDetail == "acme: no route to +999"
