"""The Infobip adapter: batch Send on /sms/2/text/advanced, reports by pull and by webhook.

Protocol facts are from ``docs/protocols.md`` §3.1; the decisions below fill what
its documentation leaves open.

Send
    One ``POST /sms/2/text/advanced`` per batch of up to ``meta.max_batch`` messages (Infobip
    publishes no per-request limit for this endpoint; 100 keeps a request small and a failed
    request cheap). Each of our messages becomes one ``messages[]`` entry with one destination,
    whose ``messageId`` we choose, so every result is matched by id, never by position.

Validity
    A message's ``expireTime`` becomes ``validityPeriod``: "the message validity period in
    minutes ... longer than 48h is not supported (it will be automatically set to 48h)"
    (Infobip API reference, "Send SMS message", ``POST /sms/2/text/advanced``). Minutes left,
    rounded up, within [1, 2880]: a message with less than a minute left still goes with 1.

Sender refused
    REJECTED_SOURCE (id 11, "Invalid Source address") and REJECTED_SENDER (id 13, sender
    blocklisted) — Infobip "Response status and error codes" — are FAILs with ``reason`` =
    sender: the worker sends the message once more with the account's ``fallback_sender``.

Our message ids
    ``mta<token>-<i>``: ``token`` is 20 random hex digits per Send call, ``i`` the message's
    index in the call; the top-level ``bulkId`` is ``mta<token>-a<attempt>``. The worker
    retries a transient failure *in place* by calling ``send`` again with the *same request
    object*; the adapter recognises it (by identity, in a small bounded map) and resends the
    same message ids. Infobip refuses an id it has already accepted with the documented status
    ``REJECTED_DUPLICATE_MESSAGE_ID`` (group 5, id 23): on a resend that answer means "your
    earlier attempt got through", so the message is OK under that id instead of FAIL, and a
    timed-out-but-accepted request is never sent twice to the handset. A *delayed* retry (the
    worker republishes the batch) builds a new request and so new ids; the worker only does
    that when no Send outcome was recorded. A fresh ``bulkId`` per attempt keeps Infobip from
    ever refusing a whole resend over a reused bulk id.

Report (meta.receipts = BOTH)
    Infobip serves each delivery report **once** from ``GET /sms/1/reports``, and a filtered
    poll consumes only the matching reports. So ``report`` drains the endpoint without filters
    (``limit=1000``, repeated while a full page comes back, at most :data:`DRAIN_PAGES` pages a
    call; calls that arrive while a drain runs wait for it instead of draining again), keeps
    every result in a bounded in-memory map (``reports_kept`` entries, oldest dropped first; a
    final state is never replaced by a later intermediate one) and answers the requested ids
    from that map (only those: ids not asked about stay in the map for a later call).
    Every final drained is also stored as a pushed receipt in Redis (the context's receipt
    sink), so a report drained by one reporter process for a message that another reporter
    process holds is found by that other process, which checks pushed receipts first.

Webhook
    Infobip does not sign its callbacks. The body ``{"results": [...]}`` is accepted only when
    well formed (else 400). When the optional ``webhook_token`` is set, the notify URL given
    to Infobip carries ``?token=<it>`` and a call without the same token is refused with 403;
    otherwise protect the URL by network restrictions (see docs/adapters/infobip.md).

Errors
    Infobip error bodies (``{"requestError": {"serviceException": {"messageId", "text"}}}`` or
    the newer ``{"errorCode", "description"}``) become the detail text; HTTP 429 (``E429``)
    is throttling, the rest as :mod:`mta.adapters.httpbase` maps it.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections import OrderedDict
from collections.abc import Mapping
from datetime import tzinfo
from typing import Any, ClassVar
from urllib.parse import quote

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
    ReceiptMode,
    SendPattern,
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

SEND_PATH = "/sms/2/text/advanced"
REPORTS_PATH = "/sms/1/reports"
BALANCE_PATH = "/account/1/balance"

#: Infobip's largest ``limit`` for ``GET /sms/1/reports``.
PAGE_SIZE = 1000
#: Most pages one ``report`` call drains; the rest waits for the next call.
DRAIN_PAGES = 5
#: Send requests remembered for in-place retries (a few per concurrent Send suffice).
RECENT_SENDS = 256

# Status groups (docs/protocols.md §3.1).
G_OK, G_PENDING, G_UNDELIVERABLE, G_DELIVERED, G_EXPIRED, G_REJECTED = 0, 1, 2, 3, 4, 5
DELIVERED_TO_HANDSET = 5
DUPLICATE_MESSAGE_ID = 23
#: REJECTED statuses that blame the sender: REJECTED_SOURCE (11, sender not registered on the
#: account) and REJECTED_SENDER (13, sender blocklisted). The worker retries such a FAIL once
#: with the account's ``fallback_sender``.
SENDER_REJECTIONS = {11: "REJECTED_SOURCE", 13: "REJECTED_SENDER"}
#: ``validityPeriod`` bounds in minutes (module docstring).
VALIDITY_MIN, VALIDITY_MAX = 1, 48 * 60


def validity_minutes(expire_time: str, tz: tzinfo) -> int | None:
    """``validityPeriod`` for a message expiring at ``expire_time`` (MMP, zone ``tz``): the
    minutes left, rounded up, within [1, 2880]; None without an expireTime."""
    left = seconds_until(expire_time, tz)
    if left is None:
        return None
    return max(VALIDITY_MIN, min(VALIDITY_MAX, math.ceil(left / 60)))


def map_status(group_id: int, status_id: int, name: str = "") -> ApiStatus:
    """An Infobip status (group, id) as the reporter's state (docs/protocols.md §3.1, §5).

    Group 0 (the legacy "accepted" group) and unknown groups stay WAITING: the reporter's
    deadline turns them into TIMEOUT if nothing final ever comes.
    """
    if group_id == G_DELIVERED:
        if status_id == DELIVERED_TO_HANDSET or name == "DELIVERED_TO_HANDSET":
            return ApiStatus.DELIVERED
        return ApiStatus.WAITING  # DELIVERED_TO_OPERATOR is intermediate
    if group_id in (G_UNDELIVERABLE, G_REJECTED):
        return ApiStatus.FAIL
    if group_id == G_EXPIRED:
        return ApiStatus.TIMEOUT
    return ApiStatus.WAITING


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _status_detail(status: Mapping[str, Any], error: Any) -> str:
    """``GROUP NAME: description`` of a status, plus the error object when it says more."""
    detail = f"{_str(status.get('groupName'))} {_str(status.get('name'))}".strip()
    description = _str(status.get("description"))
    if description:
        detail = f"{detail}: {description}" if detail else description
    if isinstance(error, Mapping) and _int(error.get("id")) not in (None, 0):
        what = _str(error.get("name")) or f"error {error.get('id')}"
        text = _str(error.get("description"))
        detail += f"; error {what}" + (f": {text}" if text else "")
        if error.get("permanent") is True:
            detail += " (permanent)"
    return "infobip: " + short(detail)


def parse_report(item: Any) -> SmsResult | None:
    """One element of ``results`` (pull or webhook) as a result, or None when malformed.

    Well formed = an object with a non-empty string ``messageId`` and a ``status`` object whose
    ``groupId`` and ``id`` are integers (``id`` may be absent: group alone decides, except in the
    DELIVERED group where the status name is checked too).
    """
    if not isinstance(item, Mapping):
        return None
    message_id = item.get("messageId")
    status = item.get("status")
    if not isinstance(message_id, str) or not message_id or not isinstance(status, Mapping):
        return None
    group = _int(status.get("groupId"))
    sid = _int(status.get("id")) if "id" in status else -1
    if group is None or sid is None:
        return None
    name = _str(status.get("name"))
    api = map_status(group, sid, name)
    count = _int(item.get("smsCount")) or 0
    return SmsResult(
        partnerMessageId=message_id,
        partnerStatus=name or _str(status.get("groupName")) or str(group),
        partnerDetail=_status_detail(status, item.get("error")),
        apiStatus=api,
        smsOperator=_str(item.get("mccMnc") or item.get("mccmnc")),
        smsMessageCount=max(0, count),
    )


class InfobipAdapter(HttpAdapter):
    """Infobip SMS API: batch send, delivery reports pulled and pushed (module docstring)."""

    meta: ClassVar[AdapterMeta] = AdapterMeta(
        name="infobip",
        description="Infobip SMS API (/sms/2/text/advanced; reports by pull and webhook).",
        options=(
            *HTTP_OPTIONS,
            OptionSpec(
                "api_key",
                str,
                required=True,
                secret=True,
                description="Infobip API key (sent as 'Authorization: App <api_key>')",
            ),
            OptionSpec(
                "webhook_token",
                str,
                secret=True,
                default="",
                description="if set, added to the notify URL as ?token= and required on webhooks",
            ),
            OptionSpec(
                "reports_kept",
                int,
                default=100_000,
                minimum=1,
                description="pulled reports kept in memory for later Report calls",
            ),
        ),
        default_url="https://api.infobip.com",
        pattern=SendPattern.BATCH,
        max_batch=100,
        max_concurrency=4,
        receipts=ReceiptMode.BOTH,
    )

    def __init__(self, options: Mapping[str, Any], context: AdapterContext | None = None) -> None:
        super().__init__(options, context)
        self._api_key = str(self.options.get("api_key") or "")
        self._token = str(self.options["webhook_token"])
        self._kept_max = int(self.options["reports_kept"])
        self._kept: OrderedDict[str, SmsResult] = OrderedDict()
        self._drain_lock = asyncio.Lock()
        self._drained_at = 0.0
        self._recent: OrderedDict[int, tuple[SmsSendRequest, str, int]] = OrderedDict()

    # --- HttpAdapter hooks ------------------------------------------------------------------
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"App {self._api_key}"}

    def error_text(self, response: httpx.Response) -> str:
        """Infobip's ``messageId: text`` (or ``errorCode: description``), else the raw body."""
        try:
            doc = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            return response.text
        if isinstance(doc, dict):
            request_error = doc.get("requestError")
            if isinstance(request_error, dict):
                exc = request_error.get("serviceException") or request_error.get("policyException")
                if isinstance(exc, dict):
                    code, text = _str(exc.get("messageId")), _str(exc.get("text"))
                    errors = exc.get("validationErrors")
                    if isinstance(errors, dict) and errors:
                        text += " " + "; ".join(
                            f"{k}: {', '.join(map(str, v)) if isinstance(v, list) else v}"
                            for k, v in errors.items()
                        )
                    if code or text:
                        return f"{code}: {text}".strip(": ")
            code = _str(doc.get("errorCode"))
            if code:
                return f"{code}: {_str(doc.get('description'))}".strip(": ")
        return response.text

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self.call(method, path, **kwargs)
        except AdapterError as exc:
            # Infobip names throttling E429 / TOO_MANY_REQUESTS; honour it whatever the status.
            if not isinstance(exc, TransientError) and (
                ": E429" in exc.detail or ": TOO_MANY_REQUESTS" in exc.detail
            ):
                raise ThrottledError(exc.detail) from None
            raise

    @property
    def notify_url(self) -> str | None:
        """The URL Infobip pushes reports to: the callback URL with ``?token=``. None without a
        ``webhook_token``: ``mta http`` refuses unsigned Infobip receipts (the webhook is
        closed), so Infobip is not told a URL that would only answer 404; reports are polled."""
        url = self.callback_url
        if url is None or not self._token:
            return None
        return f"{url}?token={quote(self._token, safe='')}"

    # --- Login ------------------------------------------------------------------------------
    async def login(self, secret_key: str) -> bool:
        """Infobip is stateless: the key is checked with ``GET /account/1/balance``.

        The MMP ``secret_key`` is not used by Infobip. 401/403 → False (NOK); network errors
        and 5xx raise :class:`TransientError`; another 4xx (e.g. a wrong ``url``) raises
        :class:`PermanentError` naming it.
        """
        try:
            await self._call("GET", BALANCE_PATH)
        except AuthError:
            return False
        return True

    async def test_credentials(self) -> bool:
        """The same cheap authenticated call as Login; False when it cannot be confirmed."""
        try:
            return await self.login("")
        except AdapterError:
            return False

    # --- Send -------------------------------------------------------------------------------
    def _ids_for(self, request: SmsSendRequest) -> tuple[str, int]:
        """(token, attempt) for this request: the same token when the worker resends it."""
        key = id(request)
        seen = self._recent.get(key)
        if seen is not None and seen[0] is request:
            token, attempt = seen[1], seen[2] + 1
        else:
            token, attempt = os.urandom(10).hex(), 1
        self._recent[key] = (request, token, attempt)
        self._recent.move_to_end(key)
        while len(self._recent) > RECENT_SENDS:
            self._recent.popitem(last=False)
        return token, attempt

    async def send(self, request: SmsSendRequest) -> SmsResponse:
        token, attempt = self._ids_for(request)
        ids = [f"mta{token}-{n}" for n in range(len(request.messages))]
        notify = self.notify_url
        messages: list[dict[str, Any]] = []
        for message, message_id in zip(request.messages, ids, strict=True):
            entry: dict[str, Any] = {
                "destinations": [{"to": message.mobileNumber, "messageId": message_id}],
                "text": message.text,
            }
            if message.sender:
                entry["from"] = message.sender
            validity = validity_minutes(message.expireTime, self.context.tz)
            if validity is not None:
                entry["validityPeriod"] = validity
            if notify:
                entry["notifyUrl"] = notify
                entry["notifyContentType"] = "application/json"
            messages.append(entry)
        body = orjson.dumps({"bulkId": f"mta{token}-a{attempt}", "messages": messages})
        response = await self._call(
            "POST", SEND_PATH, content=body, headers={"Content-Type": "application/json"}
        )
        self._recent.pop(id(request), None)  # answered: the worker will not resend this object
        bulk_id, answers = self._send_answers(response)
        results: list[SmsResult] = []
        for message, message_id in zip(request.messages, ids, strict=True):
            status = answers.get(message_id)
            results.append(self._send_result(message_id, status, attempt, message.mobileNumber))
        return SmsResponse(partnerPacketId=bulk_id, results=results)

    @staticmethod
    def _send_answers(response: httpx.Response) -> tuple[str, dict[str, Mapping[str, Any]]]:
        """(``bulkId``, ``messageId`` → ``status`` object) of a send answer; unreadable parts
        are skipped."""
        try:
            doc = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            return "", {}
        if not isinstance(doc, dict):
            return "", {}
        entries = doc.get("messages")
        found: dict[str, Mapping[str, Any]] = {}
        for entry in entries if isinstance(entries, list) else ():
            if isinstance(entry, dict):
                mid, status = entry.get("messageId"), entry.get("status")
                if isinstance(mid, str) and isinstance(status, dict):
                    found[mid] = status
        return _str(doc.get("bulkId")), found

    def _send_result(
        self, message_id: str, status: Mapping[str, Any] | None, attempt: int, number: str
    ) -> SmsResult:
        """One destination's answer to Send.

        A 2xx answer means Infobip took the request, so a destination missing from it (or an
        unreadable answer) is OK under our own id: the reporter follows it, and TIMEOUT ends
        it if Infobip never knew it. Groups 2, 4 and 5 at send time are final FAILs (with
        ``reason`` = sender when the status blames the sender), except a duplicate-id
        rejection of a resend (module docstring).
        """
        if status is None:
            return SmsResult(
                partnerMessageId=message_id,
                partnerStatus="UNCONFIRMED",
                partnerDetail="infobip: accepted the request without a status for this message",
                apiStatus=ApiStatus.OK,
            )
        group = _int(status.get("groupId"))
        sid = _int(status.get("id"))
        name = _str(status.get("name")) or _str(status.get("groupName"))
        if group in (G_UNDELIVERABLE, G_EXPIRED, G_REJECTED):
            if attempt > 1 and sid == DUPLICATE_MESSAGE_ID:
                return SmsResult(
                    partnerMessageId=message_id,
                    partnerStatus=name,
                    partnerDetail=(
                        "infobip: accepted by an earlier attempt of this Send (the resend was "
                        "refused as a duplicate messageId)"
                    ),
                    apiStatus=ApiStatus.OK,
                )
            blames_sender = group == G_REJECTED and (
                sid in SENDER_REJECTIONS or name in SENDER_REJECTIONS.values()
            )
            return SmsResult(
                partnerMessageId=message_id,
                partnerStatus=name,
                partnerDetail=self.scrub(f"{_status_detail(status, None)} (to {number})"),
                apiStatus=ApiStatus.FAIL,
                reason=REASON_SENDER if blames_sender else "",
            )
        return SmsResult(partnerMessageId=message_id, partnerStatus=name, apiStatus=ApiStatus.OK)

    # --- Report -----------------------------------------------------------------------------
    def _keep(self, result: SmsResult) -> None:
        pid = result.partnerMessageId
        old = self._kept.get(pid)
        if old is not None and old.apiStatus.final and not result.apiStatus.final:
            return  # a late intermediate report never hides a final one
        self._kept[pid] = result
        self._kept.move_to_end(pid)
        while len(self._kept) > self._kept_max:
            self._kept.popitem(last=False)

    async def _drain(self) -> None:
        """Drain ``/sms/1/reports`` into the kept map; concurrent callers share one drain."""
        asked = time.monotonic()
        async with self._drain_lock:
            if self._drained_at >= asked:
                # A drain was running when we asked (we waited for it): its pages are ours too.
                # What arrived after its last page waits for the next poll.
                return
            drained: list[SmsResult] = []
            try:
                for _ in range(DRAIN_PAGES):
                    response = await self._call(
                        "GET", REPORTS_PATH, params={"limit": str(PAGE_SIZE)}
                    )
                    try:
                        doc = orjson.loads(response.content)
                    except orjson.JSONDecodeError:
                        raise TransientError(
                            f"infobip GET {REPORTS_PATH}: answer is not JSON: "
                            f"{short(self.scrub(response.text), 120)}"
                        ) from None
                    items = doc.get("results") if isinstance(doc, dict) else None
                    if not isinstance(items, list):
                        raise TransientError(
                            f"infobip GET {REPORTS_PATH}: answer has no 'results' list"
                        )
                    for item in items:
                        result = parse_report(item)
                        if result is not None:
                            self._keep(result)
                            drained.append(result)
                    if len(items) < PAGE_SIZE:
                        break
            finally:
                self._drained_at = time.monotonic()
                # Reports are served once: store the finals as pushed receipts, so the
                # reporter process that holds each message finds it, whichever drained it.
                await self.context.receipts.push(drained)

    async def report(self, request: SmsReportRequest) -> SmsResponse:
        """Drain the reports, then answer the requested ids that have one (others: WAITING)."""
        await self._drain()
        results = [self._kept[pid] for pid in request.messages if pid in self._kept]
        return SmsResponse(partnerPacketId=request.partnerPacketId, results=results)

    # --- Webhook ----------------------------------------------------------------------------
    async def webhook(self, request: WebhookRequest) -> list[SmsResult]:
        """Infobip's pushed delivery reports (``{"results": [...]}``) as results."""
        where = f"infobip webhook for account {self.context.account_name!r}"
        self.check_webhook_token(request, where)
        try:
            doc = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            raise WebhookError(400, f"{where}: body is not JSON") from None
        items = doc.get("results") if isinstance(doc, dict) else None
        if not isinstance(items, list):
            raise WebhookError(400, f"{where}: body has no 'results' list")
        results: list[SmsResult] = []
        for n, item in enumerate(items):
            result = parse_report(item)
            if result is None:
                raise WebhookError(
                    400,
                    f"{where}: results[{n}] lacks a messageId string or a status object with "
                    "integer groupId and id",
                )
            results.append(result)
        return results
