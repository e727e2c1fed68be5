"""Vonage (Nexmo) SMS API adapter: one recipient per request, delivery receipts pushed to us.

Send posts one form-encoded request per message to ``POST /sms/json`` with ``api_key``,
``api_secret``, ``from``, ``to``, ``text`` (``type=unicode`` when the text is not GSM-7),
``callback`` (our webhook, when ``callback_base_url`` is set) and ``client-ref``. Vonage answers
HTTP 200 even for rejections, so every ``messages[i].status`` is checked (docs/protocols.md
§3.4). ``login`` and ``test_credentials`` call ``GET /account/get-balance``. Delivery receipts
(DLRs) arrive on ``/webhooks/<account name>`` (:meth:`VonageAdapter.webhook`); Vonage has no
pull API for states, so ``meta.receipts`` is PUSH and :meth:`report` answers WAITING.

Decisions where the partner's documentation is silent:

* **Long messages.** Vonage splits a long text and answers one ``messages[]`` entry per part,
  each with its own ``message-id`` and, later, its own DLR. The first part's id is the
  ``partnerMessageId`` and ``smsMessageCount`` is the number of parts; the first part's DLR
  decides the message's final state (the other parts' DLRs are stored but never asked for, and
  expire). When the first part is accepted but a later part is rejected, the message FAILs with
  the later part's error (it is not retried: that would resend the parts already accepted).
* **Send status mapping** (§3.4, §6): 0 → OK; 1 (throttled) → :class:`ThrottledError` with
  ``retry_after`` 1 s (the limit is per second); 5, 10 → :class:`TransientError`; 4, 8 →
  :class:`AuthError`; 9 (no credit) → :class:`PermanentError` telling the operator to top up;
  every other status (2, 3, 6, 7, 12, 15, …) → a FAIL result with ``error-text``.
* **Sender refused.** Status 15 "Invalid Sender Address" ("Illegal Sender Address -
  rejected": the sender is not allowed for the destination) and status 3 "Invalid Parameters"
  whose ``error-text`` names the ``from`` parameter (Vonage "SMS API error codes",
  https://developer.vonage.com/en/messaging/sms/guides/troubleshooting-sms and
  https://developer.vonage.com/en/api-errors/sms) are FAIL results with ``reason`` = sender:
  the worker sends the message once more with the account's ``fallback_sender``.
* **Validity.** ``expireTime`` becomes ``ttl``, the milliseconds left, within the documented
  20000..604800000 (Vonage SMS API reference, ``ttl``: default 259200000, 72 hours): a message
  with less than 20 s left still goes with 20000.
* **No sender.** Vonage requires ``from``; a message without a sender FAILs locally with a
  detail saying so, without a request.
* **client-ref** carries the upstream correlation of ``smsType`` (the part after ``|``) when it
  fits Vonage's 40 characters, so an operator can find the message in Vonage's dashboard;
  otherwise it is not sent.
* **Webhook authentication.** With ``signature_secret`` set, a DLR must carry ``sig`` and it must
  equal ``upper(hex(HMAC-SHA256(signature_secret, S)))``, where ``S`` is the concatenation, over
  every received parameter except ``sig`` sorted by name, of ``&<name>=<value>`` with ``&`` and
  ``=`` in each value replaced by ``_`` (the scheme of Vonage's SDKs; the dashboard's signature
  method must be "SHA-256 HMAC"); compared in constant time, case-insensitively. Without a
  signature secret, a DLR is accepted only when its ``api-key`` equals the account's
  ``api_key`` (Vonage puts the sending key in every DLR). That check is weak — the key is not
  secret from whoever sees the DLRs — so operators should set ``signature_secret``. In both
  modes an ``api-key`` that differs from the account's is refused (403). Replays are not
  refused: a replayed DLR repeats a state already known for that message.
* **Unknown DLR statuses** stay WAITING (the message ends by a later DLR or its deadline).
* **Credentials in a URL.** ``/account/get-balance`` takes ``api_key`` and ``api_secret`` as
  query parameters (the only way Vonage's Account API spec documents), and httpx logs every
  request URL at INFO. Importing this module therefore adds a filter to the ``httpx`` logger
  that masks the values of ``api_key`` and ``api_secret`` query parameters as ``***``, so no
  log line carries them.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import re
from collections.abc import Mapping
from datetime import tzinfo
from typing import Any, ClassVar

import httpx
import orjson
from mta.adapters.httpbase import HTTP_OPTIONS, HttpAdapter, short

from mta.sdk import (
    REASON_SENDER,
    AdapterContext,
    AdapterError,
    AdapterMeta,
    ApiStatus,
    AuthError,
    OptionSpec,
    PermanentError,
    ReceiptMode,
    SendPattern,
    SmsMessage,
    SmsReportRequest,
    SmsResponse,
    SmsResult,
    SmsSendRequest,
    ThrottledError,
    TransientError,
    WebhookError,
    WebhookRequest,
    seconds_until,
)
from mta.text import is_gsm7

SEND_PATH = "/sms/json"
BALANCE_PATH = "/account/get-balance"

#: Longest ``client-ref`` Vonage accepts.
CLIENT_REF_MAX = 40

#: Seconds to wait after send status 1 (throttled); Vonage's limit is per second.
THROTTLED_RETRY_S = 1.0

#: DLR ``status`` → reporter state (docs/protocols.md §3.4 and §5); others stay WAITING.
DLR_STATUS: dict[str, ApiStatus] = {
    "delivered": ApiStatus.DELIVERED,
    "expired": ApiStatus.TIMEOUT,
    "failed": ApiStatus.FAIL,
    "rejected": ApiStatus.FAIL,
    "accepted": ApiStatus.WAITING,
    "buffered": ApiStatus.WAITING,
    "unknown": ApiStatus.WAITING,
}

_THROTTLED = frozenset({"1"})
_TRANSIENT = frozenset({"5", "10"})
_AUTH = frozenset({"4", "8"})
_CREDIT = frozenset({"9"})
#: Send statuses that refuse the sender (module docstring): 15 always, 3 when it names 'from'.
_SENDER = frozenset({"15"})
_INVALID_PARAMETERS = "3"
_FROM_PARAMETER = re.compile(r"\bfrom\b", re.IGNORECASE)

#: ``ttl`` bounds in milliseconds (module docstring).
TTL_MIN_MS, TTL_MAX_MS = 20_000, 604_800_000


def blames_sender(status: str, error_text: str) -> bool:
    """Whether a send status refuses the sender (module docstring)."""
    return status in _SENDER or (
        status == _INVALID_PARAMETERS and bool(_FROM_PARAMETER.search(error_text))
    )


def ttl_ms(expire_time: str, tz: tzinfo) -> int | None:
    """``ttl`` for a message expiring at ``expire_time`` (MMP, zone ``tz``): the milliseconds
    left within [20000, 604800000]; None without an expireTime."""
    left = seconds_until(expire_time, tz)
    if left is None:
        return None
    return max(TTL_MIN_MS, min(TTL_MAX_MS, math.ceil(left * 1000)))


class RedactCredentials(logging.Filter):
    """Masks ``api_key``/``api_secret`` query values in log records (httpx logs request URLs)."""

    _PATTERN = re.compile(r"(\b(?:api_key|api_secret)=)[^&\s\"']*")

    def _redact(self, value: Any) -> Any:
        if isinstance(value, httpx.URL):
            value = str(value)
        if isinstance(value, str) and ("api_key=" in value or "api_secret=" in value):
            return self._PATTERN.sub(r"\1***", value)
        return value

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self._redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(self._redact(arg) for arg in record.args)
        return True


_REDACT = RedactCredentials()
logging.getLogger("httpx").addFilter(_REDACT)


def signature(params: Mapping[str, str], secret: str) -> str:
    """Vonage's SHA-256 HMAC signature of webhook parameters (module docstring), hex upper-case."""
    mac = hmac.new(secret.encode(), digestmod=hashlib.sha256)
    for name in sorted(params):
        if name == "sig":
            continue
        value = params[name].replace("&", "_").replace("=", "_")
        mac.update(f"&{name}={value}".encode())
    return mac.hexdigest().upper()


