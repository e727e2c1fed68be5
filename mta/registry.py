"""Adapter discovery by entry point, and the accounts → adapter instances they serve."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from importlib.metadata import entry_points
from typing import Any

from mta import metrics
from mta.adapter import (
    Adapter,
    AdapterContext,
    AdapterError,
    AdapterMeta,
    ReceiptSink,
    SharedStore,
    TransientError,
)
from mta.config import Account, ConfigError, Settings
from mta.redact import Redactor, redactor

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "mta.adapters"
RELOGIN_AFTER_S = 30.0
#: Transient Send failures in a row that open an account's circuit breaker.
BREAKER_FAILURES = 5
#: How long an open breaker sends the account's traffic to its failover before one probe.
BREAKER_OPEN_S = 30.0
#: Names of non-secret options whose values are user names (paired with a secret in Basic
#: auth or URL userinfo), e.g. proxy_username, system_id, account_sid.
_USERISH = ("user", "login", "sid", "system_id", "client_id", "account")


def account_secrets(account: Account) -> tuple[set[str], set[str]]:
    """(secrets, users) of ``account``: its ``secret_key`` and secret options' values (the
    proxy password among them); its user-ish options' values, which pair with them."""
    secrets = {account.secret_key} if account.secret_key else set()
    users: set[str] = set()
    for name, value in account.options.items():
        if not isinstance(value, str) or not value:
            continue
        if name in account.secret_options:
            secrets.add(value)
        elif any(part in name for part in _USERISH):
            users.add(value)
    return secrets, users


def account_redactor(account: Account) -> Redactor:
    """The redactor of every secret of ``account`` (:func:`account_secrets`)."""
    return redactor(*account_secrets(account))


def discover() -> dict[str, type[Adapter]]:
    """Every adapter installed under the ``mta.adapters`` entry-point group, by name."""
    found: dict[str, type[Adapter]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = ep.load()
        except Exception as exc:  # a broken plugin must not stop the others
            log.error("adapter %r (%s) failed to load: %s", ep.name, ep.value, exc)
            continue
        meta = getattr(cls, "meta", None)
        if not isinstance(meta, AdapterMeta):
            log.error("adapter %r (%s) has no AdapterMeta 'meta'; ignored", ep.name, ep.value)
            continue
        if meta.name != ep.name:
            log.error("adapter entry point %r names meta %r; ignored", ep.name, meta.name)
            continue
        found[ep.name] = cls
    return found


def default_tz() -> tzinfo:
    """The zone of MMP times when the registry's builder gives none: ``MTA_TIMEZONE`` from the
    environment, as :class:`~mta.config.Settings` reads it (UTC when unset)."""
    name = os.environ.get("MTA_TIMEZONE", "")
    return Settings(timezone=name).tz if name else UTC


def build_adapter(cls: type[Adapter], account: Account, tz: tzinfo | None = None) -> Adapter:
    """One adapter instance for an account: ``cls(options)`` or ``cls(options, context)``; the
    context carries ``tz``, the zone of the messages' MMP times (default :func:`default_tz`)."""
    try:
        signature = list(inspect.signature(cls).parameters.values())
    except (TypeError, ValueError):
        signature = []
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in signature):
        raise TypeError(
            f"{cls.__name__}.__init__ takes *args/**kwargs: declare (options) or "
            "(options, context) so the MTA knows what to pass"
        )
    params = [p for p in signature if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    factory: Any = cls
    if len(params) >= 2:
        context = AdapterContext(
            account.name, account.id, ReceiptSink(account.name), tz or default_tz()
        )
        return factory(account.options, context)  # type: ignore[no-any-return]
    return factory(account.options)  # type: ignore[no-any-return]


class State:
    """Login state of an account's adapter instance."""

    NEW = "new"
    READY = "ready"
    NOK = "nok"
    DOWN = "down"


@dataclass(eq=False)
class AccountRuntime:
    """One account's adapter instance, its login state and its concurrency bound."""

    account: Account
    adapter: Adapter
    state: str = State.NEW
    detail: str = ""
    retry_at: float = 0.0
    semaphore: asyncio.Semaphore = field(init=False)
    failover: AccountRuntime | None = None
    failures: int = 0
    open_until: float = 0.0
    probing: bool = False
    _settled: asyncio.Event = field(init=False, default_factory=asyncio.Event)
    _login_lock: asyncio.Lock = field(init=False, default_factory=asyncio.Lock)
    _redactor: Redactor = field(init=False, repr=False)
    _circuit: Any = field(init=False, repr=False)  # this account's mta_circuit_state child

    def __post_init__(self) -> None:
        self.semaphore = asyncio.Semaphore(self.account.concurrency)
        self._redactor = account_redactor(self.account)
        self._circuit = metrics.CIRCUIT_STATE.labels(self.account.name)
        self._circuit.set(0)

    def scrub(self, text: str) -> str:
        """``text`` with every secret of the account (``secret_key``, secret options, the
        proxy password) masked as ``***`` in every encoding — plain, percent/form-encoded,
        JSON-escaped, base64 alone or as ``user:secret`` — and any credential-looking value
        (``Authorization``, ``Basic``/``Bearer`` values, URL passwords) masked too
        (:mod:`mta.redact`). For details built from adapter exceptions and partner text."""
        return self._redactor(text)

    @property
    def meta(self) -> AdapterMeta:
        return self.adapter.meta

    async def ensure_login(self) -> str:
        """Log in when needed; returns the state. NOK stays NOK; DOWN is retried after a pause."""
        if self.state in (State.READY, State.NOK):
            return self.state
        if self.state == State.DOWN and time.monotonic() < self.retry_at:
            return self.state
        async with self._login_lock:
            if self.state in (State.READY, State.NOK):
                return self.state
            started = time.perf_counter()
            try:
                ok = await self.adapter.login(self.account.secret_key)
            except AdapterError as exc:
                kind = "transient" if isinstance(exc, TransientError) else "permanent"
                self._login_metrics(started, kind)
                self._down(f"login failed ({kind}): {self.scrub(exc.detail)}")
                if not isinstance(exc, TransientError):
                    self.state = State.NOK
                return self.state
            except Exception as exc:
                self._login_metrics(started, "bug")
                self._down(f"login raised {type(exc).__name__}: {self.scrub(str(exc))}")
                return self.state
            self._login_metrics(started, "" if ok else "nok")
            if ok:
                self.state, self.detail = State.READY, ""
                log.info(
                    "account %r (id %d) logged in",
                    self.account.name,
                    self.account.id,
                    extra=self._extra,
                )
            else:
                self.state = State.NOK
                self.detail = "login answered NOK (check the account's secret_key and credentials)"
                log.error(
                    "account %r (id %d): %s",
                    self.account.name,
                    self.account.id,
                    self.detail,
                    extra=self._extra,
                )
            return self.state

    @property
    def _extra(self) -> dict[str, str]:
        """``extra=`` of this account's log lines (a field of JSON log lines)."""
        return {"account": self.account.name}

    def _login_metrics(self, started: float, kind: str) -> None:
        """A Login's duration, and its failure kind (transient, permanent, nok, bug) if any."""
        name = self.account.name
        metrics.PARTNER_CALL.labels(name, "login").observe(time.perf_counter() - started)
        if kind:
            metrics.PARTNER_ERRORS.labels(name, "login", kind).inc()

    # --- circuit breaker (per process): keeps failing transiently → use the failover ------
    def allows(self) -> bool:
        """Closed: yes. Open: no, until BREAKER_OPEN_S passed; then one probe is let through."""
        if not self.open_until:
            return True
        if time.monotonic() < self.open_until or self.probing:
            return False
        self.probing = True
        return True

    def may_send(self) -> bool:
        """Whether :meth:`allows` would let a batch through (without taking the probe)."""
        return not self.open_until or (time.monotonic() >= self.open_until and not self.probing)

    def succeeded(self) -> None:
        if self.open_until:
            log.info("account %r: circuit closed (probe succeeded)", self.account.name)
            self._circuit.set(0)
        self.failures, self.open_until = 0, 0.0
        self._end_probe()

    def probe_unused(self) -> None:
        """The probe let through did not reach the partner (e.g. it waited for the rate
        limit): the next batch may probe instead, so the circuit never stays open for good."""
        if self.probing:
            self._end_probe()

    async def probe_settled(self, timeout_s: float) -> None:
        """Wait (up to ``timeout_s``) for the probe in flight to succeed or fail, so batches
        that arrive meanwhile follow its outcome instead of being parked for a retry tier."""
        if self.probing:
            self._settled.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settled.wait(), timeout_s)

    def _end_probe(self) -> None:
        self.probing = False
        self._settled.set()

    def failed(self) -> None:
        self.failures += 1
        if self.probing or self.failures >= BREAKER_FAILURES:
            self.open_until = time.monotonic() + BREAKER_OPEN_S
            self._end_probe()
            self._circuit.set(1)
            metrics.CIRCUIT_OPENED.labels(self.account.name).inc()
            log.warning(
                "account %r: circuit open for %.0f s after %d transient failure(s)",
                self.account.name,
                BREAKER_OPEN_S,
                self.failures,
            )

    def _down(self, detail: str) -> None:
        self.state, self.detail = State.DOWN, detail
        self.retry_at = time.monotonic() + RELOGIN_AFTER_S
        log.warning(
            "account %r (id %d): %r", self.account.name, self.account.id, detail, extra=self._extra
        )


