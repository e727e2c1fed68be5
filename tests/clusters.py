"""Clusters for tests, on loopback, started by the tests and stopped by PID: a 3-node RabbitMQ
cluster and a Redis Cluster of 3 masters with one replica each.

Built on tests/faults.py's private servers (own temporary directory, spare ports, own process
group killed as a whole); the shared services on 5672 / 6379 are never touched. Use from a test
module::

    pytest_plugins = ["tests.clusters"]     # fixtures and the `cluster` marker

    async def test_x(rabbit_cluster: RabbitCluster, redis_cluster: RedisCluster) -> None:
        rabbit_cluster.url                  # "amqp://...:p0/,amqp://...:p1/,amqp://...:p2/"
        await rabbit_cluster.kill(0)        # kill -9 node 0 (its process group)
        await rabbit_cluster.start(0)       # back on the same ports and data, rejoins
        victim = redis_cluster.masters()[0]
        await redis_cluster.kill(victim)    # kill -9, then wait until its replica is promoted
        await redis_cluster.start(victim)   # back, as a replica of the promoted one

Both fixtures are module-scoped (forming a cluster takes ~20 s for RabbitMQ, ~3 s for Redis);
tests using them get the ``cluster`` marker (``pytest -m "not cluster"`` skips them).

RabbitMQ: three :class:`~tests.faults.PrivateRabbit` nodes (own names, AMQP and distribution
ports, data dirs) with one private epmd (owned by node 0) and the same ``.erlang.cookie`` in each
node's HOME; nodes 1 and 2 ``stop_app`` / ``join_cluster`` node 0 / ``start_app``. Killing a
node whose peers live leaves the cluster (and its quorum queues, majority 2 of 3) running;
restarting it makes it rejoin from its own data dir.

Redis: six :class:`~tests.faults.PrivateRedis` servers in cluster mode (``cluster-enabled``,
their own ``nodes.conf``, AOF), ``cluster-node-timeout`` 2000 ms, joined with ``redis-cli
--cluster create ... --cluster-replicas 1 --cluster-yes``. :meth:`RedisCluster.kill` waits until
a replica has taken over the dead master's slots and the cluster says ``cluster_state:ok``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tests.faults import (
    _CLI_DIST_PORTS,
    Managed,
    PrivateRabbit,
    PrivateRedis,
    PrivateServerError,
)

NODE_TIMEOUT_MS = 2000


# -- RabbitMQ ------------------------------------------------------------------------------------


class RabbitCluster(Managed):
    """``size`` RabbitMQ nodes joined into one cluster (module docstring)."""

    def __init__(
        self, size: int = 3, *, bin_dir: str | None = None, conf: str = "", advanced: str = ""
    ) -> None:
        """``conf`` and ``advanced``: each node's rabbitmq.conf and advanced.config text."""
        first = PrivateRabbit(bin_dir=bin_dir)
        self.nodes = [first] + [
            PrivateRabbit(bin_dir=bin_dir, cookie=first.cookie, epmd_port=first.epmd_port)
            for _ in range(size - 1)
        ]
        taken: set[int] = set()
        for node in self.nodes:  # below the ephemeral range: still free for a restart
            node.port, node.dist_port = _low_port(taken), _low_port(taken)
            (node.dir / "rabbitmq.conf").write_text(conf)
            if advanced:
                (node.dir / "advanced.config").write_text(advanced)
        self.formed_seconds: float | None = None

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        """Every node's URL, comma-separated: an ``MTA_AMQP_URL`` for the whole cluster."""
        return ",".join(self.urls)

    def url_from(self, index: int) -> str:
        """The nodes' URLs starting with node ``index`` (a client that should use that node)."""
        urls = self.urls
        return ",".join(urls[index:] + urls[:index])

    def start_sync(self) -> None:
        """Start every node and join them into one cluster (~20 s)."""
        started = time.monotonic()
        self.nodes[0].start_sync()  # first: it owns the epmd the others register with
        errors: list[BaseException] = []

        def start(node: PrivateRabbit) -> None:
            try:
                node.start_sync()
            except BaseException as exc:  # re-raised below
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(n,)) for n in self.nodes[1:]]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        for node in self.nodes[1:]:  # one at a time: concurrent joins can fail mnesia's start
            node.ctl_sync("stop_app")
            node.ctl_sync("join_cluster", self.nodes[0].nodename, timeout=60)
            node.ctl_sync("start_app", timeout=60)
        self.wait_running(set(range(len(self.nodes))))
        self.formed_seconds = time.monotonic() - started
        print(f"[clusters] rabbit cluster formed in {self.formed_seconds:.1f} s", file=sys.stderr)

    def running_nodes(self, via: int | None = None) -> set[str]:
        """The node names the cluster reports running (asked of a live node)."""
        for node in self.nodes if via is None else [self.nodes[via]]:
            if not node.running:
                continue
            with contextlib.suppress(PrivateServerError, subprocess.TimeoutExpired):
                out = node.ctl_sync("eval", "rabbit_nodes:all_running().", timeout=20)
                return set(re.findall(r"[\w.\-]+@[\w.\-]+", out)) & set(self.nodes_names())
        return set()

    def nodes_names(self) -> list[str]:
        return [node.nodename for node in self.nodes]

    def wait_running(self, indexes: set[int], timeout: float = 60.0) -> None:
        """Wait until exactly the nodes ``indexes`` are running members of the cluster."""
        want = {self.nodes[i].nodename for i in indexes}
        deadline = time.monotonic() + timeout
        while (seen := self.running_nodes()) != want:
            if time.monotonic() > deadline:
                raise PrivateServerError(f"cluster runs {sorted(seen)}, not {sorted(want)}")
            time.sleep(0.5)

    def kill_sync(self, index: int) -> None:
        """kill -9 node ``index`` and wait until the others see it gone."""
        self.nodes[index].kill_sync()
        self.wait_running({i for i, n in enumerate(self.nodes) if n.running})

    def start_node_sync(self, index: int) -> None:
        """Start node ``index`` again (same ports and data); returns once it is back in."""
        self.nodes[index].start_sync()
        self.wait_running({i for i, n in enumerate(self.nodes) if n.running})

    async def kill(self, index: int) -> None:
        await asyncio.to_thread(self.kill_sync, index)

    async def start(self, index: int) -> None:
        await asyncio.to_thread(self.start_node_sync, index)

    def node_of_connection(self, name: str) -> int | None:
        """Which node serves the client connection named ``name`` (its connection_name)."""
        for node in self.nodes:
            if not node.running:
                continue
            with contextlib.suppress(PrivateServerError, subprocess.TimeoutExpired):
                out = node.ctl_sync(
                    "list_connections", "-q", "--no-table-headers", "pid", "client_properties",
                    timeout=20,
                )
                for line in out.splitlines():
                    if f'"{name}"' not in line and f"<<\"{name}\">>" not in line:
                        continue
                    for index, other in enumerate(self.nodes):
                        if line.startswith(f"<{other.nodename}."):
                            return index
                return None
        return None

    def queue_members(self) -> dict[str, int]:
        """How many replicas (members) each queue has, by queue name."""
        node = next(n for n in self.nodes if n.running)
        out = node.ctl_sync("list_queues", "-q", "--no-table-headers", "name", "members")
        found: dict[str, int] = {}
        for line in out.splitlines():
            name, _, members = line.partition("\t")
            found[name.strip()] = len(re.findall(r"[\w.\-]+@[\w.\-]+", members))
        return found

    def close_sync(self) -> None:
        """Kill every node; node 0 last (it owns the epmd). Idempotent."""
        for node in reversed(self.nodes):
            with contextlib.suppress(Exception):
                node.close_sync()


