"""mta.sdk, the one import surface of adapter authors (issue 11), and what the built-in
adapters owe it: each option default and bound written once, in its OptionSpec."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from mta.adapters.smpp.client import ClientConfig

import mta.sdk
from mta.adapter import OptionSpec
from mta.registry import discover

ROOT = Path(__file__).resolve().parent.parent

#: name -> home module. Adding a name to mta.sdk is a decision: add it here too.
HOMES = {
    "Adapter": "mta.adapter",
    "AdapterContext": "mta.adapter",
    "AdapterError": "mta.adapter",
    "AdapterMeta": "mta.adapter",
    "ApiStatus": "mta.contract",
    "AuthError": "mta.adapter",
    "HTTP_OPTIONS": "mta.adapters.httpbase",
    "HttpAdapter": "mta.adapters.httpbase",
    "OptionSpec": "mta.adapter",
    "PermanentError": "mta.adapter",
    "REASON_RETRY": "mta.contract",
    "REASON_SENDER": "mta.contract",
    "ReceiptMode": "mta.adapter",
    "ReceiptSink": "mta.adapter",
    "SendPattern": "mta.adapter",
    "SmsMessage": "mta.contract",
    "SmsReportRequest": "mta.contract",
    "SmsResponse": "mta.contract",
    "SmsResult": "mta.contract",
    "SmsSendRequest": "mta.contract",
    "ThrottledError": "mta.adapter",
    "TransientError": "mta.adapter",
    "WebhookError": "mta.adapter",
    "WebhookRequest": "mta.adapter",
    "seconds_until": "mta.contract",
}


def test_all_is_pinned() -> None:
    assert sorted(mta.sdk.__all__) == sorted(HOMES)
    assert len(mta.sdk.__all__) == len(set(mta.sdk.__all__))


@pytest.mark.parametrize("name", sorted(HOMES))
def test_each_name_is_its_home_modules_object(name: str) -> None:
    home = importlib.import_module(HOMES[name])
    assert getattr(mta.sdk, name) is getattr(home, name)


def test_star_import_gives_every_name_and_unknown_names_raise() -> None:
    namespace: dict[str, Any] = {}
    exec("from mta.sdk import *", namespace)
    assert set(HOMES) <= set(namespace)
    assert set(HOMES) <= set(dir(mta.sdk))
    with pytest.raises(AttributeError, match="no attribute 'HttpAdaptor'"):
        mta.sdk.HttpAdaptor  # noqa: B018


@pytest.mark.parametrize(
    "first",
    ["import mta.sdk", "from mta.sdk import HttpAdapter", "import mta.adapters.httpbase"],
)
def test_imports_in_any_order_without_a_cycle(first: str) -> None:
    code = f"{first}\nfrom mta.sdk import HTTP_OPTIONS, HttpAdapter, OptionSpec\nprint('ok')"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_the_examples_import_from_the_sdk_only() -> None:
    """Adapter code in examples/ imports from mta.sdk (and the kit from mta.testing), never
    from the modules behind it."""
    behind = ("mta.adapter", "mta.contract", "mta.adapters.httpbase")
    for path in sorted((ROOT / "examples").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in behind:
                raise AssertionError(f"{path.relative_to(ROOT)}: from {node.module} import ...")


# --- each default and bound once -------------------------------------------------------------

BUILT_IN = {
    name: cls for name, cls in discover().items() if cls.__module__.startswith("mta.adapters.")
}
#: Values too common to tell a second copy from an unrelated use (0 retries, "" text, ...).
TRIVIAL = (None, "", True, False, 0, 1)


def _option_readers(cls: type[Any]) -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """Every function of ``cls`` and of its built-in bases that reads ``options``."""
    found = []
    for klass in cls.__mro__:
        if not klass.__module__.startswith("mta.adapters."):
            continue
        source = textwrap.dedent(inspect.getsource(klass))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
                attrs = {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}
                if "options" in names | attrs or node.name == "__init__":
                    found.append((f"{klass.__name__}.{node.name}", node))
    return found


def _is_options(node: ast.expr) -> bool:
    """``options``, ``o`` (the resolved options) or ``self.options``."""
    if isinstance(node, ast.Name):
        return node.id in ("options", "o")
    return isinstance(node, ast.Attribute) and node.attr == "options"


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_no_option_default_is_written_again_where_options_are_read(name: str) -> None:
    """A constructor (or any method reading ``options``) of a built-in adapter has no literal
    equal to one of its OptionSpec defaults (same type and value), and never passes a
    fallback to ``options.get(name, ...)`` nor writes ``options.get(name) or <literal>`` for
    a declared option: defaults come from ``meta.options`` (``meta.resolve``)."""
    cls = BUILT_IN[name]
    declared = {spec.name for spec in cls.meta.options}
    defaults = {
        (type(spec.default), spec.default): spec.name
        for spec in cls.meta.options
        if spec.default not in TRIVIAL
    }
    problems = []
    for where, func in _option_readers(cls):
        for node in ast.walk(func):
            if isinstance(node, ast.Constant):
                key = (type(node.value), node.value)
                if node.value not in TRIVIAL and key in defaults:
                    problems.append(f"{where}: {node.value!r} is the default of {defaults[key]}")
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get"
                and _is_options(node.func.value)
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and node.args[0].value in declared
                and len(node.args) > 1
            ):
                problems.append(f"{where}: options.get({node.args[0].value!r}, fallback)")
            if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or):
                first, *rest = node.values
                if (
                    isinstance(first, ast.Call)
                    and isinstance(first.func, ast.Attribute)
                    and first.func.attr == "get"
                    and _is_options(first.func.value)
                    and first.args
                    and isinstance(first.args[0], ast.Constant)
                    and first.args[0].value in declared
                    and any(isinstance(r, ast.Constant) and r.value not in (None, "") for r in rest)
                ):
                    problems.append(f"{where}: options.get({first.args[0].value!r}) or <literal>")
    assert not problems, "\n".join(problems)


def test_the_smpp_client_config_has_no_defaults_of_its_own() -> None:
    """ClientConfig is built from the resolved options: a default there would be a second
    copy of the OptionSpec's."""
    with_default = [
        f.name
        for f in dataclasses.fields(ClientConfig)
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    ]
    assert with_default == []


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_built_in_defaults_fit_their_bounds(name: str) -> None:
    for spec in BUILT_IN[name].meta.options:
        assert isinstance(spec, OptionSpec)
        if not spec.required:
            assert spec.problem(spec.default) is None, (name, spec.name)


def test_bounds_that_constructors_used_to_enforce_are_declared() -> None:
    """Bounds once enforced (or clamped) in constructors now live in the specs."""
    expected = {
        ("simulator", "accept_ratio"): (0.0, 1.0),
        ("simulator", "deliver_ratio"): (0.0, 1.0),
        ("http-bridge", "max_batch"): (1, 1000),
        ("infobip", "reports_kept"): (1, None),
        ("smpp", "window"): (1, None),
        ("smpp", "binds"): (1, None),
        ("smpp", "reconnect_s"): (0.01, None),
        ("smpp", "throttle_retries"): (0, None),
        ("smpp", "port"): (1, 65535),
    }
    for (adapter, option), bounds in expected.items():
        spec = BUILT_IN[adapter].meta.option(option)
        assert spec is not None and (spec.minimum, spec.maximum) == bounds, (adapter, option)
    smpp = BUILT_IN["smpp"].meta
    assert {n: smpp.option(n).choices for n in ("bind", "long_messages")} == {  # type: ignore[union-attr]
        "bind": ("transceiver", "transmitter+receiver"),
        "long_messages": ("udh", "sar", "payload"),
    }
