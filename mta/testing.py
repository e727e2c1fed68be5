"""Conformance kit for adapter authors: run an adapter against its partner, report what breaks.

An adapter package runs the kit in its own tests, against its adapter class (built exactly as
the registry builds it, from a TOML-like options dict) and a partner endpoint (a test server,
a sandbox, or an in-process fake)::

    from mta.testing import assert_conformant

    async def test_conformance() -> None:
        await assert_conformant(
            EchoAdapter,
            {"api_key": "test-key-123"},        # as in [account.options] of accounts.toml
            secret_key="platform-secret",       # what login() is given
            bad_secret_key="",                  # a key the partner refuses: login() is NOK
        )

Each check is a method of :class:`Conformance` (``check_meta``, ``check_send``, ...) returning a
:class:`CheckResult`; :meth:`Conformance.run_all` runs them all into a :class:`Report`, and
:func:`assert_conformant` fails a test with the whole report when any check fails. Checks run
one after another, each on fresh adapter instances that it destroys at its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import inspect
import logging
import re
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Literal, NoReturn, TypeAlias, TypedDict, TypeVar, Unpack, cast

import orjson

from mta.adapter import (
    Adapter,
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
)
from mta.config import MASK, Account, ConfigError, build_options
from mta.contract import (
    REASON_SENDER,
    ApiStatus,
    SmsMessage,
    SmsReportRequest,
    SmsResponse,
    SmsResult,
    SmsSendRequest,
    unpack_result,
)
from mta.registry import ENTRY_POINT_GROUP, build_adapter, discover

__all__ = [
    "CHECKS",
    "FAILURE_KINDS",
    "TEST_NUMBERS",
    "AdapterFactory",
    "CheckResult",
    "Conformance",
    "FailureKind",
    "KitOptions",
    "Outcome",
    "PartnerFailer",
    "Report",
    "assert_conformant",
    "build",
    "check_adapter",
    "discoverable",
]

A = TypeVar("A", bound=Adapter)
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

#: Every check, in the order :meth:`Conformance.run_all` runs them, with what it asks.
CHECKS: Mapping[str, str] = {
    "meta": "meta is well-formed: name, description, options, pattern, max_batch, receipts",
    "send": "login(secret_key) is OK; send() answers one legal result per message, in order",
    "report": "report() answers legal states for the ids send() accepted",
    "unknown_ids": "report() on ids the partner never issued: nothing, WAITING or FAIL",
    "nok_login": "login(bad_secret_key) answers NOK (the core then never calls send/report)",
    "destroy": "destroy() works unused and used, and twice in a row",
    "probes": "test_connection/test_credentials/test_proxy, where defined, answer a bool",
    "error_kinds": "everything raised is a declared error kind, and partner failures map right",
    "secrets": "no secret value in repr(), str(), logs, error details or results",
}

_SEND_STATUSES = frozenset({ApiStatus.OK, ApiStatus.FAIL})
_REPORT_STATUSES = frozenset(
    {ApiStatus.DELIVERED, ApiStatus.FAIL, ApiStatus.TIMEOUT, ApiStatus.WAITING}
)
_UNKNOWN_STATUSES = frozenset({ApiStatus.WAITING, ApiStatus.FAIL})
_OPTION_TYPES = (str, int, float, bool)
_ADAPTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
_OPTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MMP_TIME = re.compile(r"[0-9]{12}")
_REQUIRED_MEMBERS = ("login", "send", "report", "destroy")
_PROBES = ("test_connection", "test_credentials", "test_proxy")
_KINDS = "TransientError, ThrottledError, PermanentError or AuthError"
#: Secret values shorter than this are not searched for: they would match by chance.
_MIN_SECRET_LEN = 4
_POLL_S = 0.1
_WHEN = "\x00"  # separates where a text was seen from when (repr after login, ...)


class Outcome(enum.StrEnum):
    """How one check ended."""

    PASS = "pass"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check's outcome and a message saying what was checked or what is wrong."""

    name: str
    outcome: Outcome
    message: str

    @property
    def failed(self) -> bool:
        return self.outcome is Outcome.FAIL

    def __str__(self) -> str:
        lines = self.message.splitlines() or [""]
        head = f"{self.outcome.value.upper():<5} {self.name:<12} {lines[0]}"
        return "\n".join([head, *(" " * 19 + line for line in lines[1:])])


@dataclass(frozen=True, slots=True)
class Report:
    """The outcome of every check run on one adapter; ``ok`` when none failed."""

    adapter: str
    checks: tuple[CheckResult, ...]

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def failures(self) -> tuple[CheckResult, ...]:
        return tuple(c for c in self.checks if c.failed)

    def __getitem__(self, name: str) -> CheckResult:
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(f"no check {name!r} in this report (checks: {', '.join(CHECKS)})")

    def __str__(self) -> str:
        counts = {o: sum(1 for c in self.checks if c.outcome is o) for o in Outcome}
        head = (
            f"conformance of adapter {self.adapter!r}: {counts[Outcome.PASS]} passed, "
            f"{counts[Outcome.FAIL]} failed, {counts[Outcome.SKIP]} skipped"
        )
        return "\n".join([head, *(f"  {c}".replace("\n", "\n  ") for c in self.checks)])


class KitOptions(TypedDict, total=False):
    """The keyword arguments of :class:`Conformance` (its docstring says what each does)."""

    secret_key: str
    bad_secret_key: str | None
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


