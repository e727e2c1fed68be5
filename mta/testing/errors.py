"""The ``error_kinds`` check: an adapter raises only declared kinds, and partner failures map."""

from __future__ import annotations

import contextlib
import functools
from typing import Any

from mta.adapter import (
    AdapterError,
    AuthError,
    PermanentError,
    ThrottledError,
    TransientError,
)
from mta.contract import ApiStatus, SmsReportRequest, SmsResult, SmsSendRequest
from mta.testing.base import KINDS, CallError, Check, FailureKind, KitBase, describe
from mta.testing.report import CheckResult
from mta.testing.results import response_results

__all__ = ["ErrorChecks"]

_EXPECTED: dict[FailureKind, tuple[type[AdapterError], str]] = {
    "transient": (TransientError, "TransientError (the core retries with backoff)"),
    "throttled": (ThrottledError, "ThrottledError (the core slows the account down)"),
    "permanent": (PermanentError, "PermanentError (the core FAILs the messages)"),
    "auth": (AuthError, "AuthError, or login() answering False"),
}
_ADVICE: dict[FailureKind, str] = {
    "transient": "raise TransientError: FAILing them would lose messages a retry saves",
    "throttled": "raise ThrottledError (with retry_after when the partner says it)",
    "permanent": "raise PermanentError, or answer FAIL with the partner's detail",
    "auth": "raise AuthError (or answer False from login)",
}


class ErrorChecks(KitBase):
    """The ``error_kinds`` check of :class:`~mta.testing.Conformance`."""

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

    def _judge_raised(self, check: Check) -> None:
        for what, exc in self._raised:
            if not isinstance(exc, AdapterError):
                check.problem(describe(what, exc))
            elif not isinstance(exc, TransientError | PermanentError):
                check.problem(
                    f"{what} raised {type(exc).__name__}, an AdapterError of no kind: raise "
                    f"{KINDS} (or a subclass), so the core knows whether to retry"
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

    async def _provoke(self, check: Check, kind: FailureKind) -> None:
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
                except CallError as exc:
                    self._expect(check, kind, exc.what, exc.exc)
                    return
                if ok is False:
                    return
            what = f"send(1 message) while the partner fails ({kind})"
            request = SmsSendRequest(self._messages(1))
            try:
                response = await self._call(what, functools.partial(adapter.send, request))
            except CallError as exc:
                self._expect(check, kind, exc.what, exc.exc)
            else:
                self._look_at_response(what, response)
                self._expect_results(check, kind, what, response)
            if kind != "auth":
                with contextlib.suppress(CallError):  # judged with the rest of what was raised
                    await self._call(
                        f"report() while the partner fails ({kind})",
                        functools.partial(
                            adapter.report, SmsReportRequest("", [self.unknown_ids[0]])
                        ),
                    )
        finally:
            await self._fail_partner(None)

    @staticmethod
    def _expect(check: Check, kind: FailureKind, what: str, exc: Exception) -> None:
        cls, text = _EXPECTED[kind]
        if isinstance(exc, cls):
            return
        if not isinstance(exc, AdapterError):
            return  # judged with everything else that was raised
        check.problem(
            f"the partner failed ({kind}) and {what} raised {type(exc).__name__}; expected {text}"
        )

    @staticmethod
    def _expect_results(check: Check, kind: FailureKind, what: str, response: Any) -> None:
        results = response_results(check, what, response)
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
        check.problem(f"the partner failed ({kind}) but {what} answered {states}; {_ADVICE[kind]}")
