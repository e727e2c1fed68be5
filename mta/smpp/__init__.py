"""SMPP 3.4 for both directions: our own asyncio codec and session, shared by the ``smpp`` adapter
and the ``mta smpp-server`` front.

Modules: :mod:`~mta.smpp.pdu` (the struct-based codec), :mod:`~mta.smpp.coding` (text ↔
short_message, long messages, reassembly), :mod:`~mta.smpp.receipt` (delivery receipts, states,
message id bases), :mod:`~mta.smpp.session` (framing, window, timers over asyncio streams).
:mod:`mta.loglimit` (the log-flood limiter of sessions and the server). The ``mta
smpp-server`` front itself (binds, submits, micro-batches, receipts) is the package
:mod:`mta.smppserver`.

Why our own and not a library (measured, docs/decisions/smpp-codec.md, one shared 2-core box,
npm ``smpp`` SMSC simulator on loopback):

- ``smpp34`` 1.5.0 (Rust engine, pyo3 bridge): 10.5k submit_sm/s at window 10 without receipts,
  but its client never sets TCP_NODELAY (strace: no setsockopt), so with receipts flowing back
  each interleaved ``deliver_sm_resp``/``submit_sm`` stalls on Nagle + delayed ACK: 0.26-1.7k/s
  at p50 ≈ 43 ms. Forcing TCP_NODELAY with a preload shim restored 7.2k/s, but the session then
  wedged after 10-13 s in all four longer runs (in-flight submits failed ESME_RSYSERR, nothing
  more sent). Its Python ``Server`` accepts every bind (a wrong password included: no credential
  hook) and exposes only submit_sm/deliver_sm (no query_sm, cancel_sm, data_sm in Python); a
  refused bind surfaces as "bind timed out" after 10 s.
- ``aiosmpplib`` 0.7.4: its default correlator sweeps every stored correlation on each put/get,
  O(n) in the messages awaiting a receipt: 556 submit_sm/s whatever the window; it has no window
  of its own and no server side.
- ``smpplib`` is synchronous (a thread per bind) and LGPL; ``smpp.pdu3`` is a codec only, at
  34k decodes / 73k encodes per second. No ready Python SMPP server exists for the ingress front.

A struct-based codec is small, fast (well over 100k submit_sm encodes and decodes per second on
one core: ``python -m mta.smpp.bench``) and fully under our control: TCP_NODELAY on both sides,
a real window with O(1) response matching, throttling pauses, strict bounded decoding with
``generic_nack`` on malformed PDUs, and credential checks left to the server front.
"""