def build(
    cls: type[A],
    options: Mapping[str, Any] | None = None,
    *,
    account_name: str = "kit",
    account_id: int = 0,
) -> A:
    """Build an adapter the way the registry does for an account of the accounts file.

    ``options`` is the account's ``[account.options]`` table as TOML gives it: it is checked
    against ``cls.meta.options`` by :func:`mta.config.build_options` (unknown options, missing
    required ones, wrong types and unset ``${ENV}`` references raise
    :class:`~mta.config.ConfigError`, defaults are filled in), then the class is called as
    :func:`mta.registry.build_adapter` calls it: ``cls(options)``, or
    ``cls(options, AdapterContext(account_name, account_id, ReceiptSink(account_name)))`` when
    its constructor takes a second argument. A constructor that refuses its options with
    ``ValueError``, ``TypeError`` or ``KeyError`` raises :class:`~mta.config.ConfigError`, as
    the registry reports it. The receipt sink is unbound: pushes are dropped (the kit binds it).
    """
    where = f"account {account_name!r}"
    resolved, secrets = build_options(options or {}, cls.meta, where)
    account = Account(
        id=account_id,
        name=account_name,
        adapter=cls.meta.name,
        options=resolved,
        secret_options=secrets,
    )
    try:
        return cast(A, build_adapter(cls, account))
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(
            f"{where}: adapter {cls.meta.name!r} refused its options: {exc}"
        ) from None


def discoverable(name: str) -> type[Adapter]:
    """The adapter class installed under entry point ``name`` of group ``mta.adapters``.

    Raises :class:`AssertionError` saying why the MTA would not see it: not installed, not
    importable, no ``AdapterMeta``, or ``meta.name`` different from the entry-point name.
    """
    found = discover()
    if name in found:
        return found[name]
    points = list(entry_points(group=ENTRY_POINT_GROUP, name=name))
    if not points:
        installed = ", ".join(sorted(found)) or "none"
        raise AssertionError(
            f"no entry point {name!r} in group {ENTRY_POINT_GROUP!r} (installed: {installed}); "
            f'declare it under [project.entry-points."{ENTRY_POINT_GROUP}"] and install the '
            "package (pip install -e .)"
        )
    point = points[0]
    try:
        cls = point.load()
    except Exception as exc:
        raise AssertionError(
            f"entry point {name} = {point.value!r} does not load: {type(exc).__name__}: {exc}"
        ) from exc
    meta = getattr(cls, "meta", None)
    if not isinstance(meta, AdapterMeta):
        raise AssertionError(f"{point.value} has no class attribute meta: AdapterMeta")
    raise AssertionError(
        f"entry point {name!r} loads an adapter whose meta.name is {meta.name!r}; they must match"
    )


async def check_adapter(
    adapter: type[Adapter] | AdapterFactory,
    options: Mapping[str, Any] | None = None,
    **kwargs: Unpack[KitOptions],
) -> Report:
    """Run every check on an adapter; shorthand for ``Conformance(...).run_all()``."""
    return await Conformance(adapter, options, **kwargs).run_all()


async def assert_conformant(
    adapter: type[Adapter] | AdapterFactory,
    options: Mapping[str, Any] | None = None,
    **kwargs: Unpack[KitOptions],
) -> Report:
    """Run every check; raise :class:`AssertionError` with the whole report when one fails."""
    report = await check_adapter(adapter, options, **kwargs)
    if not report.ok:
        raise AssertionError(str(report))
    return report


class _Failed(Exception):
    """Ends a check with one more problem."""


class _Skipped(Exception):
    """Ends a check as skipped."""


class _CallError(Exception):
    """An adapter call raised ``exc``; ``what`` names the call."""

    def __init__(self, what: str, exc: Exception) -> None:
        super().__init__(what)
        self.what = what
        self.exc = exc


@dataclass(eq=False)
class _Check:
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
        raise _Failed(text)

    def skip(self, why: str) -> NoReturn:
        raise _Skipped(why)

    def finish(self) -> CheckResult:
        if self.problems:
            if len(self.problems) == 1:
                message = self.problems[0]
            else:
                message = "\n".join(f"- {p}" for p in self.problems)
            return CheckResult(self.name, Outcome.FAIL, message)
        if self.skipped:
            return CheckResult(self.name, Outcome.SKIP, self.skipped)
        return CheckResult(self.name, Outcome.PASS, "; ".join(self.notes) or CHECKS[self.name])


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


def _describe(what: str, exc: BaseException) -> str:
    if isinstance(exc, AdapterError):
        return f"{what} raised {type(exc).__name__}: {exc.detail}"
    return (
        f"{what} raised {type(exc).__name__}: {exc} — adapters raise only the kinds of "
        f"mta.adapter ({_KINDS}); the core treats anything else as an adapter bug"
    )


