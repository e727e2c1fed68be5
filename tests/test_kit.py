"""The adapter conformance kit (mta.testing): it passes good adapters, fails broken ones, and
the example adapter package is discovered by entry point and passes it."""

from __future__ import annotations

import asyncio
import importlib
import itertools
import logging
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import pytest
from mta.adapters.simulator import SimulatorAdapter

from mta.adapter import (
    AdapterContext,
    AdapterError,
    AdapterMeta,
    AuthError,
    OptionSpec,
    PermanentError,
    ReceiptMode,
    SendPattern,
    ThrottledError,
    TransientError,
    WebhookRequest,
)
from mta.config import ConfigError
from mta.contract import (
    REASON_RETRY,
    REASON_SENDER,
    ApiStatus,
    SmsReportRequest,
    SmsResponse,
    SmsResult,
    SmsSendRequest,
)
from mta.registry import discover
from mta.testing import (
    CHECKS,
    Conformance,
    FailureKind,
    Report,
    Verdict,
    assert_conformant,
    build,
    check_adapter,
    discoverable,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "adapter-package"

TOKEN = "tok-5ecret-value-77"
OPTIONS = {"token": TOKEN}
STATUS: dict[FailureKind, int] = {"transient": 503, "throttled": 429, "permanent": 400, "auth": 401}


class Fine:
    """A well-behaved adapter over an in-memory partner; the broken ones below change one thing.

    The partner knows every id it issued (``Fine.issued``, shared by every instance as a
    partner is), and fails every call with ``Fine.outage`` (an HTTP-like status) while it is
    set. Every call yields to the event loop once, as a network call does.
    """

    meta: ClassVar[AdapterMeta] = AdapterMeta(
        name="fine",
        description="A well-behaved in-memory adapter.",
        options=(
            OptionSpec("token", str, required=True, secret=True, description="partner token"),
            OptionSpec("region", str, default="eu", description="partner region"),
        ),
        max_batch=50,
    )
    outage: ClassVar[int | None] = None
    issued: ClassVar[set[str]] = set()

    def __init__(self, options: Mapping[str, Any], context: AdapterContext) -> None:
        self.token = options["token"]
        self.context = context
        self.ids = itertools.count()

    def kind(self, status: int) -> AdapterError:
        if status == 429:
            return ThrottledError("fine: 429 slow down", 2.0)
        if status >= 500:
            return TransientError(f"fine: {status} unavailable")
        if status == 401:
            return AuthError("fine: 401 bad token")
        return PermanentError(f"fine: {status} bad request")

    async def partner(self) -> None:
        await asyncio.sleep(0)
        if Fine.outage is not None:
            raise self.kind(Fine.outage)

    async def login(self, secret_key: str) -> bool:
        await self.partner()
        return secret_key == "good-secret" and self.token == TOKEN

    def accept(self) -> SmsResult:
        pid = f"fine-{id(self):x}-{next(self.ids)}"
        Fine.issued.add(pid)
        return SmsResult(pid, "ACCEPTED", "", ApiStatus.OK)

    async def send(self, request: SmsSendRequest) -> SmsResponse:
        await self.partner()
        return SmsResponse(results=[self.accept() for _ in request.messages])

    def state(self, pid: str) -> SmsResult:
        if pid in Fine.issued:
            return SmsResult(pid, "DELIVRD", "", ApiStatus.DELIVERED)
        return SmsResult(pid, "UNKNOWN", "fine: no such message", ApiStatus.FAIL)

    async def report(self, request: SmsReportRequest) -> SmsResponse:
        await self.partner()
        return SmsResponse(results=[self.state(pid) for pid in request.messages])

    async def destroy(self) -> None:
        pass


def make_partner_fail(kind: FailureKind | None) -> None:
    Fine.outage = STATUS[kind] if kind else None


@pytest.fixture(autouse=True)
def healthy_partner() -> Iterator[None]:
    yield
    Fine.outage = None
    Fine.issued.clear()


SETTINGS: dict[str, Any] = {
    "secret_key": "good-secret",
    "bad_secret_key": "wrong-secret",
    "bad_options": {"token": "tok-refused-by-the-partner"},
    "make_partner_fail": make_partner_fail,
    "final_within_s": 1.0,
    "call_timeout_s": 2.0,
}


def kit(adapter: Any, **changes: Any) -> Conformance:
    return Conformance(adapter, OPTIONS, **{**SETTINGS, **changes})


# --- good adapters pass -----------------------------------------------------------------


async def test_the_simulator_passes_every_check() -> None:
    report = await assert_conformant(
        SimulatorAdapter,
        {"report_delay_s": 0.2, "seed": "kit"},
        secret_key="kit-secret-key",
        bad_secret_key="nok",
        final_within_s=3.0,
    )
    assert [c.name for c in report.checks] == list(CHECKS)
    assert all(c.outcome is Verdict.PASS for c in report.checks), str(report)
    assert "secret_key" in report["secrets"].message  # it looked for the key given to login


async def test_a_fine_adapter_passes_with_partner_failures() -> None:
    report = await kit(Fine).run_all()
    assert report.ok, str(report)
    assert report["probes"].outcome is Verdict.SKIP  # it defines no probes
    assert "transient, throttled, permanent, auth" in report["error_kinds"].message
    assert "secret option 'token'" in report["secrets"].message


async def test_a_loop_adapter_gets_one_message_per_call() -> None:
    class OneByOne(Fine):
        meta = replace(Fine.meta, name="one-by-one", pattern=SendPattern.LOOP, max_batch=1)

        async def send(self, request: SmsSendRequest) -> SmsResponse:
            assert len(request.messages) == 1, "a loop adapter gets one message per call"
            return await super().send(request)

        async def report(self, request: SmsReportRequest) -> SmsResponse:
            assert len(request.messages) == 1, "and one id per report"
            return await super().report(request)

    report = await kit(OneByOne).run_all()
    assert report.ok, str(report)
    assert "(one per call)" in report["send"].message


async def test_factories_plain_and_async() -> None:
    context = AdapterContext("acct", 7)

    async def make() -> Fine:
        await asyncio.sleep(0)
        return Fine(OPTIONS, context)

    for factory in (lambda: Fine(OPTIONS, context), make):
        report = await check_adapter(factory, OPTIONS, secret_key="good-secret")
        assert report.ok, str(report)
        assert report["nok_login"].outcome is Verdict.SKIP  # no bad_secret_key given


async def test_run_all_can_skip_checks_and_report_reads_well() -> None:
    report = await kit(Fine).run_all(skip={"report", "probes"})
    assert report["report"].outcome is Verdict.SKIP
    assert report["report"].message == "skipped by the caller"
    text = str(report)
    assert text.splitlines()[0] == "conformance of adapter 'fine': 8 passed, 0 failed, 2 skipped"
    assert "  PASS  send " in text
    with pytest.raises(KeyError, match="no check 'nope'"):
        report["nope"]
    with pytest.raises(ValueError, match="no check"):
        await kit(Fine).run_all(skip={"nope"})


# --- broken adapters fail, each on the check that names its fault --------------------------


class WrongCount(Fine):
    async def send(self, request: SmsSendRequest) -> SmsResponse:
        return SmsResponse(results=(await super().send(request)).results[:-1])


class IllegalSendStatus(Fine):
    async def send(self, request: SmsSendRequest) -> SmsResponse:
        response = await super().send(request)
        response.results[0].apiStatus = ApiStatus.DELIVERED
        return response


class PlainStringStatus(Fine):
    async def send(self, request: SmsSendRequest) -> SmsResponse:
        response = await super().send(request)
        response.results[0].apiStatus = "OK"  # type: ignore[assignment]
        return response


class IllegalReportStatus(Fine):
    def state(self, pid: str) -> SmsResult:
        return SmsResult(pid, "ACCEPTED", "", ApiStatus.OK)


class SameIdTwice(Fine):
    def accept(self) -> SmsResult:
        Fine.issued.add("fine-same")
        return SmsResult("fine-same", "ACCEPTED", "", ApiStatus.OK)


class OkWithoutId(Fine):
    def accept(self) -> SmsResult:
        return SmsResult("", "ACCEPTED", "", ApiStatus.OK)


class ReasonOnOk(Fine):
    def accept(self) -> SmsResult:
        result = super().accept()
        result.reason = REASON_SENDER
        return result


class SilentFail(Fine):
    def accept(self) -> SmsResult:
        return SmsResult(apiStatus=ApiStatus.FAIL)


class ReportsStrangers(Fine):
    def state(self, pid: str) -> SmsResult:
        return SmsResult("someone-else", "DELIVRD", "", ApiStatus.DELIVERED)


class ReportsNothing(Fine):
    async def report(self, request: SmsReportRequest) -> SmsResponse:
        return SmsResponse()


class DeliversUnknownIds(Fine):
    def state(self, pid: str) -> SmsResult:
        return SmsResult(pid, "DELIVRD", "", ApiStatus.DELIVERED)


class ChokesOnUnknownIds(Fine):
    async def report(self, request: SmsReportRequest) -> SmsResponse:
        if any(pid not in Fine.issued for pid in request.messages):
            raise PermanentError("fine: unknown message id in the request")
        return await super().report(request)


class AcceptsAnyKey(Fine):
    async def login(self, secret_key: str) -> bool:
        return self.token == TOKEN


class TransientNok(Fine):
    async def login(self, secret_key: str) -> bool:
        if secret_key != "good-secret":
            raise TransientError("fine: login refused")
        return await super().login(secret_key)


class LeaksInRepr(Fine):
    def __repr__(self) -> str:
        return f"LeaksInRepr(token={self.token!r})"


class LeaksInLog(Fine):
    async def login(self, secret_key: str) -> bool:
        logging.getLogger("fine.partner").debug("POST /login?token=%s", self.token)
        return await super().login(secret_key)


class LeaksInDetail(Fine):
    def kind(self, status: int) -> AdapterError:
        return TransientError(f"fine: {status} for token {self.token}")


class LeaksLoginKey(Fine):
    async def login(self, secret_key: str) -> bool:
        logging.getLogger("fine").info("login with %s", secret_key)
        return await super().login(secret_key)


class RaisesValueError(Fine):
    async def send(self, request: SmsSendRequest) -> SmsResponse:
        raise ValueError("cannot encode the message")


class RaisesBareAdapterError(Fine):
    def kind(self, status: int) -> AdapterError:
        return AdapterError(f"fine: {status}")


class MapsOutageToPermanent(Fine):
    def kind(self, status: int) -> AdapterError:
        return PermanentError(f"fine: {status}")


class FailsMessagesOnOutage(Fine):
    async def send(self, request: SmsSendRequest) -> SmsResponse:
        if Fine.outage is not None:
            return SmsResponse(
                results=[
                    SmsResult("", "ERROR", "fine: down", ApiStatus.FAIL) for _ in request.messages
                ]
            )
        return await super().send(request)


class FragileDestroy(Fine):
    destroyed = False

    async def destroy(self) -> None:
        if self.destroyed:
            raise RuntimeError("already closed")
        self.destroyed = True


class SyncSend(Fine):
    def send(self, request: SmsSendRequest) -> SmsResponse:  # type: ignore[override]
        return SmsResponse(results=[self.accept() for _ in request.messages])


class SlowSend(Fine):
    async def send(self, request: SmsSendRequest) -> SmsResponse:
        await asyncio.sleep(30)
        raise AssertionError("unreachable")


class BadMeta(Fine):
    meta = AdapterMeta(
        name="bad meta",
        description="",
        options=(
            OptionSpec("token", list, required=True, secret=True),  # list: no TOML option type
            OptionSpec("retries", int, default="3"),
            OptionSpec("password", str, secret=True, default="hunter22"),
            OptionSpec("window", int, default=0, minimum=1),  # its default out of its bounds
            OptionSpec("mode", str, default="a", choices=("a", 1)),
            OptionSpec("name", str, default="x", maximum=3),
        ),
        max_batch=0,
    )


class PushWithoutWebhook(Fine):  # receipts pushed, yet no webhook() to take them
    meta = replace(Fine.meta, name="pushy", receipts=ReceiptMode.PUSH)


class RaisingProbe(Fine):
    async def test_connection(self) -> bool:
        raise TransientError("fine: cannot connect")

    async def test_credentials(self) -> str:
        return "yes"


class RemembersInMemory(Fine):
    """Knows only the ids this instance sent: a reporter process would know none of them."""

    def __init__(self, options: Mapping[str, Any], context: AdapterContext) -> None:
        super().__init__(options, context)
        self.mine: set[str] = set()

    def accept(self) -> SmsResult:
        result = super().accept()
        self.mine.add(result.partnerMessageId)
        return result

    def state(self, pid: str) -> SmsResult:
        if pid in self.mine:
            return SmsResult(pid, "DELIVRD", "", ApiStatus.DELIVERED)
        return SmsResult(pid, "UNKNOWN", "fine: no such message", ApiStatus.FAIL)


class OneCallAtATime(Fine):
    """A client that breaks when two calls overlap."""

    busy = False

    async def send(self, request: SmsSendRequest) -> SmsResponse:
        if self.busy:
            raise RuntimeError("connection already in use")
        self.busy = True
        try:
            await asyncio.sleep(0.01)
            return await super().send(request)
        finally:
            self.busy = False


class PerCallState(Fine):
    """Keeps the batch being sent on the instance: concurrent calls answer each other's."""

    async def send(self, request: SmsSendRequest) -> SmsResponse:
        self.batch = request.messages
        await asyncio.sleep(0.01)
        return SmsResponse(results=[self.accept() for _ in self.batch])


class SmallBatchesOnly(Fine):
    """Declares max_batch 50 but the partner takes at most 10 per request."""

    async def send(self, request: SmsSendRequest) -> SmsResponse:
        if len(request.messages) > 10:
            raise PermanentError("fine: 400 at most 10 messages per request")
        return await super().send(request)


class RetryWithAnId(Fine):
    """Asks for a resend of a message the partner gave an id to (it would arrive twice)."""

    async def send(self, request: SmsSendRequest) -> SmsResponse:
        response = await super().send(request)
        first = response.results[0]
        first.apiStatus, first.partnerStatus, first.reason = ApiStatus.FAIL, "QUEUED", REASON_RETRY
        return response


class ReasonOnReport(Fine):
    def state(self, pid: str) -> SmsResult:
        result = super().state(pid)
        if result.apiStatus is ApiStatus.FAIL:
            result.reason = REASON_RETRY
        return result


class StrangeReason(Fine):
    def accept(self) -> SmsResult:
        return SmsResult("", "REJECTED", "fine: later", ApiStatus.FAIL, reason="later")


class IgnoresItsToken(Fine):
    """Logs in OK whatever its token: refused credentials would show only at the first send."""

    async def login(self, secret_key: str) -> bool:
        await self.partner()
        return secret_key == "good-secret"


class StarArgs(Fine):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)


