"""Benchmark (not a test): submit_sm/s of the smpp adapter on one session against a fast SMSC.

The SMSC is a minimal sink in a child process (raw struct framing, no codec objects): it binds
anyone, answers every submit_sm at once with a new message id and, with ``--receipts``, sends a
deliver_sm receipt (text + TLVs) for each. The adapter runs in this process exactly as the
worker drives it: ``send()`` of batches of ``--batch`` messages, ``--concurrency`` batches in
flight, over ``--binds`` sessions of window ``--window``. Prints submit_sm/s and the adapter's
CPU per message; asserts nothing.

    .venv/bin/python tests/bench/bench_smpp_adapter.py                      # 100k, window 50
    .venv/bin/python tests/bench/bench_smpp_adapter.py --receipts --redis   # receipts to Redis
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import struct
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mta.adapters.smpp import SmppAdapter

from mta.adapter import AdapterContext, ReceiptSink
from mta.contract import SmsMessage, SmsSendRequest

HEADER = struct.Struct(">IIII")
SUBMIT_SM, SUBMIT_SM_RESP = 0x00000004, 0x80000004
DELIVER_SM, DELIVER_SM_RESP = 0x00000005, 0x80000005
ENQUIRE_LINK, UNBIND = 0x00000015, 0x00000006
BINDS = {0x00000001, 0x00000002, 0x00000009}


class Sink(asyncio.Protocol):
    """One SMSC connection: answers as fast as it can parse headers."""

    def __init__(self, receipts: bool) -> None:
        self.buffer = bytearray()
        self.receipts = receipts
        self.next_id = 1_000_000
        self.seq = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        out: list[bytes] = []
        pos = 0
        size = len(buf)
        while size - pos >= 16:
            length, cid, _status, seq = HEADER.unpack_from(buf, pos)
            if size - pos < length:
                break
            pos += length
            if cid == SUBMIT_SM:
                self.next_id += 1
                mid = b"%X\0" % self.next_id
                out.append(HEADER.pack(16 + len(mid), SUBMIT_SM_RESP, 0, seq) + mid)
                if self.receipts:
                    out.append(self._receipt(self.next_id))
            elif cid in BINDS:
                body = b"SINK\0"
                out.append(HEADER.pack(16 + len(body), cid | 0x80000000, 0, seq) + body)
            elif cid in (ENQUIRE_LINK, UNBIND):
                out.append(HEADER.pack(16, cid | 0x80000000, 0, seq))
        del buf[:pos]
        if out and self.transport is not None:
            self.transport.write(b"".join(out))

    def _receipt(self, number: int) -> bytes:
        self.seq += 1
        text = (
            b"id:%X sub:001 dlvrd:001 submit date:2611220400 done date:2611220400"
            b" stat:DELIVRD err:000 text:" % number
        )
        mid = b"%X\0" % number
        body = (
            b"\0"  # service_type
            + b"\x01\x01905330000000\0"
            + b"\x05\x00ACME\0"
            + b"\x04\x00\x00\0\0\x00\x00\x00\x00"
            + bytes((len(text),))
            + text
            + struct.pack(">HH", 0x001E, len(mid))
            + mid
            + struct.pack(">HHB", 0x0427, 1, 2)
        )
        return HEADER.pack(16 + len(body), DELIVER_SM, 0, self.seq) + body


def serve(port_out: Any, receipts: bool) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: Sink(receipts), "127.0.0.1", 0)
        port_out.put(server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    asyncio.run(main())


async def run(args: argparse.Namespace, port: int) -> dict[str, float]:
    store = None
    sink = ReceiptSink("bench")
    if args.redis:
        import redis.asyncio as aioredis

        from mta.store import Store

        store = Store(aioredis.from_url(args.redis_url), f"bench{uuid.uuid4().hex[:8]}")
        sink.bind(store)
    options = {o.name: o.default for o in SmppAdapter.meta.options}
    options.update(
        host="127.0.0.1",
        port=port,
        system_id="bench",
        password="bench",
        window=args.window,
        binds=args.binds,
    )
    adapter = SmppAdapter(options, AdapterContext("bench", 1, sink))
    assert await adapter.login("")
    text = "Your one-time code is 123456. Do not share it with anyone."
    messages = [SmsMessage(f"9053300{n:05d}", text, sender="ACME") for n in range(args.batch)]
    request = SmsSendRequest(messages)
    await adapter.send(request)  # warm-up
    batches = args.messages // args.batch
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(batches):
        queue.put_nowait(n)
    ok = 0

    async def lane() -> None:
        nonlocal ok
        while not queue.empty():
            queue.get_nowait()
            response = await adapter.send(request)
            ok += sum(1 for r in response.results if r.apiStatus == "OK")

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(args.concurrency)))
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    if args.receipts:  # let the last receipts in
        deadline = time.monotonic() + 10
        while adapter.book.stats["receipts"] < ok and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    receipts = adapter.book.stats["receipts"]
    await adapter.destroy()
    if store is not None:
        await store.delete_all()
        await store.close()
    return {
        "messages": batches * args.batch,
        "accepted": ok,
        "seconds": elapsed,
        "submit_sm_per_s": ok / elapsed,
        "cpu_us_per_message": cpu / max(ok, 1) * 1e6,
        "receipts": receipts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=4, help="Send calls in flight")
    parser.add_argument("--window", type=int, default=50)
    parser.add_argument("--binds", type=int, default=1)
    parser.add_argument("--receipts", action="store_true", help="the SMSC sends receipts")
    parser.add_argument("--redis", action="store_true", help="share state/receipts in Redis")
    parser.add_argument(
        "--redis-url", default=os.environ.get("MTA_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    args = parser.parse_args()
    ports: Any = multiprocessing.Queue()
    child = multiprocessing.Process(target=serve, args=(ports, args.receipts), daemon=True)
    child.start()
    try:
        port = ports.get(timeout=10)
        figures = asyncio.run(run(args, port))
    finally:
        child.terminate()
        child.join()
    print(
        f"smpp adapter: {figures['accepted']:,} of {figures['messages']:,} submit_sm accepted in "
        f"{figures['seconds']:.2f} s = {figures['submit_sm_per_s']:,.0f} submit_sm/s "
        f"(binds {args.binds}, window {args.window}, batches of {args.batch}, "
        f"{args.concurrency} in flight, receipts {'on' if args.receipts else 'off'}"
        f"{', Redis' if args.redis else ''}); adapter CPU "
        f"{figures['cpu_us_per_message']:.0f} µs/message; receipts handled "
        f"{figures['receipts']:,}"
    )


if __name__ == "__main__":
    main()
