"""Who may bind and how often: credentials, bind-attempt limits, the limits themselves.

The classes here only decide (no sockets, no loop; the rate limiters take an injectable
clock), so each rule is unit-tested on its own; the bind handlers
(:mod:`mta.smppserver.handlers`) apply the decisions.

* :class:`SmppLimits` — the limits, with safe defaults, read from ``MTA_SMPP_*`` variables
  (:meth:`SmppLimits.from_env`; the ``mta smpp-server`` flags of the same names set them).
* :class:`BindLimiter` — every bind attempt takes a token from its source IP's bucket and from
  its system_id's bucket *when it starts* (so attempts running in parallel count at once, not
  when they finish). An attempt without a token is refused without looking at the password.
  A successful bind gives its tokens back and makes the (IP, system_id) pair *trusted*: a
  trusted pair skips both buckets, so an attacker draining a system_id's bucket from elsewhere
  cannot lock out a client that already bound from its address; a failed attempt from a
  trusted pair revokes the trust.
* :class:`ClientDirectory` checks a bind's ``system_id``/``password`` against the
  ``[[smpp_client]]`` entries in constant time (:func:`hmac.compare_digest`, also run for an
  unknown system_id so the answer time does not tell which ids exist) and answers every
  failure with the same ESME_RBINDFAIL, so the status does not tell either.
* :class:`ThroughputBucket` is the per-client token bucket behind ESME_RTHROTTLED (rate = the
  client's ``throughput``, burst = one second of it). It is per process: a client bound to N
  server processes at once may get up to N times its rate.
"""

from __future__ import annotations

import hmac
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Final

from mta.config import SmppClient
from mta.smpp.pdu import CommandStatus

__all__ = [
    "LIMIT_HELP",
    "BindLimiter",
    "ClientDirectory",
    "SmppLimits",
    "ThroughputBucket",
    "TokenBuckets",
]

Clock = Callable[[], float]
_MAX_KEYS: Final = 10_000
_DUMMY: Final = b"\0" * 8  # compared against when the system_id is unknown


@dataclass(frozen=True, slots=True)
class SmppLimits:
    """What one ``mta smpp-server`` process lets a peer do (each field: ``MTA_SMPP_<NAME>``)."""

    bind_timeout_s: float = 10.0
    max_connections: int = 1000
    max_connections_per_ip: int = 50
    bind_burst: int = 10
    bind_rate_per_ip: float = 1.0
    bind_rate_per_system_id: float = 0.5
    bind_fail_delay_s: float = 1.0
    reassembly_max_messages: int = 200
    reassembly_max_parts: int = 2000
    reassembly_max_bytes: int = 1 << 20
    reassembly_timeout_s: float = 300.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value < 0 or (value == 0 and f.name != "bind_fail_delay_s"):
                raise ValueError(
                    f"MTA_SMPP_{f.name.upper()}: {value!r} must be positive"
                    + (" or 0" if f.name == "bind_fail_delay_s" else "")
                )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SmppLimits:
        """The limits from ``MTA_SMPP_<NAME>`` variables (defaults for those not set); raises
        ValueError naming the variable when one is not a positive number."""
        environ = os.environ if environ is None else environ
        values: dict[str, float | int] = {}
        for f in fields(cls):
            var = f"MTA_SMPP_{f.name.upper()}"
            raw = environ.get(var, "").strip()
            if not raw:
                continue
            kind = int if isinstance(getattr(cls(), f.name), int) else float
            try:
                values[f.name] = kind(raw)
            except ValueError:
                what = "an integer" if kind is int else "a number"
                raise ValueError(f"{var}: {raw!r} is not {what}") from None
        return cls(**values)  # type: ignore[arg-type]


LIMIT_HELP: Final[dict[str, str]] = {
    "bind_timeout_s": "Seconds a connection may stay unbound (enquire_link included) before "
    "it is closed.",
    "max_connections": "Connections open at once, all peers; one more is closed at once.",
    "max_connections_per_ip": "Connections open at once from one IP address.",
    "bind_burst": "Bind attempts one IP, and one system_id, may start at once.",
    "bind_rate_per_ip": "Bind attempts per second per IP, sustained (counted as they start).",
    "bind_rate_per_system_id": "Bind attempts per second per system_id, sustained, from any "
    "number of IPs.",
    "bind_fail_delay_s": "Every refused bind is answered ESME_RBINDFAIL after this (±10 %).",
    "reassembly_max_messages": "Incomplete long messages kept per client (system_id); over it "
    "the client's own oldest is dropped.",
    "reassembly_max_parts": "Parts of incomplete long messages kept per client.",
    "reassembly_max_bytes": "Octets of incomplete long messages kept per client.",
    "reassembly_timeout_s": "Seconds an incomplete long message waits for its other parts.",
}


