"""``python -m mta.cli``: the ``mta`` command."""

from mta.cli import main

main()
