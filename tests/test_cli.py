"""The ``mta`` command as users run it: help, adapters, accounts, publish and reports."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aio_pika
import orjson
import pytest
from click.testing import CliRunner

from mta.cli import main
from mta.config import MASK, Settings
from tests.conftest import Env, mta_command, process_env, run_mta

ROOT = Path(__file__).resolve().parents[1]

RESULT_KEYS = {
    "messageId",
    "mobileNumber",
    "accountId",
    "senderId",
    "smsType",
    "apiStatus",
    "partnerMessageId",
    "partnerStatus",
    "partnerDetail",
    "sendAt",
    "smsOperator",
    "smsMessageCount",
}
SIM_OPTIONS = {
    "accept_ratio": ("float", 1.0),
    "deliver_ratio": ("float", 0.95),
    "report_delay_s": ("float", 2.0),
    "latency_ms": ("float", 0.0),
    "seed": ("str", ""),
    "push_receipts": ("bool", False),
}


def cli(*args: str, env: dict[str, str] | None = None) -> Any:
    """Run the command in-process (only for commands that never start an event loop)."""
    clean = {k: None for k in os.environ if k.startswith("MTA_")}
    result = CliRunner().invoke(main, list(args), env={**clean, **(env or {})})
    return result


# --- help -----------------------------------------------------------------------------------

LISTED = [
    "MTA_AMQP_URL",
    "MTA_REDIS_URL",
    "MTA_PREFIX",
    "MTA_ACCOUNTS",
    "MTA_TIMEZONE",
    "MTA_POLL_FIRST_S",
    "MTA_POLL_MAX_S",
    "MTA_MAX_WAIT_S",
]


@pytest.mark.parametrize("command", ["run", "worker", "reporter"])
def test_help_lists_every_setting_variable(command: str) -> None:
    result = cli(command, "--help")
    assert result.exit_code == 0, result.output
    for name in LISTED:
        assert name in result.output, f"{name} missing from mta {command} --help"
    # Every Settings field has its MTA_* variable, as Settings' docstring promises.
    for f in dataclasses.fields(Settings):
        assert f"MTA_{f.name.upper()}" in result.output, f"MTA_{f.name.upper()} missing"


def test_every_setting_is_declared_once_with_its_variable_and_help() -> None:
    """Each Settings field carries its MTA_* variable and help (mta.config.setting), and the
    flags are made from them: _SETTINGS is not a second list written by hand."""
    from mta.cli.settings import _SETTINGS

    declared = dataclasses.fields(Settings)
    assert [name for _, _, name, _, _ in _SETTINGS] == [f.name for f in declared]
    for (flag, env, name, _, text), f in zip(_SETTINGS, declared, strict=True):
        assert env == f.metadata["env"] == f"MTA_{name.upper()}" == Settings.variable(name)
        assert text == f.metadata["help"] and text.endswith(".")
        assert flag.split("/")[0] == "--" + name.replace("_", "-")
    entries = {name: (flag, kind) for flag, _, name, kind, _ in _SETTINGS}
    assert entries["strict_numbers"] == ("--strict-numbers/--no-strict-numbers", bool)
    assert entries["max_batch"] == ("--max-batch", int) and entries["lease_s"][1] is float
    level = entries["log_level"][1]
    assert list(level.choices) == ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
    assert level.case_sensitive is False and entries["log_format"][1].case_sensitive is True
    assert list(entries["inflight_policy"][1].choices) == ["resubmit", "fail"]


def test_a_new_setting_gets_its_flag_from_its_declaration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mta.cli import settings as cli_settings
    from mta.config import setting

    @dataclasses.dataclass(frozen=True)
    class More(Settings):
        drain_s: float = setting(5.0, "MTA_DRAIN_S", "How long to drain.")
        quiet: bool = setting(False, "MTA_QUIET", "Say less.")

    monkeypatch.setattr(cli_settings, "Settings", More)
    extra = {e[2]: e for e in cli_settings._declared()}
    assert extra["drain_s"] == ("--drain-s", "MTA_DRAIN_S", "drain_s", float, "How long to drain.")
    assert extra["quiet"][0] == "--quiet/--no-quiet"

    @dataclasses.dataclass(frozen=True)
    class Undeclared(Settings):
        forgotten: int = 3

    monkeypatch.setattr(cli_settings, "Settings", Undeclared)
    with pytest.raises(TypeError, match=r"Settings\.forgotten: declare it with"):
        cli_settings._declared()


def test_a_choice_setting_out_of_its_choices_names_its_variable() -> None:
    from mta.config import ConfigError

    for name, value in (("log_format", "xml"), ("log_level", "loud"), ("inflight_policy", "x")):
        with pytest.raises(ConfigError, match=f"^{Settings.variable(name)}: {value!r}, expected"):
            Settings(**{name: value})  # type: ignore[arg-type]
    assert Settings(log_level="debug").log_level == "debug"  # any case, as the flag takes it


def test_top_level_help_lists_the_commands() -> None:
    result = cli("--help")
    assert result.exit_code == 0
    for command in ("run", "worker", "reporter", "publish", "reports", "accounts", "adapters"):
        assert f"  {command} " in result.output, command
    assert "MTA_" in result.output


def test_settings_come_from_variables_and_bad_ones_are_usage_errors(tmp_path: Path) -> None:
    path = tmp_path / "a.toml"
    path.write_text('[[account]]\nid = 0\nname = "s"\nadapter = "simulator"\n')
    result = cli("accounts", "list", env={"MTA_ACCOUNTS": str(path)})
    assert result.exit_code == 0, result.output
    assert " s " in result.output and "simulator" in result.output
    # accounts test takes MTA_TIMEZONE (accounts list does not: each command its own settings)
    bad = cli("accounts", "test", "s", env={"MTA_ACCOUNTS": str(path), "MTA_TIMEZONE": "Mars/Base"})
    assert bad.exit_code == 2 and "MTA_TIMEZONE" in bad.output


# --- adapters ---------------------------------------------------------------------------------


def test_adapters_lists_the_simulator_with_its_options() -> None:
    result = cli("adapters")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.startswith("simulator: ") for line in lines), result.output
    for name, (kind, default) in SIM_OPTIONS.items():
        assert any(
            line.strip().startswith(f"- {name}: {kind} (default {default!r})") for line in lines
        ), f"option {name} not listed:\n{result.output}"


def test_adapters_json_describes_the_simulator() -> None:
    result = cli("adapters", "--json")
    assert result.exit_code == 0, result.output
    adapters = {a["name"]: a for a in orjson.loads(result.output)}
    sim = adapters["simulator"]
    assert sim["pattern"] == "batch" and sim["max_batch"] >= 1 and sim["max_concurrency"] >= 1
    options = {o["name"]: o for o in sim["options"]}
    assert set(options) == set(SIM_OPTIONS)
    for name, (kind, default) in SIM_OPTIONS.items():
        assert options[name]["type"] == kind and options[name]["default"] == default
        assert options[name]["required"] is False and options[name]["secret"] is False
        assert options[name]["description"]


def test_adapters_show_option_bounds() -> None:
    result = cli("adapters", "--json")
    assert result.exit_code == 0, result.output
    adapters = {a["name"]: a for a in orjson.loads(result.output)}
    bridge = {o["name"]: o for o in adapters["http-bridge"]["options"]}
    assert (bridge["max_batch"]["minimum"], bridge["max_batch"]["maximum"]) == (1, 1000)
    assert bridge["pattern"]["choices"] == ["batch", "loop"]
    assert (bridge["token"]["choices"], bridge["token"]["minimum"]) == ([], None)
    sim = {o["name"]: o for o in adapters["simulator"]["options"]}
    assert (sim["accept_ratio"]["minimum"], sim["accept_ratio"]["maximum"]) == (0.0, 1.0)
    text = cli("adapters").output.splitlines()
    assert any(
        line.strip().startswith("- max_batch: int (default 100) {1 to 1000}") for line in text
    ), text
    assert any("- pattern: str (default 'batch') {one of 'batch', 'loop'}" in x for x in text)


# --- accounts list ----------------------------------------------------------------------------

SECRET = "Zq9-very-secret-VALUE-4242"


def test_accounts_list_masks_secrets(tmp_path: Path) -> None:
    path = tmp_path / "accounts.toml"
    path.write_text(
        '[[account]]\nid = 7\nname = "sim-main"\nadapter = "simulator"\ndefault = true\n'
        'secret_key = "${SOME_SECRET}"\n[account.options]\nlatency_ms = 5\n'
        '[[account]]\nid = 8\nname = "sim-off"\nadapter = "simulator"\nactive = false\n',
        encoding="utf-8",
    )
    env = {"MTA_ACCOUNTS": str(path), "SOME_SECRET": SECRET}
    text = cli("accounts", "list", env=env)
    assert text.exit_code == 0, text.output
    assert SECRET not in text.output and "Zq9" not in text.output
    assert "sim-main" in text.output and "sim-off" in text.output
    assert "inactive" in text.output and "default" in text.output
    as_json = cli("accounts", "list", "--json", env=env)
    assert as_json.exit_code == 0, as_json.output
    assert SECRET not in as_json.output and "Zq9" not in as_json.output
    rows = {r["name"]: r for r in orjson.loads(as_json.output)}
    assert rows["sim-main"]["secret_key"] == MASK
    assert rows["sim-off"]["secret_key"] == ""  # no secret: nothing to mask
    assert rows["sim-main"]["id"] == 7 and rows["sim-main"]["default"] is True
    assert rows["sim-off"]["active"] is False
    assert rows["sim-main"]["options"]["latency_ms"] == 5.0


def test_accounts_list_config_error_names_account_and_field(tmp_path: Path) -> None:
    path = tmp_path / "accounts.toml"
    path.write_text(
        '[[account]]\nid = 1\nname = "broken"\nadapter = "simulator"\n'
        '[account.options]\ndeliver_ratio = "most"\n'
    )
    result = cli("accounts", "list", env={"MTA_ACCOUNTS": str(path)})
    assert result.exit_code == 1
    assert "'broken'" in result.output and "deliver_ratio" in result.output


URL_PW, PROXY_PW = "Url-Pa55word-41", 'Px pass+/"77'
IB_ACCOUNT = (
    '[[account]]\nid = 3\nname = "ib"\nadapter = "infobip"\n[account.options]\n'
    'api_key = "ib-api-key-9931"\n'
)


def test_accounts_list_masks_proxy_credentials_and_url_passwords(tmp_path: Path) -> None:
    path = tmp_path / "accounts.toml"
    path.write_text(
        IB_ACCOUNT + f'url = "https://ib-user:{URL_PW}@api.example"\n'
        'proxy_url = "http://proxy.example:3128"\nproxy_username = "px-user"\n'
        'proxy_password = "${PX_PASSWORD}"\n',
        encoding="utf-8",
    )
    env = {"MTA_ACCOUNTS": str(path), "PX_PASSWORD": PROXY_PW}
    for args in (("accounts", "list"), ("accounts", "list", "--json")):
        result = cli(*args, env=env)
        assert result.exit_code == 0, result.output
        for secret in (URL_PW, PROXY_PW, "ib-api-key-9931", "Px pass"):
            assert secret not in result.output, (args, result.output)
        assert "ib-user:***@api.example" in result.output
        assert "proxy.example:3128" in result.output and "px-user" in result.output


def test_accounts_list_refuses_a_proxy_url_with_credentials_without_showing_them(
    tmp_path: Path,
) -> None:
    path = tmp_path / "accounts.toml"
    path.write_text(
        IB_ACCOUNT + 'proxy_url = "http://px-user:${PX_PASSWORD}@proxy.example:3128"\n',
        encoding="utf-8",
    )
    result = cli("accounts", "list", env={"MTA_ACCOUNTS": str(path), "PX_PASSWORD": PROXY_PW})
    assert result.exit_code == 1
    assert "'ib'" in result.output and "proxy_url" in result.output
    assert "proxy_username" in result.output and "proxy_password" in result.output
    assert PROXY_PW not in result.output and "Px pass" not in result.output


# --- RabbitMQ or Redis down: one line, no traceback, no password ------------------------------

AMQP_PW, REDIS_PW = "Amqp-Pa55-xyz", "Redis-Pa55-xyz"


async def mta_without_services(*args: str, **env: str) -> tuple[int, str]:
    """``mta ARGS`` in a subprocess with these settings; (exit code, stdout + stderr)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("MTA_")}
    proc = await asyncio.create_subprocess_exec(
        *mta_command(*args),
        env={**base, **env},
        cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


@pytest.mark.parametrize(
    ("args", "service", "variable"),
    [
        (("status",), "RabbitMQ", "MTA_AMQP_URL"),
        (("status", "--json"), "Redis", "MTA_REDIS_URL"),
        (("reports", "--idle-timeout", "1"), "RabbitMQ", "MTA_AMQP_URL"),
        (("publish", "examples/batch.json"), "RabbitMQ", "MTA_AMQP_URL"),
        (("worker",), "RabbitMQ", "MTA_AMQP_URL"),
        (("worker",), "Redis", "MTA_REDIS_URL"),
    ],
)
async def test_unreachable_rabbitmq_or_redis_is_one_line_with_a_hint(
    args: tuple[str, ...], service: str, variable: str
) -> None:
    from tests.conftest import AMQP_URL, REDIS_URL

    env = {
        "MTA_AMQP_URL": AMQP_URL,
        "MTA_REDIS_URL": REDIS_URL,
        "MTA_ACCOUNTS": str(ROOT / "examples" / "accounts.toml"),
        "MTA_PREFIX": f"t-unreachable-{os.getpid()}",
    }
    if service == "RabbitMQ":  # port 1: nothing listens there
        env["MTA_AMQP_URL"] = f"amqp://guest:{AMQP_PW}@127.0.0.1:1/"
    else:
        env["MTA_REDIS_URL"] = f"redis://:{REDIS_PW}@127.0.0.1:1/0"
    code, output = await mta_without_services(*args, **env)
    lines = [line for line in output.splitlines() if line.strip()]
    assert code == 1, output
    assert len(lines) == 1, output
    assert "Traceback" not in output
    assert AMQP_PW not in output and REDIS_PW not in output
    assert f"cannot reach {service} at " in lines[0] and ":***@127.0.0.1:1" in lines[0]
    assert variable in lines[0] and "is it running?" in lines[0]


# --- publish ----------------------------------------------------------------------------------


def test_publish_rejects_a_file_that_is_not_a_batch(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    path.write_text('{"msgs": []}')
    result = cli("publish", str(path))
    assert result.exit_code == 1 and "'messages'" in result.output
    bad_csv = tmp_path / "b.csv"
    bad_csv.write_text("905330000001,one\n905330000002\n")
    result = cli("publish", str(bad_csv))
    assert result.exit_code == 1 and "b.csv:2" in result.output


async def test_publish_csv_in_batches(env: Env) -> None:
    tail = await env.tail()
    await env.start("worker", "reporter")
    path = env.tmp / "messages.csv"
    path.write_text(
        "number,text,sender\n"
        "905330000001,hello one,ACME\n"
        '+90 533 000 00 02,"hello, two",\n'
        "905330000003,three\n"
        "# a comment line\n"
        "905330000004,four,ACME\n"
        "905330000005,five\n",
        encoding="utf-8",
    )
    code, out, err = await run_mta(env, "publish", str(path), "--batch-size", "2")
    assert code == 0, err
    ids = out.split()
    assert len(ids) == 3 and len(set(ids)) == 3, out
    assert "published 5 message(s) in 3 batch(es)" in err
    finals = await tail.wait_finals(5, timeout=15)
    await asyncio.sleep(0.3)
    assert len(tail.finals()) == 5 and len(tail.oks()) == 5
    sizes = Counter(f["messageId"].rsplit(":", 1)[0] for f in finals)
    assert set(sizes) == set(ids) and sorted(sizes.values()) == [1, 2, 2]
    numbers = {f["mobileNumber"] for f in finals}
    assert numbers == {f"90533000000{i}" for i in range(1, 6)}
    assert {f["apiStatus"] for f in finals} == {"DELIVERED"}
    # Batches keep the file's order: the first id carries rows 1-2, the last row 5.
    by_id = {f["messageId"]: f["mobileNumber"] for f in finals}
    assert by_id[f"{ids[0]}:1"] == "905330000002" and by_id[f"{ids[2]}:0"] == "905330000005"


async def test_publish_csv_without_header_keeps_a_formatted_first_number(env: Env) -> None:
    """A file with no header whose first number is written '+90 533 …' loses nothing."""
    tail = await env.tail()
    await env.start("worker", "reporter")
    path = env.tmp / "noheader.csv"
    path.write_text("+90 533 000 00 01,first\n905330000002,second\n", encoding="utf-8")
    code, _, err = await run_mta(env, "publish", str(path))
    assert code == 0, err
    assert "published 2 message(s) in 1 batch(es)" in err, err
    await tail.wait_finals(2, timeout=10)
    assert {f["mobileNumber"] for f in tail.finals()} == {"905330000001", "905330000002"}


async def test_publish_json_batch(env: Env) -> None:
    tail = await env.tail()
    await env.start("worker", "reporter")
    path = env.tmp / "batch.json"
    messages = [
        {"mobileNumber": "905330000011", "text": "one", "smsType": "BULK|1-2-3-4", "accountId": 9},
        {"mobileNumber": "+44 20 7946 0018", "text": "two", "senderId": 4},
        {"mobileNumber": "12", "text": "invalid number"},
    ]
    path.write_bytes(orjson.dumps({"messages": messages}))
    code, out, err = await run_mta(env, "publish", str(path), "--priority")
    assert code == 0, err
    (mid,) = out.split()
    assert "published 3 message(s) in 1 batch(es)" in err and ".send.priority" in err
    await tail.wait_finals(3, timeout=15)
    finals = tail.by_id()
    assert finals[f"{mid}:0"]["smsType"] == "BULK|1-2-3-4"
    assert finals[f"{mid}:0"]["accountId"] == 9
    assert finals[f"{mid}:1"]["mobileNumber"] == "442079460018"
    assert finals[f"{mid}:1"]["senderId"] == 4
    assert tail.by_id("FAIL")[f"{mid}:2"]["partnerDetail"].startswith("mobileNumber:")
    assert {r["messageId"] for r in tail.oks()} == {f"{mid}:0", f"{mid}:1"}


# --- reports ----------------------------------------------------------------------------------


class Reports:
    """An ``mta reports`` subprocess whose stdout lines are collected as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.lines.append(raw.decode().rstrip("\n"))

    @classmethod
    async def start(cls, env: Env, *args: str) -> Reports:
        proc = await asyncio.create_subprocess_exec(
            *mta_command("reports", *args),
            env=process_env(env),
            cwd=ROOT,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(proc)

    async def finish(self, timeout: float) -> tuple[int, str]:
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        finally:
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()
        await asyncio.wait_for(self.reader, 5)
        assert self.proc.stderr is not None
        return code, (await self.proc.stderr.read()).decode()

    def docs(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.lines if line]


async def probe_until_bound(env: Env, reports: Reports, timeout: float = 15.0) -> None:
    """Publish OK probes on the report exchange until the tail prints one: its queue is bound."""
    assert env.channel is not None
    exchange = await env.channel.get_exchange(env.topology.reports_exchange)
    body = orjson.dumps(
        {"partnerPacketId": "", "results": [{"messageId": "probe:0", "apiStatus": "OK"}]}
    )
    deadline = time.monotonic() + timeout
    while not any("probe:0" in line for line in reports.lines):
        if reports.proc.returncode is not None or time.monotonic() > deadline:
            raise AssertionError(f"mta reports never bound its queue; printed {reports.lines}")
        await exchange.publish(aio_pika.Message(body), routing_key="0.OK")
        await asyncio.sleep(0.2)


async def test_reports_prints_results_as_json_lines(env: Env) -> None:
    await env.start("worker", "reporter")
    reports = await Reports.start(env, "--json", "--finals", "--count", "3", "--idle-timeout", "10")
    try:
        await probe_until_bound(env, reports)
        mid = await env.publish(
            {
                "messages": [
                    {"mobileNumber": "905330000021", "text": "a", "smsType": "OTP|x-1"},
                    {"mobileNumber": "905330000022", "text": "b", "accountId": 5},
                    {"mobileNumber": "905330000023", "text": ""},
                ]
            }
        )
    finally:
        code, err = await reports.finish(20)
    assert code == 0, err
    docs = [d for d in reports.docs() if d["messageId"] != "probe:0"]
    expected = {f"{mid}:{i}" for i in range(3)}
    finals = [d for d in docs if d["apiStatus"] != "OK"]
    assert Counter(d["messageId"] for d in finals) == Counter(expected)
    assert {d["messageId"] for d in docs if d["apiStatus"] == "OK"} <= expected - {f"{mid}:2"}
    for doc in docs:
        assert set(doc) == RESULT_KEYS, doc
    by_id = {d["messageId"]: d for d in finals}
    assert by_id[f"{mid}:0"]["apiStatus"] == "DELIVERED"
    assert by_id[f"{mid}:0"]["smsType"] == "OTP|x-1"
    assert by_id[f"{mid}:1"]["accountId"] == 5
    assert by_id[f"{mid}:2"]["apiStatus"] == "FAIL"
    assert by_id[f"{mid}:2"]["partnerDetail"].startswith("text:")


async def test_reports_count_and_idle_timeout_end_the_tail(env: Env) -> None:
    # --count without --finals counts every result, OKs included.
    reports = await Reports.start(env, "--json", "--count", "2", "--idle-timeout", "10")
    try:
        with contextlib.suppress(AssertionError):
            await probe_until_bound(env, reports)
        await asyncio.sleep(0.2)
        assert env.channel is not None
        exchange = await env.channel.get_exchange(env.topology.reports_exchange)
        body = orjson.dumps(
            {"partnerPacketId": "", "results": [{"messageId": "probe:1", "apiStatus": "OK"}]}
        )
        with contextlib.suppress(Exception):
            await exchange.publish(aio_pika.Message(body), routing_key="0.OK")
    finally:
        code, err = await reports.finish(15)
    assert code == 0, err
    assert len(reports.docs()) == 2, reports.lines
    # With nothing coming, --idle-timeout ends it, printing nothing.
    started = time.monotonic()
    idle = await Reports.start(env, "--json", "--idle-timeout", "1")
    code, err = await idle.finish(15)
    assert code == 0, err
    assert idle.lines == []
    assert time.monotonic() - started < 10


# --- accounts test ----------------------------------------------------------------------------


async def test_accounts_test_sends_with_the_accounts_sender_or_the_given_one(env: Env) -> None:
    # Twilio refuses a message without From (21603); the adapter does not even send it. So
    # `accounts test --to` must send with the account's sender, or with --sender.
    from tests.fakes.twilio import FakeTwilio
    from tests.httpserver import serve

    fake = FakeTwilio()
    async with serve(fake.app) as url:
        env.accounts(f"""
[[account]]
id = 0
name = "tw"
adapter = "twilio"
default = true
sender = "15005550006"
[account.options]
url = "{url}"
account_sid = "{fake.account_sid}"
auth_token = "{fake.auth_token}"
timeout_s = 2.0
""")
        code, out, err = await run_mta(
            env, "accounts", "test", "tw", "--to", "15551230001", "--wait", "0"
        )
        assert code == 0, out + err
        assert "PASS  send: accepted from '15005550006', partner id SM" in out
        code, out, err = await run_mta(
            env, "accounts", "test", "tw", "--to", "15551230002", "--sender", "INFO", "--wait", "0"
        )
        assert code == 0, out + err
        assert "PASS  send: accepted from 'INFO'" in out
        fake.reject_senders["BAD"] = 21212
        code, out, err = await run_mta(
            env, "accounts", "test", "tw", "--to", "15551230003", "--sender", "BAD", "--wait", "0"
        )
        assert code == 1 and "FAIL  send: 21212" in out and "from 'BAD'" in out
    assert [(f["To"], f["From"]) for f in fake.sent()] == [
        ("+15551230001", "+15005550006"),
        ("+15551230002", "INFO"),
        ("+15551230003", "BAD"),
    ]
    assert fake.auth_token not in out + err
