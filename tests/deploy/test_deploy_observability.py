"""The Grafana dashboard and the Prometheus alert rules read metrics that exist: every mta_*
series they query is on the live /metrics of real mta processes (an `mta run --http` and an
`mta smpp-server` started here with MTA_METRICS_LISTEN); rabbitmq_* series are checked against
a live RabbitMQ in the compose test. promtool checks and unit-tests the rules (marked deploy).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from deploytools import DEPLOY, HERE, exposition_names, promql_metrics, run, tool

DASHBOARD = DEPLOY / "grafana" / "sms-mta.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ACCOUNTS = """
[[account]]
id = 0
name = "sim"
adapter = "simulator"
default = true
[account.options]
report_delay_s = 0.5

[[smpp_client]]
system_id = "dash"
password = "pw"
account_id = 0
throughput = 10
"""
#: Series Prometheus makes itself, not any exporter.
SYNTHETIC = {"up"}


def dashboard_exprs() -> list[tuple[str, str]]:
    doc = json.loads(DASHBOARD.read_text())
    exprs = [(p["title"], t["expr"]) for p in doc["panels"] for t in p.get("targets", [])]
    for variable in doc["templating"]["list"]:
        if variable["type"] == "query":
            exprs.append((f"${variable['name']}", variable["definition"]))
    return exprs


def rule_exprs() -> list[tuple[str, str]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [(r["alert"], r["expr"]) for g in doc["groups"] for r in g["rules"]]


def dashboard_and_rule_metrics() -> set[str]:
    names: set[str] = set()
    for _, expr in dashboard_exprs() + rule_exprs():
        names |= promql_metrics(expr.replace("label_values(", "(").replace(", account)", ")"))
    return names


def test_dashboard_is_a_grafana_dashboard_covering_every_topic() -> None:
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] == "sms-mta" and doc["schemaVersion"] >= 36
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    for panel in doc["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["targets"] and panel["datasource"]["uid"] == "${datasource}"
            assert all(t["refId"] and t["expr"] for t in panel["targets"]), panel["title"]
    queried = dashboard_and_rule_metrics()
    for topic in ("mta_messages_in_total", "mta_results_total", "mta_partner_call_seconds_bucket",
                  "mta_partner_errors_total", "mta_dead_letters_total",
                  "rabbitmq_queue_messages_ready", "mta_pending_messages", "mta_due_now_messages",
                  "mta_smpp_sessions", "mta_circuit_state"):
        assert topic in queried, topic
    assert all(m.startswith(("mta_", "rabbitmq_")) or m in SYNTHETIC for m in queried), queried
    alerts = {name for name, _ in rule_exprs()}
    assert {"MtaDeadLettersGrowing", "MtaOutboxNotDraining", "MtaDueNowGrowing",
            "MtaCircuitOpen"} <= alerts


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def scrape_when_ready(port: int, proc: subprocess.Popen[bytes]) -> str:
    async with httpx.AsyncClient(timeout=3) as client:
        for _ in range(150):
            if proc.poll() is not None:
                out = proc.stdout.read().decode() if proc.stdout else ""
                pytest.fail(f"{proc.args} exited {proc.returncode}:\n{out[-3000:]}")
            try:
                ready = await client.get(f"http://127.0.0.1:{port}/readyz")
                if ready.status_code == 200:
                    metrics = await client.get(f"http://127.0.0.1:{port}/metrics")
                    assert metrics.status_code == 200
                    assert (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
                    return metrics.text
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    pytest.fail(f"{proc.args}: /readyz not 200 within 30 s")


async def test_every_queried_mta_metric_is_on_a_live_metrics_endpoint(env: Any) -> None:
    accounts = env.accounts(ACCOUNTS)
    base = {**os.environ, "MTA_PREFIX": env.prefix, "MTA_ACCOUNTS": str(accounts),
            "MTA_AMQP_URL": env.settings.amqp_url, "MTA_REDIS_URL": env.settings.redis_url}
    roles = {
        "mta run --http": (["run", "--http", "--listen", f"127.0.0.1:{free_port()}"], free_port()),
        "mta smpp-server": (["smpp-server", "--listen", f"127.0.0.1:{free_port()}"], free_port()),
    }
    procs = []
    live: set[str] = set()
    try:
        for args, port in roles.values():
            procs.append(subprocess.Popen(  # noqa: ASYNC220 - started once, not awaited
                [sys.executable, "-m", "mta.cli", *args],
                env={**base, "MTA_METRICS_LISTEN": f"127.0.0.1:{port}"},
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            ))
        for (_, port), proc in zip(roles.values(), procs, strict=True):
            live |= exposition_names(await scrape_when_ready(port, proc))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
    wanted = {m for m in dashboard_and_rule_metrics() if m.startswith("mta_")}
    missing = wanted - live
    assert not missing, f"queried but on no live /metrics: {sorted(missing)}"


@pytest.mark.deploy
def test_alert_rules_pass_promtool_check_and_unit_tests(tmp_path: Path) -> None:
    promtool = tool("promtool")
    out = run([promtool, "check", "rules", str(ALERTS)]).stdout
    assert "SUCCESS: 7 rules found" in out, out
    out = run([promtool, "test", "rules", "alerts_test.yml"], cwd=HERE).stdout
    assert "SUCCESS" in out, out
    # Every alert has a unit test that makes it fire.
    tested = yaml.safe_load((HERE / "alerts_test.yml").read_text())
    firing = {t["alertname"] for case in tested["tests"] for t in case["alert_rule_test"]
              if t.get("exp_alerts")}
    assert {name for name, _ in rule_exprs()} - firing == {"MtaTargetDown"}
    # The compose stack's Prometheus configuration, with its rule file where it mounts it.
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (tmp_path / "alerts.yml").write_text(ALERTS.read_text())
    config["rule_files"] = [str(tmp_path / "alerts.yml")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    run([promtool, "check", "config", str(tmp_path / "prometheus.yml")])
