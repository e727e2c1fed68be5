"""Micro-benchmarks of the SMPP layer: codec rates, text coding, and a loopback session.

Run ``python -m mta.smpp.bench`` (add ``--session N`` for N submit_sm over 127.0.0.1 between two
sessions in this one process, so both ends share one core). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from typing import Any

from mta.smpp.coding import encode_parts, encode_text
from mta.smpp.pdu import (
    DeliverSm,
    Pdu,
    SubmitSm,
    SubmitSmResp,
    decode,
    encode,
)
from mta.smpp.receipt import MessageState, format_receipt, parse_receipt
from mta.smpp.session import Session, connect


def _rate(fn: Callable[[], Any], seconds: float = 1.0) -> float:
    """Calls per second of *fn* over about *seconds*."""
    n = 0
    batch = 1000
    start = time.perf_counter()
    while True:
        for _ in range(batch):
            fn()
        n += batch
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return n / elapsed


def sample_submit() -> SubmitSm:
    data_coding, data = encode_text("Your one-time code is 123456. Do not share it with anyone.")
    return SubmitSm(
        source_addr_ton=5,
        source_addr="ACME",
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr="905332141354",
        registered_delivery=1,
        data_coding=data_coding,
        short_message=data,
        sequence=12345,
    )


def codec_figures(seconds: float = 1.0) -> dict[str, float]:
    """Operations per second of the codec and text coding on this core."""
    from datetime import datetime

    submit = sample_submit()
    submit_frame = encode(submit)
    resp = SubmitSmResp(message_id="5f1e2d3c4b5a6978", sequence=12345)
    resp_frame = encode(resp)
    now = datetime(2026, 1, 1, 12, 0)
    short_message, tlvs = format_receipt(
        "5f1e2d3c4b5a6978", MessageState.DELIVERED, submit_date=now, done_date=now
    )
    receipt = DeliverSm(esm_class=4, short_message=short_message, tlvs=tlvs, sequence=9)
    receipt_frame = encode(receipt)
    long_text = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 8

    def parse() -> Any:
        pdu = decode(receipt_frame)
        assert isinstance(pdu, DeliverSm)
        return parse_receipt(pdu.short_message, pdu.tlvs)

    return {
        "submit_sm encode": _rate(lambda: encode(submit), seconds),
        "submit_sm decode": _rate(lambda: decode(submit_frame), seconds),
        "submit_sm_resp encode": _rate(lambda: encode(resp), seconds),
        "submit_sm_resp decode": _rate(lambda: decode(resp_frame), seconds),
        "deliver_sm receipt decode+parse": _rate(parse, seconds),
        "encode_text 58 chars GSM-7": _rate(lambda: encode_text(long_text[:58]), seconds),
        "encode_parts 464 chars udh (4 parts)": _rate(lambda: encode_parts(long_text), seconds),
    }


async def session_figures(count: int = 20000, window: int = 50) -> dict[str, float]:
    """submit_sm/s from one session to another over loopback, both in this process."""
    counter = 0

    def answer(_session: Session, pdu: Pdu) -> Pdu:
        nonlocal counter
        counter += 1
        return SubmitSmResp(message_id=format(counter, "x"))

    servers: list[Session] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = Session(reader, writer, on_request=answer, window=window)
        session.start()
        servers.append(session)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = await connect("127.0.0.1", port, window=window)
    template = sample_submit()

    async def worker(n: int) -> None:
        for _ in range(n):
            pdu = SubmitSm(
                source_addr=template.source_addr,
                destination_addr=template.destination_addr,
                short_message=template.short_message,
                registered_delivery=1,
            )
            await client.request(pdu)

    per = count // window
    start = time.perf_counter()
    await asyncio.gather(*(worker(per) for _ in range(window)))
    elapsed = time.perf_counter() - start
    await client.unbind()
    server.close()
    await server.wait_closed()
    return {f"session submit_sm/s (window {window}, both ends in-process)": per * window / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--session", type=int, default=0, metavar="N")
    parser.add_argument("--window", type=int, default=50)
    args = parser.parse_args()
    for name, value in codec_figures(args.seconds).items():
        print(f"{name:45s} {value:>12,.0f}/s")
    if args.session:
        figures = asyncio.run(session_figures(args.session, args.window))
        for name, value in figures.items():
            print(f"{name:45s} {value:>12,.0f}/s")


if __name__ == "__main__":
    main()
