"""Benchmark (not a test): submit_sm/s from ONE client session through ``mta smpp-server`` into
RabbitMQ with publisher confirms; with ``--receipts``, deliver_sm/s to one bound client.

Starts ``mta smpp-server`` as its own process on a fresh prefix (real RabbitMQ and Redis), binds
one transmitter session (our asyncio Session, window W), submits N messages as fast as the
window allows, and prints the rate (first submit to last submit_sm_resp, every resp carrying a
confirmed MMP message id), the latency percentiles, the server's CPU per 1,000 submits and how
many MMP batches the broker got. Cleans its queues and keys up afterwards.

    .venv/bin/python tests/bench/bench_smpp_server.py -n 50000 -w 200

``--receipts`` (``make bench-smpp-receipts``), with the server's deliver_sm window (50): N
message records are written as the server writes them, their DELIVERED
finals published on the report exchange in messages of 500 results (as reporters do), and
one transceiver (our Session, answering each deliver_sm at once) counts the receipts: first
publish to last receipt, ``--runs`` times (min/median/max). Then the same number is
published while no client is bound (they go to the Redis stash) and drained by a bind:
bind to last receipt.

``--records`` times the server's Redis work alone, in this process (uvloop, the local Redis,
a fresh prefix): CPU per message of writing micro-batches of ``-w`` records
(:meth:`MessageRecords.add_batch`) and of reading and writing back a report's records
(:meth:`MessageRecords.get` + :meth:`MessageRecords.put`, 250 results spread over batches),
``--runs`` times, with Redis's own CPU per message.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aio_pika
import orjson

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from mta.smpp import pdu as P  # noqa: E402
from mta.smpp.session import Session, connect  # noqa: E402
from mta.smppserver.receipt_stash import PENDING_RECEIPTS_MAX, ReceiptStash  # noqa: E402
from mta.smppserver.records import MessageRecord, MessageRecords  # noqa: E402
from mta.store import Store  # noqa: E402
from mta.topology import Topology  # noqa: E402

AMQP_URL = os.environ.get("MTA_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
REDIS_URL = os.environ.get("MTA_REDIS_URL", "redis://127.0.0.1:6379/0")

ACCOUNTS = """
[[account]]
id = 0
name = "sim"
adapter = "simulator"
default = true

[[smpp_client]]
system_id = "bench"
password = "bench"
account_id = 7
throughput = 1000000
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def wait_port(port: int, proc: asyncio.subprocess.Process) -> None:
    for _ in range(200):
        if proc.returncode is not None:
            raise SystemExit(f"mta smpp-server exited with {proc.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise SystemExit("mta smpp-server did not listen")


async def run(total: int, window: int, text: str) -> None:
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    port = free_port()
    accounts = Path(tempfile.mkdtemp()) / "accounts.toml"
    accounts.write_text(ACCOUNTS)
    env = dict(os.environ, MTA_PREFIX=prefix, MTA_ACCOUNTS=str(accounts))
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "mta.cli", "smpp-server", "--listen", f"127.0.0.1:{port}"),
        env=env,
        cwd=ROOT,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await wait_port(port, proc)
        session = await connect("127.0.0.1", port, window=window, response_timeout=60)
        bound = await session.request(P.BindTransmitter(system_id="bench", password="bench"))
        assert bound.status == 0, P.status_name(bound.status)
        body = text.encode()
        # warm-up (first connections, JIT-free Python: just caches and the AMQP channel)
        await asyncio.gather(
            *(
                session.request(P.SubmitSm(destination_addr="905330000000", short_message=body))
                for _ in range(min(window, 500))
            )
        )
        latencies: list[float] = []
        errors: dict[str, int] = {}
        next_n = 0
        loop = asyncio.get_running_loop()

        async def sender() -> None:
            nonlocal next_n
            while next_n < total:
                n = next_n
                next_n += 1
                pdu = P.SubmitSm(
                    source_addr="BENCH",
                    destination_addr=f"9053{n % 100_000_000:08d}",
                    short_message=body,
                )
                sent = loop.time()
                resp = await session.request(pdu)
                latencies.append(loop.time() - sent)
                if resp.status:
                    name = P.status_name(resp.status)
                    errors[name] = errors.get(name, 0) + 1

        cpu0 = cpu_seconds(proc.pid)
        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(window)))
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(proc.pid) - cpu0
        await session.unbind()
        latencies.sort()
        ok = total - sum(errors.values())

        def pct(q: float) -> float:
            return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

        connection = await aio_pika.connect(AMQP_URL)
        channel = await connection.channel()
        topology = Topology(prefix)
        queue = await channel.declare_queue(topology.send_queue("bulk"), passive=True)
        batches = queue.declaration_result.message_count
        print(f"mta smpp-server benchmark: {total} submit_sm, window {window}, text {len(text)} ch")
        print(f"  rate         {total / elapsed:,.0f} submit_sm/s ({ok} OK, errors {errors})")
        print(f"  latency      p50 {pct(0.5):.1f} ms  p99 {pct(0.99):.1f} ms")
        print(f"  server CPU   {cpu / total * 1e6:.0f} µs per submit ({cpu:.2f} s)")
        print(f"  MMP batches  {batches} on {topology.send_queue('bulk')} (incl. warm-up)")
        for name, _ in topology.queues():
            await channel.queue_delete(name)
        await channel.queue_delete(Topology(prefix).smpp_receipts_queue)
        for name, _ in topology.exchanges():
            await channel.exchange_delete(name)
        await connection.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
        store = Store.connect(REDIS_URL, prefix)
        await store.delete_all()
        await store.close()


