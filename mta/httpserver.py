"""``mta http``: partner receipt webhooks, health and readiness, on Starlette under uvicorn.

Routes:

``/webhooks/<account name>`` (GET or POST)
    Hands the call to the account's adapter (``webhook()``), which parses it and checks the
    partner's signature; the final states it returns are stored as pushed receipts in Redis
    (the same store SMPP receipts use), so whichever reporter holds the message finds them.
    Unknown accounts, adapters that do not push and accounts whose webhook is closed → 404;
    bad signatures or tokens → 403; malformed bodies → 400; bodies over the limit → 413;
    a body not received within :data:`BODY_TIMEOUT_S` → 408; an account already holding its
    cap of stored receipts → 429 with ``Retry-After``; Redis failing → 503 with ``Retry-After``.
    Refused calls are never stored.
``/healthz``
    200 while the process runs.
``/readyz``
    200 when Redis answers PING and the RabbitMQ connection is open, else 503 with the reason.

Hardening (docs/webhooks.md):

* **Closed webhooks.** An adapter may say its account's calls cannot be authenticated
  (``webhook_closed_reason()``, e.g. Infobip or Clickatell without ``webhook_token``): that
  account gets no webhook (404), and a WARNING at start names it and says what to set.
* **Body limit** (``webhook_max_body``): a ``Content-Length`` over it is refused (413) before
  any of the body is read; a body without one (chunked) is read chunk by chunk and refused as
  soon as it passes the limit. Never more than the limit (plus one chunk) is held in memory.
* **Bounded receipt store** (``webhook_receipts_cap``): an account holding that many unclaimed
  receipts (unknown ids included; each kept ``RECEIPT_TTL_S``) stores no more until the
  reporter spends some or they expire; the call is answered 429 so the partner retries later.
* **Logs**: every string from the caller (account name in the path, partner ids, error details
  built from the body) is logged with ``%r``, so a newline cannot forge a log line; refusals
  are logged at most once a minute per account (and reason), with the count of those skipped.

Why Starlette under uvicorn: an ASGI toolkit that is small, typed and well kept, and uvicorn's
``Server.serve()`` runs inside our own event loop, so ``mta run`` can host the webhooks next to
the worker and reporter with one Redis pool and one AMQP connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import traceback
from collections.abc import Generator
from typing import Any
from urllib.parse import parse_qsl

import uvicorn
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mta import metrics
from mta.adapter import ReceiptMode, WebhookError, WebhookRequest
from mta.broker import Broker
from mta.config import Settings
from mta.contract import SmsResult, pack_result
from mta.loglimit import LogLimiter
from mta.registry import Registry
from mta.store import Store

log = logging.getLogger(__name__)

#: Default body limit: a receipt call is small; anything larger is refused.
MAX_BODY = 1 << 20
#: Default cap of stored (unclaimed) receipts per account.
RECEIPTS_CAP = 100_000
#: A body must arrive within this long (a slow sender holds a connection, not the server).
BODY_TIMEOUT_S = 30.0
#: Most fields a urlencoded body may have.
MAX_FORM_FIELDS = 1000
#: Longest partner message id stored; longer ones cannot be ours (and would be huge keys).
MAX_PARTNER_ID = 256
#: Seconds a client is told to wait (Retry-After) when the account's receipt store is full.
RETRY_AFTER_S = 60
#: At most one log line per account and reason in this many seconds.
LOG_EVERY_S = 60.0


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``[v6]:PORT``; port 0 = any free one) → (host, port), or ValueError."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"--listen {value!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    return host.strip("[]") or "0.0.0.0", int(port)


class _Refused(Exception):
    """A call refused before it reached the adapter: HTTP status + reason."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class ThrottledLog:
    """Log lines limited to one per key per interval; the next one says how many were skipped.

    Keys are bounded by the caller (configured account names plus fixed reasons), so the map
    cannot grow with what attackers send."""

    def __init__(self, logger: logging.Logger, every_s: float = LOG_EVERY_S) -> None:
        self.logger = logger
        self.every_s = every_s
        self._limiter = LogLimiter(burst=1, window_s=every_s)

    def log(self, level: int, key: tuple[str, str], msg: str, *args: Any) -> None:
        skipped = self._limiter.allow("\x00".join(key))
        if skipped is None:
            return
        if skipped:
            msg += " (%d similar line(s) skipped in the last %.0f s)"
            args = (*args, skipped, self.every_s)
        self.logger.log(level, msg, *args)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (:class:`_Refused` 413) once it passes ``limit`` bytes: at
    once from ``Content-Length``, else while streaming. Never reads more than it keeps."""
    declared = request.headers.get("content-length")
    if declared is not None:
        declared = declared.strip()
        if not (declared.isascii() and declared.isdigit()):
            raise _Refused(400, "Content-Length is not a number")
        if len(declared) > 18 or int(declared) > limit:
            raise _Refused(413, f"body over {limit} bytes")
    body = bytearray()
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise _Refused(413, f"body over {limit} bytes")
    except TimeoutError:
        raise _Refused(408, f"body not received within {BODY_TIMEOUT_S:.0f} s") from None
    return bytes(body)


def _finals(results: list[SmsResult]) -> dict[str, bytes]:
    """The final results as stored receipts (partner id → packed), ids over
    :data:`MAX_PARTNER_ID` left out; packing fails (TypeError) on a field no JSON can hold."""
    return {
        r.partnerMessageId: pack_result(r)
        for r in results
        if r.apiStatus.final and r.partnerMessageId and len(r.partnerMessageId) <= MAX_PARTNER_ID
    }


def closed_webhooks(registry: Registry) -> dict[str, str]:
    """Accounts that take pushed receipts but whose webhook must stay closed → why (what the
    operator must set), from the adapter's optional ``webhook_closed_reason()``."""
    closed: dict[str, str] = {}
    for name, runtime in registry.by_name.items():
        if runtime.meta.receipts == ReceiptMode.PULL:
            continue
        probe = getattr(runtime.adapter, "webhook_closed_reason", None)
        reason = probe() if callable(probe) else None
        if reason:
            closed[name] = str(reason)
    return closed


