"""Benchmark (not a test): ``mta bench`` in several Redis / RabbitMQ setups, for docs/scaling.md.

Runs ``.venv/bin/mta bench -n N -b 100 --json`` in each setup, the setups interleaved
(A, B, C, A, B, C, ...) so that they share the machine's busy and quiet moments, and prints
min / median / max of each figure per setup. Setups (``--setups``, letters in any order):

    a  one Redis node, MTA_SHARDS=1 (the layout before sharding), the shared RabbitMQ
    b  one Redis node, MTA_SHARDS=16 (the default layout), the shared RabbitMQ
    c  a Redis Cluster (3 masters + 3 replicas, tests/clusters.py), MTA_SHARDS=16, the
       shared RabbitMQ; MTA_REDIS_URL is one node's URL
    d  as c, with a 3-node RabbitMQ cluster (tests/clusters.py): MTA_AMQP_URL = the three
       nodes' URLs, comma-separated
    e  as b, with ``--push`` (the simulator pushes every final as a receipt): what a pushing
       account costs (the partner index)
    f  as b, with MTA_REPORT_BATCH=16000 (1,000 per shard per round, as MTA_SHARDS=1 claims)

Figures per run: messages/s into the adapter and finals/s (``mta bench --json``), worker and
reporter CPU per message (the JSON's per-process figures), Redis commands per message
(``total_commands_processed`` delta, summed over the Redis masters) and Redis CPU per message
(``used_cpu_user`` + ``used_cpu_sys`` delta, masters; the replicas' apart), Redis bytes per
pending message (JSON), RabbitMQ CPU per batch (utime + stime of the broker's beam.smp, the one
listening on the AMQP port; summed over the nodes of a cluster; also less the broker's own
rate over ``--idle-s`` seconds before the run, which is what others used it for), and the load
average before and after the run. The deltas span the whole ``mta bench`` process (start,
run, clean-up).

By default the single Redis node is a private one on loopback (no persistence, as the shared
one): the shared Redis on 6379 serves other clients, whose commands would count as ours
(``--shared-redis`` uses it anyway). The RabbitMQ of setups a-c, e, f is the shared broker
(``--amqp-url``); its CPU includes whatever else it serves meanwhile, which the load columns
hint at; ``--private-rabbit`` starts a RabbitMQ node of their own instead (tests/faults.py).
Cluster nodes run without AOF (``CONFIG SET appendonly no``), as the single node.

``--code REV`` runs the code of a git revision (``git archive`` into a temporary directory,
put first on PYTHONPATH) instead of the working tree, so that edits made to the tree during
the runs do not mix into them.

    .venv/bin/python tests/bench/bench_scaling.py -n 100000 --runs 3 --setups abc
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.clusters import RabbitCluster, RedisCluster  # noqa: E402
from tests.faults import PrivateRabbit, PrivateRedis  # noqa: E402

SHARED_AMQP = "amqp://guest:guest@127.0.0.1:5672/"
SHARED_REDIS = "redis://127.0.0.1:6379/0"
_TICK = os.sysconf("SC_CLK_TCK")
NO_PERSISTENCE = ("--appendonly", "no", "--save", "")


# -- process and server figures ------------------------------------------------------------------


def listener_pids(port: int) -> list[int]:
    """The PIDs holding a TCP socket that listens on ``port`` (via /proc/net/tcp and fds)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as handle:
            for line in handle.readlines()[1:]:
                parts = line.split()
                if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(parts[9])
    wanted = {f"socket:[{inode}]" for inode in inodes}
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in wanted:
                        found.append(int(entry.name))
                        break
    return found


def beam_pid(port: int) -> int:
    """The beam.smp that serves AMQP on ``port`` (not any other RabbitMQ node's)."""
    for pid in listener_pids(port):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip() == "beam.smp":
                return pid
    raise RuntimeError(f"no beam.smp listens on port {port}")


def proc_cpu(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def loadavg() -> float:
    with open("/proc/loadavg") as handle:
        return float(handle.read().split()[0])


@dataclass(frozen=True)
class RedisSnapshot:
    commands: int
    cpu_s: float
    by_command: dict[str, int]


def redis_snapshot(url: str) -> RedisSnapshot:
    client = redis.Redis.from_url(url, socket_timeout=10)
    try:
        stats = client.info("stats")
        cpu = client.info("cpu")
        cmdstats = client.info("commandstats")
    finally:
        client.close()
    by_command = {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in cmdstats.items()
        if isinstance(value, dict)
    }
    return RedisSnapshot(
        int(stats["total_commands_processed"]),
        float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
        by_command,
    )


# -- setups --------------------------------------------------------------------------------------


@dataclass
class Setup:
    letter: str
    title: str
    shards: int
    redis_url: str
    amqp_url: str
    masters: list[str]  # Redis URLs whose commands and CPU are ours
    replicas: list[str] = field(default_factory=list)
    amqp_ports: list[int] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)  # more `mta bench` options
    more_env: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        return {
            "MTA_SHARDS": str(self.shards),
            "MTA_REDIS_URL": self.redis_url,
            "MTA_AMQP_URL": self.amqp_url,
            **self.more_env,
        }


