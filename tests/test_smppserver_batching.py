"""How ``mta smpp-server`` groups submits into MMP batches, with the real server, RabbitMQ and
Redis (a prefix per test) and an ESME made of our own codec and Session:

* a window-50 client's submits travel 50 to a batch — the answers of one batch free the
  window, and the next batch waits for the submits that fills it with — not in alternating
  halves;
* a client that sends one submit at a time is never held for submits that will not come
  (no ``RESUBMIT_WAIT_S`` wait).
"""

from __future__ import annotations

import asyncio

from mta.smpp import pdu as P
from mta.smpp.session import Session, connect
from tests import test_smppserver
from tests.conftest import Env
from tests.test_smppserver import start_server

smpp_env = test_smppserver.smpp_env  # the same fixture: the SMPP clients' accounts, cleaned up


async def _bind(port: int, window: int) -> Session:
    session = await connect("127.0.0.1", port, window=window, enquire_link_s=0)
    resp = await session.request(P.BindTransmitter(system_id="acme", password="secret1"))
    assert resp.status == 0, P.status_name(resp.status)
    return session


async def _submit(session: Session, n: int) -> None:
    resp = await session.request(
        P.SubmitSm(destination_addr=f"90533{n:07d}", short_message=b"batched")
    )
    assert resp.status == 0, P.status_name(resp.status)


async def test_a_full_window_travels_in_one_batch(smpp_env: Env) -> None:
    server = await start_server(smpp_env)
    session = await _bind(server.port, 50)
    try:
        await asyncio.gather(*(_submit(session, n) for n in range(50)))  # warm-up
        before = server.stats["batches"]
        total, next_n = 500, 0

        async def sender() -> None:
            nonlocal next_n
            while next_n < total:
                next_n += 1
                await _submit(session, next_n)

        await asyncio.gather(*(sender() for _ in range(50)))
        batches = server.stats["batches"] - before
        # 10 when every batch is a whole window; alternating halves made ~20 (1 and 49, …)
        assert batches <= 14, f"{total} submits in {batches} batches"
    finally:
        await session.close()


async def test_one_at_a_time_is_not_held(smpp_env: Env) -> None:
    server = await start_server(smpp_env)
    session = await _bind(server.port, 1)
    try:
        await _submit(session, 0)
        lane = server._batcher.lanes["bulk"] if server._batcher else None
        assert lane is not None
        batches = server.stats["batches"]
        for n in range(1, 30):
            assert lane.expect == 1  # the answer just sent: its client's next submit
            await _submit(session, n)
            # the one expected submit came: its batch went at once, no RESUBMIT_WAIT_S timer
            assert not lane.waiting and server.stats["batches"] == batches + n
    finally:
        await session.close()
