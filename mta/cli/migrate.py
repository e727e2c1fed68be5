"""``mta migrate``: move a prefix's Redis state to the shard count ``MTA_SHARDS`` names."""

from __future__ import annotations

import click

from mta.cli.settings import _run, settings_options
from mta.config import Settings


@click.command()
@settings_options("redis_url", "prefix", "shards")
@click.option("--yes", is_flag=True, help="Move; without it, only print what would move.")
def migrate(settings: Settings, yes: bool) -> None:
    """Move the Redis state of a prefix to MTA_SHARDS shards.

    Needed once when upgrading from the layout before sharding, and whenever MTA_SHARDS
    changes. Stop every mta process of the prefix first; start them again with the new
    MTA_SHARDS after it. Safe to run again if it stopped half-way. Without --yes it prints what
    it would do and exits with status 1.
    """
    _run(_migrate(settings, yes))


async def _migrate(settings: Settings, yes: bool) -> None:
    from mta.store import Store

    store = await Store.open(
        settings.redis_url, settings.prefix, shards=settings.shards, check=False
    )
    try:
        old = await store.recorded_shards()
        if old is None or old == settings.shards:
            if yes:
                await store.migrate()
            click.echo(
                f"prefix {settings.prefix!r}: state already in {settings.shards} shard(s); "
                "nothing to move",
                err=True,
            )
            return
        if not yes:
            click.echo(
                f"mta migrate would move prefix {settings.prefix!r} from {old} to "
                f"{settings.shards} shard(s). Stop every mta process of the prefix first, "
                "then run again with --yes.",
            )
            raise SystemExit(1)
        _, moved = await store.migrate()
        done = ", ".join(f"{n} {what}" for what, n in moved.items())
        click.echo(
            f"prefix {settings.prefix!r}: moved from {old} to {settings.shards} shard(s): {done}"
        )
    finally:
        await store.close()
