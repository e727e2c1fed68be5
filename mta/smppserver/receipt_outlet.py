"""Receipts on their way to ONE receiving session: a bounded queue in front of its window.

A :class:`ReceiptOutlet` takes receipts (:class:`~mta.smppserver.records.ReceiptDelivery`) for
one session bound as receiver or transceiver and sends them as ``deliver_sm``, pipelined up to
the session's ``window`` (requests outstanding at once): each ``deliver_sm_resp`` frees a slot
and the next waiting receipt goes out at once — no timer, no sleep per receipt.
:meth:`ReceiptOutlet.offer` queues a receipt on a :class:`Ticket` (the receipts of one report
message, or of one claim from the stash) and the ticket says what became of each: done with
(answered ESME_ROK, or refused for good and dropped), or back — to be stashed in Redis (not
answered in time, a temporary refusal, the session closed, or it waited too long here). A
ticket counts down instead of a future per receipt: its future is set once every receipt on
it was settled.

What keeps a slow or silent client from holding receipts (and, through them, the report
messages of the shared queue) up, and memory bounded:

* at most ``cap`` receipts wait here; :attr:`ReceiptOutlet.accepting` is False beyond it, so the
  router stashes the next ones at once;
* a receipt that waited ``hold_s`` without being sent goes back;
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
from typing import Any, Final

from mta import metrics
from mta.smpp import pdu as P
from mta.smpp.receipt import MessageState, format_receipt
from mta.smpp.session import ResponseTimeout, Session, SessionClosed
from mta.smppserver.records import ReceiptDelivery

__all__ = ["ReceiptOutlet", "Ticket", "receipt_pdu"]

log = logging.getLogger(__name__)

S = P.CommandStatus
RETRY_LATER: Final = frozenset(
    {S.ESME_RTHROTTLED, S.ESME_RMSGQFUL, S.ESME_RX_T_APPN, S.ESME_RSYSERR, S.ESME_RINVBNDSTS}
)
_SLOW_DOWN: Final = frozenset({S.ESME_RTHROTTLED, S.ESME_RMSGQFUL})
_STATES: Final[dict[int, MessageState]] = {int(s): s for s in MessageState}
_DATES_MAX: Final = 4096  # cached seconds → datetime of one outlet


def _date(cache: dict[int, datetime], ms: int, tz: tzinfo) -> datetime:
    """The moment *ms* in *tz*, to the second (a receipt shows minutes): the datetimes of a
    report's receipts repeat (one done date, submit dates of the same seconds), so they are
    built once."""
    second = ms // 1000
    found = cache.get(second)
    if found is None:
        if len(cache) >= _DATES_MAX:
            cache.clear()
        found = cache[second] = datetime.fromtimestamp(second, tz)
    return found


def receipt_pdu(
    job: ReceiptDelivery, tz: tzinfo, dates: dict[int, datetime] | None = None
) -> P.DeliverSm:
    """The ``deliver_sm`` receipt of *job* (esm_class 0x04, Appendix B text, TLVs)."""
    record = job.record
    cache = {} if dates is None else dates
    text, tlvs = format_receipt(
        job.message_id,
        _STATES.get(job.state) or MessageState(job.state),
        submit_date=_date(cache, record.submit_ms, tz),
        done_date=_date(cache, job.done_ms, tz),
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


class Ticket:
    """Receipts offered together, counted down as each is settled. ``back`` collects those to
    stash (or give back to the stash), ``sent`` — when asked for — those done with; ``future``
    is set once :meth:`close` was called and none is left. ``on_settle`` (optional) is called
    after each one."""

    __slots__ = ("_open", "back", "future", "left", "on_settle", "sent")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        keep_sent: bool = False,
        on_settle: Callable[[], None] | None = None,
    ) -> None:
        self.left = 0
        self._open = True
        self.back: list[ReceiptDelivery] = []
        self.sent: list[ReceiptDelivery] | None = [] if keep_sent else None
        self.future: asyncio.Future[None] = loop.create_future()
        self.on_settle = on_settle

    def settle(self, job: ReceiptDelivery, done: bool) -> None:
        if done:
            if self.sent is not None:
                self.sent.append(job)
        else:
            self.back.append(job)
        self.left -= 1
        if not self.left and not self._open and not self.future.done():
            self.future.set_result(None)
        if self.on_settle is not None:
            self.on_settle()

    def close(self) -> None:
        """Nothing more will be offered on it."""
        self._open = False
        if not self.left and not self.future.done():
            self.future.set_result(None)


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
        system_id: str = "",
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
        self._waiting: deque[tuple[ReceiptDelivery, Ticket, float]] = deque()
        self._loop = asyncio.get_running_loop()
        self._last_answer = self._loop.time()
        self._paused_until = 0.0
        self._sweeper: asyncio.TimerHandle | None = None
        self._resume: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._dates: dict[int, datetime] = {}
        # mta_smpp_receipts_total: counted here, added to the counter once per loop turn
        self._sent_metric: Any = metrics.SMPP_RECEIPTS.labels(system_id) if system_id else None
        self._unflushed = 0

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

    def offer(self, job: ReceiptDelivery, ticket: Ticket) -> bool:
        """Queue *job* on *ticket* (which then settles it once); False — and nothing queued —
        when this outlet takes nothing now (:attr:`accepting`)."""
        if len(self._waiting) >= self.cap or not self.accepting:
            return False
        self._queue(job, ticket)
        self._pump()
        return True

    def offer_many(self, jobs: list[ReceiptDelivery], ticket: Ticket) -> int:
        """Queue the first of *jobs* on *ticket* while this outlet accepts them; how many."""
        if not jobs or not self.accepting:
            return 0
        waiting = self._waiting
        room = min(len(jobs), self.cap - len(waiting))
        now = self._loop.time()
        waiting.extend([(job, ticket, now) for job in (jobs[:room] if room < len(jobs) else jobs)])
        ticket.left += room
        if len(waiting) > self.peak:
            self.peak = len(waiting)
        if self._sweeper is None:
            self._sweeper = self._loop.call_later(self.hold_s, self._sweep)
        self._pump()
        return room

    def _queue(self, job: ReceiptDelivery, ticket: Ticket) -> None:
        ticket.left += 1
        waiting = self._waiting
        waiting.append((job, ticket, self._loop.time()))
        if len(waiting) > self.peak:
            self.peak = len(waiting)
        if self._sweeper is None:
            self._sweeper = self._loop.call_later(self.hold_s, self._sweep)

    def close(self) -> None:
        """The session is gone: everything waiting goes back (in-flight ones fail with it)."""
        self._closed = True
        self._give_back()
        for handle in (self._sweeper, self._resume):
            if handle is not None:
                handle.cancel()
        self._sweeper = self._resume = None
        self._flush_metric()

    # --- sending ------------------------------------------------------------------------

    def _pump(self) -> None:
        if self._paused_until > self._loop.time():
            return
        waiting = self._waiting
        session = self.session
        while waiting and self.in_flight < self.window:
            job, ticket, _ = waiting.popleft()
            self.in_flight += 1
            if session.try_slot():  # the usual case: no task, no future, a call per answer
                try:
                    session.start_call(
                        receipt_pdu(job, self.tz, self._dates),
                        functools.partial(self._answered, job, ticket),
                        self.timeout_s,
                    )
                except Exception as exc:  # settled here: _done would pump again
                    self.in_flight -= 1
                    ticket.settle(job, self._failed(job, exc))
                continue
            task = self._loop.create_task(self._send(job, ticket))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, job: ReceiptDelivery, ticket: Ticket) -> None:
        done = False
        try:
            done = await self._exchange(job)
        finally:
            self._done(job, ticket, done)

    def _answered(
        self,
        job: ReceiptDelivery,
        ticket: Ticket,
        resp: P.Pdu | None,
        exc: BaseException | None,
    ) -> None:
        """The session's answer to a deliver_sm (Session.start_call's hook)."""
        if resp is None:
            self._done(job, ticket, self._failed(job, exc or SessionClosed("no answer")))
            return
        if resp.status:
            self._done(job, ticket, self._result(job, resp))
            return
        # the usual answer, as _result and _done take it
        self._last_answer = self._loop.time()
        self.stats["receipts_sent"] += 1
        self._unflushed += 1
        if self._unflushed == 1:
            self._loop.call_soon(self._flush_metric)
        self.in_flight -= 1
        ticket.settle(job, True)
        if self._waiting and not self._closed:
            self._pump()
        if self.on_progress is not None:
            self.on_progress(self)

    def _done(self, job: ReceiptDelivery, ticket: Ticket, done: bool) -> None:
        self.in_flight -= 1
        ticket.settle(job, done)
        if not self._closed and self._waiting:
            self._pump()
        if self.on_progress is not None:
            self.on_progress(self)

    async def _exchange(self, job: ReceiptDelivery) -> bool:
        try:
            resp = await self.session.request(
                receipt_pdu(job, self.tz, self._dates), self.timeout_s
            )
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
            self._count_sent()
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

    def _count_sent(self) -> None:
        self._unflushed += 1
        if self._unflushed == 1:
            self._loop.call_soon(self._flush_metric)

    def _flush_metric(self) -> None:
        if self._unflushed and self._sent_metric is not None:
            self._sent_metric.inc(self._unflushed)
        self._unflushed = 0

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
            job, ticket, _ = self._waiting.popleft()
            ticket.settle(job, False)

    def _sweep(self) -> None:
        """Give back what waited ``hold_s`` (all of it when the session is stalled)."""
        self._sweeper = None
        if self.stalled:
            self._give_back()
        limit = self._loop.time() - self.hold_s
        while self._waiting and self._waiting[0][2] <= limit:
            job, ticket, _ = self._waiting.popleft()
            ticket.settle(job, False)
        if self._waiting and not self._closed:
            delay = max(0.01, self._waiting[0][2] + self.hold_s - self._loop.time())
            self._sweeper = self._loop.call_later(delay, self._sweep)
        if self.on_progress is not None:
            self.on_progress(self)
