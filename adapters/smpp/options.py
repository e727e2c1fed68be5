"""The options of the ``smpp`` adapter, with their defaults and bounds, and its metadata."""

from __future__ import annotations

from typing import Final

from mta.adapters.smpp.client import ROLE_TRX

from mta.sdk import AdapterMeta, ApiStatus, OptionSpec, ReceiptMode, SendPattern
from mta.smpp.coding import LongMode
from mta.smpp.receipt import IdBase

_BINDS: Final = (ROLE_TRX, "transmitter+receiver")

META: Final = AdapterMeta(
    name="smpp",
    description=(
        "SMPP 3.4 ESME: windowed, pipelined submit_sm over bound sessions; deliver_sm "
        "receipts pushed to the reporter; query_sm when no receipt comes."
    ),
    options=(
        OptionSpec("host", str, required=True, description="SMSC host name or address"),
        OptionSpec(
            "port", int, default=2775, minimum=1, maximum=65535, description="SMSC TCP port"
        ),
        OptionSpec("system_id", str, required=True, description="bind system_id"),
        OptionSpec("password", str, secret=True, default="", description="bind password"),
        OptionSpec("system_type", str, default="", description="bind system_type"),
        OptionSpec(
            "bind",
            str,
            default=ROLE_TRX,
            choices=_BINDS,
            description="'transceiver', or 'transmitter+receiver' (two sessions per bind)",
        ),
        OptionSpec(
            "binds", int, default=1, minimum=1, description="sessions (links) per account"
        ),
        OptionSpec(
            "window", int, default=10, minimum=1, description="unanswered requests per session"
        ),
        OptionSpec("enquire_link_s", float, default=30.0, description="idle keepalive"),
        OptionSpec(
            "response_timeout_s", float, default=60.0, description="wait for each response"
        ),
        OptionSpec(
            "throughput",
            float,
            default=0.0,
            minimum=0.0,
            description="submit_sm/s per session (0: any)",
        ),
        OptionSpec("tls", bool, default=False, description="TLS with default verification"),
        OptionSpec("source_ton", int, default=-1, description="-1: 5 for alphanumeric, else 1"),
        OptionSpec("source_npi", int, default=-1, description="-1: 0 for alphanumeric, else 1"),
        OptionSpec("dest_ton", int, default=1, description="destination TON"),
        OptionSpec("dest_npi", int, default=1, description="destination NPI"),
        OptionSpec(
            "long_messages",
            str,
            default=LongMode.UDH.value,
            choices=tuple(m.value for m in LongMode),
            description="'udh', 'sar' or 'payload'",
        ),
        OptionSpec(
            "receipt_id_base",
            str,
            default=IdBase.AUTO.value,
            choices=tuple(b.value for b in IdBase),
            description=(
                "'auto' (same base both sides), 'hex' (receipts hex, submit_sm_resp "
                "decimal) or 'dec' (receipts decimal, submit_sm_resp hex)"
            ),
        ),
        OptionSpec(
            "query_when_no_receipt_s",
            float,
            default=600.0,
            description="query_sm a message with no receipt this long after submission",
        ),
        OptionSpec("service_type", str, default="", description="submit_sm service_type"),
        OptionSpec(
            "reconnect_s",
            float,
            default=1.0,
            minimum=0.01,
            description="first reconnect backoff (doubles)",
        ),
        OptionSpec(
            "throttle_pause_s",
            float,
            default=1.0,
            minimum=0.0,
            description="session pause on ESME_RTHROTTLED/RMSGQFUL (doubles in a row)",
        ),
        OptionSpec(
            "throttle_retries",
            int,
            default=5,
            minimum=0,
            description="retries of a throttled part",
        ),
        OptionSpec(
            "accepted_status",
            str,
            default=ApiStatus.WAITING.value,
            choices=(ApiStatus.WAITING.value, ApiStatus.DELIVERED.value),
            description="what receipt state ACCEPTD means: WAITING or DELIVERED",
        ),
    ),
    pattern=SendPattern.BATCH,
    max_batch=100,
    max_concurrency=8,
    receipts=ReceiptMode.BOTH,
)
