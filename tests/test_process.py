"""Operators' view: real ``mta`` processes killed, stopped and misconfigured (real brokers)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest

from tests.conftest import Env, batch, mta_command, sim_accounts
from tests.conftest import process_env as base_process_env

ROOT = Path(__file__).resolve().parents[1]
READY = " running (prefix "


def process_env(env: Env, **extra: str) -> dict[str, str]:
    """An ``mta`` process's environment, polling fast (these tests wait for finals)."""
    return base_process_env(env, **{"MTA_POLL_FIRST_S": "0.2", "MTA_POLL_MAX_S": "1", **extra})


@dataclass
class Proc:
    """An ``mta`` subprocess whose stderr is read continuously (so its pipe never fills)."""

    proc: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.lines.append(line)
            if READY in line:
                self.ready.set()

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    async def wait_ready(self, timeout: float = 15.0) -> None:
        ready = asyncio.create_task(self.ready.wait())
        exited = asyncio.create_task(self.proc.wait())
        await asyncio.wait({ready, exited}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        exited.cancel()
        if not self.ready.is_set():
            raise AssertionError(
                f"process not ready (exit code {self.proc.returncode}); stderr:\n{self.stderr}"
            )

    async def wait_exit(self, timeout: float) -> int:
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        if self.reader is not None:
            await asyncio.wait_for(self.reader, 5)
        return code


@pytest.fixture
async def procs(env: Env) -> AsyncIterator[list[Proc]]:
    """Processes a test started; any still running at the end is killed (before env cleanup)."""
    started: list[Proc] = []
    yield started
    for p in started:
        if p.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                p.proc.kill()
            await p.proc.wait()
        if p.reader is not None:
            p.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await p.reader


async def spawn(env: Env, procs: list[Proc], *args: str, ready: bool = True, **extra: str) -> Proc:
    proc = await asyncio.create_subprocess_exec(
        *mta_command(*args),
        env=process_env(env, **extra),
        cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    p = Proc(proc)
    p.reader = asyncio.create_task(p._read())
    procs.append(p)
    if ready:
        await p.wait_ready()
    return p


async def outbox_message_ids(env: Env) -> set[str]:
    """Message ids of the report bodies still waiting in the Redis outbox."""
    store = await env.store()
    try:
        values = [v for keys in store.shards for v in await store.r.hvals(keys.outbox)]
    finally:
        await store.close()
    ids: set[str] = set()
    for value in values:
        raw = value if isinstance(value, bytes) else value.encode()
        _, _, body = raw.partition(b"\n")
        ids.update(r["messageId"] for r in orjson.loads(body)["results"])
    return ids


async def inflight_markers(env: Env) -> int:
    """How many messages are marked 'Send in flight' in Redis."""
    store = await env.store()
    try:
        n = 0
        for key in await store.keys("m:*"):
            n += sum(1 for v in (await store.r.hvals(key)) if v == b"i")
        return n
    finally:
        await store.close()


# --- a. SIGKILL --------------------------------------------------------------------------------


async def test_sigkill_mid_batches_loses_nothing_and_resubmits_no_recorded_message(
    env: Env, procs: list[Proc]
) -> None:
    env.accounts(sim_accounts(latency=300, delay=0.2))
    tail = await env.tail()
    await env.start("reporter")
    first = await spawn(env, procs, "worker", MTA_BULK_CONCURRENCY="4")
    batches, size = 30, 20
    mids = [await env.publish(batch(size, start=b * size)) for b in range(batches)]
    expected = {f"{mid}:{i}" for mid in mids for i in range(size)}
    await tail.wait(lambda t: len(t.oks()) >= 40, timeout=15)
    first.proc.send_signal(signal.SIGKILL)
    assert await first.wait_exit(10) == -signal.SIGKILL
    oks_at_kill = len(tail.oks())
    assert oks_at_kill < len(expected), "the worker was killed after it had finished everything"
    # The premise: it died with Sends in flight (marked, outcome not recorded).
    assert await inflight_markers(env) > 0

    await spawn(env, procs, "worker", MTA_BULK_CONCURRENCY="4")
    await tail.wait(lambda t: expected <= {r["messageId"] for r in t.finals()}, timeout=20)
    await asyncio.sleep(1.0)  # anything twice would show up now

    finals = Counter(r["messageId"] for r in tail.finals())
    assert set(finals) == expected
    twice = {m: n for m, n in finals.items() if n > 1}
    assert not twice, f"messages with more than one final: {twice}"
    oks = Counter(r["messageId"] for r in tail.oks())
    twice = {m: n for m, n in oks.items() if n > 1}
    assert not twice, f"recorded submissions resubmitted (two OKs): {twice}"
    assert set(oks) <= expected
    # An OK not seen yet can only be one the killed worker recorded but had not published:
    # it is in the outbox, which a recovery publishes after its grace period. Never lost.
    missing = expected - set(oks)
    assert missing <= await outbox_message_ids(env), f"{len(missing)} OK(s) lost"
    assert {r["apiStatus"] for r in tail.finals()} == {"DELIVERED"}


# --- b. SIGTERM / SIGINT -------------------------------------------------------------------------


async def test_sigterm_stops_gracefully_and_nothing_is_lost_or_doubled(
    env: Env, procs: list[Proc]
) -> None:
    env.accounts(sim_accounts(latency=500, delay=0.2))
    tail = await env.tail()
    worker = await spawn(env, procs, "worker", MTA_BULK_CONCURRENCY="1")
    size = 5
    mids = [await env.publish(batch(size, start=b * size)) for b in range(3)]
    expected = {f"{mid}:{i}" for mid in mids for i in range(size)}
    await tail.wait(lambda t: len(t.oks()) >= 1, timeout=10)
    started = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)
    assert await worker.wait_exit(15) == 0, worker.stderr
    assert time.monotonic() - started < 15
    assert "Traceback" not in worker.stderr, worker.stderr
    assert worker.lines and worker.lines[-1].endswith("stopped"), worker.stderr
    assert len(tail.oks()) < len(expected), "SIGTERM came after all the work was done"
    # What the stopped worker did not finish was returned, not lost: a new worker does it.
    await env.start("worker", "reporter")
    await tail.wait(lambda t: expected <= {r["messageId"] for r in t.finals()}, timeout=15)
    await asyncio.sleep(0.5)
    finals = Counter(r["messageId"] for r in tail.finals())
    oks = Counter(r["messageId"] for r in tail.oks())
    assert finals == Counter(expected), "exactly one final per message"
    assert oks == Counter(expected), "exactly one OK per message"


async def test_mta_run_serves_and_exits_zero_on_sigint(env: Env, procs: list[Proc]) -> None:
    tail = await env.tail()
    run = await spawn(env, procs, "run")
    assert "worker+reporter" in run.stderr
    mid = await env.publish(batch(2))
    finals = await tail.wait_finals(2, timeout=15)
    assert {f["messageId"] for f in finals} == {f"{mid}:0", f"{mid}:1"}
    run.proc.send_signal(signal.SIGINT)
    assert await run.wait_exit(15) == 0, run.stderr
    assert "Traceback" not in run.stderr and "KeyboardInterrupt" not in run.stderr


# --- c. configuration errors stop start-up -----------------------------------------------------

ACCOUNT = '[[account]]\nid = 3\nname = "acme-sms"\nadapter = "simulator"\n'
SECOND = '[[account]]\nid = {id}\nname = "second"\nadapter = "simulator"\n'
UNSET = "MTA_TEST_SURELY_NOT_SET_7F3A"


@pytest.mark.parametrize(
    ("accounts", "words"),
    [
        pytest.param(
            ACCOUNT.replace('"simulator"', '"no-such-adapter"'),
            ["'acme-sms'", "adapter", "no-such-adapter"],
            id="unknown-adapter",
        ),
        pytest.param(
            ACCOUNT + '[account.options]\ncolour = "red"\n',
            ["'acme-sms'", "options", "colour"],
            id="unknown-option",
        ),
        pytest.param(
            ACCOUNT + '[account.options]\naccept_ratio = "lots"\n',
            ["'acme-sms'", "accept_ratio", "lots"],
            id="wrong-type",
        ),
        pytest.param(
            ACCOUNT + SECOND.format(id=3),
            ["'second'", "id", "'acme-sms'"],
            id="duplicate-id",
        ),
        pytest.param(
            ACCOUNT + "default = true\n" + SECOND.format(id=4) + "default = true\n",
            ["'second'", "default", "'acme-sms'"],
            id="two-defaults",
        ),
        pytest.param(
            ACCOUNT + f'secret_key = "${{{UNSET}}}"\n',
            ["'acme-sms'", "secret_key", UNSET],
            id="unset-env-secret",
        ),
    ],
)
async def test_config_errors_stop_start_up_naming_account_and_field(
    env: Env, procs: list[Proc], accounts: str, words: list[str]
) -> None:
    env.accounts(accounts)
    worker = await spawn(env, procs, "worker", ready=False)
    code = await worker.wait_exit(15)
    assert code != 0, worker.stderr
    assert not worker.ready.is_set()
    assert "configuration error" in worker.stderr, worker.stderr
    assert "Traceback" not in worker.stderr, worker.stderr
    for word in words:
        assert word in worker.stderr, f"{word!r} not in:\n{worker.stderr}"
