"""``mta http``: partner receipt webhooks, health and readiness, on Starlette under uvicorn.

Routes:

``/webhooks/<account name>`` (GET or POST)
    Hands the call to the account's adapter (``webhook()``), which parses it and checks the
    partner's signature; the final states it returns are stored as pushed receipts in Redis
    (the same store SMPP receipts use), so whichever reporter holds the message finds them.
    Unknown accounts and adapters that do not push → 404; bad signatures → 403; malformed
    bodies → 400. Refused calls are logged and never stored.
``/healthz``
    200 while the process runs.
``/readyz``
    200 when Redis answers PING and the RabbitMQ connection is open, else 503 with the reason.

Why Starlette under uvicorn: an ASGI toolkit that is small, typed and well kept, and uvicorn's
``Server.serve()`` runs inside our own event loop, so ``mta run`` can host the webhooks next to
the worker and reporter with one Redis pool and one AMQP connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Generator
from typing import Any
from urllib.parse import parse_qsl

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mta.adapter import ReceiptMode, WebhookError, WebhookRequest
from mta.broker import Broker
from mta.contract import pack_result
from mta.registry import Registry
from mta.store import Store

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20  # a receipt call is small; anything larger is refused


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``[v6]:PORT``; port 0 = any free one) → (host, port), or ValueError."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"--listen {value!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    return host.strip("[]") or "0.0.0.0", int(port)


def create_app(registry: Registry, store: Store, broker: Broker | None) -> Starlette:
    """The ASGI app; ``broker`` None means readiness checks Redis only."""
    stats: dict[str, int] = {"stored": 0, "refused": 0}

    async def webhook(request: Request) -> Response:
        name = request.path_params["account"]
        runtime = registry.by_name.get(name)
        if runtime is None or runtime.meta.receipts == ReceiptMode.PULL:
            log.warning("webhook for %r refused: no account of that name takes receipts", name)
            stats["refused"] += 1
            return JSONResponse({"error": "unknown account"}, status_code=404)
        handler = getattr(runtime.adapter, "webhook", None)
        if handler is None:
            return JSONResponse({"error": "adapter takes no webhooks"}, status_code=404)
        body = await request.body()
        if len(body) > MAX_BODY:
            return JSONResponse({"error": "body too large"}, status_code=413)
        form: dict[str, str] = {}
        if request.headers.get("content-type", "").startswith("application/x-www-form"):
            # Parsed here (stdlib) rather than with Starlette's form(), which needs
            # python-multipart; partners post small urlencoded bodies.
            try:
                form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
            except UnicodeDecodeError:
                return JSONResponse({"error": "form body is not UTF-8"}, status_code=400)
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
        except WebhookError as exc:
            log.warning("webhook for account %r refused (%d): %s", name, exc.status, exc.detail)
            stats["refused"] += 1
            return JSONResponse({"error": exc.detail}, status_code=exc.status)
        except Exception as exc:
            log.exception("webhook for account %r: adapter raised %s", name, type(exc).__name__)
            stats["refused"] += 1
            return JSONResponse({"error": "malformed receipt"}, status_code=400)
        finals = {
            r.partnerMessageId: pack_result(r)
            for r in results
            if r.apiStatus.final and r.partnerMessageId
        }
        stored = await store.push_receipts(name, finals)
        stats["stored"] += stored
        return JSONResponse({"received": len(results), "stored": stored})

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok", **stats})

    async def readyz(_: Request) -> Response:
        problems = []
        try:
            await asyncio.wait_for(store.r.ping(), timeout=2)
        except Exception as exc:
            problems.append(f"redis: {type(exc).__name__}: {exc}")
        if broker is not None and (broker.connection is None or broker.connection.is_closed):
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
