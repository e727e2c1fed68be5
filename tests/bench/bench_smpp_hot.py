"""Benchmark (not a test): µs per call of the SMPP functions on the worker's per-message path.

Times each function over a few repeats and prints the best, so runs of two checkouts can be
compared: ``PYTHONPATH=<checkout> .venv/bin/python tests/bench/bench_smpp_hot.py`` for each,
taken in turn (the machine is shared: compare the minimum of several runs, not one).
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from mta.smpp import pdu as P
from mta.smpp.receipt import (
    MessageState,
    format_receipt,
    is_receipt,
    normalise_id,
    quick_receipt,
)

RECEIPT_TEXT = (
    b"id:4f2a9c sub:001 dlvrd:001 submit date:2611221030 done date:2611221031"
    b" stat:DELIVRD err:000 text:Your code is 4821"
)


def cases() -> dict[str, Callable[[], Any]]:
    submit = P.SubmitSm(
        source_addr_ton=5,
        source_addr="ACME",
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr="905332141354",
        registered_delivery=1,
        validity_period="000000020000000R",
        short_message=b"Your code is 4821",
        sequence=42,
    )
    receipt = P.DeliverSm(
        source_addr="905332141354",
        destination_addr="ACME",
        esm_class=4,
        short_message=RECEIPT_TEXT,
        tlvs={0x001E: b"4f2a9c\0", 0x0427: b"\x02"},
        sequence=43,
    )
    submit_frame = P.encode(submit)
    receipt_frame = P.encode(receipt)
    resp_frame = P.encode(P.SubmitSmResp(message_id="4f2a9c", sequence=42))
    deliver_resp = P.DeliverSmResp(sequence=43)
    when = datetime(2026, 11, 22, 10, 30, tzinfo=UTC)
    out: dict[str, Callable[[], Any]] = {
        "encode submit_sm": lambda: P.encode(submit),
        "decode submit_sm": lambda: P.decode(submit_frame),
        "decode submit_sm_resp": lambda: P.decode(resp_frame),
        "decode deliver_sm receipt": lambda: P.decode(receipt_frame),
        "encode deliver_sm_resp": lambda: P.encode(deliver_resp),
        "response_for deliver_sm": lambda: P.response_for(receipt),
        "deliver_sm_resp frame": (
            (lambda: P.response_frame(receipt, 0))
            if hasattr(P, "response_frame")
            else (lambda: P.encode(P.response_for(receipt, 0)))
        ),
        "is_receipt": lambda: is_receipt(4),
        "quick_receipt": lambda: quick_receipt(receipt.short_message, receipt.tlvs),
        "normalise_id": lambda: normalise_id("4f2a9c"),
        "format_receipt": lambda: format_receipt(
            "4f2a9c",
            MessageState.DELIVERED,
            submit_date=when,
            done_date=when,
            text="Your code is 4821",
        ),
    }
    try:
        from mta.adapters.smpp.validity import validity_period

        out["validity_period"] = lambda: validity_period("209912312359", UTC)
    except ImportError:  # pragma: no cover - a checkout without the adapter
        pass
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=100_000, help="calls per repeat")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("only", nargs="*", help="names containing any of these words")
    args = parser.parse_args()
    for name, fn in cases().items():
        if args.only and not any(word in name for word in args.only):
            continue
        best = min(timeit.repeat(fn, number=args.number, repeat=args.repeat))
        print(f"  {name:28s} {best / args.number * 1e6:7.3f} µs")


if __name__ == "__main__":
    main()
