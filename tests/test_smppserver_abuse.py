"""``mta smpp-server`` under abuse: a real server process on 127.0.0.1 (real RabbitMQ and Redis,
a fresh prefix per test), abusive peers on raw sockets with our codec, and beside each abuse a
good client whose p99 submit latency (200 submits, each answered after the broker confirm)
must stay under 50 ms. Then the abuse controls' decisions on their own, without sockets."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mta.smpp import pdu as P
from mta.smpp.coding import ConcatInfo
from mta.smpp.session import Session
from tests.conftest import AMQP_URL, REDIS_URL, Env, mta_command, sim_accounts

S = P.CommandStatus

CLIENTS = """
[[smpp_client]]
system_id = "acme"
password = "secret1"
account_id = 12
throughput = 1000

[[smpp_client]]
system_id = "otp"
password = "otp-pw"
account_id = 13
throughput = 1000

[[smpp_client]]
system_id = "flood"
password = "flood-pw"
account_id = 14
throughput = 1000000
"""
PASSWORDS = {"acme": "secret1", "otp": "otp-pw", "flood": "flood-pw"}
P99_LIMIT_S = 0.050
ROOT = Path(__file__).resolve().parents[1]


# --- the server process ------------------------------------------------------------------


@dataclass
class Server:
    port: int
    proc: asyncio.subprocess.Process
    log: Path

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")  # pragma: no cover

    def log_lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def start(env: Env) -> AsyncIterator[Callable[..., Awaitable[Server]]]:
    """Start ``mta smpp-server`` with limits given as keywords (passed as its flags,
    ``bind_timeout_s=1`` → ``--bind-timeout-s 1``)."""
    env.accounts(sim_accounts() + CLIENTS)
    started: list[Server] = []

    async def run(**limits: Any) -> Server:
        port = _free_port()
        environ = dict(
            os.environ,
            MTA_PREFIX=env.prefix,
            MTA_ACCOUNTS=env.settings.accounts,
            MTA_AMQP_URL=AMQP_URL,
            MTA_REDIS_URL=REDIS_URL,
            MTA_SMPP_LISTEN=f"127.0.0.1:{port}",
        )
        flags = [x for k, v in limits.items() for x in (f"--{k.replace('_', '-')}", str(v))]
        log = env.tmp / f"smpp-server-{port}.log"
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                *mta_command("smpp-server", *flags), env=environ, stderr=out
            )
        server = Server(port, proc, log)
        started.append(server)
        deadline = time.monotonic() + 20
        while "listening on" not in log.read_text(errors="replace"):
            assert proc.returncode is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "mta smpp-server did not start"
            await asyncio.sleep(0.05)
        return server

    yield run
    for server in started:
        if server.proc.returncode is None:
            server.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(server.proc.wait(), 20)
            except TimeoutError:  # pragma: no cover
                server.proc.kill()
                await server.proc.wait()
    assert env.channel is not None
    await env.channel.queue_delete(env.topology.smpp_receipts_queue)


# --- clients ------------------------------------------------------------------------------


class Raw:
    """A peer on a raw socket speaking our codec; it does only what the test says."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.seq = 0

    @classmethod
    async def open(cls, port: int, ip: str = "127.0.0.1", rcvbuf: int = 0) -> Raw:
        sock = socket.socket()
        sock.setblocking(False)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((ip, 0))
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
        return cls(reader, writer)

    def frame(self, pdu: P.Pdu) -> bytes:
        self.seq += 1
        pdu.sequence = self.seq
        return P.encode(pdu)

    async def send(self, *pdus: P.Pdu) -> None:
        self.writer.write(b"".join(self.frame(p) for p in pdus))
        await self.writer.drain()

    async def read(self, timeout: float = 10.0) -> P.Pdu:
        header = await asyncio.wait_for(self.reader.readexactly(16), timeout)
        length = int.from_bytes(header[:4], "big")
        body = await asyncio.wait_for(self.reader.readexactly(length - 16), timeout)
        return P.decode(header + body)

    async def bind(self, system_id: str, password: str) -> int | None:
        """The bind_resp status, or None when the server closed without answering."""
        try:
            await self.send(P.BindTransceiver(system_id=system_id, password=password))
            return (await self.read(15.0)).status
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

    async def closed_within(self, seconds: float) -> bool:
        """True when the server closes the connection within *seconds* (reads what is left)."""
        try:
            async with asyncio.timeout(seconds):
                while await self.reader.read(65536):
                    pass
            return True
        except TimeoutError:
            return False
        except ConnectionError:
            return True

    def close(self) -> None:
        self.writer.close()


