"""Where each piece of state lives: the shard of a batch, a message and a pushed receipt, and
the names of every key of one shard.

A prefix's state is spread over ``MTA_SHARDS`` hash tags ``{<prefix>:0}`` … ``{<prefix>:N-1}``
(one shard: ``{<prefix>}``, the layout before sharding). A batch's markers, its messages'
pending records and due entries, their held copies and the report bodies written with them all
live in the shard of the batch id, so every script and MULTI stays in one Redis Cluster slot. A
pushed receipt and the partner index entry that finds its message live in the shard of
(account, partner id): the receipt lookup is one shard, whichever shard the message is in.
State that is per account or per prefix (rate limits, the signing key, adapter state, the
SMPP server's records) stays under ``{<prefix>}``.

The shard functions are CRC-32 (zlib) modulo N: stable across processes, Python versions and
machines, which ``hash()`` is not.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

#: The shard count when ``MTA_SHARDS`` is not set.
DEFAULT_SHARDS = 16
MAX_SHARDS = 1024


def shard_of(batch_id: str, shards: int) -> int:
    """The shard of a batch (and of each of its messages)."""
    if shards == 1:
        return 0
    return zlib.crc32(batch_id.encode("utf-8", "surrogatepass")) % shards


def shard_of_message(message_id: str, shards: int) -> int:
    """The shard of ``<batchId>:<index>``: its batch's."""
    if shards == 1:
        return 0
    return shard_of(message_id.rpartition(":")[0], shards)


def receipt_shard_of(account: str, partner_id: str, shards: int) -> int:
    """The shard of a pushed receipt and of its partner index entry."""
    if shards == 1:
        return 0
    return zlib.crc32(f"{account}\x00{partner_id}".encode("utf-8", "surrogatepass")) % shards


def shard_tag(prefix: str, index: int, shards: int) -> str:
    """The hash tag of one shard; a single shard keeps the prefix's own tag."""
    return "{" + prefix + "}" if shards == 1 else "{" + f"{prefix}:{index}" + "}"


@dataclass(frozen=True, slots=True)
class ShardKeys:
    """The keys of one shard (``T`` = its tag):

    ``T:m:<batchId>`` markers, ``T:pending``, ``T:due``, ``T:lease``, ``T:poked`` (set:
    leased messages whose receipt was pushed during the lease, due at once when the lease ends),
    ``T:held`` + ``T:held:data``, ``T:outbox`` + ``T:outbox:due``, and the receipt side:
    ``T:pidx:<account>``, ``T:rcpt:<account>:<partnerId>``.
    """

    index: int
    tag: str
    pending: str
    due: str
    lease: str
    poked: str
    held: str
    held_data: str
    outbox: str
    outbox_due: str

    @classmethod
    def of(cls, prefix: str, index: int, shards: int) -> ShardKeys:
        tag = shard_tag(prefix, index, shards)
        return cls(
            index, tag, f"{tag}:pending", f"{tag}:due", f"{tag}:lease", f"{tag}:poked",
            f"{tag}:held", f"{tag}:held:data", f"{tag}:outbox", f"{tag}:outbox:due",
        )

    def markers(self, batch_id: str) -> str:
        return f"{self.tag}:m:{batch_id}"

    def partner_index(self, account: str) -> str:
        return f"{self.tag}:pidx:{account}"

    def receipt(self, account: str, partner_id: str) -> str:
        return f"{self.tag}:rcpt:{account}:{partner_id}"



def outbox_entry_name(writer: str, token: str, shard: int, n: int) -> str:
    """An outbox entry's name (also the report's AMQP message id): it names its shard."""
    return f"{writer}:{token}:{n}:{shard}"


def shard_of_entry(name: str, shards: int) -> int:
    """The shard an outbox entry was written to (names from before sharding: shard 0)."""
    parts = name.split(":")
    if len(parts) == 4 and parts[3].isdigit():
        return int(parts[3]) % shards
    return 0
