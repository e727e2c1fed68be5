"""The ``smpp`` partner adapter package: an SMPP 3.4 ESME on our own asyncio codec.

Modules: :mod:`~mta.adapters.smpp.adapter` (Login/Send/Report/Destroy, status mapping, the
lost-response decision), :mod:`~mta.adapters.smpp.client` (supervised binds, reconnect backoff),
:mod:`~mta.adapters.smpp.receipts` (submission records, receipt matching across id bases, long
messages' part states). The codec, text coding, receipt parsing and session are in
:mod:`mta.smpp`, shared with ``mta smpp-server``; why our own codec rather than smpp34 or
aiosmpplib is measured and written in :mod:`mta.smpp` (and docs/adapters/smpp.md).
"""

from mta.adapters.smpp.adapter import SmppAdapter

__all__ = ["SmppAdapter"]
