"""Settings from the environment and the accounts file (TOML), checked before anything starts."""

from __future__ import annotations

import importlib.util
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mta.adapter import AdapterMeta
from mta.store.keys import DEFAULT_SHARDS, MAX_SHARDS

MASK = "****"


class ConfigError(ValueError):
    """A setting or the accounts file is wrong; the message names the account and the field."""


class InFlightPolicy:
    """What a redelivered batch does with a message whose Send was in flight when a worker died.

    ``resubmit`` (default): send it again. Nothing is lost; the handset may get it twice if the
    first Send reached the partner. ``fail``: publish FAIL with a detail saying the outcome is
    unknown, so the upstream decides; the handset never gets it twice.
    """

    RESUBMIT = "resubmit"
    FAIL = "fail"
    ALL = (RESUBMIT, FAIL)


#: MTA_LOG_FORMAT values: today's one line of text, or one JSON object per line.
LOG_FORMATS = ("text", "json")
#: MTA_LOG_LEVEL values (any case).
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def setting(
    default: Any,
    env: str,
    help: str,
    *,
    choices: tuple[str, ...] = (),
    case_sensitive: bool = True,
) -> Any:
    """A :class:`Settings` field with its ``MTA_*`` variable and its help: the one place a
    setting is written. ``mta/cli/settings.py`` makes the flag from it (``--name-with-dashes``,
    ``--x/--no-x`` for a bool; ``choices`` become a :class:`click.Choice`)."""
    return field(
        default=default,
        metadata={"env": env, "help": help, "choices": choices, "case_sensitive": case_sensitive},
    )


