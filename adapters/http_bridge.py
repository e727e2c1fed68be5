"""The ``http-bridge`` adapter: Login/Send/Report/Destroy forwarded as MMP JSON to an HTTP service.

An adapter written in any language plugs in behind a small HTTP wrapper that implements four
``POST`` endpoints under the account's ``url``; the wire contract is specified for implementers
in ``docs/adapters/http-bridge.md`` and shown by the runnable ``examples/bridge_adapter.py``:

* ``/login``   ``{"secretKey": "..."}``                      → ``{"ok": true|false}``
* ``/send``    ``SmsSendRequest`` (``{"messages": [...]}``)   → ``SmsResponse`` (results[i] ↔
  messages[i]; a FAIL may carry ``"reason": "sender"`` or ``"retry"``)
* ``/report``  ``{"partnerPacketId": "", "messages": [ids]}`` → ``SmsResponse``
* ``/destroy`` ``{}``                                         → ``{}``

Success is HTTP 200 with that JSON. Any other status is an error; its body
``{"error": {"kind": "transient"|"throttled"|"permanent"|"auth", "detail": "...",
"retryAfter": seconds}}`` chooses the error kind (the kind wins over the status code).

The account chooses how the MTA calls ``/send`` and ``/report`` (options ``pattern``,
``batch`` or ``loop``, and ``max_batch``, 1 to 1000): the instance's ``meta`` narrows the class's
to them, and the worker and reporter read the instance's.

Decisions the issue left open, stated here and in the guide:

* An error status whose body is not such an error object (a reverse proxy's 502 page, a
  framework's 404) is mapped by its HTTP status as for every HTTP partner (429 throttled, 5xx
  and 408 transient, 401/403 auth, other statuses permanent): the service behind a proxy that
  restarts is transient, not broken. An unknown ``kind`` is treated the same way.
* A 200 answer that is not the documented JSON (not JSON, wrong shape, an ``apiStatus`` that is
  not an :class:`~mta.contract.ApiStatus`) is a :class:`PermanentError` naming the endpoint and
  the field: a bridge that answers garbage is a bug to fix, not a condition to retry. ``null``
  is read as the field's default (Java and C# serializers write it for unset strings); fields
  the MTA does not know are ignored, so a service may send more. The core itself checks that
  ``/send`` answers as many results as messages.
* A result's ``reason`` (``/send`` only) is ``"sender"`` (the partner refused the sender: the
  worker retries with the account's fallback sender) or ``"retry"`` (never accepted: sent again
  later); ``""`` or ``null`` is none, anything else breaks the contract. On ``/report`` it is
  ignored: a report answer is final as it is.
* ``login`` answers False (NOK) when the service refuses us (``auth`` kind, 401/403), raises
  :class:`TransientError` when it cannot be reached, :class:`PermanentError` when it answers
  nonsense. ``test_credentials`` (no argument) checks *our* credentials — the ``token`` —
  by calling ``/login`` with the secret key of the last Login (or ``""``): any answer of the
  login shape, ``ok`` true or false, proves the service accepted the token.
* ``destroy`` posts ``/destroy`` only when this instance logged in, then closes the client; it
  never raises (shutdown must finish when the service is gone) and logs a failure instead.
  Every MTA process calls ``/login`` and ``/destroy`` on its own, so they are not a session.
* The secret key and the token are never in ``repr`` nor in error details: text the service
  echoes back has them masked as ``***`` in every encoding (:mod:`mta.redact`; for secrets
  of four characters or more), and so has the ``partnerDetail`` of its results. A ``url``
  with ``user:password@`` is refused: ``url`` is not a secret option (listings show it), and
  httpx would send it as Basic auth in place of the bearer token.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

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
    SmsReportRequest,
    SmsResponse,
    SmsResult,
    SmsSendRequest,
    ThrottledError,
    TransientError,
)

log = logging.getLogger(__name__)


#: The largest ``max_batch`` an account may set: a bigger /send body is one a service is
#: unlikely to take in one request (and the worker splits batches anyway).
MAX_BATCH_LIMIT = 1000

#: The options of HTTP_OPTIONS the bridge keeps: ``url`` is redefined as required, and
#: ``callback_base_url`` is dropped (the bridge pulls receipts; no partner calls us back).
_KEPT = tuple(o for o in HTTP_OPTIONS if o.name not in ("url", "callback_base_url"))

_PATTERN = OptionSpec(
    "pattern",
    str,
    default=SendPattern.BATCH.value,
    choices=tuple(p.value for p in SendPattern),
    description="'batch': up to max_batch messages per /send; 'loop': one per call",
)
_MAX_BATCH = OptionSpec(
    "max_batch",
    int,
    default=100,
    minimum=1,
    maximum=MAX_BATCH_LIMIT,
    description=f"messages per /send and ids per /report (1 to {MAX_BATCH_LIMIT})",
)

BRIDGE_OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec(
        "url",
        str,
        required=True,
        description="base URL of the bridge service; POST <url>/login, /send, /report, /destroy",
    ),
    *_KEPT,
    OptionSpec(
        "token",
        str,
        secret=True,
        default="",
        description="sent as 'Authorization: Bearer <token>' so the service can authenticate us",
    ),
    _PATTERN,
    _MAX_BATCH,
)

_ERROR_KINDS: dict[str, type[AdapterError]] = {
    "transient": TransientError,
    "throttled": ThrottledError,
    "permanent": PermanentError,
    "auth": AuthError,
}
_API_STATUSES = {s.value: s for s in ApiStatus}
_REASONS = {"": "", "sender": REASON_SENDER, "retry": REASON_RETRY}
_LEGAL = ", ".join(_API_STATUSES)
_STR_FIELDS = ("partnerMessageId", "partnerStatus", "partnerDetail", "sendAt", "smsOperator")
_JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
_EMPTY_OBJECT = b"{}"
_GUIDE = "see docs/adapters/http-bridge.md"


def _without_userinfo(url: str) -> str:
    """The URL for logs and reprs: ``user:password@`` removed."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


