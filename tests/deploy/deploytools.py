"""Helpers of the deploy tests (paths, running commands, PromQL and exposition names);
fixtures are in conftest.py."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
HERE = Path(__file__).resolve().parent
BASE_IMAGE = os.environ.get("MTA_TEST_BASE_IMAGE", "sms-mta-base:bookworm")
MTA_IMAGE = "sms-mta:deploy-test"
#: How long each long step took, printed at the end of the session (make test-deploy).
TIMINGS: dict[str, float] = {}


def run(
    args: list[str], timeout: float = 600, check: bool = True, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure, fail the test with its output (never a bare exit code)."""
    proc = subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, check=False, **kwargs  # type: ignore[call-overload]
    )
    if check and proc.returncode != 0:
        pytest.fail(
            f"{' '.join(args)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
            f"\n--- stderr\n{proc.stderr[-4000:]}",
            pytrace=False,
        )
    return proc


def tool(name: str) -> str:
    """The path of a tool the deploy tests need, or a failure saying how to get it."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/local/sbin")
    if path is None:
        pytest.fail(
            f"{name} is not installed: `make test-deploy` installs it "
            "(tests/deploy/ensure-tools.sh)",
            pytrace=False,
        )
    return path


def docker_build(docker: str, dockerfile: Path, tag: str, context: Path, base: str) -> None:
    # The classic builder: the same on docker.io 20.10 and on newer daemons without buildx.
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    run(
        [docker, "build", "-q", "-f", str(dockerfile), "--build-arg", f"BASE_IMAGE={base}",
         "-t", tag, str(context)],
        timeout=1200,
        env=env,
    )


# --- PromQL: the metric names an expression reads --------------------------------------------

_PROMQL_WORDS = {
    # aggregation operators, functions and keywords that look like identifiers
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group", "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "bool", "offset", "rate", "irate", "increase", "delta", "idelta",
    "deriv", "histogram_quantile", "clamp_min", "clamp_max", "clamp", "abs", "absent",
    "absent_over_time", "changes", "resets", "time", "vector", "scalar", "label_replace",
    "label_join", "sort", "sort_desc", "max_over_time", "min_over_time", "avg_over_time",
    "sum_over_time", "count_over_time", "last_over_time", "predict_linear", "round", "ceil",
    "floor", "timestamp", "inf", "nan", "le",
}


def promql_metrics(expr: str) -> set[str]:
    """Metric names in a PromQL expression (label matchers, strings, grouping lists, ranges
    and Grafana variables removed first)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\$\{?\w+\}?", "", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\()?", text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _PROMQL_WORDS:
            continue
        names.add(name)
    return names


def exposition_names(text: str) -> set[str]:
    """Every series name a /metrics exposition can carry: from its # TYPE lines (a counter's
    ``_total``, a histogram's ``_bucket``/``_sum``/``_count``) and from its samples."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()[:4]
            names.add(name)
            suffixes = {
                "counter": ["_total", "_created"],
                "histogram": ["_bucket", "_sum", "_count", "_created"],
                "summary": ["_sum", "_count", "_created"],
            }.get(kind, [])
            names.update(name + s for s in suffixes)
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names
