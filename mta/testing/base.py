"""The kit's plumbing: its settings, building and calling instances, watching for secrets."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn, TypeAlias, TypedDict, TypeVar

from mta.adapter import Adapter, AdapterContext, AdapterError, AdapterMeta, SendPattern
from mta.config import ConfigError
from mta.contract import (
    ApiStatus,
    SmsMessage,
    SmsReportRequest,
    SmsResponse,
    SmsResult,
    SmsSendRequest,
    unpack_result,
)
from mta.testing.build import build
from mta.testing.report import CHECKS, CheckResult, Verdict
from mta.testing.results import (
    REPORT_STATUSES,
    SEND_STATUSES,
    plural,
    response_results,
    valid_result,
)

__all__ = [
    "FAILURE_KINDS",
    "TEST_NUMBERS",
    "AdapterFactory",
    "FailureKind",
    "KitBase",
    "KitOptions",
    "PartnerFailer",
]

T = TypeVar("T")

#: Builds one adapter instance (plain or async); the kit calls it once per instance it needs.
AdapterFactory: TypeAlias = Callable[[], Adapter | Awaitable[Adapter]]

#: The partner failures the kit can ask for; what the adapter must then raise:
#: ``transient`` → :class:`~mta.adapter.TransientError` (e.g. the partner answers 503 or times
#: out), ``throttled`` → :class:`~mta.adapter.ThrottledError` (429), ``permanent`` →
#: :class:`~mta.adapter.PermanentError` or FAIL results with a detail (400), ``auth`` →
#: login NOK or :class:`~mta.adapter.AuthError` (401).
FailureKind: TypeAlias = Literal["transient", "throttled", "permanent", "auth"]
FAILURE_KINDS: tuple[FailureKind, ...] = ("transient", "throttled", "permanent", "auth")

#: ``make_partner_fail(kind)`` makes the partner fail every call that way from now on;
#: ``make_partner_fail(None)`` makes it healthy again. It may be a plain or an async function.
PartnerFailer: TypeAlias = Callable[[FailureKind | None], Awaitable[None] | None]

#: Fictional numbers (Ofcom's drama range, NANP 555-01xx), international format, digits only.
TEST_NUMBERS: tuple[str, ...] = (
    "447700900001",
    "447700900002",
    "12025550101",
    "12025550102",
    "447700900003",
)

KINDS = "TransientError, ThrottledError, PermanentError or AuthError"
WHEN = "\x00"  # separates where a text was seen from when (repr after login, ...)


class KitOptions(TypedDict, total=False):
    """The keyword arguments of :class:`Conformance` (its docstring says what each does)."""

    secret_key: str
    bad_secret_key: str | None
    bad_options: Mapping[str, Any] | None
    numbers: Sequence[str]
    batch_size: int
    sender: str
    unknown_ids: Sequence[str]
    make_partner_fail: PartnerFailer | None
    failures: Sequence[FailureKind]
    final_within_s: float
    call_timeout_s: float
    account_name: str
    account_id: int


class Failed(Exception):
    """Ends a check with one more problem."""


class Skipped(Exception):
    """Ends a check as skipped."""


class CallError(Exception):
    """An adapter call raised ``exc``; ``what`` names the call."""

    def __init__(self, what: str, exc: Exception) -> None:
        super().__init__(what)
        self.what = what
        self.exc = exc


@dataclass(eq=False)
class Check:
    """What one check found so far, and the adapters it built (destroyed at its end)."""

    name: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: str = ""
    adapters: list[Adapter] = field(default_factory=list)
    result: CheckResult | None = None

    def problem(self, text: str) -> None:
        if text not in self.problems:
            self.problems.append(text)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def stop(self, text: str) -> NoReturn:
        raise Failed(text)

    def skip(self, why: str) -> NoReturn:
        raise Skipped(why)

    def finish(self) -> CheckResult:
        if self.problems:
            if len(self.problems) == 1:
                message = self.problems[0]
            else:
                message = "\n".join(f"- {p}" for p in self.problems)
            return CheckResult(self.name, Verdict.FAIL, message)
        if self.skipped:
            return CheckResult(self.name, Verdict.SKIP, self.skipped)
        return CheckResult(self.name, Verdict.PASS, "; ".join(self.notes) or CHECKS[self.name])


class _LogTrap(logging.Handler):
    """Keeps every log record that reaches the root logger, formatted with its traceback."""

    def __init__(self, sink: list[tuple[str, str]]) -> None:
        super().__init__(logging.DEBUG)
        self.sink = sink
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # a record whose arguments do not format: keep what it holds
            text = f"{record.msg!r} {record.args!r}"
        self.sink.append((f"a log record of {record.name!r} at {record.levelname}", text))


@contextlib.contextmanager
def _trap_logs(sink: list[tuple[str, str]]) -> Iterator[None]:
    root = logging.getLogger()
    trap = _LogTrap(sink)
    level = root.level
    root.addHandler(trap)
    root.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        root.removeHandler(trap)
        root.setLevel(level)


def describe(what: str, exc: BaseException) -> str:
    """What an adapter call raised, in a check's words."""
    if isinstance(exc, AdapterError):
        return f"{what} raised {type(exc).__name__}: {exc.detail}"
    return (
        f"{what} raised {type(exc).__name__}: {exc} — adapters raise only the kinds of "
        f"mta.adapter ({KINDS}); the core treats anything else as an adapter bug"
    )


