"""Print each direct dependency of aiwatch[EXTRAS]: its declared floor and the version installed in this
environment. Run by scripts/test-lowest.sh with the lowest-direct environment's Python, where every installed
version should be its floor; one above it was lifted by another requirement (docs/dependencies.md says which).

    python scripts/floors.py dev
"""

from __future__ import annotations

import importlib.metadata as md
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

PROJECT = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"]


def direct_requirements(extras: list[str]) -> list[Requirement]:
    out = [Requirement(r) for r in PROJECT["dependencies"]]
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in PROJECT["optional-dependencies"][extra]:
            req = Requirement(text)
            if canonicalize_name(req.name) == "aiwatch":
                todo.extend(req.extras)
            elif req.marker is None or req.marker.evaluate():
                out.append(req)
    return out


def floor(req: Requirement) -> Version | None:
    lows = [Version(s.version) for s in req.specifier if s.operator in (">=", "==", "~=") and "*" not in s.version]
    return max(lows) if lows else None


def main(extras: list[str]) -> int:
    reqs: dict[str, Requirement] = {}
    for req in direct_requirements(extras):
        reqs.setdefault(canonicalize_name(req.name), req)
    lifted = 0
    print(f"{'requirement':44} {'floor':>12} {'installed':>12}")
    for name, req in sorted(reqs.items()):
        low = floor(req)
        try:
            installed = Version(md.version(name))
        except md.PackageNotFoundError:
            print(f"{req!s:44} {low!s:>12} {'MISSING':>12}")
            lifted += 1
            continue
        note = ""
        if low is not None and installed != low:
            lifted += 1
            note = "  above the floor"
        print(f"{req!s:44} {low!s:>12} {installed!s:>12}{note}")
    print(f"{len(reqs)} direct requirements, {len(reqs) - lifted} at their floor, {lifted} above it")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["dev"]))
