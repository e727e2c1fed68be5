"""``mta bench --partner smpp --ingress``: the SMPP client side of the benchmark.

One transceiver (our asyncio :class:`~mta.smpp.session.Session`, window W) binds to the
benchmark's ``mta smpp-server``, submits N submit_sm with ``registered_delivery`` 1 as fast as
the window allows, and answers every deliver_sm receipt the server brings back at once, counting
them. :class:`IngressFigures` holds what it saw: submit_sm accepted and their rate (first submit
to last submit_sm_resp), receipts received and their rate (first submit to last receipt).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from mta.smpp import pdu as P
from mta.smpp.receipt import is_receipt
from mta.smpp.session import Session, connect

#: The [[smpp_client]] the benchmark binds as; its messages go to the default account (smpp).
SMPP_CLIENT = """
[[smpp_client]]
system_id = "bench"
password = "bench"
account_id = 0
throughput = 1000000
"""
TEXT = b"Your one-time code is 123456. Do not share it with anyone."


@dataclass
class IngressFigures:
    submitted: int = 0
    accepted: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    receipts: int = 0
    started: float = 0.0
    last_resp: float = 0.0
    last_receipt: float = 0.0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    want: int = 0

    def on_request(self, _session: Session, pdu: P.Pdu) -> P.Pdu:
        if isinstance(pdu, P.DeliverSm) and is_receipt(pdu.esm_class):
            self.receipts += 1
            self.last_receipt = time.monotonic()
            if self.receipts >= self.want:
                self.done.set()
        return P.response_for(pdu)

    def as_dict(self) -> dict[str, Any]:
        return {
            "submit_sm": self.submitted,
            "accepted": self.accepted,
            "errors": self.errors,
            "submit_sm_s": self.accepted / max(1e-9, self.last_resp - self.started),
            "receipts": self.receipts,
            "receipts_s": self.receipts / max(1e-9, self.last_receipt - self.started),
        }


async def wait_listening(port: int, proc: asyncio.subprocess.Process, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise RuntimeError(f"mta smpp-server exited with {proc.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        return
    raise RuntimeError("mta smpp-server did not listen")


async def bind(port: int, window: int, figures: IngressFigures) -> Session:
    session = await connect(
        "127.0.0.1", port, window=window, response_timeout=120, on_request=figures.on_request
    )
    bound = await session.request(P.BindTransceiver(system_id="bench", password="bench"))
    if bound.status:
        raise RuntimeError(f"bind to mta smpp-server refused: {P.status_name(bound.status)}")
    return session


async def submit(session: Session, total: int, window: int, figures: IngressFigures) -> None:
    """Submit *total* messages over *window* concurrent senders."""
    figures.want = total
    figures.started = time.monotonic()
    next_n = 0

    async def sender() -> None:
        nonlocal next_n
        while next_n < total:
            n = next_n
            next_n += 1
            pdu = P.SubmitSm(
                source_addr="ACME", source_addr_ton=5, dest_addr_ton=1, dest_addr_npi=1,
                destination_addr=f"9053{n % 100_000_000:08d}", registered_delivery=1,
                short_message=TEXT,
            )
            figures.submitted += 1
            resp = await session.request(pdu)
            if resp.status:
                name = P.status_name(resp.status)
                figures.errors[name] = figures.errors.get(name, 0) + 1
            else:
                figures.accepted += 1
                figures.last_resp = time.monotonic()

    await asyncio.gather(*(sender() for _ in range(window)))
