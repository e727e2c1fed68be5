"""Print constraints.txt: the versions installed in this venv of sms-mta's runtime dependencies
(with the strict-numbers extra), transitively, for `pip install -c constraints.txt sms-mta`.

Run by `make constraints`. Markers are evaluated for this interpreter and platform, so a
package only needed elsewhere (uvloop on Windows, say) is pinned only if it is installed here.
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, distribution

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = "sms-mta"
EXTRAS = {"strict-numbers"}


def main() -> int:
    pins: dict[str, str] = {}
    todo: list[tuple[str, set[str]]] = [(ROOT, EXTRAS)]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        key = (canonicalize_name(name), frozenset(extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            print(f"constraints: {name} is not installed in this venv", file=sys.stderr)
            return 1
        if key[0] != ROOT:
            pins[key[0]] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            wanted = {""} | extras
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in wanted):
                continue
            todo.append((req.name, set(req.extras)))
    print("# Runtime dependencies of sms-mta[strict-numbers], as installed in the venv that ran")
    print("# `make constraints`. Reproducible installs: pip install -c constraints.txt sms-mta")
    for name in sorted(pins):
        print(f"{name}=={pins[name]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
