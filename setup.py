"""The package list, computed (everything else is in pyproject.toml): every package under mta/,
and the top-level folder adapters/ installed as ``mta.adapters``. A bare top-level ``adapters``
import name is another PyPI project's; the folder keeps its place in the repository."""

from setuptools import find_packages, setup

ADAPTERS = ["mta.adapters", *(f"mta.adapters.{p}" for p in find_packages("adapters"))]

setup(
    packages=[*find_packages(include=["mta", "mta.*"]), *ADAPTERS],
    package_dir={"mta.adapters": "adapters"},
)
