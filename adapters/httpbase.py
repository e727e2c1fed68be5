"""The shared base of HTTP partner adapters: one httpx client per account, errors mapped to kinds.

Every HTTP adapter gets, from this base:

* the common options — ``url`` (the partner's base URL, defaulting to ``meta.default_url``,
  as Directory Manager's Url property), ``timeout_s``, ``http2``, ``max_connections``, the
  proxy (``proxy_url``, ``proxy_username``, ``proxy_password``) and ``callback_base_url``
  (our public base URL; the partner is told ``<callback_base_url>/webhooks/<account name>``);
* one long-lived :class:`httpx.AsyncClient` per account (connection pool, keep-alive,
  timeouts, optional HTTP/2, the proxy);
* :meth:`HttpAdapter.call`, which names the account in every error detail, masks every secret
  in it in every encoding (:meth:`HttpAdapter.scrub`, :mod:`mta.redact`), and maps the
  outcome to the error kinds of :mod:`mta.adapter`:
  HTTP 429 → :class:`ThrottledError` (``Retry-After`` honoured), 5xx, timeouts and network
  errors → :class:`TransientError`, 401/403 → :class:`AuthError`, other 4xx →
  :class:`PermanentError` with the partner's own error text in the detail;
* ``test_connection`` / ``test_proxy`` for real, ``destroy`` closing the client.

Subclasses declare ``meta`` (its ``options`` = :data:`HTTP_OPTIONS` + their own) and implement
``login``, ``send``, ``report`` (and ``webhook`` when the partner pushes receipts).
"""

from __future__ import annotations

import email.utils
import hmac
import logging
import re
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import httpx

from mta.adapter import resolve_options
from mta.config import proxy_url_problem
from mta.redact import redact
from mta.sdk import (
    AdapterContext,
    AdapterMeta,
    AuthError,
    OptionSpec,
    PermanentError,
    ThrottledError,
    TransientError,
    WebhookError,
    WebhookRequest,
)

# httpx logs every request URL at INFO, and some partners put credentials in URLs (Twilio's
# Account SID in the path, Vonage's keys in the query): keep those lines out of the logs.
logging.getLogger("httpx").setLevel(logging.WARNING)

HTTP_OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec("url", str, default="", description="partner base URL ('' = the production one)"),
    OptionSpec(
        "timeout_s", float, default=10.0, minimum=0.1, description="per-request timeout, seconds"
    ),
    OptionSpec("http2", bool, default=False, description="use HTTP/2"),
    OptionSpec("max_connections", int, default=20, minimum=1, description="connection pool size"),
    OptionSpec("proxy_url", str, default="", description="HTTP(S) proxy, e.g. http://proxy:3128"),
    OptionSpec("proxy_username", str, default="", description="proxy user"),
    OptionSpec("proxy_password", str, secret=True, default="", description="proxy password"),
    OptionSpec(
        "callback_base_url",
        str,
        default="",
        description="our public base URL; partners push receipts to <it>/webhooks/<account>",
    ),
)

#: Option names whose values are user names (paired with a secret in Basic auth).
_USERISH = re.compile(r"user|login|sid|system_id|client_id|account")

#: Longest partner error text kept in a detail.
DETAIL_MAX = 300


