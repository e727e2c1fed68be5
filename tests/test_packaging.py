"""The packages as users install them: ``python -m build`` makes the sdist and, from it, the
wheel; the wheel goes into a fresh venv (not editable, dependencies pinned by constraints.txt),
where ``mta`` runs the simulator demo on the shared RabbitMQ and Redis under a prefix of its
own; the sdist installs into another fresh venv. Slow (about a minute, most of it pip), never
skipped: a machine that cannot build or install fails here with the reason."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import tarfile
import time
import tomllib
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import orjson
import pytest

from mta.store import Store
from mta.topology import Topology

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parent.parent
AMQP_URL = os.environ.get("MTA_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
REDIS_URL = os.environ.get("MTA_REDIS_URL", "redis://127.0.0.1:6379/0")
BUILT_IN = ("simulator", "infobip", "twilio", "clickatell", "vonage", "http-bridge", "smpp")
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def run(
    args: list[str | Path], *, what: str, cwd: Path, env: dict[str, str] | None = None,
    check: bool = True, timeout: float = 240,
) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure, fail the test with its output and what it was for."""
    try:
        done = subprocess.run(
            [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
            timeout=timeout, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"{what}: {exc}")
    if check and done.returncode != 0:
        pytest.fail(
            f"{what} failed (exit {done.returncode}): {' '.join(map(str, args))}\n"
            f"--- stdout\n{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-4000:]}"
        )
    return done


def fresh_venv(path: Path) -> Path:
    run([sys.executable, "-m", "venv", path], what="python -m venv", cwd=path.parent)
    return path / "bin"


def pip_install(bin_dir: Path, target: str, cwd: Path) -> None:
    run(
        [bin_dir / "python", "-m", "pip", "install", "--disable-pip-version-check", "-q",
         "-c", ROOT / "constraints.txt", target],
        what=f"pip install {target} (dependencies from the package index, constraints.txt)",
        cwd=cwd,
    )


@dataclass
class Installed:
    wheel: Path
    sdist: Path
    bin: Path  # the fresh venv's bin/, the wheel installed in it
    work: Path  # a directory outside the repository: no `adapters/` folder on sys.path there

    def mta(self, *args: str, env: dict[str, str] | None = None, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return run([self.bin / "mta", *args], what=f"mta {' '.join(args)}", cwd=self.work,
                   env=env, check=check, timeout=timeout)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without the test run's MTA_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MTA_", "PYTHON"))}
    return {**env, **extra}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    base = tmp_path_factory.mktemp("packaging")
    dist = base / "dist"
    try:
        import build  # noqa: F401  # the dev extra's `build`
    except ImportError:
        pytest.fail("the `build` package is missing: pip install -e '.[dev]'")
    # No flags: the sdist first, then the wheel built from the unpacked sdist, so a file the
    # sdist forgets breaks the wheel.
    run([sys.executable, "-m", "build", "--outdir", dist, ROOT], what="python -m build", cwd=base)
    wheels, sdists = list(dist.glob("*.whl")), list(dist.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(p.name for p in dist.iterdir())
    venv_bin = fresh_venv(base / "venv")
    pip_install(venv_bin, str(wheels[0]), base)
    work = base / "work"
    work.mkdir()
    yield Installed(wheels[0], sdists[0], venv_bin, work)


def test_wheel_holds_every_module_under_mta_and_no_bare_adapters(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
        top_level = wheel.read(f"sms_mta-{VERSION}.dist-info/top_level.txt").decode().split()
        entry_points = wheel.read(f"sms_mta-{VERSION}.dist-info/entry_points.txt").decode()
    assert top_level == ["mta"]
    assert not [n for n in names if n.startswith("adapters/")]
    source = {
        str(p.relative_to(ROOT)) for d in ("mta", "adapters") for p in (ROOT / d).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    expected = {s if s.startswith("mta/") else "mta/" + s for s in source}
    assert expected - names == set(), "in mta/ or adapters/ but not in the wheel"
    assert "mta/templates/accounts.toml" in names
    assert f"sms_mta-{VERSION}.dist-info/licenses/LICENSE" in names
    for name in BUILT_IN:
        assert f"{name} = mta.adapters." in entry_points, entry_points


BARE_ADAPTERS = re.compile(
    r"^\s*(from|import)\s+adapters\b|[\"'`]adapters\.(httpbase|simulator|smpp|infobip|twilio|"
    r"clickatell|vonage|http_bridge)", re.M,
)


def test_nothing_imports_adapters_by_its_bare_name() -> None:
    """adapters/ installs as mta.adapters: code, tests, examples and docs use that name."""
    found = [
        f"{path.relative_to(ROOT)}:{text[: m.start()].count(chr(10)) + 1}"
        for top in ("mta", "adapters", "tests", "examples", "docs", "scripts")
        for path in (ROOT / top).rglob("*")
        if path.suffix in (".py", ".md", ".toml") and "__pycache__" not in path.parts
        for text in [path.read_text(encoding="utf-8")]
        for m in BARE_ADAPTERS.finditer(text)
    ]
    assert found == [], found


def test_sdist_ships_the_sources_and_no_tests(installed: Installed) -> None:
    with tarfile.open(installed.sdist) as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    for needed in ("pyproject.toml", "LICENSE", "README.md", "adapters/httpbase.py",
                   "mta/templates/accounts.toml", "mta/cli/init.py"):
        assert needed in names, needed
    assert not [n for n in names if n.startswith("tests")], "the sdist ships no tests"


def test_sdist_installs_in_a_clean_venv(installed: Installed, tmp_path: Path) -> None:
    venv_bin = fresh_venv(tmp_path / "venv")
    pip_install(venv_bin, str(installed.sdist), tmp_path)
    out = run([venv_bin / "mta", "--version"], what="mta --version", cwd=tmp_path).stdout
    assert out.strip() == f"mta, version {VERSION}"


def test_version_and_python_m_mta(installed: Installed) -> None:
    assert installed.mta("--version").stdout.strip() == f"mta, version {VERSION}"
    out = run([installed.bin / "python", "-m", "mta", "--version"], what="python -m mta",
              cwd=installed.work).stdout
    assert out.strip() == f"mta, version {VERSION}"


def test_no_bare_adapters_package_is_installed(installed: Installed) -> None:
    probe = run([installed.bin / "python", "-c", "import adapters"], what="import adapters",
                cwd=installed.work, check=False)
    assert probe.returncode != 0 and "No module named 'adapters'" in probe.stderr, probe
    ok = run([installed.bin / "python", "-c", "import mta.adapters.httpbase, mta.sdk; "
              "print(mta.sdk.HttpAdapter.__module__)"], what="import mta.adapters",
             cwd=installed.work)
    assert ok.stdout.strip() == "mta.adapters.httpbase"


def test_mta_adapters_lists_the_built_ins(installed: Installed) -> None:
    result = installed.mta("adapters", "--json")
    assert "failed to load" not in result.stderr, result.stderr
    assert sorted(a["name"] for a in orjson.loads(result.stdout)) == sorted(BUILT_IN)


def test_strict_numbers_without_the_extra_names_it(installed: Installed) -> None:
    accounts = installed.work / "strict.toml"
    installed.mta("init", str(accounts))
    result = installed.mta(  # stops at settings load, before it connects to anything
        "worker", env=clean_env(MTA_ACCOUNTS=str(accounts), MTA_STRICT_NUMBERS="true",
                                MTA_AMQP_URL="amqp://guest:guest@127.0.0.1:9/"),
        check=False, timeout=30,
    )
    assert result.returncode != 0
    assert "install sms-mta[strict-numbers]" in result.stdout + result.stderr, result


def test_init_writes_a_starter_that_loads_and_never_overwrites(installed: Installed) -> None:
    accounts = installed.work / "init" / "accounts.toml"
    accounts.parent.mkdir()
    installed.mta("init", str(accounts))
    text = accounts.read_text()
    assert text.startswith("#") and 'adapter = "simulator"' in text
    listed = installed.mta("accounts", "list", "--json",
                           env=clean_env(MTA_ACCOUNTS=str(accounts)))
    sim = [a for a in orjson.loads(listed.stdout) if a["name"] == "sim"]
    assert sim and sim[0]["adapter"] == "simulator", listed.stdout
    accounts.write_text(text + "# mine\n")
    again = installed.mta("init", str(accounts), check=False)
    assert again.returncode != 0 and "--force" in again.stderr, again
    assert accounts.read_text().endswith("# mine\n")
    installed.mta("init", str(accounts), "--force")
    assert accounts.read_text() == text
    # the default path: ./accounts.toml
    installed.mta("init")
    assert (installed.work / "accounts.toml").read_text() == text


async def _remove_prefix(prefix: str) -> None:
    connection = await aio_pika.connect(AMQP_URL)
    try:
        await Topology(prefix).delete(await connection.channel())
    finally:
        await connection.close()
    store = Store.connect(REDIS_URL, prefix)
    try:
        await store.delete_all()
    finally:
        await store.close()


async def _leftovers(prefix: str) -> int:
    store = Store.connect(REDIS_URL, prefix)
    try:
        return await store.count_keys()
    finally:
        await store.close()


def test_demo_against_the_simulator(installed: Installed, tmp_path: Path) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}pkg"
    accounts = tmp_path / "accounts.toml"
    installed.mta("init", str(accounts))
    env = clean_env(
        MTA_AMQP_URL=AMQP_URL, MTA_REDIS_URL=REDIS_URL, MTA_PREFIX=prefix,
        MTA_ACCOUNTS=str(accounts), MTA_POLL_FIRST_S="0.5", MTA_POLL_MAX_S="1",
    )
    numbers = ["905332141354", "4915123456789", "14155550123", "447700900123"]
    batch = tmp_path / "batch.json"
    batch.write_bytes(orjson.dumps(
        {"messages": [{"mobileNumber": n, "text": f"packaging test {i}", "sender": "ACME"}
                      for i, n in enumerate(numbers)]}
    ))
    log = (tmp_path / "run.log").open("w+")
    service = subprocess.Popen([installed.bin / "mta", "run"], cwd=installed.work, env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    tail: subprocess.Popen[str] | None = None
    try:
        deadline = time.monotonic() + 30
        while " running (prefix " not in (tmp_path / "run.log").read_text():
            assert service.poll() is None, (tmp_path / "run.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "run.log").read_text()
            time.sleep(0.2)
        tail = subprocess.Popen(
            [installed.bin / "mta", "reports", "--json", "--finals", "--count",
             str(len(numbers)), "--idle-timeout", "60"],
            cwd=installed.work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.5)  # the tail binds its queue before anything is published
        installed.mta("publish", str(batch), env=env)
        out, err = tail.communicate(timeout=90)
        results = [orjson.loads(line) for line in out.splitlines() if line.strip()]
        finals = [r for r in results if r.get("apiStatus") != "OK"]
        assert len(finals) == len(numbers), (out, err, (tmp_path / "run.log").read_text())
        assert {r["apiStatus"] for r in finals} <= {"DELIVERED", "FAIL"}, finals
    finally:
        if tail is not None and tail.poll() is None:
            tail.kill()
            tail.wait()
        service.terminate()
        try:
            service.wait(timeout=30)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()
        log.close()
        removed = installed.mta("teardown", "--yes", env=env, check=False)
        asyncio.run(_remove_prefix(prefix))  # whatever teardown left, even when it failed
    assert service.returncode == 0, (tmp_path / "run.log").read_text()
    assert removed.returncode == 0 and "removed queue" in removed.stdout, removed
    assert asyncio.run(_leftovers(prefix)) == 0
