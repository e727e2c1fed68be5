"""Fault injection for tests: private Redis and RabbitMQ servers a test may kill -9 and restart.

The shared services on 127.0.0.1:5672 / :6379 are never touched: each private server runs from
its own temporary directory, on spare loopback ports, under a name no one else uses, as a child
process in a new session (process group) that this module owns and kills as a whole.

Use from a test module::

    pytest_plugins = ["tests.faults"]      # the fixtures, and the `faults` marker (see below)

    async def test_x(private_rabbit: PrivateRabbit, private_redis: PrivateRedis) -> None:
        conn = await aio_pika.connect_robust(private_rabbit.url)
        await private_rabbit.kill()        # SIGKILL to the whole process group, waits until gone
        await private_rabbit.start()       # same ports, same data dir; returns once it answers
        ...

Tests that use ``private_redis`` or ``private_rabbit`` get the ``faults`` marker automatically
(``pytest -m "not faults"`` skips them). The marker is registered by this plugin, which a test
module loads only after its body ran, so do not write ``pytest.mark.faults`` at import time in
a module: pytest would warn that the mark is unknown.

Every operation exists twice: ``await x.start()`` / ``kill()`` / ``stop()`` / ``restart()`` for
async tests (the blocking work runs in a thread, so the event loop keeps serving the clients under
test), and ``start_sync()`` / ``kill_sync()`` / ``stop_sync()`` / ``close_sync()`` for sync code
such as fixtures. Both classes are also (sync) context managers: enter starts, exit closes (kills
the processes and removes the temporary directory).

PrivateRedis: ``redis-server --appendonly yes --appendfsync always --save ""`` so whatever was
acknowledged before a kill -9 is there after the restart.

PrivateRabbit, quirks found by running RabbitMQ 3.10 (Debian package) here:

* ``/usr/sbin/rabbitmq-server`` and ``/usr/sbin/rabbitmqctl`` are Debian wrappers that, run as
  root, ``su rabbitmq`` (which resets HOME, so our cookie is not used), ``cd /var/lib/rabbitmq``
  and send the server's output to ``/var/log/rabbitmq/startup_log`` (the shared node's log). We
  run the real scripts in ``/usr/lib/rabbitmq/bin`` instead (override: ``MTA_TEST_RABBITMQ_BIN``,
  e.g. the ``sbin`` of a generic-unix 4.x install). Running them as root is fine once HOME is set.
* ``/etc/rabbitmq/rabbitmq-env.conf`` is sourced by every script and sets ``NODENAME`` and
  ``ERL_FLAGS`` for the shared node: ``RABBITMQ_CONF_ENV_FILE`` points at an empty file of ours,
  and inherited ``RABBITMQ_*`` / ``ERL_*`` variables are dropped from the child's environment.
* Run in the foreground (no ``-detached``) the script stays the process-group leader and forks
  ``erl`` (beam.smp) into the same group; ``erl_child_setup`` and the port programs it spawns
  (inet_gethost, the disk monitor's sh) sit in sessions of their own but exit as soon as beam
  dies. So SIGKILL to the group is a kill -9 of the node; SIGTERM to the script is a clean stop
  (it traps TERM and stops beam; ~2 s). ``RABBITMQ_ALLOW_INPUT`` and ``RABBITMQ_SERVER_START_ARGS``
  are not needed.
* epmd: the node gets its own ``epmd -port N -address 127.0.0.1`` (``ERL_EPMD_PORT=N`` for the
  node and for rabbitmqctl) and ``-start_epmd false``, so it neither depends on nor registers
  with the system epmd on 4369 (which serves the shared node), and never leaves a stray
  ``epmd -daemon`` behind. Sharing the system epmd also works (names differ), but a private one
  keeps the shared node's ``epmd -names`` untouched and makes teardown complete. The private epmd
  lives in a group of its own and survives ``kill()``; only ``close_sync()`` ends it.
* The distribution listener binds 0.0.0.0 unless told otherwise:
  ``-kernel inet_dist_use_interface {127,0,0,1}`` in ``RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS``.
* Ports are picked by binding port 0, skipping 35672-35682 (the CLI tools' distribution ports).
* RabbitMQ before 3.13 (Ra before rabbitmq/ra#443) writes its quorum-queue name registry
  (``quorum/<node>/names.dets``) to disk lazily (dets auto_save, 500 ms after it goes idle) and
  never syncs it: a quorum queue declared about a second before a kill -9 came back empty here,
  as a new Ra server with a new UID that knows nothing of the old one's log. 4.x syncs it, so
  on older brokers ``kill()`` first runs ``dets:sync`` on that registry via ``rabbitmqctl eval``
  (~0.5 s): tests see 4.x crash behaviour, not a 3.10 bug. The broker version comes from the
  Connection.Start properties.
* Ready means: the AMQP port answers a protocol header with Connection.Start, then
  ``rabbitmqctl -n NODE await_startup`` succeeds (which also proves the cookie/HOME setup).
  Measured here: a first start takes ~5 s, a restart after kill -9 ~5 s, a clean stop ~2 s.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

import pytest

_CLI_DIST_PORTS = range(35672, 35683)
_SYNC_RA_NAMES = (
    "[dets:sync(T) || T <- dets:all(),"
    " lists:member(T, [ra_directory_reverse, ra_coordination_directory_reverse])]."
)
_names = itertools.count()
_live: set[_Private] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port not in _CLI_DIST_PORTS:
            return port


def _group_members(pgid: int) -> list[int]:
    """PIDs in process group `pgid` that are not zombies."""
    pids: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may contain spaces and parentheses
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == pgid:
            pids.append(int(entry))
    return pids


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class PrivateServerError(RuntimeError):
    """A private server would not start (the message ends with its log's tail)."""


class Managed:
    """A (sync) context manager over ``start_sync`` / ``close_sync``: enter starts (closing
    again if that fails), exit closes."""

    def start_sync(self) -> None:
        raise NotImplementedError

    def close_sync(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start_sync()
        except BaseException:
            self.close_sync()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close_sync()


class _Private(Managed):
    """One server process (and its process group) living in a private temporary directory."""

    kind = "server"

    def __init__(self, *, ready_timeout: float = 30.0) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"mta-faults-{self.kind}-"))
        self.log = self.dir / f"{self.kind}.log"
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.last_start_seconds: float | None = None
        self.start_count = 0
        self._closed = False
        _live.add(self)

    # -- to be provided by subclasses ----------------------------------------------------------

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str]:
        return dict(os.environ)

    def _wait_ready(self, deadline: float) -> None:
        raise NotImplementedError

    # -- process handling ----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _spawn(self, argv: list[str], env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            return subprocess.Popen(
                argv,
                cwd=self.dir,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own session and process group: we kill the group
            )

    def _check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise PrivateServerError(
                f"{self.kind} exited with {self.proc.returncode} while starting; "
                f"log {self.log}:\n{_tail(self.log)}"
            )

    def start_sync(self) -> None:
        """Start (or start again, same ports and data) and return once it serves requests."""
        if self._closed:
            raise RuntimeError(f"{self.kind} is closed")
        if self.running:
            raise RuntimeError(f"{self.kind} is already running")
        started = time.monotonic()
        self.proc = self._spawn(self._argv(), self._env(), self.log)
        try:
            self._wait_ready(started + self.ready_timeout)
        except BaseException:
            self._hard_kill()
            raise
        self.last_start_seconds = time.monotonic() - started
        self.start_count += 1
        print(
            f"[faults] {self.kind} start #{self.start_count} took {self.last_start_seconds:.2f} s",
            file=sys.stderr,
        )

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def _wait_group_gone(self, timeout: float) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout)
        while _group_members(self.proc.pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def _before_kill(self) -> None:
        """Hook run by kill_sync() while the server still runs."""

    def kill_sync(self) -> None:
        """SIGKILL the whole process group (kill -9) and wait until every member is gone."""
        if self.running:
            self._before_kill()
        self._hard_kill()

    def _hard_kill(self) -> None:
        if self.proc is None:
            return
        self._signal_group(signal.SIGKILL)
        if not self._wait_group_gone(10.0):
            raise RuntimeError(f"{self.kind} process group {self.proc.pid} survived SIGKILL")
        self.proc = None

    def stop_sync(self, timeout: float = 30.0) -> None:
        """Clean shutdown (SIGTERM to the leader), then SIGKILL if it takes longer than timeout."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        if not self._wait_group_gone(timeout):
            self._hard_kill()
        self.proc = None

    def close_sync(self) -> None:
        """Kill everything this object started and remove its directory. Idempotent."""
        if self._closed:
            return
        try:
            self._hard_kill()
        finally:
            self._closed = True
            _live.discard(self)
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- async variants: the blocking parts run in a thread ------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self.start_sync)

    async def kill(self) -> None:
        await asyncio.to_thread(self.kill_sync)

    async def stop(self, timeout: float = 30.0) -> None:
        await asyncio.to_thread(self.stop_sync, timeout)

    async def restart(self, *, hard: bool = True) -> None:
        """kill -9 (hard) or stop cleanly, then start again on the same ports and data."""
        await (self.kill() if hard else self.stop())
        await self.start()



class PrivateRedis(_Private):
    """redis-server on a spare loopback port with an fsync-always AOF in a temporary directory."""

    kind = "redis"

    def __init__(
        self,
        *,
        redis_server: str = "redis-server",
        ready_timeout: float = 10.0,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        """``extra_args`` are added to the command line (e.g. the cluster-mode options of a
        Redis Cluster node, tests/clusters.py)."""
        binary = shutil.which(redis_server)
        if binary is None:
            raise FileNotFoundError(redis_server)
        self.binary = binary
        self.extra_args = extra_args
        self.port = free_port()
        super().__init__(ready_timeout=ready_timeout)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _argv(self) -> list[str]:
        # fmt: off
        return [
            self.binary,
            "--appendonly", "yes", "--appendfsync", "always", "--save", "",
            "--dir", str(self.dir), "--bind", "127.0.0.1", "--port", str(self.port),
            "--daemonize", "no", *self.extra_args,
        ]
        # fmt: on

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def _wait_ready(self, deadline: float) -> None:
        # While loading the AOF redis answers -LOADING, which is not +PONG: keep waiting.
        while not self._ping():
            self._check_alive()
            if time.monotonic() > deadline:
                raise PrivateServerError(f"redis not ready on {self.port}:\n{_tail(self.log)}")
            time.sleep(0.02)


class PrivateRabbit(_Private):
    """A RabbitMQ node of our own: own name, ports, epmd, cookie, data, logs and config."""

    kind = "rabbit"

    def __init__(
        self,
        *,
        bin_dir: str | None = None,
        ready_timeout: float = 60.0,
        cookie: str | None = None,
        epmd_port: int | None = None,
    ) -> None:
        """``cookie`` and ``epmd_port`` are for nodes of one cluster (tests/clusters.py): the
        same Erlang cookie, and the epmd of another node (which that node owns: this one
        neither starts nor ends it). By default each node has its own of both."""
        found = bin_dir or os.environ.get("MTA_TEST_RABBITMQ_BIN")
        if found is None:
            if Path("/usr/lib/rabbitmq/bin/rabbitmq-server").exists():
                found = "/usr/lib/rabbitmq/bin"
            else:
                script = shutil.which("rabbitmq-server")
                if script is None:
                    raise FileNotFoundError("rabbitmq-server")
                found = str(Path(script).resolve().parent)
        self.bin_dir = Path(found)
        epmd = shutil.which("epmd")
        if epmd is None:
            raise FileNotFoundError("epmd")
        self.epmd_binary = epmd
        self.nodename = f"mtatest{os.getpid()}n{next(_names)}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        self.own_epmd = epmd_port is None
        self.epmd_port = free_port() if epmd_port is None else epmd_port
        self.epmd: subprocess.Popen[bytes] | None = None
        self.version: tuple[int, ...] | None = None  # the broker's, read from Connection.Start
        super().__init__(ready_timeout=ready_timeout)
        self.cookie = cookie or secrets.token_hex(16)
        cookie_file = self.dir / ".erlang.cookie"
        cookie_file.write_text(self.cookie)
        cookie_file.chmod(0o400)
        (self.dir / "rabbitmq-env.conf").touch()
        (self.dir / "rabbitmq.conf").touch()
        (self.dir / "enabled_plugins").touch()

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def _env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("RABBITMQ_", "ERL_")) and k not in ("CONF_ENV_FILE", "NODENAME")
        }
        d = self.dir
        env.update(
            HOME=str(d),
            ERL_EPMD_PORT=str(self.epmd_port),
            RABBITMQ_CONF_ENV_FILE=str(d / "rabbitmq-env.conf"),
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(d / "mnesia"),
            RABBITMQ_LOG_BASE=str(d / "log"),
            RABBITMQ_CONFIG_FILE=str(d / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(d / "advanced.config"),  # absent on purpose
            RABBITMQ_ENABLED_PLUGINS_FILE=str(d / "enabled_plugins"),
            RABBITMQ_PID_FILE=str(d / "rabbit.pid"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=(
                "-kernel inet_dist_use_interface {127,0,0,1} -start_epmd false"
            ),
        )
        return env

    def _argv(self) -> list[str]:
        return [str(self.bin_dir / "rabbitmq-server")]

    def _ensure_epmd(self) -> None:
        if not self.own_epmd:
            if not _port_open(self.epmd_port):
                raise PrivateServerError(f"the shared epmd on {self.epmd_port} does not answer")
            return
        if self.epmd is not None and self.epmd.poll() is None:
            return
        self.epmd = self._spawn(
            [self.epmd_binary, "-port", str(self.epmd_port), "-address", "127.0.0.1"],
            self._env(),
            self.dir / "epmd.log",
        )
        deadline = time.monotonic() + 5.0
        while not _port_open(self.epmd_port):
            if self.epmd.poll() is not None or time.monotonic() > deadline:
                raise PrivateServerError(f"epmd: {_tail(self.dir / 'epmd.log')}")
            time.sleep(0.02)

    def start_sync(self) -> None:
        if not self._closed and not self.running:
            self._ensure_epmd()
        super().start_sync()

    def ctl_sync(self, *args: str, timeout: float = 30.0) -> str:
        """Run `rabbitmqctl -n NODE ARGS...` against this node; its stdout (raises on failure)."""
        done = subprocess.run(
            [str(self.bin_dir / "rabbitmqctl"), "-n", self.nodename, *args],
            cwd=self.dir,
            env=self._env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise PrivateServerError(
                f"rabbitmqctl {' '.join(args)} exited {done.returncode}: "
                f"{done.stdout.decode(errors='replace')}{done.stderr.decode(errors='replace')}"
            )
        return done.stdout.decode(errors="replace")

    async def ctl(self, *args: str, timeout: float = 30.0) -> str:
        return await asyncio.to_thread(self.ctl_sync, *args, timeout=timeout)

    def _amqp_answers(self) -> bool:
        """True when the node answers an AMQP 0-9-1 protocol header with Connection.Start
        (whose server properties also give us the broker's version)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2.0) as s:
                s.sendall(b"AMQP\x00\x00\x09\x01")
                frame = b""
                while len(frame) < 7 or len(frame) < 8 + int.from_bytes(frame[3:7], "big"):
                    chunk = s.recv(4096)
                    if not chunk:
                        return False
                    frame += chunk
        except OSError:
            return False
        # frame type 1 (method), channel 0, then class 10 (connection) method 10 (start)
        if frame[0] != 1 or frame[7:11] != b"\x00\x0a\x00\x0a":
            return False
        found = re.search(rb"\x07versionS(.{4})", frame, re.DOTALL)
        if found:
            n = int.from_bytes(found.group(1), "big")
            text = frame[found.end() : found.end() + n].decode("ascii", "replace")
            self.version = tuple(int(x) for x in re.findall(r"\d+", text)[:3])
        return True

    def _wait_ready(self, deadline: float) -> None:
        while not self._amqp_answers():
            self._check_alive()
            if time.monotonic() > deadline:
                raise PrivateServerError(f"rabbit not ready on {self.port}:\n{_tail(self.log)}")
            time.sleep(0.1)
        left = max(5.0, deadline - time.monotonic())
        self.ctl_sync("await_startup", "--timeout", str(int(left)), timeout=left + 5.0)

    def _before_kill(self) -> None:
        """Before 3.13, sync the quorum-queue name registry the way 4.x does (module docstring):
        otherwise a quorum queue declared just before the kill comes back empty."""
        if self.version is None or self.version >= (3, 13):
            return
        with contextlib.suppress(PrivateServerError, subprocess.TimeoutExpired):
            self.ctl_sync("eval", _SYNC_RA_NAMES, timeout=10.0)

    def close_sync(self) -> None:
        try:
            super().close_sync()
        finally:
            if self.epmd is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.epmd.pid, signal.SIGKILL)
                self.epmd.wait()
                self.epmd = None


@atexit.register
def _kill_leftovers() -> None:
    """Last resort when a test run ends without its fixtures' teardown (e.g. KeyboardInterrupt)."""
    for server in list(_live):
        with contextlib.suppress(Exception):
            server.close_sync()


# -- pytest glue -----------------------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "faults: starts private Redis/RabbitMQ servers and kills them (tests/faults.py)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if {"private_redis", "private_rabbit"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.faults)


def _need(binary: str) -> None:
    if shutil.which(binary) is None and not (
        binary == "rabbitmq-server" and Path("/usr/lib/rabbitmq/bin/rabbitmq-server").exists()
    ):
        pytest.skip(f"{binary} is not installed")


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A started PrivateRedis for one test; killed and its directory removed afterwards."""
    _need("redis-server")
    with PrivateRedis() as server:
        yield server


@pytest.fixture
def private_rabbit() -> Iterator[PrivateRabbit]:
    """A started PrivateRabbit for one test (~5 s); killed and its directory removed afterwards."""
    _need("rabbitmq-server")
    _need("epmd")
    with PrivateRabbit() as server:
        yield server