class Good:
    """A well-behaved client (our Session, one submit at a time) bound in a process of its own,
    so the abuse this test process generates does not distort its measurement."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def bind(cls, port: int, system_id: str = "otp", ip: str = "127.0.0.9") -> Good:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "import asyncio, sys; from tests.test_smppserver_abuse import good_client; "
            "asyncio.run(good_client(*sys.argv[1:]))",
            str(port),
            system_id,
            ip,
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        good = cls(proc)
        assert await good._line() == "bound"
        return good

    async def _line(self) -> str:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 60)
        assert line, "the good client died"
        return line.decode().strip()

    async def p99(self, n: int = 200) -> float:
        """The 99th percentile of *n* submit_sm → confirmed submit_sm_resp round trips."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"p99 {n}\n".encode())
        answer = await self._line()
        assert answer.startswith("p99 "), answer
        return float(answer.split()[1])

    async def submit_ok(self) -> bool:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"one\n")
        return await self._line() == "ok"

    async def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        await asyncio.wait_for(self.proc.wait(), 20)


async def good_client(port: str, system_id: str, ip: str) -> None:
    """The good client's process: bind, then on each stdin line ``p99 N`` submit N messages one
    at a time and print their p99 latency; ``one``: one submit, prints ok."""
    raw = await Raw.open(int(port), ip)
    session = Session(raw.reader, raw.writer, window=1, enquire_link_s=0)
    session.start()
    bind = P.BindTransceiver(system_id=system_id, password=PASSWORDS[system_id])
    resp = await session.request(bind)
    print("bound" if resp.status == S.ESME_ROK else f"bind {resp.status}", flush=True)
    loop = asyncio.get_running_loop()
    while line := (await loop.run_in_executor(None, sys.stdin.readline)).split():
        if line[0] == "one":
            resp = await session.request(_submit(b"one more"), 10.0)
            print("ok" if resp.status == S.ESME_ROK else f"status {resp.status}", flush=True)
            continue
        latencies = []
        for i in range(int(line[1])):
            started = time.perf_counter()
            resp = await session.request(_submit(f"good {i}".encode()), 10.0)
            latencies.append(time.perf_counter() - started)
            if resp.status != S.ESME_ROK:
                print(f"status {resp.status}", flush=True)
                break
        else:
            latencies.sort()
            print(f"p99 {latencies[int(len(latencies) * 0.99) - 1]}", flush=True)
    await session.close()


def _submit(text: bytes, *, source: str = "ACME", esm_class: int = 0) -> P.SubmitSm:
    return P.SubmitSm(
        source_addr=source,
        destination_addr="905332141354",
        esm_class=esm_class,
        short_message=text,
    )


def _part(ref: int, total: int, seq: int, text: bytes, source: str = "ACME") -> P.SubmitSm:
    """A long message's part with a 16-bit-reference UDH."""
    udh = bytes([6, 8, 4, ref >> 8, ref & 0xFF, total, seq])
    return _submit(udh + text, source=source, esm_class=P.EsmClass.UDHI)


async def _bound(port: int, system_id: str, ip: str = "127.0.0.1") -> Raw:
    raw = await Raw.open(port, ip)
    assert await raw.bind(system_id, PASSWORDS[system_id]) == S.ESME_ROK
    return raw


