"""The kit against an adapter written in Node (examples/bridge_adapter.js, node:http only),
through the http-bridge adapter: `node` starts on a free port, the kit runs, node stops.

Node is a requirement of `make test` here: without it this test fails, saying so; it never
skips, or a missing Node would pass unnoticed.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from mta.adapters.http_bridge import HttpBridgeAdapter

from mta.contract import REASON_RETRY, REASON_SENDER, ApiStatus, SmsMessage, SmsSendRequest
from mta.testing import FailureKind, assert_conformant, build

SERVICE = Path(__file__).resolve().parent.parent / "examples" / "bridge_adapter.js"
SECRET_KEY = "node-key-4c1d9e"
TOKEN = "node-tok-7a2b3c"
LISTENING = re.compile(rb"listening on (http://127\.0\.0\.1:\d+)")


def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.fail(
            "node is not installed, and this test runs the Node example bridge service "
            f"({SERVICE.name}); install Node.js 18 or later (e.g. apt-get install nodejs) and "
            "run the tests again"
        )
    return found


@asynccontextmanager
async def node_service(*args: str) -> AsyncIterator[str]:
    """`node examples/bridge_adapter.js --port 0 ...`; yields its base URL, then stops it."""
    process = await asyncio.create_subprocess_exec(
        node(),
        str(SERVICE),
        "--port",
        "0",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), 10)
        except TimeoutError:
            line = b""
        found = LISTENING.search(line)
        if found is None:
            process.kill()
            errors = (await process.stderr.read()).decode(errors="replace")
            pytest.fail(f"{SERVICE.name} did not start: {line!r} {errors}")
        yield found.group(1).decode()
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 5)
            except TimeoutError:
                process.kill()
                await process.wait()


async def test_the_kit_passes_against_the_node_service() -> None:
    async with (
        node_service(
            "--secret-key", SECRET_KEY, "--token", TOKEN, "--delivery-delay", "0.2"
        ) as url,
        httpx.AsyncClient(base_url=url) as control,
    ):

        async def make_partner_fail(kind: FailureKind | None) -> None:
            answer = await control.post("/_control/outage", json={"kind": kind})
            assert answer.status_code == 200, answer.text

        for extra in ({}, {"pattern": "loop"}):
            report = await assert_conformant(
                HttpBridgeAdapter,
                {"url": url, "token": TOKEN, "timeout_s": 5.0, **extra},
                secret_key=SECRET_KEY,
                bad_secret_key="wrong-" + SECRET_KEY,
                bad_options={"url": url, "token": "node-tok-revoked"},
                make_partner_fail=make_partner_fail,
                final_within_s=5.0,
            )
            assert "bad_options answered NOK" in report["nok_login"].message
            assert "partner failures map right" in report["error_kinds"].message


async def test_the_node_services_reasons_reach_the_worker_as_reasons() -> None:
    async with node_service("--secret-key", SECRET_KEY) as url:
        adapter = build(HttpBridgeAdapter, {"url": url, "timeout_s": 5.0})
        assert await adapter.login(SECRET_KEY)
        messages = [
            SmsMessage("447700900001", "hi", sender="ACME"),
            SmsMessage("447700900002", "hi", sender="REFUSED"),
            SmsMessage("888123456", "hi", sender="ACME"),
            SmsMessage("99912345678", "hi", sender="ACME"),
        ]
        response = await adapter.send(SmsSendRequest(messages))
        await adapter.destroy()
    statuses = [(r.apiStatus, r.reason) for r in response.results]
    assert statuses == [
        (ApiStatus.OK, ""),
        (ApiStatus.FAIL, REASON_SENDER),
        (ApiStatus.FAIL, REASON_RETRY),
        (ApiStatus.FAIL, ""),
    ]
    assert response.results[0].partnerMessageId.startswith("node-")
    assert response.results[2].partnerMessageId == ""
