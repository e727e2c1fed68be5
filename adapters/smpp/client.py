"""The SMPP sessions of one account: connect, bind, keep bound (reconnect with backoff), unbind.

An account has ``binds`` links; a link is one ``bind_transceiver`` session, or (``bind =
"transmitter+receiver"``) a ``bind_transmitter`` session for submits and queries plus a
``bind_receiver`` session for receipts. Each session has a supervisor task: connect (TLS when
asked), bind, wait until the session closes, then reconnect after a backoff that doubles from
``reconnect_s`` up to :data:`MAX_BACKOFF_S` with jitter. A session that closes within
:data:`STABLE_S` of its bind does not reset the backoff, so an SMSC that accepts binds and
drops them at once sees a slowing trickle of binds, never a storm. A bind refused for its
credentials (ESME_RINVPASWD, ESME_RINVSYSID, ESME_RBINDFAIL, …) is retried only every
:data:`REFUSED_BACKOFF_S`, loudly.

The session itself (:class:`mta.smpp.session.Session`) keeps the window, answers and sends
``enquire_link``, and closes after two unanswered ones, which wakes the supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from mta.smpp.pdu import (
    BindReceiver,
    BindTransceiver,
    BindTransmitter,
    StatusKind,
    classify_status,
    status_name,
)
from mta.smpp.session import RequestHandler, ResponseTimeout, Session, SessionClosed, connect

log = logging.getLogger(__name__)

#: Longest wait between two reconnection attempts.
MAX_BACKOFF_S: Final = 60.0
#: Wait after a bind refused for its credentials before trying again.
REFUSED_BACKOFF_S: Final = 60.0
#: A session must stay bound this long before its backoff starts again from ``reconnect_s``.
STABLE_S: Final = 10.0
#: Longest wait for a connection or a bind response.
CONNECT_TIMEOUT_S: Final = 10.0

ROLE_TRX: Final = "transceiver"
ROLE_TX: Final = "transmitter"
ROLE_RX: Final = "receiver"
_BIND_PDU: Final[dict[str, type[BindTransceiver | BindTransmitter | BindReceiver]]] = {
    ROLE_TRX: BindTransceiver,
    ROLE_TX: BindTransmitter,
    ROLE_RX: BindReceiver,
}


class BindRefused(Exception):
    """The SMSC answered the bind with an error status (credentials, system_type, …)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class LinkDown(Exception):
    """Connecting or binding failed for a reason a later attempt may not meet (network)."""


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """What the sessions of one account need: the adapter builds it from the options, whose
    defaults live in ``SmppAdapter.meta.options`` only."""

    account: str
    host: str
    port: int
    system_id: str
    password: str = field(repr=False)
    system_type: str
    mode: str  # ROLE_TRX or "transmitter+receiver"
    binds: int
    window: int
    enquire_link_s: float
    response_timeout_s: float
    throughput: float
    tls: bool
    reconnect_s: float

    @property
    def where(self) -> str:
        """How logs and errors name this account (never the password)."""
        return (
            f"SMPP account {self.account!r} (system_id {self.system_id!r} "
            f"at {self.host}:{self.port})"
        )


@dataclass(eq=False)
class Unit:
    """One supervised session: its role, the live session when bound, and its state."""

    role: str
    index: int
    session: Session | None = None
    bound: asyncio.Event = field(default_factory=asyncio.Event)
    first: asyncio.Future[BaseException | None] | None = None
    task: asyncio.Task[None] | None = None
    last_error: str = ""
    binds: int = 0
    assigned: int = 0  # submits this process routed to it and not yet answered
    throttle_level: int = 0

    @property
    def sends(self) -> bool:
        return self.role != ROLE_RX

    @property
    def ready(self) -> bool:
        session = self.session
        return session is not None and not session.closed


def tls_context(enabled: bool) -> ssl.SSLContext | None:
    return ssl.create_default_context() if enabled else None


async def open_session(
    config: ClientConfig,
    role: str,
    name: str,
    on_request: RequestHandler | None = None,
    bind: bool = True,
) -> Session:
    """Connect (and bind as *role*); raises :class:`BindRefused` or :class:`LinkDown`."""
    try:
        session = await connect(
            config.host,
            config.port,
            ssl=tls_context(config.tls),
            connect_timeout=CONNECT_TIMEOUT_S,
            on_request=on_request,
            window=config.window,
            response_timeout=config.response_timeout_s,
            enquire_link_s=config.enquire_link_s,
            throughput=config.throughput,
            name=name,
        )
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        raise LinkDown(f"cannot connect: {type(exc).__name__}: {exc}") from None
    if not bind:
        return session
    pdu = _BIND_PDU[role](
        system_id=config.system_id, password=config.password, system_type=config.system_type
    )
    try:
        response = await session.request(pdu, min(config.response_timeout_s, CONNECT_TIMEOUT_S))
    except (ResponseTimeout, SessionClosed, OSError) as exc:
        await session.close()
        raise LinkDown(f"bind_{role} got no answer: {exc}") from None
    if response.status:
        await session.close()
        name_ = status_name(response.status)
        if classify_status(response.status) is StatusKind.BIND:
            raise BindRefused(
                response.status,
                f"bind_{role} refused with {name_}: check system_id, password and system_type",
            )
        raise LinkDown(f"bind_{role} answered {name_}")
    return session


