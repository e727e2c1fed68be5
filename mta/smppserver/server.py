"""The SMPP listener: TCP/TLS, connection caps, a Session per connection, start and stop.

:class:`SmppServer` listens (plain TCP, or TLS with :func:`make_ssl_context`), admits each
connection within the caps (:class:`ConnectionCaps`: in total and per IP; an excess one is
closed at once), gives it a :class:`~mta.smpp.session.Session` whose requests go to the
``smpp_<command>`` handlers (:mod:`mta.smppserver.handlers`, mixed in), and closes one not
bound within ``bind_timeout_s``. It owns the parts: the submit batcher
(:mod:`~mta.smppserver.batcher`), the receipt router (:mod:`~mta.smppserver.receipts`), the
records (:mod:`~mta.smppserver.records`).

Graceful stop: stop accepting connections, answer new submits ESME_RSYSERR, publish what is
waiting and answer it, unbind every session, stop consuming receipts (unacked ones go back to
the queue).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl as ssl_module
from collections.abc import Sequence
from typing import Any, Final

from mta import gctune, metrics
from mta.broker import Broker
from mta.config import Settings, SmppClient
from mta.loglimit import LogLimiter
from mta.smpp.session import Session, SessionClosed
from mta.smppserver.auth import BindLimiter, ClientDirectory, SmppLimits
from mta.smppserver.batcher import SubmitBatcher
from mta.smppserver.handlers import RX, TRX, ClientConnection, CommandHandlers
from mta.smppserver.reassembly import Budget, Reassembly
from mta.smppserver.receipt_stash import ReceiptStash
from mta.smppserver.receipts import ReceiptRouter
from mta.smppserver.records import MessageRecords
from mta.smppserver.submit import SubmitReader
from mta.store import Store

__all__ = ["SERVER_SYSTEM_ID", "ConnectionCaps", "SmppServer", "make_ssl_context"]

log = logging.getLogger(__name__)

SERVER_SYSTEM_ID: Final = "mta"


def make_ssl_context(cert: str, key: str) -> ssl_module.SSLContext:
    """A server TLS context from a PEM certificate (chain) and its key."""
    context = ssl_module.create_default_context(ssl_module.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


class ConnectionCaps:
    """Connections open at once, in total and per source IP."""

    def __init__(self, max_total: int, max_per_ip: int) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.total = 0
        self._by_ip: dict[str, int] = {}

    def admit(self, ip: str) -> str:
        """Count a new connection from *ip*: ``""`` when admitted (call :meth:`release` when
        it closes), else why not — nothing is counted then."""
        if self.total >= self.max_total:
            return f"{self.total} connections open, the limit is {self.max_total}"
        current = self._by_ip.get(ip, 0)
        if current >= self.max_per_ip:
            return f"{current} connections open from {ip}, the limit per IP is {self.max_per_ip}"
        self._by_ip[ip] = current + 1
        self.total += 1
        return ""

    def release(self, ip: str) -> None:
        current = self._by_ip.get(ip, 0)
        if current <= 0:
            return
        self.total -= 1
        if current == 1:
            del self._by_ip[ip]
        else:
            self._by_ip[ip] = current - 1

    def open_from(self, ip: str) -> int:
        return self._by_ip.get(ip, 0)


class SmppServer(CommandHandlers):
    """``mta smpp-server``: the listener, its sessions, the publisher and the receipt consumer."""

    def __init__(
        self,
        settings: Settings,
        clients: Sequence[SmppClient],
        store: Store,
        broker: Broker,
        host: str = "127.0.0.1",
        port: int = 2775,
        *,
        ssl: ssl_module.SSLContext | None = None,
        system_id: str = SERVER_SYSTEM_ID,
        batch_size: int = 500,
        linger_ms: float = 0.0,
        max_pending: int = 20_000,
        flush_s: float = 1.0,
        receipt_timeout_s: float = 30.0,
        receipt_queue: int = 10_000,
        receipt_hold_s: float = 5.0,
        enquire_link_s: float = 30.0,
        window: int = 50,
        limits: SmppLimits | None = None,
    ) -> None:
        self.settings = settings
        self.directory = ClientDirectory(clients)
        self.limits = limits = limits if limits is not None else SmppLimits.from_env()
        self.caps = ConnectionCaps(limits.max_connections, limits.max_connections_per_ip)
        self.binds = BindLimiter(
            limits.bind_rate_per_ip, limits.bind_rate_per_system_id, limits.bind_burst
        )
        self._warnings = LogLimiter(burst=20, window_s=60.0)
        self.store = store
        self.records = MessageRecords(store)
        self.receipt_stash = ReceiptStash(store)
        self.broker = broker
        self.host = host
        self.port = port
        self.ssl = ssl
        self.system_id = system_id
        self.tz = settings.tz
        self.batch_size = max(1, min(batch_size, settings.max_batch))
        self.linger_s = linger_ms / 1000.0
        self.max_pending = max_pending
        self.receipt_timeout_s = receipt_timeout_s
        self.enquire_link_s = enquire_link_s
        self.window = window
        self._m = metrics.Children()
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "binds",
                "bind_failures",
                "bind_limited",
                "connections_refused",
                "bind_timeouts",
                "parts_evicted",
                "submits",
                "throttled",
                "rejected",
                "batches",
                "published",
                "receipts_sent",
                "receipts_stashed",
                "receipts_dropped",
            ),
            0,
        )
        self.sessions: set[Session] = set()
        self.receipts = ReceiptRouter(
            broker,
            self.records,
            self.receipt_stash,
            self.tz,
            self.stats,
            flush_s=flush_s,
            receipt_timeout_s=receipt_timeout_s,
            queue_cap=receipt_queue,
            hold_s=receipt_hold_s,
        )
        self._reassembly = Reassembly(
            limits.reassembly_timeout_s,
            Budget(
                limits.reassembly_max_messages,
                limits.reassembly_max_parts,
                limits.reassembly_max_bytes,
            ),
        )
        self._reader = SubmitReader(self.tz, self._reassembly)
        self._server: asyncio.Server | None = None
        self._batcher: SubmitBatcher | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._handlers = self._dispatch_table()

    # --- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Declare and consume the receipt queue, then listen."""
        gctune.tune()
        self._batcher = SubmitBatcher(
            self.broker,
            self.records,
            self.stats,
            batch_size=self.batch_size,
            linger_s=self.linger_s,
            max_pending=self.max_pending,
        )
        await self.receipts.start(self.directory.account_ids)
        self._server = await asyncio.start_server(
            self._accept, self.host, self.port, ssl=self.ssl, reuse_address=True
        )
        sock = self._server.sockets[0].getsockname()
        self.port = int(sock[1])
        log.info(
            "smpp-server listening on %s:%d%s with %d client(s)",
            self.host,
            self.port,
            " (TLS)" if self.ssl else "",
            len(self.directory.by_id),
        )

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, publish and answer what waits, unbind sessions, stop consuming."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        if self._batcher is not None:
            await self._batcher.drain()
        await asyncio.gather(
            *(s.unbind(grace) for s in list(self.sessions)), return_exceptions=True
        )
        await self.receipts.stop(grace)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), grace)
        log.info("smpp-server stopped: %s", self.stats)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        ip = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        if self._stopping:
            writer.close()
            return
        refused = self.caps.admit(ip)
        if refused:
            self.stats["connections_refused"] += 1
            self._warn("conn-cap", "SMPP connection from %s closed at once: %s", ip, refused)
            writer.close()
            return
        session = Session(
            reader,
            writer,
            on_request=self.on_request,
            on_close=self._on_close,
            window=self.window,
            response_timeout=self.receipt_timeout_s,
            enquire_link_s=self.enquire_link_s,
        )
        conn = session.context = ClientConnection(ip)
        conn.deadline = asyncio.get_running_loop().call_later(
            self.limits.bind_timeout_s, self._bind_timeout, session
        )
        self.sessions.add(session)
        session.start()

    def _bind_timeout(self, session: Session) -> None:
        conn: ClientConnection = session.context
        conn.deadline = None
        if conn.bound or session.closed:
            return
        self.stats["bind_timeouts"] += 1
        self._warn(
            "bind-timeout",
            "SMPP %s: not bound within %g s; closed",
            session.name,
            self.limits.bind_timeout_s,
        )
        reason = SessionClosed(f"no bind within {self.limits.bind_timeout_s:g} s")
        self._spawn(session.close(reason))

    def _on_close(self, session: Session, reason: BaseException | None) -> None:
        self.sessions.discard(session)
        conn: ClientConnection = session.context
        self.caps.release(conn.ip)
        if conn.deadline is not None:
            conn.deadline.cancel()
            conn.deadline = None
        if conn.client is not None and conn.bound in (RX, TRX):
            self.receipts.remove(conn.client.system_id, session)
        if conn.client is not None and conn.bound:
            self._m.child(metrics.SMPP_SESSIONS, conn.client.system_id).dec()
        log.debug("SMPP %s closed: %s", session.name, reason)

    def bound(self, system_id: str) -> list[Session]:
        """The sessions of *system_id* bound to this process (for tests and status)."""
        return [
            s
            for s in self.sessions
            if s.context.client is not None and s.context.client.system_id == system_id
        ]
