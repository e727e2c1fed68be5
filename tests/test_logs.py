"""Log lines: MTA_LOG_FORMAT=json (one object per line) beside text, MTA_LOG_LEVEL, and no
secret in any line of either format (the redacting formatter of mta.cli.logs)."""

from __future__ import annotations

import asyncio
import json
import logging
import sys

import httpx
import pytest

from mta.cli.logs import _RedactingFormatter
from mta.config import ConfigError, Settings
from tests import test_process
from tests.conftest import Env, eventually, sim_accounts
from tests.test_metrics import free_port
from tests.test_process import Proc, spawn
from tests.test_secrets import forms, leaks

procs = test_process.procs  # the fixture: processes a test started, killed at its end

# A secret with characters JSON escapes (quote, backslash) and a non-ASCII one.
SECRET = 'Sekr3t"pa\\ss-ü-9f2k'


def registry_redactor(env: Env) -> _RedactingFormatter:
    toml = sim_accounts(secret=SECRET.replace("\\", "\\\\").replace('"', '\\"'))
    env.accounts(toml)
    formatter = _RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    formatter.redact = env.registry().redactor()
    return formatter


def record_with_secret() -> logging.LogRecord:
    try:
        raise RuntimeError(f"partner said: bad key {SECRET!r} / {json.dumps(SECRET)}")
    except RuntimeError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "mta.worker",
        logging.ERROR,
        __file__,
        1,
        "account %r: Send raised %s",
        ("sim", f"RuntimeError: {SECRET} (json {json.dumps(SECRET)})"),
        exc_info,
    )
    record.account = "sim"
    record.batch_id = "batch-42"
    return record


@pytest.mark.parametrize("as_json", [False, True])
async def test_no_secret_in_either_format(env: Env, as_json: bool) -> None:
    formatter = registry_redactor(env)
    formatter.json = as_json
    line = formatter.format(record_with_secret())
    assert not leaks(line, forms(SECRET)), line
    assert "***" in line
    if as_json:
        assert "\n" not in line  # one object per line, the traceback escaped inside it
        doc = json.loads(line)
        assert doc["level"] == "ERROR" and doc["logger"] == "mta.worker"
        assert doc["account"] == "sim" and doc["batch_id"] == "batch-42"
        assert doc["message"].startswith("account 'sim': Send raised RuntimeError: ")
        assert "Traceback" in doc["exc"] and doc["time"].endswith("+00:00")
        assert not leaks(json.dumps(doc, ensure_ascii=False), forms(SECRET))
    else:
        assert " ERROR mta.worker: account 'sim': Send raised RuntimeError: " in line


def test_settings_validate_log_and_metrics_values() -> None:
    assert Settings(log_format="json", log_level="debug").log_level == "debug"
    with pytest.raises(ConfigError, match="MTA_LOG_FORMAT"):
        Settings(log_format="xml")
    with pytest.raises(ConfigError, match="MTA_LOG_LEVEL"):
        Settings(log_level="LOUD")
    with pytest.raises(ConfigError, match="MTA_METRICS_LISTEN"):
        Settings(metrics_listen="9464")


async def test_process_logs_json_lines_at_the_level_chosen(env: Env, procs: list[Proc]) -> None:
    env.accounts(sim_accounts())
    worker = await spawn(env, procs, "worker", MTA_LOG_FORMAT="json", MTA_LOG_LEVEL="info")
    docs = [json.loads(line) for line in worker.lines]  # every line is one JSON object
    assert any(" running (prefix " in d["message"] for d in docs)
    assert all({"time", "level", "logger", "message"} <= d.keys() for d in docs)
    logged_in = [d for d in docs if d["message"].endswith("logged in")]
    assert logged_in and logged_in[0]["account"] == "sim"
    port = free_port()
    quiet = await spawn(
        env,
        procs,
        "reporter",
        ready=False,
        MTA_LOG_LEVEL="WARNING",
        MTA_METRICS_LISTEN=f"127.0.0.1:{port}",
    )

    async def readyz() -> bool:
        async with httpx.AsyncClient() as client:
            try:
                answer = await client.get(f"http://127.0.0.1:{port}/readyz")
            except httpx.TransportError:
                return False
            return answer.status_code == 200

    await eventually(readyz, timeout=15, what="the reporter to be ready")
    await asyncio.sleep(0.5)  # its start-up lines (INFO) would have been written by now
    quiet.proc.terminate()
    assert await quiet.wait_exit(15) == 0
    assert not [line for line in quiet.lines if " INFO " in line], quiet.lines
