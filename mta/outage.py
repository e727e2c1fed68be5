"""Which errors are outages of Redis or RabbitMQ (wait them out) and which are deterministic.

A step that failed because Redis or RabbitMQ is away is retried with backoff until the service
answers again (or the process stops): nothing is dropped. A step that failed for a reason that
will not change by waiting — a script error, a refused publish (406 PRECONDITION_FAILED for an
oversized body, 403, 404), a bug — is never retried as an outage: retrying it forever would
wedge the worker on one batch.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiormq.exceptions
from redis import exceptions as redis_errors
from tenacity import AsyncRetrying, retry_if_exception, wait_exponential_jitter

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Redis errors that mean "not now": the connection, a failover in progress, a node loading.
_REDIS_OUTAGES: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError,  # includes BusyLoadingError
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,  # a replica promoted while we still talk to the old master
    redis_errors.TryAgainError,
    redis_errors.ClusterDownError,
    redis_errors.OutOfMemoryError,  # maxmemory reached: waits for memory, as for a restart
    redis_errors.ClusterError,  # CLUSTERDOWN, MASTERDOWN, redirections exhausted in a failover
    redis_errors.AskError,  # and MovedError: a slot moving while we wrote
    redis_errors.SlotNotCoveredError,  # a slot without a master until a replica is promoted
)
#: Channel errors that a retry will meet again: the broker refused this request itself.
_AMQP_REFUSALS: tuple[type[BaseException], ...] = (
    aiormq.exceptions.ChannelPreconditionFailed,
    aiormq.exceptions.ChannelAccessRefused,
    aiormq.exceptions.ChannelNotFoundEntity,
    aiormq.exceptions.PublishError,  # returned as unroutable
)
_AMQP_OUTAGES: tuple[type[BaseException], ...] = (
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
    aiormq.exceptions.ChannelClosed,
    aiormq.exceptions.DeliveryError,  # nacked: e.g. a queue over its length limit
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
    RuntimeError,  # aio-pika raises it for a closed channel while it reconnects
)


#: redis-py's asyncio connection module: where its connection races surface.
_REDIS_CONNECTION = os.path.join("redis", "asyncio", "connection.py")


def _redis_connection_race(exc: BaseException) -> bool:
    """redis-py dropped a connection's reader/writer (a failover resets a cluster node's
    connections) while a command was on it: an AttributeError on ``None`` raised inside its
    connection module — a dropped connection, not a bug of ours (it dead-lettered a batch in a
    Redis Cluster failover run)."""
    if not isinstance(exc, AttributeError) or "'NoneType' object" not in str(exc):
        return False
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code.co_filename.endswith(_REDIS_CONNECTION)


def is_outage(exc: BaseException) -> bool:
    """True when ``exc`` says Redis or RabbitMQ is away (worth waiting for)."""
    if isinstance(exc, _AMQP_REFUSALS):
        return False
    if _redis_connection_race(exc):
        return True
    if isinstance(exc, redis_errors.RedisError | redis_errors.SlotNotCoveredError):
        return isinstance(exc, _REDIS_OUTAGES)
    if isinstance(exc, redis_errors.RedisClusterException):
        # No node of the cluster answers (while the slot map is rebuilt); its other uses
        # (cross-slot transactions, commands a cluster pipeline refuses) are bugs.
        return "cannot be connected" in str(exc)
    return isinstance(exc, _AMQP_OUTAGES)


async def until_back(
    what: str,
    step: Callable[[], Awaitable[T]],
    stopping: asyncio.Event | None = None,
    max_wait_s: float = 5.0,
) -> T:
    """Run ``step``; on an outage retry it with jittered backoff until it works or we stop.

    Deterministic errors are raised at once, and so is an outage once ``stopping`` is set.
    """
    def retryable(exc: BaseException) -> bool:
        return is_outage(exc) and not (stopping is not None and stopping.is_set())

    try:
        return await step()  # the common case, without the retry machinery's cost
    except Exception as exc:
        if not retryable(exc):
            raise
        log.warning("%s failed (%s); retrying until Redis/RabbitMQ answer", what, _one_line(exc))
    async for attempt in AsyncRetrying(
        retry=retry_if_exception(retryable),
        wait=wait_exponential_jitter(initial=0.1, max=max_wait_s),
        reraise=True,
    ):
        with attempt:
            number = attempt.retry_state.attempt_number
            if number > 1 and number % 10 == 0:
                log.warning("%s: still retrying after an outage (try %d)", what, number)
            result = await step()
            log.info("%s: succeeded after the outage", what)
            return result
    raise AssertionError("unreachable")


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:300]
