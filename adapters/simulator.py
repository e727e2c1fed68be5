"""A simulated partner for the demo, tests and benchmarks: configurable acceptance and delivery.

Stateless by design, so any reporter process can answer Report for any message: the partner
message id carries the submission time and the message's fate. Every decision is a hash of
(seed, number, text), so a run is deterministic for a given ``seed`` whatever the order or the
process that sends; messages with the same number and text share their fate.

With ``push_receipts = true`` it behaves like a partner that pushes its receipts (an SMSC's
deliver_sm, a webhook): each accepted message's final is pushed through the adapter's
:class:`~mta.adapter.ReceiptSink` ``report_delay_s`` after the Send, and Report is never asked
(this instance's receipts mode is ``push``). ``mta bench --push`` measures that path.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
import zlib
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, ClassVar

from mta.sdk import (
    AdapterContext,
    AdapterMeta,
    ApiStatus,
    OptionSpec,
    ReceiptMode,
    SendPattern,
    SmsReportRequest,
    SmsResponse,
    SmsResult,
    SmsSendRequest,
)

_SCALE = float(1 << 32)
_OK = ApiStatus.OK


def _draw(seed: int, key: str) -> float:
    """A deterministic number in [0, 1) for (seed, key): CRC-32, cheap and stable across
    processes (unlike ``hash()``); good enough to split traffic by ratio."""
    return zlib.crc32(key.encode(), seed) / _SCALE


class SimulatorAdapter:
    """Accepts ``accept_ratio`` of messages; ``deliver_ratio`` of those end DELIVERED."""

    meta: ClassVar[AdapterMeta] = AdapterMeta(
        name="simulator",
        description="Simulated partner: latency, acceptance and delivery ratios, receipt delay.",
        options=(
            OptionSpec(
                "accept_ratio",
                float,
                default=1.0,
                minimum=0.0,
                maximum=1.0,
                description="share Send accepts (OK)",
            ),
            OptionSpec(
                "deliver_ratio",
                float,
                default=0.95,
                minimum=0.0,
                maximum=1.0,
                description="share of accepted DELIVERED",
            ),
            OptionSpec(
                "report_delay_s",
                float,
                default=2.0,
                minimum=0.0,
                description="when the final is known",
            ),
            OptionSpec(
                "latency_ms", float, default=0.0, minimum=0.0, description="added to each call"
            ),
            OptionSpec("seed", str, default="", description="fixes every decision; '' = random"),
            OptionSpec(
                "push_receipts",
                bool,
                default=False,
                description="push each final after report_delay_s instead of answering Report",
            ),
        ),
        pattern=SendPattern.BATCH,
        max_batch=1000,
        max_concurrency=16,
    )

    def __init__(self, options: Mapping[str, Any], context: AdapterContext | None = None) -> None:
        o = self.meta.resolve(options)  # defaults filled in, bounds checked (ValueError)
        self.accept_ratio = float(o["accept_ratio"])
        self.deliver_ratio = float(o["deliver_ratio"])
        self.report_delay_s = float(o["report_delay_s"])
        self.latency_s = float(o["latency_ms"]) / 1000.0
        seed = str(o["seed"])
        self.seed = zlib.crc32((seed or os.urandom(8).hex()).encode())
        self._ids = itertools.count()
        self._run = os.urandom(4).hex()  # partner ids stay unique across processes
        self.logged_in = False
        self.context = context
        self.pushes = bool(o["push_receipts"]) and context is not None
        if self.pushes:  # this instance's partner pushes: the reporter never polls it
            # The instance's metadata (what the worker and reporter read) says so.
            self.__dict__["meta"] = replace(type(self).meta, receipts=ReceiptMode.PUSH)
        self._pushing: set[asyncio.Task[None]] = set()

    async def login(self, secret_key: str) -> bool:
        # A secret key of "nok" answers NOK, so tests can exercise a refused login.
        self.logged_in = secret_key != "nok"
        return self.logged_in

    async def _latency(self) -> None:
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)

    async def send(self, request: SmsSendRequest) -> SmsResponse:
        await self._latency()
        now_ms = int(time.time() * 1000)
        results = []
        seed, accept = self.seed, self.accept_ratio
        prefix, suffix, ids = f"sim-{self._run}-", f"-{now_ms:x}", self._ids
        accepted: list[str] = []
        for message in request.messages:
            key = f"{message.mobileNumber}|{message.text}"
            if accept >= 1.0 or (accept > 0.0 and _draw(seed, "accept|" + key) < accept):
                fate = "-d" if self._fate(key) else "-f"
                pid = f"{prefix}{next(ids):x}{fate}{suffix}"
                results.append(SmsResult(pid, "ACCEPTED", "", _OK))
                if self.pushes:
                    accepted.append(pid)
            else:
                results.append(
                    SmsResult(
                        partnerStatus="REJECTED",
                        partnerDetail="simulator: rejected by accept_ratio",
                        apiStatus=ApiStatus.FAIL,
                    )
                )
        if accepted:
            task = asyncio.create_task(self._push_later(accepted))
            self._pushing.add(task)
            task.add_done_callback(self._pushing.discard)
        return SmsResponse(partnerPacketId="", results=results)

    async def _push_later(self, pids: list[str]) -> None:
        """Push the finals of one Send's accepted messages once they are known."""
        await asyncio.sleep(self.report_delay_s)
        assert self.context is not None
        answer = await self.report(SmsReportRequest("", pids), at_ms=float("inf"))
        await self.context.receipts.push(answer.results)

    def _fate(self, key: str) -> bool:
        """True when the message will end DELIVERED."""
        ratio = self.deliver_ratio
        return ratio >= 1.0 or (ratio > 0.0 and _draw(self.seed, "deliver|" + key) < ratio)

    async def report(self, request: SmsReportRequest, at_ms: float = 0.0) -> SmsResponse:
        """The messages' states now (or at ``at_ms``, epoch ms: the push uses their end)."""
        if not at_ms:
            await self._latency()
        now_ms = at_ms or time.time() * 1000
        delay_ms = self.report_delay_s * 1000
        results = []
        for pid in request.messages:
            parts = pid.split("-")
            try:
                submitted_ms, fate = int(parts[4], 16), parts[3]
            except (IndexError, ValueError):
                fate = ""
            if parts[0] != "sim" or fate not in ("d", "f"):
                results.append(
                    SmsResult(
                        partnerMessageId=pid,
                        partnerStatus="UNKNOWN",
                        partnerDetail="simulator: unknown message id",
                        apiStatus=ApiStatus.FAIL,
                    )
                )
                continue
            if now_ms < submitted_ms + delay_ms:
                results.append(
                    SmsResult(
                        partnerMessageId=pid, partnerStatus="ENROUTE", apiStatus=ApiStatus.WAITING
                    )
                )
            elif fate == "d":
                results.append(
                    SmsResult(
                        partnerMessageId=pid, partnerStatus="DELIVRD", apiStatus=ApiStatus.DELIVERED
                    )
                )
            else:
                results.append(
                    SmsResult(
                        partnerMessageId=pid,
                        partnerStatus="UNDELIV",
                        partnerDetail="simulator: undeliverable by deliver_ratio",
                        apiStatus=ApiStatus.FAIL,
                    )
                )
        return SmsResponse(partnerPacketId="", results=results)

    async def destroy(self) -> None:
        self.logged_in = False
        for task in list(self._pushing):
            task.cancel()

    async def test_connection(self) -> bool:
        return True

    async def test_credentials(self) -> bool:
        return True

    async def test_proxy(self) -> bool:
        return True
