"""Logging of the ``mta`` processes: text or JSON lines (``MTA_LOG_FORMAT``) at
``MTA_LOG_LEVEL``, every line masked of credentials and, once the accounts are known, of their
secrets."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from mta.config import Settings
    from mta.registry import Registry

#: Attributes every LogRecord has: the others were passed with ``extra=`` (account, batch_id,
#: message_id, ...) and become fields of a JSON line.
_RECORD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def _json_line(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    """One JSON object: time (UTC, ISO 8601), level, logger, message, the ``extra=`` fields,
    and exc/stack when the record carries them."""
    line: dict[str, Any] = {
        "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        "level": record.levelname,
        "logger": record.name,
        "message": record.getMessage(),
    }
    for key, value in record.__dict__.items():
        if key not in _RECORD_ATTRS and not key.startswith("_"):
            line[key] = value
    if record.exc_info:
        line["exc"] = formatter.formatException(record.exc_info)
    elif record.exc_text:
        line["exc"] = record.exc_text
    if record.stack_info:
        line["stack"] = formatter.formatStack(record.stack_info)
    return orjson.dumps(line, default=str).decode()


class _RedactingFormatter(logging.Formatter):
    """Formats a log line, then masks credentials in it (URL passwords, Authorization and
    Basic/Bearer values) and, once the accounts are known, every encoding of their secrets:
    a last line of defence for whatever a library or a partner puts in a log line."""

    def __init__(self, fmt: str) -> None:
        from mta.redact import redact_credentials

        super().__init__(fmt)
        self.redact: Callable[[str], str] = redact_credentials
        self.json = False  # MTA_LOG_FORMAT=json: one JSON object per line

    def format(self, record: logging.LogRecord) -> str:
        text = _json_line(self, record) if self.json else super().format(record)
        return self.redact(text)


_FORMATTER = _RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")


def _drop_transport_error(record: logging.LogRecord) -> bool:
    """aiormq logs a failed connect before raising it; the raise is reported (one line)."""
    return not str(record.msg).startswith("error when creating transport")


logging.getLogger("aiormq.connection").addFilter(_drop_transport_error)


def _logging(verbose: bool, settings: Settings | None = None) -> None:
    """Log to stderr in ``settings.log_format`` at ``settings.log_level`` (DEBUG with -v)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_FORMATTER)
    level = settings.log_level.upper() if settings is not None else "INFO"
    _FORMATTER.json = settings is not None and settings.log_format == "json"
    logging.basicConfig(level=logging.DEBUG if verbose else level, handlers=[handler])
    logging.getLogger("aio_pika").setLevel(logging.WARNING)
    logging.getLogger("aiormq").setLevel(logging.WARNING)


def _redact_logs(registry: Registry) -> None:
    """From now on, log lines of this process mask every secret of every account."""
    _FORMATTER.redact = registry.redactor()
