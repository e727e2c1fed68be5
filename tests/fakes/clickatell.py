"""A fake Clickatell One API for tests: a Starlette app that behaves as Clickatell documents.

It checks ``Authorization: <api key>`` (raw key), the paths, ``Content-Type`` and the body of
``POST /v1/message`` field by field (at most 200 messages; per-message ``channel``, ``to``,
``content``, optional ``from`` and ``validityPeriod`` in minutes), answers with one
``{"apiMessageId", "accepted", "to", "error"}`` entry per message (``error`` = ``{"code",
"description"}``) and the HTTP status Clickatell's errors table documents: 202 when every
message was accepted, 207 Multi-status when several were submitted and not all have the same
status, else (one message, refused) the HTTP status of its error code (400; 402 for code 20);
global errors with ``{"messages": [], "error": {...}}``, and ``GET /v1/balance``. Tests steer it
with :attr:`FakeClickatell.rejects` (per-number rejections),
:attr:`FakeClickatell.reject_senders` (per-``from`` rejections), :meth:`FakeClickatell.answer_next`
(scripted answers: 400, 402, 429 with Retry-After, 503, …) and :attr:`FakeClickatell.delay_s`.
:meth:`FakeClickatell.callback` builds the status callback Clickatell would push.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

MAX_MESSAGES = 200
MESSAGE_FIELDS = frozenset({"channel", "to", "content", "from", "validityPeriod"})
#: HTTP status of a message-level error code when every message is refused (errors table).
CODE_HTTP = {20: 402, 18: 500, 19: 503}

#: One API status codes and names (docs/protocols.md §3.3).
STATUS_NAMES: dict[int, str] = {
    1: "UNKNOWN",
    2: "QUEUED",
    3: "SCHEDULED",
    4: "SENT_TO_SUPPLIER",
    5: "DEVICE_ACK",
    6: "READ",
    20: "EXPIRED",
    21: "STOPPED_BY_USER",
    22: "STOPPED_BY_ADMIN",
    23: "DELIVERY_FAILURE",
    24: "EMULATED",
    25: "INSUFFICIENT_ACCOUNT_BALANCE",
    26: "VOLUME_LIMIT",
    27: "DAILY_VOLUME_LIMIT",
    28: "MONTHLY_VOLUME_LIMIT",
    29: "RECIPIENT_DOES_NOT_EXIST",
    100: "ROUTING_ERROR",
}


def error_body(code: int, description: str) -> dict[str, Any]:
    return {"messages": [], "error": {"code": code, "description": description}}


@dataclass
class Scripted:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class FakeClickatell:
    """State and ASGI app of one fake Clickatell integration."""

    def __init__(self, api_key: str = "ck-0123456789abcdef0123456789abcdef") -> None:
        self.api_key = api_key
        self.rejects: dict[str, tuple[int, str]] = {}
        self.reject_senders: dict[str, tuple[int, str]] = {}  # from → (code, description)
        self.script: list[Scripted] = []
        self.delay_s = 0.0
        self.calls: list[dict[str, Any]] = []  # accepted POST /v1/message bodies
        self.statuses: list[int] = []  # the HTTP status answered to each of them
        self.accepted: dict[str, str] = {}  # apiMessageId → to
        self.balance_calls = 0
        self.failing: str | None = None  # see fail_all
        self.app = Starlette(
            routes=[
                Route("/v1/message", self.message, methods=["POST"]),
                Route("/v1/balance", self.balance, methods=["GET"]),
            ]
        )

    def answer_next(
        self,
        status: int,
        code: int,
        description: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        """The next ``POST /v1/message`` (after auth) answers this global error."""
        self.script.append(Scripted(status, error_body(code, description), headers or {}))

    def fail_all(self, kind: str | None) -> None:
        """Fail every call from now on (the conformance kit's hook): ``transient`` → 503,
        ``throttled`` → 429 with Retry-After, ``permanent`` → 400, ``auth`` → 401; None heals."""
        self.failing = kind

    def _failure(self) -> Response | None:
        if self.failing == "transient":
            return JSONResponse(error_body(19, "Internal error, please retry"), 503)
        if self.failing == "throttled":
            return JSONResponse(error_body(43, "Rate limit"), 429, headers={"Retry-After": "1"})
        if self.failing == "permanent":
            return JSONResponse(error_body(23, "Invalid or missing parameter"), 400)
        if self.failing == "auth":
            return JSONResponse(error_body(1, "Invalid or missing Integration API Key"), 401)
        return None

    def _authorised(self, request: Request) -> bool:
        return request.headers.get("authorization") == self.api_key

    async def balance(self, request: Request) -> Response:
        failure = self._failure()
        if failure is not None:
            return failure
        if not self._authorised(request):
            return JSONResponse(error_body(1, "Invalid or missing Integration API Key"), 401)
        self.balance_calls += 1
        return JSONResponse({"balance": 125.5, "currency": "USD"})

    async def message(self, request: Request) -> Response:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        failure = self._failure()
        if failure is not None:
            return failure
        if not self._authorised(request):
            return JSONResponse(error_body(1, "Invalid or missing Integration API Key"), 401)
        if self.script:
            scripted = self.script.pop(0)
            return JSONResponse(scripted.body, scripted.status, headers=scripted.headers)
        if not request.headers.get("content-type", "").startswith("application/json"):
            return JSONResponse(error_body(21, "Payload data is malformed"), 400)
        try:
            doc = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return JSONResponse(error_body(21, "Payload data is malformed"), 400)
        if not isinstance(doc, dict) or set(doc) != {"messages"}:
            return JSONResponse(error_body(23, "Invalid or missing parameter: messages"), 400)
        messages = doc["messages"]
        if not isinstance(messages, list) or not messages:
            return JSONResponse(error_body(23, "Invalid or missing parameter: messages"), 400)
        if len(messages) > MAX_MESSAGES:
            return JSONResponse(
                error_body(22, "Maximum messages per request payload exceeded"), 400
            )
        answers = [self._one(m) for m in messages]
        self.calls.append(doc)
        refused = [a for a in answers if not a["accepted"]]
        if not refused:
            status = 202
        elif len(answers) > 1:
            status = 207  # "not all messages have the same status": look at each entry
        else:
            status = CODE_HTTP.get(refused[0]["error"]["code"], 400)
        self.statuses.append(status)
        return JSONResponse({"messages": answers, "error": None}, status_code=status)

    def _one(self, message: Any) -> dict[str, Any]:
        to = message.get("to") if isinstance(message, dict) else None
        to = to if isinstance(to, str) else ""

        def refuse(code: int, description: str) -> dict[str, Any]:
            return {
                "apiMessageId": None,
                "accepted": False,
                "to": to,
                "error": {"code": code, "description": description},
            }

        if not isinstance(message, dict):
            return refuse(23, "Invalid or missing parameter: message")
        unknown = sorted(set(message) - MESSAGE_FIELDS)
        if unknown:
            return refuse(23, f"Invalid or missing parameter: {', '.join(unknown)}")
        if message.get("channel", "sms") != "sms":
            return refuse(39, "Channel is not available on integration")
        if not (to.isdigit() and 7 <= len(to) <= 15):
            return refuse(25, "Invalid recipient address")
        content = message.get("content")
        if not isinstance(content, str) or not content:
            return refuse(23, "Invalid or missing parameter: content")
        sender = message.get("from")
        if sender is not None and (not isinstance(sender, str) or not sender):
            return refuse(23, "Invalid or missing parameter: from")
        validity = message.get("validityPeriod")
        if validity is not None and (
            not isinstance(validity, int) or isinstance(validity, bool) or validity < 1
        ):
            return refuse(23, "Invalid or missing parameter: validityPeriod")
        if to in self.rejects:
            code, description = self.rejects[to]
            return refuse(code, description)
        if sender in self.reject_senders:
            code, description = self.reject_senders[sender]
            return refuse(code, description)
        message_id = uuid.uuid4().hex
        self.accepted[message_id] = to
        return {"apiMessageId": message_id, "accepted": True, "to": to, "error": None}

    def callback(self, message_id: str, status_code: int) -> dict[str, Any]:
        """The REST status callback Clickatell pushes for an accepted message."""
        return {
            "integrationName": "mta-tests",
            "messageId": message_id,
            "requestId": uuid.uuid4().hex,
            "clientMessageId": "",
            "to": self.accepted.get(message_id, ""),
            "from": "",
            "statusCode": status_code,
            "status": STATUS_NAMES.get(status_code, "UNKNOWN"),
            "statusDescription": f"status {status_code}",
            "timestamp": int(time.time() * 1000),
        }
