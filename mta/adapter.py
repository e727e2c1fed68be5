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
    #: The values allowed (empty: any of the type).
    choices: tuple[Any, ...] = ()
    #: Inclusive bounds of a number (None: unbounded).
    minimum: float | None = None
    maximum: float | None = None

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` against ``choices``, ``minimum`` and ``maximum`` (None
        when it fits, or when it is None: unset)."""
        if value is None:
            return None
        if self.choices and value not in self.choices:
            return f"is {value!r}; one of {', '.join(repr(c) for c in self.choices)}"
        if self.minimum is not None and value < self.minimum:
            return f"is {value!r}; at least {self.minimum!r}"
        if self.maximum is not None and value > self.maximum:
            return f"is {value!r}; at most {self.maximum!r}"
        return None

    def bounds(self) -> str:
        """The allowed values in words (``one of 'a', 'b'``, ``1 to 1000``, ``at least 0``);
        ``""`` when any value of the type is."""
        if self.choices:
            return f"one of {', '.join(repr(c) for c in self.choices)}"
        if self.minimum is not None and self.maximum is not None:
            return f"{self.minimum!r} to {self.maximum!r}"
        if self.minimum is not None:
            return f"at least {self.minimum!r}"
        if self.maximum is not None:
            return f"at most {self.maximum!r}"
        return ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type.__name__,
            "required": self.required,
            "secret": self.secret,
            "default": self.default,
            "description": self.description,
            "choices": list(self.choices),
            "minimum": self.minimum,
            "maximum": self.maximum,
        }


def resolve_options(options: Mapping[str, Any], specs: Iterable[OptionSpec]) -> dict[str, Any]:
    """``options`` with each spec's default where the option is absent or None, checked
    against the specs' bounds (``ValueError`` naming the option and the bound); keys no spec
    names are kept. Constructors read their options through it (:meth:`AdapterMeta.resolve`),
    so each default is written once, in its :class:`OptionSpec`."""
    resolved = dict(options)
    for spec in specs:
        value = resolved.get(spec.name)
        if value is None:
            resolved[spec.name] = spec.default
            continue
        problem = spec.problem(value)
        if problem is not None:
            raise ValueError(f"option {spec.name!r} {problem}")
    return resolved


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
            "options": [o.as_dict() for o in self.options],
        }

    def resolve(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The options an instance reads: ``options`` with the defaults of :attr:`options`
        filled in and their bounds checked (:func:`resolve_options`)."""
        return resolve_options(options, self.options)


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
