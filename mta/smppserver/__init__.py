"""The SMPP server front (``mta smpp-server``): ESMEs bind, submit, query, cancel, get receipts.

The package, in the order of the data path (each module opens with its job):

``server.py``          the listener: TCP/TLS, connection caps, a Session per connection, life cycle
``handlers.py``        one ``smpp_<command>`` handler per request, dispatched by command id
``auth.py``            credentials, bind-attempt limits, throughput buckets, the limits
``submit.py``          submit_sm → MMP message (addresses, text, times, long-message parts)
``reassembly.py``      long messages reassembled within a budget per client
``times.py``           SMPP ↔ MMP times
``batcher.py``         accepted submits → one MMP batch per lane, one publisher confirm
``records.py``         per-message records in Redis (query_sm, cancel_sm, receipts)
``receipts.py``        finals → receipts: record updates, routing to a receiving session
``receipt_outlet.py``  the receipts queued in front of one receiving session's window
``receipt_stash.py``   receipts waiting in Redis for a receiving session, claimed and settled

We act as the SMSC (docs/protocols.md §1.13). Each connection is a
:class:`~mta.smpp.session.Session` (framing, window, enquire_link, unbind, generic_nack for
malformed or unknown PDUs); :mod:`~mta.smppserver.handlers` decides what each request means.

Abuse controls (the decisions in :mod:`mta.smppserver.auth` and
:mod:`mta.smppserver.reassembly`, the limits in :class:`~mta.smppserver.auth.SmppLimits`):
connections at once are capped in total and per IP (excess ones are closed at once); a
connection not bound within ``bind_timeout_s`` is closed, whatever it sends meanwhile; bind
attempts are counted when they start, per IP and per system_id
(:class:`~mta.smppserver.auth.BindLimiter`), and one over the limit is refused without its
password being looked at.

Binds. ``bind_transmitter``/``_receiver``/``_transceiver`` are checked by
:class:`~mta.smppserver.auth.ClientDirectory` (constant-time compare); every refused bind —
unknown system_id, wrong password or over the attempt limit — is answered ESME_RBINDFAIL after
the same ``bind_fail_delay_s``, and the connection is closed, so failures cannot be pipelined
on one connection. Any PDU but a bind (and enquire_link/unbind, which the Session answers)
before bind gets ESME_RINVBNDSTS; a second bind ESME_RALYBND; submit_sm on a receiver bind
ESME_RINVBNDSTS. query_sm and cancel_sm are taken on every bind type (clients disagree on where
they belong, docs/protocols.md §1.3).

submit_sm. ``destination_addr`` must be an international number, digits only (one leading ``+``
is dropped), else ESME_RINVDSTADR; ``source_addr`` becomes ``sender`` (alphanumeric ≤ 11,
numeric ≤ 16, else ESME_RINVSRCADR). The text comes from ``short_message`` or the
``message_payload`` TLV (both at once: ESME_RINVMSGLEN), in data_coding 0 (GSM 03.38), 1 (IA5),
3 (Latin-1) or 8 (UCS-2); other codings are refused with ESME_RSUBMITFAIL (binary content
cannot become an MMP text). ``schedule_delivery_time``/``validity_period`` (absolute or
relative, docs/protocols.md §1.7) become ``startTime``/``expireTime`` in ``MTA_TIMEZONE``,
rounded *up* to the minute (never earlier than asked, never shorter-lived); a schedule in the
past means now, a validity already over is ESME_RINVEXPIRY, a malformed one
ESME_RINVSCHED/ESME_RINVEXPIRY. Beyond the client's ``throughput``: ESME_RTHROTTLED.

Micro-batches. Accepted messages are collected per lane until the event loop turns (every
submit the sessions decoded from their latest reads: ``linger_ms`` 0, the default; a positive
``linger_ms`` waits that long instead) or until ``batch_size`` (default 500, at most
MTA_MAX_BATCH), then go to ``<prefix>.send`` as ONE MMP batch (AMQP ``message_id`` = a fresh
uuid, routing key ``priority`` when ``priority_flag`` > 0 or the client is configured
``priority``, else ``bulk``) with one publisher confirm; every message's record is written to
Redis before the publish, and each submit_sm_resp carries the message's MMP ``messageId``
(``<batch uuid>:<index>``, ≤ 64 characters) only after the confirm. While a lane's batch
waits for its confirm, the lane's new submits wait for it (group commit,
:data:`mta.smppserver.batcher.IN_FLIGHT`), so batches grow with the broker's latency; and once
a batch was answered, the next one waits (2 ms at most) for the submits those answers let the
clients send, so a window's worth travels as one batch.
Waiting for the loop to turn rather than a fixed linger was measured better: a
client's window of submits arrives in one or two reads, so it becomes one batch without adding
latency (window 50: 7.9k submit_sm/s with it, 5.2k with a 2 ms linger, 4.9k with 5 ms;
tests/bench/bench_smpp_server.py). A nack (queue full) answers ESME_RMSGQFUL, any other failure
ESME_RSYSERR: the client retries, nothing is half-accepted. At most ``max_pending`` submits
wait for a confirm per process; beyond that ESME_RMSGQFUL.

Long messages (UDH with 8/16-bit reference, or SAR TLVs) are reassembled per (system_id,
source_addr, destination_addr, reference) in this process by
:class:`~mta.smppserver.reassembly.Reassembly` — within a budget per system_id (incomplete
messages, parts, octets; over it the client's own oldest incomplete message is dropped, never
another client's), dropped ``reassembly_timeout_s`` (5 min) after their first part — and
published as ONE MMP message. A repeated part (same reference and number) counts once and gets
the same id. Every part gets its own submit_sm_resp at once: the part that completes the
message gets the MMP message id after the confirm; each other part gets its own part id (32 hex
digits, no ``:``) answered immediately, which Redis maps to the MMP id once the message is
published. query_sm and cancel_sm accept any of them; the final state sends one receipt per id
(as SMSCs do for each part), so a client waiting for every part's receipt gets them all. A part
id whose message never completed is unknown to query_sm (ESME_RINVMSGID). The parts of one
message must come over sessions of the same server process (in practice one session).

query_sm answers from the Redis record (kept 48 h after the last update): ENROUTE until the
final, then DELIVERED / UNDELIVERABLE / EXPIRED / DELETED with ``final_date``. The state stays
ENROUTE while the partner has it (no ACCEPTED: many clients read it as final). An id that is
unknown or belongs to another system_id is ESME_RINVMSGID.

cancel_sm (by message id only) runs :meth:`mta.store.Store.cancel`: while the message is
queued, held or waiting for a retry, it is cancelled, the server publishes its FAIL itself
(routing key ``<accountId>.FAIL``, partnerStatus ``CANCELLED``, a detail naming the client;
through the Redis outbox, so a reporter's outbox recovery publishes it if this process dies
first) and the record becomes DELETED; once a worker has handed it to a partner (or it is
final): ESME_RCANCELFAIL.

Receipts: :class:`~mta.smppserver.receipts.ReceiptRouter` consumes the finals of this server's
messages from ``<prefix>.smpp.receipts`` and queues each receipt for a receiving session of its
system_id in this process (:class:`~mta.smppserver.receipt_outlet.ReceiptOutlet`: in memory, at
most ``receipt_queue`` per session and ``receipt_hold_s`` each, sent as the session's window
frees), or stashes it in Redis for whichever process has one
(:mod:`~mta.smppserver.receipt_stash`, ``{prefix}:smpp:rq:<system_id>``, drained at the
sessions' pace on bind, after a stash, and every ``flush_s``).

Graceful stop: stop accepting connections, answer new submits ESME_RSYSERR, publish what is
waiting and answer it, unbind every session, stop consuming receipts (unacked ones go back to
the queue).
"""

from mta.smppserver.auth import LIMIT_HELP, BindLimiter, ClientDirectory, SmppLimits
from mta.smppserver.handlers import ClientConnection, CommandHandlers
from mta.smppserver.receipt_stash import ReceiptStash
from mta.smppserver.receipts import ReceiptRouter
from mta.smppserver.records import MessageRecord, MessageRecords, ReceiptDelivery
from mta.smppserver.server import ConnectionCaps, SmppServer, make_ssl_context
from mta.smppserver.times import TimeError, parse_smpp_time, to_mmp_time

__all__ = [
    "LIMIT_HELP",
    "BindLimiter",
    "ClientConnection",
    "ClientDirectory",
    "CommandHandlers",
    "ConnectionCaps",
    "MessageRecord",
    "MessageRecords",
    "ReceiptDelivery",
    "ReceiptRouter",
    "ReceiptStash",
    "SmppLimits",
    "SmppServer",
    "TimeError",
    "make_ssl_context",
    "parse_smpp_time",
    "to_mmp_time",
]