async def _responses(raw: Raw, want: int) -> list[tuple[int, bytes]]:
    """(command_status, body) of the next *want* PDUs, headers only parsed (a cheap reader, so
    the test process does not slow the good client's measurement down)."""
    got: list[tuple[int, bytes]] = []
    buffer = bytearray()
    while len(got) < want:
        chunk = await asyncio.wait_for(raw.reader.read(1 << 16), 30.0)
        if not chunk:
            raise ConnectionError(f"closed by the server after {len(got)} responses")
        buffer += chunk
        pos = 0
        while len(buffer) - pos >= 16:
            length = int.from_bytes(buffer[pos : pos + 4], "big")
            if len(buffer) - pos < length:
                break
            status = int.from_bytes(buffer[pos + 8 : pos + 12], "big")
            got.append((status, bytes(buffer[pos + 16 : pos + length])))
            pos += length
        del buffer[:pos]
    return got


async def _send_frames(raw: Raw, frames: list[bytes], per_write: int = 500) -> None:
    for at in range(0, len(frames), per_write):
        raw.writer.write(b"".join(frames[at : at + per_write]))
        await raw.writer.drain()


# --- binds ----------------------------------------------------------------------------------


async def test_parallel_wrong_binds_are_limited_and_all_fail_alike(start: Any) -> None:
    server = await start(max_connections_per_ip=1000)
    good = await Good.bind(server.port, "acme", ip="127.0.0.8")  # acme's own client, bound first

    async def attempt(ip: str, system_id: str, password: str) -> int | None:
        raw = await Raw.open(server.port, ip)
        try:
            return await raw.bind(system_id, password)
        finally:
            raw.close()

    # 299 guesses from one IP started at once: unknown system_ids and wrong passwords of acme
    wave = [
        asyncio.create_task(attempt("127.0.0.1", "acme" if i % 2 else f"nobody{i}", f"g{i}"))
        for i in range(299)
    ]
    p99 = await good.p99()
    await asyncio.sleep(0.2)
    # the right password now, from the same IP: over the limit, so it is not even checked
    right = await attempt("127.0.0.1", "acme", "secret1")
    statuses = await asyncio.gather(*wave)
    # one status for every failure (unknown id and bad password alike), and the right
    # password inside the flood refused the same way: the flood made at most ~10 guesses
    assert set(statuses) == {S.ESME_RBINDFAIL}, {P.status_name(s or 0) for s in statuses}
    assert right == S.ESME_RBINDFAIL
    assert p99 < P99_LIMIT_S, f"good client p99 {p99 * 1000:.1f} ms during the bind flood"

    # per system_id, however many IPs: 30 guesses for "otp" from 30 addresses, then the right
    # password from yet another address is refused too ...
    spread = await asyncio.gather(
        *(attempt(f"127.0.1.{i}", "otp", f"g{i}") for i in range(1, 31))
    )
    assert set(spread) == {S.ESME_RBINDFAIL}
    assert await attempt("127.0.1.200", "otp", "otp-pw") == S.ESME_RBINDFAIL
    # ... while a client that bound from its address before is never locked out
    again = await Raw.open(server.port, "127.0.0.8")
    assert await again.bind("acme", "secret1") == S.ESME_ROK
    again.close()
    await good.close()


# --- unauthenticated sockets and connection caps -------------------------------------------


async def test_unbound_sockets_are_closed_after_the_bind_timeout(start: Any) -> None:
    server = await start(bind_timeout_s=1, max_connections_per_ip=5)
    good = await Good.bind(server.port)
    pinger, trickler, idle = [await Raw.open(server.port) for _ in range(3)]
    bind_frame = trickler.frame(P.BindTransceiver(system_id="acme", password="secret1"))

    async def ping() -> None:
        while True:
            await pinger.send(P.EnquireLink())
            await pinger.read()
            await asyncio.sleep(0.2)

    async def trickle() -> None:  # one byte of a bind every 0.1 s: a slow-loris
        for byte in bind_frame:
            trickler.writer.write(bytes([byte]))
            await asyncio.sleep(0.1)

    tasks = [asyncio.create_task(ping()), asyncio.create_task(trickle())]
    started = time.monotonic()
    p99 = await good.p99()
    closed = await asyncio.gather(*(r.closed_within(3.0) for r in (pinger, trickler, idle)))
    elapsed = time.monotonic() - started
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert closed == [True, True, True], "an unbound socket outlived MTA_SMPP_BIND_TIMEOUT_S"
    assert elapsed < 3.5
    assert p99 < P99_LIMIT_S, f"good client p99 {p99 * 1000:.1f} ms"

    # per IP: 5 connections at once from one address; the 6th is closed at once
    held = [await Raw.open(server.port, "127.0.0.2") for _ in range(5)]
    extra = await Raw.open(server.port, "127.0.0.2")
    assert await extra.closed_within(0.5)
    assert not await held[0].closed_within(0.2)
    for raw in held:
        raw.close()
    assert await good.submit_ok()
    await good.close()