# -- Redis Cluster -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterNode:
    """One line of CLUSTER NODES."""

    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str
    connected: bool
    slots: int

    @property
    def master(self) -> bool:
        return "master" in self.flags and "fail" not in self.flags and "fail?" not in self.flags


def _parse_nodes(text: str) -> list[ClusterNode]:
    nodes = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        address = parts[1].split("@")[0]
        slots = 0
        for item in parts[8:]:
            if item.startswith("["):
                continue  # a slot being migrated
            low, _, high = item.partition("-")
            slots += int(high or low) - int(low) + 1
        nodes.append(
            ClusterNode(
                node_id=parts[0],
                port=int(address.rsplit(":", 1)[1]),
                flags=frozenset(parts[2].split(",")),
                master_id=parts[3],
                connected=parts[7] == "connected",
                slots=slots,
            )
        )
    return nodes


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (outgoing connections take those)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _low_port(taken: set[int]) -> int:
    """A free loopback port below the ephemeral range (see :func:`_bus_port_pair`)."""
    rng = random.Random()
    while True:
        port = rng.randrange(10000, max(_ephemeral_low(), 10001))
        if port not in taken and port not in _CLI_DIST_PORTS and _bindable(port):
            taken.add(port)
            return port


def _bus_port_pair(taken: set[int]) -> int:
    """A free loopback port P whose cluster bus port P + 10000 is free too, both below the
    ephemeral range: a node restarted after kill -9 finds them still free (a port in that
    range may meanwhile be any outgoing connection's local port)."""
    rng = random.Random()
    high = min(_ephemeral_low(), 65536) - 10000
    while True:
        port = rng.randrange(10000, max(high, 10001))
        if {port, port + 10000} & taken or port + 10000 in _CLI_DIST_PORTS:
            continue
        if _bindable(port) and _bindable(port + 10000):
            taken.update({port, port + 10000})
            return port


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class RedisCluster(Managed):
    """``masters`` Redis masters with ``replicas`` replicas each, in one Redis Cluster."""

    def __init__(self, masters: int = 3, replicas: int = 1) -> None:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise FileNotFoundError("redis-cli")
        self.cli = cli
        self.replicas = replicas
        # fmt: off
        args = (
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
        )
        # fmt: on
        self.nodes = [PrivateRedis(extra_args=args) for _ in range(masters * (1 + replicas))]
        taken: set[int] = set()
        for node in self.nodes:  # the cluster bus listens on port + 10000
            node.port = _bus_port_pair(taken)
        self.formed_seconds: float | None = None
        self.last_failover_seconds: float | None = None

    @property
    def url(self) -> str:
        """A URL of one (live) node: a cluster client finds the others from it."""
        return next(n.url for n in self.nodes if n.running)

    def _client(self, node: PrivateRedis) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=5)

    def _ask(self, node: PrivateRedis, *command: str) -> str:
        client = self._client(node)
        try:
            answer = client.execute_command(*command)
        finally:
            client.close()
        return answer.decode() if isinstance(answer, bytes) else str(answer)

    def start_sync(self) -> None:
        started = time.monotonic()
        for node in self.nodes:
            node.start_sync()
        done = subprocess.run(
            [
                self.cli, "--cluster", "create",
                *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-replicas", str(self.replicas), "--cluster-yes",
            ],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise PrivateServerError(
                f"redis-cli --cluster create exited {done.returncode}: "
                f"{done.stdout.decode(errors='replace')}{done.stderr.decode(errors='replace')}"
            )
        self.wait_ok()
        self.formed_seconds = time.monotonic() - started
        print(f"[clusters] redis cluster formed in {self.formed_seconds:.1f} s", file=sys.stderr)

    def view(self) -> list[ClusterNode]:
        """CLUSTER NODES as a live node sees it."""
        for node in self.nodes:
            if node.running:
                with contextlib.suppress(redis.RedisError):
                    return _parse_nodes(self._ask(node, "CLUSTER", "NODES"))
        raise PrivateServerError("no Redis Cluster node answers")

    def node_at(self, port: int) -> PrivateRedis:
        return next(n for n in self.nodes if n.port == port)

    def masters(self) -> list[PrivateRedis]:
        """The live nodes that are masters serving slots now."""
        return [self.node_at(n.port) for n in self.view() if n.master and n.slots]

    def replicas_of(self, master: PrivateRedis) -> list[PrivateRedis]:
        view = self.view()
        master_id = next(n.node_id for n in view if n.port == master.port)
        return [self.node_at(n.port) for n in view if n.master_id == master_id]

    def _ok(self, replicated: bool) -> bool:
        """Every live node says cluster_state:ok and sees every other live node connected, and
        live masters serve all 16384 slots; ``replicated``: each also has a live replica."""
        live = [n for n in self.nodes if n.running]
        ports = {n.port for n in live}
        try:
            for node in live:
                if "cluster_state:ok" not in self._ask(node, "CLUSTER", "INFO"):
                    return False
            for node in live:
                view = _parse_nodes(self._ask(node, "CLUSTER", "NODES"))
                for entry in view:
                    if entry.port in ports and "myself" not in entry.flags and (
                        not entry.connected or entry.flags & {"fail", "fail?"}
                    ):
                        return False
                masters = [e for e in view if e.master and e.slots and e.port in ports]
                if sum(e.slots for e in masters) != 16384:
                    return False
                if replicated and any(
                    not any(r.master_id == m.node_id and r.port in ports for r in view)
                    for m in masters
                ):
                    return False
            for node in live:  # a replica takes over only once it has synced
                client = self._client(node)
                try:
                    info = client.info("replication")
                finally:
                    client.close()
                if info.get("role") == "slave" and info.get("master_link_status") != "up":
                    return False
        except redis.RedisError:
            return False
        return True

    def wait_ok(self, *, replicated: bool = True, timeout: float = 60.0) -> None:
        """Wait until :meth:`_ok` (the cluster serves every slot from live masters)."""
        deadline = time.monotonic() + timeout
        while not self._ok(replicated):
            if time.monotonic() > deadline:
                raise PrivateServerError(f"redis cluster not ok: {self.view()}")
            time.sleep(0.1)

    def kill_sync(self, node: PrivateRedis) -> None:
        """kill -9 ``node``; when it was a master, wait until a replica took its slots."""
        was_master = node in self.masters()
        started = time.monotonic()
        node.kill_sync()
        if was_master:
            self.wait_ok(replicated=False, timeout=60)
            self.last_failover_seconds = time.monotonic() - started
            print(
                f"[clusters] redis master {node.port} replaced in "
                f"{self.last_failover_seconds:.1f} s",
                file=sys.stderr,
            )

    def start_node_sync(self, node: PrivateRedis) -> None:
        """Start ``node`` again (same port, nodes.conf and AOF); it rejoins as a replica."""
        node.start_sync()
        self.wait_ok(timeout=60)

    async def kill(self, node: PrivateRedis) -> None:
        await asyncio.to_thread(self.kill_sync, node)

    async def start(self, node: PrivateRedis) -> None:
        await asyncio.to_thread(self.start_node_sync, node)

    def close_sync(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.close_sync()


# -- pytest glue -----------------------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "cluster: starts a private RabbitMQ cluster or Redis Cluster (tests/clusters.py)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if {"rabbit_cluster", "redis_cluster"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.cluster)


def _need(*binaries: str) -> None:
    for binary in binaries:
        if shutil.which(binary) is None and not (
            binary == "rabbitmq-server" and Path("/usr/lib/rabbitmq/bin/rabbitmq-server").exists()
        ):
            pytest.skip(f"{binary} is not installed")


DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "rabbitmq"


def deploy_config() -> tuple[str, str]:
    """(rabbitmq.conf, advanced.config) of a cluster node as deploy/rabbitmq has them: the
    shipped rabbitmq.conf and cluster.conf, but for its peer discovery (the tests join the
    nodes with rabbitmqctl; their names are not rabbitmq-0..2)."""
    cluster = [
        line
        for line in (DEPLOY / "cluster.conf").read_text().splitlines()
        if not line.startswith("cluster_formation.")
    ]
    conf = (DEPLOY / "rabbitmq.conf").read_text() + "\n" + "\n".join(cluster) + "\n"
    return conf, (DEPLOY / "advanced.config").read_text()


@pytest.fixture(scope="module")
def rabbit_cluster() -> Iterator[RabbitCluster]:
    """A 3-node RabbitMQ cluster configured as deploy/rabbitmq says, for the module (~20 s to
    form); killed at its end."""
    _need("rabbitmq-server", "epmd")
    conf, advanced = deploy_config()
    with RabbitCluster(conf=conf, advanced=advanced) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisCluster]:
    """A Redis Cluster (3 masters, 1 replica each) for the module; killed at its end."""
    _need("redis-server", "redis-cli")
    with RedisCluster() as cluster:
        yield cluster