class KitStore:
    """The kit's stand-in for the MTA's Redis store behind ``context.receipts``, one for every
    instance of a run (as Redis is one for every process): pushed receipts go to the kit's
    checks, shared state lives in memory (TTLs are not enforced)."""

    def __init__(self, push: Callable[[str, dict[str, bytes]], Awaitable[int]]) -> None:
        self._push = push
        self._state: dict[tuple[str, str], bytes] = {}

    def clear(self) -> None:
        self._state.clear()

    async def push_receipts(self, account: str, receipts: dict[str, bytes]) -> int:
        return await self._push(account, receipts)

    async def put_state(self, account: str, values: dict[str, bytes], ttl_s: int) -> None:
        for key, value in values.items():
            self._state[(account, key)] = value

    async def get_state(self, account: str, keys: Sequence[str]) -> dict[str, bytes]:
        return {k: self._state[(account, k)] for k in keys if (account, k) in self._state}


class KitBase:
    """Settings of one kit run and the means of the checks (see :class:`Conformance`)."""

    def __init__(
        self,
        adapter: type[Adapter] | AdapterFactory,
        options: Mapping[str, Any] | None = None,
        *,
        secret_key: str = "",
        bad_secret_key: str | None = None,
        bad_options: Mapping[str, Any] | None = None,
        numbers: Sequence[str] = TEST_NUMBERS,
        batch_size: int = 5,
        sender: str = "",
        unknown_ids: Sequence[str] = ("mta-kit-unknown-0001", "never-issued-0002"),
        make_partner_fail: PartnerFailer | None = None,
        failures: Sequence[FailureKind] = FAILURE_KINDS,
        final_within_s: float = 0.0,
        call_timeout_s: float = 10.0,
        account_name: str = "kit",
        account_id: int = 0,
    ) -> None:
        if not numbers:
            raise ValueError("numbers: give at least one number")
        if batch_size < 1:
            raise ValueError("batch_size: at least 1")
        if not unknown_ids:
            raise ValueError("unknown_ids: give at least one id")
        unsupported = sorted(set(failures) - set(FAILURE_KINDS))
        if unsupported:
            raise ValueError(f"failures: unknown kind(s) {', '.join(unsupported)}")
        if isinstance(adapter, type):
            self._cls: type[Adapter] | None = adapter
            self._factory: AdapterFactory | None = None
        else:
            self._cls, self._factory = None, adapter
            if bad_options is not None:
                raise ValueError(
                    "bad_options: the kit builds the instance with bad_options itself, so pass "
                    "the adapter class, not a factory"
                )
        self.options: Mapping[str, Any] = dict(options or {})
        self.secret_key = secret_key
        self.bad_secret_key = bad_secret_key
        self.bad_options: Mapping[str, Any] | None = (
            None if bad_options is None else dict(bad_options)
        )
        self.numbers = tuple(numbers)
        self.batch_size = batch_size
        self.sender = sender
        self.unknown_ids = tuple(unknown_ids)
        self.make_partner_fail = make_partner_fail
        self.failures = tuple(failures)
        self.final_within_s = final_within_s
        self.call_timeout_s = call_timeout_s
        self.account_name = account_name
        self.account_id = account_id
        self._meta: AdapterMeta | None = None
        self._raised: list[tuple[str, Exception]] = []
        self._seen: list[tuple[str, str]] = []  # (where, text) searched for secrets
        self._repr_errors: list[str] = []
        self._pushed: dict[str, SmsResult] = {}  # receipts pushed through context.receipts
        self._store = KitStore(self._store_pushed)

    def _reset(self) -> None:
        self._raised.clear()
        self._seen.clear()
        self._repr_errors.clear()
        self._pushed.clear()
        self._store.clear()

    def _adapter_name(self) -> str:
        meta = self._meta if self._meta is not None else getattr(self._cls, "meta", None)
        if isinstance(meta, AdapterMeta):
            return meta.name
        return self._cls.__name__ if self._cls is not None else "?"

    @contextlib.asynccontextmanager
    async def _checking(self, name: str) -> AsyncIterator[Check]:
        check = Check(name)
        with _trap_logs(self._seen):
            try:
                yield check
            except Failed as exc:
                check.problem(str(exc))
            except Skipped as exc:
                check.skipped = str(exc)
            except CallError as exc:
                detail = describe(exc.what, exc.exc)
                if isinstance(exc.exc, AdapterError):
                    detail += " (this check needs a healthy partner endpoint)"
                check.problem(detail)
            finally:
                for adapter in list(check.adapters):
                    await self._destroy(check, adapter)
        check.result = check.finish()

    # --- building and calling -----------------------------------------------------------
    async def _new(self, check: Check, options: Mapping[str, Any] | None = None) -> Adapter:
        """A fresh instance (with ``options``, else the kit's), destroyed at the end of the
        check; every instance shares the kit's store, as every process shares Redis."""
        try:
            if self._cls is not None:
                adapter: Adapter = build(
                    self._cls,
                    self.options if options is None else options,
                    account_name=self.account_name,
                    account_id=self.account_id,
                )
            else:
                assert self._factory is not None
                made = self._factory()
                adapter = await made if isinstance(made, Awaitable) else made
        except ConfigError as exc:
            check.stop(f"the options do not fit the adapter's meta.options: {exc}")
        except Exception as exc:
            check.stop(f"building the adapter raised {type(exc).__name__}: {exc}")
        check.adapters.append(adapter)
        context = getattr(adapter, "context", None)
        if isinstance(context, AdapterContext):  # as Registry.bind_store does
            context.receipts.bind(self._store)
        meta = getattr(type(adapter), "meta", None)
        if isinstance(meta, AdapterMeta):
            self._meta = meta
        self._look_at(adapter, "after it was built")
        return adapter

    async def _store_pushed(self, account: str, finals: dict[str, bytes]) -> int:
        """The receipt sink's store: keeps what an adapter pushes through its context."""
        for pid, packed in finals.items():
            result = unpack_result(packed)
            self._pushed.setdefault(pid, result)
            self._look_at_response(
                "a receipt pushed to context.receipts", SmsResponse("", [result])
            )
        return len(finals)

    @staticmethod
    def _meta_of(adapter: Adapter) -> AdapterMeta:
        """The instance's meta, as the worker and reporter read it (an instance may narrow
        its class's meta from its options, e.g. a per-account pattern or max_batch)."""
        meta = getattr(adapter, "meta", None)
        if not isinstance(meta, AdapterMeta):
            raise Failed(f"{type(adapter).__name__}.meta is not an AdapterMeta (see check meta)")
        return meta

    async def _call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """One adapter call under the time limit; what it raises is kept for ``error_kinds``."""
        scope = asyncio.timeout(self.call_timeout_s)
        try:
            async with scope:
                pending = call()
                if not inspect.isawaitable(pending):
                    raise Failed(
                        f"{what} returned a {type(pending).__name__}, not an awaitable: "
                        "adapter methods are coroutines (async def)"
                    )
                return await pending
        except Failed:
            raise
        except TimeoutError as exc:
            if scope.expired():
                raise Failed(f"{what} did not return within {self.call_timeout_s:g} s") from None
            self._keep_error(what, exc)
            raise CallError(what, exc) from exc
        except Exception as exc:
            self._keep_error(what, exc)
            raise CallError(what, exc) from exc

    def _keep_error(self, what: str, exc: Exception) -> None:
        self._raised.append((what, exc))
        where = f"what {what} raised"
        self._seen.append((where, f"{type(exc).__name__}: {exc!s} {exc!r}"))
        detail = getattr(exc, "detail", None)
        if isinstance(detail, str):
            self._seen.append((where, detail))

    def _look_at(self, adapter: Adapter, when: str) -> None:
        """Keep repr() and str() of an instance (str only when it differs), and when."""
        shows: tuple[tuple[str, Callable[[object], str]], ...] = (("repr", repr), ("str", str))
        texts: list[str] = []
        for name, show in shows:
            try:
                text = show(adapter)
            except Exception as exc:
                self._repr_errors.append(f"{name}(adapter) raised {type(exc).__name__}: {exc}")
                continue
            if text not in texts:
                texts.append(text)
                self._seen.append((f"{name}(adapter){WHEN}{when}", text))

    def _look_at_response(self, what: str, response: Any) -> None:
        results = getattr(response, "results", None)
        packet = getattr(response, "partnerPacketId", None)
        if isinstance(packet, str):
            self._seen.append((f"the partnerPacketId of {what}", packet))
        if not isinstance(results, list):
            return
        for n, result in enumerate(results):
            for name in ("partnerMessageId", "partnerStatus", "partnerDetail", "smsOperator"):
                value = getattr(result, name, None)
                if isinstance(value, str) and value:
                    self._seen.append((f"{what}: results[{n}].{name}", value))

    async def _login(self, check: Check, adapter: Adapter) -> None:
        ok = await self._call(
            "login(secret_key)", functools.partial(adapter.login, self.secret_key)
        )
        if ok is False:
            check.stop(
                "login(secret_key) answered NOK (False); pass a secret_key= that the partner "
                "endpoint accepts"
            )
        if ok is not True:
            check.stop(
                f"login(secret_key) answered {ok!r}; it must answer True (OK) or False (NOK)"
            )
        self._look_at(adapter, "after login")

    async def _destroy(self, check: Check, adapter: Adapter, what: str = "destroy()") -> None:
        if adapter not in check.adapters:
            return
        check.adapters.remove(adapter)
        try:
            await self._call(what, adapter.destroy)
        except CallError as exc:
            check.problem(describe(exc.what, exc.exc))
        except Failed as exc:
            check.problem(str(exc))

    async def _fail_partner(self, kind: FailureKind | None) -> None:
        assert self.make_partner_fail is not None
        outcome = self.make_partner_fail(kind)
        if isinstance(outcome, Awaitable):
            await outcome

    # --- the test messages ----------------------------------------------------------------
    def _messages(self, n: int, first: int = 0) -> list[SmsMessage]:
        texts = (
            "mta.testing conformance message",
            "mta.testing: Grüße, 你好 ✓",
            "mta.testing: a long message in several parts. " * 5,
        )
        return [
            SmsMessage(
                mobileNumber=self.numbers[i % len(self.numbers)],
                text=f"{texts[i % len(texts)]} #{i}",
                sender=self.sender,
            )
            for i in range(first, first + n)
        ]

    @staticmethod
    def _chunk_size(meta: AdapterMeta) -> int:
        return 1 if meta.pattern is SendPattern.LOOP else max(1, meta.max_batch)

    async def _send(self, check: Check, adapter: Adapter, messages: list[SmsMessage]) -> list[str]:
        """Send as the worker does (batches or a loop); check every answer; the accepted ids."""
        size = self._chunk_size(self._meta_of(adapter))
        accepted: list[str] = []
        for start in range(0, len(messages), size):
            chunk = messages[start : start + size]
            what = f"send({plural(len(chunk), 'message')})"
            await self._send_call(check, adapter, chunk, what, accepted)
        return accepted

    async def _send_call(
        self,
        check: Check,
        adapter: Adapter,
        chunk: list[SmsMessage],
        what: str,
        accepted: list[str],
    ) -> None:
        """One send() call of ``chunk``; its accepted ids are added to ``accepted``, which
        they must not already be in."""
        request = SmsSendRequest(list(chunk))
        response = await self._call(what, functools.partial(adapter.send, request))
        self._look_at_response(what, response)
        results = response_results(check, what, response)
        if results is None:
            return
        if len(results) != len(chunk):
            check.problem(
                f"{what} answered {plural(len(results), 'result')} for "
                f"{plural(len(chunk), 'message')}; results[i] must answer messages[i], one "
                "to one (the core FAILs the whole call as ADAPTER_ERROR, outcome unknown)"
            )
            return
        for n, result in enumerate(results):
            where = f"{what}: results[{n}]"
            if not valid_result(check, where, result, SEND_STATUSES, "send()", sending=True):
                continue
            if result.apiStatus is ApiStatus.FAIL:
                if not (result.partnerStatus or result.partnerDetail):
                    check.problem(
                        f"{where} is FAIL without partnerStatus or partnerDetail; say why"
                    )
                continue
            pid = result.partnerMessageId
            if not pid or not isinstance(pid, str):
                check.problem(
                    f"{where} is OK without a partnerMessageId: the core cannot follow it "
                    "(it FAILs such a message as ADAPTER_ERROR)"
                )
            elif pid in accepted:
                check.problem(
                    f"{where}.partnerMessageId {pid!r} was given to another message too; "
                    "each accepted message needs its own id"
                )
            else:
                accepted.append(pid)

    async def _report(
        self,
        check: Check,
        adapter: Adapter,
        ids: Sequence[str],
        allowed: frozenset[ApiStatus] = REPORT_STATUSES,
        call: str = "report()",
    ) -> dict[str, SmsResult]:
        """Report as the reporter does (batches or one id a call); the answers by id."""
        size = self._chunk_size(self._meta_of(adapter))
        answers: dict[str, SmsResult] = {}
        for start in range(0, len(ids), size):
            chunk = list(ids[start : start + size])
            what = f"report({plural(len(chunk), 'id')})"
            answers.update(await self._report_call(check, adapter, chunk, what, allowed, call))
        return answers

    async def _report_call(
        self,
        check: Check,
        adapter: Adapter,
        chunk: list[str],
        what: str,
        allowed: frozenset[ApiStatus] = REPORT_STATUSES,
        call: str = "report()",
    ) -> dict[str, SmsResult]:
        """One report() call on ``chunk``; its answers by id, each checked."""
        request = SmsReportRequest("", chunk)
        response = await self._call(what, functools.partial(adapter.report, request))
        self._look_at_response(what, response)
        results = response_results(check, what, response)
        answers: dict[str, SmsResult] = {}
        for n, result in enumerate(results or []):
            where = f"{what}: results[{n}]"
            if not valid_result(check, where, result, allowed, call):
                continue
            pid = result.partnerMessageId
            if pid not in chunk:
                check.problem(
                    f"{where}.partnerMessageId is {pid!r}, which was not asked for; the "
                    "reporter matches answers by partnerMessageId and ignores this one"
                )
            elif pid in answers:
                check.problem(f"{what} answered twice for {pid!r}; answer once per id")
            else:
                answers[pid] = result
        return answers
