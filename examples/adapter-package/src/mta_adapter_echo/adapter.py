"""The echo adapter: the MTA's Login/Send/Report/Destroy, translated to the echo partner's API."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from mta.sdk import (
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

from mta_adapter_echo.partner import PARTNER, PartnerError

#: The partner's states, as the MTA's: intermediate ones stay WAITING.
STATES = {
    "DELIVERED": ApiStatus.DELIVERED,
    "ENROUTE": ApiStatus.WAITING,
    "UNKNOWN": ApiStatus.FAIL,
}


def error_kind(what: str, exc: PartnerError) -> AdapterError:
    """A partner error as the kind that tells the MTA what to do."""
    detail = f"echo {what}: {exc.status} {exc.text}"
    if exc.status == 429:
        return ThrottledError(detail, exc.retry_after)  # slow this account down
    if exc.status >= 500:
        return TransientError(detail)  # retry with backoff
    if exc.status in (401, 403):
        return AuthError(detail)  # credentials refused: FAIL, fix the account
    return PermanentError(detail)  # retrying cannot help: FAIL with the detail


class EchoAdapter:
    """Sends through the echo partner; the MTA builds one instance per account."""

    meta: ClassVar[AdapterMeta] = AdapterMeta(
        name="echo",
        description="Echo partner (in process): accepts, then delivers after delay_s.",
        options=(
            OptionSpec("api_key", str, required=True, secret=True, description="partner API key"),
            OptionSpec("delay_s", float, default=0.0, description="seconds until DELIVERED"),
        ),
        pattern=SendPattern.BATCH,
        max_batch=100,
        receipts=ReceiptMode.PULL,
    )

    def __init__(self, options: Mapping[str, Any], context: AdapterContext) -> None:
        self._api_key: str = options["api_key"]
        self._delay_s: float = options["delay_s"]
        self._account = context.account_name

    def __repr__(self) -> str:  # the default would be fine; never put the options in it
        return f"<EchoAdapter account={self._account!r}>"

    async def login(self, secret_key: str) -> bool:
        try:
            return await PARTNER.login(self._api_key, secret_key)
        except PartnerError as exc:
            raise error_kind("login", exc) from None

    async def send(self, request: SmsSendRequest) -> SmsResponse:
        pairs = [(m.mobileNumber, m.text) for m in request.messages]
        try:
            answers = await PARTNER.submit(self._api_key, pairs, self._delay_s)
        except PartnerError as exc:
            raise error_kind("send", exc) from None
        # results[i] answers messages[i]: the partner answers in order, one per message.
        return SmsResponse(
            results=[
                SmsResult(a.message_id, a.status, "", ApiStatus.OK)
                if a.status == "ACCEPTED"
                else SmsResult("", a.status, f"echo: {a.error}", ApiStatus.FAIL)
                for a in answers
            ]
        )

    async def report(self, request: SmsReportRequest) -> SmsResponse:
        try:
            states = await PARTNER.status(self._api_key, request.messages)
        except PartnerError as exc:
            raise error_kind("report", exc) from None
        return SmsResponse(
            results=[
                SmsResult(
                    partnerMessageId=pid,
                    partnerStatus=state,
                    partnerDetail="echo: no such message" if state == "UNKNOWN" else "",
                    apiStatus=STATES.get(state, ApiStatus.WAITING),
                )
                for pid, state in states.items()
            ]
        )

    async def destroy(self) -> None:
        pass  # nothing to close; an HTTP adapter closes its client here
