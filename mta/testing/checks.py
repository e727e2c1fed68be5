"""The conformance checks an adapter must pass, :class:`Conformance`, and one-call runners."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, Unpack

import orjson

from mta.adapter import (
    Adapter,
    AdapterError,
    AdapterMeta,
    OptionSpec,
    PermanentError,
    ReceiptMode,
    SendPattern,
    TransientError,
)
from mta.contract import SmsResult
from mta.testing.base import AdapterFactory, CallError, Check, Failed, KitOptions, describe
from mta.testing.build import constructor_problem
from mta.testing.errors import ErrorChecks
from mta.testing.meta import PROBES, check_members, check_meta_fields, check_option
from mta.testing.report import CHECKS, CheckResult, Report, Verdict
from mta.testing.results import REPORT_STATUSES, UNKNOWN_STATUSES, plural
from mta.testing.secrets import SecretChecks

__all__ = ["Conformance", "Skip", "assert_conformant", "check_adapter"]

_POLL_S = 0.1
#: What ``skip=`` takes: check names, or check names with the reason each is skipped.
Skip = Collection[str] | Mapping[str, str]


class Conformance(ErrorChecks, SecretChecks):
    """The conformance checks for one adapter and its partner endpoint.

    ``adapter`` is the adapter class, built for every check by :func:`~mta.testing.build`
    from ``options`` (the account's ``[account.options]`` as TOML gives them, checked exactly
    as the MTA checks them), or a factory returning a ready instance (plain or async), for
    adapters that need more set-up; pass ``options`` then too, so the kit knows the values of
    the secret options to look for.

    Keyword arguments:

    ``secret_key``
        Given to ``login()``; the partner endpoint must accept it (login answers True).
    ``bad_secret_key``
        A key the partner refuses: ``login()`` must answer False (NOK).
    ``bad_options``
        For partners that authenticate by options (an API key, a password): the account's
        options with credentials the partner refuses; ``login(secret_key)`` on an instance
        built from them must answer False (NOK). Needs the class, not a factory. Without
        ``bad_secret_key`` and ``bad_options`` the ``nok_login`` check is skipped. The core
        never calls ``send`` or ``report`` on an account whose login was NOK (its messages
        FAIL with ``LOGIN_NOK``), so neither does the kit.
    ``numbers``, ``batch_size``, ``sender``
        The test messages: ``batch_size`` messages to ``numbers`` (cycled), one plain GSM-7,
        one Unicode, one long (several parts), from ``sender``. Send is called as the worker
        calls it: whole batches of up to ``meta.max_batch``, or one message per call for
        ``SendPattern.LOOP`` adapters. The ``concurrency`` check sends more: a full
        ``max_batch`` and ``max_concurrency`` calls at once.
    ``unknown_ids``
        Partner message ids the partner never issued, for ``report()``.
    ``make_partner_fail``, ``failures``
        A hook that makes the partner endpoint fail every call in the given way
        (:data:`~mta.testing.FailureKind`) until it is called with ``None``; the kit calls it
        for each kind in ``failures`` and checks that the adapter raises the matching error
        kind. Without the hook the ``error_kinds`` check only checks what the adapter raised
        on its own.
    ``final_within_s``
        When above 0, every accepted message must reach a final state (DELIVERED, FAIL or
        TIMEOUT) through ``report()`` within this time; 0 asks ``report()`` once.
    ``call_timeout_s``
        Longest time one adapter call may take.
    ``account_name``, ``account_id``
        The account an instance serves (its :class:`~mta.adapter.AdapterContext`).
    """

    # --- running ------------------------------------------------------------------------
    async def run_all(self, *, skip: Skip = ()) -> Report:
        """Run every check (:data:`~mta.testing.CHECKS`, in order) except those named in
        ``skip``: names, or a mapping of name to the reason (shown in the report)."""
        reasons = _skip_reasons(skip)
        self._reset()
        methods: dict[str, Callable[[], Awaitable[CheckResult]]] = {
            "meta": self.check_meta,
            "send": self.check_send,
            "report": self.check_report,
            "unknown_ids": self.check_unknown_ids,
            "concurrency": self.check_concurrency,
            "nok_login": self.check_nok_login,
            "destroy": self.check_destroy,
            "probes": self.check_probes,
            "error_kinds": self.check_error_kinds,
            "secrets": self.check_secrets,
        }
        assert list(methods) == list(CHECKS)
        results: list[CheckResult] = []
        for name, method in methods.items():
            if name in reasons:
                why = f": {reasons[name]}" if reasons[name] else ""
                results.append(CheckResult(name, Verdict.SKIP, f"skipped by the caller{why}"))
            else:
                results.append(await method())
        return Report(self._adapter_name(), tuple(results))

    # --- meta -------------------------------------------------------------------------------
    async def check_meta(self) -> CheckResult:
        """``meta`` is a well-formed :class:`AdapterMeta`; the class has the Adapter members
        and a constructor the registry can call."""
        async with self._checking("meta") as check:
            if self._cls is not None:
                cls: type[Any] = self._cls
                problem = constructor_problem(cls)
                if problem is not None:
                    check.problem(problem)
            else:
                cls = type(await self._new(check))
            meta = getattr(cls, "meta", None)
            if not isinstance(meta, AdapterMeta):
                check.stop(
                    f"{cls.__name__}.meta is {type(meta).__name__}; declare "
                    "meta: ClassVar[AdapterMeta] = AdapterMeta(...)"
                )
            self._meta = meta
            if not check_meta_fields(check, meta):
                check.stop(check.problems[-1])
            for spec in meta.options:
                if isinstance(spec, OptionSpec):
                    check_option(check, spec)
                else:
                    check.problem(f"meta.options holds a {type(spec).__name__}, not an OptionSpec")
            names = [getattr(s, "name", None) for s in meta.options]
            doubled = sorted({str(n) for n in names if names.count(n) > 1})
            if doubled:
                check.problem(f"meta.options declares {', '.join(doubled)} more than once")
            check_members(check, cls, meta)
            try:
                orjson.dumps(meta.as_dict())
            except (TypeError, AttributeError) as exc:
                check.problem(f"meta.as_dict() (`mta adapters --json`) fails: {exc}")
            secret = sum(1 for s in meta.options if getattr(s, "secret", False))
            check.note(
                f"{meta.name!r}: {plural(len(meta.options), 'option')} ({secret} secret), "
                f"pattern {meta.pattern}, max_batch {meta.max_batch}, receipts {meta.receipts}"
            )
        assert check.result is not None
        return check.result

    # --- send and report ---------------------------------------------------------------------
    async def check_send(self) -> CheckResult:
        """``login(secret_key)`` is OK, then ``send()`` answers ``results[i]`` for
        ``messages[i]``: as many results as messages, each OK (with its own non-empty
        ``partnerMessageId``) or FAIL (saying why), every field of the right type, a
        ``reason`` only where it makes sense."""
        async with self._checking("send") as check:
            adapter = await self._new(check)
            await self._login(check, adapter)
            messages = self._messages(self.batch_size)
            accepted = await self._send(check, adapter, messages)
            self._look_at(adapter, "after send")
            how = "one per call" if self._meta_of(adapter).pattern is SendPattern.LOOP else "batch"
            check.note(
                f"{len(accepted)} of {plural(len(messages), 'message')} ({how}) accepted with "
                "unique ids, the rest FAIL with a reason; every result legal"
            )
        assert check.result is not None
        return check.result

    async def check_report(self) -> CheckResult:
        """``report()`` on a **second instance** (as in a reporter process, which never sent
        them) on the ids ``send()`` accepted answers only those ids, with DELIVERED, FAIL,
        TIMEOUT or WAITING (never OK); a pull adapter answers at least one; with
        ``final_within_s`` every id reaches a final state in time; and the sending instance,
        asked afterwards, agrees (an adapter that remembers ids in memory does not)."""
        async with self._checking("report") as check:
            sender = await self._new(check)
            await self._login(check, sender)
            scratch = Check("send")
            accepted = await self._send(scratch, sender, self._messages(min(self.batch_size, 3)))
            if not accepted:
                check.stop(
                    "nothing to report on: send() accepted no message"
                    + (f" ({scratch.problems[0]})" if scratch.problems else "")
                )
            reporter = await self._new(check)
            await self._login(check, reporter)
            meta = self._meta_of(reporter)
            answers = await self._answers(check, reporter, meta, accepted)
            if not answers and meta.receipts is ReceiptMode.PULL:
                check.problem(
                    f"report() on a second instance answered for none of the {len(accepted)} "
                    "accepted ids; with pull receipts those messages could only end TIMEOUT "
                    "(the reporter that asks is rarely the process that sent: keep no "
                    "per-message state in memory)"
                )
            finals = {pid for pid, r in answers.items() if r.apiStatus.final}
            if self.final_within_s > 0:
                deadline = time.monotonic() + self.final_within_s
                while len(finals) < len(accepted) and time.monotonic() < deadline:
                    await asyncio.sleep(_POLL_S)
                    waiting = [pid for pid in accepted if pid not in finals]
                    answers.update(await self._answers(check, reporter, meta, waiting))
                    finals = {pid for pid, r in answers.items() if r.apiStatus.final}
                if len(finals) < len(accepted):
                    last = sorted({answers[p].apiStatus.value for p in accepted if p in answers})
                    check.problem(
                        f"{len(accepted) - len(finals)} of {len(accepted)} accepted messages had "
                        f"no final state after {self.final_within_s:g} s (answers: "
                        f"{', '.join(last) or 'none'})"
                    )
            await self._agree(check, sender, reporter, meta, accepted, answers)
            if self._pushed and meta.receipts is ReceiptMode.PULL:
                check.problem(
                    "the adapter pushed receipts through context.receipts, but meta.receipts is "
                    "pull, so the reporter never reads them; declare ReceiptMode.BOTH"
                )
            states = sorted({r.apiStatus.value for r in answers.values()})
            check.note(
                f"{len(answers)} of {len(accepted)} ids answered by a second instance "
                f"({', '.join(states) or 'none'})"
                + (
                    "; receipts are pushed, so the core does not call report()"
                    if meta.receipts is ReceiptMode.PUSH
                    else ""
                )
            )
        assert check.result is not None
        return check.result

    async def _agree(
        self,
        check: Check,
        sender: Adapter,
        reporter: Adapter,
        meta: AdapterMeta,
        ids: list[str],
        answers: dict[str, SmsResult],
    ) -> None:
        """The sending instance, asked after the second one, must not know more: where it
        answers an id the second instance left out, or a final state the second instance
        (asked once more) contradicts, the adapter answers from its memory."""
        if meta.receipts is ReceiptMode.PUSH:
            return
        mine = await self._answers(Check("report"), sender, meta, ids)

        def differs(pid: str) -> bool:
            theirs = answers.get(pid)
            if theirs is None:
                return True
            status = mine[pid].apiStatus
            return status.final and theirs.apiStatus is not status

        suspects = [pid for pid in mine if differs(pid)]
        if suspects:
            answers.update(await self._answers(check, reporter, meta, suspects))
            suspects = [pid for pid in suspects if differs(pid)]
        if not suspects:
            return
        pid = suspects[0]
        theirs = answers.get(pid)
        said = f"answered {theirs.apiStatus.value}" if theirs is not None else "left it out"
        check.problem(
            f"the sending instance answers {mine[pid].apiStatus.value} for "
            f"{plural(len(suspects), 'accepted id')} (e.g. {pid!r}) where a second instance "
            f"{said}: report() must work for ids another instance sent (the reporter is "
            "another process); keep no per-message state in memory, let the partner (or the "
            "id itself, or context.receipts.remember) know"
        )

    async def _answers(
        self, check: Check, adapter: Adapter, meta: AdapterMeta, ids: Sequence[str]
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
                    check, adapter, self.unknown_ids, UNKNOWN_STATUSES, "report() of unknown ids"
                )
            except CallError as exc:
                if not isinstance(exc.exc, AdapterError):
                    raise
                check.note(
                    f"{exc.what} raised {type(exc.exc).__name__} (a declared kind: the reporter "
                    "logs it and leaves the ids WAITING)"
                )
            else:
                states = sorted({r.apiStatus.value for r in answers.values()})
                check.note(
                    f"{plural(len(self.unknown_ids), 'unknown id')} answered with "
                    f"{', '.join(states) or 'nothing'}"
                )
            meta = self._meta_of(adapter)
            if meta.pattern is SendPattern.BATCH and meta.max_batch > 1:
                await self._mixed(check, adapter)
        assert check.result is not None
        return check.result

    async def _mixed(self, check: Check, adapter: Adapter) -> None:
        accepted = await self._send(Check("send"), adapter, self._messages(1))
        if not accepted:
            return
        ids = [accepted[0], self.unknown_ids[0]]
        what = "report() with one real id and one unknown id"
        try:
            await self._report(check, adapter, ids, REPORT_STATUSES)
        except CallError as exc:
            if not isinstance(exc.exc, AdapterError):
                raise
            check.problem(
                f"{what} raised {type(exc.exc).__name__}: {exc.exc.detail}; the reporter then "
                "learns nothing for the whole call, so one id the partner forgot holds back "
                "every message polled with it (answer FAIL or nothing for that id instead)"
            )
            return
        check.note("a real id next to an unknown one is still answered")

    # --- concurrency ------------------------------------------------------------------------
    async def check_concurrency(self) -> CheckResult:
        """``meta.max_concurrency`` ``send()`` calls at once on one instance (as the worker
        makes them), one of them a full ``meta.max_batch`` for a batch adapter and the others
        of different sizes, then ``report()`` calls at once on a second instance: each call
        answers its own messages or ids, every accepted id is unique, nothing raises."""
        async with self._checking("concurrency") as check:
            sender = await self._new(check)
            await self._login(check, sender)
            meta = self._meta_of(sender)
            n = meta.max_concurrency
            if meta.pattern is SendPattern.LOOP:
                sizes = [1] * n
            else:
                sizes = [meta.max_batch] + [min(meta.max_batch, k) for k in range(1, n)]
            chunks, first = [], 0
            for size in sizes:
                chunks.append(self._messages(size, first))
                first += size
            accepted: list[str] = []
            at_once = f"{n} calls at once"
            await self._together(
                check,
                [
                    self._send_call(
                        check, sender, chunk, f"send({plural(len(chunk), 'message')})", accepted
                    )
                    for chunk in chunks
                ],
                at_once,
            )
            reporter = await self._new(check)
            await self._login(check, reporter)
            per_call = self._chunk_size(meta)
            share = max(1, min(per_call, -(-len(accepted) // n)))
            id_chunks = [accepted[i : i + share] for i in range(0, len(accepted), share)]
            gate = asyncio.Semaphore(n)

            async def report(chunk: list[str]) -> None:
                async with gate:
                    what = f"report({plural(len(chunk), 'id')})"
                    await self._report_call(check, reporter, chunk, what)

            await self._together(check, [report(c) for c in id_chunks], at_once)
            full = "" if meta.pattern is SendPattern.LOOP else f", one of a full {meta.max_batch}"
            check.note(
                f"{plural(len(chunks), 'send() call')} at once{full} "
                f"({len(accepted)} of {first} accepted), then "
                f"{plural(len(id_chunks), 'report() call')} up to {n} at once on a second "
                "instance; every call answered its own"
            )
        assert check.result is not None
        return check.result

    @staticmethod
    async def _together(check: Check, calls: list[Awaitable[Any]], how: str) -> None:
        """Run ``calls`` concurrently; what each raises becomes a problem of the check."""
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, CallError):
                check.problem(
                    f"{describe_call(outcome)} ({how}: the core makes up to max_concurrency "
                    "calls at once on one instance; share clients, not per-call state, or "
                    "lower meta.max_concurrency)"
                )
            elif isinstance(outcome, Failed):
                check.problem(f"{outcome} ({how})")
            elif isinstance(outcome, BaseException):
                raise outcome

    # --- login NOK, destroy, probes -----------------------------------------------------------
    async def check_nok_login(self) -> CheckResult:
        """``login(bad_secret_key)`` answers False (NOK), and so does ``login(secret_key)`` on
        an instance built from ``bad_options`` (credentials the partner refuses). The core
        then marks the account NOK and never calls ``send`` or ``report`` on it (its messages
        FAIL with ``LOGIN_NOK``); the kit likewise only destroys the instance. An
        :class:`AuthError` is accepted too (the core treats a permanent login error as NOK),
        a transient error is not."""
        async with self._checking("nok_login") as check:
            if self.bad_secret_key is None and self.bad_options is None:
                check.skip(
                    "no bad_secret_key= nor bad_options= given: pass a key, or options with "
                    "credentials, that the partner endpoint refuses"
                )
            if self.bad_secret_key is not None:
                adapter = await self._new(check)
                await self._nok(check, adapter, "login(bad_secret_key)", self.bad_secret_key)
            if self.bad_options is not None:
                adapter = await self._new(check, self.bad_options)
                await self._nok(check, adapter, "login(secret_key) with bad_options", None)
        assert check.result is not None
        return check.result

    async def _nok(self, check: Check, adapter: Adapter, what: str, key: str | None) -> None:
        given = self.secret_key if key is None else key
        try:
            ok = await self._call(what, functools.partial(adapter.login, given))
        except CallError as exc:
            if isinstance(exc.exc, PermanentError):
                check.note(
                    f"{what} raised {type(exc.exc).__name__}, which the core treats as NOK "
                    "(answering False is the documented way)"
                )
            elif isinstance(exc.exc, TransientError):
                check.stop(
                    f"{what} raised {type(exc.exc).__name__}: refused credentials are not "
                    "transient (the core would retry the login forever); answer False"
                )
            else:
                raise
        else:
            if ok is True:
                check.stop(
                    f"{what} answered True (OK): refused credentials must answer False (NOK), "
                    "so the core stops using the account"
                )
            if ok is not False:
                check.stop(f"{what} answered {ok!r}; expected False (NOK)")
            check.note(f"{what} answered NOK; the core never calls send() or report() then")
        self._look_at(adapter, "after a NOK login")

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
            await self._send(Check("send"), used, self._messages(1))
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
            for name in PROBES:
                probe = getattr(adapter, name, None)
                if probe is None:
                    continue
                try:
                    answer = await self._call(f"{name}()", probe)
                except CallError as exc:
                    check.problem(describe_call(exc) + "; a probe answers False rather than raise")
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


def describe_call(error: CallError) -> str:
    return describe(error.what, error.exc)


def _skip_reasons(skip: Skip) -> dict[str, str]:
    """``skip`` as check name → reason; unknown names raise ValueError."""
    if isinstance(skip, str):
        raise ValueError(f"skip: give a collection of check names, not the string {skip!r}")
    reasons = dict(skip) if isinstance(skip, Mapping) else dict.fromkeys(skip, "")
    unknown = sorted(set(reasons) - set(CHECKS))
    if unknown:
        raise ValueError(f"skip: no check(s) {', '.join(unknown)}; checks: {', '.join(CHECKS)}")
    return reasons


async def check_adapter(
    adapter: type[Adapter] | AdapterFactory,
    options: Mapping[str, Any] | None = None,
    *,
    skip: Skip = (),
    **kwargs: Unpack[KitOptions],
) -> Report:
    """Run every check on an adapter but those in ``skip`` (names, or name → reason);
    shorthand for ``Conformance(adapter, options, **kwargs).run_all(skip=skip)``."""
    return await Conformance(adapter, options, **kwargs).run_all(skip=skip)


async def assert_conformant(
    adapter: type[Adapter] | AdapterFactory,
    options: Mapping[str, Any] | None = None,
    *,
    skip: Skip = (),
    **kwargs: Unpack[KitOptions],
) -> Report:
    """Run every check but those in ``skip``; raise :class:`AssertionError` with the whole
    report when one fails."""
    report = await check_adapter(adapter, options, skip=skip, **kwargs)
    if not report.ok:
        raise AssertionError(str(report))
    return report
