"""The ``meta`` check's rules: an AdapterMeta, its options, and the members the core calls."""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping, Sequence
from typing import Any

from mta.adapter import AdapterMeta, OptionSpec, ReceiptMode, SendPattern
from mta.testing.results import Problems

__all__ = [
    "PROBES",
    "REQUIRED_MEMBERS",
    "check_members",
    "check_meta_fields",
    "check_option",
    "fits",
]

_OPTION_TYPES = (str, int, float, bool)
_ADAPTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
_OPTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
REQUIRED_MEMBERS = ("login", "send", "report", "destroy")
PROBES = ("test_connection", "test_credentials", "test_proxy")


def fits(value: Any, kind: type) -> bool:
    """Whether a default is of its option's type (an int is a fine float; a bool no int)."""
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, int | float)
    return isinstance(value, kind)


def check_meta_fields(check: Problems, meta: AdapterMeta) -> bool:
    """The fields of ``meta``; False when its options cannot be looked at."""
    if not isinstance(meta.name, str) or not _ADAPTER_NAME.fullmatch(meta.name):
        check.problem(
            f"meta.name is {meta.name!r}; a name for accounts.toml and the entry point "
            "(letters, digits, '-', '_', '.')"
        )
    if not isinstance(meta.description, str) or not meta.description.strip():
        check.problem("meta.description is empty; one line for `mta adapters`")
    if not isinstance(meta.default_url, str):
        check.problem(f"meta.default_url is a {type(meta.default_url).__name__}, not a str")
    if not isinstance(meta.pattern, SendPattern):
        check.problem(f"meta.pattern is {meta.pattern!r}; use SendPattern.BATCH or .LOOP")
    if not isinstance(meta.receipts, ReceiptMode):
        check.problem(f"meta.receipts is {meta.receipts!r}; use ReceiptMode.PULL, PUSH or BOTH")
    for name in ("max_batch", "max_concurrency"):
        value = getattr(meta, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            check.problem(f"meta.{name} is {value!r}; it must be an int >= 1")
    if not isinstance(meta.extra, Mapping):
        check.problem(f"meta.extra is a {type(meta.extra).__name__}, not a mapping")
    if not isinstance(meta.options, Sequence):
        check.problem(f"meta.options is a {type(meta.options).__name__}; a tuple of OptionSpec")
        return False
    return True


def check_option(check: Problems, spec: OptionSpec) -> None:
    where = f"option {spec.name!r}"
    if not isinstance(spec.name, str) or not _OPTION_NAME.fullmatch(spec.name):
        check.problem(f"{where}: the name must be a TOML bare key like api_key")
    if spec.type not in _OPTION_TYPES:
        check.problem(
            f"{where}: type {getattr(spec.type, '__name__', spec.type)!r}; accounts.toml "
            "options are str, int, float or bool"
        )
        return
    default = spec.default
    if not (spec.required or default is None or fits(default, spec.type)):
        check.problem(
            f"{where}: default {default!r} is not of type {spec.type.__name__}; the adapter "
            "gets the default as it is"
        )
    for choice in spec.choices:
        if not fits(choice, spec.type):
            check.problem(f"{where}: choice {choice!r} is not of type {spec.type.__name__}")
    bounded = spec.minimum is not None or spec.maximum is not None
    if bounded and spec.type not in (int, float):
        check.problem(f"{where}: minimum/maximum on a {spec.type.__name__} option; numbers only")
    elif not spec.required and default is not None and fits(default, spec.type):
        problem = spec.problem(default)
        if problem is not None:
            check.problem(
                f"{where}: the default {problem}; accounts that leave it unset would get it"
            )
    if spec.secret and not spec.required and default not in (None, ""):
        check.problem(
            f"{where}: a secret option with a non-empty default: `mta adapters` prints "
            "defaults, and a secret does not belong in code"
        )
    if not isinstance(spec.description, str):
        check.problem(f"{where}: description is not a str")


def check_members(check: Problems, cls: type[Any], meta: AdapterMeta) -> None:
    for name in REQUIRED_MEMBERS:
        member = getattr(cls, name, None)
        if member is None:
            check.problem(f"{cls.__name__} has no {name}(); the Adapter protocol needs it")
        elif not inspect.iscoroutinefunction(member):
            check.problem(f"{cls.__name__}.{name} is not a coroutine function (async def)")
    for name in (*PROBES, "webhook"):
        member = getattr(cls, name, None)
        if member is not None and not inspect.iscoroutinefunction(member):
            check.problem(f"{cls.__name__}.{name} is not a coroutine function (async def)")
    pushes = meta.receipts in (ReceiptMode.PUSH, ReceiptMode.BOTH)
    if pushes and getattr(cls, "webhook", None) is None:
        check.problem(
            f"meta.receipts is {meta.receipts}, but {cls.__name__} has no "
            "async webhook(request) -> list[SmsResult] to take the pushes"
        )