class HttpBridgeAdapter(HttpAdapter):
    """Forwards Login/Send/Report/Destroy as MMP JSON to the service at the account's ``url``."""

    meta: ClassVar[AdapterMeta] = AdapterMeta(
        name="http-bridge",
        description=(
            "Forwards Login/Send/Report/Destroy as MMP JSON to an external adapter service "
            "(POST <url>/login, /send, /report, /destroy), written in any language."
        ),
        options=BRIDGE_OPTIONS,
        default_url="",
        # The class's are the options' defaults; an instance's meta has its account's.
        pattern=SendPattern(_PATTERN.default),
        max_batch=_MAX_BATCH.default,
        max_concurrency=8,
        receipts=ReceiptMode.PULL,
    )

    def __init__(self, options: Mapping[str, Any], context: AdapterContext | None = None) -> None:
        super().__init__(options, context)
        name = self.context.account_name
        if not self.base_url:
            raise ValueError(
                f"http-bridge account {name!r}: option 'url' is required (the bridge service's "
                "base URL, e.g. http://127.0.0.1:8090)"
            )
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(
                f"http-bridge account {name!r}: option 'url' must be an http:// or https:// URL, "
                f"got {_without_userinfo(self.base_url)!r}"
            )
        if "@" in parts.netloc:
            raise ValueError(
                f"http-bridge account {name!r}: option 'url' carries credentials (user:password@),"
                " which listings do not mask and which would replace the bearer token; "
                "give the service a 'token' instead"
            )
        # The base filled in the defaults and checked the bounds of BRIDGE_OPTIONS.
        pattern = SendPattern(self.options["pattern"])
        max_batch = int(self.options["max_batch"])
        # The worker and reporter read the instance's meta: this account's pattern and batch.
        self.__dict__["meta"] = replace(
            type(self).meta,
            pattern=pattern,
            max_batch=1 if pattern is SendPattern.LOOP else max_batch,
        )
        self._token = str(self.options["token"])
        self._secret_key = ""
        self._logged_in = False

    def __repr__(self) -> str:  # never the options, the token or the secret key
        name = self.context.account_name
        return f"<{type(self).__name__} account={name!r} url={_without_userinfo(self.base_url)!r}>"

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    # --- the wire -----------------------------------------------------------------------
    def secrets(self) -> set[str]:
        """The base's secrets (secret options: the token, the proxy password), plus the Login
        secret key: :meth:`scrub` masks them all, in every encoding."""
        found = super().secrets()
        if self._secret_key:
            found.add(self._secret_key)
        return found

    def _what(self, endpoint: str) -> str:
        return f"http-bridge account {self.context.account_name!r}: POST /{endpoint}"

    def _bad(self, endpoint: str, problem: str) -> PermanentError:
        """The error for a 200 answer that breaks the contract."""
        return PermanentError(
            f"{self._what(endpoint)}: the bridge service answered HTTP 200 but "
            f"{short(self.scrub(problem))}; fix the service ({_GUIDE})"
        )

    async def _post(self, endpoint: str, body: bytes) -> Any:
        """POST ``body`` to ``/<endpoint>``; the decoded JSON of a 200 answer, else the error
        kind the answer calls for (module docstring)."""
        what = self._what(endpoint)
        try:
            response = await self.client.post(f"/{endpoint}", content=body, headers=_JSON_HEADERS)
        except httpx.TimeoutException as exc:
            timeout = self.options["timeout_s"]
            raise TransientError(
                f"{what}: no answer within {timeout} s ({type(exc).__name__}); "
                "the bridge service is slow or stuck"
            ) from None
        except httpx.TransportError as exc:
            raise TransientError(
                f"{what}: cannot reach the bridge service at "
                f"{_without_userinfo(self.base_url)} ({type(exc).__name__}: "
                f"{self.scrub(str(exc))}); is it running?"
            ) from None
        if response.status_code != 200:
            raise self._error(what, response)
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            problem = f"its body is not JSON ({short(self.scrub(response.text), 120)!r})"
            raise self._bad(endpoint, problem) from None

    def _error(self, what: str, response: httpx.Response) -> AdapterError:
        """The error kind of a non-200 answer: its error object's kind, else its HTTP status."""
        status = response.status_code
        header_wait = retry_after_s(response.headers.get("Retry-After"))
        try:
            doc = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            doc = None
        error = doc.get("error") if isinstance(doc, dict) else None
        kind = error.get("kind") if isinstance(error, dict) else None
        cls = _ERROR_KINDS.get(kind) if isinstance(kind, str) else None
        if isinstance(error, dict) and cls is not None:
            raw_detail = error.get("detail")
            detail = short(self.scrub(raw_detail if isinstance(raw_detail, str) else ""))
            text = f"{what}: {kind} error from the bridge service (HTTP {status}): {detail}"
            if cls is ThrottledError:
                wait = error.get("retryAfter")
                if (
                    isinstance(wait, int | float)
                    and not isinstance(wait, bool)
                    and math.isfinite(wait)
                    and wait >= 0
                ):
                    return ThrottledError(text, float(wait))
                return ThrottledError(text, header_wait)
            return cls(text)
        unknown = f" (unknown error kind {kind!r})" if isinstance(kind, str) else ""
        text = (
            f"{what}: HTTP {status} from the bridge service without a valid error "
            f"object{unknown}: {short(self.scrub(response.text))}"
        )
        if status == 429:
            return ThrottledError(text, header_wait)
        if status >= 500 or status == 408:
            return TransientError(text)
        if status in (401, 403):
            return AuthError(text)
        return PermanentError(text)

    def _response(self, endpoint: str, doc: Any) -> SmsResponse:
        """An ``SmsResponse`` from a decoded answer, every field checked."""
        if not isinstance(doc, dict):
            raise self._bad(
                endpoint, f"its JSON is {type(doc).__name__}, not an SmsResponse object"
            )
        packet = doc.get("partnerPacketId")
        if packet is not None and not isinstance(packet, str):
            raise self._bad(endpoint, f"partnerPacketId is {type(packet).__name__}, not a string")
        raw_results = doc.get("results")
        if not isinstance(raw_results, list):
            raise self._bad(endpoint, "it has no 'results' list")
        results = []
        for i, raw in enumerate(raw_results):
            if not isinstance(raw, dict):
                raise self._bad(endpoint, f"results[{i}] is {type(raw).__name__}, not an object")
            status = raw.get("apiStatus")
            api_status = _API_STATUSES.get(status) if isinstance(status, str) else None
            if api_status is None:
                raise self._bad(
                    endpoint, f"results[{i}].apiStatus is {status!r}, not one of {_LEGAL}"
                )
            values: list[str] = []
            for name in _STR_FIELDS:
                value = raw.get(name)
                if value is None:
                    value = ""
                elif not isinstance(value, str):
                    raise self._bad(
                        endpoint, f"results[{i}].{name} is {type(value).__name__}, not a string"
                    )
                values.append(value)
            count = raw.get("smsMessageCount")
            if count is None:
                count = 0
            elif not isinstance(count, int) or isinstance(count, bool) or count < 0:
                raise self._bad(
                    endpoint, f"results[{i}].smsMessageCount is {count!r}, not an integer >= 0"
                )
            pid, partner_status, detail, send_at, operator = values
            if detail:
                detail = self.scrub(detail)
            reason = self._reason(endpoint, i, raw.get("reason"))
            results.append(
                SmsResult(pid, partner_status, detail, api_status, send_at, operator, count, reason)
            )
        return SmsResponse(packet or "", results)

    def _reason(self, endpoint: str, i: int, raw: Any) -> str:
        """``reason`` of a /send result: "sender" → REASON_SENDER, "retry" → REASON_RETRY;
        ignored on /report (module docstring)."""
        if endpoint != "send" or raw is None:
            return ""
        reason = _REASONS.get(raw) if isinstance(raw, str) else None
        if reason is None:
            raise self._bad(
                endpoint, f"results[{i}].reason is {raw!r}, not one of '', 'sender', 'retry'"
            )
        return reason

    # --- the Adapter interface ------------------------------------------------------------
    async def login(self, secret_key: str) -> bool:
        """``/login``: True when the service answers ``ok: true``; False when it answers
        ``ok: false`` or refuses us (auth kind, 401/403)."""
        self._secret_key = secret_key
        try:
            ok = await self._login(secret_key)
        except AuthError as exc:
            log.warning("http-bridge login refused: %r", exc.detail)
            return False
        self._logged_in = True
        return ok

    async def _login(self, secret_key: str) -> bool:
        doc = await self._post("login", orjson.dumps({"secretKey": secret_key}))
        ok = doc.get("ok") if isinstance(doc, dict) else None
        if not isinstance(ok, bool):
            raise self._bad("login", f'it is not {{"ok": true|false}} (ok is {ok!r})')
        return ok

    async def send(self, request: SmsSendRequest) -> SmsResponse:
        """``/send`` with the batch as it is; results[i] answers messages[i]."""
        return self._response("send", await self._post("send", orjson.dumps(request)))

    async def report(self, request: SmsReportRequest) -> SmsResponse:
        """``/report`` with the partner ids; the service answers those it knows."""
        return self._response("report", await self._post("report", orjson.dumps(request)))

    async def destroy(self) -> None:
        """``/destroy`` when this instance logged in, then the client closes; never raises."""
        try:
            if self._logged_in:
                self._logged_in = False
                doc = await self._post("destroy", _EMPTY_OBJECT)
                if not isinstance(doc, dict):
                    log.warning(
                        "%s: the bridge service answered %s, not an object ({}); %s",
                        self._what("destroy"),
                        type(doc).__name__,
                        _GUIDE,
                    )
        except AdapterError as exc:
            log.warning("%r (ignored: the account is shutting down)", exc.detail)
        finally:
            await super().destroy()

    async def test_credentials(self) -> bool:
        """Whether the service accepts our ``token``: ``/login`` answers in the login shape
        (ok true or false), not with an auth refusal. Unreachable or broken → False."""
        try:
            await self._login(self._secret_key)
        except AdapterError as exc:
            log.warning("http-bridge credentials test failed: %r", exc.detail)
            return False
        return True
