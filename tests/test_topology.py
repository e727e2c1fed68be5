"""The topology: one description, declared on the broker and shipped as a definitions file."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import aio_pika

from mta.topology import Topology
from tests.conftest import Env, mta_command

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_definitions_file_is_the_generated_one() -> None:
    shipped = json.loads((ROOT / "deploy/rabbitmq/definitions.json").read_text())
    assert shipped == json.loads(json.dumps(Topology("mta").definitions()))


def test_mta_topology_prints_the_definitions_for_a_prefix() -> None:
    out = subprocess.run(
        mta_command("topology", "--prefix", "acme"), capture_output=True, check=True, text=True
    ).stdout
    doc = json.loads(out)
    names = {q["name"] for q in doc["queues"]}
    assert {"acme.send.bulk", "acme.send.priority", "acme.dead", "acme.retry.bulk.5s"} <= names
    bulk = next(q for q in doc["queues"] if q["name"] == "acme.send.bulk")
    assert bulk["arguments"]["x-queue-type"] == "quorum"
    assert bulk["arguments"]["x-dead-letter-exchange"] == "acme.dead"
    assert {(b["source"], b["routing_key"]) for b in doc["bindings"]} >= {
        ("acme.send", "bulk"),
        ("acme.send", "priority"),
        ("acme.dead", ""),
    }


async def test_declared_queues_match_the_definitions(env: Env) -> None:
    assert env.connection is not None
    for name, args in env.topology.queues():
        channel = await env.connection.channel()
        # Re-declaring with the documented arguments succeeds only if they are the same.
        await channel.declare_queue(name, durable=True, arguments=args)
        await channel.close()
    channel = await env.connection.channel()
    try:
        await channel.declare_queue(
            env.topology.send_queue("bulk"), durable=True, arguments={"x-queue-type": "classic"}
        )
        raise AssertionError("a conflicting declaration must be refused")
    except aio_pika.exceptions.ChannelPreconditionFailed:
        pass


async def test_mta_status_reports_queue_depths(env: Env) -> None:
    await env.publish({"messages": [{"mobileNumber": "905332141354", "text": "x"}]})
    proc = await asyncio.create_subprocess_exec(
        *mta_command("status", "--json", "--prefix", env.prefix), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    doc = json.loads(out)
    assert doc["queues"][env.topology.send_queue("bulk")] == 1
    assert doc["redis"]["pending"] == 0
