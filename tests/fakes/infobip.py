"""A fake Infobip SMS API for tests: the documented endpoints, checks, answers and reports.

Serve :attr:`FakeInfobip.app` with ``tests.httpserver.serve``. It implements, as Infobip's
documentation describes them (docs/protocols.md §3.1):

* ``POST /sms/2/text/advanced`` — checks ``Authorization: App <key>`` and the body field by
  field (``validityPeriod``: a positive integer of minutes; Infobip sets more than 48 h to
  48 h), answering 400 ``BAD_REQUEST`` with ``validationErrors`` when wrong; answers
  ``{"bulkId", "messages": [{"to", "status", "messageId"}]}`` with a PENDING status per
  accepted destination, a REJECTED status for numbers in :attr:`FakeInfobip.rejects` and
  senders in :attr:`FakeInfobip.reject_senders`, and ``REJECTED_DUPLICATE_MESSAGE_ID`` for a
  ``messageId`` it has seen before. Each accepted message queues its delivery report(s) (by
  default ``DELIVERED_TO_HANDSET``; per number in :attr:`FakeInfobip.outcomes`).
* ``GET /sms/1/reports`` — ``limit`` (1..1000, default 50), ``messageId``, ``bulkId``; every
  report is returned **once**.
* ``GET /account/1/balance`` — ``{"balance", "currency"}``.

Errors use Infobip's bodies: ``{"requestError": {"serviceException": {"messageId", "text"}}}``
(401 ``UNAUTHORIZED``, 400 ``BAD_REQUEST``, 5xx ``GENERAL_ERROR``) and, for throttling, the
newer ``{"errorCode": "E429", ...}`` with ``Retry-After``. Scripted faults
(:meth:`FakeInfobip.fault`) answer the next request(s) to a path with a given status or delay.
Stricter than Infobip in one respect: unknown body fields are refused, to catch typos.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

STATUS: dict[str, dict[str, Any]] = {
    "PENDING_ACCEPTED": {
        "groupId": 1,
        "groupName": "PENDING",
        "id": 26,
        "name": "PENDING_ACCEPTED",
        "description": "Message sent to next instance",
    },
    "PENDING_ENROUTE": {
        "groupId": 1,
        "groupName": "PENDING",
        "id": 7,
        "name": "PENDING_ENROUTE",
        "description": "Message sent to next instance",
    },
    "DELIVERED_TO_OPERATOR": {
        "groupId": 3,
        "groupName": "DELIVERED",
        "id": 2,
        "name": "DELIVERED_TO_OPERATOR",
        "description": "Message delivered to operator",
    },
    "DELIVERED_TO_HANDSET": {
        "groupId": 3,
        "groupName": "DELIVERED",
        "id": 5,
        "name": "DELIVERED_TO_HANDSET",
        "description": "Message delivered to handset",
    },
    "UNDELIVERABLE_NOT_DELIVERED": {
        "groupId": 2,
        "groupName": "UNDELIVERABLE",
        "id": 9,
        "name": "UNDELIVERABLE_NOT_DELIVERED",
        "description": "Message sent not delivered",
    },
    "EXPIRED_EXPIRED": {
        "groupId": 4,
        "groupName": "EXPIRED",
        "id": 15,
        "name": "EXPIRED_EXPIRED",
        "description": "Message expired",
    },
    "REJECTED_NETWORK": {
        "groupId": 5,
        "groupName": "REJECTED",
        "id": 6,
        "name": "REJECTED_NETWORK",
        "description": "Network is forbidden",
    },
    "REJECTED_DESTINATION": {
        "groupId": 5,
        "groupName": "REJECTED",
        "id": 52,
        "name": "REJECTED_DESTINATION",
        "description": "Invalid destination address.",
    },
    "REJECTED_SOURCE": {
        "groupId": 5,
        "groupName": "REJECTED",
        "id": 11,
        "name": "REJECTED_SOURCE",
        "description": "Sender ID not registered on the account",
    },
    "REJECTED_SENDER": {
        "groupId": 5,
        "groupName": "REJECTED",
        "id": 13,
        "name": "REJECTED_SENDER",
        "description": "Sender ID blocklisted",
    },
    "REJECTED_DUPLICATE_MESSAGE_ID": {
        "groupId": 5,
        "groupName": "REJECTED",
        "id": 23,
        "name": "REJECTED_DUPLICATE_MESSAGE_ID",
        "description": "Rejected duplicate message ID",
    },
}

NO_ERROR = {
    "groupId": 0,
    "groupName": "OK",
    "id": 0,
    "name": "NO_ERROR",
    "description": "No Error",
    "permanent": False,
}
ERROR_FOR = {
    2: {
        "groupId": 1,
        "groupName": "HANDSET_ERRORS",
        "id": 27,
        "name": "EC_ABSENT_SUBSCRIBER",
        "description": "Absent Subscriber",
        "permanent": False,
    },
    4: {
        "groupId": 1,
        "groupName": "HANDSET_ERRORS",
        "id": 27,
        "name": "EC_ABSENT_SUBSCRIBER",
        "description": "Absent Subscriber",
        "permanent": False,
    },
}

GENERAL_ERROR_TEXT = "Something went wrong. Please contact support."
FAULT_TEXT = {
    400: ("BAD_REQUEST", "Bad request"),
    401: ("UNAUTHORIZED", "Invalid login details"),
    403: ("FORBIDDEN", "Forbidden"),
}

MESSAGE_FIELDS = {
    "from",
    "destinations",
    "text",
    "notifyUrl",
    "notifyContentType",
    "validityPeriod",
}
TOP_FIELDS = {"bulkId", "messages"}


def service_error(status: int, code: str, text: str, **extra: Any) -> JSONResponse:
    body = {"requestError": {"serviceException": {"messageId": code, "text": text, **extra}}}
    return JSONResponse(body, status_code=status)


@dataclass
class Fault:
    """A scripted answer for the next request(s) to ``path`` (``*``: any path)."""

    path: str
    status: int = 0  # 0 = do the work, then answer normally after ``delay_s``
    delay_s: float = 0.0
    retry_after: str | None = None
    times: int = 1


@dataclass
class FakeInfobip:
    """The fake's state; tests read :attr:`sent`, :attr:`calls` and queue outcomes/faults."""

    api_key: str = "ib-test-key-0123456789"
    #: number → the status names its reports go through (last = final), e.g.
    #: ``["DELIVERED_TO_OPERATOR", "DELIVERED_TO_HANDSET"]``.
    outcomes: dict[str, list[str]] = field(default_factory=dict)
    #: number → REJECTED status name answered at send time.
    rejects: dict[str, str] = field(default_factory=dict)
    #: sender (``from``) → REJECTED status name answered at send time (REJECTED_SENDER, …).
    reject_senders: dict[str, str] = field(default_factory=dict)
    #: every accepted destination: messageId → the message entry with bulkId and ``to``.
    sent: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: every send body as received.
    bodies: list[dict[str, Any]] = field(default_factory=list)
    #: (method, path, query string) of every authenticated request.
    calls: list[tuple[str, str, str]] = field(default_factory=list)
    reports: deque[dict[str, Any]] = field(default_factory=deque)
    faults: list[Fault] = field(default_factory=list)

    def fault(
        self,
        path: str,
        status: int = 0,
        *,
        delay_s: float = 0.0,
        retry_after: str | None = None,
        times: int = 1,
    ) -> None:
        self.faults.append(Fault(path, status, delay_s, retry_after, times))

    def fail_all(self, kind: str | None) -> None:
        """Fail every call from now on (the conformance kit's ``make_partner_fail``): kind
        ``transient`` (503), ``throttled`` (429, Retry-After 2), ``permanent`` (400) or
        ``auth`` (401); None heals the partner."""
        self.faults = [f for f in self.faults if f.path != "*"]
        status = {"transient": 503, "throttled": 429, "permanent": 400, "auth": 401}
        if kind is not None:
            self.fault("*", status[kind], retry_after="2", times=1 << 30)

    def report_for(self, message_id: str, status_name: str) -> dict[str, Any]:
        """The documented report object for one message (pull and webhook share it)."""
        record = self.sent[message_id]
        status = STATUS[status_name]
        error = ERROR_FOR.get(status["groupId"], NO_ERROR)
        return {
            "bulkId": record["bulkId"],
            "messageId": message_id,
            "to": record["to"],
            "from": record.get("from", "InfoSMS"),
            "sentAt": "2026-11-22T10:31:00.000+0000",
            "doneAt": "2026-11-22T10:31:05.000+0000",
            "smsCount": 1,
            "mccMnc": "28601",
            "price": {"pricePerMessage": 0.01, "currency": "EUR"},
            "status": status,
            "error": error,
        }

    def webhook_body(self, message_ids: list[str], status_name: str | None = None) -> bytes:
        """What Infobip POSTs to a ``notifyUrl``: the final report of each message."""
        results = []
        for mid in message_ids:
            to = self.sent[mid]["to"]
            name = status_name or self.outcomes.get(to, ["DELIVERED_TO_HANDSET"])[-1]
            results.append(self.report_for(mid, name))
        return orjson.dumps({"results": results})

    # --- the HTTP side --------------------------------------------------------------------
    @property
    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/sms/2/text/advanced", self._send, methods=["POST"]),
                Route("/sms/1/reports", self._reports, methods=["GET"]),
                Route("/account/1/balance", self._balance, methods=["GET"]),
            ]
        )

    async def _gate(self, request: Request) -> Response | float:
        """Scripted faults first, then the auth check.

        Returns the refusal to answer, or the delay (seconds) to wait *after* doing the work
        and before answering: a late answer from a partner that did act on the request.
        """
        path = request.url.path
        late = 0.0
        for fault in self.faults:
            if fault.path in (path, "*") and fault.times > 0:
                fault.times -= 1
                if not fault.status:
                    late = fault.delay_s
                    break
                if fault.delay_s:
                    await asyncio.sleep(fault.delay_s)
                if fault.status == 429:
                    headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                    return JSONResponse(
                        {
                            "errorCode": "E429",
                            "description": "Too many requests",
                            "action": "Reduce the request rate and retry later.",
                            "violations": [],
                            "resources": [],
                        },
                        status_code=429,
                        headers=headers,
                    )
                if fault.status >= 500:
                    return service_error(fault.status, "GENERAL_ERROR", GENERAL_ERROR_TEXT)
                code, text = FAULT_TEXT.get(fault.status, ("BAD_REQUEST", "Bad request"))
                return service_error(fault.status, code, text)
        if request.headers.get("authorization") != f"App {self.api_key}":
            return service_error(401, "UNAUTHORIZED", "Invalid login details")
        self.calls.append((request.method, path, request.url.query))
        return late

    async def _balance(self, request: Request) -> Response:
        late = await self._gate(request)
        if isinstance(late, Response):
            return late
        await asyncio.sleep(late)
        return JSONResponse({"balance": 47.79, "currency": "EUR"})

    async def _send(self, request: Request) -> Response:
        late = await self._gate(request)
        if isinstance(late, Response):
            return late
        if request.headers.get("content-type", "").split(";")[0] != "application/json":
            return service_error(415, "UNSUPPORTED_MEDIA_TYPE", "Content-Type must be JSON")
        try:
            doc = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return service_error(400, "BAD_REQUEST", "Bad request", validationErrors={})
        problems = check_send_body(doc)
        if problems:
            return service_error(400, "BAD_REQUEST", "Bad request", validationErrors=problems)
        bulk_id = doc.get("bulkId") or uuid.uuid4().hex
        answers = []
        for message in doc["messages"]:
            for destination in message["destinations"]:
                to = destination["to"]
                mid = destination.get("messageId") or uuid.uuid4().hex
                if mid in self.sent:
                    status = STATUS["REJECTED_DUPLICATE_MESSAGE_ID"]
                elif to in self.rejects or message.get("from") in self.reject_senders:
                    name = self.rejects.get(to) or self.reject_senders[message["from"]]
                    status = STATUS[name]
                    self.sent[mid] = {"bulkId": bulk_id, "to": to, **_copy(message)}
                else:
                    status = STATUS["PENDING_ACCEPTED"]
                    self.sent[mid] = {"bulkId": bulk_id, "to": to, **_copy(message)}
                    for name in self.outcomes.get(to, ["DELIVERED_TO_HANDSET"]):
                        self.reports.append(self.report_for(mid, name))
                answers.append({"to": to, "status": status, "messageId": mid})
        self.bodies.append(doc)
        await asyncio.sleep(late)
        return JSONResponse({"bulkId": bulk_id, "messages": answers})

    async def _reports(self, request: Request) -> Response:
        late = await self._gate(request)
        if isinstance(late, Response):
            return late
        query = request.query_params
        raw_limit = query.get("limit", "50")
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 1000:
            return service_error(
                400, "BAD_REQUEST", "Bad request", validationErrors={"limit": ["must be 1..1000"]}
            )
        limit = int(raw_limit)
        want_mid, want_bulk = query.get("messageId"), query.get("bulkId")
        served: list[dict[str, Any]] = []
        kept: deque[dict[str, Any]] = deque()
        while self.reports:
            report = self.reports.popleft()
            matches = (want_mid is None or report["messageId"] == want_mid) and (
                want_bulk is None or report["bulkId"] == want_bulk
            )
            if matches and len(served) < limit:
                served.append(report)  # served once: never returned again
            else:
                kept.append(report)
        self.reports = kept
        await asyncio.sleep(late)
        return JSONResponse({"results": served})


def _copy(message: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in message.items() if k != "destinations"}


def check_send_body(doc: Any) -> dict[str, list[str]]:
    """Field-by-field checks of a ``/sms/2/text/advanced`` body; {} when valid."""
    problems: dict[str, list[str]] = {}

    def bad(where: str, what: str) -> None:
        problems.setdefault(where, []).append(what)

    if not isinstance(doc, dict):
        bad("body", "must be an object")
        return problems
    for key in sorted(set(doc) - TOP_FIELDS):
        bad(key, "unknown field")
    if "bulkId" in doc and (not isinstance(doc["bulkId"], str) or not doc["bulkId"]):
        bad("bulkId", "must be a non-empty string")
    messages = doc.get("messages")
    if not isinstance(messages, list) or not messages:
        bad("messages", "must be a non-empty array")
        return problems
    for n, message in enumerate(messages):
        where = f"messages[{n}]"
        if not isinstance(message, dict):
            bad(where, "must be an object")
            continue
        for key in sorted(set(message) - MESSAGE_FIELDS):
            bad(f"{where}.{key}", "unknown field")
        text = message.get("text")
        if not isinstance(text, str) or not text:
            bad(f"{where}.text", "must be a non-empty string")
        sender = message.get("from")
        if sender is not None and (not isinstance(sender, str) or not 3 <= len(sender) <= 14):
            bad(f"{where}.from", "must be a string of 3 to 14 characters")
        notify = message.get("notifyUrl")
        if notify is not None and (
            not isinstance(notify, str) or not notify.startswith(("http://", "https://"))
        ):
            bad(f"{where}.notifyUrl", "must be an http(s) URL")
        validity = message.get("validityPeriod")
        if validity is not None and (
            not isinstance(validity, int) or isinstance(validity, bool) or validity < 1
        ):
            bad(f"{where}.validityPeriod", "must be a positive integer (minutes)")
        content_type = message.get("notifyContentType")
        if content_type is not None and content_type not in ("application/json", "application/xml"):
            bad(f"{where}.notifyContentType", "must be application/json or application/xml")
        destinations = message.get("destinations")
        if not isinstance(destinations, list) or not destinations:
            bad(f"{where}.destinations", "must be a non-empty array")
            continue
        for m, destination in enumerate(destinations):
            dwhere = f"{where}.destinations[{m}]"
            if not isinstance(destination, dict):
                bad(dwhere, "must be an object")
                continue
            for key in sorted(set(destination) - {"to", "messageId"}):
                bad(f"{dwhere}.{key}", "unknown field")
            to = destination.get("to")
            if not isinstance(to, str) or not to.isdigit() or not 7 <= len(to) <= 15:
                bad(f"{dwhere}.to", "must be an international number, digits only")
            mid = destination.get("messageId")
            if mid is not None and (not isinstance(mid, str) or not mid or len(mid) > 200):
                bad(f"{dwhere}.messageId", "must be a non-empty string of at most 200 characters")
    return problems
