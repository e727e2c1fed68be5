"""An example external adapter behind the MTA's ``http-bridge``: the contract over a fake partner.

The MTA's ``http-bridge`` adapter forwards Login/Send/Report/Destroy as MMP JSON to a service
like this one, so an adapter can be written in any language behind a small HTTP wrapper. The
contract is specified in ``docs/adapters/http-bridge.md``; this file is its reference
implementation, kept short so it reads as documentation for authors in Go, Java, Node or C#.

The "partner" here is in memory: it accepts every message with a generated id (except numbers
starting with ``--reject-prefix``, to show a per-message rejection), reports it DELIVERED
``--delivery-delay`` seconds later, and answers Login ok only for ``--secret-key``. It can be
told to fail its next calls with any error kind (``POST /_control/fail``, or
``--fail-next-sends N`` for N transient failures of ``/send``), to try the MTA's retries.
It keeps every message until it stops: a demo, not a partner.

Run it (starlette, uvicorn and orjson are dependencies of sms-mta)::

    python examples/bridge_adapter.py --port 8090 --secret-key demo-secret --delivery-delay 2

and point an account at it (accounts.toml)::

    [[account]]
    id = 0
    name = "bridge"
    adapter = "http-bridge"
    secret_key = "demo-secret"
    [account.options]
    url = "http://127.0.0.1:8090"

A curl session (``-H 'Content-Type: application/json'`` left out, long lines wrapped)::

    $ curl -s localhost:8090/login -d '{"secretKey": "demo-secret"}'
    {"ok":true}
    $ curl -s localhost:8090/login -d '{"secretKey": "wrong"}'
    {"ok":false}
    $ curl -s localhost:8090/send -d '{"messages": [{"mobileNumber": "905332141354",
           "text": "hello", "sender": "ACME"}]}'
    {"partnerPacketId":"","results":[{"partnerMessageId":"ex-c8cb75f8df6e4aa9",
     "partnerStatus":"ACCEPTED","partnerDetail":"","apiStatus":"OK","sendAt":"202611220400",
     "smsOperator":"","smsMessageCount":0}]}
    $ curl -s localhost:8090/report -d '{"partnerPacketId": "",
           "messages": ["ex-c8cb75f8df6e4aa9"]}'
    {"partnerPacketId":"","results":[{"partnerMessageId":"ex-c8cb75f8df6e4aa9",
     "partnerStatus":"ENROUTE","partnerDetail":"","apiStatus":"WAITING","sendAt":"",
     "smsOperator":"","smsMessageCount":0}]}
    $ sleep 2  # the same /report again:
    {"partnerPacketId":"","results":[{"partnerMessageId":"ex-c8cb75f8df6e4aa9",
     "partnerStatus":"DELIVRD","partnerDetail":"","apiStatus":"DELIVERED",
     "sendAt":"202611220400","smsOperator":"","smsMessageCount":0}]}
    $ curl -s localhost:8090/_control/fail -d '{"endpoint": "send", "kind": "throttled",
           "count": 1, "retryAfter": 5}'
    {"queued":1}
    $ curl -si localhost:8090/send -d '{"messages": []}'
    HTTP/1.1 429 Too Many Requests
    retry-after: 5
    content-type: application/json

    {"error":{"kind":"throttled","detail":"injected throttled error (POST /_control/fail)",
     "retryAfter":5}}
    $ curl -si localhost:8090/send -d '{"msgs": []}'
    HTTP/1.1 422 Unprocessable Entity
    content-type: application/json

    {"error":{"kind":"permanent","detail":"POST /send: expected {\\"messages\\": [...]}"}}
    $ curl -s localhost:8090/destroy -d '{}'
    {}

With ``--token T`` every call must carry ``Authorization: Bearer T`` (the bridge's ``token``
option), else it is refused with HTTP 401 and an ``auth`` error. Every option can also be
given by environment: BRIDGE_HOST, BRIDGE_PORT, BRIDGE_SECRET_KEY, BRIDGE_TOKEN,
BRIDGE_DELIVERY_DELAY_S, BRIDGE_REJECT_PREFIX, BRIDGE_FAIL_NEXT_SENDS.
"""