def retry_after_s(value: str | None) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def short(text: str, limit: int = DETAIL_MAX) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class HttpAdapter:
    """Base class of the HTTP partner adapters (see the module docstring)."""

    meta: ClassVar[AdapterMeta]

    def __init__(self, options: Mapping[str, Any], context: AdapterContext | None = None) -> None:
        self.context = context or AdapterContext(self.meta.name, 0)
        # Each option's default and bounds come from its OptionSpec: the subclass's, else
        # HTTP_OPTIONS' for a common option the subclass does not declare.
        declared = {spec.name for spec in self.meta.options}
        specs = (*self.meta.options, *(o for o in HTTP_OPTIONS if o.name not in declared))
        try:
            self.options = resolve_options(options, specs)
        except ValueError as exc:
            raise ValueError(
                f"{self.meta.name} account {self.context.account_name!r}: {exc}"
            ) from None
        self.base_url = (self.options["url"] or self.meta.default_url).rstrip("/")
        self._client: httpx.AsyncClient | None = None
        problem = proxy_url_problem(str(self.options["proxy_url"]))
        if problem:
            raise ValueError(
                f"{self.meta.name} account {self.context.account_name!r}: option proxy_url: "
                f"{problem}"
            )

    def __repr__(self) -> str:  # never the options: some are secrets
        name = self.context.account_name
        return f"<{type(self).__name__} account={name!r} url={self.base_url!r}>"

    # --- what subclasses customise ----------------------------------------------------
    def auth(self) -> httpx.Auth | None:
        """httpx auth for every request (e.g. Basic); None when headers carry it."""
        return None

    def auth_headers(self) -> dict[str, str]:
        """Headers sent with every request (e.g. ``Authorization: App <key>``)."""
        return {}

    def error_text(self, response: httpx.Response) -> str:
        """The partner's own error text from an error response (default: the body)."""
        return response.text

    def secrets(self) -> set[str]:
        """Every secret this account's requests carry: the secret options' values (the proxy
        password among them); subclasses add what they learn later (a Login secret key)."""
        return {
            value
            for spec in self.meta.options
            if spec.secret and isinstance(value := self.options.get(spec.name), str) and value
        }

    def users(self) -> set[str]:
        """Values that may be paired with a secret as ``user:secret`` (Basic auth, userinfo)."""
        return {
            value
            for spec in self.meta.options
            if not spec.secret
            and _USERISH.search(spec.name)
            and isinstance(value := self.options.get(spec.name), str)
            and value
        }

    def scrub(self, text: str) -> str:
        """``text`` with every secret of :meth:`secrets` masked as ``***`` in every encoding
        (plain, percent-, form-, JSON-encoded, base64 alone or in ``user:secret``) and any
        credential-looking value masked (:func:`mta.redact.redact`): partners echo
        credentials back in errors and URLs."""
        return redact(text, self.secrets(), self.users())

    def check_webhook_token(self, request: WebhookRequest, where: str) -> None:
        """For partners that do not sign their callbacks: when the account sets the option
        ``webhook_token``, refuse (403) a call whose ``?token=`` is missing or different
        (compared in constant time)."""
        token = str(self.options.get("webhook_token") or "")  # not every adapter has it
        if token and not hmac.compare_digest(
            request.query.get("token", "").encode(), token.encode()
        ):
            raise WebhookError(
                403,
                f"{where}: missing or wrong ?token= query parameter (the account's webhook_token)",
            )

    def webhook_closed_reason(self) -> str | None:
        """Why ``mta http`` must not serve this account's webhook (an instruction to the
        operator), or None when its calls can be authenticated.

        An adapter declares the option ``webhook_token`` exactly when its partner does not sign
        callbacks (Infobip, Clickatell): without a token anyone could post a forged receipt, so
        such an account gets no webhook until ``webhook_token`` is set."""
        if self.meta.option("webhook_token") is None or self.options.get("webhook_token"):
            return None
        return (
            f"{self.meta.name} does not sign its callbacks, so without a token anyone could "
            "forge a receipt: set webhook_token (a long random secret) in the account's "
            "[account.options] and give the partner the webhook URL with ?token=<webhook_token>"
        )

    # --- the client -------------------------------------------------------------------
    @property
    def callback_url(self) -> str | None:
        base = str(self.options["callback_base_url"])
        if not base:
            return None
        return f"{base.rstrip('/')}/webhooks/{self.context.account_name}"

    def _proxy(self) -> httpx.Proxy | None:
        url = str(self.options["proxy_url"])
        if not url:
            return None
        user = str(self.options["proxy_username"])
        password = str(self.options["proxy_password"])
        return httpx.Proxy(url, auth=(user, password) if user else None)

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            limit = int(self.options["max_connections"])
            self._client = httpx.AsyncClient(
                base_url=self.base_url,
                timeout=httpx.Timeout(float(self.options["timeout_s"])),
                limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
                http2=bool(self.options["http2"]),
                proxy=self._proxy(),
                auth=self.auth(),
                headers={"User-Agent": "sms-mta", **self.auth_headers()},
                trust_env=False,  # the account's proxy settings, not the process environment
            )
        return self._client

    async def call(
        self, method: str, path: str, *, ok: tuple[int, ...] = (200, 201, 202), **kwargs: Any
    ) -> httpx.Response:
        """One request; returns the response when its status is in ``ok``, else raises the
        error kind its status calls for (module docstring)."""
        what = f"{self.meta.name} account {self.context.account_name!r}: {method} {path}"
        try:
            response = await self.client.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise TransientError(f"{self.scrub(what)}: timed out ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise TransientError(
                f"{self.scrub(what)}: {type(exc).__name__}: {short(self.scrub(str(exc)))}"
            ) from None
        if response.status_code in ok:
            return response
        status = response.status_code
        # Scrubbed before it is shortened: a cut would leave part of a secret unrecognised.
        text = short(self.scrub(self.error_text(response)))
        detail = f"{self.scrub(what)}: HTTP {status}: {text}"
        if status == 429:
            raise ThrottledError(detail, retry_after_s(response.headers.get("Retry-After")))
        if status >= 500 or status == 408:
            raise TransientError(detail)
        if status in (401, 403):
            raise AuthError(detail)
        raise PermanentError(detail)

    # --- Adapter members common to HTTP partners ----------------------------------------
    async def destroy(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def test_connection(self) -> bool:
        """Any HTTP answer from the partner's base URL counts: the network path works."""
        try:
            await self.client.request("HEAD", "/")
        except httpx.HTTPError:
            return False
        return True

    async def test_proxy(self) -> bool:
        """True when no proxy is configured, else whether the partner answers through it."""
        if not self.options["proxy_url"]:
            return True
        return await self.test_connection()
