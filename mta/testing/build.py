"""Building adapters as the registry does, and finding them by entry point, for kit and tests."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any, TypeVar, cast

from mta.adapter import Adapter, AdapterMeta
from mta.config import Account, ConfigError, build_options
from mta.registry import ENTRY_POINT_GROUP, build_adapter, discover

__all__ = ["build", "constructor_problem", "discoverable", "variadic_problem"]

A = TypeVar("A", bound=Adapter)


def _signature(cls: type[Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(cls)
    except (TypeError, ValueError):
        return None


def variadic_problem(cls: type[Any]) -> str | None:
    """Why a constructor taking ``*args``/``**kwargs`` breaks, or None.

    The registry counts the named positional parameters of the constructor: two or more get
    ``cls(options, context)``, fewer get ``cls(options)``. ``*args``/``**kwargs`` hide that
    count, so the registry passes only the options and the adapter never gets its
    :class:`~mta.adapter.AdapterContext`.
    """
    signature = _signature(cls)
    if signature is None:
        return None
    params = list(signature.parameters.values())
    variadic = [p for p in params if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    named = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if not variadic or len(named) >= 2:
        return None
    stars = ", ".join(("*" if p.kind is p.VAR_POSITIONAL else "**") + p.name for p in variadic)
    return (
        f"{cls.__name__}() takes {stars}: the registry reads the constructor's named parameters "
        "to decide what to pass, and with *args/**kwargs it passes only the options (the "
        "AdapterContext is lost); declare def __init__(self, options: Mapping[str, Any], "
        "context: AdapterContext) (or only options) and pass them on by name"
    )


def constructor_problem(cls: type[Any]) -> str | None:
    """What keeps the registry from calling ``cls`` right (:func:`variadic_problem`, too few
    or too many positional parameters), or None."""
    variadic = variadic_problem(cls)
    signature = _signature(cls)
    if variadic is not None or signature is None:
        return variadic
    named = [
        p
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    required = [p for p in named if p.default is p.empty]
    if not named:
        return (
            f"{cls.__name__}() takes no positional argument; the registry calls cls(options) "
            "or cls(options, context)"
        )
    if len(required) > 2:
        return (
            f"{cls.__name__}() requires {len(required)} positional arguments; the registry "
            "gives at most two: options and an AdapterContext"
        )
    return None


def build(
    cls: type[A],
    options: Mapping[str, Any] | None = None,
    *,
    account_name: str = "kit",
    account_id: int = 0,
) -> A:
    """Build an adapter the way the registry does for an account of the accounts file.

    ``options`` is the account's ``[account.options]`` table as TOML gives it: it is checked
    against ``cls.meta.options`` by :func:`mta.config.build_options` (unknown options, missing
    required ones, wrong types and unset ``${ENV}`` references raise
    :class:`~mta.config.ConfigError`, defaults are filled in), then the class is called as
    :func:`mta.registry.build_adapter` calls it: ``cls(options)``, or
    ``cls(options, AdapterContext(account_name, account_id, ReceiptSink(account_name)))`` when
    its constructor takes a second argument. A constructor that refuses its options with
    ``ValueError``, ``TypeError`` or ``KeyError`` raises :class:`~mta.config.ConfigError`, as
    the registry reports it; one taking ``*args``/``**kwargs`` raises :class:`TypeError`
    saying why (:func:`variadic_problem`). The receipt sink is unbound: pushes are dropped
    (the kit binds it).
    """
    problem = variadic_problem(cls)
    if problem is not None:
        raise TypeError(problem)
    where = f"account {account_name!r}"
    resolved, secrets = build_options(options or {}, cls.meta, where)
    account = Account(
        id=account_id,
        name=account_name,
        adapter=cls.meta.name,
        options=resolved,
        secret_options=secrets,
    )
    try:
        return cast(A, build_adapter(cls, account))
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(
            f"{where}: adapter {cls.meta.name!r} refused its options: {exc}"
        ) from None


def discoverable(name: str) -> type[Adapter]:
    """The adapter class installed under entry point ``name`` of group ``mta.adapters``.

    Raises :class:`AssertionError` saying why the MTA would not see it: not installed, not
    importable, no ``AdapterMeta``, or ``meta.name`` different from the entry-point name.
    """
    found = discover()
    if name in found:
        return found[name]
    points = list(entry_points(group=ENTRY_POINT_GROUP, name=name))
    if not points:
        installed = ", ".join(sorted(found)) or "none"
        raise AssertionError(
            f"no entry point {name!r} in group {ENTRY_POINT_GROUP!r} (installed: {installed}); "
            f'declare it under [project.entry-points."{ENTRY_POINT_GROUP}"] and install the '
            "package (pip install -e .)"
        )
    point = points[0]
    try:
        cls = point.load()
    except Exception as exc:
        raise AssertionError(
            f"entry point {name} = {point.value!r} does not load: {type(exc).__name__}: {exc}"
        ) from exc
    meta = getattr(cls, "meta", None)
    if not isinstance(meta, AdapterMeta):
        raise AssertionError(f"{point.value} has no class attribute meta: AdapterMeta")
    raise AssertionError(
        f"entry point {name!r} loads an adapter whose meta.name is {meta.name!r}; they must match"
    )