class Registry:
    """Accounts by MMP ``accountId`` and by name, each with its adapter instance.

    ``tz`` is ``Settings.tz`` (``MTA_TIMEZONE``): adapters read ``expireTime`` in it to tell
    the partner a validity. Without it, :func:`default_tz` (the environment's ``MTA_TIMEZONE``).
    """

    def __init__(
        self,
        accounts: list[Account],
        classes: dict[str, type[Adapter]],
        tz: tzinfo | None = None,
    ) -> None:
        tz = tz or default_tz()
        self.by_name: dict[str, AccountRuntime] = {}
        self.by_id: dict[int, AccountRuntime] = {}
        self.default: AccountRuntime | None = None
        for account in accounts:
            cls = classes.get(account.adapter)
            if cls is None:
                raise ConfigError(f"account {account.name!r}: adapter {account.adapter!r} missing")
            try:
                adapter = build_adapter(cls, account, tz)
            except (ValueError, TypeError, KeyError) as exc:
                raise ConfigError(
                    f"account {account.name!r}: adapter {account.adapter!r} refused its "
                    f"options: {exc}"
                ) from None
            runtime = AccountRuntime(account, adapter)
            self.by_name[account.name] = runtime
            self.by_id[account.id] = runtime
            if account.default:
                self.default = runtime
        for runtime in self.by_name.values():
            if runtime.account.failover:
                runtime.failover = self.by_name[runtime.account.failover]

    def redactor(self) -> Redactor:
        """Masks every secret of every account, in every encoding (:mod:`mta.redact`)."""
        secrets: set[str] = set()
        users: set[str] = set()
        for runtime in self.by_name.values():
            some, who = account_secrets(runtime.account)
            secrets |= some
            users |= who
        return redactor(secrets, users)

    def scrub(self, text: str) -> str:
        """``text`` with every secret of every account masked (for texts that belong to no one
        account, such as a dead-letter reason)."""
        return self.redactor()(text)

    def bind_store(self, store: SharedStore) -> None:
        """Connect every adapter's receipt sink (receipts, shared state) to the store."""
        for runtime in self.by_name.values():
            context = getattr(runtime.adapter, "context", None)
            if isinstance(context, AdapterContext):
                context.receipts.bind(store)

    def for_account_id(self, account_id: int) -> AccountRuntime | None:
        """The account serving an MMP accountId: its own, else the default (0 = the default)."""
        runtime = self.by_id.get(account_id)
        if runtime is None and self.default is not None:
            return self.default
        return runtime

    async def start(self) -> None:
        """Log every active account in (concurrently); failures are logged, never raised."""
        await asyncio.gather(*(r.ensure_login() for r in self.by_name.values() if r.account.active))

    async def close(self) -> None:
        for runtime in self.by_name.values():
            try:
                await runtime.adapter.destroy()
            except Exception as exc:
                log.warning(
                    "account %r: destroy failed: %r", runtime.account.name, runtime.scrub(str(exc))
                )