def _fits(value: Any, kind: type) -> bool:
    """Whether a default is of its option's type (an int is a fine float; a bool no int)."""
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, int | float)
    return isinstance(value, kind)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class Conformance:
    """The conformance checks for one adapter and its partner endpoint.

    ``adapter`` is the adapter class, built for every check by :func:`build` from
    ``options`` (the account's ``[account.options]`` as TOML gives them, checked exactly as
    the MTA checks them), or a factory returning a ready instance (plain or async), for
    adapters that need more set-up; pass ``options`` then too, so the kit knows the values of
    the secret options to look for.

    Keyword arguments:

    ``secret_key``
        Given to ``login()``; the partner endpoint must accept it (login answers True).
    ``bad_secret_key``
        A key the partner refuses: ``login()`` must answer False (NOK). ``None`` skips the
        ``nok_login`` check. The core never calls ``send`` or ``report`` on an account whose
        login was NOK (its messages FAIL with ``LOGIN_NOK``), so neither does the kit.
    ``numbers``, ``batch_size``, ``sender``
        The test messages: ``batch_size`` messages to ``numbers`` (cycled), one plain GSM-7,
        one Unicode, one long (several parts), from ``sender``. Send is called as the worker
        calls it: whole batches of up to ``meta.max_batch``, or one message per call for
        ``SendPattern.LOOP`` adapters.
    ``unknown_ids``
        Partner message ids the partner never issued, for ``report()``.
    ``make_partner_fail``, ``failures``
        A hook that makes the partner endpoint fail every call in the given way
        (:data:`FailureKind`) until it is called with ``None``; the kit calls it for each kind
        in ``failures`` and checks that the adapter raises the matching error kind. Without
        the hook the ``error_kinds`` check only checks what the adapter raised on its own.
    ``final_within_s``
        When above 0, every accepted message must reach a final state (DELIVERED, FAIL or
        TIMEOUT) through ``report()`` within this time; 0 asks ``report()`` once.
    ``call_timeout_s``
        Longest time one adapter call may take.
    ``account_name``, ``account_id``
        The account an instance serves (its :class:`~mta.adapter.AdapterContext`).
    """

    def __init__(
        self,
        adapter: type[Adapter] | AdapterFactory,
        options: Mapping[str, Any] | None = None,
        *,
        secret_key: str = "",
        bad_secret_key: str | None = None,
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
        self.options: Mapping[str, Any] = dict(options or {})
        self.secret_key = secret_key
        self.bad_secret_key = bad_secret_key
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
        self._resolved: Mapping[str, Any] | None = None
        self._raised: list[tuple[str, Exception]] = []
        self._seen: list[tuple[str, str]] = []  # (where, text) searched for secrets
        self._repr_errors: list[str] = []
        self._pushed: dict[str, SmsResult] = {}  # receipts pushed through context.receipts

    # --- running ------------------------------------------------------------------------
    async def run_all(self, *, skip: Collection[str] = ()) -> Report:
        """Run every check (:data:`CHECKS`, in order) except those named in ``skip``."""
        unknown = sorted(set(skip) - set(CHECKS))
        if unknown:
            raise ValueError(f"skip: no check(s) {', '.join(unknown)}; checks: {', '.join(CHECKS)}")
        self._raised.clear()
        self._seen.clear()
        self._repr_errors.clear()
        self._pushed.clear()
        methods: dict[str, Callable[[], Awaitable[CheckResult]]] = {
            "meta": self.check_meta,
            "send": self.check_send,
            "report": self.check_report,
            "unknown_ids": self.check_unknown_ids,
            "nok_login": self.check_nok_login,
            "destroy": self.check_destroy,
            "probes": self.check_probes,
            "error_kinds": self.check_error_kinds,
            "secrets": self.check_secrets,
        }
        results: list[CheckResult] = []
        for name, method in methods.items():
            if name in skip:
                results.append(CheckResult(name, Outcome.SKIP, "skipped by the caller"))
            else:
                results.append(await method())
        return Report(self._adapter_name(), tuple(results))

    def _adapter_name(self) -> str:
        meta = self._meta if self._meta is not None else getattr(self._cls, "meta", None)
        if isinstance(meta, AdapterMeta):
            return meta.name
        return self._cls.__name__ if self._cls is not None else "?"

    @contextlib.asynccontextmanager
    async def _checking(self, name: str) -> AsyncIterator[_Check]:
        check = _Check(name)
        with _trap_logs(self._seen):
            try:
                yield check
            except _Failed as exc:
                check.problem(str(exc))
            except _Skipped as exc:
                check.skipped = str(exc)
            except _CallError as exc:
                detail = _describe(exc.what, exc.exc)
                if isinstance(exc.exc, AdapterError):
                    detail += " (this check needs a healthy partner endpoint)"
                check.problem(detail)
            finally:
                for adapter in list(check.adapters):
                    await self._destroy(check, adapter)
        check.result = check.finish()

    # --- building and calling -----------------------------------------------------------
    async def _new(self, check: _Check) -> Adapter:
        """A fresh instance, destroyed at the end of the check."""
        try:
            if self._cls is not None:
                adapter: Adapter = build(
                    self._cls,
                    self.options,
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
            context.receipts.bind(_KitStore(self._store_pushed))
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

    def _meta_of(self, adapter: Adapter) -> AdapterMeta:
        meta = getattr(type(adapter), "meta", None)
        if not isinstance(meta, AdapterMeta):
            raise _Failed(f"{type(adapter).__name__}.meta is not an AdapterMeta (see check meta)")
        return meta

    async def _call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """One adapter call under the time limit; what it raises is kept for ``error_kinds``."""
        scope = asyncio.timeout(self.call_timeout_s)
        try:
            async with scope:
                pending = call()
                if not inspect.isawaitable(pending):
                    raise _Failed(
                        f"{what} returned a {type(pending).__name__}, not an awaitable: "
                        "adapter methods are coroutines (async def)"
                    )
                return await pending
        except _Failed:
            raise
        except TimeoutError as exc:
            if scope.expired():
                raise _Failed(f"{what} did not return within {self.call_timeout_s:g} s") from None
            self._keep_error(what, exc)
            raise _CallError(what, exc) from exc
        except Exception as exc:
            self._keep_error(what, exc)
            raise _CallError(what, exc) from exc

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
                self._seen.append((f"{name}(adapter){_WHEN}{when}", text))

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

    async def _login(self, check: _Check, adapter: Adapter) -> None:
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

    async def _destroy(self, check: _Check, adapter: Adapter, what: str = "destroy()") -> None:
        if adapter not in check.adapters:
            return
        check.adapters.remove(adapter)
        try:
            await self._call(what, adapter.destroy)
        except _CallError as exc:
            check.problem(_describe(exc.what, exc.exc))
        except _Failed as exc:
            check.problem(str(exc))

    async def _fail_partner(self, kind: FailureKind | None) -> None:
        assert self.make_partner_fail is not None
        outcome = self.make_partner_fail(kind)
        if isinstance(outcome, Awaitable):
            await outcome

    # --- the test messages ----------------------------------------------------------------
    def _messages(self, n: int) -> list[SmsMessage]:
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
            for i in range(n)
        ]

    def _valid(
        self, check: _Check, where: str, result: Any, allowed: frozenset[ApiStatus], call: str
    ) -> bool:
        """Check one result's shape and state; False when it cannot be used further."""
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
        if (
            isinstance(result.sendAt, str)
            and result.sendAt
            and not _MMP_TIME.fullmatch(result.sendAt)
        ):
            check.problem(f"{where}.sendAt is {result.sendAt!r}; expected yyyyMMddHHmm or ''")
        reason = getattr(result, "reason", "")
        if reason not in ("", REASON_SENDER):
            check.problem(f"{where}.reason is {reason!r}; '' or mta.contract.REASON_SENDER")
        elif reason and status is not ApiStatus.FAIL:
            check.problem(
                f"{where}.reason is set, but apiStatus is {status.value}; only FAIL has one"
            )
        count = result.smsMessageCount
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            check.problem(
                f"{where}.smsMessageCount is {count!r}; expected an int >= 0 (0 = unknown)"
            )
        return True

    def _results(self, check: _Check, what: str, response: Any) -> list[Any] | None:
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

    async def _send(self, check: _Check, adapter: Adapter, messages: list[SmsMessage]) -> list[str]:
        """Send as the worker does (batches or a loop); check every answer; the accepted ids."""
        meta = self._meta_of(adapter)
        size = 1 if meta.pattern is SendPattern.LOOP else max(1, meta.max_batch)
        accepted: list[str] = []
        for start in range(0, len(messages), size):
            chunk = messages[start : start + size]
            what = f"send({_plural(len(chunk), 'message')})"
            request = SmsSendRequest(list(chunk))
            response = await self._call(what, functools.partial(adapter.send, request))
            self._look_at_response(what, response)
            results = self._results(check, what, response)
            if results is None:
                continue
            if len(results) != len(chunk):
                check.problem(
                    f"{what} answered {_plural(len(results), 'result')} for "
                    f"{_plural(len(chunk), 'message')}; results[i] must answer messages[i], one "
                    "to one (the core FAILs the whole call as ADAPTER_ERROR, outcome unknown)"
                )
                continue
            for n, result in enumerate(results):
                where = f"{what}: results[{n}]"
                if not self._valid(check, where, result, _SEND_STATUSES, "send()"):
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
        return accepted

    async def _report(
        self,
        check: _Check,
        adapter: Adapter,
        ids: Sequence[str],
        allowed: frozenset[ApiStatus] = _REPORT_STATUSES,
        call: str = "report()",
    ) -> dict[str, SmsResult]:
        """Report as the reporter does (batches or one id a call); the answers by id."""
        meta = self._meta_of(adapter)
        size = 1 if meta.pattern is SendPattern.LOOP else max(1, meta.max_batch)
        answers: dict[str, SmsResult] = {}
        for start in range(0, len(ids), size):
            chunk = list(ids[start : start + size])
            what = f"report({_plural(len(chunk), 'id')})"
            request = SmsReportRequest("", chunk)
            response = await self._call(what, functools.partial(adapter.report, request))
            self._look_at_response(what, response)
            results = self._results(check, what, response)
            if results is None:
                continue
            seen: set[str] = set()
            for n, result in enumerate(results):
                where = f"{what}: results[{n}]"
                if not self._valid(check, where, result, allowed, call):
                    continue
                pid = result.partnerMessageId
                if pid not in chunk:
                    check.problem(
                        f"{where}.partnerMessageId is {pid!r}, which was not asked for; the "
                        "reporter matches answers by partnerMessageId and ignores this one"
                    )
                elif pid in seen:
                    check.problem(f"{what} answered twice for {pid!r}; answer once per id")
                else:
                    seen.add(pid)
                    answers[pid] = result
        return answers

    # --- the checks -----------------------------------------------------------------------
    async def check_meta(self) -> CheckResult:
        """``meta`` is a well-formed :class:`AdapterMeta`; the class has the Adapter members."""
        async with self._checking("meta") as check:
            if self._cls is not None:
                cls: type[Any] = self._cls
                self._check_constructor(check, cls)
            else:
                cls = type(await self._new(check))
            meta = getattr(cls, "meta", None)
            if not isinstance(meta, AdapterMeta):
                check.stop(
                    f"{cls.__name__}.meta is {type(meta).__name__}; declare "
                    "meta: ClassVar[AdapterMeta] = AdapterMeta(...)"
                )
            self._meta = meta
            self._check_meta_fields(check, meta)
            for spec in meta.options:
                if isinstance(spec, OptionSpec):
                    self._check_option(check, spec)
                else:
                    check.problem(f"meta.options holds a {type(spec).__name__}, not an OptionSpec")
            names = [getattr(s, "name", None) for s in meta.options]
            doubled = sorted({str(n) for n in names if names.count(n) > 1})
            if doubled:
                check.problem(f"meta.options declares {', '.join(doubled)} more than once")
            self._check_members(check, cls, meta)
            try:
                orjson.dumps(meta.as_dict())
            except (TypeError, AttributeError) as exc:
                check.problem(f"meta.as_dict() (`mta adapters --json`) fails: {exc}")
            secret = sum(1 for s in meta.options if getattr(s, "secret", False))
            check.note(
                f"{meta.name!r}: {_plural(len(meta.options), 'option')} ({secret} secret), "
                f"pattern {meta.pattern}, max_batch {meta.max_batch}, receipts {meta.receipts}"
            )
        assert check.result is not None
        return check.result

    @staticmethod
    def _check_constructor(check: _Check, cls: type[Any]) -> None:
        try:
            params = [
                p
                for p in inspect.signature(cls).parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            ]
        except (TypeError, ValueError):
            return
        required = [p for p in params if p.default is p.empty]
        if not params:
            check.problem(
                f"{cls.__name__}() takes no positional argument; the registry calls "
                "cls(options) or cls(options, context)"
            )
        elif len(required) > 2:
            check.problem(
                f"{cls.__name__}() requires {len(required)} positional arguments; the registry "
                "gives at most two: options and an AdapterContext"
            )

    @staticmethod
    def _check_meta_fields(check: _Check, meta: AdapterMeta) -> None:
        if not isinstance(meta.name, str) or not _ADAPTER_NAME.fullmatch(meta.name):
            check.problem(
                f"meta.name is {meta.name!r}; a name for accounts.toml and the entry point "
                "(letters, digits, '-', '_', '.')"
            )
        if not isinstance(meta.description, str) or not meta.description.strip():
            check.problem("meta.description is empty; one line for `mta adapters`")
        if not isinstance(meta.default_url, str):
            check.problem(f"meta.default_url is a {type(meta.default_url).__name__}, not a str")
        if not isinstance(meta.pattern, SendPattern):
            check.problem(f"meta.pattern is {meta.pattern!r}; use SendPattern.BATCH or .LOOP")
        if not isinstance(meta.receipts, ReceiptMode):
            check.problem(f"meta.receipts is {meta.receipts!r}; use ReceiptMode.PULL, PUSH or BOTH")
        for name in ("max_batch", "max_concurrency"):
            value = getattr(meta, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                check.problem(f"meta.{name} is {value!r}; it must be an int >= 1")
        if not isinstance(meta.options, Sequence):
            check.stop(f"meta.options is a {type(meta.options).__name__}; a tuple of OptionSpec")
        if not isinstance(meta.extra, Mapping):
            check.problem(f"meta.extra is a {type(meta.extra).__name__}, not a mapping")

    @staticmethod
    def _check_option(check: _Check, spec: OptionSpec) -> None:
        where = f"option {spec.name!r}"
        if not isinstance(spec.name, str) or not _OPTION_NAME.fullmatch(spec.name):
            check.problem(f"{where}: the name must be a TOML bare key like api_key")
        if spec.type not in _OPTION_TYPES:
            check.problem(
                f"{where}: type {getattr(spec.type, '__name__', spec.type)!r}; accounts.toml "
                "options are str, int, float or bool"
            )
            return
        default = spec.default
        if not (spec.required or default is None or _fits(default, spec.type)):
            check.problem(
                f"{where}: default {default!r} is not of type {spec.type.__name__}; the adapter "
                "gets the default as it is"
            )
        if spec.secret and not spec.required and default not in (None, ""):
            check.problem(
                f"{where}: a secret option with a non-empty default: `mta adapters` prints "
                "defaults, and a secret does not belong in code"
            )
        if not isinstance(spec.description, str):
            check.problem(f"{where}: description is not a str")

    @staticmethod
    def _check_members(check: _Check, cls: type[Any], meta: AdapterMeta) -> None:
        for name in _REQUIRED_MEMBERS:
            member = getattr(cls, name, None)
            if member is None:
                check.problem(f"{cls.__name__} has no {name}(); the Adapter protocol needs it")
            elif not inspect.iscoroutinefunction(member):
                check.problem(f"{cls.__name__}.{name} is not a coroutine function (async def)")
        for name in (*_PROBES, "webhook"):
            member = getattr(cls, name, None)
            if member is not None and not inspect.iscoroutinefunction(member):
                check.problem(f"{cls.__name__}.{name} is not a coroutine function (async def)")
        pushes = meta.receipts in (ReceiptMode.PUSH, ReceiptMode.BOTH)
        if pushes and getattr(cls, "webhook", None) is None:
            check.problem(
                f"meta.receipts is {meta.receipts}, but {cls.__name__} has no "
                "async webhook(request) -> list[SmsResult] to take the pushes"
            )

    async def check_send(self) -> CheckResult:
        """``login(secret_key)`` is OK, then ``send()`` answers ``results[i]`` for
        ``messages[i]``: as many results as messages, each OK (with its own non-empty
        ``partnerMessageId``) or FAIL (saying why), every field of the right type."""
        async with self._checking("send") as check:
            adapter = await self._new(check)
            await self._login(check, adapter)
            messages = self._messages(self.batch_size)
            accepted = await self._send(check, adapter, messages)
            self._look_at(adapter, "after send")
            how = "one per call" if self._meta_of(adapter).pattern is SendPattern.LOOP else "batch"
            check.note(
                f"{len(accepted)} of {_plural(len(messages), 'message')} ({how}) accepted with "
                "unique ids, the rest FAIL with a reason; every result legal"
            )
        assert check.result is not None
        return check.result

    async def check_report(self) -> CheckResult:
        """``report()`` on the ids ``send()`` accepted answers only those ids, with
        DELIVERED, FAIL, TIMEOUT or WAITING (never OK); a pull adapter answers at least one;
        with ``final_within_s`` every id reaches a final state in time."""
        async with self._checking("report") as check:
            adapter = await self._new(check)
            await self._login(check, adapter)
            scratch = _Check("send")
            accepted = await self._send(scratch, adapter, self._messages(min(self.batch_size, 3)))
            if not accepted:
                check.stop(
                    "nothing to report on: send() accepted no message"
                    + (f" ({scratch.problems[0]})" if scratch.problems else "")
                )
            meta = self._meta_of(adapter)
            answers = await self._answers(check, adapter, meta, accepted)
            if not answers and meta.receipts is ReceiptMode.PULL:
                check.problem(
                    f"report() answered for none of the {len(accepted)} accepted ids; with "
                    "pull receipts those messages could only end TIMEOUT"
                )
            finals = {pid for pid, r in answers.items() if r.apiStatus.final}
            if self.final_within_s > 0:
                deadline = time.monotonic() + self.final_within_s
                while len(finals) < len(accepted) and time.monotonic() < deadline:
                    await asyncio.sleep(_POLL_S)
                    waiting = [pid for pid in accepted if pid not in finals]
                    answers.update(await self._answers(check, adapter, meta, waiting))
                    finals = {pid for pid, r in answers.items() if r.apiStatus.final}
                if len(finals) < len(accepted):
                    last = sorted({answers[p].apiStatus.value for p in accepted if p in answers})
                    check.problem(
                        f"{len(accepted) - len(finals)} of {len(accepted)} accepted messages had "
                        f"no final state after {self.final_within_s:g} s (answers: "
                        f"{', '.join(last) or 'none'})"
                    )
            if self._pushed and meta.receipts is ReceiptMode.PULL:
                check.problem(
                    "the adapter pushed receipts through context.receipts, but meta.receipts is "
                    "pull, so the reporter never reads them; declare ReceiptMode.BOTH"
                )
            states = sorted({r.apiStatus.value for r in answers.values()})
            check.note(
                f"{len(answers)} of {len(accepted)} ids answered ({', '.join(states) or 'none'})"
                + (
                    "; receipts are pushed, so the core does not call report()"
                    if meta.receipts is ReceiptMode.PUSH
                    else ""
                )
            )
        assert check.result is not None
        return check.result

    async def _answers(
        self, check: _Check, adapter: Adapter, meta: AdapterMeta, ids: Sequence[str]
    ) -> dict[str, SmsResult]:
        """What the reporter would learn: report() answers, and for adapters that take pushed
        receipts, those pushed through ``context.receipts`` (a pushed final wins)."""
        answers = await self._report(check, adapter, ids)
        if meta.receipts is not ReceiptMode.PULL:
            answers.update({pid: self._pushed[pid] for pid in ids if pid in self._pushed})
        return answers

    async def check_unknown_ids(self) -> CheckResult:
        """``report()`` on ids the partner never issued answers nothing, WAITING or FAIL for
        them (never OK, DELIVERED or TIMEOUT) and raises nothing but the declared kinds; next
        to a real id it still answers the real one (one forgotten id must not hide others)."""
        async with self._checking("unknown_ids") as check:
            adapter = await self._new(check)
            await self._login(check, adapter)
            try:
                answers = await self._report(
                    check, adapter, self.unknown_ids, _UNKNOWN_STATUSES, "report() of unknown ids"
                )
            except _CallError as exc:
                if not isinstance(exc.exc, AdapterError):
                    raise
                check.note(
                    f"{exc.what} raised {type(exc.exc).__name__} (a declared kind: the reporter "
                    "logs it and leaves the ids WAITING)"
                )
            else:
                states = sorted({r.apiStatus.value for r in answers.values()})
                check.note(
                    f"{_plural(len(self.unknown_ids), 'unknown id')} answered with "
                    f"{', '.join(states) or 'nothing'}"
                )
            meta = self._meta_of(adapter)
            if meta.pattern is SendPattern.BATCH and meta.max_batch > 1:
                await self._mixed(check, adapter)
        assert check.result is not None
        return check.result

    async def _mixed(self, check: _Check, adapter: Adapter) -> None:
        accepted = await self._send(_Check("send"), adapter, self._messages(1))
        if not accepted:
            return
        ids = [accepted[0], self.unknown_ids[0]]
        what = "report() with one real id and one unknown id"
        try:
            await self._report(check, adapter, ids, _REPORT_STATUSES)
        except _CallError as exc:
            if not isinstance(exc.exc, AdapterError):
                raise
            check.problem(
                f"{what} raised {type(exc.exc).__name__}: {exc.exc.detail}; the reporter then "
                "learns nothing for the whole call, so one id the partner forgot holds back "
                "every message polled with it (answer FAIL or nothing for that id instead)"
            )
            return
        check.note("a real id next to an unknown one is still answered")

    async def check_nok_login(self) -> CheckResult:
        """``login(bad_secret_key)`` answers False (NOK). The core then marks the account NOK
        and never calls ``send`` or ``report`` on it (its messages FAIL with ``LOGIN_NOK``);
        the kit likewise only destroys the instance. An :class:`AuthError` is accepted too
        (the core treats a permanent login error as NOK), a transient error is not."""
        async with self._checking("nok_login") as check:
            if self.bad_secret_key is None:
                check.skip("no bad_secret_key= given: pass a key the partner endpoint refuses")
            adapter = await self._new(check)
            try:
                ok = await self._call(
                    "login(bad_secret_key)", functools.partial(adapter.login, self.bad_secret_key)
                )
            except _CallError as exc:
                if isinstance(exc.exc, PermanentError):
                    check.note(
                        f"login(bad_secret_key) raised {type(exc.exc).__name__}, which the core "
                        "treats as NOK (answering False is the documented way)"
                    )
                elif isinstance(exc.exc, TransientError):
                    check.stop(
                        f"login(bad_secret_key) raised {type(exc.exc).__name__}: a refused key "
                        "is not transient (the core would retry the login forever); answer False"
                    )
                else:
                    raise
            else:
                if ok is True:
                    check.stop(
                        "login(bad_secret_key) answered True (OK): a refused key must answer "
                        "False (NOK), so the core stops using the account"
                    )
                if ok is not False:
                    check.stop(f"login(bad_secret_key) answered {ok!r}; expected False (NOK)")
                check.note(
                    "login(bad_secret_key) answered NOK; the core never calls send() or "
                    "report() on such an account"
                )
            self._look_at(adapter, "after a NOK login")
        assert check.result is not None
        return check.result

    async def check_destroy(self) -> CheckResult:
        """``destroy()`` works on an instance never logged in and on a used one, and a second
        ``destroy()`` in a row is harmless (the core may destroy an account more than once)."""
        async with self._checking("destroy") as check:
            unused = await self._new(check)
            await self._destroy(check, unused, "destroy() of an instance never logged in")
            check.adapters.append(unused)
            await self._destroy(check, unused, "a second destroy() of that instance")
            used = await self._new(check)
            await self._login(check, used)
            await self._send(_Check("send"), used, self._messages(1))
            await self._destroy(check, used, "destroy() after login and send")
            self._look_at(used, "after destroy")
            check.adapters.append(used)
            await self._destroy(check, used, "a second destroy() after login and send")
            check.note("destroy() works unused, used, and twice in a row")
        assert check.result is not None
        return check.result

    async def check_probes(self) -> CheckResult:
        """``test_connection``, ``test_credentials`` and ``test_proxy``, where defined, answer
        a bool without raising, called before login as ``mta accounts test`` calls them."""
        async with self._checking("probes") as check:
            adapter = await self._new(check)
            found: list[str] = []
            for name in _PROBES:
                probe = getattr(adapter, name, None)
                if probe is None:
                    continue
                try:
                    answer = await self._call(f"{name}()", probe)
                except _CallError as exc:
                    check.problem(
                        _describe(exc.what, exc.exc) + "; a probe answers False rather than raise"
                    )
                    continue
                if not isinstance(answer, bool):
                    check.problem(f"{name}() answered {answer!r}; expected True or False")
                    continue
                found.append(f"{name}={answer}")
            if not found and not check.problems:
                check.skip("the adapter defines none of test_connection/credentials/proxy")
            check.note(", ".join(found))
        assert check.result is not None
        return check.result

    async def check_error_kinds(self) -> CheckResult:
        """Everything the adapter raised so far (in this check and the ones before) is a
        :class:`TransientError` or :class:`PermanentError` kind with a detail; with
        ``make_partner_fail``, each partner failure in ``failures`` maps to its kind."""
        async with self._checking("error_kinds") as check:
            if self.make_partner_fail is None:
                check.note(
                    "no partner failure simulated (pass make_partner_fail= to check transient, "
                    "throttled, permanent and auth)"
                )
            else:
                for kind in self.failures:
                    await self._provoke(check, kind)
                check.note(f"partner failures map right: {', '.join(self.failures)}")
            self._judge_raised(check)
        assert check.result is not None
        return check.result

    def _judge_raised(self, check: _Check) -> None:
        for what, exc in self._raised:
            if not isinstance(exc, AdapterError):
                check.problem(_describe(what, exc))
            elif not isinstance(exc, TransientError | PermanentError):
                check.problem(
                    f"{what} raised {type(exc).__name__}, an AdapterError of no kind: raise "
                    f"{_KINDS} (or a subclass), so the core knows whether to retry"
                )
            elif not isinstance(exc.detail, str) or not exc.detail.strip():
                check.problem(
                    f"{what} raised {type(exc).__name__} without a detail; it becomes the "
                    "messages' partnerDetail"
                )
            elif (
                isinstance(exc, ThrottledError)
                and exc.retry_after is not None
                and (not isinstance(exc.retry_after, int | float) or exc.retry_after < 0)
            ):
                check.problem(
                    f"{what} raised ThrottledError with retry_after={exc.retry_after!r}; "
                    "seconds >= 0 or None"
                )
        kinds = sorted({type(e).__name__ for _, e in self._raised})
        check.note(f"raised so far: {', '.join(kinds) or 'nothing'}")

    async def _provoke(self, check: _Check, kind: FailureKind) -> None:
        """One partner failure: send (or for ``auth`` login) must raise the matching kind."""
        adapter = await self._new(check)
        if kind != "auth":
            await self._login(check, adapter)
        await self._fail_partner(kind)
        try:
            if kind == "auth":
                try:
                    ok = await self._call(
                        "login(secret_key) while the partner refuses credentials",
                        functools.partial(adapter.login, self.secret_key),
                    )
                except _CallError as exc:
                    self._expect(check, kind, exc.what, exc.exc)
                    return
                if ok is False:
                    return
            what = f"send(1 message) while the partner fails ({kind})"
            request = SmsSendRequest(self._messages(1))
            try:
                response = await self._call(what, functools.partial(adapter.send, request))
            except _CallError as exc:
                self._expect(check, kind, exc.what, exc.exc)
            else:
                self._look_at_response(what, response)
                self._expect_results(check, kind, what, response)
            if kind != "auth":
                with contextlib.suppress(_CallError):  # judged with the rest of what was raised
                    await self._call(
                        f"report() while the partner fails ({kind})",
                        functools.partial(
                            adapter.report, SmsReportRequest("", [self.unknown_ids[0]])
                        ),
                    )
        finally:
            await self._fail_partner(None)

    @staticmethod
    def _expect(check: _Check, kind: FailureKind, what: str, exc: Exception) -> None:
        expected: dict[FailureKind, tuple[type[AdapterError], str]] = {
            "transient": (TransientError, "TransientError (the core retries with backoff)"),
            "throttled": (ThrottledError, "ThrottledError (the core slows the account down)"),
            "permanent": (PermanentError, "PermanentError (the core FAILs the messages)"),
            "auth": (AuthError, "AuthError, or login() answering False"),
        }
        cls, text = expected[kind]
        if isinstance(exc, cls):
            return
        if not isinstance(exc, AdapterError):
            return  # judged with everything else that was raised
        check.problem(
            f"the partner failed ({kind}) and {what} raised {type(exc).__name__}; expected {text}"
        )

    def _expect_results(self, check: _Check, kind: FailureKind, what: str, response: Any) -> None:
        results = self._results(check, what, response)
        if results is None:
            return
        fails = [
            r
            for r in results
            if isinstance(r, SmsResult)
            and r.apiStatus is ApiStatus.FAIL
            and (r.partnerDetail or r.partnerStatus)
        ]
        if kind == "permanent" and results and len(fails) == len(results):
            return  # a per-message rejection is a fine answer to a permanent failure
        states = ", ".join(str(getattr(r, "apiStatus", r)) for r in results) or "no results"
        advice = {
            "transient": "raise TransientError: FAILing them would lose messages a retry saves",
            "throttled": "raise ThrottledError (with retry_after when the partner says it)",
            "permanent": "raise PermanentError, or answer FAIL with the partner's detail",
            "auth": "raise AuthError (or answer False from login)",
        }[kind]
        check.problem(f"the partner failed ({kind}) but {what} answered {states}; {advice}")

    async def check_secrets(self) -> CheckResult:
        """No value of an option declared secret in ``meta.options``, nor the secret keys given
        to login, appears in ``repr()``/``str()`` of an instance (built, logged in, used,
        destroyed), in any log record that reached the root logger, in what the adapter
        raised, or in the results it answered — during this check and the ones before."""
        async with self._checking("secrets") as check:
            adapter = await self._new(check)
            with contextlib.suppress(_CallError, _Failed):
                await self._login(check, adapter)
                accepted = await self._send(_Check("send"), adapter, self._messages(2))
                self._look_at(adapter, "after send")
                if accepted:
                    await self._report(_Check("report"), adapter, accepted)
            await self._destroy(check, adapter)
            self._look_at(adapter, "after destroy")
            secrets = self._secret_values()
            for problem in self._repr_errors:
                check.problem(problem)
            if not secrets:
                check.skip(
                    "nothing to look for: no secret option has a value, and the secret keys are "
                    f"empty or shorter than {_MIN_SECRET_LEN} characters"
                )
            hits: dict[tuple[str, str], list[str]] = {}
            whens: dict[tuple[str, str], list[str]] = {}
            for label, value in secrets.items():
                for seen, text in self._seen:
                    if value in text:
                        where, _, when = seen.partition(_WHEN)
                        hits.setdefault((label, where), []).append(text)
                        moments = whens.setdefault((label, where), [])
                        if when and when not in moments:
                            moments.append(when)
            for (label, where), texts in hits.items():
                shown = texts[0]
                for value in sorted(secrets.values(), key=len, reverse=True):  # nor the report
                    shown = shown.replace(value, MASK)
                shown = shown if len(shown) <= 160 else shown[:159] + "…"
                moments = whens[(label, where)]
                when = f" ({', '.join(moments)})" if moments else ""
                more = (
                    f" (and {len(texts) - 1} more like it)" if len(texts) > 1 and not when else ""
                )
                check.problem(f"the {label} appears in {where}{when}: {shown!r}{more}")
            check.note(
                f"{_plural(len(secrets), 'secret value')} ({', '.join(secrets)}) absent from "
                f"{_plural(len(self._seen), 'repr, log record, error and result text')}"
            )
        assert check.result is not None
        return check.result

    def _secret_values(self) -> dict[str, str]:
        """Label → value of every secret the kit knows (never printed: only the labels are)."""
        meta = self._meta
        options: Mapping[str, Any] = self.options
        if self._cls is not None and meta is not None:
            with contextlib.suppress(Exception):
                options, _ = build_options(self.options, meta, "kit")  # ${ENV} resolved
        values: dict[str, str] = {}
        if meta is not None:
            for spec in meta.options:
                value = options.get(spec.name)
                if getattr(spec, "secret", False) and value not in (None, ""):
                    values[f"secret option {spec.name!r}"] = str(value)
        values["secret_key"] = self.secret_key
        if self.bad_secret_key is not None:
            values["bad_secret_key"] = self.bad_secret_key
        return {k: v for k, v in values.items() if len(v) >= _MIN_SECRET_LEN}


class _KitStore:
    """The kit's stand-in for the MTA's Redis store behind ``context.receipts``: pushed
    receipts go to the kit's checks, shared state lives in memory (TTLs are not enforced)."""

    def __init__(self, push: Callable[[str, dict[str, bytes]], Awaitable[int]]) -> None:
        self._push = push
        self._state: dict[tuple[str, str], bytes] = {}

    async def push_receipts(self, account: str, receipts: dict[str, bytes]) -> int:
        return await self._push(account, receipts)

    async def put_state(self, account: str, values: dict[str, bytes], ttl_s: int) -> None:
        for key, value in values.items():
            self._state[(account, key)] = value

    async def get_state(self, account: str, keys: Sequence[str]) -> dict[str, bytes]:
        return {k: self._state[(account, k)] for k in keys if (account, k) in self._state}
