"""Every Prometheus metric of the MTA, and the small HTTP server that exposes them.

All metric objects live here, nowhere else (dashboards and alert rules are built from this
file). Conventions: ``mta_`` prefix, ``_total`` counters, ``_seconds`` histograms, gauges named
after what they count. Label values are bounded: account names (from the accounts file),
SMPP client system_ids (from ``[[smpp_client]]``), lanes, apiStatus values and fixed reason
words — never a message id, a partner id, a phone number or a caller's free text. A message
that reached no account is counted under ``account="-"``; an unknown name in a webhook path
or a refused bind's system_id is never a label value.

The server (``--metrics-listen`` / ``MTA_METRICS_LISTEN``, off when empty) answers
``/metrics`` (text exposition), ``/healthz`` (200 while the process runs) and ``/readyz`` (200
when Redis answers and the RabbitMQ connection is open), under uvicorn inside the process's
own event loop; rendering the exposition runs in a thread, never blocking the loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from mta.loops import repeat

if TYPE_CHECKING:
    from mta.store import Store

log = logging.getLogger(__name__)

# No *_created series: they double the exposition and no dashboard or alert of ours uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]

#: The label value of "no account" (a message refused before it reached one, an unknown name).
NO_ACCOUNT = "-"

# --- worker -----------------------------------------------------------------------------------
MESSAGES_IN = Counter(
    "mta_messages_in_total",
    "Messages taken from a send queue (every message of every batch, retries included).",
    ["lane"],
)
BATCHES_IN = Counter(
    "mta_batches_in_total",
    "Send batches (AMQP messages) taken from a send queue.",
    ["lane"],
)
RESULTS = Counter(
    "mta_results_total",
    "Results recorded for the report exchange, by account and apiStatus (OK from Send by "
    "workers; DELIVERED, FAIL, TIMEOUT finals by workers and reporters).",
    ["account", "api_status"],
)
PARTNER_CALL = Histogram(
    "mta_partner_call_seconds",
    "Duration of one adapter call (one Send of a chunk, one Report of a round, one Login), "
    "in-place retries included.",
    ["account", "operation"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
PARTNER_ERRORS = Counter(
    "mta_partner_errors_total",
    "Adapter calls that failed, by kind: transient (after in-place tries), throttled, "
    "permanent, nok (login refused), bug (the adapter raised something unexpected).",
    ["account", "operation", "kind"],
)
RETRIES = Counter(
    "mta_retries_total",
    "Messages sent to a delayed-retry queue (spending an attempt), by reason: transient, "
    "throttled, partner (the partner asked for a retry), bug (adapter error).",
    ["account", "reason"],
)
PARKED = Counter(
    "mta_parked_total",
    "Messages parked in the longest retry tier without spending an attempt, by reason: "
    "unavailable (account down), circuit_open.",
    ["account", "reason"],
)
DEAD_LETTERS = Counter(
    "mta_dead_letters_total",
    "Batches sent to the dead-letter queue, by reason: refused (undecodable, too large), "
    "forged (bad internal headers), worker_error.",
    ["reason"],
)
CIRCUIT_STATE = Gauge(
    "mta_circuit_state",
    "Circuit breaker of an account in this process: 0 closed, 1 open (a probe may pass once "
    "its pause is over).",
    ["account"],
)
CIRCUIT_OPENED = Counter(
    "mta_circuit_opened_total",
    "Times an account's circuit breaker opened in this process.",
    ["account"],
)
RATE_WAIT = Counter(
    "mta_rate_limit_wait_seconds_total",
    "Time bulk batches waited for their account's shared rate limit.",
    ["account"],
)
RATE_DEFERRED = Counter(
    "mta_rate_limit_deferred_total",
    "Messages deferred to a retry queue because the rate-limit wait was too long "
    "(no attempt spent).",
    ["account"],
)

# --- reporter ---------------------------------------------------------------------------------
REPORT_CLAIMED = Counter(
    "mta_report_claimed_total",
    "Pending messages claimed by reporters for a poll or a pushed receipt.",
)
REPORT_ROUNDS = Counter(
    "mta_report_rounds_total",
    "Reporter rounds that claimed at least one message.",
)

# --- outbox -----------------------------------------------------------------------------------
REPORTS_PUBLISHED = Counter(
    "mta_reports_published_total",
    "Report messages (each with a results list) published to the report exchange with confirms.",
)
OUTBOX_RECOVERED = Counter(
    "mta_outbox_recovered_total",
    "Report messages a stopped process left in the outbox, published by this one.",
)

# --- Redis state, sampled by reporters (one pipeline every SAMPLE_EVERY_S) ---------------------
PENDING = Gauge("mta_pending_messages", "Submitted messages waiting for a final state.")
DUE = Gauge("mta_due_messages", "Messages in the due index (next poll scheduled).")
DUE_NOW = Gauge("mta_due_now_messages", "Messages whose next poll time has passed.")
LEASED = Gauge("mta_leased_messages", "Messages claimed by a reporter (under lease).")
HELD = Gauge("mta_held_messages", "Scheduled messages held until their startTime.")
OUTBOX = Gauge("mta_outbox_entries", "Report messages recorded but not yet confirmed published.")
SAMPLED_AT = Gauge(
    "mta_state_sampled_timestamp_seconds",
    "When this process last sampled the Redis state gauges (Unix time).",
)

# --- SMPP server ------------------------------------------------------------------------------
SMPP_BINDS = Counter(
    "mta_smpp_binds_total",
    "Successful SMPP binds, by client system_id and bind type.",
    ["client", "bind_type"],
)
SMPP_BIND_FAILURES = Counter(
    "mta_smpp_bind_failures_total",
    "Refused SMPP binds, by reason: credentials (unknown system_id or wrong password), "
    "limit (over the bind attempt limit), other.",
    ["reason"],
)
SMPP_SESSIONS = Gauge(
    "mta_smpp_sessions",
    "Bound SMPP sessions now, by client system_id.",
    ["client"],
)
SMPP_SUBMITS = Counter(
    "mta_smpp_submits_total",
    "submit_sm PDUs answered, by client and result: accepted, throttled (ESME_RTHROTTLED: "
    "over the client's throughput), queue_full (ESME_RMSGQFUL), refused (invalid PDU).",
    ["client", "result"],
)
SMPP_RECEIPTS = Counter(
    "mta_smpp_receipts_total",
    "deliver_sm receipts acknowledged by a bound client.",
    ["client"],
)

# --- webhooks (mta http) ----------------------------------------------------------------------
WEBHOOK_RECEIPTS = Counter(
    "mta_webhook_receipts_total",
    "Partner webhook receipts by account and result: stored (receipts kept for the "
    "reporters, counted one by one), refused (calls answered 4xx/5xx, counted per call). "
    'Unknown account names count as account="-".',
    ["account", "result"],
)

SAMPLE_EVERY_S = 5.0


def label(account: str) -> str:
    """The account label value: the name, or ``-`` for none."""
    return account or NO_ACCOUNT


class Children:
    """Labelled children looked up once per label set, not once per message: the hot paths
    count per batch through this cache (``Counter.labels`` takes a lock and builds a key)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[int, tuple[str, ...]], Any] = {}

    def child(self, metric: Counter | Gauge | Histogram, *labels: str) -> Any:
        key = (id(metric), labels)
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = metric.labels(*labels)
        return found

    def inc(self, metric: Counter, *labels: str, n: float = 1) -> None:
        self.child(metric, *labels).inc(n)

    def observe(self, metric: Histogram, seconds: float, *labels: str) -> None:
        self.child(metric, *labels).observe(seconds)


