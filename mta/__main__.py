"""``python -m mta``: the ``mta`` command."""

from mta.cli import main

main(prog_name="mta")