# --- back-pressure ------------------------------------------------------------------------


async def test_a_peer_not_reading_its_responses_is_not_buffered_for(start: Any) -> None:
    server = await start()
    good = await Good.bind(server.port)
    flooder = await Raw.open(server.port, "127.0.0.3", rcvbuf=4096)
    sock = flooder.writer.get_extra_info("socket")
    chunk = b"".join(flooder.frame(P.EnquireLink()) for _ in range(4096))  # 64 KiB
    before = server.rss_kib()
    sent = 0

    async def flood() -> None:
        nonlocal sent
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 4.0
        raw_sock = socket.socket(fileno=os.dup(sock.fileno()))
        raw_sock.setblocking(False)
        view = memoryview(chunk)
        try:
            while loop.time() < deadline:
                try:
                    n = raw_sock.send(view)
                except BlockingIOError:
                    await asyncio.sleep(0.01)
                    continue
                sent += n
                view = view[n:] if n < len(view) else memoryview(chunk)  # whole PDUs only
                await asyncio.sleep(0)
        finally:
            raw_sock.close()
        assert not flooder.reader.at_eof(), "the server closed the flooder"

    task = asyncio.create_task(flood())
    await asyncio.sleep(0.5)
    p99 = await good.p99()
    await task
    grown_mib = (server.rss_kib() - before) / 1024
    # the server stops reading once ~256 KiB of answers wait: the flooder's own socket buffers
    # fill and it cannot send more, and the server's memory does not follow the flood
    assert grown_mib < 12, f"server grew {grown_mib:.1f} MiB for a peer that does not read"
    assert sent < 48 << 20, f"{sent >> 20} MiB of enquire_link accepted from a non-reader"
    assert p99 < P99_LIMIT_S, f"good client p99 {p99 * 1000:.1f} ms"
    flooder.close()
    await good.close()


# --- long messages --------------------------------------------------------------------------


async def test_incomplete_long_messages_are_bounded_per_client(env: Env, start: Any) -> None:
    server = await start()
    good = await Good.bind(server.port)
    owner = await _bound(server.port, "acme", "127.0.0.10")
    await owner.send(_part(0x4242, 2, 1, b"Hello from a long message, "))
    first = await owner.read()
    assert first.status == S.ESME_ROK and ":" not in first.message_id
    flooder = await _bound(server.port, "flood", "127.0.0.4")
    n = 20_000  # first parts of 20,000 long messages that never complete
    frames = [flooder.frame(_part(i, 3, 1, b"x" * 120)) for i in range(n)]

    async def flood() -> None:
        reader = asyncio.create_task(_responses(flooder, n))
        await _send_frames(flooder, frames)
        responses = await reader
        assert all(status == S.ESME_ROK for status, _ in responses)

    task = asyncio.create_task(flood())
    await asyncio.sleep(0.3)
    p99 = await good.p99()
    await task
    # the good client's incomplete message survived the flood: its last part completes it
    await owner.send(_part(0x4242, 2, 2, b"in two parts."))
    last = await owner.read()
    assert last.status == S.ESME_ROK and ":" in last.message_id, "acme's first part was evicted"
    assert p99 < P99_LIMIT_S, f"good client p99 {p99 * 1000:.1f} ms during 20,000 parts"
    assert any("reassembly budget" in line for line in server.log_lines())
    flooder.close()
    await good.close()