def _client_ref(sms_type: str) -> str:
    _, sep, correlation = sms_type.partition("|")
    if sep and correlation and len(correlation) <= CLIENT_REF_MAX:
        return correlation
    return ""


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


def _header(headers: Mapping[str, str], name: str) -> str:
    name = name.lower()
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return ""


class VonageAdapter(HttpAdapter):
    """Vonage SMS API (rest.nexmo.com): see the module docstring."""

    meta: ClassVar[AdapterMeta] = AdapterMeta(
        name="vonage",
        description=(
            "Vonage (Nexmo) SMS API: one request per message to /sms/json; "
            "delivery receipts pushed to /webhooks/<account>."
        ),
        options=(
            *HTTP_OPTIONS,
            OptionSpec("api_key", str, required=True, secret=True, description="Vonage API key"),
            OptionSpec(
                "api_secret", str, required=True, secret=True, description="Vonage API secret"
            ),
            OptionSpec(
                "signature_secret",
                str,
                secret=True,
                default="",
                description=(
                    "signature secret (dashboard, method SHA-256 HMAC): DLRs must then carry a "
                    "valid 'sig'; unset, a DLR must carry this account's api-key"
                ),
            ),
        ),
        default_url="https://rest.nexmo.com",
        pattern=SendPattern.LOOP,
        max_batch=1,
        max_concurrency=8,
        receipts=ReceiptMode.PUSH,
    )

    def __init__(self, options: Mapping[str, Any], context: AdapterContext | None = None) -> None:
        super().__init__(options, context)
        self._api_key = str(self.options.get("api_key") or "")
        self._api_secret = str(self.options.get("api_secret") or "")
        self._signature_secret = str(self.options["signature_secret"])

    # --- HttpAdapter hooks ------------------------------------------------------------
    def error_text(self, response: httpx.Response) -> str:
        return self.scrub(response.text)  # the base scrubs again; scrubbing is idempotent

    # --- Adapter ------------------------------------------------------------------------
    async def login(self, secret_key: str) -> bool:
        """``GET /account/get-balance``: True when the credentials are accepted, False on
        401/403; other failures raise their kind. ``secret_key`` is not used: Vonage
        authenticates every call with ``api_key`` and ``api_secret``."""
        try:
            await self.call(
                "GET",
                BALANCE_PATH,
                ok=(200,),
                params={"api_key": self._api_key, "api_secret": self._api_secret},
            )
        except AuthError:
            return False
        return True

    async def test_credentials(self) -> bool:
        """The same cheap authenticated call as :meth:`login`."""
        return await self.login("")

    async def send(self, request: SmsSendRequest) -> SmsResponse:
        """One request per message (the worker gives one: ``meta.pattern`` LOOP).

        Given several, they are sent in turn: an error of the first is raised (nothing was
        sent), an error of a later one becomes its FAIL result (the earlier ones were sent).
        """
        results: list[SmsResult] = []
        for n, message in enumerate(request.messages):
            try:
                results.append(await self._send_one(message))
            except AdapterError as exc:
                if n == 0:
                    raise
                results.append(
                    SmsResult(partnerStatus=type(exc).__name__, partnerDetail=exc.detail)
                )
        return SmsResponse(partnerPacketId="", results=results)

    async def _send_one(self, message: SmsMessage) -> SmsResult:
        account = self.context.account_name
        if not message.sender:
            return SmsResult(
                partnerStatus="NO_SENDER",
                partnerDetail=(
                    f"account {account!r}: Vonage requires a sender ('from'); give the message "
                    "a sender"
                ),
            )
        form = {
            "api_key": self._api_key,
            "api_secret": self._api_secret,
            "from": message.sender,
            "to": message.mobileNumber,
            "text": message.text,
        }
        if not is_gsm7(message.text):
            form["type"] = "unicode"
        callback = self.callback_url
        if callback:
            form["callback"] = callback
        ref = _client_ref(message.smsType)
        if ref:
            form["client-ref"] = ref
        ttl = ttl_ms(message.expireTime, self.context.tz)
        if ttl is not None:
            form["ttl"] = str(ttl)
        response = await self.call("POST", SEND_PATH, ok=(200,), data=form)
        what = f"account {account!r}: vonage POST {SEND_PATH} to {message.mobileNumber}"
        try:
            doc = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            doc = None
        parts = doc.get("messages") if isinstance(doc, dict) else None
        if not isinstance(parts, list) or not parts or not all(isinstance(p, dict) for p in parts):
            body = short(self.scrub(response.text), 120)
            raise PermanentError(
                f"{what}: HTTP 200 with an unreadable body ({body!r}); "
                "outcome unknown: check the Vonage dashboard before resending"
            )
        first = parts[0]
        status = short(self.scrub(_as_text(first.get("status")).strip()), 40)
        text = short(self.scrub(_as_text(first.get("error-text")))) or "no error text"
        if status == "0":
            message_id = _as_text(first.get("message-id"))
            if not message_id:
                raise PermanentError(
                    f"{what}: status 0 without a message-id; outcome unknown: check the Vonage "
                    "dashboard before resending"
                )
            for n, part in enumerate(parts[1:], start=2):
                part_status = short(self.scrub(_as_text(part.get("status")).strip()), 40)
                if part_status != "0":
                    part_text = short(self.scrub(_as_text(part.get("error-text"))))
                    return SmsResult(
                        partnerMessageId=message_id,
                        partnerStatus=part_status,
                        partnerDetail=(
                            f"part {n} of {len(parts)} rejected (status {part_status}: "
                            f"{part_text or 'no error text'}); earlier parts were sent, so the "
                            "message is not retried"
                        ),
                        smsMessageCount=len(parts),
                    )
            return SmsResult(
                partnerMessageId=message_id,
                partnerStatus="0",
                apiStatus=ApiStatus.OK,
                smsOperator=_as_text(first.get("network")),
                smsMessageCount=len(parts),
            )
        detail = f"{what}: status {status or '?'}: {text}"
        if status in _THROTTLED:
            raise ThrottledError(
                f"{detail}; sending faster than the account's limit (30/s by default): lower the "
                "account's rate_limit",
                THROTTLED_RETRY_S,
            )
        if status in _TRANSIENT:
            raise TransientError(detail)
        if status in _AUTH:
            raise AuthError(f"{detail}; check the account's api_key and api_secret in Vonage")
        if status in _CREDIT:
            raise PermanentError(
                f"{detail}; the Vonage account has no credit: top it up in the Vonage dashboard; "
                "the message was not sent"
            )
        return SmsResult(
            partnerStatus=status or "?",
            partnerDetail=text,
            reason=REASON_SENDER if blames_sender(status, text) else "",
        )

    async def report(self, request: SmsReportRequest) -> SmsResponse:
        """Vonage only pushes DLRs (``meta.receipts`` PUSH), so the reporter never calls this;
        called directly, it answers every id WAITING."""
        return SmsResponse(
            partnerPacketId=request.partnerPacketId,
            results=[
                SmsResult(
                    partnerMessageId=pid,
                    partnerDetail="vonage pushes delivery receipts; it has no status query",
                    apiStatus=ApiStatus.WAITING,
                )
                for pid in request.messages
            ],
        )

    # --- delivery receipts --------------------------------------------------------------
    async def webhook(self, request: WebhookRequest) -> list[SmsResult]:
        """Parse one DLR: a GET query string, a POST form, or a POST JSON body.

        Fields: ``msisdn, to, network-code, messageId, price, status, scts, err-code,
        message-timestamp, client-ref, api-key`` (+ ``timestamp, nonce, sig`` when signed).
        400 when malformed, 403 when not authenticated (module docstring).
        """
        params = self._params(request)
        self._authenticate(params)
        where = f"vonage DLR for account {self.context.account_name!r}"
        message_id = params.get("messageId", "")
        status = params.get("status", "").strip().lower()
        if not message_id:
            raise WebhookError(400, f"{where}: 'messageId' missing")
        if not status:
            raise WebhookError(400, f"{where}: 'status' missing")
        api_status = DLR_STATUS.get(status, ApiStatus.WAITING)
        err = params.get("err-code", "")
        if api_status in (ApiStatus.FAIL, ApiStatus.TIMEOUT):
            detail = f"{status}, err-code {err or '?'}"
        elif status not in DLR_STATUS:
            detail = f"unknown Vonage DLR status {status!r}, kept WAITING"
        else:
            detail = ""
        return [
            SmsResult(
                partnerMessageId=message_id,
                partnerStatus=status,
                partnerDetail=short(detail),
                apiStatus=api_status,
                smsOperator=params.get("network-code", ""),
            )
        ]

    def _params(self, request: WebhookRequest) -> dict[str, str]:
        """The DLR's parameters as strings, from JSON, form or query, in that order."""
        where = f"vonage DLR for account {self.context.account_name!r}"
        content_type = _header(request.headers, "content-type").lower()
        doc: Any = None
        if "json" in content_type or (request.body and not request.form and not request.query):
            try:
                doc = orjson.loads(request.body)
            except orjson.JSONDecodeError as exc:
                raise WebhookError(400, f"{where}: body is not JSON ({exc})") from None
            if not isinstance(doc, dict):
                raise WebhookError(400, f"{where}: JSON body is not an object")
            return {str(k): _as_text(v) for k, v in doc.items()}
        if request.form:
            return dict(request.form)
        if request.query:
            return dict(request.query)
        raise WebhookError(400, f"{where}: no parameters (empty query and body)")

    def _authenticate(self, params: Mapping[str, str]) -> None:
        where = f"vonage DLR for account {self.context.account_name!r}"
        key = params.get("api-key")
        if key is not None and not hmac.compare_digest(key.encode(), self._api_key.encode()):
            raise WebhookError(403, f"{where}: 'api-key' is not this account's api_key")
        if self._signature_secret:
            sig = params.get("sig", "").strip()
            if not sig:
                raise WebhookError(403, f"{where}: no 'sig' but the account has a signature_secret")
            expected = signature(params, self._signature_secret)
            if not hmac.compare_digest(expected.encode(), sig.upper().encode()):
                raise WebhookError(
                    403,
                    f"{where}: bad signature (expects SHA-256 HMAC with the account's "
                    "signature_secret; check the dashboard's signature method)",
                )
        elif key is None:
            raise WebhookError(
                403,
                f"{where}: no 'api-key' to check and no signature_secret configured; "
                "set signature_secret to accept signed DLRs",
            )
