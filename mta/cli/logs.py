"""Logging of the ``mta`` processes: one format, every line masked of credentials and, once
the accounts are known, of their secrets."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mta.registry import Registry


class _RedactingFormatter(logging.Formatter):
    """Formats a log line, then masks credentials in it (URL passwords, Authorization and
    Basic/Bearer values) and, once the accounts are known, every encoding of their secrets:
    a last line of defence for whatever a library or a partner puts in a log line."""

    def __init__(self, fmt: str) -> None:
        from mta.redact import redact_credentials

        super().__init__(fmt)
        self.redact: Callable[[str], str] = redact_credentials

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


_FORMATTER = _RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")


def _drop_transport_error(record: logging.LogRecord) -> bool:
    """aiormq logs a failed connect before raising it; the raise is reported (one line)."""
    return not str(record.msg).startswith("error when creating transport")


logging.getLogger("aiormq.connection").addFilter(_drop_transport_error)


def _logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_FORMATTER)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    logging.getLogger("aio_pika").setLevel(logging.WARNING)
    logging.getLogger("aiormq").setLevel(logging.WARNING)


def _redact_logs(registry: Registry) -> None:
    """From now on, log lines of this process mask every secret of every account."""
    _FORMATTER.redact = registry.redactor()
