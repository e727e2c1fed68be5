"""The Twilio adapter: Programmable Messaging over REST, one recipient per request, receipts both
pulled (Message fetch) and pushed (status callbacks signed with ``X-Twilio-Signature``).

Partner facts: ``docs/protocols.md`` §3.2, §5, §6.

* **Auth**: HTTP Basic ``account_sid:auth_token`` on every request. Both are declared secret:
  the Account SID is part of every URL path, so the adapter replaces it with ``{AccountSid}``
  in every error detail it raises (Twilio's own 404 text echoes the path).
* **Send** (LOOP pattern, ``max_concurrency`` 16): ``POST /2010-04-01/Accounts/{AccountSid}/
  Messages.json`` form-encoded ``To`` (``+`` and our digits: E.164), ``From`` (the message's
  sender) or ``MessagingServiceSid`` (the account's ``messaging_service_sid``, used *instead* of
  From when set), ``Body`` and, when ``callback_base_url`` is set, ``StatusCallback``. HTTP 201
  with the Message resource → OK, ``partnerMessageId`` = ``sid``, ``smsMessageCount`` =
  ``num_segments``.
* **Report** (pull): ``GET .../Messages/{MessageSid}.json`` per id, at most ``max_concurrency``
  at once inside one ``report()`` call; a 404 → FAIL "unknown message".
* **Webhook** (push): Twilio's status callback, a form POST with ``MessageSid``,
  ``MessageStatus``, ``ErrorCode``, ``AccountSid``, ...; ``X-Twilio-Signature`` must equal
  ``base64(HMAC-SHA1(auth_token, URL + the sorted form pairs concatenated key+value))``.

Decisions where the partner's documentation is silent (each also in docs/adapters/twilio.md):

* A **400 on Send** is that message's rejection (one request carries one message), so it
  becomes a FAIL *result* with ``partnerStatus`` = Twilio's error code (e.g. ``21211``) and
  Twilio's message in ``partnerDetail`` — not a :class:`PermanentError`, which would lose the
  code and, on a multi-message call, fail messages Twilio never judged. Other 4xx
  (404: wrong account or URL, ...) raise :class:`PermanentError`, 401/403 :class:`AuthError`.
* **Sender refused**: a 400 whose code refuses the ``From`` (21212, 21601, 21606, 21616,
  21657, 21659, 21660, 21661: :data:`mta.adapters.twilio_codes.SENDER_CODES`, each on
  twilio.com/docs/api/errors/<code>) is a FAIL with ``reason`` = sender: the worker sends it
  once more with the account's ``fallback_sender``.
* **Validity**: ``expireTime`` becomes ``ValidityPeriod``, the seconds left (rounded up),
  within Twilio's documented 1..36000 (Message resource; error 21624/90007): a message with
  less than a second left still goes with 1, one expiring after 10 hours goes with 36000.
* **Sender**: a numeric sender of 7 or more digits is a phone number and gets ``+``; shorter
  numeric senders are short codes and alphanumeric ones sender IDs, both sent as they are. A
  message without a sender on an account without ``messaging_service_sid`` FAILs locally
  (``partnerStatus`` ``NO_SENDER``) without a request.
* **Timeouts on Send** are transient and retried, as for every adapter; Twilio has no
  idempotency key, so a request that timed out after Twilio accepted it can be sent twice.
* **Statuses**: ``partially_delivered`` → FAIL (not every part arrived); a status this table
  does not know (``receiving``, ``received``, a future one) → WAITING, so the MTA deadline
  decides (TIMEOUT) rather than a guess.
* **Report errors**: per id, a 404 is a FAIL result; any other error leaves that id out (it
  stays WAITING and is polled again) unless every id failed or one failed on credentials, in
  which case the error is raised for the reporter to log.
* **Webhook URL**: the signature covers the public URL Twilio called. It is taken from
  ``callback_url`` (``<callback_base_url>/webhooks/<account>``) when set, else from the URL the
  server saw — which a reverse proxy may have rewritten, so set ``callback_base_url`` behind
  one. As Twilio's own validators do, the URL is also tried with the scheme's default port
  added or removed.
* ``login(secret_key)``: the MTA secret key means nothing to Twilio and is ignored; login is
  ``GET .../Accounts/{AccountSid}.json``: 200 → True (an account Twilio reports ``suspended``
  or ``closed`` raises :class:`AuthError` saying so), 401/403 → False.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar
from urllib.parse import parse_qsl

import httpx
from mta.adapters.httpbase import HTTP_OPTIONS, HttpAdapter, short
from mta.adapters.twilio_codes import (
    MAX_SEGMENTS,
    SENDER_CODES,
    STATUS_MAP,
    map_status,
    segments,
    signature,
    url_variants,
    validity_seconds,
)

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
)

API = "/2010-04-01"
DEFAULT_URL = "https://api.twilio.com"
SIGNATURE_HEADER = "x-twilio-signature"
FORM_TYPE = "application/x-www-form-urlencoded"
#: Twilio's code for "too many concurrent requests": never processed, always safe to retry.
THROTTLED_CODE = 20429

_T = TypeVar("_T")

__all__ = [
    "MAX_SEGMENTS",
    "SENDER_CODES",
    "STATUS_MAP",
    "TwilioAdapter",
    "map_status",
    "signature",
    "url_variants",
]


def _text(value: Any) -> str:
    return "" if value is None else str(value)


class TwilioAdapter(HttpAdapter):
    """Twilio Programmable Messaging (see the module docstring for the decisions)."""

    meta: ClassVar[AdapterMeta] = AdapterMeta(
        name="twilio",
        description="Twilio Programmable Messaging: REST send per recipient, "
        "receipts by Message fetch and by signed status callbacks.",
        options=(
            *HTTP_OPTIONS,
            OptionSpec(
                "account_sid",
                str,
                required=True,
                secret=True,
                description="Twilio Account SID (AC...), the Basic auth user",
            ),
            OptionSpec(
                "auth_token",
                str,
                required=True,
                secret=True,
                description="Twilio Auth Token: Basic auth password and webhook signing key",
            ),
            OptionSpec(
                "messaging_service_sid",
                str,
                default="",
                description="Messaging Service SID (MG...); sent instead of From when set",
            ),
        ),
        default_url=DEFAULT_URL,
        pattern=SendPattern.LOOP,
        max_batch=1,
        max_concurrency=16,
        receipts=ReceiptMode.BOTH,
    )

    def __init__(self, options: Mapping[str, Any], context: AdapterContext | None = None) -> None:
        super().__init__(options, context)
        self.account_sid = str(self.options.get("account_sid") or "")
        self.auth_token = str(self.options.get("auth_token") or "")
        self.messaging_service_sid = str(self.options["messaging_service_sid"])
        name = self.context.account_name
        if not self.account_sid or not self.auth_token:
            raise ValueError(f"twilio account {name!r}: account_sid and auth_token are required")
        # The SID goes into URL paths: only letters and digits (Twilio's are 'AC' + 32 hex).
        if not (self.account_sid.isascii() and self.account_sid.isalnum()):
            raise ValueError(
                f"twilio account {name!r}: account_sid must be letters and digits "
                "(Twilio's Account SID, 'AC' + 32 hex digits); check the accounts file"
            )

    # --- HttpAdapter hooks --------------------------------------------------------------
    def auth(self) -> httpx.Auth | None:
        return httpx.BasicAuth(self.account_sid, self.auth_token)

    def error_text(self, response: httpx.Response) -> str:
        """``Twilio error <code>: <message> (<more_info>)`` from Twilio's error body."""
        code, message, more = self._error(response)
        if code is None and not message:
            return self._mask(response.text) or f"(empty body, HTTP {response.status_code})"
        text = f"Twilio error {code}: {message}" if code is not None else message
        return self._mask(f"{text} ({more})" if more else text)

    async def call(
        self, method: str, path: str, *, ok: tuple[int, ...] = (200, 201, 202), **kwargs: Any
    ) -> httpx.Response:
        """The base call, with the account named, the Account SID masked and a hint added."""
        try:
            return await super().call(method, path, ok=ok, **kwargs)
        except ThrottledError as exc:
            hint = "Twilio throttled the request; it was not processed and is retried later"
            raise ThrottledError(self._explain(exc, hint), exc.retry_after) from None
        except AuthError as exc:
            hint = "check the account's account_sid and auth_token"
            raise AuthError(self._explain(exc, hint)) from None
        except TransientError as exc:
            hint = (
                "Twilio may have accepted it before the failure (no idempotency key)"
                if method == "POST"
                else ""
            )
            raise TransientError(self._explain(exc, hint)) from None
        except PermanentError as exc:
            raise PermanentError(self._explain(exc, "")) from None

    # --- helpers ------------------------------------------------------------------------
    def _path(self, suffix: str) -> str:
        return f"{API}/Accounts/{self.account_sid}{suffix}"

    def _mask(self, text: str) -> str:
        """``text`` with the Account SID shown as ``{AccountSid}`` and every secret (the SID
        and the token in every encoding, the proxy password) masked (:meth:`scrub`)."""
        if self.account_sid:
            text = text.replace(self.account_sid, "{AccountSid}")
        return self.scrub(text)

    def _explain(self, exc: AdapterError, hint: str) -> str:
        detail = self._mask(exc.detail)  # the base names the account already
        return detail + (f"; {hint}" if hint else "")

    @staticmethod
    def _json(response: httpx.Response) -> dict[str, Any] | None:
        try:
            doc = response.json()
        except ValueError:
            return None
        return doc if isinstance(doc, dict) else None

    def _error(self, response: httpx.Response) -> tuple[int | None, str, str]:
        """(code, message, more_info) of a Twilio error body; (None, '', '') when it is not."""
        doc = self._json(response) or {}
        raw = doc.get("code")
        code = raw if isinstance(raw, int) and not isinstance(raw, bool) else None
        if code is None and isinstance(raw, str) and raw.isdigit():
            code = int(raw)
        return code, _text(doc.get("message")), _text(doc.get("more_info"))

    async def _bounded(
        self, make: Callable[[_T], Awaitable[SmsResult]], items: Sequence[_T]
    ) -> list[SmsResult | BaseException]:
        """``make(item)`` for every item, at most ``max_concurrency`` at once, in order."""
        if len(items) == 1:
            try:
                return [await make(items[0])]
            except AdapterError as exc:
                return [exc]
        gate = asyncio.Semaphore(self.meta.max_concurrency)

        async def one(item: _T) -> SmsResult:
            async with gate:
                return await make(item)

        return list(await asyncio.gather(*(one(i) for i in items), return_exceptions=True))

    # --- Adapter ------------------------------------------------------------------------
    async def login(self, secret_key: str) -> bool:
        """``GET .../Accounts/{AccountSid}.json``: True; refused credentials → False.

        ``secret_key`` is not a Twilio concept and is ignored. Network errors raise
        :class:`TransientError`; a suspended or closed account raises :class:`AuthError`.
        """
        del secret_key
        try:
            response = await self.call("GET", self._path(".json"), ok=(200,))
        except AuthError:
            return False
        status = _text((self._json(response) or {}).get("status")).lower()
        if status in ("suspended", "closed"):
            raise AuthError(
                f"twilio account {self.context.account_name!r}: Twilio reports the account "
                f"{status}; it cannot send until it is reactivated in the Twilio console"
            )
        return True

    async def test_credentials(self) -> bool:
        """The login call: False when Twilio refuses the credentials or the account is
        suspended/closed; network errors raise :class:`TransientError` (nothing was learned)."""
        try:
            return await self.login("")
        except AuthError:
            return False

    async def send(self, request: SmsSendRequest) -> SmsResponse:
        """One request per message (the worker passes one: LOOP), ``results[i]`` ↔ ``messages[i]``.

        Called with several messages, they go at most ``max_concurrency`` at once; when every
        one raises, the first error (a credentials error first) is raised, else the messages
        that raised become FAIL results with the error's detail — raising would resend the
        messages Twilio already accepted.
        """
        outcomes = await self._bounded(self._send_one, request.messages)
        results: list[SmsResult] = []
        errors: list[AdapterError] = []
        for outcome in outcomes:
            if isinstance(outcome, SmsResult):
                results.append(outcome)
            elif isinstance(outcome, AdapterError):
                errors.append(outcome)
            else:
                raise outcome
        if errors and not results:
            raise next((e for e in errors if isinstance(e, AuthError)), errors[0])
        answer: list[SmsResult] = []
        for outcome in outcomes:
            if isinstance(outcome, SmsResult):
                answer.append(outcome)
            else:
                kind = type(outcome).__name__.removesuffix("Error").upper()
                detail = outcome.detail if isinstance(outcome, AdapterError) else str(outcome)
                answer.append(
                    SmsResult(partnerStatus=kind, partnerDetail=detail, apiStatus=ApiStatus.FAIL)
                )
        return SmsResponse(partnerPacketId="", results=answer)

    def _sender(self, sender: str) -> str:
        if sender.isdigit() and len(sender) >= 7:
            return "+" + sender
        return sender

    async def _send_one(self, message: SmsMessage) -> SmsResult:
        account = self.context.account_name
        to = "+" + message.mobileNumber
        form = {"To": to, "Body": message.text}
        if self.messaging_service_sid:
            form["MessagingServiceSid"] = self.messaging_service_sid
        elif message.sender:
            form["From"] = self._sender(message.sender)
        else:
            return SmsResult(
                partnerStatus="NO_SENDER",
                partnerDetail=(
                    f"twilio account {account!r}: message to {to} has no sender; give the "
                    "message a sender (a Twilio number or sender ID) or set the account's "
                    "messaging_service_sid"
                ),
                apiStatus=ApiStatus.FAIL,
            )
        callback = self.callback_url
        if callback:
            form["StatusCallback"] = callback
        validity = validity_seconds(message.expireTime, self.context.tz)
        if validity is not None:
            form["ValidityPeriod"] = str(validity)
        response = await self.call(
            "POST", self._path("/Messages.json"), ok=(200, 201, 400), data=form
        )
        if response.status_code == 400:
            code, _, _ = self._error(response)
            return SmsResult(
                partnerStatus=str(code) if code is not None else "400",
                partnerDetail=short(
                    f"twilio account {account!r} rejected the message to {to}: "
                    f"{self.error_text(response)}"
                ),
                apiStatus=ApiStatus.FAIL,
                reason=REASON_SENDER if code in SENDER_CODES else "",
            )
        doc = self._json(response)
        sid = _text((doc or {}).get("sid"))
        if doc is None or not sid:
            return SmsResult(
                partnerStatus="NO_SID",
                partnerDetail=short(
                    f"twilio account {account!r}: HTTP {response.status_code} without a message "
                    f"sid for {to}; the message may have been sent, check the Twilio console: "
                    f"{self._mask(response.text)}"
                ),
                apiStatus=ApiStatus.FAIL,
            )
        status = _text(doc.get("status")) or "queued"
        count = segments(doc.get("num_segments"))
        if map_status(status) == ApiStatus.FAIL:
            return SmsResult(
                partnerMessageId=sid,
                partnerStatus=status,
                partnerDetail=self._failure_detail(
                    status, doc.get("error_code"), doc.get("error_message")
                ),
                apiStatus=ApiStatus.FAIL,
                smsMessageCount=count,
            )
        return SmsResult(
            partnerMessageId=sid,
            partnerStatus=status,
            apiStatus=ApiStatus.OK,
            smsMessageCount=count,
        )

    def _failure_detail(self, status: str, code: Any, message: Any) -> str:
        detail = f"Twilio status {status}"
        code_s, message_s = _text(code), _text(message)
        if code_s:
            detail += f", error {code_s}"
            if message_s:
                detail += f": {message_s}"
            detail += f" (https://www.twilio.com/docs/api/errors/{code_s})"
        elif message_s:
            detail += f": {message_s}"
        return short(self._mask(detail))

    async def report(self, request: SmsReportRequest) -> SmsResponse:
        """Fetch each message (at most ``max_concurrency`` at once); see the module docstring
        for how errors on some ids are handled."""
        ids = list(dict.fromkeys(request.messages))
        outcomes = await self._bounded(self._fetch, ids)
        results: list[SmsResult] = []
        errors: list[AdapterError] = []
        for outcome in outcomes:
            if isinstance(outcome, SmsResult):
                results.append(outcome)
            elif isinstance(outcome, AdapterError):
                errors.append(outcome)
            else:
                raise outcome
        auth = next((e for e in errors if isinstance(e, AuthError)), None)
        if auth is not None:
            raise auth
        if errors and not results:
            raise errors[0]
        return SmsResponse(partnerPacketId="", results=results)

    async def _fetch(self, sid: str) -> SmsResult:
        if not (sid and sid.isascii() and sid.isalnum() and len(sid) <= 64):
            return SmsResult(
                partnerMessageId=sid,
                partnerStatus="UNKNOWN",
                partnerDetail="unknown message: not a Twilio message sid",
                apiStatus=ApiStatus.FAIL,
            )
        response = await self.call("GET", self._path(f"/Messages/{sid}.json"), ok=(200, 404))
        if response.status_code == 404:
            code, _, _ = self._error(response)
            return SmsResult(
                partnerMessageId=sid,
                partnerStatus=str(code) if code is not None else "404",
                partnerDetail=(
                    f"unknown message: twilio account {self.context.account_name!r} "
                    f"has no message {sid}"
                ),
                apiStatus=ApiStatus.FAIL,
            )
        doc = self._json(response)
        status = _text((doc or {}).get("status"))
        if doc is None or not status:
            raise TransientError(
                f"twilio account {self.context.account_name!r}: message {sid}: the answer has no "
                f"status: {short(self._mask(response.text), 120)}"
            )
        api = map_status(status)
        detail = (
            self._failure_detail(status, doc.get("error_code"), doc.get("error_message"))
            if api == ApiStatus.FAIL
            else ""
        )
        return SmsResult(
            partnerMessageId=sid,
            partnerStatus=status,
            partnerDetail=detail,
            apiStatus=api,
            smsMessageCount=segments(doc.get("num_segments")),
        )

    # --- push receipts ------------------------------------------------------------------
    async def webhook(self, request: WebhookRequest) -> list[SmsResult]:
        """One Twilio status callback → its result (WAITING for intermediate states).

        Refusals: no or forged ``X-Twilio-Signature``, or another account's ``AccountSid`` →
        403; not a form POST, or no ``MessageSid``/``MessageStatus`` → 400.
        """
        account = self.context.account_name
        headers = {k.lower(): v for k, v in request.headers.items()}
        given = headers.get(SIGNATURE_HEADER, "")
        if not given:
            raise WebhookError(403, f"twilio account {account!r}: no X-Twilio-Signature header")
        if request.method.upper() != "POST":
            raise WebhookError(
                400,
                f"twilio account {account!r}: a status callback is a form POST, "
                f"got {request.method}",
            )
        pairs = self._form_pairs(request, headers)
        url = self.callback_url or request.url
        wanted = given.encode("utf-8", "replace")
        if not any(
            hmac.compare_digest(signature(self.auth_token, u, pairs).encode(), wanted)
            for u in url_variants(url)
        ):
            raise WebhookError(
                403,
                f"twilio account {account!r}: X-Twilio-Signature does not match the body signed "
                f"for {url} with this account's auth_token (forged, another account's, or a "
                "proxy changed the URL: set callback_base_url to the public URL)",
            )
        form = dict(pairs)
        if "AccountSid" not in form:
            raise WebhookError(
                400, f"twilio account {account!r}: status callback has no AccountSid"
            )
        if not hmac.compare_digest(form["AccountSid"].encode(), self.account_sid.encode()):
            raise WebhookError(
                403, f"twilio account {account!r}: status callback for another Twilio account"
            )
        sid = form.get("MessageSid") or form.get("SmsSid") or ""
        status = form.get("MessageStatus") or form.get("SmsStatus") or ""
        if not sid or not status:
            raise WebhookError(
                400,
                f"twilio account {account!r}: status callback without MessageSid and MessageStatus",
            )
        api = map_status(status)
        detail = (
            self._failure_detail(status, form.get("ErrorCode"), form.get("ErrorMessage"))
            if api == ApiStatus.FAIL
            else ""
        )
        return [
            SmsResult(
                partnerMessageId=sid,
                partnerStatus=status,
                partnerDetail=detail,
                apiStatus=api,
                smsMessageCount=segments(form.get("NumSegments")),
            )
        ]

    def _form_pairs(
        self, request: WebhookRequest, headers: Mapping[str, str]
    ) -> list[tuple[str, str]]:
        """Every form pair of the body (repeated names kept: all of them are signed)."""
        account = self.context.account_name
        if not request.body:
            if request.form:
                return list(request.form.items())
            raise WebhookError(400, f"twilio account {account!r}: empty status callback")
        content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if content_type != FORM_TYPE:
            raise WebhookError(
                400,
                f"twilio account {account!r}: status callback must be {FORM_TYPE}, "
                f"got {content_type or 'no content type'}",
            )
        try:
            text = request.body.decode("utf-8")
            return parse_qsl(text, keep_blank_values=True, strict_parsing=True)
        except (UnicodeDecodeError, ValueError) as exc:
            raise WebhookError(
                400, f"twilio account {account!r}: unreadable form body: {exc}"
            ) from None