class Client:
    """The supervised sessions of one account (see the module docstring)."""

    def __init__(self, config: ClientConfig, on_request: RequestHandler) -> None:
        self.config = config
        self.on_request = on_request
        roles = [ROLE_TRX] if config.mode == ROLE_TRX else [ROLE_TX, ROLE_RX]
        self.units = [Unit(role, n) for n in range(max(1, config.binds)) for role in roles]
        self.connects = 0  # connection attempts (tests and metrics)
        self._stopping = False
        self._changed = asyncio.Event()  # set whenever a sending unit binds
        self.on_bound: Callable[[Unit], None] | None = None

    # --- life cycle -------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return any(u.task is not None and not u.task.done() for u in self.units)

    async def start(self) -> list[BaseException | None]:
        """Start every supervisor; the outcome of each one's first attempt (None = bound)."""
        await self.stop()
        self._stopping = False
        loop = asyncio.get_running_loop()
        for unit in self.units:
            unit.first = loop.create_future()
            unit.task = loop.create_task(
                self._supervise(unit), name=f"smpp {self.config.account} {unit.role}#{unit.index}"
            )
        firsts = [u.first for u in self.units if u.first is not None]
        return list(await asyncio.gather(*firsts))

    async def stop(self, grace: float = 5.0) -> None:
        """Stop reconnecting, unbind every bound session (waiting up to *grace* for the
        outstanding requests), close."""
        self._stopping = True
        self._changed.set()
        sessions = [u.session for u in self.units if u.session is not None]
        tasks = [u.task for u in self.units if u.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await asyncio.gather(*(s.unbind(grace) for s in sessions), return_exceptions=True)
        for unit in self.units:
            self._first(unit, LinkDown("stopped"))
            unit.session = None
            unit.task = None
            unit.bound.clear()

    # --- choosing a session -----------------------------------------------------------------
    def ready_senders(self) -> list[Unit]:
        return [u for u in self.units if u.sends and u.ready]

    def pick(self) -> Unit | None:
        """The bound sending unit with the fewest submits routed to it, or None."""
        best: Unit | None = None
        for unit in self.units:
            if unit.sends and unit.ready and (best is None or unit.assigned < best.assigned):
                best = unit
        return best

    async def wait_sender(self, wait_s: float) -> Unit | None:
        """A bound sending unit, waiting up to *wait_s* seconds for one to (re)bind."""
        deadline = time.monotonic() + wait_s
        while True:
            unit = self.pick()
            if unit is not None or self._stopping:
                return unit
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    def last_error(self) -> str:
        errors = [u.last_error for u in self.units if u.last_error]
        return errors[-1] if errors else "not bound yet"

    # --- supervision ------------------------------------------------------------------------
    async def _supervise(self, unit: Unit) -> None:
        config = self.config
        delay = config.reconnect_s
        name = f"{config.account}/{config.system_id}/{unit.role}#{unit.index}"
        while not self._stopping:
            self.connects += 1
            try:
                session = await open_session(config, unit.role, name, self.on_request)
            except BindRefused as exc:
                unit.last_error = exc.detail
                self._first(unit, exc)
                log.error("%s: %s; next try in %.0f s", config.where, exc.detail, REFUSED_BACKOFF_S)
                await asyncio.sleep(REFUSED_BACKOFF_S)
                continue
            except (LinkDown, Exception) as exc:
                unit.last_error = str(exc) if isinstance(exc, LinkDown) else type(exc).__name__
                if not isinstance(exc, LinkDown):
                    log.error("%s: bind failed: %s", config.where, type(exc).__name__)
                self._first(unit, exc)
                wait = delay * random.uniform(0.8, 1.2)
                log.warning("%s: %s; next try in %.1f s", config.where, unit.last_error, wait)
                await asyncio.sleep(wait)
                delay = min(delay * 2, MAX_BACKOFF_S)
                continue
            unit.session = session
            unit.binds += 1
            unit.throttle_level = 0
            unit.last_error = ""
            unit.bound.set()
            self._changed.set()
            self._first(unit, None)
            bound_at = time.monotonic()
            log.info("%s: bound as %s (session %s)", config.where, unit.role, name)
            try:
                await session.wait_closed()
            finally:
                unit.bound.clear()
                unit.session = None
            if self._stopping:
                return
            reason = session.close_reason
            unit.last_error = f"session closed: {reason or 'by the SMSC'}"
            if time.monotonic() - bound_at >= STABLE_S:
                delay = config.reconnect_s
            wait = delay * random.uniform(0.8, 1.2)
            log.warning("%s: %s; reconnecting in %.1f s", config.where, unit.last_error, wait)
            await asyncio.sleep(wait)
            delay = min(delay * 2, MAX_BACKOFF_S)

    @staticmethod
    def _first(unit: Unit, outcome: BaseException | None) -> None:
        if unit.first is not None and not unit.first.done():
            unit.first.set_result(outcome)
