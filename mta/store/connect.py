"""Redis clients for the URL forms ``MTA_REDIS_URL`` takes beyond a single node: any node of a
Redis Cluster (redis-py's cluster client: slot map, MOVED/ASK, failover) and Sentinel.

Sentinel URLs name the sentinels and the master's service name::

    redis+sentinel://[user:password@]host:port[,host:port…]/<service>[/<db>]

The credentials are the master's; the sentinels are asked without (``sentinel_password`` in the
query string when they need one). The client asks the sentinels for the current master on
every reconnect, so a failover costs the commands in flight (retried as an outage).
"""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import Sentinel

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")


def is_sentinel_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in SENTINEL_SCHEMES


def cluster_client(
    url: str, max_connections: int, connection_class: type[Any] | None = None
) -> aioredis.Redis:
    """A Redis Cluster client that starts from the node ``url`` names, its connections of
    ``connection_class`` (redis-py's cluster client takes no such option: set on its node
    manager before it learns the nodes). Typed as a plain client: the store uses only the
    commands both have (every script it sends is one slot)."""
    client = RedisCluster.from_url(url, max_connections=max_connections)
    if connection_class is not None and not url.lower().startswith("rediss"):
        client.nodes_manager.connection_kwargs["connection_class"] = connection_class
        for node in client.nodes_manager.startup_nodes.values():
            node.connection_class = connection_class
    return cast(aioredis.Redis, client)


def parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], str, dict[str, Any], str]:
    """(sentinels, service name, the master's connection options, sentinel password)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    auth, _, hosts = netloc.rpartition("@")
    sentinels: list[tuple[str, int]] = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host:
            host, port = port, "26379"
        if not port.isdigit():
            raise ValueError(f"MTA_REDIS_URL: bad sentinel address {item!r}")
        sentinels.append((host.strip("[]"), int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise ValueError("MTA_REDIS_URL: a sentinel URL names the master's service: "
                         "redis+sentinel://host:26379/<service>[/<db>]")
    options: dict[str, Any] = {}
    if len(path) > 1:
        if not path[1].isdigit():
            raise ValueError(f"MTA_REDIS_URL: bad database number {path[1]!r}")
        options["db"] = int(path[1])
    if auth:
        user, sep, password = auth.partition(":")
        if sep:
            options["password"] = unquote(password)
            if user:
                options["username"] = unquote(user)
        else:
            options["password"] = unquote(user)
    if parts.scheme.lower().startswith("rediss"):
        options["ssl"] = True
    query = parse_qs(parts.query)
    sentinel_password = query.get("sentinel_password", [""])[0]
    return sentinels, path[0], options, sentinel_password


def sentinel_client(url: str, max_connections: int) -> aioredis.Redis:
    """A client of the master the sentinels name (found again after a failover)."""
    sentinels, service, options, sentinel_password = parse_sentinel_url(url)
    sentinel_kwargs = {"password": sentinel_password} if sentinel_password else {}
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        sentinels, sentinel_kwargs=sentinel_kwargs, socket_timeout=5
    )
    client = sentinel.master_for(service, max_connections=max_connections, **options)
    return cast(aioredis.Redis, client)
