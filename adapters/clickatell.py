"""Clickatell One API adapter: batch Send (200 per call) and status callbacks pushed to our webhook.

Send posts ``{"messages": [{"channel": "sms", "to", "content", "from"?}, ...]}`` to
``POST /v1/message`` with the raw key in ``Authorization: <api_key>`` (no scheme); Clickatell
answers HTTP 202 with one ``{"apiMessageId", "accepted", "to", "error"}`` entry per message, or a
global ``error`` that rejects the whole payload (docs/protocols.md §3.3). ``login`` and
``test_credentials`` call ``GET /v1/balance``. Final states arrive as REST status callbacks on
``/webhooks/<account name>`` (:meth:`ClickatellAdapter.webhook`).

Decisions where the partner's documentation is silent:

* **Receipts are PUSH only.** The One API has a message-status query (the ``clickatell-api``
  crate models one, apparently ``GET /v1/message/{id}``) but its path and answer were not
  confirmed in Clickatell's own documentation, so it is not used: the reporter never calls
  :meth:`report`, which answers every id WAITING when it is called directly.
* **The callback URL is not sent.** Clickatell configures it on the integration, not per message:
  ``callback_base_url`` only tells the operator which URL to enter in the Clickatell portal
  (``<callback_base_url>/webhooks/<account name>``).
* **Callbacks are not signed** by Clickatell. The optional ``webhook_token`` option (secret)
  makes the webhook refuse (403) any call whose ``token`` query parameter differs from it; the
  operator then enters ``…/webhooks/<account>?token=<webhook_token>`` in the portal.
* **Gateway error codes** (as listed by the ``clickatell-api`` crate, ``GatewayErrorCode``) refine
  a global error beyond its HTTP status: 1, 2, 3, 7 (key, account, integration, IP not approved)
  → :class:`AuthError`; 18, 19 (internal error) → :class:`TransientError`; 43 (rate limit) →
  :class:`ThrottledError`; 20 (insufficient balance) and HTTP 402 → :class:`PermanentError`
  telling the operator to top up. Per-message errors are FAIL results whatever their code
  (``partnerStatus`` = the code, ``partnerDetail`` = the description).
* **Status codes of a send** (Clickatell, "One API: Error messages" / "Errors Table",
  https://docs.clickatell.com/channels/one-api/one-api-errors-table/): 202 Accepted when every
  message was accepted; **207 Multi-status** when "more than one message was submitted to the
  API, however, not all messages have the same status" — each ``messages[]`` entry then has its
  own outcome; a message-level error's HTTP status (400, 402 for code 20) when every message of
  the request was refused. In all three the entries decide, one result per message; only a
  global ``error`` (or a body without entries) raises for the whole request.
* **Message-level codes** (same table): 44 "FROM number is suspended", 45 "FROM number is not
  related to integration", and 23 "Invalid or missing parameter: from" blame the sender →
  FAIL with ``reason`` = sender (the worker retries once with the account's
  ``fallback_sender``); 18, 19 (internal error) and 43 (rate limit) at message level → FAIL
  with ``reason`` = retry (never accepted: the worker sends it again through the delayed-retry
  queue); 20 (insufficient balance) → FAIL telling the operator to top up.
* **Validity.** A message's ``expireTime`` becomes ``validityPeriod`` in minutes (Clickatell,
  "Validity period": minutes from when the gateway received the message, default 1440),
  rounded up, at least 1; Clickatell documents no maximum, so it is capped at its default
  1440 (a later expireTime goes with 1440, as if none were given).
* **Answers are matched to messages by number, in order**, not by position alone, so a reply that
  lists entries in another order still lands on the right messages; a message without an entry
  in the reply FAILs with "outcome unknown" rather than being retried (a retry could duplicate).
* A 2xx reply whose body cannot be read is a :class:`PermanentError` ("outcome unknown"): the
  messages may have been accepted, and retrying them could send them twice.
* Unknown status codes in a callback are WAITING (the message then ends by a later known state
  or by its deadline, TIMEOUT), never guessed final.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict, deque
from collections.abc import Mapping
from datetime import tzinfo
from typing import Any, ClassVar, NoReturn

import httpx
import orjson
from mta.adapters.httpbase import HTTP_OPTIONS, HttpAdapter, retry_after_s, short

from mta.sdk import (
    REASON_RETRY,
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

#: Most messages Clickatell accepts in one ``POST /v1/message``.
MAX_BATCH = 200

MESSAGE_PATH = "/v1/message"
BALANCE_PATH = "/v1/balance"

#: One API message status codes → reporter state (docs/protocols.md §3.3 and §5).
STATUS_MAP: dict[int, ApiStatus] = {
    1: ApiStatus.WAITING,  # UNKNOWN
    2: ApiStatus.WAITING,  # QUEUED
    3: ApiStatus.WAITING,  # SCHEDULED
    4: ApiStatus.WAITING,  # SENT_TO_SUPPLIER
    5: ApiStatus.DELIVERED,  # DEVICE_ACK
    6: ApiStatus.DELIVERED,  # READ
    20: ApiStatus.TIMEOUT,  # EXPIRED
    **{code: ApiStatus.FAIL for code in range(21, 30)},  # stopped, failure, balance, volume, …
    100: ApiStatus.FAIL,  # ROUTING_ERROR
}

# Gateway error codes of a global (whole payload) error; see the module docstring.
_AUTH_CODES = frozenset({"1", "2", "3", "7"})
_RETRY_CODES = frozenset({"18", "19"})
_THROTTLE_CODES = frozenset({"43"})
_FUNDS_CODES = frozenset({"20"})
# Message-level codes (module docstring): the sender refused, or retry later.
_SENDER_CODES = frozenset({"44", "45"})
_MISSING_PARAMETER = "23"
_FROM_PARAMETER = re.compile(r"\bfrom\b", re.IGNORECASE)
_RETRY_LATER_CODES = frozenset({"18", "19", "43"})
#: HTTP statuses whose body carries one entry per message (module docstring).
_SEND_OK = (200, 202, 207)

#: ``validityPeriod`` bounds in minutes (module docstring).
VALIDITY_MIN, VALIDITY_MAX = 1, 1440

_TOP_UP = (
    "the Clickatell account is out of funds: top up its balance in the Clickatell portal; "
    "these messages were not sent"
)


def map_status(code: int) -> ApiStatus:
    """The reporter state of a One API status code; unknown codes stay WAITING."""
    return STATUS_MAP.get(code, ApiStatus.WAITING)


def blames_sender(code: str, description: str) -> bool:
    """Whether a message-level error refuses the sender (module docstring)."""
    return code in _SENDER_CODES or (
        code == _MISSING_PARAMETER and bool(_FROM_PARAMETER.search(description))
    )


def validity_minutes(expire_time: str, tz: tzinfo) -> int | None:
    """``validityPeriod`` for a message expiring at ``expire_time`` (MMP, zone ``tz``): the
    minutes left, rounded up, within [1, 1440]; None without an expireTime."""
    left = seconds_until(expire_time, tz)
    if left is None:
        return None
    return max(VALIDITY_MIN, min(VALIDITY_MAX, math.ceil(left / 60)))


def _digits(value: Any) -> str:
    return "".join(ch for ch in str(value) if ch.isdigit())


def _error_parts(error: Any) -> tuple[str, str]:
    """``(code, description)`` of a One API error, which is ``{"code", "description"}``; a plain
    string or anything else is tolerated."""
    if isinstance(error, dict):
        code = error.get("code")
        text = error.get("description") or error.get("message") or ""
        return ("" if code is None else str(code)), str(text)
    if error is None:
        return "", ""
    return "", str(error)


class ClickatellAdapter(HttpAdapter):
    """Clickatell One API (platform.clickatell.com): see the module docstring."""

    meta: ClassVar[AdapterMeta] = AdapterMeta(
        name="clickatell",
        description=(
            "Clickatell One API: batch send (200 per call) to /v1/message; "
            "receipts pushed as status callbacks to /webhooks/<account>."
        ),
        options=(
            *HTTP_OPTIONS,
            OptionSpec(
                "api_key",
                str,
                required=True,
                secret=True,
                description="the integration's API key (sent as 'Authorization: <api_key>')",
            ),
            OptionSpec(
                "webhook_token",
                str,
                secret=True,
                default="",
                description=(
                    "if set, status callbacks must carry ?token=<it> (Clickatell does not sign "
                    "callbacks); configure the URL with it in the Clickatell portal"
                ),
            ),
        ),
        default_url="https://platform.clickatell.com",
        pattern=SendPattern.BATCH,
        max_batch=MAX_BATCH,
        max_concurrency=4,
        receipts=ReceiptMode.PUSH,
    )

    def __init__(self, options: Mapping[str, Any], context: AdapterContext | None = None) -> None:
        super().__init__(options, context)
        self._api_key = str(self.options.get("api_key") or "")

    # --- HttpAdapter hooks ------------------------------------------------------------
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": self._api_key}

    def error_text(self, response: httpx.Response) -> str:
        """The One API's ``error.description (code N)`` when the body has one, else the body."""
        try:
            doc = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            return self.scrub(response.text)
        if isinstance(doc, dict) and doc.get("error"):
            code, text = _error_parts(doc["error"])
            return self.scrub(f"{text} (code {code})" if code else text)
        return self.scrub(response.text)

    # --- Adapter ------------------------------------------------------------------------
    async def login(self, secret_key: str) -> bool:
        """``GET /v1/balance``: True when the key is accepted, False on 401/403; other
        failures raise their kind (network, 5xx: :class:`TransientError`). ``secret_key`` is
        not used: Clickatell authenticates every call with ``api_key``."""
        try:
            await self.call("GET", BALANCE_PATH)
        except AuthError:
            return False
        return True

    async def test_credentials(self) -> bool:
        """The same cheap authenticated call as :meth:`login`."""
        return await self.login("")

    async def send(self, request: SmsSendRequest) -> SmsResponse:
        """Send in batches of :data:`MAX_BATCH` (the worker never gives more than one batch).

        An error of the first call is raised (nothing was sent); an error of a later call
        becomes FAIL results for that call's messages, since the earlier ones were sent.
        """
        results: list[SmsResult] = []
        messages = request.messages
        for start in range(0, len(messages), MAX_BATCH):
            chunk = messages[start : start + MAX_BATCH]
            try:
                results.extend(await self._send_batch(chunk))
            except AdapterError as exc:
                if start == 0:
                    raise
                results.extend(
                    SmsResult(partnerStatus=type(exc).__name__, partnerDetail=exc.detail)
                    for _ in chunk
                )
        return SmsResponse(partnerPacketId="", results=results)

    async def _send_batch(self, messages: list[SmsMessage]) -> list[SmsResult]:
        payload: list[dict[str, Any]] = []
        for message in messages:
            entry: dict[str, Any] = {
                "channel": "sms",
                "to": message.mobileNumber,
                "content": message.text,
            }
            if message.sender:
                entry["from"] = message.sender
            validity = validity_minutes(message.expireTime, self.context.tz)
            if validity is not None:
                entry["validityPeriod"] = validity
            payload.append(entry)
        response = await self.call(
            "POST",
            MESSAGE_PATH,
            ok=(*_SEND_OK, 400, 402, 404),
            content=orjson.dumps({"messages": payload}),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        try:
            doc = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            doc = None
        if response.status_code not in _SEND_OK:
            # Every message refused: the entries say why, one by one (module docstring).
            error = doc.get("error") if isinstance(doc, dict) else None
            entries = doc.get("messages") if isinstance(doc, dict) else None
            if error or not isinstance(entries, list) or not entries:
                self._raise_global(response, error or response.text)
            return self._match(messages, entries)
        if not isinstance(doc, dict) or not isinstance(doc.get("messages", []), list):
            raise PermanentError(
                f"account {self.context.account_name!r}: clickatell POST {MESSAGE_PATH}: HTTP "
                f"{response.status_code} with an unreadable body "
                f"({short(self.scrub(response.text), 120)!r});"
                " outcome unknown: check the Clickatell portal before resending"
            )
        if doc.get("error"):
            self._raise_global(response, doc["error"])
        return self._match(messages, doc.get("messages") or [])

    def _raise_global(self, response: httpx.Response, error: Any) -> NoReturn:
        """Raise the kind a whole-payload error calls for (module docstring)."""
        status = response.status_code
        code, text = _error_parts(error)
        text = short(self.scrub(text))
        detail = (
            f"account {self.context.account_name!r}: clickatell POST {MESSAGE_PATH}: HTTP "
            f"{status}: {text or 'no error text'}"
            + (f" (code {short(self.scrub(code), 40)})" if code else "")
        )
        if status == 402 or code in _FUNDS_CODES:
            raise PermanentError(f"{detail}; {_TOP_UP}")
        if status == 429 or code in _THROTTLE_CODES:
            raise ThrottledError(detail, retry_after_s(response.headers.get("Retry-After")))
        if status >= 500 or code in _RETRY_CODES:
            raise TransientError(detail)
        if status in (401, 403) or code in _AUTH_CODES:
            raise AuthError(f"{detail}; check the account's api_key and the integration")
        raise PermanentError(detail)

    def _match(self, messages: list[SmsMessage], entries: list[Any]) -> list[SmsResult]:
        """One result per message: entries are matched by number, in order of appearance."""
        by_number: dict[str, deque[dict[str, Any]]] = defaultdict(deque)
        for entry in entries:
            if isinstance(entry, dict):
                by_number[_digits(entry.get("to", ""))].append(entry)
        results: list[SmsResult] = []
        for message in messages:
            queue = by_number.get(message.mobileNumber)
            if not queue:
                results.append(
                    SmsResult(
                        partnerStatus="NO_ANSWER",
                        partnerDetail=(
                            f"Clickatell's reply has no entry for {message.mobileNumber}; "
                            "outcome unknown: check the Clickatell portal before resending"
                        ),
                    )
                )
                continue
            entry = queue.popleft()
            message_id = entry.get("apiMessageId")
            if entry.get("accepted") is True and isinstance(message_id, str) and message_id:
                results.append(
                    SmsResult(
                        partnerMessageId=message_id,
                        partnerStatus="ACCEPTED",
                        apiStatus=ApiStatus.OK,
                    )
                )
                continue
            results.append(self._refused(entry, message_id))
        return results

    def _refused(self, entry: dict[str, Any], message_id: Any) -> SmsResult:
        """The FAIL result of an entry Clickatell did not accept (module docstring)."""
        code, text = _error_parts(entry.get("error"))
        detail = text or "rejected by Clickatell without an error text"
        reason = ""
        if blames_sender(code, text):
            reason = REASON_SENDER
        elif code in _RETRY_LATER_CODES:
            reason = REASON_RETRY
        elif code in _FUNDS_CODES:
            detail = f"{detail}; {_TOP_UP}"
        return SmsResult(
            partnerMessageId=message_id if isinstance(message_id, str) else "",
            partnerStatus=short(self.scrub(code), 40) or "REJECTED",
            partnerDetail=short(self.scrub(detail)),
            reason=reason,
        )

    async def report(self, request: SmsReportRequest) -> SmsResponse:
        """Clickatell pushes states (``meta.receipts`` PUSH), so the reporter never calls this;
        called directly, it answers every id WAITING."""
        return SmsResponse(
            partnerPacketId=request.partnerPacketId,
            results=[
                SmsResult(
                    partnerMessageId=pid,
                    partnerDetail="clickatell pushes status callbacks; no status query is made",
                    apiStatus=ApiStatus.WAITING,
                )
                for pid in request.messages
            ],
        )

    # --- status callbacks -------------------------------------------------------------
    async def webhook(self, request: WebhookRequest) -> list[SmsResult]:
        """Parse a REST status callback (a JSON object, or a JSON list of them).

        Fields: ``integrationName, messageId, requestId, clientMessageId, to, from, statusCode,
        status, statusDescription, timestamp``; ``messageId`` is the ``apiMessageId`` that Send
        returned. 400 when malformed, 403 when ``webhook_token`` is set and not presented.
        """
        account = self.context.account_name
        self.check_webhook_token(request, f"clickatell callback for account {account!r}")
        try:
            doc = orjson.loads(request.body)
        except orjson.JSONDecodeError as exc:
            raise WebhookError(
                400, f"clickatell callback for account {account!r}: body is not JSON ({exc})"
            ) from None
        items = doc if isinstance(doc, list) else [doc]
        results: list[SmsResult] = []
        for n, item in enumerate(items):
            where = f"clickatell callback for account {account!r}, entry {n}"
            if not isinstance(item, dict):
                raise WebhookError(400, f"{where}: expected a JSON object")
            message_id = item.get("messageId") or item.get("apiMessageId")
            if not isinstance(message_id, str) or not message_id:
                raise WebhookError(400, f"{where}: 'messageId' missing or not a string")
            raw_code = item.get("statusCode")
            try:
                if isinstance(raw_code, bool):
                    raise ValueError
                code = int(raw_code)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise WebhookError(
                    400, f"{where}: 'statusCode' {raw_code!r} is not an integer"
                ) from None
            status = map_status(code)
            name = str(item.get("status") or "")
            description = str(item.get("statusDescription") or "")
            detail = ": ".join(part for part in (name, description) if part)
            if code not in STATUS_MAP:
                detail = f"unknown Clickatell status code {code}, kept WAITING" + (
                    f" ({detail})" if detail else ""
                )
            results.append(
                SmsResult(
                    partnerMessageId=message_id,
                    partnerStatus=str(code),
                    partnerDetail=short(detail),
                    apiStatus=status,
                )
            )
        return results
