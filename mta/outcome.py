"""What one worker pass over a batch decided, message by message, before anything is written.

Each message of a batch ends the pass in exactly one of these ways, each a plain method of
:class:`BatchPass` that unit tests reach without a broker:

* a final result (FAIL: invalid, expired, refused; or a final the partner gave at once);
* an OK with a pending record and its first poll (the reporter follows it to its final);
* held for its ``startTime`` (decided by the worker, which keeps the raw message);
* a delayed retry (an attempt spent), a rate-limit deferral or a park (no attempt spent).

Every way marks the message (``o`` done, ``r`` to a retry queue, ``h`` held), so a redelivered
batch knows what was decided. The worker then writes markers, pending records and report
bodies in one MULTI/EXEC (:class:`mta.store.BatchRecord`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from mta.contract import (
    MAX_DETAIL,
    ApiStatus,
    ReportResult,
    SmsResult,
    ValidMessage,
    raw_correlation,
    with_note,
)
from mta.store import MARK_DONE, MARK_RETRY, pack_pending

__all__ = ["BatchPass", "Limits", "OutgoingMessage"]

_OK = ApiStatus.OK
_FAIL = ApiStatus.FAIL
_FINAL = frozenset(status for status in ApiStatus if status.final)


@dataclass(frozen=True, slots=True)
class Limits:
    """The settings a pass decides with."""

    max_wait_ms: int  # MTA_MAX_WAIT_S: the longest a message is followed, or parked
    poll_first_ms: int  # MTA_POLL_FIRST_S: the first poll after an OK
    max_attempts: int  # MTA_MAX_ATTEMPTS: Sends tried through the delayed-retry queues


@dataclass(slots=True)
class OutgoingMessage:
    """One message of a batch on its way through the worker."""

    message_id: str
    raw: Any
    checked: ValidMessage
    note: str = ""  # said in the result's partnerDetail: failover, fallback sender
    fallback_tried: bool = False


@dataclass(slots=True)
class BatchPass:
    """What one pass over a batch decided, before it is written and published."""

    batch_id: str
    lane: str
    attempt: int
    now: float
    send_at: str
    limits: Limits
    released: bool = False  # held messages whose startTime came: never held again
    finals: list[ReportResult] = field(default_factory=list)
    oks: list[ReportResult] = field(default_factory=list)
    markers: dict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))
    pending: dict[str, bytes] = field(default_factory=dict)
    partners: dict[str, dict[str, str]] = field(default_factory=dict)  # pushed-receipt accounts
    due: dict[str, int] = field(default_factory=dict)
    held: dict[str, int] = field(default_factory=dict)
    held_data: dict[str, bytes] = field(default_factory=dict)
    retry: list[OutgoingMessage] = field(default_factory=list)
    deferred: list[OutgoingMessage] = field(default_factory=list)  # rate-limited: no attempt spent
    parked: list[OutgoingMessage] = field(
        default_factory=list
    )  # account unavailable: no attempt spent
    since_ms: int = 0  # when the MTA first handled these messages
    size: int = 0  # messages in the AMQP message
    whole: set[str] = field(default_factory=set)  # batches begun whole (their '*' marker)
    suspect: bool = False  # the body has a surrogate escape: check each message for one
    tally: dict[tuple[str, str], int] | None = None  # results by (account, apiStatus): metrics

    def mark(self, message_id: str, marker: str) -> None:
        batch, index = message_id.rsplit(":", 1)
        self.markers[batch][index] = marker

    # --- finals and OKs -----------------------------------------------------------------
    def fail_raw(self, message_id: str, raw: Any, detail: str, status: str = "INVALID") -> None:
        """FAIL a message that never became an :class:`OutgoingMessage` (it did not validate)."""
        number, account_id, sender_id, sms_type = raw_correlation(raw)
        self.finals.append(
            ReportResult(
                messageId=message_id,
                mobileNumber=number,
                accountId=account_id,
                senderId=sender_id,
                smsType=sms_type,
                apiStatus=_FAIL,
                partnerStatus=status,
                partnerDetail=detail[:MAX_DETAIL],
            )
        )
        self.mark(message_id, MARK_DONE)
        if self.tally is not None:
            key = ("", _FAIL)
            self.tally[key] = self.tally.get(key, 0) + 1

    def fail(self, item: OutgoingMessage, detail: str, status: str = "", account: str = "") -> None:
        self.result(item, SmsResult(partnerStatus=status, partnerDetail=detail), account)

    def result(
        self, item: OutgoingMessage, result: SmsResult, account: str = "", pushes: bool = False
    ) -> None:
        """Turn an adapter result into a report result; OK ones also get a pending record (and,
        when the account's partner ``pushes`` receipts, a partner-index entry).

        Runs for every message, so it avoids keyword calls and repeated arithmetic.
        """
        msg = item.checked.message
        message_id = item.message_id
        status = result.apiStatus
        final = status in _FINAL
        report = ReportResult(
            message_id,
            msg.mobileNumber,
            msg.accountId,
            msg.senderId,
            msg.smsType,
            status if final else _OK,
            result.partnerMessageId,
            result.partnerStatus,
            with_note(result.partnerDetail, item.note)[:MAX_DETAIL],
            result.sendAt or ("" if final else self.send_at),
            result.smsOperator,
            result.smsMessageCount or item.checked.segments,
        )
        self.mark(message_id, MARK_DONE)
        tally = self.tally
        if tally is not None:
            key = (account, report.apiStatus)
            tally[key] = tally.get(key, 0) + 1
        if final:
            self.finals.append(report)
            return
        # OK (or WAITING): a final will follow, found by the reporter from the pending record.
        self.oks.append(report)
        now_ms = int(self.now * 1000)
        limits = self.limits
        deadline = now_ms + limits.max_wait_ms
        if item.checked.expire_at is not None:
            deadline = min(deadline, int(item.checked.expire_at * 1000))
        self.pending[message_id] = pack_pending(
            account,
            report.partnerMessageId,
            msg.mobileNumber,
            msg.accountId,
            msg.senderId,
            msg.smsType,
            deadline,
            now_ms,
            report.smsMessageCount,
            report.sendAt,
            "",
            self.attempt + 1,
            *((item.note[:MAX_DETAIL],) if item.note else ()),
        )
        self.due[message_id] = min(now_ms + limits.poll_first_ms, deadline)
        if pushes:  # its receipt will be pushed: index it so the receipt makes it due at once
            index = self.partners.get(account)
            if index is None:
                index = self.partners[account] = {}
            index[report.partnerMessageId] = message_id

    # --- later ------------------------------------------------------------------------
    def retry_later(self, items: list[OutgoingMessage], detail: str, account: str = "") -> bool:
        """To a delayed-retry queue, an attempt spent; or FAIL (``RETRIES_EXHAUSTED``) when
        ``MTA_MAX_ATTEMPTS`` are used up. True when the items were queued for a retry."""
        if self.attempt + 1 >= self.limits.max_attempts:
            self.give_up(items, f"gave up after {self.attempt + 1} attempts: {detail}", account)
            return False
        self.later(self.retry, items)
        return True

    def park(self, items: list[OutgoingMessage], detail: str, account: str = "") -> None:
        """The account cannot take messages now (down, or its circuit open): they wait in the
        longest retry tier without spending an attempt — attempts count failed Sends — so they
        come back within that tier's delay once the account is back, for at most
        ``MTA_MAX_WAIT_S`` from when the MTA first took them."""
        waited_s = self.now - self.since_ms / 1000
        if waited_s * 1000 >= self.limits.max_wait_ms:
            self.give_up(
                items, f"gave up after {waited_s:.0f} s (MTA_MAX_WAIT_S): {detail}", account
            )
        else:
            self.later(self.parked, items)

    def give_up(self, items: list[OutgoingMessage], detail: str, account: str = "") -> None:
        for item in items:
            self.fail(item, detail, "RETRIES_EXHAUSTED", account)

    def later(self, queue: list[OutgoingMessage], items: list[OutgoingMessage]) -> None:
        """Items go to a retry queue: marked 'r', which their republished copy takes over."""
        queue.extend(items)
        for item in items:
            self.mark(item.message_id, MARK_RETRY)

    # --- the record -------------------------------------------------------------------
    def compact_markers(self) -> dict[str, dict[str, str]]:
        """A batch begun whole and fully decided in this pass: '*' = done, plus the exceptions."""
        markers = self.markers
        for batch in self.whole:
            fields = markers.get(batch)
            if fields is not None and len(fields) == self.size:
                compact = {i: m for i, m in fields.items() if m != MARK_DONE}
                compact["*"] = MARK_DONE
                markers[batch] = compact
        return markers
