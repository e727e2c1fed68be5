"""One SMPP session over an asyncio stream pair, for both sides: framing, window, timers.

The session frames PDUs by ``command_length`` (a frame under 16 octets or over
``max_pdu_size`` gets ``generic_nack`` ESME_RINVCMDLEN and closes the session: the stream
cannot be resynchronised), numbers requests 1..0x7FFFFFFF with wrap-around, and matches
responses by sequence number in a dict of futures (O(1)). :meth:`Session.request` waits for a
free slot of the ``window`` (outstanding requests), honours :meth:`Session.pause` (set when the
peer answers ESME_RTHROTTLED / ESME_RMSGQFUL) and the optional ``throughput`` pacing, and fails
with :class:`ResponseTimeout` after its response timeout (the deadlines of a session are kept
with one timer, :mod:`mta.smpp.deadlines`). :meth:`Session.start_call` is the same request
answered through a callback instead of a future, for senders with many requests in flight.

Incoming requests go to the owner's ``on_request(session, pdu)``: it returns the response
(sent at once), an awaitable of it (run as a task, so slow answers such as a publish with
confirm overlap; at most ``max_incoming`` at a time, after which the session stops reading),
or None when it answers later with :meth:`Session.reply`. A handler that raises answers
ESME_RSYSERR. The session itself answers ``enquire_link``; on ``unbind`` it stops reading,
lets every request already received be answered first (up to ``response_timeout``), then
sends ``unbind_resp`` and closes; it answers undecodable PDUs with ``generic_nack`` carrying
the status from :class:`~mta.smpp.pdu.PduError` (warnings about them are rate-limited in the
log) — neither a malformed PDU nor a handler error ends the session or the process.

Back-pressure: after each read, while more than ``_HIGH_WATER`` octets of output wait for a
peer that does not read its responses, the session reads nothing more (TCP then stops the
peer); a peer that reads nothing for ``response_timeout`` is closed. After ``_SLICE_S`` of
handling the PDUs of one read the loop is yielded, so a peer pipelining thousands of PDUs
does not hold the event loop (and every other session) up.

When idle (nothing received for ``enquire_link_s``) it sends ``enquire_link``;
``enquire_link_misses`` unanswered in a row close the session.

TCP_NODELAY is set on the socket on both sides: without it, receipts interleaved with submits
stall ~40 ms each on Nagle + delayed ACK (docs/decisions/smpp-codec.md: smpp34 fell from 7k/s to
0.3-1.7k/s). Writes made in one loop iteration are coalesced into one ``write``. No threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import ssl as ssl_module
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeAlias

from mta.loglimit import LogLimiter
from mta.smpp.constants import RESPONSE_BIT
from mta.smpp.deadlines import Deadlines
from mta.smpp.incoming import IncomingRequests
from mta.smpp.link import keepalive, peer_name, set_nodelay
from mta.smpp.pdu import (
    HEADER,
    MAX_SEQUENCE,
    CommandId,
    CommandStatus,
    EnquireLinkResp,
    Pdu,
    PduError,
    Unbind,
    UnbindResp,
    command_name,
    encode,
    generic_nack,
)
from mta.smpp.pdu.frames import decode_body
from mta.smpp.window import Window

__all__ = [
    "CloseHook",
    "RequestHandler",
    "ResponseTimeout",
    "Session",
    "SessionClosed",
    "connect",
]

log = logging.getLogger(__name__)

RequestHandler = Callable[["Session", Pdu], "Pdu | Awaitable[Pdu | None] | None"]
CloseHook = Callable[["Session", "BaseException | None"], None]
#: ``on_answer(response, None)`` or ``on_answer(None, error)`` of :meth:`Session.start_call`.
AnswerHook = Callable[["Pdu | None", "BaseException | None"], None]
#: What waits for a response: a future (request, start_request) or a call (start_call:
#: its hook, and whether it holds a window slot).
_Waiter: TypeAlias = "asyncio.Future[Pdu] | tuple[AnswerHook, bool]"

_READ_CHUNK: Final = 1 << 16
_HIGH_WATER: Final = 1 << 18  # buffered output (octets) above which writers await drain
_SLICE_S: Final = 0.0005  # seconds of handling PDUs before the read loop yields to others
_ENQUIRE_LINK: Final = int(CommandId.ENQUIRE_LINK)  # plain ints: no enum lookup per PDU
_UNBIND: Final = int(CommandId.UNBIND)
_WARNINGS: Final = LogLimiter(burst=20, window_s=60.0)  # protocol warnings, process-wide


class SessionClosed(ConnectionError):
    """The session is closed (or unbinding): no request can be sent, pending ones fail."""


class ResponseTimeout(TimeoutError):
    """No response to a request within its response timeout."""


class Session(IncomingRequests):
    """An SMPP session on (*reader*, *writer*); call :meth:`start` inside the loop.

    ``window``: requests outstanding at once. ``response_timeout``: default seconds to wait
    for each response. ``enquire_link_s``: idle seconds before an ``enquire_link`` (0 = never).
    ``throughput``: requests per second leaving this session (0 = unlimited).
    ``max_incoming``: incoming requests whose asynchronous answers may be pending at once.
    ``context``: free for the owner (e.g. the bound system_id).
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        on_request: RequestHandler | None = None,
        on_close: CloseHook | None = None,
        window: int = 10,
        response_timeout: float = 60.0,
        enquire_link_s: float = 30.0,
        enquire_link_misses: int = 2,
        throughput: float = 0.0,
        max_pdu_size: int = 65536,
        max_incoming: int = 1000,
        name: str = "",
    ) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self._reader = reader
        self._writer = writer
        self.on_request = on_request
        self.on_close = on_close
        self.window = window
        self.response_timeout = response_timeout
        self.enquire_link_s = enquire_link_s
        self.enquire_link_misses = max(1, enquire_link_misses)
        self.max_pdu_size = max_pdu_size
        self.max_incoming = max_incoming
        self.name = name or peer_name(writer)
        self.context: Any = None
        self.unmatched = 0  # responses that matched no outstanding request (late, unknown)
        self.nacked = 0  # incoming PDUs answered with generic_nack
        self._loop = asyncio.get_running_loop()
        self._window = Window(window)
        self._pending: dict[int, _Waiter] = {}
        self._deadlines = Deadlines(self._loop, self._pending, self._expire)
        self._seq = 0
        self._paused_until = 0.0
        self._interval = 1.0 / throughput if throughput > 0 else 0.0
        self._next_slot = 0.0
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._incoming: set[asyncio.Task[None]] = set()
        self._incoming_room = asyncio.Event()
        self._incoming_room.set()
        self._deferred: set[int] = set()  # requests the handler answers later (reply())
        self._settled: asyncio.Future[None] | None = None
        self._unbind_seq = 0
        self._drained: asyncio.Future[None] | None = None
        self._closing = False  # unbinding: no new requests
        self._closing_by_peer = False  # the peer sent unbind: answered, closing
        self._closed = False
        self._close_reason: BaseException | None = None
        self._closed_future: asyncio.Future[None] = self._loop.create_future()
        self._stopped: asyncio.Future[None] = self._loop.create_future()  # set as close starts
        self._tasks: list[asyncio.Task[None]] = []
        self.last_received = self._loop.time()
        set_nodelay(writer)

    # --- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start reading, and the enquire_link timer."""
        if self._tasks:
            return
        self._tasks.append(self._loop.create_task(self._read_loop(), name=f"smpp-read {self.name}"))
        if self.enquire_link_s > 0:
            self._tasks.append(
                self._loop.create_task(keepalive(self), name=f"smpp-keepalive {self.name}")
            )

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def close_reason(self) -> BaseException | None:
        return self._close_reason

    @property
    def outstanding(self) -> int:
        """Requests sent and not yet answered (or timed out)."""
        return len(self._pending)

    @property
    def paused_until(self) -> float:
        """Loop time until which new requests wait (see :meth:`pause`)."""
        return self._paused_until

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed_future)

    async def close(self, reason: BaseException | None = None) -> None:
        """Close now: pending requests fail with :class:`SessionClosed`, buffered output is
        flushed, the socket closed, ``on_close(session, reason)`` called once."""
        if self._closed:
            return
        self._closed = True
        self._close_reason = reason
        self._stopped.set_result(None)
        detail = f": {reason}" if reason else ""
        error = SessionClosed(f"SMPP session {self.name} closed{detail}")
        self._deadlines.close()
        for seq, waiter in list(self._pending.items()):
            if isinstance(waiter, tuple):
                self._settle_call(seq, waiter, None, error)
            elif not waiter.done():
                waiter.set_exception(error)
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        self._flush()
        self._writer.close()
        if self.on_close is not None:
            try:
                self.on_close(self, reason)
            except Exception:
                log.exception("SMPP %s: on_close hook failed", self.name)
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(self._writer.wait_closed(), 5.0)
        if not self._closed_future.done():
            self._closed_future.set_result(None)

    async def unbind(self, grace: float = 5.0) -> None:
        """Stop taking requests, let outstanding ones finish (up to *grace* seconds), send
        ``unbind``, wait for ``unbind_resp`` (up to *grace* seconds) and close."""
        if self._closed:
            return
        self._closing = True
        if self._pending:
            self._drained = self._loop.create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._drained), grace)
        with contextlib.suppress(ResponseTimeout, SessionClosed):
            await self._exchange(Unbind(), grace, closing_ok=True)
        await self.close()

    # --- sending ----------------------------------------------------------------------------

    def pause(self, seconds: float) -> None:
        """Hold new requests for *seconds* (extends, never shortens, a running pause)."""
        self._paused_until = max(self._paused_until, self._loop.time() + seconds)

    async def request(self, pdu: Pdu, response_timeout: float | None = None) -> Pdu:
        """Send request *pdu* (its ``sequence`` is set here) and return the peer's response —
        the matching ``_resp`` or a ``generic_nack``; check its ``status``.

        Waits for a window slot, a running pause and the throughput pacing first. Raises
        :class:`ResponseTimeout` when no response came *response_timeout* seconds (default: the
        session's) after the request left, :class:`SessionClosed` if the session closes first.
        """
        await self.slot()
        future = self.start_request(pdu, response_timeout)
        if self._writer.transport.get_write_buffer_size() > _HIGH_WATER:
            self._flush()
            try:
                await self._writer.drain()
            except ConnectionError as exc:
                raise SessionClosed(f"SMPP session {self.name}: {exc}") from exc
        return await future

    async def slot(self) -> None:
        """Wait for a window slot (in turn), a running pause and the pacing; the slot is for
        :meth:`start_request`, which must follow at once (:meth:`request` is the two)."""
        self._check_open()
        if self._paused_until > self._loop.time():
            await self._wait_pause()
        await self._window.take()
        try:
            if self._paused_until > self._loop.time():
                await self._wait_pause()
            if self._interval:
                await self._pace()
        except BaseException:
            self._window.give()
            raise

    def try_slot(self) -> bool:
        """Take a window slot if one is free now (no pause, no pacing, nobody waiting): then
        :meth:`start_request` must follow, as after :meth:`slot`."""
        if self._closed or self._closing or self._interval:
            return False
        return self._paused_until <= self._loop.time() and self._window.try_take()

    def start_request(self, pdu: Pdu, response_timeout: float | None = None) -> asyncio.Future[Pdu]:
        """Write request *pdu* in the slot :meth:`slot` took; the future of its response (it
        fails as :meth:`request` raises). The slot is given back once the future is done."""
        if self._closed or self._closing:
            self._window.give()
            self._check_open()
        return self._start(pdu, response_timeout, True)

    def start_call(
        self, pdu: Pdu, on_answer: AnswerHook, response_timeout: float | None = None
    ) -> None:
        """:meth:`start_request` without a future: ``on_answer(response, None)`` — or
        ``on_answer(None, error)`` with the error :meth:`request` would raise — is called once,
        from the read loop (or the timer, or :meth:`close`), after the slot is given back."""
        if self._closed or self._closing:
            self._window.give()
            self._check_open()
        seq = pdu.sequence = self._next_sequence()
        try:
            frame = encode(pdu)
        except Exception:
            self._window.give()
            raise
        call = (on_answer, True)
        self._pending[seq] = call
        self._deadlines.add(
            seq, call, self.response_timeout if response_timeout is None else response_timeout
        )
        self._write(frame)

    def send(self, pdu: Pdu) -> None:
        """Write *pdu* as it is (a response, with its sequence already set)."""
        if self._closed:
            raise SessionClosed(f"SMPP session {self.name} is closed")
        self._write(encode(pdu))

    async def _exchange(self, pdu: Pdu, wait: float | None, closing_ok: bool = False) -> Pdu:
        """A request outside the window (unbind, enquire_link)."""
        if self._closed or (self._closing and not closing_ok):
            self._check_open()
        return await self._start(pdu, wait, False)

    def _start(self, pdu: Pdu, wait: float | None, slot: bool) -> asyncio.Future[Pdu]:
        seq = pdu.sequence = self._next_sequence()
        try:
            frame = encode(pdu)
        except Exception:
            if slot:
                self._window.give()
            raise
        future: asyncio.Future[Pdu] = self._loop.create_future()
        self._pending[seq] = future
        self._deadlines.add(seq, future, self.response_timeout if wait is None else wait)
        future.add_done_callback(functools.partial(self._answered, seq, slot))
        self._write(frame)
        return future

    def _answered(self, seq: int, slot: bool, _: object) -> None:
        del self._pending[seq]
        self._deadlines.trim()
        if not self._pending and self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        if slot:
            self._window.give()

    def _settle_call(
        self,
        seq: int,
        call: tuple[AnswerHook, bool],
        response: Pdu | None,
        error: BaseException | None,
    ) -> None:
        """The answer (or *error*) of a :meth:`start_call` request, as :meth:`_answered`."""
        self._answered(seq, call[1], None)
        try:
            call[0](response, error)
        except Exception:
            log.exception("SMPP %s: answer hook failed", self.name)

    def _expire(self, seq: int, waiter: object, delay: float) -> None:
        error = ResponseTimeout(f"SMPP {self.name}: no response to sequence {seq} in {delay:g} s")
        if isinstance(waiter, tuple):
            self._settle_call(seq, waiter, None, error)
        elif isinstance(waiter, asyncio.Future) and not waiter.done():
            waiter.set_exception(error)

    def _check_open(self) -> None:
        if self._closed:
            raise SessionClosed(
                f"SMPP session {self.name} is closed"
                + (f": {self._close_reason}" if self._close_reason else "")
            )
        if self._closing:
            raise SessionClosed(f"SMPP session {self.name} is unbinding")

    async def _wait_pause(self) -> None:
        while True:
            delay = self._paused_until - self._loop.time()
            if delay <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._stopped), delay)
            self._check_open()

    async def _pace(self) -> None:
        now = self._loop.time()
        slot = max(self._next_slot, now)
        self._next_slot = slot + self._interval
        if slot > now:
            await asyncio.sleep(slot - now)
            self._check_open()

    def _next_sequence(self) -> int:
        seq = self._seq
        while True:
            seq = seq + 1 if seq < MAX_SEQUENCE else 1
            if seq not in self._pending:
                self._seq = seq
                return seq

    def _write(self, frame: bytes) -> None:
        self._out.append(frame)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._out:
            return
        data = self._out[0] if len(self._out) == 1 else b"".join(self._out)
        self._out.clear()
        if self._writer.transport.is_closing():
            return
        self._writer.write(data)

    # --- receiving --------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        reason: BaseException | None = None
        rest = bytearray()  # the start of a frame not yet whole
        unpack = HEADER.unpack_from
        clock = self._loop.time
        slice_started = 0.0
        try:
            while not self._closed:
                chunk = await self._reader.read(_READ_CHUNK)
                if not chunk:
                    reason = SessionClosed("connection closed by peer")
                    break
                self.last_received = slice_started = clock()
                if rest:  # frames are cut from bytes: one copy each, none of what waits
                    rest += chunk
                    if len(rest) < 16:
                        continue
                    length = unpack(rest)[0]
                    if 16 <= length <= self.max_pdu_size and len(rest) < length:
                        continue
                    data = bytes(rest)
                    rest.clear()
                else:
                    data = chunk
                pos = 0
                size = len(data)
                while size - pos >= 16:
                    length, cid, status, seq = unpack(data, pos)
                    if length < 16 or length > self.max_pdu_size:
                        self.nacked += 1
                        self._write(encode(generic_nack(CommandStatus.ESME_RINVCMDLEN, seq)))
                        reason = PduError(
                            CommandStatus.ESME_RINVCMDLEN,
                            f"command_length {length} outside 16..{self.max_pdu_size}",
                            sequence=seq,
                            command_id=cid,
                        )
                        break
                    if size - pos < length:
                        break
                    frame = data[pos : pos + length]
                    pos += length
                    try:
                        self._dispatch(frame, cid, status, seq)
                    except Exception:  # a bug in one PDU's path must not end the session
                        log.exception(
                            "SMPP %s: dispatch of %s failed", self.name, command_name(cid)
                        )
                    if self._closed or self._closing_by_peer:
                        break
                    if clock() - slice_started > _SLICE_S:
                        await asyncio.sleep(0)  # let other sessions (and the batcher) run
                        slice_started = clock()
                        if self._closed:
                            break
                if reason is not None or self._closing_by_peer or self._closed:
                    break
                if pos < size:
                    rest += memoryview(data)[pos:]
                if self._out or self._writer.transport.get_write_buffer_size() > _HIGH_WATER:
                    await self._back_pressure()
                if len(self._incoming) >= self.max_incoming:
                    self._incoming_room.clear()
                    await self._incoming_room.wait()
        except (ConnectionError, OSError, ssl_module.SSLError) as exc:
            reason = exc
        except asyncio.CancelledError:
            return
        except Exception as exc:  # a bug here must not leave a half-dead session
            log.exception("SMPP %s: reader failed", self.name)
            reason = exc
        if self._closing_by_peer and not self._closed:
            reason = SessionClosed("unbind from peer")
            await self._settle()
            if not self._closed:
                self._write(encode(UnbindResp(sequence=self._unbind_seq)))
        await self.close(reason)

    async def _back_pressure(self) -> None:
        """Write what waits; while the peer leaves more than ``_HIGH_WATER`` octets unread,
        read nothing (closing it after ``response_timeout`` without progress)."""
        self._flush()
        if self._writer.transport.get_write_buffer_size() <= _HIGH_WATER:
            return
        try:
            await asyncio.wait_for(self._writer.drain(), self.response_timeout)
        except TimeoutError:
            raise SessionClosed(
                f"the peer read none of {self._writer.transport.get_write_buffer_size()} "
                f"octets of responses in {self.response_timeout:g} s"
            ) from None

    def _dispatch(self, frame: bytes, cid: int, status: int, seq: int) -> None:
        try:
            pdu = decode_body(frame, cid, status, seq)
        except PduError as exc:
            self._on_bad_pdu(exc, cid, seq)
            return
        if cid & RESPONSE_BIT:
            waiter = self._pending.get(seq)
            if isinstance(waiter, tuple):
                self._settle_call(seq, waiter, pdu, None)
            elif waiter is None or waiter.done():
                self.unmatched += 1
                log.debug("SMPP %s: unmatched %s seq %d", self.name, command_name(cid), seq)
            else:
                waiter.set_result(pdu)
            return
        if cid == _ENQUIRE_LINK:
            self._write(encode(EnquireLinkResp(sequence=seq)))
            return
        if cid == _UNBIND:  # answered once what came before it is (_read_loop)
            self._unbind_seq = seq
            self._closing_by_peer = True
            return
        self._handle_request(pdu, cid)

    def _on_bad_pdu(self, exc: PduError, cid: int, seq: int) -> None:
        suppressed = _WARNINGS.allow("bad-pdu")
        if suppressed is not None:
            log.warning(
                "SMPP %s: bad %s seq %d: %r%s",
                self.name,
                command_name(cid),
                seq,
                str(exc),
                f" ({suppressed} similar warnings suppressed)" if suppressed else "",
            )
        if cid & RESPONSE_BIT:
            waiter = self._pending.get(seq)
            if isinstance(waiter, tuple):
                self._settle_call(seq, waiter, None, exc)
            elif waiter is not None and not waiter.done():
                waiter.set_exception(exc)
        if cid != CommandId.GENERIC_NACK:
            self.nacked += 1
            self._write(encode(generic_nack(exc.status, seq)))


async def connect(
    host: str,
    port: int,
    *,
    ssl: ssl_module.SSLContext | bool | None = None,
    connect_timeout: float = 10.0,
    **options: Any,
) -> Session:
    """Open a TCP (or TLS) connection and return a started :class:`Session` on it;
    *options* are the :class:`Session` keyword arguments."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=ssl or None), connect_timeout
    )
    session = Session(reader, writer, **options)
    session.start()
    return session
