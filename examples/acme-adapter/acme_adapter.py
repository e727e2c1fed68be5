"""The ACME adapter of the guide (docs/adapters.md §9): a made-up JSON partner on the HTTP base.

ACME's API, as its (made-up) documentation has it; every call carries
``Authorization: Bearer <api_key>``:

* ``GET  /v1/account``                                   → 200, or 401 for a refused key
* ``POST /v1/sms``  ``{"messages": [{"to", "text", "from"}]}``
  → ``{"messages": [{"id", "status": "QUEUED"} | {"status": "REJECTED", "error"}]}``, in order
* ``POST /v1/sms/status``  ``{"ids": [...]}`` → ``{"messages": [{"id", "status"}]}``, for the
  ids it knows; ``status`` is QUEUED, SENT, DELIVERED or UNDELIVERABLE
* errors: ``{"error": "<text>"}`` with 400/401/429/5xx

Its tests (``test_acme_adapter.py``, beside this file) serve that API with
:class:`mta.testing.FakePartner` and run the conformance kit against it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import httpx

from mta.sdk import (
    HTTP_OPTIONS,
    AdapterMeta,
    ApiStatus,
    AuthError,
    HttpAdapter,
    OptionSpec,
    ReceiptMode,
    SendPattern,
    SmsReportRequest,
    SmsResponse,
    SmsResult,
    SmsSendRequest,
)

#: ACME's states as the MTA's: anything not final stays WAITING.
STATES = {"DELIVERED": ApiStatus.DELIVERED, "UNDELIVERABLE": ApiStatus.FAIL}


def to_result(item: dict[str, Any]) -> SmsResult:
    """One answer of ``POST /v1/sms``: OK with ACME's id, or FAIL with its error."""
    if item.get("status") == "QUEUED" and item.get("id"):
        return SmsResult(str(item["id"]), "QUEUED", "", ApiStatus.OK)
    status = str(item.get("status") or "REJECTED")
    return SmsResult("", status, f"acme: {item.get('error') or status}", ApiStatus.FAIL)


class AcmeAdapter(HttpAdapter):
    meta: ClassVar[AdapterMeta] = AdapterMeta(
        name="acme",
        description="ACME SMS API.",
        options=(
            *HTTP_OPTIONS,
            OptionSpec("api_key", str, required=True, secret=True, description="ACME API key"),
        ),
        default_url="https://api.acme.example",
        pattern=SendPattern.BATCH,
        max_batch=500,
        receipts=ReceiptMode.PULL,
    )

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.options['api_key']}"}

    def error_text(self, response: httpx.Response) -> str:
        try:
            return str(response.json().get("error", response.text))  # the partner's words
        except ValueError:
            return response.text

    async def login(self, secret_key: str) -> bool:
        # ACME authenticates by the api_key option; the MTA's secret key is not used.
        try:
            await self.call("GET", "/v1/account")
        except AuthError:
            return False  # NOK: the api_key is refused
        return True

    async def send(self, request: SmsSendRequest) -> SmsResponse:
        body = {
            "messages": [
                {"to": m.mobileNumber, "text": m.text, "from": m.sender} for m in request.messages
            ]
        }
        answer = (await self.call("POST", "/v1/sms", json=body)).json()
        return SmsResponse(results=[to_result(item) for item in answer["messages"]])

    async def report(self, request: SmsReportRequest) -> SmsResponse:
        answer = (await self.call("POST", "/v1/sms/status", json={"ids": request.messages})).json()
        return SmsResponse(
            results=[
                SmsResult(
                    partnerMessageId=str(item["id"]),
                    partnerStatus=str(item["status"]),
                    apiStatus=STATES.get(item["status"], ApiStatus.WAITING),
                )
                for item in answer["messages"]
            ]
        )