def create_app(
    registry: Registry, store: Store, broker: Broker | None, settings: Settings | None = None
) -> Starlette:
    """The ASGI app; ``broker`` None means readiness checks Redis only. ``settings`` gives
    ``webhook_max_body`` and ``webhook_receipts_cap`` (defaults :data:`MAX_BODY`,
    :data:`RECEIPTS_CAP`). Logs a WARNING per account whose webhook stays closed."""
    max_body = settings.webhook_max_body if settings is not None else MAX_BODY
    receipts_cap = settings.webhook_receipts_cap if settings is not None else RECEIPTS_CAP
    stats: dict[str, int] = {"stored": 0, "refused": 0}
    throttled = ThrottledLog(log)
    closed = closed_webhooks(registry)
    for name, reason in closed.items():
        runtime = registry.by_name[name]
        log.warning(
            "account %r (%s): webhook /webhooks/%s is closed (404): %s",
            name,
            runtime.meta.name,
            name,
            reason,
        )

    def counted(name: str, result: str, n: int = 1) -> None:
        """mta_webhook_receipts_total: a name not in the accounts file is never a label."""
        account = name if name in registry.by_name else metrics.NO_ACCOUNT
        metrics.WEBHOOK_RECEIPTS.labels(account, result).inc(n)

    def refuse(name: str, status: int, detail: str, level: int = logging.WARNING) -> Response:
        stats["refused"] += 1
        counted(name, "refused")
        known = name if name in registry.by_name else "<unknown>"
        throttled.log(
            level,
            (known, str(status)),
            "webhook for account %r refused (%d): %r",
            name,
            status,
            detail,
        )
        return JSONResponse({"error": detail}, status_code=status)

    async def webhook(request: Request) -> Response:
        name = request.path_params["account"]
        runtime = registry.by_name.get(name)
        if runtime is None or runtime.meta.receipts == ReceiptMode.PULL:
            return refuse(name, 404, "unknown account, or it takes no pushed receipts")
        if name in closed:
            return refuse(name, 404, "webhook closed for this account (see the start-up warning)")
        handler = getattr(runtime.adapter, "webhook", None)
        if handler is None:
            return refuse(name, 404, "the account's adapter takes no webhooks")
        try:
            body = await read_body(request, max_body)
        except _Refused as exc:
            return refuse(name, exc.status, exc.detail)
        except ClientDisconnect:
            stats["refused"] += 1
            counted(name, "refused")
            return Response(status_code=400)  # nobody is listening any more
        form: dict[str, str] = {}
        if request.headers.get("content-type", "").startswith("application/x-www-form"):
            # Parsed here (stdlib) rather than with Starlette's form(), which needs
            # python-multipart; partners post small urlencoded bodies.
            try:
                form = dict(
                    parse_qsl(
                        body.decode("utf-8"),
                        keep_blank_values=True,
                        max_num_fields=MAX_FORM_FIELDS,
                    )
                )
            except UnicodeDecodeError:
                return refuse(name, 400, "form body is not UTF-8")
            except ValueError:
                return refuse(name, 400, f"form body has over {MAX_FORM_FIELDS} fields")
        call = WebhookRequest(
            method=request.method,
            url=str(request.url),
            headers={k.lower(): v for k, v in request.headers.items()},
            query=dict(request.query_params),
            body=body,
            form=form,
        )
        try:
            results = await handler(call)
            finals = _finals(results)
        except WebhookError as exc:
            status = exc.status if 400 <= exc.status < 600 else 400
            return refuse(name, status, exc.detail)
        except Exception as exc:
            stats["refused"] += 1
            counted(name, "refused")
            # The message may carry upstream text: repr'd; the frames are our code only.
            log.error(
                "webhook for account %r: the adapter raised %s: %r (an adapter bug; the call "
                "was refused with 400)\n%s",
                name,
                type(exc).__name__,
                str(exc),
                "".join(traceback.format_tb(exc.__traceback__)),
            )
            return JSONResponse({"error": "malformed receipt"}, status_code=400)
        long_ids = [r.partnerMessageId for r in results if len(r.partnerMessageId) > MAX_PARTNER_ID]
        if long_ids:
            throttled.log(
                logging.WARNING,
                (name, "long id"),
                "webhook for account %r: %d result(s) for partner ids over %d characters "
                "ignored (not ours), e.g. %r",
                name,
                len(long_ids),
                MAX_PARTNER_ID,
                long_ids[0][:64],
            )
        try:
            stored, over = await store.store_receipts(name, finals, receipts_cap)
        except (RedisError, OSError) as exc:
            stats["refused"] += 1
            counted(name, "refused")
            throttled.log(
                logging.ERROR,
                (name, "redis"),
                "webhook for account %r: receipts not stored, Redis failed (%s: %s); the "
                "partner was answered 503 and should retry",
                name,
                type(exc).__name__,
                exc,
            )
            return JSONResponse(
                {"error": "receipt store unavailable; retry later"},
                status_code=503,
                headers={"Retry-After": "5"},
            )
        stats["stored"] += stored
        if stored:
            counted(name, "stored", stored)
        if over:
            stats["refused"] += 1
            counted(name, "refused")
            throttled.log(
                logging.WARNING,
                (name, "cap"),
                "webhook for account %r: %d receipt(s) refused (429): the account holds "
                "%d unclaimed receipts, its cap (webhook_receipts_cap). Receipts for ids the "
                "MTA never sent (a misrouted or hostile sender?) use the cap until they expire; "
                "raise the cap if the traffic is genuine",
                name,
                over,
                receipts_cap,
            )
            return JSONResponse(
                {"error": "too many unclaimed receipts; retry later", "stored": stored},
                status_code=429,
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        return JSONResponse({"received": len(results), "stored": stored})

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok", **stats})

    async def readyz(_: Request) -> Response:
        problems = []
        try:
            await asyncio.wait_for(store.r.ping(), timeout=2)
        except Exception as exc:
            problems.append(f"redis: {type(exc).__name__}: {exc}")
        if broker is not None and not broker.open:  # closed, or reconnecting
            problems.append("rabbitmq: connection closed")
        if problems:
            return JSONResponse({"status": "unavailable", "problems": problems}, status_code=503)
        return JSONResponse({"status": "ready"})

    return Starlette(
        routes=[
            Route("/webhooks/{account}", webhook, methods=["GET", "POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
        ]
    )


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling: the process's handler stops every role."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class HttpServer:
    """uvicorn serving :func:`create_app` inside the running event loop."""

    def __init__(self, app: Starlette, host: str, port: int) -> None:
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            lifespan="off",
            access_log=False,
            server_header=False,
        )
        self.server = _EmbeddedServer(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        sockets: Any = self.server.servers[0].sockets
        return int(sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._task = asyncio.create_task(self.server.serve(), name="http")
        while not self.server.started:
            if self._task.done():
                self._task.result()  # raises the bind error, e.g. address in use
                raise RuntimeError("the HTTP server stopped before it started")
            await asyncio.sleep(0.01)
        log.info("http listening on %s:%d", self.server.config.host, self.port)

    async def stop(self) -> None:
        if self._task is not None:
            self.server.should_exit = True
            await self._task
            self._task = None
