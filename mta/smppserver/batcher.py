"""Micro-batches of the SMPP server front: accepted submits → one MMP batch, one confirm.

Accepted messages are collected per lane until the event loop turns (every submit the
sessions decoded from their latest reads: ``linger_s`` 0) or ``linger_s`` passes, or until
``batch_size``, then go to ``<prefix>.send`` as ONE MMP batch (AMQP ``message_id`` = a fresh
uuid) with one publisher confirm; every message's record is written to Redis before the
publish, and each submit_sm_resp carries the message's MMP ``messageId`` (``<batch
uuid>:<index>``) only after the confirm. A nack (queue full) answers ESME_RMSGQFUL, any other
failure ESME_RSYSERR: nothing is half-accepted. ``pending`` counts the submits waiting for a
confirm (the server refuses new ones beyond ``max_pending``).

Group commit: while :data:`IN_FLIGHT` batches of a lane wait for their confirms, the lane's new
submits wait for one of them to be confirmed (or for ``batch_size``) instead of going out in
a batch of their own, so batches grow with the broker's latency instead of multiplying: one
client with window 50 through the whole pipeline (``mta bench --partner smpp --ingress``)
made batches of 11 messages on average without it, each costing the worker its per-batch
round trips.

Resubmits: the answers of a confirmed batch free as many slots of the clients' windows, and
the clients fill them at once. With ``linger_s`` 0 the lane counts them (``expect``) and its
next batch waits — :data:`RESUBMIT_WAIT_S` at most, never while a batch is in flight —
until that many submits came, so they travel together: a window-50 client's submits go in
batches of 50 instead of alternating halves (25 on average, often 1 and 49), which halves
the publishes, confirms and record writes per message here and the batches the workers
take. A client that sends one submit at a time never waits (its one resubmit is the one
expected); one that stops sending costs its last batch :data:`RESUBMIT_WAIT_S` once.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any, Final

import aiormq
import orjson

from mta.broker import Broker
from mta.smpp import pdu as P
from mta.smpp.session import Session
from mta.smppserver.records import MessageRecord, MessageRecords
from mta.topology import LANE_BULK, LANE_PRIORITY

__all__ = ["IN_FLIGHT", "AcceptedSubmit", "SubmitBatcher"]

#: Batches of one lane published and not yet confirmed before new submits wait (group commit).
IN_FLIGHT = 1
#: After a lane's batch was answered, how long its next batch waits (at most) for the submits
#: those answers let the clients send, so that it carries them too.
RESUBMIT_WAIT_S: Final = 0.002

log = logging.getLogger(__name__)

S = P.CommandStatus


@dataclass(slots=True)
class AcceptedSubmit:
    """One accepted submit_sm: its MMP message, its record, its part ids, whom to answer."""

    message: dict[str, Any]
    record: MessageRecord
    parts: list[str]
    session: Session
    pdu: P.Pdu


@dataclass
class _Lane:
    name: str
    entries: list[AcceptedSubmit] = field(default_factory=list)
    timer: asyncio.Handle | None = None
    in_flight: int = 0
    expect: int = 0  # submits answered whose clients' next submits have not come yet
    waiting: bool = False  # the timer is the RESUBMIT_WAIT_S one


class SubmitBatcher:
    """Collects accepted submits per lane and publishes them as MMP batches with confirms."""

    def __init__(
        self,
        broker: Broker,
        records: MessageRecords,
        stats: dict[str, int],
        *,
        batch_size: int,
        linger_s: float,
        max_pending: int,
    ) -> None:
        self.broker = broker
        self.records = records
        self.stats = stats
        self.batch_size = batch_size
        self.linger_s = linger_s
        self.max_pending = max_pending
        self.pending = 0
        self.lanes = {name: _Lane(name) for name in (LANE_BULK, LANE_PRIORITY)}
        self.tasks: set[asyncio.Task[None]] = set()
        self.loop = asyncio.get_running_loop()

    def add(self, lane_name: str, entry: AcceptedSubmit) -> None:
        lane = self.lanes[lane_name]
        lane.entries.append(entry)
        self.pending += 1
        if lane.expect:
            lane.expect -= 1
        if len(lane.entries) >= self.batch_size:
            self.flush(lane)
        elif lane.in_flight >= IN_FLIGHT:
            return  # group commit: they wait for the batch in flight
        elif lane.timer is None:
            if self.linger_s > 0:
                lane.timer = self.loop.call_later(self.linger_s, self.flush, lane)
            else:  # what the session decoded from this read: flushed once the loop turns
                lane.timer = self.loop.call_soon(self._ready, lane)
        elif lane.waiting and not lane.expect:  # the submits it waited for are here
            lane.timer.cancel()
            lane.waiting = False
            lane.timer = self.loop.call_soon(self._ready, lane)

    def _ready(self, lane: _Lane) -> None:
        """The loop turned: publish — unless the lane's last answers are still bringing
        submits back (then wait for them, RESUBMIT_WAIT_S at most)."""
        lane.timer = None
        waits = lane.expect and not self.linger_s and not lane.in_flight
        if waits and len(lane.entries) < self.batch_size:
            lane.waiting = True
            lane.timer = self.loop.call_later(RESUBMIT_WAIT_S, self._waited, lane)
            return
        self.flush(lane)

    def _waited(self, lane: _Lane) -> None:
        lane.timer = None
        lane.waiting = False
        lane.expect = 0  # what did not come by now is not waited for again
        self.flush(lane)

    def flush(self, lane: _Lane) -> None:
        if lane.timer is not None:
            lane.timer.cancel()
            lane.timer = None
            lane.waiting = False
        if not lane.entries:
            return
        entries, lane.entries = lane.entries, []
        lane.in_flight += 1
        task = self.loop.create_task(self._publish(lane.name, entries))
        self.tasks.add(task)
        n = len(entries)
        task.add_done_callback(lambda done: self._published(lane, done, n))

    def _published(self, lane: _Lane, task: asyncio.Task[None], answered: int) -> None:
        self.tasks.discard(task)
        lane.in_flight -= 1
        lane.expect += answered  # their clients may send as many again now
        if lane.entries and lane.timer is None:  # they waited for this confirm
            lane.timer = self.loop.call_soon(self._ready, lane)

    async def drain(self) -> None:
        for lane in self.lanes.values():
            self.flush(lane)
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)

    async def _publish(self, lane: str, entries: list[AcceptedSubmit]) -> None:
        """One micro-batch: records to Redis, the MMP batch to <prefix>.send with a confirm,
        then every submit_sm_resp."""
        batch_id = uuid.uuid4().hex
        ids = [f"{batch_id}:{i}" for i in range(len(entries))]
        status = S.ESME_ROK
        try:
            part_map = {p: mid for e, mid in zip(entries, ids, strict=True) for p in e.parts}
            await self.records.add_batch(batch_id, [e.record for e in entries], part_map)
            body = orjson.dumps({"messages": [e.message for e in entries]})
            await self.broker.publish_once(
                self.broker.topology.send_exchange, lane, body, message_id=batch_id
            )
            self.stats["batches"] += 1
            self.stats["published"] += len(entries)
        except aiormq.exceptions.PublishError as exc:  # returned: no queue bound
            status = S.ESME_RSYSERR
            log.warning("SMPP batch %s (%d) unroutable: %r", batch_id, len(ids), exc)
        except aiormq.exceptions.DeliveryError as exc:  # nacked: the queue is full
            status = S.ESME_RMSGQFUL
            log.warning("SMPP batch %s (%d) refused by the broker: %r", batch_id, len(ids), exc)
        except Exception as exc:
            status = S.ESME_RSYSERR
            log.warning("SMPP batch %s (%d) not published: %r", batch_id, len(ids), exc)
        finally:
            self.pending -= len(entries)
        for entry, message_id in zip(entries, ids, strict=True):
            resp = (
                P.SubmitSmResp(message_id=message_id)
                if status == 0
                else P.SubmitSmResp(status=status)
            )
            entry.session.reply(entry.pdu, resp)
