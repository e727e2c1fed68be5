"""A fake Twilio REST API (Programmable Messaging) for tests, served on loopback by httpserver.

It behaves as Twilio's documentation says (docs/protocols.md §3.2), at the network edge only:

* HTTP Basic ``AccountSid:AuthToken`` on every request, else 401 with error 20003;
* ``GET /2010-04-01/Accounts/{AccountSid}.json`` → the Account resource;
* ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` (form-encoded) checks ``To``
  (E.164 ``+`` digits, error 21211/21604), ``From`` or ``MessagingServiceSid`` (21603),
  ``Body`` (21602), ``StatusCallback`` (21609) and answers 201 with a Message resource
  (``status`` queued, or accepted with a Messaging Service; ``num_segments`` as a string);
* ``GET .../Messages/{Sid}.json`` → the Message, whose status advances one step per fetch
  (queued → sending → sent → its fate), or 404 with error 20404;
* ``From`` refused per :attr:`FakeTwilio.reject_senders` (400 with the given code, e.g. 21212
  "Invalid 'From' Phone Number"), ``ValidityPeriod`` checked as documented (an integer from 1
  to 36000 seconds, else 400 with error 21624 "Invalid validity period value");
* knobs for the documented failure modes: ``throttle`` (429, error 20429, ``Retry-After``),
  ``server_errors`` (500), ``delay_s``, ``rejected`` numbers (400, error 21211) and per-number
  ``fates`` (final status, error code, message; ``"stuck"`` stays ``sent`` forever).

:func:`signed_callback` builds a status callback as Twilio would send it, signed the documented
way (written here independently of the adapter's code).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import itertools
import re
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
SIDS = itertools.count(1)


def twilio_error(
    status: int, code: int, message: str, headers: dict[str, str] | None = None
) -> Response:
    """An error body as Twilio answers it: {"code", "message", "more_info", "status"}."""
    return JSONResponse(
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
        status_code=status,
        headers=headers,
    )


@dataclass
class Fate:
    """What becomes of a message to one number: its final status and error."""

    status: str = "delivered"
    error_code: int | None = None
    error_message: str | None = None


@dataclass
class SeenRequest:
    method: str
    path: str
    form: list[tuple[str, str]]
    authorization: str


@dataclass
class FakeTwilio:
    """The fake's state and knobs; ``app`` is the Starlette app to serve."""

    account_sid: str = "AC" + "0123456789abcdef" * 2
    auth_token: str = "tok-" + "f00d" * 7
    account_status: str = "active"
    throttle: int = 0  # the next N requests answer 429 / 20429
    retry_after: str | None = "3"
    server_errors: int = 0  # the next N requests answer 500
    delay_s: float = 0.0  # every answer waits this long
    rejected: set[str] = field(default_factory=set)  # To numbers answered 400 / 21211
    reject_senders: dict[str, int] = field(default_factory=dict)  # From → error code (400)
    fates: dict[str, Fate | str] = field(default_factory=dict)  # by To ("+..."), or "stuck"
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[SeenRequest] = field(default_factory=list)

    @property
    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/2010-04-01/Accounts/{sid}.json", self.account, methods=["GET"]),
                Route("/2010-04-01/Accounts/{sid}/Messages.json", self.create, methods=["POST"]),
                Route(
                    "/2010-04-01/Accounts/{sid}/Messages/{msid}.json",
                    self.fetch,
                    methods=["GET"],
                ),
                Route("/{rest:path}", self.unknown, methods=["GET", "HEAD", "POST"]),
            ]
        )

    def sent(self, path_end: str = "/Messages.json") -> list[dict[str, str]]:
        """The forms of the requests whose path ends so."""
        return [dict(r.form) for r in self.requests if r.path.endswith(path_end)]

    # --- the edge checks every request goes through -------------------------------------
    async def _gate(self, request: Request) -> tuple[list[tuple[str, str]], Response | None]:
        body = await request.body()
        form: list[tuple[str, str]] = []
        if request.method == "POST":
            ctype = request.headers.get("content-type", "").split(";")[0].strip()
            if ctype != "application/x-www-form-urlencoded":
                return form, twilio_error(400, 20001, f"Unsupported content type {ctype!r}")
            form = parse_qsl(body.decode(), keep_blank_values=True)
        self.requests.append(
            SeenRequest(
                request.method, request.url.path, form, request.headers.get("authorization", "")
            )
        )
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.throttle > 0:
            self.throttle -= 1
            headers = {"Retry-After": self.retry_after} if self.retry_after else None
            return form, twilio_error(429, 20429, "Too Many Requests", headers)
        if self.server_errors > 0:
            self.server_errors -= 1
            return form, twilio_error(500, 20500, "Internal Server Error")
        if not self._authorized(request.headers.get("authorization", "")):
            return form, twilio_error(401, 20003, "Authenticate")
        if request.path_params["sid"] != self.account_sid:
            return form, twilio_error(
                404, 20404, f"The requested resource {request.url.path} was not found"
            )
        return form, None

    def _authorized(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return user == self.account_sid and password == self.auth_token

    # --- endpoints ----------------------------------------------------------------------
    async def unknown(self, request: Request) -> Response:
        """Any other path: Twilio's 20404, whose message echoes the path (and so the SID)."""
        return twilio_error(404, 20404, f"The requested resource {request.url.path} was not found")

    async def account(self, request: Request) -> Response:
        _, refused = await self._gate(request)
        if refused is not None:
            return refused
        return JSONResponse(
            {
                "sid": self.account_sid,
                "friendly_name": "fake account",
                "status": self.account_status,
                "type": "Full",
                "uri": f"/2010-04-01/Accounts/{self.account_sid}.json",
            }
        )

    async def create(self, request: Request) -> Response:
        pairs, refused = await self._gate(request)
        if refused is not None:
            return refused
        form = dict(pairs)
        to = form.get("To", "")
        if not to:
            return twilio_error(400, 21604, "A 'To' phone number is required.")
        if not E164.match(to) or to in self.rejected:
            return twilio_error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        service = form.get("MessagingServiceSid", "")
        sender = form.get("From", "")
        if not sender and not service:
            return twilio_error(400, 21603, "A 'From' phone number is required.")
        if not form.get("Body"):
            return twilio_error(400, 21602, "Message body is required.")
        if sender in self.reject_senders:
            code = self.reject_senders[sender]
            return twilio_error(400, code, f"Invalid 'From' Phone Number: {sender}")
        validity = form.get("ValidityPeriod")
        if validity is not None and not (
            validity.isascii() and validity.isdigit() and 1 <= int(validity) <= 36000
        ):
            return twilio_error(
                400,
                21624,
                "Validity period can only be set to integers between 1 and 36,000 seconds "
                "(10 hours max).",
            )
        callback = form.get("StatusCallback")
        if callback is not None:
            host = urlsplit(callback).hostname or ""
            if not callback.startswith(("http://", "https://")) or not host or "_" in host:
                return twilio_error(400, 21609, f"Invalid StatusCallback URL {callback!r}")
        sid = f"SM{next(SIDS):032x}"
        body = form["Body"]
        message = {
            "sid": sid,
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": body,
            "date_created": formatdate(usegmt=True),
            "date_sent": None,
            "date_updated": formatdate(usegmt=True),
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": sender or None,
            "messaging_service_sid": service or None,
            "num_media": "0",
            "num_segments": str(1 if len(body) <= 160 else -(-len(body) // 153)),
            "price": None,
            "price_unit": "USD",
            "status": "accepted" if service else "queued",
            "to": to,
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json",
        }
        self.messages[sid] = message
        return JSONResponse(message, status_code=201)

    async def fetch(self, request: Request) -> Response:
        _, refused = await self._gate(request)
        if refused is not None:
            return refused
        message = self.messages.get(request.path_params["msid"])
        if message is None:
            return twilio_error(
                404, 20404, f"The requested resource {request.url.path} was not found"
            )
        self._advance(message)
        return JSONResponse(message)

    def _advance(self, message: dict[str, Any]) -> None:
        """One status step per fetch: queued/accepted → sending → sent → the number's fate."""
        fate = self.fates.get(message["to"], Fate())
        status = message["status"]
        if status in ("queued", "accepted"):
            message["status"] = "sending"
        elif status == "sending":
            message["status"] = "sent"
            message["date_sent"] = formatdate(usegmt=True)
        elif status == "sent" and isinstance(fate, Fate):
            message["status"] = fate.status
            message["error_code"] = fate.error_code
            message["error_message"] = fate.error_message


def twilio_signature(auth_token: str, url: str, params: dict[str, str]) -> str:
    """Twilio's documented signing: the URL, then each POST parameter name and value, sorted
    by name, with no delimiters; HMAC-SHA1 keyed by the Auth Token; base64."""
    text = url
    for name in sorted(params):
        text += name + params[name]
    mac = hmac.new(auth_token.encode("utf-8"), text.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


def signed_callback(
    fake: FakeTwilio,
    url: str,
    sid: str,
    status: str,
    error_code: str = "",
    extra: dict[str, str] | None = None,
) -> tuple[dict[str, str], bytes]:
    """(headers, body) of the status callback Twilio POSTs to ``url`` for message ``sid``."""
    message = fake.messages.get(sid, {})
    params = {
        "AccountSid": fake.account_sid,
        "ApiVersion": "2010-04-01",
        "From": str(message.get("from") or ""),
        "MessageSid": sid,
        "MessageStatus": status,
        "SmsSid": sid,
        "SmsStatus": status,
        "To": str(message.get("to") or ""),
    }
    if error_code:
        params["ErrorCode"] = error_code
    params.update(extra or {})
    headers = {
        "content-type": "application/x-www-form-urlencoded; charset=utf-8",
        "x-twilio-signature": twilio_signature(fake.auth_token, url, params),
        "user-agent": "TwilioProxy/1.1",
    }
    return headers, urlencode(params).encode()