def cluster_roles(cluster: RedisCluster) -> tuple[list[str], list[str]]:
    masters = cluster.masters()
    replicas = [n for n in cluster.nodes if n.running and n not in masters]
    return [m.url for m in masters], [r.url for r in replicas]


def no_aof(urls: list[str]) -> None:
    for url in urls:
        client = redis.Redis.from_url(url, socket_timeout=10)
        try:
            client.config_set("appendonly", "no")
        finally:
            client.close()


def amqp_port(url: str) -> int:
    from urllib.parse import urlsplit

    return urlsplit(url).port or 5672


# -- running -------------------------------------------------------------------------------------


@dataclass
class Run:
    setup: str
    index: int
    ok: bool
    load_before: float
    load_after: float
    figures: dict[str, float] = field(default_factory=dict)
    by_command: dict[str, float] = field(default_factory=dict)
    error: str = ""


def run_once(setup: Setup, args: argparse.Namespace, env_base: dict[str, str], index: int) -> Run:
    env = dict(env_base, **setup.env())
    command = [str(ROOT / ".venv/bin/mta"), "bench", "-n", str(args.messages), "-b",
               str(args.batch), "--json", *setup.extra]
    beams = [beam_pid(p) for p in setup.amqp_ports]
    idle0 = [proc_cpu(p) for p in beams]  # the broker's CPU while we send nothing: others'
    time.sleep(args.idle_s)
    background = sum(proc_cpu(p) - c for p, c in zip(beams, idle0, strict=True)) / args.idle_s
    load0 = loadavg()
    wall0 = time.monotonic()
    before = [redis_snapshot(u) for u in setup.masters]
    replicas0 = [redis_snapshot(u).cpu_s for u in setup.replicas]
    beam0 = [proc_cpu(p) for p in beams]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False,
                          timeout=args.timeout)
    beam1 = [proc_cpu(p) for p in beams]
    wall = time.monotonic() - wall0
    after = [redis_snapshot(u) for u in setup.masters]
    replicas1 = [redis_snapshot(u).cpu_s for u in setup.replicas]
    load1 = loadavg()
    run = Run(setup.letter, index, False, load0, load1)
    if done.returncode != 0:
        run.error = f"exit {done.returncode}: {(done.stderr or done.stdout).strip()[-2000:]}"
        return run
    try:
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        run.error = f"no JSON in the output: {done.stdout[-500:]} {done.stderr[-1500:]}"
        return run
    finals = max(1, int(result["finals"]))
    batches = max(1, int(result["config"]["messages"]) // int(result["config"]["batch"]))
    commands = sum(a.commands - b.commands for a, b in zip(after, before, strict=True))
    redis_cpu = sum(a.cpu_s - b.cpu_s for a, b in zip(after, before, strict=True))
    roles: dict[str, float] = {}
    for proc in result["processes"]:
        roles[proc["role"]] = roles.get(proc["role"], 0.0) + float(proc["cpu_s"])
    run.ok = bool(result["complete"])
    if not run.ok:
        run.error = f"incomplete: {result['finals']} finals of {result['messages']}"
    per_bytes = result.get("redis_bytes_per_pending")
    run.figures = {
        "adapter_msg_s": float(result["adapter_ok_msg_s"]),
        "finals_msg_s": float(result["finals_msg_s"]),
        "finals_steady_msg_s": float(result["finals_steady_msg_s"]),
        "worker_us_msg": roles.get("worker", 0.0) / finals * 1e6,
        "reporter_us_msg": roles.get("reporter", 0.0) / finals * 1e6,
        "redis_cmds_msg": commands / finals,
        "redis_us_msg": redis_cpu / finals * 1e6,
        "replicas_us_msg": sum(
            a - b for a, b in zip(replicas1, replicas0, strict=True)
        ) / finals * 1e6,
        "bytes_pending": float("nan") if per_bytes is None else float(per_bytes),
        "rabbit_ms_batch": sum(a - b for a, b in zip(beam1, beam0, strict=True))
        / batches * 1e3,
        "rabbit_net_ms_batch": (sum(a - b for a, b in zip(beam1, beam0, strict=True))
                                - background * wall) / batches * 1e3,
        "rabbit_idle_cpu": background,
        "wall_s": float(result["wall_s"]),
    }
    totals: dict[str, int] = {}
    for a, b in zip(after, before, strict=True):
        for name, calls in a.by_command.items():
            totals[name] = totals.get(name, 0) + calls - b.by_command.get(name, 0)
    run.by_command = {k: v / finals for k, v in totals.items() if v / finals >= 0.001}
    return run


COLUMNS = [
    ("adapter_msg_s", "into adapter msg/s", "{:,.0f}"),
    ("finals_msg_s", "finals msg/s", "{:,.0f}"),
    ("worker_us_msg", "worker CPU µs/msg", "{:.1f}"),
    ("reporter_us_msg", "reporter CPU µs/msg", "{:.1f}"),
    ("redis_cmds_msg", "Redis cmds/msg", "{:.3f}"),
    ("redis_us_msg", "Redis CPU µs/msg", "{:.2f}"),
    ("replicas_us_msg", "replicas CPU µs/msg", "{:.2f}"),
    ("bytes_pending", "bytes/pending msg", "{:.0f}"),
    ("rabbit_ms_batch", "RabbitMQ CPU ms/batch", "{:.2f}"),
    ("rabbit_net_ms_batch", "RabbitMQ CPU ms/batch, less idle rate", "{:.2f}"),
    ("rabbit_idle_cpu", "RabbitMQ idle CPU (cores) before", "{:.3f}"),
    ("wall_s", "bench wall s", "{:.1f}"),
]


def summary(setups: list[Setup], runs: list[Run]) -> str:
    lines = ["", "min / median / max over the complete runs of each setup", ""]
    header = "| figure | " + " | ".join(f"{s.letter}: {s.title}" for s in setups) + " |"
    lines += [header, "|---" * (len(setups) + 1) + "|"]
    for key, name, fmt in COLUMNS:
        cells = []
        for setup in setups:
            values = [r.figures[key] for r in runs if r.setup == setup.letter and r.ok]
            if not values:
                cells.append("-")
                continue
            lo, mid, hi = min(values), statistics.median(values), max(values)
            cells.append(" / ".join(fmt.format(v) for v in (lo, mid, hi)))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    loads = []
    for setup in setups:
        mine = [r for r in runs if r.setup == setup.letter]
        values = [x for r in mine for x in (r.load_before, r.load_after)]
        loads.append(f"{min(values):.2f}-{max(values):.2f}" if values else "-")
    lines.append("| load average (1 min) | " + " | ".join(loads) + " |")
    lines += ["", "Redis commands per message by command (median):"]
    for setup in setups:
        mine = [r for r in runs if r.setup == setup.letter and r.ok]
        names = sorted({n for r in mine for n in r.by_command})
        parts = []
        for name in names:
            value = statistics.median([r.by_command.get(name, 0.0) for r in mine])
            if value >= 0.001:
                parts.append((value, name))
        parts.sort(reverse=True)
        text = ", ".join(f"{n} {v:.3f}" for v, n in parts)
        lines.append(f"  {setup.letter}: {text or '-'}")
    return "\n".join(lines)


def describe(run: Run) -> str:
    head = f"[{run.setup}{run.index}] load {run.load_before:.2f}→{run.load_after:.2f}"
    if not run.figures:
        return f"{head}  FAILED: {run.error}"
    f = run.figures
    return (
        f"{head}  in {f['adapter_msg_s']:,.0f}/s  finals {f['finals_msg_s']:,.0f}/s  "
        f"worker {f['worker_us_msg']:.1f} µs  reporter {f['reporter_us_msg']:.1f} µs  "
        f"redis {f['redis_cmds_msg']:.3f} cmd {f['redis_us_msg']:.2f} µs  "
        f"{f['bytes_pending']:.0f} B/pending  rabbit {f['rabbit_ms_batch']:.2f} "
        f"({f['rabbit_net_ms_batch']:.2f} net) ms/batch"
        + ("" if run.ok else f"  ({run.error})")
    )


# -- main ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def code_of(rev: str | None) -> Iterator[dict[str, str]]:
    """The environment that runs the code of ``rev`` (None: the working tree)."""
    if rev is None:
        yield dict(os.environ)
        return
    tmp = Path(tempfile.mkdtemp(prefix="mta-scaling-code-"))
    try:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "mta", "adapters"],
                                 capture_output=True, check=True).stdout
        tar_path = tmp / "code.tar"
        tar_path.write_bytes(archive)
        with tarfile.open(tar_path) as tar:
            tar.extractall(tmp, filter="data")
        (tmp / "adapters").rename(tmp / "mta" / "adapters")  # installed as mta.adapters
        env = dict(os.environ)
        env["PYTHONPATH"] = str(tmp) + os.pathsep + env.get("PYTHONPATH", "")
        yield env
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--messages", type=int, default=100_000)
    parser.add_argument("-b", "--batch", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3, help="runs of each setup")
    parser.add_argument("--setups", default="abc", help="letters of the setups (docstring)")
    parser.add_argument("--amqp-url", default=SHARED_AMQP, help="RabbitMQ of setups a-c, e, f")
    parser.add_argument("--private-rabbit", action="store_true",
                        help="setups a-c, e, f use a RabbitMQ node of their own (its CPU is ours)")
    parser.add_argument("--shared-redis", action="store_true",
                        help=f"setups a, b, e, f use {SHARED_REDIS} instead of a private node")
    parser.add_argument("--code", metavar="REV", default=None,
                        help="run this git revision's code (default: the working tree)")
    parser.add_argument("--idle-s", type=float, default=5.0,
                        help="seconds the broker's CPU is sampled before each run (others' use)")
    parser.add_argument("--timeout", type=float, default=600.0, help="per run, seconds")
    parser.add_argument("--json-out", type=Path, help="write every run's figures here")
    args = parser.parse_args()
    letters = [c for c in args.setups if c in "abcdef"]
    if not letters:
        parser.error("--setups: give letters among a, b, c, d, e, f")

    with contextlib.ExitStack() as stack:
        single_url = SHARED_REDIS
        if not args.shared_redis and set(letters) & set("abef"):
            single = stack.enter_context(PrivateRedis(extra_args=NO_PERSISTENCE))
            single_url = single.url
        cluster_masters: list[str] = []
        cluster_replicas: list[str] = []
        cluster_url = ""
        if set(letters) & set("cd"):
            cluster = stack.enter_context(RedisCluster())
            cluster_masters, cluster_replicas = cluster_roles(cluster)
            no_aof(cluster_masters + cluster_replicas)
            cluster_url = cluster.url
        rabbit_url = ""
        rabbit_ports: list[int] = []
        if "d" in letters:
            rabbit = stack.enter_context(RabbitCluster())
            rabbit_url = rabbit.url
            rabbit_ports = [n.port for n in rabbit.nodes]
        if args.private_rabbit:
            own = stack.enter_context(PrivateRabbit())
            args.amqp_url = own.url
        shared_port = [amqp_port(args.amqp_url)]
        known = {
            "a": Setup("a", "1 node, MTA_SHARDS=1", 1, single_url, args.amqp_url, [single_url],
                       amqp_ports=shared_port),
            "b": Setup("b", "1 node, MTA_SHARDS=16", 16, single_url, args.amqp_url,
                       [single_url], amqp_ports=shared_port),
            "c": Setup("c", "Redis Cluster 3+3, MTA_SHARDS=16", 16, cluster_url, args.amqp_url,
                       cluster_masters, cluster_replicas, shared_port),
            "d": Setup("d", "Redis Cluster + RabbitMQ cluster", 16, cluster_url, rabbit_url,
                       cluster_masters, cluster_replicas, rabbit_ports),
            "e": Setup("e", "1 node, MTA_SHARDS=16, --push", 16, single_url, args.amqp_url,
                       [single_url], amqp_ports=shared_port, extra=["--push"]),
            "f": Setup("f", "1 node, MTA_SHARDS=16, MTA_REPORT_BATCH=16000", 16, single_url,
                       args.amqp_url, [single_url], amqp_ports=shared_port,
                       more_env={"MTA_REPORT_BATCH": "16000"}),
        }
        setups = [known[c] for c in letters]
        env_base = stack.enter_context(code_of(args.code))
        rev = "working tree"
        if args.code:
            commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.code],
                                    capture_output=True, text=True, check=True).stdout.strip()
            rev = f"{args.code} ({commit})"
        print(f"bench_scaling: {args.messages:,} messages in batches of {args.batch}, "
              f"{args.runs} runs per setup interleaved, code: {rev}, "
              f"{os.cpu_count()} CPUs", flush=True)
        for setup in setups:
            print(f"  {setup.letter}: {setup.title}  MTA_SHARDS={setup.shards} "
                  f"Redis masters {len(setup.masters)} replicas {len(setup.replicas)} "
                  f"RabbitMQ nodes {len(setup.amqp_ports)} {' '.join(setup.extra)}", flush=True)
        runs: list[Run] = []
        for index in range(1, args.runs + 1):
            for setup in setups:
                started = time.monotonic()
                run = run_once(setup, args, env_base, index)
                runs.append(run)
                print(describe(run) + f"  ({time.monotonic() - started:.0f} s)", flush=True)
        print(summary(setups, runs), flush=True)
        if args.json_out:
            args.json_out.write_text(json.dumps(
                {"messages": args.messages, "batch": args.batch, "code": rev,
                 "setups": {s.letter: s.title for s in setups},
                 "runs": [vars(r) for r in runs]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
