"""Receipts on their way to ONE receiving session: a bounded queue in front of its window.

A :class:`ReceiptOutlet` takes receipts (:class:`~mta.smppserver.records.ReceiptDelivery`) for
one session bound as receiver or transceiver and sends them as ``deliver_sm``, pipelined up to
the session's ``window`` (requests outstanding at once): each ``deliver_sm_resp`` frees a slot
and the next waiting receipt goes out at once — no timer, no sleep per receipt.
:meth:`ReceiptOutlet.offer` returns a future that says what became of the receipt: True when it
is done with (answered ESME_ROK, or refused for good and dropped), False when it must be
stashed in Redis (not answered in time, a temporary refusal, the session closed, or it waited
too long here).

What keeps a slow or silent client from holding receipts (and, through them, the report
messages of the shared queue) up, and memory bounded:

* at most ``cap`` receipts wait here; :attr:`ReceiptOutlet.accepting` is False beyond it, so the
  router stashes the next ones at once;
* a receipt that waited ``hold_s`` without being sent goes back (False);
* a session whose window is full with no answer for ``hold_s`` is *stalled*: it accepts
  nothing and its waiting receipts go back at once;
* a ``deliver_sm`` not answered within ``timeout_s`` goes back, and the outlet pauses (accepts
  nothing, sends nothing) for ``hold_s``; ESME_RTHROTTLED / ESME_RMSGQFUL pause it for
  ``throttle_s`` (the receipt goes back).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from collections.abc import Callable
from datetime import datetime, tzinfo
from typing import Final

from mta import metrics
from mta.smpp import pdu as P
from mta.smpp.receipt import MessageState, format_receipt
from mta.smpp.session import ResponseTimeout, Session, SessionClosed
from mta.smppserver.records import ReceiptDelivery

__all__ = ["ReceiptOutlet", "receipt_pdu"]

log = logging.getLogger(__name__)
_m = metrics.Children()  # mta_smpp_receipts_total children, one per client

S = P.CommandStatus
RETRY_LATER: Final = frozenset(
    {S.ESME_RTHROTTLED, S.ESME_RMSGQFUL, S.ESME_RX_T_APPN, S.ESME_RSYSERR, S.ESME_RINVBNDSTS}
)
_SLOW_DOWN: Final = frozenset({S.ESME_RTHROTTLED, S.ESME_RMSGQFUL})


def receipt_pdu(job: ReceiptDelivery, tz: tzinfo) -> P.DeliverSm:
    """The ``deliver_sm`` receipt of *job* (esm_class 0x04, Appendix B text, TLVs)."""
    record = job.record
    text, tlvs = format_receipt(
        job.message_id,
        MessageState(job.state),
        submit_date=datetime.fromtimestamp(record.submit_ms / 1000, tz),
        done_date=datetime.fromtimestamp(job.done_ms / 1000, tz),
        err=record.err,
        text=record.text,
    )
    return P.DeliverSm(
        source_addr_ton=record.dest_ton,
        source_addr_npi=record.dest_npi,
        source_addr=record.dest_addr,
        dest_addr_ton=record.source_ton,
        dest_addr_npi=record.source_npi,
        destination_addr=record.source_addr,
        esm_class=P.EsmClass.DELIVERY_RECEIPT,
        short_message=text,
        tlvs=tlvs,
    )


class ReceiptOutlet:
    """The receipts waiting for, and in flight to, one receiving session."""

    def __init__(
        self,
        session: Session,
        tz: tzinfo,
        stats: dict[str, int],
        *,
        cap: int,
        hold_s: float,
        timeout_s: float,
        throttle_s: float = 1.0,
        on_progress: Callable[[ReceiptOutlet], None] | None = None,
    ) -> None:
        self.session = session
        self.tz = tz
        self.stats = stats
        self.cap = cap
        self.hold_s = hold_s
        self.timeout_s = timeout_s
        self.throttle_s = throttle_s
        self.on_progress = on_progress
        self.window = session.window
        self.in_flight = 0
        self.peak = 0  # most receipts waiting here at once (for tests and status)
        self._waiting: deque[tuple[ReceiptDelivery, asyncio.Future[bool], float]] = deque()
        self._loop = asyncio.get_running_loop()
        self._last_answer = self._loop.time()
        self._paused_until = 0.0
        self._sweeper: asyncio.TimerHandle | None = None
        self._resume: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def load(self) -> int:
        """Receipts waiting here or in flight."""
        return len(self._waiting) + self.in_flight

    @property
    def stalled(self) -> bool:
        """The window is full and nothing was answered for ``hold_s``."""
        return self.in_flight >= self.window and self._loop.time() - self._last_answer > self.hold_s

    @property
    def accepting(self) -> bool:
        return (
            not self._closed
            and not self.session.closed
            and len(self._waiting) < self.cap
            and self._paused_until <= self._loop.time()
            and not self.stalled
        )

    def offer(self, job: ReceiptDelivery) -> asyncio.Future[bool]:
        """Queue *job* (check :attr:`accepting` first); the future says whether it is done
        with (True) or must be stashed (False)."""
        future: asyncio.Future[bool] = self._loop.create_future()
        if not self.accepting:
            future.set_result(False)
            return future
        self._waiting.append((job, future, self._loop.time()))
        self.peak = max(self.peak, len(self._waiting))
        self._pump()
        if self._waiting and self._sweeper is None:
            self._sweeper = self._loop.call_later(self.hold_s, self._sweep)
        return future

    def close(self) -> None:
        """The session is gone: everything waiting goes back (in-flight ones fail with it)."""
        self._closed = True
        self._give_back()
        for handle in (self._sweeper, self._resume):
            if handle is not None:
                handle.cancel()
        self._sweeper = self._resume = None

    # --- sending ------------------------------------------------------------------------

    def _pump(self) -> None:
        if self._paused_until > self._loop.time():
            return
        while self._waiting and self.in_flight < self.window:
            job, future, _ = self._waiting.popleft()
            if future.done():
                continue
            self.in_flight += 1
            if self.session.try_slot():  # the usual case: no task, a callback per answer
                try:
                    answer = self.session.start_request(receipt_pdu(job, self.tz), self.timeout_s)
                except Exception as exc:  # settled here: _done would pump again
                    self.in_flight -= 1
                    if not future.done():
                        future.set_result(self._failed(job, exc))
                    continue
                answer.add_done_callback(functools.partial(self._answered, job, future))
                continue
            task = self._loop.create_task(self._send(job, future))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, job: ReceiptDelivery, future: asyncio.Future[bool]) -> None:
        done = False
        try:
            done = await self._exchange(job)
        finally:
            self._done(future, done)

    def _answered(
        self, job: ReceiptDelivery, future: asyncio.Future[bool], answer: asyncio.Future[P.Pdu]
    ) -> None:
        if answer.cancelled():
            self._done(future, False)
            return
        exc = answer.exception()
        self._done(future, self._failed(job, exc) if exc else self._result(job, answer.result()))

    def _done(self, future: asyncio.Future[bool], done: bool) -> None:
        self.in_flight -= 1
        if not future.done():
            future.set_result(done)
        if not self._closed:
            self._pump()
        if self.on_progress is not None:
            self.on_progress(self)

    async def _exchange(self, job: ReceiptDelivery) -> bool:
        try:
            resp = await self.session.request(receipt_pdu(job, self.tz), self.timeout_s)
        except (SessionClosed, ResponseTimeout, P.PduError) as exc:
            return self._failed(job, exc)
        return self._result(job, resp)

    def _failed(self, job: ReceiptDelivery, exc: BaseException) -> bool:
        """A deliver_sm not sent or not answered: it goes back (False)."""
        if not isinstance(exc, (SessionClosed, ResponseTimeout, P.PduError)):
            log.warning("SMPP receipt %s not sent: %r", job.message_id, exc)
            return False
        log.info("SMPP receipt %s to %s not answered: %s", job.message_id, self.session.name, exc)
        if isinstance(exc, ResponseTimeout) and not self._closed:
            self._pause(self.hold_s, give_back=True)
        return False

    def _result(self, job: ReceiptDelivery, resp: P.Pdu) -> bool:
        """What a deliver_sm_resp means for its receipt (True: done with it)."""
        self._last_answer = self._loop.time()
        if resp.status == S.ESME_ROK:
            self.stats["receipts_sent"] += 1
            _m.inc(metrics.SMPP_RECEIPTS, job.record.system_id)
            return True
        if resp.status in RETRY_LATER:
            if resp.status in _SLOW_DOWN:
                self._pause(self.throttle_s, give_back=False)
            return False
        self.stats["receipts_dropped"] += 1
        log.warning(
            "SMPP receipt %s refused by %r with %s; dropped",
            job.message_id,
            job.record.system_id,
            P.status_name(resp.status),
        )
        return True

    # --- giving receipts back -------------------------------------------------------------

    def _pause(self, seconds: float, *, give_back: bool) -> None:
        until = self._loop.time() + seconds
        if until <= self._paused_until:
            return
        self._paused_until = until
        if give_back:
            self._give_back()
        if self._resume is not None:
            self._resume.cancel()
        self._resume = self._loop.call_later(seconds, self._resumed)

    def _resumed(self) -> None:
        self._resume = None
        self._pump()
        if self.on_progress is not None:
            self.on_progress(self)

    def _give_back(self) -> None:
        while self._waiting:
            _, future, _ = self._waiting.popleft()
            if not future.done():
                future.set_result(False)

    def _sweep(self) -> None:
        """Give back what waited ``hold_s`` (all of it when the session is stalled)."""
        self._sweeper = None
        if self.stalled:
            self._give_back()
        limit = self._loop.time() - self.hold_s
        while self._waiting and self._waiting[0][2] <= limit:
            _, future, _ = self._waiting.popleft()
            if not future.done():
                future.set_result(False)
        if self._waiting and not self._closed:
            delay = max(0.01, self._waiting[0][2] + self.hold_s - self._loop.time())
            self._sweeper = self._loop.call_later(delay, self._sweep)
        if self.on_progress is not None:
            self.on_progress(self)
