"""Prometheus metrics of every role, scraped from real ``mta`` processes (and the in-process
``mta http`` service, whose test partner is not an installed adapter): counters move by the
right amounts, gauges are present, no label value is a message id or a number."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Iterable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests import test_process
from tests.conftest import Env, batch, eventually, sim_accounts
from tests.test_httpserver import ACCOUNTS as PUSH_ACCOUNTS
from tests.test_httpserver import PushAdapter, signed
from tests.test_process import Proc, spawn
from tests.test_smppserver import CLIENTS, Esme

procs = test_process.procs  # the fixture: processes a test started, killed at its end

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def scrape(port: int) -> tuple[Samples, str]:
    async with httpx.AsyncClient() as client:
        answer = await client.get(f"http://127.0.0.1:{port}/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(answer.text):
        for s in family.samples:
            samples[s.name, frozenset(s.labels.items())] = s.value
    return samples, answer.text


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def check_labels(samples: Samples, forbidden: Iterable[str]) -> None:
    """No label value of an mta_ metric is a number or one of ``forbidden`` (ids, numbers)."""
    banned = set(forbidden)
    seen = 0
    for name, labels in samples:
        if not name.startswith("mta_"):
            continue
        for key, val in labels:
            if key == "le":  # histogram bucket bounds are numbers by design
                continue
            seen += 1
            assert not re.fullmatch(r"[+-]?[0-9][0-9.]*", val), (name, key, val)
            assert val not in banned, (name, key, val)
            assert not any(b in val for b in banned if len(b) > 6), (name, key, val)
    assert seen, "no labelled mta_ sample at all"


async def health(port: int) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 200 and ready.json() == {"status": "ready"}


async def test_worker_and_reporter_processes(env: Env, procs: list[Proc]) -> None:
    env.accounts(sim_accounts())
    worker_port, reporter_port = free_port(), free_port()
    tail = await env.tail()
    await spawn(env, procs, "worker", MTA_METRICS_LISTEN=f"127.0.0.1:{worker_port}")
    await spawn(env, procs, "reporter", MTA_METRICS_LISTEN=f"127.0.0.1:{reporter_port}")
    await health(worker_port)
    await health(reporter_port)
    w0, _ = await scrape(worker_port)
    r0, _ = await scrape(reporter_port)

    body = batch(5)
    mid = await env.publish(body)
    finals = await tail.wait_finals(5)
    assert {f["apiStatus"] for f in finals} == {"DELIVERED"}

    async def moved() -> bool:
        w, _ = await scrape(worker_port)
        r, _ = await scrape(reporter_port)
        return (
            value(w, "mta_results_total", account="sim", api_status="OK") >= 5
            and value(r, "mta_results_total", account="sim", api_status="DELIVERED") >= 5
            and value(r, "mta_pending_messages") == 0
        )

    await eventually(moved, timeout=15, what="worker and reporter counters")
    w1, wtext = await scrape(worker_port)
    r1, rtext = await scrape(reporter_port)

    def delta(after: Samples, before: Samples, name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta(w1, w0, "mta_messages_in_total", lane="bulk") == 5
    assert delta(w1, w0, "mta_batches_in_total", lane="bulk") == 1
    assert delta(w1, w0, "mta_results_total", account="sim", api_status="OK") == 5
    assert delta(w1, w0, "mta_results_total", account="sim", api_status="FAIL") == 0
    assert delta(w1, w0, "mta_partner_call_seconds_count", account="sim", operation="send") >= 1
    assert value(w1, "mta_circuit_state", account="sim") == 0
    assert delta(w1, w0, "mta_reports_published_total") >= 1
    assert delta(r1, r0, "mta_results_total", account="sim", api_status="DELIVERED") == 5
    assert delta(r1, r0, "mta_report_claimed_total") >= 5
    assert delta(r1, r0, "mta_partner_call_seconds_count", account="sim", operation="report") >= 1
    for gauge in (
        "mta_pending_messages",
        "mta_due_messages",
        "mta_due_now_messages",
        "mta_leased_messages",
        "mta_held_messages",
        "mta_outbox_entries",
    ):
        assert f"\n{gauge} " in rtext, gauge
    assert value(r1, "mta_state_sampled_timestamp_seconds") > 0
    ids = {mid, *(f"{mid}:{i}" for i in range(5))}
    ids |= {f["partnerMessageId"] for f in finals} | {m["mobileNumber"] for m in body["messages"]}
    check_labels(w1, ids)
    check_labels(r1, ids)
    assert "# HELP mta_results_total " in wtext


async def test_invalid_messages_count_without_an_account(env: Env, procs: list[Proc]) -> None:
    port = free_port()
    tail = await env.tail()
    await spawn(env, procs, "worker", MTA_METRICS_LISTEN=f"127.0.0.1:{port}")
    s0, _ = await scrape(port)
    await env.publish({"messages": [{"mobileNumber": "12", "text": "x"}] * 2})
    await tail.wait_finals(2)

    async def moved() -> bool:
        s, _ = await scrape(port)
        return value(s, "mta_results_total", account="-", api_status="FAIL") >= 2

    await eventually(moved, timeout=10, what="FAIL results without an account")
    s1, _ = await scrape(port)
    fails = value(s1, "mta_results_total", account="-", api_status="FAIL")
    assert fails - value(s0, "mta_results_total", account="-", api_status="FAIL") == 2
    assert value(s1, "mta_results_total", account="sim", api_status="OK") == 0


async def test_http_webhook_receipts(env: Env) -> None:
    env.accounts(PUSH_ACCOUNTS)
    port = free_port()
    service = await env.start(
        "http", extra={"push": PushAdapter}, metrics_listen=f"127.0.0.1:{port}"
    )
    assert service.http is not None and service.metrics is not None
    await health(port)
    s0, _ = await scrape(port)
    base = f"http://127.0.0.1:{service.http.port}"
    async with httpx.AsyncClient(base_url=base) as client:
        body, headers = signed({"receipts": [{"id": "p-77", "state": "DELIVERED"}]})
        answer = await client.post("/webhooks/pusher", content=body, headers=headers)
        assert answer.status_code == 200 and answer.json()["stored"] == 1
        forged = dict(headers, **{"x-signature": "0" * 64})
        assert (await client.post("/webhooks/pusher", content=body, headers=forged)).status_code
        assert (await client.post("/webhooks/905332141354", content=b"{}")).status_code == 404
    s1, _ = await scrape(port)

    def delta(name: str, **labels: str) -> float:
        return value(s1, name, **labels) - value(s0, name, **labels)

    assert delta("mta_webhook_receipts_total", account="pusher", result="stored") == 1
    assert delta("mta_webhook_receipts_total", account="pusher", result="refused") == 1
    assert delta("mta_webhook_receipts_total", account="-", result="refused") == 1
    check_labels(s1, {"p-77", "905332141354"})


async def test_smpp_server_process(env: Env, procs: list[Proc]) -> None:
    env.accounts(sim_accounts() + CLIENTS)
    port, smpp_port = free_port(), free_port()
    await spawn(
        env,
        procs,
        "smpp-server",
        "--listen",
        f"127.0.0.1:{smpp_port}",
        MTA_METRICS_LISTEN=f"127.0.0.1:{port}",
        MTA_SMPP_BIND_FAIL_DELAY_S="0",
        SMPP_TEST_OTP_PASSWORD="otp-pw",
    )
    await health(port)
    s0, _ = await scrape(port)
    esme = await Esme(smpp_port).connect()
    try:
        await esme.bind("acme", "secret1")
        ids = []
        for i in range(3):
            resp = await esme.submit(destination_addr=f"90533214135{i}")
            ids.append(resp.message_id.decode() if isinstance(resp.message_id, bytes) else "")
        s1, _ = await scrape(port)
        assert value(s1, "mta_smpp_sessions", client="acme") == 1
    finally:
        await asyncio.to_thread(esme.client.disconnect)
    intruder = await Esme(smpp_port).connect()
    try:
        refused = await intruder.bind("acme", "wrong")
        assert refused.status != 0
    finally:
        await asyncio.to_thread(intruder.client.disconnect)

    async def closed() -> bool:
        s, _ = await scrape(port)
        return value(s, "mta_smpp_sessions", client="acme") == 0

    await eventually(closed, timeout=10, what="the SMPP session gauge back to 0")
    s2, _ = await scrape(port)

    def delta(name: str, **labels: str) -> float:
        return value(s2, name, **labels) - value(s0, name, **labels)

    assert delta("mta_smpp_binds_total", client="acme", bind_type="transceiver") == 1
    assert delta("mta_smpp_submits_total", client="acme", result="accepted") == 3
    assert delta("mta_smpp_bind_failures_total", reason="credentials") == 1
    check_labels(s2, {*ids, "9053321413", "wrong"})
