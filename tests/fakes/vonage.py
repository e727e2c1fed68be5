"""A fake Vonage (Nexmo) SMS API for tests: a Starlette app that behaves as Vonage documents.

``POST /sms/json`` takes a form (or JSON) with ``api_key``, ``api_secret``, ``from``, ``to``,
``text`` and the optional ``type``, ``callback``, ``client-ref``, ``status-report-req``, ``ttl``;
it checks them field by field and always answers HTTP 200 with ``{"message-count", "messages":
[...]}``: status "0" per part (one entry per SMS part, each with its own ``message-id``) or the
documented error status and ``error-text`` (2 missing, 3 invalid, 4 bad credentials, …).
``GET /account/get-balance`` checks ``api_key``/``api_secret`` (401 when wrong). Tests steer it
with :attr:`FakeVonage.statuses` (per-number send status), :attr:`FakeVonage.sender_statuses`
(per-``from`` send status), :meth:`FakeVonage.answer_next`
(scripted HTTP answers: 429 with Retry-After, 500, …) and :attr:`FakeVonage.delay_s`.
:meth:`FakeVonage.dlr` builds a delivery receipt as Vonage pushes it, signed with the account's
signature secret (SHA-256 HMAC) when the fake has one.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mta import text as smstext

REQUIRED = ("api_key", "api_secret", "from", "to", "text")
OPTIONAL = frozenset({"type", "callback", "client-ref", "status-report-req", "ttl"})
TYPES = frozenset({"text", "unicode", "binary", "wappush", "vcal", "vcard"})


@dataclass
class Scripted:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


def _error(status: str, text: str) -> Response:
    return JSONResponse(
        {"message-count": "1", "messages": [{"status": status, "error-text": text}]}
    )


def sign(params: dict[str, str], secret: str) -> str:
    """How Vonage signs a webhook (its SDKs' scheme, SHA-256 HMAC, upper-case hex)."""
    pieces = []
    for name in sorted(k for k in params if k != "sig"):
        pieces.append("&" + name + "=" + params[name].replace("&", "_").replace("=", "_"))
    digest = hmac.new(secret.encode(), "".join(pieces).encode(), hashlib.sha256)
    return digest.hexdigest().upper()


class FakeVonage:
    """State and ASGI app of one fake Vonage account."""

    def __init__(
        self,
        api_key: str = "a1b2c3d4",
        api_secret: str = "S3cr3tVonage0001",
        signature_secret: str = "",
    ) -> None:
        self.api_key = api_key
        self.api_secret = api_secret
        self.signature_secret = signature_secret
        self.statuses: dict[str, tuple[str, str]] = {}  # to → (status, error-text)
        self.sender_statuses: dict[str, tuple[str, str]] = {}  # from → (status, error-text)
        self.script: list[Scripted] = []
        self.delay_s = 0.0
        self.calls: list[dict[str, str]] = []  # accepted send requests
        self.sent: dict[str, dict[str, str]] = {}  # message-id → the request
        self.balance_calls = 0
        self.failing: str | None = None  # see fail_all
        self.app = Starlette(
            routes=[
                Route("/sms/json", self.send, methods=["POST"]),
                Route("/account/get-balance", self.balance, methods=["GET"]),
            ]
        )

    def answer_next(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        """The next ``POST /sms/json`` answers this (HTTP status, JSON body)."""
        self.script.append(Scripted(status, body, headers or {}))

    def fail_all(self, kind: str | None) -> None:
        """Fail every call from now on (the conformance kit's hook), as Vonage does: send
        answers status 5 (``transient``), 1 (``throttled``), 3 (``permanent``) or 4 (``auth``,
        and the balance call 401); None heals."""
        self.failing = kind

    async def balance(self, request: Request) -> Response:
        query = request.query_params
        if self.failing == "transient":
            return JSONResponse({"error-code": "500", "error-code-label": "internal error"}, 500)
        if (
            self.failing == "auth"
            or query.get("api_key") != self.api_key
            or query.get("api_secret") != self.api_secret
        ):
            return JSONResponse(
                {"error-code": "401", "error-code-label": "authentication failed"}, 401
            )
        self.balance_calls += 1
        return JSONResponse({"value": 10.28, "autoReload": False})

    async def send(self, request: Request) -> Response:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.script:
            scripted = self.script.pop(0)
            return JSONResponse(scripted.body, scripted.status, headers=scripted.headers)
        failures = {
            "transient": ("5", "Internal Error"),
            "throttled": ("1", "Throughput Rate Exceeded - please wait [ 1000 ] and retry"),
            "permanent": ("3", "Invalid to param"),
            "auth": ("4", "Bad Credentials"),
        }
        if self.failing in failures:
            return _error(*failures[self.failing])
        content_type = request.headers.get("content-type", "")
        params: dict[str, str]
        if content_type.startswith("application/json"):
            doc = orjson.loads(await request.body())
            params = {str(k): str(v) for k, v in doc.items()}
        elif content_type.startswith("application/x-www-form-urlencoded"):
            # Parsed here: Starlette's request.form() needs python-multipart, not a dependency.
            body = (await request.body()).decode()
            params = dict(urllib.parse.parse_qsl(body, keep_blank_values=True))
        else:
            return _error("2", "Missing api_key param")
        for name in REQUIRED:
            if not params.get(name):
                return _error("2", f"Missing {name} param")
        if params["api_key"] != self.api_key or params["api_secret"] != self.api_secret:
            return _error("4", "Bad Credentials")
        unknown = sorted(set(params) - set(REQUIRED) - OPTIONAL)
        if unknown:
            return _error("3", f"Invalid {unknown[0]} param")
        to = params["to"]
        if not (to.isdigit() and 7 <= len(to) <= 15):
            return _error("3", "Invalid to param")
        kind = params.get("type", "text")
        if kind not in TYPES:
            return _error("3", "Invalid type param")
        if kind == "text" and not smstext.is_gsm7(params["text"]):
            return _error("3", "Invalid text param: not GSM characters, use type=unicode")
        if len(params.get("client-ref", "")) > 40:
            return _error("3", "Invalid client-ref param")
        callback = params.get("callback")
        if callback is not None and not callback.startswith(("http://", "https://")):
            return _error("23", "Invalid Callback Url")
        ttl = params.get("ttl")
        if ttl is not None and not (
            ttl.isascii() and ttl.isdigit() and 20_000 <= int(ttl) <= 604_800_000
        ):
            return _error("3", "Invalid ttl param")
        if to in self.statuses:
            status, text = self.statuses[to]
            if status != "0":
                return _error(status, text)
        if params["from"] in self.sender_statuses:
            return _error(*self.sender_statuses[params["from"]])
        self.calls.append(params)
        parts = max(1, smstext.segment_count(params["text"]))
        messages = []
        for _ in range(parts):
            message_id = uuid.uuid4().hex[:16].upper()
            self.sent[message_id] = params
            messages.append(
                {
                    "to": to,
                    "message-id": message_id,
                    "status": "0",
                    "remaining-balance": "10.28",
                    "message-price": "0.03330000",
                    "network": "28601",
                }
            )
        return JSONResponse({"message-count": str(parts), "messages": messages})

    def dlr(self, message_id: str, status: str, err_code: str = "0") -> dict[str, str]:
        """The delivery receipt Vonage pushes for ``message_id`` (signed if we have a secret)."""
        request = self.sent.get(message_id, {})
        params = {
            "msisdn": request.get("to", "447700900000"),
            "to": request.get("from", "ACME"),
            "network-code": "28601",
            "messageId": message_id,
            "price": "0.03330000",
            "status": status,
            "scts": time.strftime("%y%m%d%H%M", time.gmtime()),
            "err-code": err_code,
            "api-key": self.api_key,
            "message-timestamp": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        }
        if "client-ref" in request:
            params["client-ref"] = request["client-ref"]
        if self.signature_secret:
            params["timestamp"] = str(int(time.time()))
            params["nonce"] = str(uuid.uuid4())
            params["sig"] = sign(params, self.signature_secret)
        return params