from __future__ import annotations

import argparse
import hmac
import math
import os
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

#: The HTTP status this service answers for each error kind. The MTA reads the kind from the
#: body; the status is for people and proxies reading the traffic.
ERROR_STATUS = {"transient": 503, "throttled": 429, "permanent": 422, "auth": 401}


def json_response(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(doc), status, headers, media_type="application/json")


def error_response(kind: str, detail: str, retry_after: float | None = None) -> Response:
    """The bridge contract's error answer: a non-200 status and ``{"error": {...}}``."""
    error: dict[str, Any] = {"kind": kind, "detail": detail}
    headers = {}
    if retry_after is not None:
        error["retryAfter"] = retry_after
        headers["Retry-After"] = str(math.ceil(retry_after))  # HTTP wants whole seconds
    return json_response({"error": error}, ERROR_STATUS[kind], headers)


class BadRequest(Exception):
    """The MTA sent something this service cannot read: a permanent error."""


def mmp_time(epoch_s: float) -> str:
    """Epoch seconds as the MMP's ``yyyyMMddHHmm`` (UTC here)."""
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y%m%d%H%M")


def result(
    partner_message_id: str,
    partner_status: str,
    api_status: str,
    detail: str = "",
    send_at: str = "",
) -> dict[str, Any]:
    """One MMP result, every field spelled out as the contract names it."""
    return {
        "partnerMessageId": partner_message_id,
        "partnerStatus": partner_status,  # the partner's own status word or code
        "partnerDetail": detail,  # the partner's own error text, for people
        "apiStatus": api_status,  # OK/FAIL from /send; DELIVERED/FAIL/TIMEOUT/WAITING from /report
        "sendAt": send_at,  # yyyyMMddHHmm, "" when unknown
        "smsOperator": "",  # the operator that carried it, "" when unknown
        "smsMessageCount": 0,  # segments; 0 = unknown, the MTA counts them from the text
    }


@dataclass
class Injected:
    """A failure the next call of ``endpoint`` answers instead of its result."""

    endpoint: str
    kind: str
    detail: str
    retry_after: float | None = None


@dataclass
class FakePartner:
    """The in-memory partner behind the bridge endpoints."""

    secret_key: str = "demo-secret"
    token: str = ""
    delivery_delay_s: float = 2.0
    reject_prefix: str = ""
    accepted: dict[str, float] = field(default_factory=dict)  # partner id → accepted at
    failures: deque[Injected] = field(default_factory=deque)
    calls: dict[str, int] = field(default_factory=dict)

    def authorized(self, request: Request) -> bool:
        if not self.token:
            return True
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode())

    def injected(self, endpoint: str) -> Injected | None:
        for failure in self.failures:
            if failure.endpoint == endpoint:
                self.failures.remove(failure)
                return failure
        return None

    # --- the four bridge endpoints ----------------------------------------------------
    def login(self, body: Any) -> Any:
        key = body.get("secretKey") if isinstance(body, dict) else None
        if not isinstance(key, str):
            raise BadRequest('expected {"secretKey": "<string>"}')
        return {"ok": hmac.compare_digest(key.encode(), self.secret_key.encode())}

    def send(self, body: Any) -> Any:
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list):
            raise BadRequest('expected {"messages": [...]}')
        now = time.time()
        results = []  # results[i] answers messages[i]: same length, same order
        for message in messages:
            number = message.get("mobileNumber") if isinstance(message, dict) else None
            if not isinstance(number, str) or not number:
                results.append(result("", "REJECTED", "FAIL", "mobileNumber missing"))
            elif self.reject_prefix and number.startswith(self.reject_prefix):
                results.append(result("", "REJECTED", "FAIL", f"unknown subscriber {number}"))
            else:
                partner_id = f"ex-{uuid.uuid4().hex[:16]}"
                self.accepted[partner_id] = now
                results.append(result(partner_id, "ACCEPTED", "OK", send_at=mmp_time(now)))
        return {"partnerPacketId": "", "results": results}

    def report(self, body: Any) -> Any:
        ids = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise BadRequest('expected {"partnerPacketId": "", "messages": ["<id>", ...]}')
        now = time.time()
        results = []  # any order; ids this partner does not know are left out (stay WAITING)
        for partner_id in ids:
            accepted_at = self.accepted.get(partner_id)
            if accepted_at is None:
                continue
            if now < accepted_at + self.delivery_delay_s:
                results.append(result(partner_id, "ENROUTE", "WAITING"))
            else:
                delivered_at = mmp_time(accepted_at + self.delivery_delay_s)
                results.append(result(partner_id, "DELIVRD", "DELIVERED", send_at=delivered_at))
        return {"partnerPacketId": "", "results": results}

    def destroy(self, body: Any) -> Any:
        # Every MTA process calls /login and /destroy for itself: nothing is torn down here.
        return {}

    # --- test hook ----------------------------------------------------------------------
    def control_fail(self, body: Any) -> Any:
        """Queue ``count`` failures of ``kind`` for the next calls of ``endpoint``."""
        if not isinstance(body, dict) or body.get("kind") not in ERROR_STATUS:
            raise BadRequest(f'expected {{"kind": one of {sorted(ERROR_STATUS)}, ...}}')
        endpoint = str(body.get("endpoint", "send"))
        kind = str(body["kind"])
        detail = str(body.get("detail") or f"injected {kind} error (POST /_control/fail)")
        wait = body.get("retryAfter")
        retry_after = wait if isinstance(wait, int | float) else None
        count = int(body.get("count", 1))
        for _ in range(count):
            self.failures.append(Injected(endpoint, kind, detail, retry_after))
        return {"queued": count}


