"""Unit tests of settings and the accounts file: every error names the account and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from mta.adapters.httpbase import HTTP_OPTIONS
from mta.adapters.simulator import SimulatorAdapter

from mta.adapter import AdapterMeta, OptionSpec
from mta.config import MASK, Account, ConfigError, InFlightPolicy, Settings, load_accounts

ACME = AdapterMeta(
    name="acme",
    description="a test adapter with a secret option",
    options=(
        OptionSpec("api_key", str, required=True, secret=True),
        OptionSpec("url", str, default="https://acme.example/sms"),
        OptionSpec("timeout_s", float, default=5.0),
        OptionSpec("retries", int, default=2),
        OptionSpec("verify", bool, default=True),
    ),
    max_concurrency=4,
)
METAS: dict[str, AdapterMeta] = {"simulator": SimulatorAdapter.meta, "acme": ACME}

SIM = '[[account]]\nid = 1\nname = "sim-a"\nadapter = "simulator"\n'


@pytest.fixture
def write(tmp_path: Path) -> Any:
    def write(text: str) -> Path:
        path = tmp_path / "accounts.toml"
        path.write_text(text, encoding="utf-8")
        return path

    return write


def load(write: Any, text: str) -> list[Account]:
    return load_accounts(write(text), METAS)


def error(write: Any, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(write, text)
    return str(info.value)


# --- a valid file ----------------------------------------------------------------------------


def test_defaults_are_applied(write: Any) -> None:
    (account,) = load(write, SIM)
    assert account.id == 1 and account.name == "sim-a" and account.adapter == "simulator"
    assert account.default is False and account.active is True
    assert account.secret_key == ""
    assert account.concurrency == SimulatorAdapter.meta.max_concurrency == 16
    assert dict(account.options) == {
        "accept_ratio": 1.0,
        "deliver_ratio": 0.95,
        "report_delay_s": 2.0,
        "latency_ms": 0.0,
        "seed": "",
        "push_receipts": False,
    }
    assert account.secret_options == frozenset()


def test_values_are_read_and_coerced(write: Any) -> None:
    accounts = load(
        write,
        SIM
        + 'default = true\nactive = false\nconcurrency = 3\nsecret_key = "k"\n'
        + "[account.options]\naccept_ratio = 1\nlatency_ms = 12.5\nseed = 's'\n"
        + '[[account]]\nid = 0\nname = "acme"\nadapter = "acme"\n'
        + '[account.options]\napi_key = "x"\ntimeout_s = "2.5"\nretries = "4"\nverify = "false"\n',
    )
    sim, acme = accounts
    assert sim.default and not sim.active and sim.concurrency == 3 and sim.secret_key == "k"
    assert sim.options["accept_ratio"] == 1.0 and isinstance(sim.options["accept_ratio"], float)
    assert sim.options["latency_ms"] == 12.5 and sim.options["seed"] == "s"
    assert acme.concurrency == 4  # the adapter's max_concurrency
    assert acme.options == {
        "api_key": "x",
        "url": "https://acme.example/sms",
        "timeout_s": 2.5,
        "retries": 4,
        "verify": False,
    }


# --- ${ENV} references -----------------------------------------------------------------------


def test_env_references_are_resolved(write: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MTA_T_KEY", "key-from-env")
    monkeypatch.setenv("MTA_T_SEED", "seed-42")
    monkeypatch.setenv("MTA_T_LAT", "250")
    monkeypatch.setenv("MTA_T_HOST", "sms.example")
    (sim, acme) = load(
        write,
        SIM
        + 'secret_key = "${MTA_T_KEY}"\n[account.options]\n'
        + 'seed = "pre-${MTA_T_SEED}-post"\nlatency_ms = "${MTA_T_LAT}"\n'
        + '[[account]]\nid = 2\nname = "acme"\nadapter = "acme"\n'
        + '[account.options]\napi_key = "${MTA_T_KEY}"\nurl = "https://${MTA_T_HOST}/v1"\n',
    )
    assert sim.secret_key == "key-from-env"
    assert sim.options["seed"] == "pre-seed-42-post"
    assert sim.options["latency_ms"] == 250.0  # resolved, then coerced to the option's type
    assert acme.options["api_key"] == "key-from-env"
    assert acme.options["url"] == "https://sms.example/v1"


def test_unset_env_reference_names_account_field_and_variable(
    write: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MTA_T_UNSET", raising=False)
    text = error(write, SIM + 'secret_key = "${MTA_T_UNSET}"\n')
    assert "'sim-a'" in text and "secret_key" in text and "MTA_T_UNSET" in text
    text = error(write, SIM + '[account.options]\nseed = "${MTA_T_UNSET}"\n')
    assert "'sim-a'" in text and "options.seed" in text and "MTA_T_UNSET" in text


# --- errors name the account and the field ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "account", "words"),
    [
        ('[[account]]\nid = 1\nadapter = "simulator"\n', "account #0", ["name"]),
        ('[[account]]\nid = 1\nname = "a b"\nadapter = "simulator"\n', "'a b'", ["name"]),
        ('[[account]]\nname = "x"\nadapter = "simulator"\n', "'x'", ["id"]),
        ('[[account]]\nid = -1\nname = "x"\nadapter = "simulator"\n', "'x'", ["id"]),
        ('[[account]]\nid = "1"\nname = "x"\nadapter = "simulator"\n', "'x'", ["id"]),
        ('[[account]]\nid = true\nname = "x"\nadapter = "simulator"\n', "'x'", ["id"]),
        ('[[account]]\nid = 1\nname = "x"\nadapter = "nope"\n', "'x'", ["adapter", "'nope'"]),
        ('[[account]]\nid = 1\nname = "x"\n', "'x'", ["adapter"]),
        (SIM + "colour = 'red'\n", "'sim-a'", ["unknown field", "colour"]),
        (SIM + "default = 'yes'\n", "'sim-a'", ["default"]),
        (SIM + "active = 1\n", "'sim-a'", ["active"]),
        (SIM + "secret_key = 7\n", "'sim-a'", ["secret_key"]),
        (SIM + "options = 5\n", "'sim-a'", ["options"]),
        (SIM + "concurrency = 0\n", "'sim-a'", ["concurrency"]),
        (SIM + "concurrency = true\n", "'sim-a'", ["concurrency"]),
        (SIM + "[account.options]\ncolour = 1\n", "'sim-a'", ["options", "colour"]),
        (SIM + '[account.options]\naccept_ratio = "lots"\n', "'sim-a'", ["accept_ratio"]),
        (SIM + "[account.options]\naccept_ratio = true\n", "'sim-a'", ["accept_ratio"]),
        (SIM + "[account.options]\nseed = 5\n", "'sim-a'", ["options.seed"]),
        (
            '[[account]]\nid = 1\nname = "acme"\nadapter = "acme"\n',
            "'acme'",
            ["options.api_key", "required"],
        ),
        (
            '[[account]]\nid = 1\nname = "acme"\nadapter = "acme"\n'
            '[account.options]\napi_key = "k"\nverify = "maybe"\n',
            "'acme'",
            ["options.verify"],
        ),
        (
            '[[account]]\nid = 1\nname = "acme"\nadapter = "acme"\n'
            '[account.options]\napi_key = "k"\nretries = 1.5\n',
            "'acme'",
            ["options.retries"],
        ),
        (
            SIM + '[[account]]\nid = 1\nname = "sim-b"\nadapter = "simulator"\n',
            "'sim-b'",
            ["id", "'sim-a'"],
        ),
        (
            SIM + '[[account]]\nid = 2\nname = "sim-a"\nadapter = "simulator"\n',
            "'sim-a'",
            ["name"],
        ),
        (
            SIM + 'default = true\n[[account]]\nid = 2\nname = "sim-b"\nadapter = "simulator"\n'
            "default = true\n",
            "'sim-b'",
            ["default", "'sim-a'"],
        ),
    ],
)
def test_errors_name_account_and_field(
    write: Any, text: str, account: str, words: list[str]
) -> None:
    message = error(write, text)
    assert account in message, message
    for word in words:
        assert word in message, message


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "no [[account]]"),
        ("account = []\n", "no [[account]]"),
        ("[account]\nid = 1\n", "no [[account]]"),
        ("[[account]\n", "not valid TOML"),
        ('[other]\nx = 1\n[[account]]\nid = 1\nname = "x"\nadapter = "simulator"\n', "other"),
    ],
)
def test_file_level_errors(write: Any, text: str, words: str) -> None:
    assert words in error(write, text)


@pytest.mark.parametrize("entries", ['account = ["x"]', "account = [1, 2]", "account = [[]]"])
def test_an_account_that_is_not_a_table_is_a_config_error(write: Any, entries: str) -> None:
    """A malformed entry must give a ConfigError (a clean start-up message), not a traceback."""
    message = error(write, entries + "\n")
    assert "account #0" in message


def test_missing_file_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_accounts(tmp_path / "nope.toml", METAS)
    assert "MTA_ACCOUNTS" in str(info.value) and "nope.toml" in str(info.value)


# --- secrets are masked ----------------------------------------------------------------------


def test_repr_masks_secrets(write: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MTA_T_API_KEY", "api-key-S3CRET-1")
    (account,) = load(
        write,
        '[[account]]\nid = 4\nname = "acme"\nadapter = "acme"\n'
        'secret_key = "login-S3CRET-2"\n'
        '[account.options]\napi_key = "${MTA_T_API_KEY}"\nurl = "https://a.example"\n',
    )
    assert account.options["api_key"] == "api-key-S3CRET-1"
    assert account.secret_key == "login-S3CRET-2"
    assert account.secret_options == frozenset({"api_key"})
    for shown in (repr(account), str(account), f"{account}", repr([account])):
        assert "S3CRET" not in shown, shown
        assert MASK in shown and "https://a.example" in shown and "'acme'" in shown
    assert account.masked_options()["api_key"] == MASK
    assert account.masked_options()["url"] == "https://a.example"


# --- proxy_url: no credentials in it, and a URL that parses ------------------------------------

PROXY_PW = "Px-pa55+/word"
WEB = AdapterMeta(name="web", description="an HTTP adapter", options=HTTP_OPTIONS)


def proxied(write: Any, proxy_url: str) -> list[Account]:
    text = '[[account]]\nid = 2\nname = "web-1"\nadapter = "web"\n[account.options]\n'
    text += f'proxy_url = "{proxy_url}"\nproxy_username = "px-user"\n'
    return load_accounts(write(text), {"web": WEB})


@pytest.mark.parametrize(
    "proxy_url",
    [
        "http://px-user:${MTA_T_PROXY_PW}@proxy.example:3128",
        "http://px-user:${MTA_T_PROXY_PW}@proxy.example",
        "https://${MTA_T_PROXY_PW}@proxy.example:3128",
        "http://px-user:${MTA_T_PROXY_PW}@proxy:abc",
    ],
)
def test_proxy_url_with_credentials_is_refused_without_showing_them(
    write: Any, monkeypatch: pytest.MonkeyPatch, proxy_url: str
) -> None:
    monkeypatch.setenv("MTA_T_PROXY_PW", PROXY_PW)
    with pytest.raises(ConfigError) as info:
        proxied(write, proxy_url)
    message = str(info.value)
    assert "'web-1'" in message and "options.proxy_url" in message
    assert "proxy_username" in message and "proxy_password" in message
    assert PROXY_PW not in message and "Px-pa55" not in message


@pytest.mark.parametrize(
    "proxy_url", ["http://proxy.example:port", "proxy.example:3128", "ftp://proxy:21", "http://"]
)
def test_unparseable_proxy_url_is_refused(write: Any, proxy_url: str) -> None:
    with pytest.raises(ConfigError, match=r"account 'web-1'.*options\.proxy_url: not a"):
        proxied(write, proxy_url)


def test_plain_proxy_url_is_accepted(write: Any) -> None:
    (account,) = proxied(write, "http://proxy.example:3128")
    assert account.options["proxy_url"] == "http://proxy.example:3128"


# --- Settings --------------------------------------------------------------------------------


def test_default_settings_are_valid() -> None:
    settings = Settings()
    assert settings.prefix == "mta" and settings.tz == ZoneInfo("UTC")
    assert settings.inflight_policy == InFlightPolicy.RESUBMIT
    assert Settings(prefix="acme.prod-1_a", timezone="Europe/Istanbul").tz == ZoneInfo(
        "Europe/Istanbul"
    )
    assert Settings(inflight_policy="fail").inflight_policy == InFlightPolicy.FAIL


@pytest.mark.parametrize("prefix", ["", "a b", "a..b", ".a", "a.", "mta/x", "{mta}", "a:b"])
def test_bad_prefix_is_rejected(prefix: str) -> None:
    with pytest.raises(ConfigError, match="MTA_PREFIX"):
        Settings(prefix=prefix)


@pytest.mark.parametrize("zone", ["Mars/Olympus", "", "../etc/passwd", "UTC+3"])
def test_unknown_timezone_is_rejected(zone: str) -> None:
    with pytest.raises(ConfigError, match="MTA_TIMEZONE"):
        Settings(timezone=zone)


def test_poll_max_below_poll_first_is_rejected() -> None:
    with pytest.raises(ConfigError, match="MTA_POLL_MAX_S"):
        Settings(poll_first_s=10.0, poll_max_s=5.0)
    assert Settings(poll_first_s=5.0, poll_max_s=5.0).poll_max_s == 5.0


@pytest.mark.parametrize("policy", ["retry", "", "RESUBMIT"])
def test_unknown_inflight_policy_is_rejected(policy: str) -> None:
    with pytest.raises(ConfigError, match="MTA_INFLIGHT_POLICY"):
        Settings(inflight_policy=policy)


@pytest.mark.parametrize("name", ["poll_first_s", "poll_max_s", "max_wait_s", "lease_s"])
def test_durations_must_be_positive(name: str) -> None:
    with pytest.raises(ConfigError, match=f"MTA_{name.upper()}"):
        Settings(**{name: 0.0})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name", ["bulk_concurrency", "priority_concurrency", "report_batch", "max_batch"]
)
def test_sizes_must_be_positive(name: str) -> None:
    """0 is not a size: prefetch 0 means *unlimited* in RabbitMQ (a worker would take the whole
    queue), a claim limit of 0 never polls anything, a batch limit of 0 fails every message."""
    with pytest.raises(ConfigError, match=f"MTA_{name.upper()}"):
        Settings(**{name: 0})  # type: ignore[arg-type]


class Vague:
    """An adapter whose constructor does not say what it takes."""

    meta = AdapterMeta(name="vague", description="takes anything")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args


def test_an_adapter_constructor_with_star_args_is_refused_naming_the_account() -> None:
    from mta.registry import Registry

    account = Account(id=1, name="v1", adapter="vague", options={})
    with pytest.raises(ConfigError) as info:
        Registry([account], {"vague": Vague})  # type: ignore[dict-item]
    assert "'v1'" in str(info.value) and "*args" in str(info.value)


# --- option bounds (issue 11) ------------------------------------------------------------------

BOUNDED = AdapterMeta(
    name="bounded",
    description="an adapter with bounded options",
    options=(
        OptionSpec("mode", str, default="fast", choices=("fast", "safe")),
        OptionSpec("window", int, default=10, minimum=1, maximum=100),
        OptionSpec("ratio", float, default=0.5, minimum=0.0, maximum=1.0),
    ),
)
BOUNDED_ACCOUNT = '[[account]]\nid = 3\nname = "b-1"\nadapter = "bounded"\n[account.options]\n'


@pytest.mark.parametrize(
    ("option", "bound"),
    [
        ('mode = "quick"', "mode: is 'quick'; one of 'fast', 'safe'"),
        ("window = 0", "window: is 0; at least 1"),
        ("window = 101", "window: is 101; at most 100"),
        ('window = "500"', "window: is 500; at most 100"),  # checked after coercion
        ("ratio = 1.5", "ratio: is 1.5; at most 1.0"),
        ("ratio = -1", "ratio: is -1.0; at least 0.0"),
    ],
)
def test_an_option_out_of_its_bounds_names_account_option_and_bound(
    write: Any, option: str, bound: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_accounts(write(BOUNDED_ACCOUNT + option + "\n"), {"bounded": BOUNDED})
    message = str(info.value)
    assert "account 'b-1'.options." in message and bound in message, message
    assert "adapter 'bounded'" in message, message


def test_options_within_bounds_and_defaults_are_accepted(write: Any) -> None:
    text = BOUNDED_ACCOUNT + 'mode = "safe"\nwindow = 100\nratio = 0\n'
    (account,) = load_accounts(write(text), {"bounded": BOUNDED})
    assert dict(account.options) == {"mode": "safe", "window": 100, "ratio": 0.0}
    (plain,) = load_accounts(write(BOUNDED_ACCOUNT), {"bounded": BOUNDED})
    assert dict(plain.options) == {"mode": "fast", "window": 10, "ratio": 0.5}


def test_resolve_fills_defaults_and_checks_bounds_for_constructors() -> None:
    assert BOUNDED.resolve({"window": 5, "extra": 1}) == {
        "mode": "fast",
        "window": 5,
        "ratio": 0.5,
        "extra": 1,
    }
    assert BOUNDED.resolve({"mode": None})["mode"] == "fast"  # None is unset
    with pytest.raises(ValueError, match=r"option 'window' is 0; at least 1"):
        BOUNDED.resolve({"window": 0})


def test_as_dict_shows_the_bounds() -> None:
    options = {o["name"]: o for o in BOUNDED.as_dict()["options"]}
    assert (options["mode"]["choices"], options["mode"]["minimum"]) == (["fast", "safe"], None)
    assert (options["window"]["minimum"], options["window"]["maximum"]) == (1, 100)
    assert options["window"]["choices"] == []


def test_the_simulator_ratios_are_bounded_at_load(write: Any) -> None:
    message = error(write, SIM + "[account.options]\naccept_ratio = 1.2\n")
    assert "'sim-a'" in message and "accept_ratio: is 1.2; at most 1.0" in message, message


def test_strict_numbers_without_phonenumbers_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """phonenumbers is the optional extra sms-mta[strict-numbers]: strict mode without it stops
    at settings load with the install line, and the default mode does not need it."""
    import mta.config

    monkeypatch.setattr(mta.config, "_have_phonenumbers", lambda: False)
    assert not Settings().strict_numbers
    missing = r"MTA_STRICT_NUMBERS: .*install sms-mta\[strict-numbers\]"
    with pytest.raises(ConfigError, match=missing):
        Settings(strict_numbers=True)
