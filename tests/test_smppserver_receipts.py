"""Receipts from ``mta smpp-server`` to bound clients at the client's pace, with the real
server on 127.0.0.1, the real RabbitMQ and Redis (a prefix per test), and an ESME made of our
own codec and Session: finals are published on the report exchange as reporters do, for
message records written as the server writes them.

* a bound client (window 50) gets 5,000 receipts at ≥ 2,000/s, none through the stash;
* 2,000 receipts stashed while the client was away arrive within seconds of its bind, once;
* a client that stops answering: its receipts end up in the stash (memory stays bounded) and
  reach it when it binds again;
* a server that stops stashes the receipts still waiting for a client;
* receipts a server process claimed from the stash and never settled (it died) go back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

import aio_pika
import orjson

from mta.smpp import pdu as P
from mta.smpp.session import Session, connect
from mta.smppserver import SmppServer
from mta.smppserver.receipt_stash import ReceiptStash
from mta.smppserver.records import MessageRecord, ReceiptDelivery
from tests import test_smppserver
from tests.conftest import Env
from tests.test_smppserver import start_server, until

smpp_env = test_smppserver.smpp_env  # the same fixture: the SMPP clients' accounts, cleaned up

ACCOUNT_ID = 12  # acme's, in CLIENTS


class Receiver:
    """A transceiver ESME on our Session: records each deliver_sm's receipted_message_id and
    answers it ESME_ROK — or, ``answer=False``, never."""

    def __init__(self, answer: bool = True) -> None:
        self.answer = answer
        self.ids: list[str] = []
        self.last_at = 0.0
        self.session: Session | None = None
        self._arrived = asyncio.Event()

    def _on_request(self, _session: Session, pdu: P.Pdu) -> P.Pdu | None:
        if isinstance(pdu, P.DeliverSm):
            self.ids.append(P.tlv_cstr(pdu.tlvs, P.Tag.RECEIPTED_MESSAGE_ID) or "?")
            self.last_at = time.monotonic()
            self._arrived.set()
            return P.DeliverSmResp() if self.answer else None
        return P.response_for(pdu, P.CommandStatus.ESME_RINVCMDID)

    async def bind(self, port: int) -> Receiver:
        self.session = await connect(
            "127.0.0.1", port, on_request=self._on_request, window=10, enquire_link_s=0
        )
        resp = await self.session.request(P.BindTransceiver(system_id="acme", password="secret1"))
        assert resp.status == 0, P.status_name(resp.status)
        return self

    async def wait(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.ids) < n and time.monotonic() < deadline:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), deadline - time.monotonic())

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


async def messages(server: SmppServer, n: int) -> list[str]:
    """Records of *n* messages acme submitted with registered_delivery 1; their MMP ids."""
    ids: list[str] = []
    now_ms = int(time.time() * 1000)
    for start in range(0, n, 500):
        batch = uuid.uuid4().hex
        count = min(500, n - start)
        records = [
            MessageRecord(
                1, 0, "acme", 1, 5, 0, "ACME", 1, 1, "905332141354", now_ms, "hi", 0, [], 12
            )
            for _ in range(count)
        ]
        await server.records.add_batch(batch, records, {})
        ids += [f"{batch}:{i}" for i in range(count)]
    return ids


async def publish_finals(env: Env, ids: list[str], per_message: int = 100) -> None:
    """DELIVERED finals of *ids* on the report exchange, as a reporter publishes them."""
    assert env.channel is not None
    exchange = await env.channel.get_exchange(env.topology.reports_exchange)
    key = env.topology.report_key(ACCOUNT_ID, "DELIVERED")
    for start in range(0, len(ids), per_message):
        results: list[dict[str, Any]] = [
            {"messageId": i, "apiStatus": "DELIVERED", "accountId": ACCOUNT_ID}
            for i in ids[start : start + per_message]
        ]
        body = orjson.dumps({"partnerPacketId": "", "results": results})
        await exchange.publish(aio_pika.Message(body), routing_key=key)


async def test_a_bound_client_gets_receipts_at_full_speed(smpp_env: Env) -> None:
    server = await start_server(smpp_env)
    client = await Receiver().bind(server.port)
    ids = await messages(server, 5000)
    started = time.monotonic()
    await publish_finals(smpp_env, ids)
    await client.wait(5000, timeout=30)
    assert len(client.ids) == 5000, f"{len(client.ids)} of 5000 receipts arrived"
    rate = 5000 / (client.last_at - started)
    assert rate >= 2000, f"{rate:,.0f} deliver_sm/s to one bound client (window 50)"
    assert sorted(client.ids) == sorted(ids)  # each once
    assert server.stats["receipts_stashed"] == 0
    assert await server.receipt_stash.waiting("acme") == 0
    assert server.stats["receipts_sent"] == 5000
    await client.close()


async def test_stashed_receipts_arrive_within_seconds_of_a_bind(smpp_env: Env) -> None:
    server = await start_server(smpp_env)
    ids = await messages(server, 2000)
    await publish_finals(smpp_env, ids, per_message=250)
    await until(lambda: _waiting_is(server, 2000), timeout=20, what="2,000 receipts in the stash")
    assert server.stats["receipts_sent"] == 0
    started = time.monotonic()
    client = await Receiver().bind(server.port)
    await client.wait(2000, timeout=20)
    elapsed = client.last_at - started
    assert len(client.ids) == 2000, f"{len(client.ids)} of 2000 stashed receipts arrived"
    assert elapsed < 5.0, f"2,000 stashed receipts took {elapsed:.1f} s after the bind"
    await asyncio.sleep(1.5)  # a drain round later: nothing comes twice
    assert sorted(client.ids) == sorted(ids)
    assert await server.receipt_stash.waiting("acme") == 0
    await client.close()


async def test_a_silent_client_gets_its_receipts_after_binding_again(smpp_env: Env) -> None:
    server = await start_server(smpp_env)
    receipts = server.receipts
    receipts.queue_cap = 200  # receipts waiting in memory per session
    receipts.hold_s = 0.5
    receipts.receipt_timeout_s = 1.5
    silent = await Receiver(answer=False).bind(server.port)
    [outlet] = receipts.receivers["acme"]
    ids = await messages(server, 2000)
    await publish_finals(smpp_env, ids, per_message=250)

    # all but what is in flight (one window, never answered) went to the stash; nothing
    # waits in memory (a drain round retrying the silent client may briefly queue a window)
    async def stashed() -> bool:
        return outlet.waiting == 0 and await _waiting_is(server, 2000 - server.window, True)

    await until(stashed, timeout=20, what="the silent client's receipts in the stash")
    assert outlet.peak <= 200  # memory stayed bounded by the cap
    assert server.window <= len(silent.ids) < 2000  # it was sent one window at a time
    await silent.close()
    await until(lambda: _waiting_is(server, 2000), timeout=10, what="every receipt stashed")
    client = await Receiver().bind(server.port)
    await client.wait(2000, timeout=20)
    assert len(client.ids) == 2000, f"{len(client.ids)} of 2000 receipts after the new bind"
    assert sorted(client.ids) == sorted(ids)  # once each to the client that answers
    await asyncio.sleep(0.5)
    assert len(client.ids) == 2000 and await server.receipt_stash.waiting("acme") == 0
    await client.close()


async def test_a_stopping_server_stashes_what_waits_for_a_client(smpp_env: Env) -> None:
    server = await start_server(smpp_env)
    server.receipts.hold_s = server.receipts.receipt_timeout_s = 60.0  # nothing expires
    silent = await Receiver(answer=False).bind(server.port)
    [outlet] = server.receipts.receivers["acme"]
    ids = await messages(server, 1000)
    await publish_finals(smpp_env, ids, per_message=250)
    await until(lambda: outlet.load == 1000, what="1,000 receipts queued for the client")
    assert outlet.in_flight == server.window and await server.receipt_stash.waiting("acme") == 0
    await smpp_env.stop(smpp_env.services[-1])  # SIGTERM's path
    store = await smpp_env.store()
    stashed = await ReceiptStash(store).take("acme", 5000)
    assert {job.message_id for job in stashed} == set(ids)  # none lost
    assert outlet.load == 0
    await silent.close()
    await store.close()


async def test_claimed_receipts_of_a_dead_process_go_back(smpp_env: Env) -> None:
    store = await smpp_env.store()
    dead, alive = ReceiptStash(store, owner="dead"), ReceiptStash(store, owner="alive")
    record = MessageRecord(2, 1, "acme", 1, 0, 0, "ACME", 1, 1, "905332141354", 0, "hi")
    await dead.stash([ReceiptDelivery(f"b:{i}", 2, 0, record) for i in range(10)])
    claimed = await dead.claim("acme", 6)
    assert [job.message_id for _, job in claimed] == [f"b:{i}" for i in range(6)]
    await dead.settle("acme", [claimed[0][0]], [claimed[1][0]])  # one answered, one back
    assert await dead.waiting("acme") == 5
    assert await alive.recover() == 0  # its lease still runs: its claims are its own
    await dead.release()  # the lease ends (as when it expires after the process died)
    assert await alive.recover() == 4
    back = await alive.take("acme", 100)
    assert sorted(j.message_id for j in back) == sorted(f"b:{i}" for i in range(1, 10))
    assert await alive.recover() == 0  # nothing twice
    await store.close()


async def _waiting_is(server: SmppServer, n: int, at_least: bool = False) -> bool:
    waiting = await server.receipt_stash.waiting("acme")
    return waiting >= n if at_least else waiting == n