@dataclass(frozen=True, slots=True)
class Settings:
    """Process settings; each field has an ``MTA_*`` variable and a flag (see ``mta --help``),
    both declared here with :func:`setting`."""

    amqp_url: str = setting(
        "amqp://guest:guest@127.0.0.1:5672/",
        "MTA_AMQP_URL",
        "RabbitMQ URL; a cluster's nodes as several URLs, comma-separated.",
    )
    redis_url: str = setting(
        "redis://127.0.0.1:6379/0",
        "MTA_REDIS_URL",
        "Redis URL: one node, any node of a Redis Cluster, or redis+sentinel://.",
    )
    redis_wait_replicas: int = setting(
        0,
        "MTA_REDIS_WAIT_REPLICAS",
        "Replicas each state change must reach before it counts (Redis WAIT); 0: none.",
    )
    shards: int = setting(
        DEFAULT_SHARDS,
        "MTA_SHARDS",
        "Shards (hash tags) the Redis state is spread over; the same in every process.",
    )
    prefix: str = setting(
        "mta",
        "MTA_PREFIX",
        "Names every exchange, queue and Redis key (mta.send, {mta:0}:pending, ...).",
    )
    accounts: str = setting("accounts.toml", "MTA_ACCOUNTS", "Accounts file (TOML).")
    timezone: str = setting(
        "UTC", "MTA_TIMEZONE", "Zone of startTime/expireTime/sendAt (yyyyMMddHHmm)."
    )
    poll_first_s: float = setting(
        10.0, "MTA_POLL_FIRST_S", "First Report poll after submission, seconds."
    )
    poll_max_s: float = setting(300.0, "MTA_POLL_MAX_S", "Longest pause between polls.")
    max_wait_s: float = setting(
        86400.0,
        "MTA_MAX_WAIT_S",
        "TIMEOUT after this long without a final state (unless expireTime comes first).",
    )
    strict_numbers: bool = setting(
        False, "MTA_STRICT_NUMBERS", "Check numbers against numbering plans (phonenumbers)."
    )
    max_batch: int = setting(
        1000,
        "MTA_MAX_BATCH",
        "Messages per batch; a larger batch is refused whole (to <prefix>.dead).",
    )
    max_batch_bytes: int = setting(
        4 * 1024 * 1024,
        "MTA_MAX_BATCH_BYTES",
        "Bytes per batch body; a larger body is refused whole (to <prefix>.dead).",
    )
    inflight_policy: str = setting(
        InFlightPolicy.RESUBMIT,
        "MTA_INFLIGHT_POLICY",
        "A redelivered message whose Send was in flight when its worker died: send it again "
        "(resubmit) or FAIL it as unknown (fail).",
        choices=InFlightPolicy.ALL,
    )
    max_attempts: int = setting(
        8, "MTA_MAX_ATTEMPTS", "Send attempts through the delayed-retry queues before FAIL."
    )
    bulk_concurrency: int = setting(
        16, "MTA_BULK_CONCURRENCY", "Bulk batches handled at once per worker."
    )
    priority_concurrency: int = setting(
        8, "MTA_PRIORITY_CONCURRENCY", "Priority batches handled at once per worker."
    )
    report_batch: int = setting(1000, "MTA_REPORT_BATCH", "Messages a reporter claims per round.")
    report_concurrency: int = setting(
        2, "MTA_REPORT_CONCURRENCY", "Report rounds in flight per reporter."
    )
    lease_s: float = setting(
        60.0, "MTA_LEASE_S", "A claim's lease; a dead reporter's claims come back after it."
    )
    shutdown_grace_s: float = setting(
        30.0,
        "MTA_SHUTDOWN_GRACE_S",
        "On SIGTERM, how long in-flight work may take before it is returned.",
    )
    # mta http webhooks (docs/webhooks.md): body limit, stored receipts per account
    webhook_max_body: int = setting(
        1 << 20,
        "MTA_WEBHOOK_MAX_BODY",
        "mta http: largest webhook body in bytes; larger ones are refused (413) unread.",
    )
    webhook_receipts_cap: int = setting(
        100_000,
        "MTA_WEBHOOK_RECEIPTS_CAP",
        "mta http: unclaimed pushed receipts stored per account; beyond it webhooks get 429.",
    )
    # observability (docs/metrics.md, docs/logging.md): "" = no metrics server
    metrics_listen: str = setting(
        "",
        "MTA_METRICS_LISTEN",
        "HOST:PORT serving /metrics (Prometheus), /healthz and /readyz; empty = off.",
    )
    log_format: str = setting(
        "text",
        "MTA_LOG_FORMAT",
        "Log lines as text or as one JSON object per line.",
        choices=LOG_FORMATS,
    )
    log_level: str = setting(
        "INFO",
        "MTA_LOG_LEVEL",
        "Lowest level logged (-v means DEBUG).",
        choices=LOG_LEVELS,
        case_sensitive=False,
    )

    @staticmethod
    def variable(name: str) -> str:
        """The ``MTA_*`` variable of field ``name``, as declared with :func:`setting`."""
        return str(_SETTING_FIELDS[name].metadata["env"])

    def __post_init__(self) -> None:
        var = self.variable
        if not re.fullmatch(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*", self.prefix):
            raise ConfigError(
                f"{var('prefix')}: {self.prefix!r} must be letters, digits, '-', '_', '.'"
            )
        for item in _SETTING_FIELDS.values():  # inflight_policy, log_format, log_level
            choices = item.metadata["choices"]
            value = getattr(self, item.name)
            folded = value if item.metadata["case_sensitive"] else str(value).upper()
            if choices and folded not in choices:
                raise ConfigError(
                    f"{var(item.name)}: {value!r}, expected one of {', '.join(choices)}"
                )
        for name in ("poll_first_s", "poll_max_s", "max_wait_s", "lease_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{var(name)}: must be positive")
        for name in (
            "bulk_concurrency",
            "priority_concurrency",
            "report_batch",
            "report_concurrency",
            "max_batch",
            "max_batch_bytes",
            "max_attempts",
            "webhook_max_body",
            "webhook_receipts_cap",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{var(name)}: must be positive (at least 1)")
        if self.redis_wait_replicas < 0:
            raise ConfigError(f"{var('redis_wait_replicas')}: must not be negative")
        if not 1 <= self.shards <= MAX_SHARDS:
            raise ConfigError(f"{var('shards')}: must be between 1 and {MAX_SHARDS}")
        if self.poll_max_s < self.poll_first_s:
            raise ConfigError(f"{var('poll_max_s')}: must not be below {var('poll_first_s')}")
        if self.metrics_listen:
            host, _, port = self.metrics_listen.rpartition(":")
            if not host or not port.isdigit() or int(port) > 65535:
                raise ConfigError(
                    f"{var('metrics_listen')}: {self.metrics_listen!r}, expected HOST:PORT or empty"
                )
        self.tz  # noqa: B018 - fail early on an unknown zone
        if self.strict_numbers and not _have_phonenumbers():
            raise ConfigError(f"{var('strict_numbers')}: {STRICT_NUMBERS_MISSING}")

    @property
    def tz(self) -> ZoneInfo:
        try:
            return ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                f"{self.variable('timezone')}: unknown time zone {self.timezone!r}"
            ) from None


#: Why strict mode cannot run: phonenumbers is an optional extra (about 50 MB installed).
STRICT_NUMBERS_MISSING = (
    "strict mode needs the phonenumbers package, which is not installed: "
    "install sms-mta[strict-numbers]"
)


def _have_phonenumbers() -> bool:
    return importlib.util.find_spec("phonenumbers") is not None


#: The fields of :class:`Settings` by name (each declared with :func:`setting`).
_SETTING_FIELDS = {item.name: item for item in fields(Settings)}


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ACCOUNT_KEYS = frozenset(
    {
        "id",
        "name",
        "adapter",
        "default",
        "active",
        "secret_key",
        "options",
        "concurrency",
        "sender",
        "fallback_sender",
        "failover",
        "rate_limit",
    }
)


@dataclass(frozen=True)
class Account:
    """One partner account of the accounts file; secrets are masked in ``repr``."""

    id: int
    name: str
    adapter: str
    default: bool = False
    active: bool = True
    secret_key: str = field(default="", repr=False)
    options: Mapping[str, Any] = field(default_factory=dict, repr=False)
    secret_options: frozenset[str] = frozenset()
    concurrency: int = 0
    sender: str = ""
    fallback_sender: str = ""
    failover: str = ""
    rate_limit: float = 0.0

    def masked_options(self) -> dict[str, Any]:
        return {k: (MASK if k in self.secret_options else v) for k, v in self.options.items()}

    def __repr__(self) -> str:
        return (
            f"Account(id={self.id}, name={self.name!r}, adapter={self.adapter!r}, "
            f"default={self.default}, active={self.active}, failover={self.failover!r}, "
            f"rate_limit={self.rate_limit}, options={self.masked_options()})"
        )


def _resolve_env(value: Any, where: str) -> Any:
    if not isinstance(value, str) or "${" not in value:
        return value

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ConfigError(f"{where}: environment variable {name} is not set")
        return os.environ[name]

    return _ENV_REF.sub(sub, value)


def _coerce(value: Any, kind: type, where: str) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind in (int, float) and isinstance(value, str):
        try:
            return kind(value)
        except ValueError:
            raise ConfigError(f"{where}: {value!r} is not a {kind.__name__}") from None
    if kind is bool and isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def build_options(
    raw: Mapping[str, Any], meta: AdapterMeta, where: str
) -> tuple[dict[str, Any], frozenset[str]]:
    """Check an account's options against the adapter's specs (type, ``choices``,
    ``minimum``, ``maximum``); resolve ``${ENV}`` references; fill in the defaults."""
    unknown = sorted(set(raw) - {o.name for o in meta.options})
    if unknown:
        known = ", ".join(o.name for o in meta.options) or "none"
        raise ConfigError(
            f"{where}.options: unknown option(s) {', '.join(unknown)} for adapter "
            f"{meta.name!r} (it takes: {known})"
        )
    options: dict[str, Any] = {}
    for spec in meta.options:
        field_where = f"{where}.options.{spec.name}"
        if spec.name in raw:
            value = _coerce(_resolve_env(raw[spec.name], field_where), spec.type, field_where)
            problem = spec.problem(value)
            if problem is not None:
                raise ConfigError(f"{field_where}: {problem} (adapter {meta.name!r})")
        elif spec.required:
            raise ConfigError(f"{field_where}: required by adapter {meta.name!r}")
        else:
            value = spec.default
        options[spec.name] = value
    return options, frozenset(o.name for o in meta.options if o.secret)


#: Schemes a proxy_url may have (SOCKS needs httpx[socks], which is not installed).
PROXY_SCHEMES = ("http", "https")


def proxy_url_problem(url: str) -> str | None:
    """What is wrong with a ``proxy_url`` (None when it is empty or fine). The answer never
    repeats the URL: it may carry a password."""
    if not url:
        return None
    # A proxy URL has no path, so any '@' is userinfo (a password with a raw '/' in it
    # would otherwise hide it from the parser).
    if "@" in url.split("?", 1)[0]:
        return (
            "carries credentials (user:password@), which would show in listings and logs; "
            "remove them from the URL and set the options proxy_username and proxy_password"
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        return (
            "not a valid URL (e.g. a port that is not a number); expected "
            "scheme://host:port, e.g. http://proxy.example:3128"
        )
    if parts.scheme.lower() not in PROXY_SCHEMES or not parts.hostname:
        return (
            f"not a proxy URL: expected scheme://host:port with scheme "
            f"{', '.join(PROXY_SCHEMES)}, e.g. http://proxy.example:3128"
        )
    return None


def load_accounts(path: str | Path, metas: Mapping[str, AdapterMeta]) -> list[Account]:
    """Read and check the accounts file; raise :class:`ConfigError` naming account and field."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"MTA_ACCOUNTS: accounts file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    extra = sorted(set(doc) - {"account", "smpp_client"})
    if extra:
        raise ConfigError(
            f"{path}: unknown table(s) {', '.join(extra)}; expected [[account]] "
            "(and [[smpp_client]])"
        )
    entries = doc.get("account", [])
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: no [[account]] entries")
    accounts: list[Account] = []
    seen_ids: dict[int, str] = {}
    seen_names: set[str] = set()
    default: str | None = None
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: account #{n}: expected a table [[account]]")
        name = entry.get("name")
        where = f"{path}: account {name!r}" if isinstance(name, str) else f"{path}: account #{n}"
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
            raise ConfigError(f"{where}: name: required, letters, digits, '-', '_', '.'")
        unknown = sorted(set(entry) - _ACCOUNT_KEYS)
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}")
        account_id = entry.get("id")
        if not isinstance(account_id, int) or isinstance(account_id, bool) or account_id < 0:
            raise ConfigError(f"{where}: id: required, a non-negative integer")
        if account_id in seen_ids:
            raise ConfigError(f"{where}: id: {account_id} is also account {seen_ids[account_id]!r}")
        if name in seen_names:
            raise ConfigError(f"{where}: name: used by two accounts")
        adapter = entry.get("adapter")
        if not isinstance(adapter, str) or adapter not in metas:
            raise ConfigError(
                f"{where}: adapter: unknown adapter {adapter!r}; installed: "
                f"{', '.join(sorted(metas)) or 'none'}"
            )
        meta = metas[adapter]
        flags = {}
        for key, fallback in (("default", False), ("active", True)):
            value = entry.get(key, fallback)
            if not isinstance(value, bool):
                raise ConfigError(f"{where}: {key}: expected true or false")
            flags[key] = value
        if flags["default"]:
            if default is not None:
                raise ConfigError(f"{where}: default: account {default!r} is the default already")
            default = name
        secret_key = _resolve_env(entry.get("secret_key", ""), f"{where}: secret_key")
        if not isinstance(secret_key, str):
            raise ConfigError(f"{where}: secret_key: expected a string")
        raw_options = entry.get("options", {})
        if not isinstance(raw_options, dict):
            raise ConfigError(f"{where}: options: expected a table [account.options]")
        options, secrets = build_options(raw_options, meta, where)
        problem = proxy_url_problem(str(options.get("proxy_url") or ""))
        if problem:
            raise ConfigError(f"{where}.options.proxy_url: {problem}")
        concurrency = entry.get("concurrency", meta.max_concurrency)
        if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
            raise ConfigError(f"{where}: concurrency: expected a positive integer")
        texts = {}
        for key in ("sender", "fallback_sender", "failover"):
            value = entry.get(key, "")
            if not isinstance(value, str):
                raise ConfigError(f"{where}: {key}: expected a string")
            texts[key] = value
        if texts["failover"] == name:
            raise ConfigError(f"{where}: failover: an account cannot fail over to itself")
        rate_limit = entry.get("rate_limit", 0)
        if (
            not isinstance(rate_limit, int | float)
            or isinstance(rate_limit, bool)
            or rate_limit < 0
        ):
            raise ConfigError(f"{where}: rate_limit: messages per second, a number >= 0")
        seen_ids[account_id] = name
        seen_names.add(name)
        accounts.append(
            Account(
                id=account_id,
                name=name,
                adapter=adapter,
                default=flags["default"],
                active=flags["active"],
                secret_key=secret_key,
                options=options,
                secret_options=secrets,
                concurrency=concurrency,
                sender=texts["sender"],
                fallback_sender=texts["fallback_sender"],
                failover=texts["failover"],
                rate_limit=float(rate_limit),
            )
        )
    names = {a.name for a in accounts}
    for account in accounts:
        if account.failover and account.failover not in names:
            raise ConfigError(
                f"{path}: account {account.name!r}: failover: no account named {account.failover!r}"
            )
    return accounts


_SMPP_CLIENT_KEYS = frozenset({"system_id", "password", "account_id", "throughput", "priority"})


@dataclass(frozen=True)
class SmppClient:
    """One ``[[smpp_client]]`` of the accounts file: an ESME allowed to bind to
    ``mta smpp-server``. ``account_id`` is the MMP accountId its messages carry; ``throughput``
    its submit_sm/s (beyond it ESME_RTHROTTLED); ``priority`` sends all its messages on the
    priority lane. The password is masked in ``repr``."""

    system_id: str
    password: str = field(repr=False)
    account_id: int
    throughput: float = 100.0
    priority: bool = False

    def __repr__(self) -> str:
        return (
            f"SmppClient(system_id={self.system_id!r}, password={MASK!r}, "
            f"account_id={self.account_id}, throughput={self.throughput}, "
            f"priority={self.priority})"
        )


def load_smpp_clients(path: str | Path) -> list[SmppClient]:
    """Read and check the ``[[smpp_client]]`` entries of the accounts file (none is fine);
    raise :class:`ConfigError` naming the client and the field."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"MTA_ACCOUNTS: accounts file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    entries = doc.get("smpp_client", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: smpp_client: expected an array of tables [[smpp_client]]")
    clients: list[SmppClient] = []
    seen: set[str] = set()
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: smpp_client #{n}: expected a table [[smpp_client]]")
        system_id = entry.get("system_id")
        where = (
            f"{path}: smpp_client {system_id!r}"
            if isinstance(system_id, str)
            else f"{path}: smpp_client #{n}"
        )
        unknown = sorted(set(entry) - _SMPP_CLIENT_KEYS)
        if unknown:
            raise ConfigError(
                f"{where}: unknown field(s) {', '.join(unknown)} (it takes: "
                f"{', '.join(sorted(_SMPP_CLIENT_KEYS))})"
            )
        if (
            not isinstance(system_id, str)
            or not 1 <= len(system_id) <= 15
            or not system_id.isascii()
            or not system_id.isprintable()
        ):
            raise ConfigError(f"{where}: system_id: required, 1 to 15 printable ASCII characters")
        if system_id in seen:
            raise ConfigError(f"{where}: system_id: used by two [[smpp_client]] entries")
        password = _resolve_env(entry.get("password"), f"{where}: password")
        if not isinstance(password, str) or not password:
            raise ConfigError(f"{where}: password: required, a string (${{ENV}} allowed)")
        if len(password) > 8 or not password.isascii():
            raise ConfigError(
                f"{where}: password: at most 8 ASCII characters (the SMPP 3.4 bind field)"
            )
        account_id = entry.get("account_id")
        if not isinstance(account_id, int) or isinstance(account_id, bool) or account_id < 0:
            raise ConfigError(f"{where}: account_id: required, a non-negative integer")
        throughput = entry.get("throughput", 100)
        if (
            not isinstance(throughput, int | float)
            or isinstance(throughput, bool)
            or throughput <= 0
        ):
            raise ConfigError(f"{where}: throughput: submit_sm per second, a number > 0")
        priority = entry.get("priority", False)
        if not isinstance(priority, bool):
            raise ConfigError(f"{where}: priority: expected true or false")
        seen.add(system_id)
        clients.append(SmppClient(system_id, password, account_id, float(throughput), priority))
    return clients