async def test_a_repeated_part_counts_once(env: Env, start: Any) -> None:
    server = await start()
    good = await Good.bind(server.port)
    flooder = await _bound(server.port, "flood", "127.0.0.5")

    frames = [flooder.frame(_part(7, 2, 1, b"first half, ")) for _ in range(5000)]

    async def flood() -> list[tuple[int, bytes]]:
        reader = asyncio.create_task(_responses(flooder, len(frames)))
        await _send_frames(flooder, frames)
        return await reader

    task = asyncio.create_task(flood())
    await asyncio.sleep(0.1)
    p99 = await good.p99()
    answers = await task
    assert all(status == S.ESME_ROK for status, _ in answers)
    part_ids = {body for _, body in answers}
    assert len(part_ids) == 1, f"{len(part_ids)} part ids for one part sent 5,000 times"
    await flooder.send(_part(7, 2, 2, b"second half"))
    done = await flooder.read()
    assert done.status == S.ESME_ROK and ":" in done.message_id
    store = await env.store()
    try:
        keys = [k async for k in store.r.scan_iter(match=store.smpp_part_key("*"))]
        assert len(keys) == 1, f"{len(keys)} part keys in Redis"  # one key → one receipt
        assert (await store.r.get(keys[0])).decode() == done.message_id
    finally:
        await store.close()
    assert p99 < P99_LIMIT_S, f"good client p99 {p99 * 1000:.1f} ms"
    flooder.close()
    await good.close()


# --- unbind ---------------------------------------------------------------------------------


async def test_submits_before_unbind_are_answered_before_unbind_resp(start: Any) -> None:
    server = await start()
    client = await _bound(server.port, "acme")
    good = await Good.bind(server.port)
    task = asyncio.create_task(good.p99())
    await client.send(*(_submit(f"m{i}".encode()) for i in range(50)), P.Unbind())
    answers = []
    while True:
        try:
            answers.append(await client.read())
        except asyncio.IncompleteReadError:
            break
    kinds = [type(a).__name__ for a in answers]
    assert kinds == ["SubmitSmResp"] * 50 + ["UnbindResp"], kinds
    assert all(a.status == S.ESME_ROK and ":" in a.message_id for a in answers[:50])
    p99 = await task
    assert p99 < P99_LIMIT_S, f"good client p99 {p99 * 1000:.1f} ms"
    await good.close()


# --- the log ------------------------------------------------------------------------------


async def test_protocol_warnings_are_rate_limited_and_client_strings_quoted(start: Any) -> None:
    server = await start()
    good = await Good.bind(server.port)
    junk = await Raw.open(server.port, "127.0.0.6")
    unknown = (16).to_bytes(4, "big") + (0x00000777).to_bytes(4, "big") + bytes(4)
    frames = b"".join(unknown + i.to_bytes(4, "big") for i in range(1, 3001))
    junk.writer.write(frames)
    task = asyncio.create_task(good.p99())
    nacks = await _responses(junk, 3000)
    assert {status for status, _ in nacks} == {S.ESME_RINVCMDID}
    sneaky = await Raw.open(server.port, "127.0.0.7")
    # a system_id with a line break (15 octets, the field's limit): logged quoted, one line
    assert await sneaky.bind("x\nFAKE ERROR in", "pw") == S.ESME_RBINDFAIL
    p99 = await task
    lines = server.log_lines()
    bad = [line for line in lines if "bad " in line and "WARNING" in line]
    assert 1 <= len(bad) <= 25, f"{len(bad)} warnings logged for 3,000 bad PDUs"
    assert not any(line.startswith("FAKE ERROR") for line in lines)
    assert any("'x\\nFAKE ERROR in'" in line for line in lines)
    assert p99 < P99_LIMIT_S, f"good client p99 {p99 * 1000:.1f} ms"
    junk.close()
    await good.close()


