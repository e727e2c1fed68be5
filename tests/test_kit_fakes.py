"""mta.testing.FakePartner: a fake partner API on loopback for adapter authors' own tests, and
the guide's ACME example (examples/acme-adapter), whose tests use it, run as its author would."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse

from mta.testing import FakePartner

ACME = Path(__file__).resolve().parent.parent / "examples" / "acme-adapter"


async def test_routes_answer_over_real_loopback_sockets() -> None:
    partner = FakePartner()

    @partner.route("POST", "/v1/sms")
    async def submit(request: Request) -> Any:
        body = await request.json()
        return 201, {"got": len(body["messages"])}

    partner.route("GET", "/v1/sms/{id}", lambda r: {"id": r.path_params["id"]})
    partner.route("GET", "/text", lambda r: "plain")
    partner.route("GET", "/response", lambda r: PlainTextResponse("made", 202))
    partner.route("GET", "/headers", lambda r: (200, b"raw", {"X-Partner": "acme"}))

    async with partner:
        assert partner.url.startswith("http://127.0.0.1:")
        async with httpx.AsyncClient(base_url=partner.url) as client:
            posted = await client.post(
                "/v1/sms?dry=1", json={"messages": [1, 2]}, headers={"X-Key": "k"}
            )
            fetched = await client.get("/v1/sms/abc")
            text = await client.get("/text")
            made = await client.get("/response")
            raw = await client.get("/headers")
            missing = await client.get("/nowhere")
            wrong_method = await client.delete("/v1/sms")
    assert (posted.status_code, posted.json()) == (201, {"got": 2})
    assert posted.headers["content-type"] == "application/json"
    assert fetched.json() == {"id": "abc"}
    assert (text.status_code, text.text) == (200, "plain")
    assert (made.status_code, made.text) == (202, "made")
    assert (raw.content, raw.headers["x-partner"]) == (b"raw", "acme")
    assert missing.status_code == 404 and wrong_method.status_code == 405
    first = partner.requests[0]
    assert (first.method, first.path, first.query) == ("POST", "/v1/sms", "dry=1")
    assert first.headers["x-key"] == "k" and first.json() == {"messages": [1, 2]}
    assert [r.path for r in partner.seen("/v1/sms")] == ["/v1/sms", "/v1/sms"]
    assert len(partner.requests) == 7


async def test_fail_answers_every_call_until_healthy_again() -> None:
    partner = FakePartner()
    partner.route("GET", "/ping", lambda r: {"ok": True})
    async with partner, httpx.AsyncClient(base_url=partner.url) as client:
        partner.fail(429, {"error": "slow down"}, {"Retry-After": "3"})
        throttled = await client.get("/ping")
        also = await client.get("/nowhere")
        partner.fail(503)
        down = await client.get("/ping")
        partner.fail(None)
        healthy = await client.get("/ping")
    assert throttled.status_code == 429 and throttled.headers["retry-after"] == "3"
    assert throttled.json() == {"error": "slow down"} and also.status_code == 429
    assert down.status_code == 503 and "failing with 503" in down.text
    assert healthy.json() == {"ok": True}
    assert len(partner.seen("/ping")) == 3  # failed calls are recorded too


async def test_the_port_is_free_and_closed_after_the_block() -> None:
    partner = FakePartner()
    async with partner:
        port = int(partner.url.rsplit(":", 1)[1])
        with pytest.raises(RuntimeError, match="already serving"):
            await partner.__aenter__()
    with socket.socket() as probe, pytest.raises(OSError):
        probe.connect(("127.0.0.1", port))
    second = FakePartner()
    async with second, httpx.AsyncClient() as client:
        assert (await client.get(f"{second.url}/x")).status_code == 404


def test_the_guides_acme_example_passes_its_own_tests() -> None:
    """examples/acme-adapter/test_acme_adapter.py, run by pytest as its author would run it:
    the kit against the ACME adapter, the ACME API served by FakePartner."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ACME)],
        cwd=ACME.parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout
