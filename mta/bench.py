"""``mta bench``: N messages through real worker and reporter processes; prints the figures.

It starts its own ``mta worker`` and ``mta reporter`` subprocesses on a fresh prefix with the
simulator (latency 0), publishes N messages in batches of B with confirms in flight, follows
the report exchange, and prints: publish rate, messages/s into the adapter (OK results),
finals/s, p50/p99 publish→OK and publish→final, CPU seconds per 1,000 messages (of the MTA
processes, and of the whole machine incl. RabbitMQ and Redis), the processes' memory over the
run, and Redis bytes per pending message. Everything it made is deleted at the end.
:class:`BenchResult` holds the figures: ``text()`` for people, ``as_dict()`` for
``mta bench --json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import signal
import socket
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aio_pika
import orjson

from mta import bench_ingress as ingress
from mta.broker import Broker
from mta.broker import connect_robust as broker_connect_robust
from mta.config import Settings
from mta.smsc_sink import SinkProcess, receipt_due
from mta.store import Store
from mta.topology import LANE_BULK, Topology

ACCOUNTS = """[[account]]
id = 0
name = "bench"
adapter = "simulator"
default = true
concurrency = 32
[account.options]
accept_ratio = 1.0
deliver_ratio = 0.95
report_delay_s = {delay}
latency_ms = 0
seed = "bench"
push_receipts = {push}
"""

SMPP_ACCOUNTS = """[[account]]
id = 0
name = "bench"
adapter = "smpp"
default = true
[account.options]
host = "127.0.0.1"
port = {port}
system_id = "bench"
password = "bench"
binds = {binds}
window = {window}
"""

_TICK = os.sysconf("SC_CLK_TCK")
#: A result's messageId in a report body (orjson writes no spaces): finals are counted by id.
_MESSAGE_ID = re.compile(rb'"messageId":"([^"]*)"')
#: After the last final, how long the bench still listens for a copy of one.
DUPLICATE_GRACE_S = 0.5
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class BenchConfig:
    total: int = 100_000
    batch: int = 100
    report_delay_s: float = 1.0
    workers: int = 1
    reporters: int = 1
    window: int = 64
    rate: float = 0.0  # messages/s to publish at; 0 = as fast as confirms allow
    stall_s: float = 60.0
    push: bool = False  # the simulator pushes its finals (receipts) instead of answering polls
    metrics: bool = False  # the processes count and serve metrics (MTA_METRICS_LISTEN)
    partner: str = "simulator"  # or "smpp": the smpp adapter against mta.smsc_sink
    binds: int = 2  # smpp: sessions of the account
    smpp_window: int = 50  # smpp: unanswered submit_sm per session
    ingress: bool = False  # smpp: messages come from an SMPP client through mta smpp-server

    @property
    def pushes(self) -> bool:
        """Finals come as pushed receipts (SMPP deliver_sm, or the simulator's --push)."""
        return self.push or self.partner == "smpp"


def _proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _proc_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as handle:
        return int(handle.read().split()[1]) * _PAGE / 2**20


def _machine_cpu() -> float:
    with open("/proc/stat") as handle:
        parts = handle.readline().split()[1:]
    values = [int(x) for x in parts]
    busy = sum(values) - values[3] - (values[4] if len(values) > 4 else 0)
    return busy / _TICK


def _service_pids() -> dict[str, list[int]]:
    """Local RabbitMQ (beam.smp) and Redis processes, when this machine runs them."""
    found: dict[str, list[int]] = {"rabbitmq": [], "redis": []}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if comm == "beam.smp":
            found["rabbitmq"].append(int(entry.name))
        elif comm == "redis-server":
            found["redis"].append(int(entry.name))
    return found


def _cpu_of(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += _proc_cpu(pid)
    return total


def _receipt_time(partner_id: str, delay_s: float) -> float | None:
    """When the simulator knew a message's final (epoch s): its submission time, carried in
    its partner id, plus the report delay; the moment a partner would push the receipt."""
    parts = partner_id.split("-")
    try:
        return int(parts[4], 16) / 1000 + delay_s
    except (IndexError, ValueError):
        return None


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class _Follow:
    sent_at: dict[str, float]
    ok_lat: list[float] = field(default_factory=list)
    final_lat: list[float] = field(default_factory=list)
    receipt_lat: list[float] = field(default_factory=list)
    report_delay_s: float = 0.0
    receipt_time: Any = None  # (partnerMessageId, delay s) → epoch s the partner knew it
    first_ok: float = 0.0
    last_ok: float = 0.0
    first_final: float = 0.0
    last_final: float = 0.0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    total: int = 0

    ok_count: int = 0
    final_count: int = 0  # distinct messages with a final
    duplicates: int = 0  # finals for a message that had one already
    final_ids: set[bytes] = field(default_factory=set)
    seen_ok: int = 0
    seen_final: int = 0

    def on_body(self, routing_key: str, body: bytes) -> None:
        """Count results cheaply; decode one report message in ten of each kind (OK, final),
        the first of each among them, for the latencies, so the benchmark's own client takes
        little of the CPU it measures and even a short run has figures."""
        now = time.monotonic()
        n = body.count(b'"messageId"')
        is_ok = routing_key.endswith(".OK")
        if is_ok:
            self.seen_ok += 1
            sampled = self.seen_ok % 10 == 1
        else:
            self.seen_final += 1
            sampled = self.seen_final % 10 == 1
        if sampled:
            lat = self.ok_lat if is_ok else self.final_lat
            wall = time.time()
            for result in orjson.loads(body)["results"]:
                sent = self.sent_at.get(result["messageId"].rsplit(":", 1)[0])
                if sent is not None:
                    lat.append(now - sent)
                if not is_ok:
                    known = self.receipt_time(result["partnerMessageId"], self.report_delay_s)
                    if known is not None:
                        self.receipt_lat.append(wall - known)
        if is_ok:
            self.ok_count += n
            self.first_ok = self.first_ok or now
            self.last_ok = now
        else:
            ids = self.final_ids
            for message_id in _MESSAGE_ID.findall(body):
                if message_id in ids:
                    self.duplicates += 1
                else:
                    ids.add(message_id)
            self.final_count = len(ids)
            self.first_final = self.first_final or now
            self.last_final = now
            if self.final_count >= self.total:
                self.done.set()


async def run_bench(settings: Settings, config: BenchConfig) -> BenchResult:
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    tmp = Path(tempfile.mkdtemp(prefix="mta-bench-"))
    accounts = tmp / "accounts.toml"
    sink: SinkProcess | None = None
    if config.partner == "smpp":
        sink = await SinkProcess.start(config.report_delay_s)
        text = SMPP_ACCOUNTS.format(port=sink.port, binds=config.binds, window=config.smpp_window)
        text += ingress.SMPP_CLIENT if config.ingress else ""
    else:
        text = ACCOUNTS.format(delay=config.report_delay_s, push=str(config.push).lower())
    accounts.write_text(text, encoding="utf-8")
    settings = replace(settings, prefix=prefix, accounts=str(accounts))
    topology = Topology(prefix)
    broker = Broker(settings.amqp_url, topology)
    await broker.connect(name="mta bench")
    store = await Store.open(settings.redis_url, prefix, shards=settings.shards)
    env = dict(os.environ, MTA_PREFIX=prefix, MTA_ACCOUNTS=str(accounts),
               MTA_AMQP_URL=settings.amqp_url, MTA_REDIS_URL=settings.redis_url,
               MTA_POLL_FIRST_S=str(max(0.2, config.report_delay_s)), MTA_POLL_MAX_S="2")
    # Metrics on: each process serves them on a free port (counting is what costs; a scrape
    # every 15 s costs nothing measurable). Off: not even an inherited MTA_METRICS_LISTEN.
    env["MTA_METRICS_LISTEN"] = "127.0.0.1:0" if config.metrics else ""
    if config.pushes:  # the default polls (10 s, then backing off): receipts must not wait for them
        env.update(MTA_POLL_FIRST_S="10", MTA_POLL_MAX_S="300")
    procs: list[asyncio.subprocess.Process] = []
    roles: list[str] = []
    log = (tmp / "processes.log").open("wb")
    try:
        for role, n in (("worker", config.workers), ("reporter", config.reporters)):
            for _ in range(n):
                procs.append(await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "mta.cli", role, env=env, stdout=log, stderr=log,
                ))
                roles.append(role)
        server_port = 0
        if config.ingress:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                server_port = probe.getsockname()[1]
            procs.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "mta.cli", "smpp-server", "--listen",
                f"127.0.0.1:{server_port}", env=env, stdout=log, stderr=log,
            ))
            roles.append("smpp-server")
            await ingress.wait_listening(server_port, procs[-1], 60)
        await _wait_ready(tmp / "processes.log", len(procs))
        result = await _measure(settings, config, broker, store, procs, roles, sink, server_port)
        if sink is not None:
            return replace(result, smsc=_smsc_figures(await sink.stop(), result))
        return result
    finally:
        if sink is not None and sink.proc.returncode is None:
            sink.proc.kill()
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 30)
            if proc.returncode is None:
                proc.kill()
        log.close()
        assert broker.channel is not None
        with contextlib.suppress(Exception):
            await topology.delete(broker.channel)
        await broker.close()
        await store.delete_all()
        await store.close()


async def _wait_ready(log: Path, roles: int) -> None:
    """Wait until every process logged that it runs (quorum queues' DeclareOk counts no
    consumers on RabbitMQ 3.x, so the processes' own word is the reliable signal)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = await asyncio.to_thread(log.read_bytes)
        if text.count(b" running (prefix ") >= roles:
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the MTA processes did not start within 60 s; see {log}")


async def _measure(
    settings: Settings, config: BenchConfig, broker: Broker, store: Store,
    procs: list[asyncio.subprocess.Process], roles: list[str], sink: SinkProcess | None,
    server_port: int = 0,
) -> BenchResult:
    total = config.total - config.total % config.batch or config.batch
    follow = _Follow(sent_at={}, total=total, report_delay_s=config.report_delay_s,
                     receipt_time=receipt_due if sink else _receipt_time)
    connection = await broker_connect_robust(settings.amqp_url, name="mta bench reports")
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=1000)
    reports = await channel.get_exchange(broker.topology.reports_exchange)
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(reports, routing_key="#")

    async def on_report(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        follow.on_body(message.routing_key or "", message.body)

    await queue.consume(on_report, no_ack=True)
    cpu0 = {p.pid: _proc_cpu(p.pid) for p in procs}
    sink_cpu0 = _proc_cpu(sink.proc.pid) if sink else 0.0
    machine0 = _machine_cpu()
    services = _service_pids()
    services0 = {name: _cpu_of(pids) for name, pids in services.items()}
    rss: dict[int, list[float]] = {p.pid: [_proc_rss_mb(p.pid)] for p in procs}
    pending_samples: list[tuple[int, int]] = []

    async def sample() -> None:
        while True:
            await asyncio.sleep(1.0)
            for p in procs:
                with contextlib.suppress(OSError):
                    rss[p.pid].append(_proc_rss_mb(p.pid))
            count, size = await store.pending_footprint(["bench"] if config.pushes else [])
            if count > 1000:
                pending_samples.append((count, size))

    client = ingress.IngressFigures()
    session = await ingress.bind(server_port, config.smpp_window, client) if server_port else None
    sampler = asyncio.create_task(sample())
    started = time.monotonic()
    sent = total if session else 0
    n = 0
    if session is not None:
        await ingress.submit(session, total, config.smpp_window, client)
    while sent < total:
        if config.rate > 0:  # paced: latencies then measure the pipeline, not the backlog
            ahead = sent / config.rate - (time.monotonic() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
        bodies = []
        window = config.window if config.rate <= 0 else max(1, int(config.rate / config.batch / 50))
        for _ in range(window):
            if sent >= total:
                break
            messages = [{"mobileNumber": f"9053{(sent + i) % 10**8:08d}", "text": "bench message"}
                        for i in range(config.batch)]
            bodies.append((f"b{n}", orjson.dumps({"messages": messages})))
            sent += config.batch
            n += 1
        for bid, _ in bodies:
            follow.sent_at[bid] = time.monotonic()
        await asyncio.gather(*(broker.publish(broker.topology.send_exchange, LANE_BULK, body,
                                              message_id=bid) for bid, body in bodies))
    published = time.monotonic()
    last_progress, last_count = time.monotonic(), 0
    while not follow.done.is_set() or (session is not None and not client.done.is_set()):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(follow.done.wait(), 1.0)
        count = follow.final_count + client.receipts
        if count != last_count:
            last_progress, last_count = time.monotonic(), count
        elif time.monotonic() - last_progress > config.stall_s:
            break
    ended = time.monotonic()
    sampler.cancel()
    cpu_each = {p.pid: _proc_cpu(p.pid) - cpu0[p.pid] for p in procs}
    sink_cpu = _proc_cpu(sink.proc.pid) - sink_cpu0 if sink else 0.0
    if session is not None:
        await session.unbind()
    cpu = sum(cpu_each.values())
    machine = _machine_cpu() - machine0
    service_cpu = {name: _cpu_of(pids) - services0[name] for name, pids in services.items()}
    await asyncio.sleep(DUPLICATE_GRACE_S)  # a late copy of a final still counts as doubled
    await connection.close()
    oks, finals = follow.ok_count, follow.final_count
    per_1000 = 1000 / max(1, finals)
    return BenchResult(
        config=config,
        messages=total,
        publish_msg_s=total / (published - started),
        ok=oks,
        adapter_ok_msg_s=oks / max(1e-9, follow.last_ok - started),
        finals=finals,
        duplicate_finals=follow.duplicates,
        finals_msg_s=finals / max(1e-9, follow.last_final - started),
        finals_steady_msg_s=finals / max(1e-9, follow.last_final - follow.first_final),
        latency_ms={
            "publish_ok": _percentiles(follow.ok_lat),
            "publish_final": _percentiles(follow.final_lat),
            "receipt_final": _percentiles(follow.receipt_lat),
        },
        cpu_s_per_1000={
            "mta": cpu * per_1000,
            "machine": machine * per_1000,
            **{name: cpu_s * per_1000 for name, cpu_s in service_cpu.items() if services[name]},
        },
        redis_bytes_per_pending=_pct([b / c for c, b in pending_samples], 0.5),
        peak_pending=max((c for c, _ in pending_samples), default=0),
        wall_s=ended - started,
        processes=[
            ProcessFigures(role, p.pid, cpu_each[p.pid], rss[p.pid][0], max(rss[p.pid]),
                           rss[p.pid][-1])
            for p, role in zip(procs, roles, strict=True)
        ],
        smsc={"cpu_s": sink_cpu} if sink else None,
        ingress=client.as_dict() if session is not None else None,
        started_wall=time.time() - (time.monotonic() - started),
    )


def _smsc_figures(counters: dict[str, Any], result: BenchResult) -> dict[str, Any]:
    """The SMSC sink's figures: submit_sm/s between the first and last submit it saw."""
    first, last = counters.get("first_submit", 0.0), counters.get("last_submit", 0.0)
    submits = int(counters.get("submits", 0))
    return {
        "submit_sm": submits,
        "submit_sm_s": submits / max(1e-9, last - first),
        "submit_sm_s_from_publish": submits / max(1e-9, last - result.started_wall),
        "receipts": int(counters.get("receipts", 0)),
        "receipt_resps": int(counters.get("receipt_resps", 0)),
        "receipt_errors": int(counters.get("receipt_errors", 0)),
        "cpu_s": (result.smsc or {}).get("cpu_s", 0.0),
    }


def _percentiles(values: list[float]) -> dict[str, float | None]:
    """p50 and p99 in ms; None when nothing was sampled."""
    if not values:
        return {"p50": None, "p99": None}
    return {"p50": _pct(values, 0.5) * 1000, "p99": _pct(values, 0.99) * 1000}


@dataclass(frozen=True)
class ProcessFigures:
    role: str
    pid: int
    cpu_s: float
    rss_start_mb: float
    rss_max_mb: float
    rss_end_mb: float


@dataclass(frozen=True)
class BenchResult:
    """The figures of one run. :meth:`as_dict` is ``mta bench --json`` (field names documented
    in docs/cli.md, kept stable); :meth:`text` is the readable report. A new figure is a new
    field here, a key in :meth:`as_dict` and a line in :meth:`text`."""

    config: BenchConfig
    messages: int
    publish_msg_s: float
    ok: int
    adapter_ok_msg_s: float
    finals: int
    finals_msg_s: float
    finals_steady_msg_s: float
    #: "publish_ok", "publish_final", "receipt_final" → {"p50": ms, "p99": ms}
    latency_ms: dict[str, dict[str, float | None]]
    #: "mta", "machine", and "rabbitmq"/"redis" when they run on this machine
    cpu_s_per_1000: dict[str, float]
    redis_bytes_per_pending: float
    peak_pending: int
    wall_s: float
    processes: list[ProcessFigures]
    #: smpp: the SMSC sink's counters and CPU (None with the simulator)
    smsc: dict[str, Any] | None = None
    started_wall: float = 0.0
    #: finals for a message that had one already (each message's first final is in ``finals``)
    duplicate_finals: int = 0
    #: --ingress: what the SMPP client saw (submit_sm accepted, receipts back, their rates)
    ingress: dict[str, Any] | None = None

    @property
    def complete(self) -> bool:
        return self.finals >= self.messages

    def as_dict(self) -> dict[str, Any]:
        per_pending = self.redis_bytes_per_pending
        return {
            "config": {
                "messages": self.messages,
                "batch": self.config.batch,
                "workers": self.config.workers,
                "reporters": self.config.reporters,
                "report_delay_s": self.config.report_delay_s,
                "rate": self.config.rate,
                "receipts": "pushed" if self.config.pushes else "polled",
                "metrics": self.config.metrics,
                "partner": self.config.partner,
                **({"binds": self.config.binds, "window": self.config.smpp_window}
                   if self.smsc is not None else {}),
            },
            "publish_msg_s": self.publish_msg_s,
            "adapter_ok_msg_s": self.adapter_ok_msg_s,
            "ok": self.ok,
            "finals_msg_s": self.finals_msg_s,
            "finals_steady_msg_s": self.finals_steady_msg_s,
            "finals": self.finals,
            "duplicate_finals": self.duplicate_finals,
            "complete": self.complete,
            "latency_ms": self.latency_ms,
            "cpu_s_per_1000": self.cpu_s_per_1000,
            "redis_bytes_per_pending": None if math.isnan(per_pending) else per_pending,
            "peak_pending": self.peak_pending,
            "wall_s": self.wall_s,
            "processes": [
                {
                    "role": p.role,
                    "pid": p.pid,
                    "cpu_s": p.cpu_s,
                    "cpu_us_per_msg": p.cpu_s / max(1, self.finals) * 1e6,
                    "rss_mb": {"start": p.rss_start_mb, "max": p.rss_max_mb, "end": p.rss_end_mb},
                }
                for p in self.processes
            ],
            **({"smsc": self.smsc} if self.smsc is not None else {}),
            **({"ingress": self.ingress} if self.ingress is not None else {}),
        }

    def text(self) -> str:
        config = self.config

        def ms(name: str, q: str) -> str:
            value = self.latency_ms[name][q]
            return f"{float('nan') if value is None else value:8.1f}"

        partner = ("simulator latency 0" if self.smsc is None else
                   f"smpp ({config.binds} binds, window {config.smpp_window}) to mta.smsc_sink")
        lines = [
            f"mta bench: {self.messages:,} messages in batches of {config.batch}, "
            f"{config.workers} worker(s), {config.reporters} reporter(s), {partner}, "
            f"report delay {config.report_delay_s:g} s, receipts "
            f"{'pushed' if config.pushes else 'polled'}"
            + (f", paced at {config.rate:,.0f} msg/s" if config.rate > 0 else ", unpaced")
            + f", metrics {'on' if config.metrics else 'off'}",
            f"  publish (confirms)       {self.publish_msg_s:>10,.0f} msg/s",
            f"  into the adapter (OK)    {self.adapter_ok_msg_s:>10,.0f} msg/s"
            f"   ({self.ok:,} OK)",
            *self._smsc_lines(),
            f"  finals out               {self.finals_msg_s:>10,.0f}"
            f" msg/s   ({self.finals:,} finals{'' if self.complete else ', INCOMPLETE'};"
            f" {self.duplicate_finals:,} doubled)",
            f"  finals, steady window    {self.finals_steady_msg_s:>10,.0f} msg/s",
            f"  publish→OK      p50 {ms('publish_ok', 'p50')} ms"
            f"   p99 {ms('publish_ok', 'p99')} ms",
            f"  publish→final   p50 {ms('publish_final', 'p50')} ms"
            f"   p99 {ms('publish_final', 'p99')} ms"
            f"   (includes the {config.report_delay_s:g} s report delay)",
            f"  receipt→final   p50 {ms('receipt_final', 'p50')} ms"
            f"   p99 {ms('receipt_final', 'p99')} ms"
            "   (from when the partner knew the final state)",
            f"  CPU, MTA processes       {self.cpu_s_per_1000['mta']:>10.3f} s per 1,000 messages",
            f"  CPU, whole machine       {self.cpu_s_per_1000['machine']:>10.3f} s per 1,000 "
            "messages (incl. RabbitMQ, Redis, this client)",
            *(f"  CPU, local {name:<13} {value:>10.3f} s per 1,000 messages"
              for name, value in self.cpu_s_per_1000.items() if name not in ("mta", "machine")),
            f"  Redis per pending msg    {self.redis_bytes_per_pending:>10.0f} bytes (pending hash"
            f" + due + lease{' + partner index' if config.pushes else ''}, "
            f"at up to {self.peak_pending:,} pending)",
            f"  wall time                {self.wall_s:>10.1f} s",
        ]
        for p in self.processes:
            lines.append(f"  {p.role:<8} pid {p.pid:<7} CPU {p.cpu_s:6.1f} s "
                         f"{p.cpu_s / max(1, self.finals) * 1e6:6.1f} µs/msg  "
                         f"RSS start {p.rss_start_mb:6.1f} MB  max {p.rss_max_mb:6.1f} MB  "
                         f"end {p.rss_end_mb:6.1f} MB")
        return "\n".join(lines)

    def _smsc_lines(self) -> list[str]:
        s = self.smsc
        if s is None:
            return []
        i = self.ingress
        return [
            *([f"  SMPP client → smpp-server {i['submit_sm_s']:>8,.0f} submit_sm/s accepted"
               f"   ({i['accepted']:,} of {i['submit_sm']:,}; errors {i['errors'] or 'none'})",
               f"  receipts to the client   {i['receipts_s']:>10,.0f} deliver_sm/s"
               f"   ({i['receipts']:,} received)"] if i else []),
            f"  at the SMSC (submit_sm)  {s['submit_sm_s']:>10,.0f} msg/s   ({s['submit_sm']:,}"
            f" submit_sm; {s['submit_sm_s_from_publish']:,.0f}/s from the first publish)",
            f"  receipts sent / acked    {s['receipts']:>10,} / {s['receipt_resps']:,}"
            f" ({s['receipt_errors']:,} answered with an error)",
            f"  SMSC sink CPU            {s['cpu_s']:>10.1f} s (not counted as MTA)",
        ]
