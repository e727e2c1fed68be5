"""Everything an adapter author imports, from one module: ``from mta.sdk import ...``.

The names are the very objects of their home modules (:mod:`mta.adapter`,
:mod:`mta.contract`, :mod:`mta.adapters.httpbase`), re-exported so that an adapter depends on
one import surface, not on how sms-mta lays out its modules:

* the interface: :class:`Adapter` (the protocol), :class:`AdapterMeta`, :class:`OptionSpec`
  (with ``choices``, ``minimum``, ``maximum``), :class:`SendPattern`, :class:`ReceiptMode`;
* what the MTA gives an instance: :class:`AdapterContext`, :class:`ReceiptSink`;
* the error kinds: :class:`AdapterError`, :class:`TransientError`, :class:`ThrottledError`,
  :class:`PermanentError`, :class:`AuthError`;
* the contract types: :class:`SmsMessage`, :class:`SmsSendRequest`,
  :class:`SmsReportRequest`, :class:`SmsResponse`, :class:`SmsResult`, :class:`ApiStatus`,
  the FAIL reasons :data:`REASON_SENDER` and :data:`REASON_RETRY`, and
  :func:`seconds_until` (the time left until an MMP time such as ``expireTime``);
* pushed receipts: :class:`WebhookRequest`, :class:`WebhookError`;
* HTTP partners: :class:`HttpAdapter` and :data:`HTTP_OPTIONS` (``mta.adapters.httpbase``, loaded
  on first use: it imports :mod:`mta.config`, which needs nothing from here, but keeping the
  import lazy keeps ``import mta.sdk`` light and free of cycles).

The conformance kit stays in :mod:`mta.testing` (test code, not adapter code).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mta.adapter import (
    Adapter,
    AdapterContext,
    AdapterError,
    AdapterMeta,
    AuthError,
    OptionSpec,
    PermanentError,
    ReceiptMode,
    ReceiptSink,
    SendPattern,
    ThrottledError,
    TransientError,
    WebhookError,
    WebhookRequest,
)
from mta.contract import (
    REASON_RETRY,
    REASON_SENDER,
    ApiStatus,
    SmsMessage,
    SmsReportRequest,
    SmsResponse,
    SmsResult,
    SmsSendRequest,
    seconds_until,
)

if TYPE_CHECKING:
    from mta.adapters.httpbase import HTTP_OPTIONS, HttpAdapter

__all__ = [
    "HTTP_OPTIONS",
    "REASON_RETRY",
    "REASON_SENDER",
    "Adapter",
    "AdapterContext",
    "AdapterError",
    "AdapterMeta",
    "ApiStatus",
    "AuthError",
    "HttpAdapter",
    "OptionSpec",
    "PermanentError",
    "ReceiptMode",
    "ReceiptSink",
    "SendPattern",
    "SmsMessage",
    "SmsReportRequest",
    "SmsResponse",
    "SmsResult",
    "SmsSendRequest",
    "ThrottledError",
    "TransientError",
    "WebhookError",
    "WebhookRequest",
    "seconds_until",
]

_LAZY = {"HttpAdapter": "mta.adapters.httpbase", "HTTP_OPTIONS": "mta.adapters.httpbase"}


def __getattr__(name: str) -> Any:
    """The HTTP names, imported on first use (PEP 562)."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
