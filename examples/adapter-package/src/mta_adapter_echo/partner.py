"""The echo partner, in process: what a real adapter reaches over the network, kept tiny.

It accepts every message except those to the unassigned country code 999, and delivers
each one ``delay_s`` after submission. It keeps no state: a message id carries its delivery
time and a signature made with the account's API key, so any adapter instance (in any
reporter process) can ask about any id, and ids the partner never issued are recognised.

Its failures look like an HTTP API's: :class:`PartnerError` with a status code. Tests make it
fail on purpose by setting :attr:`EchoPartner.outage` (for example to 503 or 429).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from dataclasses import dataclass


class PartnerError(Exception):
    """The partner refused a call: an HTTP-like status, its error text, and Retry-After."""

    def __init__(self, status: int, text: str, retry_after: float | None = None) -> None:
        super().__init__(f"{status} {text}")
        self.status = status
        self.text = text
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Submitted:
    """The partner's answer for one message of a submission."""

    message_id: str  # "" when rejected
    status: str  # ACCEPTED or REJECTED
    error: str = ""


_ERRORS = {
    400: "bad request",
    401: "invalid API key",
    429: "too many requests",
    503: "service unavailable",
}


class EchoPartner:
    """The partner's API: ``login``, ``submit`` (a batch) and ``status`` (of many ids)."""

    def __init__(self) -> None:
        #: When set, every call fails with this status (tests simulate outages with it).
        self.outage: int | None = None

    def _answer(self, api_key: str) -> None:
        if self.outage is not None:
            text = _ERRORS.get(self.outage, "error")
            raise PartnerError(self.outage, text, 1.0 if self.outage == 429 else None)
        if not api_key:
            raise PartnerError(401, _ERRORS[401])

    @staticmethod
    def _sign(api_key: str, body: str) -> str:
        return hmac.new(api_key.encode(), body.encode(), hashlib.sha256).hexdigest()[:16]

    async def login(self, api_key: str, secret_key: str) -> bool:
        """The partner accepts any non-empty secret key."""
        self._answer(api_key)
        return bool(secret_key)

    async def submit(
        self, api_key: str, messages: list[tuple[str, str]], delay_s: float
    ) -> list[Submitted]:
        """Submit (number, text) pairs; one answer per message, in order."""
        self._answer(api_key)
        deliver_at = int((time.time() + delay_s) * 1000)
        answers = []
        for number, _text in messages:
            if number.startswith("999"):
                answers.append(Submitted("", "REJECTED", "no route to country code 999"))
                continue
            body = f"echo-{os.urandom(6).hex()}-{deliver_at:x}"
            answers.append(Submitted(f"{body}-{self._sign(api_key, body)}", "ACCEPTED"))
        return answers

    async def status(self, api_key: str, message_ids: list[str]) -> dict[str, str]:
        """The state of each id: DELIVERED, ENROUTE, or UNKNOWN for ids it never issued."""
        self._answer(api_key)
        now_ms = time.time() * 1000
        states = {}
        for message_id in message_ids:
            body, _, signature = message_id.rpartition("-")
            try:
                deliver_at = int(body.rsplit("-", 1)[1], 16)
            except (IndexError, ValueError):
                deliver_at = None
            if deliver_at is None or not hmac.compare_digest(signature, self._sign(api_key, body)):
                states[message_id] = "UNKNOWN"
            else:
                states[message_id] = "DELIVERED" if now_ms >= deliver_at else "ENROUTE"
        return states


#: The one partner of this process, as there is one partner service on the network.
PARTNER = EchoPartner()
