"""deploy/compose.yaml for real: the whole stack up (RabbitMQ, Redis, two workers, a reporter,
mta http, mta smpp-server, Prometheus), a batch published from the host to the mapped port,
every final on the report exchange, Prometheus scraping every role, a graceful stop, down.

RabbitMQ, Redis and Prometheus run from images built here on the local Debian base
(tests/deploy/images/, selected by tests/deploy/compose.override.yaml); the MTA image is the
one built from deploy/Dockerfile.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import aio_pika
import orjson
import pytest
from deploytools import DEPLOY, HERE, TIMINGS, docker_build, exposition_names, run

pytestmark = pytest.mark.deploy

PROJECT = "smsmtadeploytest"
N_MESSAGES = 300  # three batches of 100
FINALS = {"DELIVERED", "FAIL", "TIMEOUT"}
ROLES = ("worker", "reporter", "http", "smpp-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def compose_command(docker: str) -> list[str]:
    """`docker compose` (the plugin) when there is one, else Debian's docker-compose."""
    if run([docker, "compose", "version"], check=False).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy is None:
        pytest.fail("neither `docker compose` nor docker-compose is installed", pytrace=False)
    return [legacy]


def http_get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return bytes(response.read())


class Stack:
    def __init__(self, docker: str, env: dict[str, str]) -> None:
        self.docker = docker
        self.env = env
        self.cmd = [
            *compose_command(docker),
            "-p", PROJECT,
            "-f", str(DEPLOY / "compose.yaml"),
            "-f", str(HERE / "compose.override.yaml"),
        ]

    def __call__(self, *args: str, timeout: float = 600, check: bool = True) -> str:
        return run([*self.cmd, *args], timeout=timeout, env=self.env, check=check).stdout

    def containers(self, service: str | None = None) -> list[str]:
        args = ["ps", "-q"] + ([service] if service else [])
        return [c for c in self(*args).split() if c]

    def logs(self) -> str:
        return self("logs", "--no-color", "--tail", "40", check=False)[-12000:]


@pytest.fixture(scope="module")
def stack(docker: str, mta_image: str, base_image: str) -> Iterator[Stack]:
    started = time.monotonic()
    for name in ("rabbitmq", "redis", "prometheus"):
        docker_build(
            docker, HERE / "images" / f"{name}.Dockerfile", f"sms-mta-test-{name}:bookworm",
            HERE / "images", base_image,
        )
    TIMINGS["service images (rabbitmq, redis, prometheus)"] = time.monotonic() - started
    ports = {
        name: str(free_port())
        for name in ("RABBITMQ_PORT", "RABBITMQ_MANAGEMENT_PORT", "REDIS_PORT", "MTA_HTTP_PORT",
                     "MTA_SMPP_PORT", "PROMETHEUS_PORT")
    }
    env = {**os.environ, **ports, "MTA_IMAGE": mta_image,
           "RABBITMQ_PASSWORD": "deploy-" + uuid.uuid4().hex[:8]}
    stack = Stack(docker, env)
    stack("down", "-v", "--remove-orphans", check=False)  # what a killed earlier run left
    started = time.monotonic()
    try:
        stack("up", "-d", timeout=600)
        TIMINGS["compose up"] = time.monotonic() - started
        yield stack
    except BaseException:
        print(stack.logs())
        raise
    finally:
        started = time.monotonic()
        stack("down", "-v", "--remove-orphans", "-t", "45", check=False)
        TIMINGS["compose down"] = time.monotonic() - started
        left = run([docker, "ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}"])
        assert left.stdout.strip() == "", f"containers left after down: {left.stdout}"


def wait_for(what: str, check: Any, timeout: float, stack: Stack) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(1)
    pytest.fail(f"{what}: not within {timeout:g} s (last: {last!r})\n{stack.logs()}", pytrace=False)


def test_stack_runs_scaled_roles_and_passes_a_batch(stack: Stack) -> None:
    env = stack.env
    assert len(stack.containers("worker")) == 2  # deploy.replicas
    for service in ("rabbitmq", "redis", *ROLES, "prometheus"):
        assert stack.containers(service), f"{service} is not running\n{stack.logs()}"

    http = f"http://127.0.0.1:{env['MTA_HTTP_PORT']}"
    wait_for("mta http /readyz", lambda: json.loads(http_get(f"{http}/readyz"))["status"]
             == "ready", 120, stack)
    assert json.loads(http_get(f"{http}/healthz"))["status"] == "ok"
    with socket.create_connection(("127.0.0.1", int(env["MTA_SMPP_PORT"])), timeout=5):
        pass  # the SMPP listener is published

    amqp = f"amqp://mta:{env['RABBITMQ_PASSWORD']}@127.0.0.1:{env['RABBITMQ_PORT']}/"
    started = time.monotonic()
    results = asyncio.run(publish_and_collect(amqp, stack))
    TIMINGS[f"{N_MESSAGES} messages through the stack, every final"] = time.monotonic() - started
    finals = {r["messageId"]: r for r in results if r["apiStatus"] in FINALS}
    assert len(finals) == N_MESSAGES
    statuses = {r["apiStatus"] for r in finals.values()}
    assert statuses <= {"DELIVERED", "FAIL"} and "DELIVERED" in statuses, statuses
    ok = [r for r in results if r["apiStatus"] == "OK"]
    assert len({r["messageId"] for r in ok}) == N_MESSAGES


