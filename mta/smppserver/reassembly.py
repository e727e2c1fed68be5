"""Bounded reassembly of long messages for the SMPP server: per-client budgets, O(1) expiry.

:class:`Reassembly` keeps the incomplete long messages of each *owner* (the server uses the
client's system_id) under its own :class:`Budget` — incomplete messages, parts and octets —
so one client sending thousands of first parts only ever evicts its *own* oldest incomplete
message, never another client's. Messages expire ``timeout`` seconds after their first part
in time order: one ordered dict in creation order (the timeout is the same for all, so it is
also deadline order), checked from its oldest end, so each call costs O(1) amortised and
never scans. Each part gets an id (``new_id()``) when it first arrives; the same part again
(same reference, total and number) is counted once and answered with the same id, so a part
repeated 5,000 times is still one part, one id, one receipt. A part whose total differs from
the waiting ones means the reference was reused: the old message is dropped and this one
starts afresh.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Final

from mta.smpp.coding import ConcatInfo

__all__ = ["Budget", "Complete", "Reassembly", "ReassemblyFull"]

_Slot = tuple[str, Hashable, int]  # owner, caller's key, reference


def _new_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class Budget:
    """What one owner may keep waiting at once."""

    max_messages: int = 200
    max_parts: int = 2000
    max_bytes: int = 1 << 20


@dataclass(frozen=True, slots=True)
class Complete:
    """A message whose last part arrived: the joined user data, and the ids given to its
    other parts (in part order; the completing part has none)."""

    data: bytes
    data_coding: int
    parts: int
    part_ids: list[str]


class ReassemblyFull(Exception):
    """One message alone is over its owner's budget."""


@dataclass(slots=True)
class _Message:
    total: int
    data_coding: int
    created: float
    parts: dict[int, tuple[bytes, str]] = field(default_factory=dict)
    size: int = 0


@dataclass(slots=True)
class _Usage:
    slots: OrderedDict[_Slot, None] = field(default_factory=OrderedDict)  # oldest first
    parts: int = 0
    size: int = 0
    evicted: int = 0


_NO_EVICTIONS: Final = 0


class Reassembly:
    """Incomplete long messages by (owner, key, reference), bounded per owner."""

    def __init__(
        self,
        timeout: float = 300.0,
        budget: Budget | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        new_id: Callable[[], str] = _new_id,
    ) -> None:
        self.timeout = timeout
        self.budget = budget or Budget()
        self.expired = 0
        self.evictions = 0  # incomplete messages dropped for their owner's budget, in all
        self._clock = clock
        self._new_id = new_id
        self._messages: OrderedDict[_Slot, _Message] = OrderedDict()  # oldest first
        self._usage: dict[str, _Usage] = {}

    def __len__(self) -> int:
        return len(self._messages)

    def usage(self, owner: str) -> tuple[int, int, int]:
        """(incomplete messages, parts, octets) *owner* has waiting."""
        u = self._usage.get(owner)
        return (len(u.slots), u.parts, u.size) if u else (0, 0, 0)

    def evicted(self, owner: str) -> int:
        """How many of *owner*'s incomplete messages were dropped for its budget."""
        u = self._usage.get(owner)
        return u.evicted if u else _NO_EVICTIONS

    def add(self, owner: str, key: Hashable, info: ConcatInfo, data_coding: int) -> str | Complete:
        """Take one part (``info.total`` > 1): its part id while the message is incomplete
        (the same id for a repeated part), or the :class:`Complete` message. Raises
        :class:`ReassemblyFull` when this message alone is over the owner's budget (it is then
        dropped)."""
        now = self._clock()
        self.expire(now)
        slot: _Slot = (owner, key, info.ref)
        usage = self._usage.get(owner)
        if usage is None:
            usage = self._usage[owner] = _Usage()
        message = self._messages.get(slot)
        if message is not None and message.total != info.total:
            self._drop(slot)
            message = None
        if message is None:
            message = _Message(info.total, data_coding, now)
            self._messages[slot] = message
            usage.slots[slot] = None
        known = message.parts.get(info.seq)
        if known is not None:
            return known[1]  # a repeated part: counted once, same id
        if len(message.parts) + 1 == message.total:
            self._drop(slot)
            data = b"".join(
                info.data if i == info.seq else message.parts[i][0]
                for i in range(1, message.total + 1)
            )
            ids = [message.parts[i][1] for i in sorted(message.parts)]
            return Complete(data, message.data_coding, message.total, ids)
        part_id = self._new_id()
        message.parts[info.seq] = (info.data, part_id)
        message.size += len(info.data)
        usage.parts += 1
        usage.size += len(info.data)
        self._fit(slot, usage)
        return part_id

    def expire(self, now: float | None = None) -> int:
        """Drop the incomplete messages older than the timeout; how many."""
        if now is None:
            now = self._clock()
        cutoff = now - self.timeout
        gone = 0
        while self._messages:
            slot, message = next(iter(self._messages.items()))
            if message.created > cutoff:
                break
            self._drop(slot)
            gone += 1
        self.expired += gone
        return gone

    def _fit(self, current: _Slot, usage: _Usage) -> None:
        budget = self.budget
        while (
            len(usage.slots) > budget.max_messages
            or usage.parts > budget.max_parts
            or usage.size > budget.max_bytes
        ):
            oldest = next(iter(usage.slots))
            if oldest == current:
                if len(usage.slots) == 1:
                    self._drop(current)
                    raise ReassemblyFull(
                        f"one long message is over the reassembly budget of {current[0]!r} "
                        f"({budget.max_parts} parts, {budget.max_bytes} octets)"
                    )
                usage.slots.move_to_end(current)  # evict the others first
                continue
            self._drop(oldest)
            usage.evicted += 1
            self.evictions += 1

    def _drop(self, slot: _Slot) -> None:
        message = self._messages.pop(slot)
        usage = self._usage[slot[0]]
        del usage.slots[slot]
        usage.parts -= len(message.parts)
        usage.size -= message.size  # owners are the configured clients: their entries stay