BROKEN: list[tuple[type[Fine], str, list[str]]] = [
    (WrongCount, "send", ["answered 4 results for 5 messages", "one to one"]),
    (IllegalSendStatus, "send", ["apiStatus is DELIVERED", "send() may answer only OK, FAIL"]),
    (PlainStringStatus, "send", ["apiStatus is 'OK' (str)", "mta.contract.ApiStatus"]),
    (IllegalReportStatus, "report", ["apiStatus is OK", "report() may answer only"]),
    (SameIdTwice, "send", ["'fine-same' was given to another message too"]),
    (OkWithoutId, "send", ["OK without a partnerMessageId"]),
    (SilentFail, "send", ["FAIL without partnerStatus or partnerDetail"]),
    (ReasonOnOk, "send", ["reason is set, but apiStatus is OK; only FAIL has one"]),
    (ReportsStrangers, "report", ["'someone-else', which was not asked for"]),
    (ReportsNothing, "report", ["answered for none of the 3 accepted ids", "TIMEOUT"]),
    (DeliversUnknownIds, "unknown_ids", ["apiStatus is DELIVERED", "only FAIL, WAITING"]),
    (ChokesOnUnknownIds, "unknown_ids", ["one real id and one unknown id raised PermanentError"]),
    (AcceptsAnyKey, "nok_login", ["login(bad_secret_key) answered True"]),
    (TransientNok, "nok_login", ["raised TransientError", "not transient"]),
    (
        LeaksInRepr,
        "secrets",
        ["secret option 'token' appears in repr(adapter) (after it was built, after login"],
    ),
    (LeaksInLog, "secrets", ["secret option 'token' appears in a log record of 'fine.partner'"]),
    (LeaksInDetail, "secrets", ["secret option 'token' appears in what send(1 message) while"]),
    (LeaksLoginKey, "secrets", ["the secret_key appears in a log record of 'fine' at INFO"]),
    (RaisesValueError, "send", ["raised ValueError: cannot encode the message"]),
    (RaisesValueError, "error_kinds", ["send(5 messages) raised ValueError", "adapter bug"]),
    (RaisesBareAdapterError, "error_kinds", ["raised AdapterError, an AdapterError of no kind"]),
    (MapsOutageToPermanent, "error_kinds", ["fails (transient) raised PermanentError; expected"]),
    (FailsMessagesOnOutage, "error_kinds", ["(transient) but send(1 message)", "FAIL"]),
    (FragileDestroy, "destroy", ["a second destroy() of that instance raised RuntimeError"]),
    (SyncSend, "meta", ["SyncSend.send is not a coroutine function"]),
    (SyncSend, "send", ["returned a SmsResponse, not an awaitable"]),
    (SlowSend, "send", ["send(5 messages) did not return within 0.3 s"]),
    (BadMeta, "meta", ["meta.name is 'bad meta'", "meta.description is empty", "type 'list'"]),
    (
        BadMeta,
        "meta",
        ["default '3' is not of type int", "'password': a secret option with a non-empty"],
    ),
    (BadMeta, "meta", ["meta.max_batch is 0"]),
    (
        BadMeta,
        "meta",
        [
            "'window': the default is 0; at least 1",
            "'mode': choice 1 is not of type str",
            "'name': minimum/maximum on a str option",
        ],
    ),
    (PushWithoutWebhook, "meta", ["receipts is push, but PushWithoutWebhook has no"]),
    (RaisingProbe, "probes", ["test_connection() raised TransientError", "answered 'yes'"]),
    # item 8: report() is asked on a second instance
    (RemembersInMemory, "report", ["sending instance answers DELIVERED for 3 accepted ids",
                                   "second instance answered FAIL", "no per-message state"]),
    # item 9: concurrent calls, a full max_batch
    (OneCallAtATime, "concurrency", ["raised RuntimeError: connection already in use",
                                     "8 calls at once"]),
    (PerCallState, "concurrency", ["answered 7 results for 1 message", "one to one"]),
    (SmallBatchesOnly, "concurrency", ["send(50 messages) raised PermanentError",
                                       "at most 10 messages per request"]),
    # item 10: REASON_SENDER and REASON_RETRY only where they make sense
    (RetryWithAnId, "send", ["reason is REASON_RETRY, yet partnerMessageId is 'fine-",
                             "the recipient gets it twice"]),
    (ReasonOnReport, "unknown_ids", ["reason is 'retry' on a report() answer"]),
    (StrangeReason, "send", ["reason is 'later'", "REASON_RETRY ('retry')"]),
    # item 11: credentials refused through the options
    (IgnoresItsToken, "nok_login", ["login(secret_key) with bad_options answered True (OK)"]),
    # item 14: a constructor the registry cannot read
    (StarArgs, "meta", ["StarArgs() takes *args, **kwargs", "AdapterContext is lost"]),
    (StarArgs, "send", ["building the adapter raised TypeError: StarArgs() takes *args"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("adapter", "check", "expected"),
    BROKEN,
    ids=[f"{cls.__name__}-{check}" for cls, check, _ in BROKEN],
)
async def test_a_broken_adapter_fails_the_right_check(
    adapter: type[Fine], check: str, expected: list[str]
) -> None:
    report = await kit(adapter, call_timeout_s=0.3).run_all()
    assert not report.ok
    result = report[check]
    assert result.outcome is Verdict.FAIL, str(report)
    for fragment in expected:
        assert fragment in result.message, str(report)
    assert TOKEN not in str(report), "a report never shows a secret"
    with pytest.raises(AssertionError, match=f"FAIL  {check} "):
        await assert_conformant(adapter, OPTIONS, **{**SETTINGS, "call_timeout_s": 0.3})


async def test_a_fault_fails_only_its_own_checks() -> None:
    report = await kit(LeaksInRepr).run_all()
    assert [c.name for c in report.failures] == ["secrets"], str(report)
    report = await kit(WrongCount).run_all()
    assert "meta" not in {c.name for c in report.failures}
    assert "secrets" not in {c.name for c in report.failures}


async def test_a_declared_kind_raised_for_an_unknown_id_alone_is_allowed() -> None:
    class RaisesOnUnknownOnly(Fine):
        meta = replace(Fine.meta, name="one-id", pattern=SendPattern.LOOP)

        async def report(self, request: SmsReportRequest) -> SmsResponse:
            if request.messages[0] not in Fine.issued:
                raise PermanentError("fine: no such message")
            return await super().report(request)

    report = await kit(RaisesOnUnknownOnly).run_all()
    assert report.ok, str(report)
    assert "raised PermanentError (a declared kind" in report["unknown_ids"].message


class PushesReceipts(Fine):
    """Learns final states outside report() (as an SMPP client or a draining pull API does)
    and stores them through context.receipts; report() itself answers WAITING."""

    meta = replace(Fine.meta, name="pushes", receipts=ReceiptMode.BOTH)

    async def send(self, request: SmsSendRequest) -> SmsResponse:
        response = await super().send(request)
        finals = [self.state(r.partnerMessageId) for r in response.results]
        await self.context.receipts.push(finals)
        return response

    async def report(self, request: SmsReportRequest) -> SmsResponse:
        await self.partner()
        return SmsResponse(
            results=[SmsResult(pid, "ENROUTE", "", ApiStatus.WAITING) for pid in request.messages]
        )

    async def webhook(self, request: WebhookRequest) -> list[SmsResult]:
        return []


async def test_receipts_pushed_through_the_context_count_as_answers() -> None:
    report = await kit(PushesReceipts).run_all()
    assert report.ok, str(report)
    assert "(DELIVERED)" in report["report"].message


async def test_a_pull_adapter_that_pushes_receipts_fails_report() -> None:
    class PullButPushes(PushesReceipts):
        meta = replace(PushesReceipts.meta, name="pull-pushes", receipts=ReceiptMode.PULL)

    report = await kit(PullButPushes).run_all()
    assert report["report"].failed
    assert "meta.receipts is pull, so the reporter never reads them" in report["report"].message
    assert "no final state after 1 s (answers: WAITING)" in report["report"].message


# --- the rules the guide states, each caught -------------------------------------------------


async def test_report_runs_on_a_second_instance_and_state_shared_through_the_context_counts() -> (
    None
):
    """what an adapter keeps through context.receipts.remember is shared by every
    instance (Redis in the MTA), so such an adapter passes; one keeping ids in memory fails."""

    class RemembersThroughTheContext(RemembersInMemory):
        async def send(self, request: SmsSendRequest) -> SmsResponse:
            response = await super().send(request)
            ids = {r.partnerMessageId: b"1" for r in response.results}
            await self.context.receipts.remember(ids, ttl_s=60)
            return response

        async def report(self, request: SmsReportRequest) -> SmsResponse:
            self.mine |= set(await self.context.receipts.recall(request.messages))
            return await super().report(request)

    report = await kit(RemembersThroughTheContext).run_all()
    assert report.ok, str(report)
    assert "answered by a second instance (DELIVERED)" in report["report"].message
    assert not (await kit(RemembersInMemory).run_all()).ok


async def test_calls_overlap_up_to_max_concurrency_with_a_full_batch() -> None:
    """the kit makes max_concurrency send() and report() calls at once."""
    in_flight = {"send": 0, "report": 0}
    peak = {"send": 0, "report": 0}
    sizes: list[int] = []

    class Counts(Fine):
        meta = replace(Fine.meta, name="counts", max_concurrency=4, max_batch=20)

        async def _measure(self, call: str) -> None:
            in_flight[call] += 1
            peak[call] = max(peak[call], in_flight[call])
            await asyncio.sleep(0.02)
            in_flight[call] -= 1

        async def send(self, request: SmsSendRequest) -> SmsResponse:
            sizes.append(len(request.messages))
            await self._measure("send")
            return await super().send(request)

        async def report(self, request: SmsReportRequest) -> SmsResponse:
            await self._measure("report")
            return await super().report(request)

    report = await kit(Counts).run_all()
    assert report.ok, str(report)
    assert peak == {"send": 4, "report": 4}
    assert 20 in sizes  # a full max_batch
    assert "4 send() calls at once, one of a full 20" in report["concurrency"].message


async def test_retry_later_is_a_legal_reason_on_a_fail_never_accepted() -> None:
    """REASON_RETRY on a FAIL without a partnerMessageId passes, like REASON_SENDER."""

    class RetriesLater(Fine):
        async def send(self, request: SmsSendRequest) -> SmsResponse:
            response = await super().send(request)
            response.results[0] = SmsResult(
                "", "NOT_SUBMITTED", "fine: window full", ApiStatus.FAIL, reason=REASON_RETRY
            )
            if len(response.results) > 1:
                response.results[1] = SmsResult(
                    "", "BAD_SENDER", "fine: sender refused", ApiStatus.FAIL, reason=REASON_SENDER
                )
            return response

    report = await kit(RetriesLater).run_all()
    assert report.ok, str(report)
    assert "3 of 5 messages (batch) accepted" in report["send"].message


async def test_credentials_refused_through_the_options_log_in_nok() -> None:
    """bad_options builds an instance the partner refuses; login must be NOK."""
    report = await kit(Fine, bad_secret_key=None).run_all()
    assert report.ok, str(report)
    message = report["nok_login"].message
    assert message == (
        "login(secret_key) with bad_options answered NOK; the core never calls send() or "
        "report() then"
    )
    assert "secret option 'token' of bad_options" in report["secrets"].message
    with pytest.raises(ValueError, match=r"bad_options: .* pass the adapter class"):
        Conformance(lambda: Fine(OPTIONS, AdapterContext("a", 1)), OPTIONS, bad_options={})


async def test_checks_are_skipped_by_name_from_the_one_call_runners() -> None:
    """skip= works on check_adapter and assert_conformant, with or without reasons."""
    report = await check_adapter(
        Fine, OPTIONS, skip={"concurrency": "the sandbox allows one call at a time"}, **SETTINGS
    )
    assert report.ok, str(report)
    assert report["concurrency"].outcome is Verdict.SKIP
    assert report["concurrency"].message == (
        "skipped by the caller: the sandbox allows one call at a time"
    )
    # a check that fails is not run when skipped, so the adapter passes
    passed = await assert_conformant(OneCallAtATime, OPTIONS, skip=["concurrency"], **SETTINGS)
    assert passed["concurrency"].message == "skipped by the caller"
    with pytest.raises(AssertionError, match="FAIL  concurrency"):
        await assert_conformant(OneCallAtATime, OPTIONS, **SETTINGS)
    with pytest.raises(ValueError, match=r"no check.* concurency"):
        await check_adapter(Fine, OPTIONS, skip=["concurency"], **SETTINGS)
    with pytest.raises(ValueError, match="not the string"):
        await check_adapter(Fine, OPTIONS, skip="concurrency", **SETTINGS)


def test_a_constructor_with_star_args_is_refused_with_the_reason() -> None:
    """the registry cannot tell what *args/**kwargs take; build() says so."""
    with pytest.raises(TypeError, match=r"StarArgs\(\) takes \*args, \*\*kwargs: the registry"):
        build(StarArgs, OPTIONS)


# --- building as the registry does ---------------------------------------------------------


def test_build_checks_options_like_the_mta(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FINE_TOKEN", "from-the-environment")
    adapter = build(Fine, {"token": "${FINE_TOKEN}"}, account_name="fine-1", account_id=12)
    assert adapter.token == "from-the-environment"
    assert (adapter.context.account_name, adapter.context.account_id) == ("fine-1", 12)
    with pytest.raises(ConfigError, match=r"options\.token: required by adapter 'fine'"):
        build(Fine, {})
    with pytest.raises(ConfigError, match=r"unknown option.* colour"):
        build(Fine, {"token": "t", "colour": "red"})
    simulator = build(SimulatorAdapter, {"accept_ratio": "0.5"})  # coerced as from the env
    assert simulator.accept_ratio == 0.5
    with pytest.raises(ConfigError, match=r"options\.accept_ratio: is 2\.0; at most 1\.0"):
        build(SimulatorAdapter, {"accept_ratio": 2})  # the option's bound, as at load
    from mta.adapters.http_bridge import HttpBridgeAdapter

    with pytest.raises(ConfigError, match=r"'http-bridge' refused its options: .*http://"):
        build(HttpBridgeAdapter, {"url": "ftp://bridge"})  # the constructor's ValueError


async def test_options_that_do_not_fit_fail_the_checks_with_the_config_error() -> None:
    report = await check_adapter(Fine, {"colour": "red"}, secret_key="good-secret")
    assert report["send"].failed
    assert "options do not fit" in report["send"].message
    assert "unknown option(s) colour" in report["send"].message


def test_discoverable_explains_what_is_missing() -> None:
    assert discoverable("simulator") is SimulatorAdapter
    with pytest.raises(AssertionError, match=r"no entry point 'no-such' .*pip install -e \."):
        discoverable("no-such")


def test_kit_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="numbers"):
        Conformance(Fine, OPTIONS, numbers=())
    with pytest.raises(ValueError, match="unknown kind"):
        Conformance(Fine, OPTIONS, failures=["fire"])  # type: ignore[list-item]


def test_report_is_a_value() -> None:
    report = Report("x", ())
    assert report.ok and str(report).startswith("conformance of adapter 'x': 0 passed")


# --- the example adapter package, found by entry point ------------------------------------


def fake_install(site: Path) -> None:
    """What `pip install` leaves behind that discovery reads: a dist-info with entry points."""
    info = site / "mta_adapter_echo-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: mta-adapter-echo\nVersion: 0.1.0\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(
        "[mta.adapters]\necho = mta_adapter_echo:EchoAdapter\n", encoding="utf-8"
    )


@pytest.fixture
def echo_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    site = tmp_path / "site"
    site.mkdir()
    fake_install(site)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.syspath_prepend(str(EXAMPLE / "src"))
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    try:
        yield site
    finally:
        for name in [m for m in sys.modules if m.split(".")[0] == "mta_adapter_echo"]:
            del sys.modules[name]
        importlib.invalidate_caches()


async def test_the_example_package_is_discovered_and_passes_the_kit(echo_installed: Path) -> None:
    found = discover()
    assert "echo" in found
    echo = found["echo"]
    assert echo.__module__ == "mta_adapter_echo.adapter"
    assert discoverable("echo") is echo
    partner = importlib.import_module("mta_adapter_echo.partner").PARTNER

    def fail(kind: FailureKind | None) -> None:
        partner.outage = {"transient": 503, "throttled": 429, "permanent": 400, "auth": 401}.get(
            kind or ""
        )

    try:
        report = await assert_conformant(
            echo,
            {"api_key": "echo-key-from-kit-test", "delay_s": 0.1},
            secret_key="platform-secret",
            bad_secret_key="",
            make_partner_fail=fail,
            final_within_s=2.0,
        )
    finally:
        partner.outage = None
    assert report["error_kinds"].outcome is Verdict.PASS


def test_the_example_package_own_tests_pass(echo_installed: Path) -> None:
    """Its tests/test_conformance.py, run by pytest as the package's CI would run it."""
    env = dict(os.environ)
    paths = [str(echo_installed), str(EXAMPLE / "src"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout
