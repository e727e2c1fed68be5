"""The partner adapter interface: the protocol, its metadata, option specs and error kinds."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from typing import Any, ClassVar, Protocol, runtime_checkable

from mta.contract import SmsReportRequest, SmsResponse, SmsResult, SmsSendRequest, pack_result


class ReceiptMode(enum.StrEnum):
    """How an adapter learns final states: by polling (Report), by pushes, or both."""

    PULL = "pull"
    PUSH = "push"
    BOTH = "both"


class SendPattern(enum.StrEnum):
    """How the worker calls Send: whole batches, or one message per call in a bounded loop."""

    BATCH = "batch"
    LOOP = "loop"


@dataclass(frozen=True, slots=True)
class OptionSpec:
    """One account option an adapter reads from ``[account.options]``."""

    name: str
    type: type = str
    required: bool = False
    secret: bool = False
    default: Any = None
    description: str = ""


@dataclass(frozen=True, slots=True)
class AdapterMeta:
    """What an adapter declares about itself; ``mta adapters`` prints it."""

    name: str
    description: str
    options: tuple[OptionSpec, ...] = ()
    default_url: str = ""
    pattern: SendPattern = SendPattern.BATCH
    max_batch: int = 100
    max_concurrency: int = 8
    receipts: ReceiptMode = ReceiptMode.PULL
    extra: Mapping[str, Any] = field(default_factory=dict)

    def option(self, name: str) -> OptionSpec | None:
        for spec in self.options:
            if spec.name == name:
                return spec
        return None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "default_url": self.default_url,
            "pattern": self.pattern.value,
            "max_batch": self.max_batch,
            "max_concurrency": self.max_concurrency,
            "receipts": self.receipts.value,
            "options": [
                {
                    "name": o.name,
                    "type": o.type.__name__,
                    "required": o.required,
                    "secret": o.secret,
                    "default": o.default,
                    "description": o.description,
                }
                for o in self.options
            ],
        }


class SharedStore(Protocol):
    """The part of the MTA's Redis store an adapter may use (see :class:`ReceiptSink`)."""

    async def push_receipts(self, account: str, receipts: dict[str, bytes]) -> int: ...

    async def put_state(self, account: str, values: dict[str, bytes], ttl_s: int) -> None: ...

    async def get_state(self, account: str, keys: Sequence[str]) -> dict[str, bytes]: ...


class ReceiptSink:
    """What an adapter shares with every MTA process through Redis:

    * final states it learns outside a Report answer — SMPP deliver_sm receipts, or a pull API
      that hands each report out only once — stored as pushed receipts, so whichever reporter
      holds the message finds them (:meth:`push`);
    * small keyed values with a TTL, e.g. which SMSC ids make up one long message
      (:meth:`remember`, :meth:`recall`), namespaced by account.

    The service binds it to the store at start; unbound (``mta accounts test``), pushes and
    remembered values are dropped, and :meth:`recall` finds nothing.
    """

    def __init__(self, account_name: str) -> None:
        self.account_name = account_name
        self._store: SharedStore | None = None

    def bind(self, store: SharedStore) -> None:
        self._store = store

    @property
    def bound(self) -> bool:
        return self._store is not None

    async def push(self, results: Iterable[SmsResult]) -> int:
        """Store the final ones (the first final per partner id wins); returns how many."""
        if self._store is None:
            return 0
        finals = {
            r.partnerMessageId: pack_result(r)
            for r in results
            if r.apiStatus.final and r.partnerMessageId
        }
        return await self._store.push_receipts(self.account_name, finals) if finals else 0

    async def remember(self, values: dict[str, bytes], ttl_s: int) -> None:
        if self._store is not None and values:
            await self._store.put_state(self.account_name, values, ttl_s)

    async def recall(self, keys: Sequence[str]) -> dict[str, bytes]:
        if self._store is None or not keys:
            return {}
        return await self._store.get_state(self.account_name, keys)


@dataclass(frozen=True, slots=True)
class AdapterContext:
    """Who an adapter instance serves, where it stores receipts it learns on its own, and the
    time zone of the MMP times it is given (``expireTime``, ``startTime``: ``MTA_TIMEZONE``);
    given to constructors that take a second argument."""

    account_name: str
    account_id: int
    receipts: ReceiptSink = field(default_factory=lambda: ReceiptSink(""))
    tz: tzinfo = UTC


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """A partner's HTTP call to ``/webhooks/<account name>``, as the adapter needs it."""

    method: str
    url: str
    headers: Mapping[str, str]
    query: Mapping[str, str]
    body: bytes
    form: Mapping[str, str]


class WebhookError(Exception):
    """A webhook call is refused (bad signature, malformed body): HTTP ``status`` + reason."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class AdapterError(Exception):
    """Base of the errors an adapter raises; each kind tells the core what to do."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class TransientError(AdapterError):
    """The partner may succeed later (network, 5xx, timeout): retry with backoff."""


class ThrottledError(TransientError):
    """The partner asks us to slow down: retry this account's messages after ``retry_after``."""

    def __init__(self, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class PermanentError(AdapterError):
    """Retrying cannot help: FAIL the messages of the call with the partner's detail."""


class AuthError(PermanentError):
    """The partner refused our credentials (Login NOK; messages FAIL until fixed)."""


@runtime_checkable
class Adapter(Protocol):
    """A partner adapter. One instance per configured account, built from the account's options.

    The constructor takes the account's resolved options (``Mapping[str, Any]``, already
    checked against ``meta.options``) and, when it declares a second parameter, an
    :class:`AdapterContext`. ``login`` is called before anything else; ``False`` means NOK and
    nothing else is called. ``send`` answers ``results[i]`` for ``messages[i]``; ``report``
    answers for the partner ids it knows (any order; ids it leaves out stay WAITING).

    Optional members: ``test_connection``, ``test_credentials``, ``test_proxy`` (each
    ``async () -> bool``), and for partners that push receipts (``meta.receipts`` push or both)
    ``async webhook(request: WebhookRequest) -> list[SmsResult]``: the receipts in one partner
    call (``partnerMessageId`` + ``apiStatus``), raising :class:`WebhookError` to refuse it.
    """

    meta: ClassVar[AdapterMeta]

    async def login(self, secret_key: str) -> bool: ...

    async def send(self, request: SmsSendRequest) -> SmsResponse: ...

    async def report(self, request: SmsReportRequest) -> SmsResponse: ...

    async def destroy(self) -> None: ...