class TokenBuckets:
    """Token buckets by key (``rate`` per second, at most ``burst``), at most ``max_keys``
    kept (the least recently used dropped: a dropped bucket comes back full)."""

    def __init__(
        self, rate: float, burst: float, *, max_keys: int = _MAX_KEYS, clock: Clock = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def _level(self, key: str, now: float) -> float:
        entry = self._buckets.pop(key, None)
        if entry is None:
            return self.burst
        tokens, at = entry
        return min(self.burst, tokens + (now - at) * self.rate)

    def _store(self, key: str, tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)  # re-inserted: most recently used last
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)

    def take(self, key: str) -> bool:
        """Take one token of *key*'s bucket; False (nothing taken) when it has none."""
        now = self._clock()
        tokens = self._level(key, now)
        if tokens < 1.0:
            self._store(key, tokens, now)
            return False
        self._store(key, tokens - 1.0, now)
        return True

    def give_back(self, key: str) -> None:
        now = self._clock()
        self._store(key, min(self.burst, self._level(key, now) + 1.0), now)

    def __len__(self) -> int:
        return len(self._buckets)


class BindLimiter:
    """Bind attempts counted when they start, per source IP and per system_id."""

    def __init__(
        self,
        rate_per_ip: float,
        rate_per_system_id: float,
        burst: int,
        *,
        trust_s: float = 86400.0,
        max_keys: int = _MAX_KEYS,
        clock: Clock = time.monotonic,
    ) -> None:
        self.ips = TokenBuckets(rate_per_ip, burst, max_keys=max_keys, clock=clock)
        self.system_ids = TokenBuckets(rate_per_system_id, burst, max_keys=max_keys, clock=clock)
        self.trust_s = trust_s
        self.max_keys = max_keys
        self._clock = clock
        self._trusted: OrderedDict[tuple[str, str], float] = OrderedDict()  # → trusted until

    def trusted(self, ip: str, system_id: str) -> bool:
        until = self._trusted.get((ip, system_id))
        return until is not None and until > self._clock()

    def start(self, ip: str, system_id: str) -> str:
        """Count an attempt starting now: ``""`` when its credentials may be checked, else what
        it is over (``"ip"`` or ``"system_id"``) — refuse it without checking them."""
        if self.trusted(ip, system_id):
            return ""
        if not self.ips.take(ip):
            return "ip"
        if not self.system_ids.take(system_id):
            return "system_id"
        return ""

    def succeeded(self, ip: str, system_id: str) -> None:
        """A bind that passed: not a guess (its tokens come back), and the pair is trusted."""
        pair = (ip, system_id)
        if pair not in self._trusted:
            self.ips.give_back(ip)
            self.system_ids.give_back(system_id)
        self._trusted.pop(pair, None)
        self._trusted[pair] = self._clock() + self.trust_s
        while len(self._trusted) > self.max_keys:
            self._trusted.popitem(last=False)

    def failed(self, ip: str, system_id: str) -> None:
        """A bind refused for its credentials: a trusted pair is trusted no more."""
        self._trusted.pop((ip, system_id), None)


class ClientDirectory:
    """The configured clients by system_id, with the bind check."""

    def __init__(self, clients: Iterable[SmppClient]) -> None:
        self.by_id: dict[str, SmppClient] = {c.system_id: c for c in clients}
        self._buckets = {c.system_id: ThroughputBucket(c.throughput) for c in self.by_id.values()}

    @property
    def account_ids(self) -> set[int]:
        return {c.account_id for c in self.by_id.values()}

    def bucket(self, system_id: str) -> ThroughputBucket:
        return self._buckets[system_id]

    def check(self, system_id: str, password: str) -> tuple[SmppClient | None, int]:
        """(client, ESME_ROK), or (None, ESME_RBINDFAIL) for an unknown system_id and for a
        wrong password alike (the same work is done for both)."""
        client = self.by_id.get(system_id)
        given = password.encode("latin-1", "replace")
        expected = client.password.encode("latin-1", "replace") if client else _DUMMY
        matches = hmac.compare_digest(given, expected)
        if client is None or not matches:
            return None, CommandStatus.ESME_RBINDFAIL
        return client, CommandStatus.ESME_ROK

    def knows(self, system_id: str) -> bool:
        """For the server's own log only, never for an answer."""
        return system_id in self.by_id


class ThroughputBucket:
    """A token bucket: ``rate`` tokens per second, at most ``burst`` (default: one second's)."""

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = max(1.0, burst if burst is not None else rate)
        self._tokens = self.burst
        self._last = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True
