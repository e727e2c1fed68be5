"""deploy/Dockerfile: built for real on the local Debian base image, then run."""

from __future__ import annotations

import re

import pytest
from deploytools import DEPLOY, ROOT, run

pytestmark = pytest.mark.deploy


def test_dockerfile_defaults_to_the_official_slim_image_by_its_short_name() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    default = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.M)
    assert default is not None
    assert default.group(1) == "python:3.11-slim"
    # multi-stage: a build stage and a runtime stage, both FROM the chosen base
    assert re.findall(r"^FROM (\S+)", text, re.M) == ["${BASE_IMAGE}", "${BASE_IMAGE}"]
    assert "/" not in default.group(1).split(":")[0]  # no registry host
    ignore = (ROOT / ".dockerignore").read_text()
    assert "*" in ignore.splitlines()  # whitelist: nothing is sent unless named


def test_image_runs_every_role_as_a_non_root_user(docker: str, mta_image: str) -> None:
    assert run([docker, "run", "--rm", mta_image, "--version"]).stdout.startswith("mta, version")
    ident = run([docker, "run", "--rm", "--entrypoint", "id", mta_image]).stdout
    assert ident.startswith("uid=10001(mta) gid=10001(mta)"), ident
    config = run([docker, "image", "inspect", "-f", "{{.Config.User}}", mta_image]).stdout
    assert config.strip() == "10001:10001"
    for role in ("worker", "reporter", "http", "smpp-server", "run"):
        out = run([docker, "run", "--rm", mta_image, role, "--help"]).stdout
        assert "Usage: mta" in out, (role, out)
    # every adapter is registered through the installed wheel's entry points
    adapters = run([docker, "run", "--rm", mta_image, "adapters"]).stdout
    for name in ("simulator", "infobip", "twilio", "clickatell", "vonage", "http-bridge", "smpp"):
        assert re.search(rf"^{re.escape(name)}:", adapters, re.M), (name, adapters)


def test_image_holds_the_installed_wheel_and_no_build_leftovers(
    docker: str, mta_image: str
) -> None:
    script = (
        "import importlib.metadata as m, os, sys; d = m.distribution('sms-mta'); "
        "print(d.version); print(sys.prefix); "
        "print(os.path.exists('/src'), os.path.exists('/wheels'), os.path.exists('/opt/build')); "
        "print(any(f.name.endswith('direct_url.json') and 'editable' in f.read_text() "
        "for f in d.files or []))"
    )
    out = run(
        [docker, "run", "--rm", "--entrypoint", "/opt/sms-mta/bin/python", mta_image, "-c", script]
    ).stdout.split()
    assert out == ["0.1.0", "/opt/sms-mta", "False", "False", "False", "False"], out
    pip = run(
        [docker, "run", "--rm", "--entrypoint", "/opt/sms-mta/bin/python", mta_image,
         "-c", "import pip"],
        check=False,
    )
    assert pip.returncode != 0  # the runtime virtualenv has no installer in it

