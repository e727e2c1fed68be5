"""deploy/systemd: every unit passes `systemd-analyze verify` (templates as instances), and
`systemd-analyze security --offline` rates each service's exposure "OK" (at most 2.0 of 10).

verify checks that ExecStart's program exists and is executable, so the copies checked here
run the venv's real `mta` instead of /opt/sms-mta/bin/mta; nothing else is changed.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest
from deploytools import DEPLOY, ROOT, run, tool

pytestmark = pytest.mark.deploy

UNITS = DEPLOY / "systemd"
INSTALLED_MTA = "/opt/sms-mta/bin/mta"
HARDENING = {
    "NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
    "ProtectHome": "yes", "DynamicUser": "yes", "PrivateDevices": "yes",
    "CapabilityBoundingSet": "",
}
ROLES = {"mta-worker@.service": "worker", "mta-reporter@.service": "reporter",
         "mta-http.service": "http", "mta-smpp-server.service": "smpp-server"}


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


@pytest.fixture(scope="module")
def copies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    mta = ROOT / ".venv" / "bin" / "mta"
    assert mta.exists(), "the venv's mta (make test-deploy installs it)"
    where = tmp_path_factory.mktemp("systemd")
    for path in UNITS.iterdir():
        where.joinpath(path.name).write_text(path.read_text().replace(INSTALLED_MTA, str(mta)))
    return where


def test_the_four_roles_have_hardened_units_with_an_environment_file() -> None:
    assert set(ROLES) <= {p.name for p in UNITS.glob("*.service")}
    for name, role in ROLES.items():
        parsed = unit(UNITS / name)
        service = parsed["Service"]
        assert service["ExecStart"] == f"{INSTALLED_MTA} {role}"
        assert service["EnvironmentFile"] == "/etc/sms-mta/mta.env"
        assert service["KillSignal"] == "SIGTERM"
        assert float(service["TimeoutStopSec"]) > 30  # MTA_SHUTDOWN_GRACE_S
        for key, value in HARDENING.items():
            assert service.get(key) == value, (name, key)
    # each instance of a template gets its own metrics port
    for name in ("mta-worker@.service", "mta-reporter@.service"):
        assert re.search(r"MTA_METRICS_LISTEN=\S+%i", (UNITS / name).read_text()), name


def test_systemd_analyze_verify(copies: Path) -> None:
    analyze = tool("systemd-analyze")
    names = [
        name.replace("@.", "@1.") for name in sorted(p.name for p in copies.iterdir())
        if name.endswith((".service", ".target"))
    ]
    assert len(names) == 5
    proc = run([analyze, "verify", *[f"./{n}" for n in names]], cwd=copies, check=False)
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr


@pytest.mark.parametrize("name", sorted(ROLES))
def test_systemd_analyze_security_rates_exposure_ok(copies: Path, name: str) -> None:
    analyze = tool("systemd-analyze")
    instance = name.replace("@.", "@1.")
    proc = run([analyze, "security", "--offline=true", "--threshold=20", f"./{instance}"],
               cwd=copies, check=False)
    overall = re.search(r"Overall exposure level for \S+: ([\d.]+) (\w+)", proc.stdout)
    assert overall is not None, proc.stdout[-2000:] + proc.stderr
    assert proc.returncode == 0 and float(overall.group(1)) <= 2.0, overall.group(0)