async def sample_state(store: Store, now_ms: int) -> None:
    """Set the Redis state gauges from one pipeline (HLEN/ZCARD/ZCOUNT: O(1) or O(log n))."""
    counts = await store.counts(due_by_ms=now_ms)
    PENDING.set(counts["pending"])
    DUE.set(counts["due"])
    DUE_NOW.set(counts["due_now"])
    LEASED.set(counts["leased"])
    HELD.set(counts["held"])
    OUTBOX.set(counts["outbox"])
    SAMPLED_AT.set(now_ms / 1000)


async def sample_loop(
    store: Store, stopping: asyncio.Event, every_s: float = SAMPLE_EVERY_S
) -> None:
    """Sample the Redis state gauges every ``every_s`` until ``stopping`` is set (Redis down:
    the gauges keep their last values)."""

    async def step() -> bool:
        await sample_state(store, int(time.time() * 1000))
        return False

    await repeat(
        "metrics: state sample", step, stopping, every_s, error_pause_s=0.0, log=log,
        error_level=logging.DEBUG,
    )


#: A readiness check: the problems found (empty = ready).
ReadyCheck = Callable[[], Awaitable[list[str]]]


class MetricsServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` on their own address, under uvicorn in the
    running event loop (:class:`mta.httpserver.HttpServer`)."""

    def __init__(self, host: str, port: int, ready: ReadyCheck) -> None:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse, Response
        from starlette.routing import Route

        from mta.httpserver import HttpServer

        async def metrics(_: Request) -> Response:
            body = await asyncio.to_thread(generate_latest)
            return Response(body, media_type=CONTENT_TYPE_LATEST)

        async def healthz(_: Request) -> Response:
            return JSONResponse({"status": "ok"})

        async def readyz(_: Request) -> Response:
            problems = await ready()
            if problems:
                return JSONResponse({"status": "unavailable", "problems": problems}, 503)
            return JSONResponse({"status": "ready"})

        app = Starlette(
            routes=[
                Route("/metrics", metrics, methods=["GET"]),
                Route("/healthz", healthz, methods=["GET"]),
                Route("/readyz", readyz, methods=["GET"]),
            ]
        )
        self.http = HttpServer(app, host, port)

    @property
    def port(self) -> int:
        return self.http.port

    async def start(self) -> None:
        await self.http.start()
        log.info("metrics on http://%s:%d/metrics", self.http.server.config.host, self.port)

    async def stop(self) -> None:
        await self.http.stop()
