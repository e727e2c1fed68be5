"""A fast, honest SMSC for benchmarks: parses every PDU, answers each, returns a receipt per submit.

``python -m mta.smsc_sink [--delay-s S] [--port P]`` listens on 127.0.0.1 (a free port unless
given), prints ``port <n>`` on stdout once it listens, and serves any number of sessions in one
process: every bind is accepted; every submit_sm is parsed field by field (service_type, both
addresses, flags, validity, data_coding, short_message) and answered at once with a new message
id; every enquire_link and unbind is answered; anything else gets a generic_nack. For each
accepted submit_sm it sends, ``--delay-s`` later, a deliver_sm receipt (esm_class 0x04, Appendix
B text ``id:… stat:DELIVRD``, the ``receipted_message_id`` and ``message_state`` TLVs; source
and destination swapped from the submit) on the session the submit came on, and counts each
deliver_sm_resp. Raw struct framing, no codec objects: the sink costs little CPU, so a
benchmark measures the MTA, not the SMSC.

Message ids are hexadecimal ``(ms << 20) | n`` (*ms* the submission's epoch milliseconds), so a
benchmark can tell from a final's partnerMessageId when its receipt was due
(:func:`receipt_due`). On SIGTERM or SIGINT it prints one JSON line of its counters
(``submits``, ``receipts``, ``receipt_resps``, ``first_submit``/``last_submit`` epoch s, ...)
and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import signal
import struct
import sys
import time
from typing import Any

import orjson

HEADER = struct.Struct(">IIII")
_TLVS = struct.Struct(">HH")
_STATE_TLV = struct.pack(">HHB", 0x0427, 1, 2)  # message_state DELIVERED
SUBMIT_SM, SUBMIT_SM_RESP = 0x00000004, 0x80000004
DELIVER_SM, DELIVER_SM_RESP = 0x00000005, 0x80000005
ENQUIRE_LINK, UNBIND, GENERIC_NACK = 0x00000015, 0x00000006, 0x80000000
BINDS = frozenset({0x00000001, 0x00000002, 0x00000009})
ESME_RINVCMDID, ESME_RINVCMDLEN = 0x00000003, 0x00000002
#: How often delayed receipts are sent (seconds).
TICK_S = 0.005


def receipt_due(partner_id: str, delay_s: float) -> float | None:
    """When the sink meant to send the receipt of this (normalised, hex) message id, epoch s."""
    try:
        return (int(partner_id, 16) >> 20) / 1000 + delay_s
    except ValueError:
        return None


class Counters:
    def __init__(self) -> None:
        self.submits = 0
        self.receipts = 0
        self.receipt_resps = 0
        self.receipt_errors = 0
        self.binds = 0
        self.other = 0
        self.first_submit = 0.0
        self.last_submit = 0.0
        self.last_receipt_resp = 0.0
        self.serial = 0


def _cstr(buf: bytearray, pos: int) -> tuple[bytes, int]:
    end = buf.index(0, pos)
    return bytes(buf[pos:end]), end + 1


class SinkSession(asyncio.Protocol):
    """One SMSC session: parses what arrives, answers in the same write."""

    def __init__(self, counters: Counters, delay_s: float) -> None:
        self.counters = counters
        self.delay_s = delay_s
        self.buffer = bytearray()
        self.seq = 0
        self.transport: asyncio.Transport | None = None
        self.later: collections.deque[tuple[float, bytes]] = collections.deque()
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.timer is not None:
            self.timer.cancel()

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        out: list[bytes] = []
        pos = 0
        size = len(buf)
        c = self.counters
        now = 0.0
        while size - pos >= 16:
            length, cid, status, seq = HEADER.unpack_from(buf, pos)
            if length < 16:
                out.append(HEADER.pack(16, GENERIC_NACK, ESME_RINVCMDLEN, seq))
                pos = size
                break
            if size - pos < length:
                break
            body, end = pos + 16, pos + length
            pos = end
            if cid == SUBMIT_SM:
                now = now or time.time()
                try:
                    receipt = self._submit(buf, body, end, now)
                except (ValueError, IndexError):
                    out.append(HEADER.pack(16, GENERIC_NACK, 0x00000001, seq))  # RINVMSGLEN
                    continue
                c.serial += 1
                mid = b"%X" % ((int(now * 1000) << 20) | (c.serial & 0xFFFFF))
                out.append(HEADER.pack(17 + len(mid), SUBMIT_SM_RESP, 0, seq) + mid + b"\0")
                c.submits += 1
                c.first_submit = c.first_submit or now
                c.last_submit = now
                frame = self._receipt(mid, *receipt)
                if self.delay_s <= 0:
                    out.append(frame)
                    c.receipts += 1
                else:
                    self.later.append((now + self.delay_s, frame))
            elif cid == DELIVER_SM_RESP:
                c.receipt_resps += 1
                if status:
                    c.receipt_errors += 1
                c.last_receipt_resp = now = now or time.time()
            elif cid in BINDS:
                c.binds += 1
                out.append(HEADER.pack(21, cid | 0x80000000, 0, seq) + b"SINK\0")
            elif cid in (ENQUIRE_LINK, UNBIND):
                out.append(HEADER.pack(16, cid | 0x80000000, 0, seq))
            elif not cid & 0x80000000:
                c.other += 1
                out.append(HEADER.pack(16, GENERIC_NACK, ESME_RINVCMDID, seq))
        del buf[:pos]
        if out and self.transport is not None:
            self.transport.write(b"".join(out))
        if self.later and self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(TICK_S, self._flush)

    @staticmethod
    def _submit(buf: bytearray, pos: int, end: int, now: float) -> tuple[bytes, bytes, bytes]:
        """Every field of a submit_sm body; (source, destination, first text octets)."""
        _service, pos = _cstr(buf, pos)
        src_ton, src_npi = buf[pos], buf[pos + 1]
        source, pos = _cstr(buf, pos + 2)
        dst_ton, dst_npi = buf[pos], buf[pos + 1]
        dest, pos = _cstr(buf, pos + 2)
        _esm, _pid, _prio = buf[pos], buf[pos + 1], buf[pos + 2]
        _schedule, pos = _cstr(buf, pos + 3)
        _validity, pos = _cstr(buf, pos)
        _rd, _replace, _coding, _default, sm_length = buf[pos : pos + 5]
        pos += 5
        text = bytes(buf[pos : pos + min(sm_length, 20)])
        pos += sm_length
        while pos + 4 <= end:  # TLVs (message_payload, sar_*, ...)
            _tag, tlv_len = _TLVS.unpack_from(buf, pos)
            pos += 4 + tlv_len
        if pos != end:
            raise ValueError("submit_sm length does not match its fields")
        del src_ton, src_npi, dst_ton, dst_npi, now
        return source, dest, text

    def _receipt(self, mid: bytes, source: bytes, dest: bytes, text: bytes) -> bytes:
        self.seq += 1
        stamp = b"2611220400"
        short = (
            b"id:%s sub:001 dlvrd:001 submit date:%s done date:%s stat:DELIVRD err:000 text:%s"
            % (mid, stamp, stamp, text[:20])
        )[:254]
        body = b"".join((
            b"\0\x01\x01", dest, b"\0\x05\x00", source, b"\0",
            b"\x04\x00\x00\0\0\x00\x00\x00\x00", bytes((len(short),)), short,
            _TLVS.pack(0x001E, len(mid) + 1), mid, b"\0", _STATE_TLV,
        ))
        return HEADER.pack(16 + len(body), DELIVER_SM, 0, self.seq) + body

    def _flush(self) -> None:
        self.timer = None
        now = time.time()
        later = self.later
        out: list[bytes] = []
        while later and later[0][0] <= now:
            out.append(later.popleft()[1])
        if out and self.transport is not None:
            self.counters.receipts += len(out)
            self.transport.write(b"".join(out))
        if later:
            self.timer = asyncio.get_running_loop().call_later(TICK_S, self._flush)


class SinkProcess:
    """The sink as a child process of a benchmark: :meth:`start`, then :meth:`stop` for its
    counters (and its pid, for its CPU from /proc)."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.port = port

    @classmethod
    async def start(cls, delay_s: float) -> SinkProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mta.smsc_sink", "--delay-s", str(delay_s),
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        if not line.startswith(b"port "):
            proc.kill()
            raise RuntimeError(f"the SMSC sink did not start: {line!r}")
        return cls(proc, int(line.split()[1]))

    async def stop(self) -> dict[str, Any]:
        """Stop it; its counters (empty when it died without them)."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        assert self.proc.stdout is not None
        try:
            out = await asyncio.wait_for(self.proc.stdout.read(), 10)
        except TimeoutError:
            self.proc.kill()
            out = b""
        await self.proc.wait()
        lines = out.strip().splitlines()
        return dict(orjson.loads(lines[-1])) if lines else {}


async def serve(port: int, delay_s: float) -> None:
    loop = asyncio.get_running_loop()
    counters = Counters()
    server = await loop.create_server(
        lambda: SinkSession(counters, delay_s), "127.0.0.1", port, backlog=64
    )
    print(f"port {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    sys.stdout.write(orjson.dumps(vars(counters)).decode() + "\n")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay-s", type=float, default=1.0, help="submit → receipt")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(serve(args.port, args.delay_s))
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(serve(args.port, args.delay_s))


if __name__ == "__main__":
    main()
