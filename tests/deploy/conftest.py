"""Fixtures of the deploy tests: the tools (docker, promtool, systemd-analyze), the local
Debian base image, the MTA image built from deploy/Dockerfile.

Tests marked ``deploy`` are left out of ``make test`` (pyproject's addopts) and run by
``make test-deploy``; they never skip: a missing tool or a Docker daemon that cannot start
fails them with the reason.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from deploytools import BASE_IMAGE, DEPLOY, HERE, MTA_IMAGE, ROOT, TIMINGS, docker_build, run, tool


@pytest.fixture(scope="session")
def docker() -> str:
    """The docker CLI, with a daemon that answers (dockerd is started when none does)."""
    cli = tool("docker")
    if subprocess.run([cli, "info"], capture_output=True, check=False).returncode == 0:
        return cli
    dockerd = tool("dockerd")
    if os.geteuid() != 0:
        pytest.fail("no Docker daemon answers, and dockerd needs root to start", pytrace=False)
    log = Path("/var/tmp/sms-mta-dockerd.log")
    with log.open("ab") as out:
        subprocess.Popen(
            [dockerd], stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if subprocess.run([cli, "info"], capture_output=True, check=False).returncode == 0:
            return cli
        time.sleep(1)
    tail = log.read_text(errors="replace")[-3000:]
    pytest.fail(f"dockerd did not answer within 60 s; {log}:\n{tail}", pytrace=False)


@pytest.fixture(scope="session")
def base_image(docker: str) -> str:
    """The local Debian base image (debootstrap, cached as a docker image between runs)."""
    started = time.monotonic()
    run([str(HERE / "base-image.sh"), BASE_IMAGE], timeout=900)
    TIMINGS["base image (debootstrap, or cached)"] = time.monotonic() - started
    return BASE_IMAGE


@pytest.fixture(scope="session")
def mta_image(docker: str, base_image: str) -> str:
    """deploy/Dockerfile built on the local base image, from the repository root."""
    started = time.monotonic()
    docker_build(docker, DEPLOY / "Dockerfile", MTA_IMAGE, ROOT, base_image)
    TIMINGS["docker build deploy/Dockerfile"] = time.monotonic() - started
    return MTA_IMAGE


@pytest.fixture(scope="session", autouse=True)
def _print_timings() -> Iterator[None]:
    yield
    if TIMINGS:
        lines = "\n".join(f"  {name}: {seconds:.1f} s" for name, seconds in TIMINGS.items())
        print(f"\ndeploy test timings:\n{lines}")
