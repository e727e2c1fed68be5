"""The incoming requests of an SMPP session: the owner's handler, its answer now, later or from a
task, handler errors, and the settling of what was received before an unbind.

:class:`IncomingRequests` is a part of :class:`mta.smpp.session.Session` (its base), kept in
its own module; the session's docstring says what the handler may return.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Final, cast

from mta.smpp.pdu import CommandId, CommandStatus, Pdu, encode, response_for, response_frame

if TYPE_CHECKING:
    from mta.smpp.session import RequestHandler, Session

log = logging.getLogger("mta.smpp.session")

_NO_ANSWER: Final = frozenset({CommandId.OUTBIND, CommandId.ALERT_NOTIFICATION})
_MAX_DEFERRED: Final = 1 << 16  # requests tracked for unbind; beyond, unbind waits for none


class IncomingRequests:
    """Requests from the peer, handed to ``on_request`` and answered (the session's part)."""

    on_request: RequestHandler | None
    name: str
    max_incoming: int
    response_timeout: float
    _loop: asyncio.AbstractEventLoop
    _closed: bool
    _incoming: set[asyncio.Task[None]]
    _incoming_room: asyncio.Event
    _deferred: set[int]  # requests the handler answers later (reply())
    _settled: asyncio.Future[None] | None

    def _write(self, frame: bytes) -> None:
        raise NotImplementedError

    def reply(self, request: Pdu, response: Pdu) -> None:
        """Answer *request* with *response* (the sequence is copied); dropped if closed."""
        response.sequence = request.sequence
        if self._deferred:
            self._deferred.discard(request.sequence)
            self._check_settled()
        if self._closed:
            log.debug("SMPP %s: %s after close dropped", self.name, response.name)
            return
        self._write(encode(response))

    def answer(self, request: Pdu, status: int = 0) -> None:
        """``reply(request, response_for(request, status))`` without building the response
        (its frame is written from a precomputed body)."""
        if self._deferred:
            self._deferred.discard(request.sequence)
            self._check_settled()
        if self._closed:
            log.debug("SMPP %s: answer to %s after close dropped", self.name, request.name)
            return
        self._write(response_frame(request, status))

    async def _settle(self) -> None:
        """Wait (up to ``response_timeout``) until every request received was answered."""
        if not self._incoming and not self._deferred:
            return
        self._settled = self._loop.create_future()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._settled), self.response_timeout)

    def _check_settled(self) -> None:
        settled = self._settled
        if settled is None or settled.done() or self._incoming or self._deferred:
            return
        settled.set_result(None)

    def _handle_request(self, pdu: Pdu, cid: int) -> None:
        handler = self.on_request
        if handler is None:
            if cid not in _NO_ANSWER:
                self._write(encode(response_for(pdu, CommandStatus.ESME_RINVCMDID)))
            return
        try:
            result = handler(cast("Session", self), pdu)
        except Exception:
            log.exception("SMPP %s: handler failed on %s", self.name, pdu.name)
            self._answer_error(pdu, cid)
            return
        if result is None:
            if cid not in _NO_ANSWER and len(self._deferred) < _MAX_DEFERRED:
                self._deferred.add(pdu.sequence)  # the owner answers it later with reply()
            return
        if isinstance(result, Pdu):
            self._safe_reply(pdu, cid, result)
            return
        if inspect.isawaitable(result):
            task = self._loop.create_task(self._answer_later(pdu, cid, result))
            self._incoming.add(task)
            task.add_done_callback(self._incoming_done)
            return
        log.error("SMPP %s: handler returned %r for %s", self.name, result, pdu.name)
        self._answer_error(pdu, cid)

    async def _answer_later(self, pdu: Pdu, cid: int, result: Awaitable[Pdu | None]) -> None:
        try:
            response = await result
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("SMPP %s: handler failed on %s", self.name, pdu.name)
            self._answer_error(pdu, cid)
            return
        if response is not None:
            self._safe_reply(pdu, cid, response)

    def _safe_reply(self, pdu: Pdu, cid: int, response: Pdu) -> None:
        try:
            self.reply(pdu, response)
        except Exception:
            log.exception("SMPP %s: cannot encode the answer %r", self.name, response)
            self._answer_error(pdu, cid)

    def _incoming_done(self, task: asyncio.Task[None]) -> None:
        self._incoming.discard(task)
        if len(self._incoming) < self.max_incoming:
            self._incoming_room.set()
        self._check_settled()

    def _answer_error(self, pdu: Pdu, cid: int) -> None:
        if cid in _NO_ANSWER or self._closed:
            return
        self._write(encode(response_for(pdu, CommandStatus.ESME_RSYSERR)))
