"""``mta init [PATH]``: a commented starter accounts file."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import click


def template() -> str:
    """The starter accounts file (package data: mta/templates/accounts.toml)."""
    return files("mta.templates").joinpath("accounts.toml").read_text(encoding="utf-8")


@click.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path), default="accounts.toml")
@click.option("--force", is_flag=True, help="Overwrite PATH if it exists.")
def init(path: Path, force: bool) -> None:
    """Write a commented starter accounts file to PATH (default ./accounts.toml).

    It has one simulator account serving every accountId, and a commented example of a real
    partner. An existing file is kept unless --force is given.
    """
    if path.exists() and not force:
        raise click.ClickException(f"{path} exists; use --force to overwrite it")
    try:
        path.write_text(template(), encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"cannot write {path}: {exc.strerror or exc}") from None
    click.echo(f"wrote {path}: one simulator account; check it with MTA_ACCOUNTS={path} "
               "mta accounts list")