class _Receiver:
    """Answers every deliver_sm at once and notes when the n-th arrived."""

    def __init__(self) -> None:
        self.count = 0
        self.want = 0
        self.done: asyncio.Future[float] | None = None

    def expect(self, n: int) -> asyncio.Future[float]:
        self.count, self.want = 0, n
        self.done = asyncio.get_running_loop().create_future()
        return self.done

    def on_request(self, _session: Session, pdu: P.Pdu) -> P.Pdu:
        if not isinstance(pdu, P.DeliverSm):
            return P.response_for(pdu, P.CommandStatus.ESME_RINVCMDID)
        self.count += 1
        if self.count == self.want and self.done is not None and not self.done.done():
            self.done.set_result(time.perf_counter())
        return P.DeliverSmResp()


async def _finals(
    channel: aio_pika.abc.AbstractChannel, topology: Topology, ids: list[str]
) -> None:
    exchange = await channel.get_exchange(topology.reports_exchange)
    key = topology.report_key(7, "DELIVERED")
    for start in range(0, len(ids), 500):
        results = [{"messageId": i, "apiStatus": "DELIVERED"} for i in ids[start : start + 500]]
        body = orjson.dumps({"partnerPacketId": "", "results": results})
        await exchange.publish(aio_pika.Message(body), routing_key=key)


async def _records(records: MessageRecords, n: int) -> list[str]:
    ids: list[str] = []
    now_ms = int(time.time() * 1000)
    for start in range(0, n, 500):
        batch = uuid.uuid4().hex
        count = min(500, n - start)
        record = MessageRecord(
            1, 0, "bench", 1, 5, 0, "BENCH", 1, 1, "905330000000", now_ms, "bench"
        )
        await records.add_batch(batch, [record] * count, {})
        ids += [f"{batch}:{i}" for i in range(count)]
    return ids


