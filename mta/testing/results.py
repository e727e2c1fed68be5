"""What makes an adapter's answer legal: an SmsResponse; each result's state, fields, reason."""

from __future__ import annotations

import re
from typing import Any, Protocol

from mta.contract import REASON_RETRY, REASON_SENDER, ApiStatus, SmsResponse, SmsResult

__all__ = [
    "REPORT_STATUSES",
    "SEND_STATUSES",
    "UNKNOWN_STATUSES",
    "Problems",
    "plural",
    "response_results",
    "valid_result",
]

SEND_STATUSES = frozenset({ApiStatus.OK, ApiStatus.FAIL})
REPORT_STATUSES = frozenset(
    {ApiStatus.DELIVERED, ApiStatus.FAIL, ApiStatus.TIMEOUT, ApiStatus.WAITING}
)
UNKNOWN_STATUSES = frozenset({ApiStatus.WAITING, ApiStatus.FAIL})
REASONS = (REASON_SENDER, REASON_RETRY)
_MMP_TIME = re.compile(r"[0-9]{12}")


class Problems(Protocol):
    """Where a check collects what is wrong."""

    def problem(self, text: str) -> None: ...


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def response_results(check: Problems, what: str, response: Any) -> list[Any] | None:
    """The results list of an answer, or None (with a problem) when it is no SmsResponse."""
    if not isinstance(response, SmsResponse):
        check.problem(
            f"{what} answered a {type(response).__name__}, not an mta.contract.SmsResponse"
        )
        return None
    if not isinstance(response.results, list):
        check.problem(f"{what}: results is a {type(response.results).__name__}, not a list")
        return None
    if not isinstance(response.partnerPacketId, str):
        check.problem(f"{what}: partnerPacketId is not a str")
    return response.results


def valid_result(
    check: Problems,
    where: str,
    result: Any,
    allowed: frozenset[ApiStatus],
    call: str,
    *,
    sending: bool = False,
) -> bool:
    """Check one result's shape, state and reason; False when it cannot be used further.
    ``sending``: it answers send(), the only call whose ``reason`` the core reads."""
    if not isinstance(result, SmsResult):
        check.problem(f"{where} is a {type(result).__name__}, not an mta.contract.SmsResult")
        return False
    status = result.apiStatus
    if not isinstance(status, ApiStatus):
        check.problem(
            f"{where}.apiStatus is {status!r} ({type(status).__name__}); use the members "
            "of mta.contract.ApiStatus"
        )
        return False
    legal = ", ".join(s.value for s in ApiStatus if s in allowed)
    if status not in allowed:
        check.problem(f"{where}.apiStatus is {status.value}; {call} may answer only {legal}")
        return False
    for name in ("partnerMessageId", "partnerStatus", "partnerDetail", "sendAt", "smsOperator"):
        value = getattr(result, name)
        if not isinstance(value, str):
            check.problem(f"{where}.{name} is a {type(value).__name__}, not a str")
    if isinstance(result.sendAt, str) and result.sendAt and not _MMP_TIME.fullmatch(result.sendAt):
        check.problem(f"{where}.sendAt is {result.sendAt!r}; expected yyyyMMddHHmm or ''")
    _check_reason(check, where, result, sending)
    count = result.smsMessageCount
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        check.problem(f"{where}.smsMessageCount is {count!r}; expected an int >= 0 (0 = unknown)")
    return True


def _check_reason(check: Problems, where: str, result: SmsResult, sending: bool) -> None:
    """``reason`` is '', REASON_SENDER or REASON_RETRY, only on a FAIL answering send(), and
    REASON_RETRY only for a message the partner never accepted (no partnerMessageId)."""
    reason = getattr(result, "reason", "")
    if not reason:
        return
    if reason not in REASONS:
        check.problem(
            f"{where}.reason is {reason!r}; '' or mta.contract.REASON_SENDER ({REASON_SENDER!r}) "
            f"or REASON_RETRY ({REASON_RETRY!r})"
        )
    elif result.apiStatus is not ApiStatus.FAIL:
        check.problem(
            f"{where}.reason is set, but apiStatus is {result.apiStatus.value}; only FAIL has one"
        )
    elif not sending:
        check.problem(
            f"{where}.reason is {reason!r} on a report() answer; the core reads a reason only on "
            "send() results (fallback sender, send again later), so this FAIL is final as it is"
        )
    elif reason == REASON_RETRY and result.partnerMessageId:
        check.problem(
            f"{where}.reason is REASON_RETRY, yet partnerMessageId is "
            f"{result.partnerMessageId!r}: an id says the partner accepted the message, and the "
            "worker would send it again (the recipient gets it twice); REASON_RETRY is only for "
            "a message the partner never accepted"
        )