def create_app(
    secret_key: str = "demo-secret",
    token: str = "",
    delivery_delay_s: float = 2.0,
    reject_prefix: str = "",
    fail_next_sends: int = 0,
) -> Starlette:
    """The bridge service as a Starlette app; ``app.state.partner`` is its :class:`FakePartner`."""
    partner = FakePartner(secret_key, token, delivery_delay_s, reject_prefix)
    for _ in range(fail_next_sends):
        partner.failures.append(Injected("send", "transient", "injected by --fail-next-sends"))

    def endpoint(name: str, handler: Any) -> Route:
        async def handle(request: Request) -> Response:
            partner.calls[name] = partner.calls.get(name, 0) + 1
            if not partner.authorized(request):
                return error_response("auth", "missing or wrong 'Authorization: Bearer' token")
            failure = partner.injected(name)
            if failure is not None:
                return error_response(failure.kind, failure.detail, failure.retry_after)
            try:
                body = orjson.loads(await request.body())
                return json_response(handler(body))
            except (orjson.JSONDecodeError, BadRequest) as exc:
                return error_response("permanent", f"POST /{name}: {exc}")

        return Route(f"/{name}", handle, methods=["POST"])

    app = Starlette(
        routes=[
            endpoint("login", partner.login),
            endpoint("send", partner.send),
            endpoint("report", partner.report),
            endpoint("destroy", partner.destroy),
            endpoint("_control/fail", partner.control_fail),
        ]
    )
    app.state.partner = partner
    return app


def main(argv: list[str] | None = None) -> None:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--host", default=env("BRIDGE_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env("BRIDGE_PORT", "8090")))
    parser.add_argument("--secret-key", default=env("BRIDGE_SECRET_KEY", "demo-secret"))
    parser.add_argument("--token", default=env("BRIDGE_TOKEN", ""), help="require this bearer")
    parser.add_argument(
        "--delivery-delay", type=float, default=float(env("BRIDGE_DELIVERY_DELAY_S", "2"))
    )
    parser.add_argument("--reject-prefix", default=env("BRIDGE_REJECT_PREFIX", ""))
    parser.add_argument(
        "--fail-next-sends", type=int, default=int(env("BRIDGE_FAIL_NEXT_SENDS", "0"))
    )
    args = parser.parse_args(argv)
    app = create_app(
        args.secret_key, args.token, args.delivery_delay, args.reject_prefix, args.fail_next_sends
    )

    import uvicorn

    uvicorn.run(app, host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
