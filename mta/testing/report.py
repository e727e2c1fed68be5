"""The kit's verdicts: the checks it runs, each check's outcome, and the report of one run."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["CHECKS", "CheckResult", "Report", "Verdict"]

#: Every check, in the order :meth:`Conformance.run_all` runs them, with what it asks.
CHECKS: Mapping[str, str] = {
    "meta": "meta is well-formed: name, description, options, pattern, max_batch, receipts",
    "send": "login(secret_key) is OK; send() answers one legal result per message, in order",
    "report": "report() on a second instance answers legal states for the ids send() accepted",
    "unknown_ids": "report() on ids the partner never issued: nothing, WAITING or FAIL",
    "concurrency": "send() and report() called max_concurrency at once, with a full max_batch",
    "nok_login": "a refused secret key or refused credentials (bad_options) log in NOK",
    "destroy": "destroy() works unused and used, and twice in a row",
    "probes": "test_connection/test_credentials/test_proxy, where defined, answer a bool",
    "error_kinds": "everything raised is a declared error kind, and partner failures map right",
    "secrets": "no secret value in repr(), str(), logs, error details or results",
}


class Verdict(enum.StrEnum):
    """How one check ended."""

    PASS = "pass"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check's outcome and a message saying what was checked or what is wrong."""

    name: str
    outcome: Verdict
    message: str

    @property
    def failed(self) -> bool:
        return self.outcome is Verdict.FAIL

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
        counts = {o: sum(1 for c in self.checks if c.outcome is o) for o in Verdict}
        head = (
            f"conformance of adapter {self.adapter!r}: {counts[Verdict.PASS]} passed, "
            f"{counts[Verdict.FAIL]} failed, {counts[Verdict.SKIP]} skipped"
        )
        return "\n".join([head, *(f"  {c}".replace("\n", "\n  ") for c in self.checks)])
