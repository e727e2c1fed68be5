"""The decisions of one pass over a batch (mta.outcome), without a broker."""

from __future__ import annotations

from datetime import UTC

import orjson

from mta.contract import ApiStatus, Rules, SmsResult, check_message
from mta.outcome import BatchPass, Limits, OutgoingMessage
from mta.store import MARK_DONE, MARK_RETRY, Pending

LIMITS = Limits(max_wait_ms=60_000, poll_first_ms=10_000, max_attempts=3)
RULES = Rules(tz=UTC)


def item(index: int, **fields: object) -> OutgoingMessage:
    raw = {"mobileNumber": "905332141354", "text": f"hi {index}", **fields}
    return OutgoingMessage(f"b:{index}", raw, check_message(raw, RULES))


def a_pass(attempt: int = 0, now: float = 1_000.0, since_ms: int = 0) -> BatchPass:
    work = BatchPass("b", "bulk", attempt, now, "202611271000", LIMITS, size=3)
    work.since_ms = since_ms or int(now * 1000)
    return work


def test_an_ok_gets_a_pending_record_its_first_poll_and_a_partner_index_entry() -> None:
    work = a_pass()
    work.result(item(0), SmsResult("p-1", "ACCEPTED", "", ApiStatus.OK), "acct", pushes=True)
    work.result(item(1), SmsResult("p-2", "ACCEPTED", "", ApiStatus.OK), "acct")
    assert [r.apiStatus for r in work.oks] == [ApiStatus.OK, ApiStatus.OK] and not work.finals
    record = Pending.unpack(work.pending["b:0"])
    assert (record.account, record.partner_id, record.attempts) == ("acct", "p-1", 1)
    assert work.due["b:0"] == 1_000_000 + LIMITS.poll_first_ms
    assert work.partners == {"acct": {"p-1": "b:0"}}  # only the pushing account's message
    assert work.markers["b"] == {"0": MARK_DONE, "1": MARK_DONE}


def test_the_first_poll_is_never_after_expire_time() -> None:
    work = a_pass(now=1_700_000_000.0)
    work.limits = Limits(max_wait_ms=600_000, poll_first_ms=300_000, max_attempts=3)
    soon = item(0, expireTime="202311142214")  # 1,700,000,040 s: 40 s after now
    work.result(soon, SmsResult("p", "", "", ApiStatus.OK), "a")
    assert work.due["b:0"] == Pending.unpack(work.pending["b:0"]).deadline_ms == 1_700_000_040_000


def test_a_note_goes_before_the_detail_and_into_the_pending_record() -> None:
    work = a_pass()
    noted = item(0)
    noted.note = "sent with fallback sender 'INFO'"
    work.result(noted, SmsResult("p", "", "queued", ApiStatus.OK), "a")
    assert work.oks[0].partnerDetail == "sent with fallback sender 'INFO'; queued"
    assert Pending.unpack(work.pending["b:0"]).note == "sent with fallback sender 'INFO'"


def test_retries_spend_attempts_and_give_up_at_the_last() -> None:
    work = a_pass(attempt=1)
    assert work.retry_later([item(0)], "HTTP 503") is True
    assert work.markers["b"]["0"] == MARK_RETRY and len(work.retry) == 1
    last = a_pass(attempt=2)
    assert last.retry_later([item(0)], "HTTP 503") is False
    [final] = last.finals
    assert final.partnerStatus == "RETRIES_EXHAUSTED" and "after 3 attempts" in final.partnerDetail


def test_parking_spends_no_attempt_until_max_wait() -> None:
    work = a_pass(attempt=2)
    work.park([item(0)], "account 'a' is down")
    assert len(work.parked) == 1 and not work.finals
    late = a_pass(attempt=0, now=1_000.0, since_ms=1_000_000 - LIMITS.max_wait_ms)
    late.park([item(0)], "account 'a' is down")
    assert not late.parked and late.finals[0].partnerStatus == "RETRIES_EXHAUSTED"


def test_a_batch_decided_whole_is_recorded_as_one_field() -> None:
    work = a_pass()
    work.whole.add("b")
    for n in range(3):
        work.result(item(n), SmsResult(f"p{n}", "", "", ApiStatus.OK), "a")
    work.later(work.retry, [])
    assert work.compact_markers() == {"b": {"*": MARK_DONE}}


def test_a_failed_raw_message_is_reportable_whatever_it_held() -> None:
    work = a_pass()
    work.fail_raw("b:0", {"mobileNumber": "\ud800" * 100, "accountId": 2**70}, "bad")
    [final] = work.finals
    orjson.dumps(final)
    assert final.accountId == 0 and len(final.mobileNumber) <= 32