async def run_receipts(total: int, runs: int) -> None:
    window = 50  # the server's deliver_sm window (SmppServer's default)
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    port = free_port()
    accounts = Path(tempfile.mkdtemp()) / "accounts.toml"
    accounts.write_text(ACCOUNTS)
    env = dict(os.environ, MTA_PREFIX=prefix, MTA_ACCOUNTS=str(accounts))
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "mta.cli", "smpp-server", "--listen", f"127.0.0.1:{port}"),
        env=env,
        cwd=ROOT,
        stderr=asyncio.subprocess.DEVNULL,
    )
    store = Store.connect(REDIS_URL, prefix)
    records = MessageRecords(store)
    topology = Topology(prefix)
    connection = await aio_pika.connect(AMQP_URL)
    channel = await connection.channel()
    try:
        await wait_port(port, proc)
        receiver = _Receiver()

        async def bind() -> Session:
            session = await connect(
                "127.0.0.1", port, on_request=receiver.on_request, window=10, enquire_link_s=0
            )
            bound = await session.request(P.BindTransceiver(system_id="bench", password="bench"))
            assert bound.status == 0, P.status_name(bound.status)
            return session

        session = await bind()
        done = receiver.expect(500)  # warm-up
        await _finals(channel, topology, await _records(records, 500))
        await asyncio.wait_for(done, 60)
        rates: list[float] = []
        cpus: list[float] = []
        for _ in range(runs):
            ids = await _records(records, total)
            done = receiver.expect(total)
            cpu0 = cpu_seconds(proc.pid)
            started = time.perf_counter()
            await _finals(channel, topology, ids)
            finished = await asyncio.wait_for(done, 600)
            rates.append(total / (finished - started))
            cpus.append((cpu_seconds(proc.pid) - cpu0) / total * 1e6)
        await session.unbind()
        # the stash (it keeps at most PENDING_RECEIPTS_MAX per client): finals while no
        # client is bound, then a bind drains them
        stashed = min(total, PENDING_RECEIPTS_MAX)
        await _finals(channel, topology, await _records(records, stashed))
        for _ in range(3000):  # up to 5 minutes for the server to stash them
            if await ReceiptStash(store).waiting("bench") >= stashed:
                break
            await asyncio.sleep(0.1)
        done = receiver.expect(stashed)
        started = time.perf_counter()
        session = await bind()
        drain = stashed / (await asyncio.wait_for(done, 600) - started)
        await session.unbind()
        rates.sort()
        print(f"mta smpp-server receipts: {total} deliver_sm to one bound client, window {window}")
        print(
            f"  bound client  min {rates[0]:,.0f}  median {statistics.median(rates):,.0f}  "
            f"max {rates[-1]:,.0f} deliver_sm/s over {runs} runs"
        )
        print(f"  server CPU    {statistics.median(cpus):.0f} µs per receipt (median)")
        print(
            f"  stash drain   {drain:,.0f} deliver_sm/s ({stashed} stashed, bind to last receipt)"
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
        for name, _ in topology.queues():
            await channel.queue_delete(name)
        await channel.queue_delete(topology.smpp_receipts_queue)
        for name, _ in topology.exchanges():
            await channel.exchange_delete(name)
        await connection.close()
        await store.delete_all()
        await store.close()


async def run_records(total: int, batch: int, runs: int) -> None:
    store = Store.connect(REDIS_URL, f"bench{uuid.uuid4().hex[:8]}")
    records = MessageRecords(store)
    record = MessageRecord(
        1, 0, "bench", 1, 5, 0, "BENCH", 1, 1, "905330000000", int(time.time() * 1000), "bench"
    )

    async def redis_cpu() -> float:
        info = await store.r.info("cpu")
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])

    try:
        print(f"MessageRecords: {total} records in batches of {batch}, reports of 250")
        for _ in range(runs):
            ids: list[str] = []
            cpu0, redis0 = time.process_time(), await redis_cpu()
            for _ in range(max(1, total // batch)):
                batch_id = uuid.uuid4().hex
                await records.add_batch(batch_id, [record] * batch, {})
                ids += [f"{batch_id}:{i}" for i in range(batch)]
            cpu1, redis1 = time.process_time(), await redis_cpu()
            for start in range(0, len(ids), 250):
                found = await records.get(ids[start : start + 250])
                await records.put(found)
            cpu2, redis2 = time.process_time(), await redis_cpu()
            n = len(ids)
            print(
                f"  add_batch  {(cpu1 - cpu0) / n * 1e6:5.2f} us/msg (Redis"
                f" {(redis1 - redis0) / n * 1e6:4.2f})   get + put"
                f" {(cpu2 - cpu1) / n * 1e6:5.2f} us/msg (Redis {(redis2 - redis1) / n * 1e6:4.2f})"
            )
    finally:
        await store.delete_all()
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--messages", type=int, default=50_000)
    parser.add_argument("-w", "--window", type=int, default=200)
    parser.add_argument("--text", default="benchmark message from one SMPP session")
    parser.add_argument("--receipts", action="store_true", help="deliver_sm/s to one client")
    parser.add_argument("--records", action="store_true", help="the Redis record work alone")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if args.records:
        import uvloop

        uvloop.run(run_records(args.messages, args.window, args.runs))
    elif args.receipts:
        asyncio.run(run_receipts(args.messages, args.runs))
    else:
        asyncio.run(run(args.messages, args.window, args.text))


if __name__ == "__main__":
    main()