# --- the decisions alone (mta.smppserver.auth, mta.smppserver.reassembly) ----------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bind_limiter_counts_attempts_when_they_start() -> None:
    from mta.smppserver.auth import BindLimiter

    clock = Clock()
    limiter = BindLimiter(1.0, 0.5, 3, clock=clock)
    assert [limiter.start("1.1.1.1", f"s{i}") for i in range(5)] == ["", "", "", "ip", "ip"]
    clock.now += 1.0  # one token back for the IP
    assert limiter.start("1.1.1.1", "s9") == ""
    # per system_id over many IPs
    assert [limiter.start(f"2.0.0.{i}", "acme") for i in range(4)] == ["", "", "", "system_id"]
    # a success gives the tokens back and trusts the pair: it is never locked out
    limiter.succeeded("3.3.3.3", "acme")
    assert limiter.start("3.3.3.3", "acme") == "" and limiter.trusted("3.3.3.3", "acme")
    limiter.failed("3.3.3.3", "acme")  # a failure from a trusted pair ends the trust
    assert not limiter.trusted("3.3.3.3", "acme")


def test_limits_are_flags_of_the_command_and_bad_ones_usage_errors() -> None:
    from click.testing import CliRunner

    from mta.cli import main

    result = CliRunner().invoke(main, ["smpp-server", "--help"])
    assert "--bind-timeout-s" in result.output
    assert "MTA_SMPP_MAX_CONNECTIONS_PER_IP" in result.output
    result = CliRunner().invoke(main, ["smpp-server", "--max-connections", "0"])
    assert result.exit_code == 2 and "MTA_SMPP_MAX_CONNECTIONS: 0 must be positive" in result.output


def test_connection_caps_and_log_limiter() -> None:
    from mta.loglimit import LogLimiter
    from mta.smppserver import ConnectionCaps, SmppLimits

    caps = ConnectionCaps(max_total=3, max_per_ip=2)
    assert [caps.admit("a"), caps.admit("a")] == ["", ""]
    assert "per IP" in caps.admit("a")
    assert caps.admit("b") == "" and "the limit is 3" in caps.admit("c")
    caps.release("a")
    assert caps.admit("c") == "" and caps.total == 3
    clock = Clock()
    logs = LogLimiter(burst=2, window_s=10, clock=clock)
    assert [logs.allow("k") for _ in range(4)] == [0, 0, None, None]
    clock.now += 10
    assert logs.allow("k") == 2  # the next window's first line says how many were dropped
    assert SmppLimits.from_env({"MTA_SMPP_BIND_TIMEOUT_S": "2.5"}).bind_timeout_s == 2.5
    with pytest.raises(ValueError, match="MTA_SMPP_MAX_CONNECTIONS"):
        SmppLimits.from_env({"MTA_SMPP_MAX_CONNECTIONS": "0"})
    with pytest.raises(ValueError, match="MTA_SMPP_BIND_BURST"):
        SmppLimits.from_env({"MTA_SMPP_BIND_BURST": "ten"})


def _info(ref: int, total: int, seq: int, data: bytes = b"abc") -> ConcatInfo:
    return ConcatInfo(ref, total, seq, data)


def test_reassembly_budgets_duplicates_and_expiry() -> None:
    from mta.smppserver.reassembly import Budget, Complete, Reassembly, ReassemblyFull

    clock = Clock()
    ids = iter(f"id{i}" for i in range(10_000))
    r = Reassembly(60.0, Budget(max_messages=3, max_parts=100, max_bytes=1000), clock=clock,
                   new_id=lambda: next(ids))
    first = r.add("good", "k", _info(1, 2, 1, b"Hello "), 0)
    assert first == "id0"
    for ref in range(10):  # a flood by another owner only evicts its own oldest
        r.add("bad", "k", _info(ref, 3, 1), 0)
    assert r.usage("bad") == (3, 3, 9) and r.evicted("bad") == 7 and r.evicted("good") == 0
    # the same part again: counted once, the same id
    assert [r.add("good", "k", _info(1, 2, 1, b"Hello "), 0) for _ in range(5)] == ["id0"] * 5
    assert r.usage("good") == (1, 1, 6)
    done = r.add("good", "k", _info(1, 2, 2, b"world"), 0)
    assert done == Complete(b"Hello world", 0, 2, ["id0"])
    # expiry in time order
    clock.now += 61
    assert r.expire() == 3 and len(r) == 0
    with pytest.raises(ReassemblyFull):  # one message alone over the byte budget
        r.add("good", "k", _info(2, 3, 1, b"x" * 1001), 0)
    assert len(r) == 0