async def publish_and_collect(amqp: str, stack: Stack) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 120
    while True:
        try:
            connection = await aio_pika.connect(amqp)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1)
    results: list[dict[str, Any]] = []
    async with connection:
        channel = await connection.channel()
        reports = await channel.declare_exchange(
            "mta.reports", aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(reports, "#")
        send = await channel.get_exchange("mta.send")
        batch_ids = []
        for b in range(N_MESSAGES // 100):
            body = {"messages": [{"mobileNumber": f"90533{b:02d}{i:05d}", "text": f"compose {i}"}
                                 for i in range(100)]}
            batch_ids.append(f"compose-{uuid.uuid4().hex}")
            await send.publish(
                aio_pika.Message(orjson.dumps(body), message_id=batch_ids[-1],
                                 delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key="bulk",
            )
        finals: set[str] = set()
        ours = tuple(f"{b}:" for b in batch_ids)
        end = time.monotonic() + 120  # first poll after MTA_POLL_FIRST_S (10 s)
        async with queue.iterator() as messages:
            while len(finals) < N_MESSAGES:
                remaining = end - time.monotonic()
                if remaining <= 0:
                    pytest.fail(f"{len(finals)} of {N_MESSAGES} finals within 120 s\n"
                                f"{stack.logs()}", pytrace=False)
                try:
                    message = await asyncio.wait_for(messages.__anext__(), remaining)
                except TimeoutError:
                    continue
                async with message.process():
                    for result in orjson.loads(message.body)["results"]:
                        if result["messageId"].startswith(ours):
                            results.append(result)
                            if result["apiStatus"] in FINALS:
                                finals.add(result["messageId"])
    return results


def test_prometheus_scrapes_every_role_and_rabbitmq(stack: Stack) -> None:
    prometheus = f"http://127.0.0.1:{stack.env['PROMETHEUS_PORT']}"

    def targets() -> dict[str, list[str]] | None:
        doc = json.loads(http_get(f"{prometheus}/api/v1/targets?state=active"))
        seen: dict[str, list[str]] = {}
        for target in doc["data"]["activeTargets"]:
            key = target["labels"].get("role") or target["labels"]["job"]
            seen.setdefault(key, []).append(target["health"])
        wanted = [*ROLES, "rabbitmq"]
        if all(k in seen and all(h == "up" for h in seen[k]) for k in wanted):
            return seen
        return None

    seen = wait_for("Prometheus: every role and RabbitMQ up", targets, 90, stack)
    assert len(seen["worker"]) == 2, seen  # each scaled worker is its own target
    rules = json.loads(http_get(f"{prometheus}/api/v1/rules"))["data"]["groups"]
    assert rules and all(r["health"] == "ok" for g in rules for r in g["rules"]), rules


def test_rabbitmq_metrics_the_dashboard_reads_exist(stack: Stack) -> None:
    """The queue-depth and broker series in the dashboard and the alert rules are RabbitMQ's
    own (rabbitmq_prometheus, /metrics/per-object): check them against the live broker."""
    from test_deploy_observability import dashboard_and_rule_metrics

    wanted = {m for m in dashboard_and_rule_metrics() if m.startswith("rabbitmq_")}
    assert wanted
    rabbitmq = stack.containers("rabbitmq")[0]
    script = ("import urllib.request as u; "
              "print(u.urlopen('http://127.0.0.1:15692/metrics/per-object').read().decode())")
    text = run([stack.docker, "exec", rabbitmq, "python3", "-c", script]).stdout
    missing = wanted - exposition_names(text)
    assert not missing, f"not exported by RabbitMQ: {sorted(missing)}"


def test_roles_stop_gracefully(stack: Stack) -> None:
    """SIGTERM (compose stop) → each role finishes in-flight work and exits 0 by itself."""
    ids = {s: stack.containers(s) for s in ROLES}
    started = time.monotonic()
    stack("stop", "-t", "45", *ROLES)
    assert time.monotonic() - started < 45, "a role waited for the kill"
    for service, containers in ids.items():
        for container in containers:
            code = run([stack.docker, "inspect", "-f", "{{.State.ExitCode}}", container]).stdout
            assert code.strip() == "0", (service, code, stack.logs())


