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
:class:`FakePartner` serves a fake partner API on loopback for the adapter's own tests.

The modules: ``report`` (verdicts), ``build`` (instances as the registry builds them),
``base`` (settings and calls), ``results`` (what a legal answer is), ``meta``, ``checks``,
``errors`` and ``secrets`` (the checks), ``fakes`` (the fake partner server).
"""

from mta.testing.base import (
    FAILURE_KINDS,
    TEST_NUMBERS,
    AdapterFactory,
    FailureKind,
    KitOptions,
    PartnerFailer,
)
from mta.testing.build import build, discoverable
from mta.testing.checks import Conformance, Skip, assert_conformant, check_adapter
from mta.testing.fakes import FakePartner, Handler, Seen
from mta.testing.report import CHECKS, CheckResult, Report, Verdict

__all__ = [
    "CHECKS",
    "FAILURE_KINDS",
    "TEST_NUMBERS",
    "AdapterFactory",
    "CheckResult",
    "Conformance",
    "FailureKind",
    "FakePartner",
    "Handler",
    "KitOptions",
    "PartnerFailer",
    "Report",
    "Seen",
    "Skip",
    "Verdict",
    "assert_conformant",
    "build",
    "check_adapter",
    "discoverable",
]
