"""The ``mta`` command: run the roles, publish batches, tail reports, list adapters and
accounts, inspect the queues, write a starter accounts file. One module per job: settings flags
(settings), logging (logs), roles, console, dead letters (dead), accounts, init, bench,
migrate."""

from __future__ import annotations

import click

from mta.cli import accounts, bench, console, dead, init, migrate, roles
from mta.cli.settings import _SETTINGS, settings_options

__all__ = ["_SETTINGS", "main", "settings_options"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="sms-mta")
def main() -> None:
    """sms-mta: an SMS message transfer agent.

    Send batches arrive on RabbitMQ, go to the partner adapter of their account, and every
    outcome is published on the report exchange. Settings come from MTA_* variables or flags.
    """


for _command in (
    roles.run,
    roles.worker,
    roles.reporter,
    roles.http_command,
    roles.smpp_server,
    console.publish,
    console.reports,
    console.status,
    console.topology,
    console.teardown,
    migrate.migrate,
    dead.dead,
    accounts.adapters,
    accounts.accounts,
    init.init,
    bench.bench,
):
    main.add_command(_command)
