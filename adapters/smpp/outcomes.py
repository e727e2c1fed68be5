"""What an SMPP message's parts came to, as one result: submits answered, query_sm answers.

A message of a Send is a :class:`Job` of one or more :class:`Part` (one submit_sm each). When
the batch's submits are answered, :func:`job_result` turns the parts' states into the message's
SmsResult (docs/protocols.md §1.8); :func:`from_states` does the same for query_sm answers.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Final

from mta.sdk import REASON_RETRY, REASON_SENDER, ApiStatus, SmsMessage, SmsResult
from mta.smpp.pdu import CommandStatus, QuerySmResp, SubmitSm, status_name
from mta.smpp.receipt import MessageState, api_status, stat_name

#: Refusals after which a message no part of which was accepted may be sent again later.
RETRYABLE_REFUSALS: Final = frozenset(
    {"ESME_RTHROTTLED", "ESME_RMSGQFUL", "ESME_RSYSERR", "ESME_RX_T_APPN"}
)
SENDER_STATUSES: Final = frozenset(
    {CommandStatus.ESME_RINVSRCADR, CommandStatus.ESME_RINVSRCTON, CommandStatus.ESME_RINVSRCNPI}
)

# part outcomes
PENDING, OK, FAIL, UNKNOWN, REFUSED = range(5)


@dataclass(eq=False, slots=True)
class Part:
    """One submit_sm of a message and what came of it."""

    pdu: SubmitSm
    number: int
    state: int = PENDING
    message_id: str = ""
    pid: str = ""  # message_id normalised (IdRules.submitted)
    status: str = ""
    detail: str = ""
    status_code: int = 0
    throttled: bool = False
    #: (unit, session, None) while its first submit_sm is in flight, (unit, session, answer or
    #: error) once answered other than accepted (Send places the parts itself; see
    #: SmppAdapter.send)
    flight: Any = None


class Flights:
    """The first submit_sm of each part of a Send, in flight: a wait until all are answered."""

    __slots__ = ("_all", "_answered", "started")

    def __init__(self) -> None:
        self.started = 0
        self._answered = 0
        self._all: asyncio.Future[None] | None = None

    def answered(self) -> None:
        self._answered += 1
        if self._answered >= self.started and self._all is not None and not self._all.done():
            self._all.set_result(None)

    async def wait(self) -> None:
        """Return once every submit started so far is answered (or failed)."""
        if self._answered < self.started:
            self._all = asyncio.get_running_loop().create_future()
            await self._all


@dataclass(eq=False, slots=True)
class Job:
    """One message of a Send: its parts, or the result it got before any submit."""

    message: SmsMessage
    parts: list[Part] = field(default_factory=list)
    result: SmsResult | None = None  # set when the message failed before any submit


def job_result(job: Job) -> SmsResult:
    """One message's result from what its parts came to (the first part's id is its
    partnerMessageId; a refused, failed or unknown part decides the FAIL and its reason)."""
    if job.result is not None:
        return job.result
    parts = job.parts
    total = len(parts)
    first = parts[0].pid
    if parts[0].state == OK and (total == 1 or all(p.state == OK for p in parts)):
        return SmsResult(
            partnerMessageId=first,
            partnerStatus="ESME_ROK",
            apiStatus=ApiStatus.OK,
            smsMessageCount=total,
        )
    where = f"part {{}}/{total}: " if total > 1 else ""
    failed = next((p for p in parts if p.state == FAIL), None)
    if failed is not None:
        result = fail(failed.status, where.format(failed.number) + failed.detail)
        if failed.status_code in SENDER_STATUSES:
            result.reason = REASON_SENDER
        result.partnerMessageId = first
        result.smsMessageCount = total
        return result
    unknown = next((p for p in parts if p.state == UNKNOWN), None)
    if unknown is not None:
        result = fail("UNKNOWN", where.format(unknown.number) + unknown.detail)
        result.partnerMessageId = first
        result.smsMessageCount = total
        return result
    refused = next(p for p in parts if p.state == REFUSED)
    accepted = sum(1 for p in parts if p.state == OK)
    detail = (
        where.format(refused.number)
        + f"{refused.status}: {refused.detail}; "
        + (
            f"{accepted} of its {total} parts were accepted, so it cannot be resent whole"
            if accepted
            else "never accepted by the SMSC while other messages of its batch were: "
            "safe to send again"
        )
    )
    result = fail(refused.status or "NOT_SUBMITTED", detail)
    result.partnerMessageId = first
    result.smsMessageCount = total
    if not accepted and refused.status in ("NOT_SUBMITTED", *RETRYABLE_REFUSALS):
        result.reason = REASON_RETRY  # never accepted: the worker sends it again later
    return result


def add_records(out: dict[str, dict[str, Any]], job: Job, pid: str, now: float) -> None:
    """What the receipt book keeps of a submitted message (its parts' SMSC ids, its source),
    written into *out* (the records of a Send's messages)."""
    first = job.parts[0].pdu
    record: dict[str, Any] = {
        "t": now,
        "r": job.parts[0].message_id,
        "s": [first.source_addr_ton, first.source_addr_npi, first.source_addr],
    }
    out[pid] = record
    if len(job.parts) > 1:
        pids = [p.pid for p in job.parts]
        record["p"] = pids
        record["pr"] = [p.message_id for p in job.parts]
        for n, part_pid in enumerate(pids[1:], 2):
            out[part_pid] = {"f": pid, "i": n, "n": len(pids)}


def unknown(part: Part, why: str) -> None:
    """*part*'s submit_sm was written but its answer lost: never sent again (a duplicate)."""
    part.state, part.status = UNKNOWN, "UNKNOWN"
    part.detail = (
        f"{why}; the submit_sm was written, so the SMSC may have accepted (and delivered) "
        "it: not sent again, to avoid a duplicate"
    )


def refused(part: Part, status: int, detail: str) -> None:
    part.state, part.status_code, part.status = REFUSED, status, status_name(status)
    part.detail = detail


def fail(status: str, detail: str) -> SmsResult:
    return SmsResult(partnerStatus=status, partnerDetail=detail, apiStatus=ApiStatus.FAIL)


def waiting(pid: str) -> SmsResult:
    return SmsResult(partnerMessageId=pid, partnerStatus="ENROUTE", apiStatus=ApiStatus.WAITING)


def from_states(pid: str, answers: list[QuerySmResp], accepted: ApiStatus) -> SmsResult:
    """One result from the query_sm answers of a message's parts (as receipts combine)."""
    total = len(answers)
    statuses = [api_status(a.message_state, accepted=accepted) for a in answers]
    pick = 0
    if ApiStatus.FAIL in statuses:
        pick = statuses.index(ApiStatus.FAIL)
        status = ApiStatus.FAIL
    elif all(s == ApiStatus.DELIVERED for s in statuses):
        status = ApiStatus.DELIVERED
    elif all(s.final for s in statuses):
        pick = next(i for i, s in enumerate(statuses) if s != ApiStatus.DELIVERED)
        status = statuses[pick]
    else:
        pick = next(i for i, s in enumerate(statuses) if not s.final)
        status = ApiStatus.WAITING
    answer = answers[pick]
    try:
        stat = stat_name(MessageState(answer.message_state))
    except ValueError:
        stat = f"STATE_{answer.message_state}"
    where = f"part {pick + 1}/{total} " if total > 1 else ""
    detail = f"query_sm: {where}{stat} error_code {answer.error_code}"
    if answer.final_date:
        detail += f" final_date {answer.final_date}"
    return SmsResult(
        partnerMessageId=pid,
        partnerStatus=stat,
        partnerDetail=detail,
        apiStatus=status,
        smsMessageCount=total,
    )
