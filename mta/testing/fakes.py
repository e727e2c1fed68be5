"""A fake partner HTTP server on loopback (real sockets) for an adapter's own tests.

    partner = FakePartner()

    @partner.route("POST", "/v1/sms")
    async def submit(request: Request) -> Any:
        body = await request.json()
        return {"messages": [{"id": f"m-{n}", "status": "ACCEPTED"} for n, _ in
                             enumerate(body["messages"])]}      # a dict or list: JSON 200

    async with partner:                                  # serves on 127.0.0.1:<free port>
        adapter = build(AcmeAdapter, {"url": partner.url, "api_key": "k-123456"})
        ...
        partner.fail(503)                                # every call answers 503 ...
        partner.fail(None)                               # ... until this
    assert partner.requests[0].json()["messages"][0]["to"] == "447700900001"

Handlers get a Starlette ``Request`` (path parameters as in ``"/v1/sms/{id}"``) and return a
``Response``, a ``(status, body)`` or ``(status, body, headers)`` tuple, or a body for 200:
``bytes`` and ``str`` are sent as they are, anything else as JSON. Plain and async handlers
both work. The server runs on the test's event loop (uvicorn), so the adapter under test must
not block it.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeAlias, TypeVar, overload

import orjson
import uvicorn
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router
from starlette.types import Message, Receive, Scope, Send

__all__ = ["FakePartner", "Handler", "Seen"]

#: A route handler: a Starlette request in, a Response, a (status, body[, headers]) tuple or
#: a body (200) out; plain or async.
Handler: TypeAlias = Callable[[Request], Any]

H = TypeVar("H", bound=Handler)

_START_S = 5.0


@dataclass(frozen=True, slots=True)
class Seen:
    """One request the fake partner received, as the adapter sent it."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


def _response(answer: Any) -> Response:
    """A handler's answer as a Response (see the module docstring)."""
    if isinstance(answer, Response):
        return answer
    status, headers = 200, None
    if isinstance(answer, tuple):
        if len(answer) == 2:
            status, answer = answer
        elif len(answer) == 3:
            status, answer, headers = answer
        else:
            raise TypeError("a handler's tuple is (status, body) or (status, body, headers)")
    if isinstance(answer, bytes | str):
        return Response(answer, status, headers)
    return Response(orjson.dumps(answer), status, headers, media_type="application/json")


class FakePartner:
    """A partner API on ``127.0.0.1:<free port>`` with the routes a test registers.

    Use it as an async context manager: entering starts the server (``url`` is then its base
    URL, e.g. ``http://127.0.0.1:43117``), leaving stops it. Every request is kept in
    ``requests``; :meth:`fail` makes every call answer an error until ``fail(None)``, which is
    what a conformance kit ``make_partner_fail`` hook needs. Unregistered paths answer 404,
    unregistered methods 405.
    """

    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self.url = ""
        self._router = Router()
        self._outage: Response | None = None
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    # --- routes -------------------------------------------------------------------------
    @overload
    def route(self, method: str, path: str) -> Callable[[H], H]: ...

    @overload
    def route(self, method: str, path: str, handler: H) -> H: ...

    def route(self, method: str, path: str, handler: Handler | None = None) -> Any:
        """Register ``handler`` for ``method path``; without a handler, a decorator."""
        if handler is None:

            def register(function: H) -> H:
                self.route(method, path, function)
                return function

            return register

        async def endpoint(request: Request) -> Response:
            answer = handler(request)
            if inspect.isawaitable(answer):
                answer = await answer
            return _response(answer)

        self._router.routes.append(Route(path, endpoint, methods=[method.upper()]))
        return handler

    def fail(
        self, status: int | None, body: Any = None, headers: Mapping[str, str] | None = None
    ) -> None:
        """Answer every call with ``status`` (and ``body``: JSON unless bytes or str) from now
        on; ``fail(None)`` makes the partner healthy again."""
        if status is None:
            self._outage = None
            return
        answer = body if body is not None else {"error": f"fake partner failing with {status}"}
        self._outage = _response((status, answer, dict(headers or {})))

    def seen(self, path: str) -> list[Seen]:
        """The requests received on ``path``."""
        return [r for r in self.requests if r.path == path]

    # --- serving --------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI app: record the request, then answer it (outage, route, 404 or 405)."""
        if scope["type"] != "http":
            return
        chunks: list[bytes] = []
        more = True
        while more:
            event = await receive()
            chunks.append(event.get("body", b""))
            more = event.get("more_body", False)
        body = b"".join(chunks)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = scope.get("query_string", b"").decode("latin-1")
        self.requests.append(Seen(scope["method"], scope["path"], query, headers, body))
        if self._outage is not None:
            await self._outage(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self._router(scope, replay, send)

    async def __aenter__(self) -> FakePartner:
        if self._task is not None:
            raise RuntimeError("this FakePartner is already serving")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        sock.setblocking(False)
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            self,
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        deadline = asyncio.get_running_loop().time() + _START_S
        while not self._server.started:
            if self._task.done():
                sock.close()
                self._task.result()
                raise RuntimeError("the fake partner server stopped while starting")
            if asyncio.get_running_loop().time() > deadline:
                await self._stop()
                raise RuntimeError(f"the fake partner server did not start within {_START_S} s")
            await asyncio.sleep(0.01)
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._stop()

    async def _stop(self) -> None:
        server, task = self._server, self._task
        self._server = self._task = None
        if server is not None and task is not None:
            server.should_exit = True
            await task
