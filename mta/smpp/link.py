"""The link under an SMPP session: TCP_NODELAY, the peer's name, and the idle keepalive.

TCP_NODELAY is set on the socket on both sides (see :mod:`mta.smpp.session`). The keepalive sends
``enquire_link`` when nothing was received for ``enquire_link_s`` and closes the session after
``enquire_link_misses`` unanswered in a row; a slow answer while other traffic arrives is no miss.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING

from mta.smpp.pdu import EnquireLink

if TYPE_CHECKING:
    from mta.smpp.session import Session

log = logging.getLogger("mta.smpp.session")


def set_nodelay(writer: asyncio.StreamWriter) -> None:
    """Disable Nagle on the writer's TCP socket (a no-op for other sockets)."""
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def peer_name(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer or "?")


async def keepalive(session: Session) -> None:
    """Send enquire_link after ``enquire_link_s`` without traffic; close the session after
    ``enquire_link_misses`` unanswered in a row."""
    from mta.smpp.session import ResponseTimeout, SessionClosed  # here: session imports us

    loop = asyncio.get_running_loop()
    misses = 0
    interval = session.enquire_link_s
    try:
        while not session.closed:
            idle = loop.time() - session.last_received
            if idle < interval:
                await asyncio.sleep(interval - idle)
                continue
            sent_at = loop.time()
            try:
                await session._exchange(EnquireLink(), session.response_timeout, closing_ok=True)
                misses = 0
            except ResponseTimeout:
                if session.last_received > sent_at:
                    misses = 0  # the peer is alive, just slow on this one
                    continue
                misses += 1
                log.warning("SMPP %s: enquire_link unanswered (%d)", session.name, misses)
                if misses >= session.enquire_link_misses:
                    await session.close(ResponseTimeout(f"{misses} enquire_link unanswered"))
                    return
                continue
            # the response updated last_received: wait a full interval again
    except (SessionClosed, asyncio.CancelledError):
        return
