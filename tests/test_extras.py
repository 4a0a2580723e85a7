"""The extras table in pyproject.toml tells the truth: every extra that the code, an ImportError message or the docs
send a user to exists and brings the module in question, and what a user of an extra does imports nothing from
outside the core and that extra. Installs nothing: it reads pyproject.toml and this environment's metadata."""

from __future__ import annotations

import ast
import functools
import importlib.metadata as md
import json
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.servers import REPO, python_env
from tests.sourcecode import parse

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
CORE: list[str] = PROJECT["dependencies"]
EXTRAS: dict[str, list[str]] = PROJECT["optional-dependencies"]
#: Extras that gather others or serve aiwatch's own development rather than enable a feature.
GATHERING = {"all", "dev", "test"}


def requirements(extras: list[str]) -> list[Requirement]:
    """The core's requirements plus those of ``extras``, with aiwatch's references to its own extras expanded."""
    out = [Requirement(r) for r in CORE]
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in EXTRAS[extra]:
            req = Requirement(text)
            if canonicalize_name(req.name) == "aiwatch":
                todo.extend(req.extras)
            else:
                out.append(req)
    return out


def declared(extras: list[str]) -> set[str]:
    return {canonicalize_name(r.name) for r in requirements(extras)}


@functools.cache
def _packages_distributions() -> dict[str, list[str]]:
    return md.packages_distributions()


def providers(module: str) -> set[str]:
    """The installed distributions that provide ``module``'s top-level package."""
    return {canonicalize_name(d) for d in _packages_distributions().get(module.partition(".")[0], [])}


def _constant_strings(node: ast.AST) -> list[str] | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.Tuple | ast.List) and all(isinstance(e, ast.Constant) for e in node.elts):
        return [str(e.value) for e in node.elts if isinstance(e, ast.Constant)]
    return None


def require_calls() -> Iterator[tuple[str, str, str]]:
    """``(where, module, extra)`` for every ``require(module, extra)`` under aiwatch/; a module given as the
    variable of an enclosing ``for`` over a tuple of strings counts once per string."""
    for path in sorted((REPO / "aiwatch").rglob("*.py")):
        tree = parse(path)
        loops: dict[str, list[str]] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.For) and isinstance(node.target, ast.Name):
                values = _constant_strings(node.iter)
                if values is not None:
                    loops[node.target.id] = values
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "require"):
                continue
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            module_arg, extra_arg = node.args
            modules = (loops.get(module_arg.id) if isinstance(module_arg, ast.Name)
                       else _constant_strings(module_arg))
            extra = _constant_strings(extra_arg)
            assert modules is not None and extra is not None, f"{where}: require() with arguments this test cannot read"
            for module in modules:
                yield where, module, extra[0]


EXTRA_MENTION = re.compile(r"aiwatch\[([a-z0-9_,\- ]+)\]")  # lower case: not a placeholder (EXTRAS)


def extras_mentioned() -> Iterator[tuple[str, str]]:
    """``(where, extra)`` for every ``aiwatch[...]`` in the code, the docs, the examples and the scripts."""
    paths = [REPO / "README.md", *(REPO / "aiwatch").rglob("*.py"), *(REPO / "docs").rglob("*.md"),
             *(REPO / "examples").rglob("*.*"), *(REPO / "scripts").glob("*")]
    for path in paths:
        if not path.is_file():
            continue
        for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for match in EXTRA_MENTION.finditer(line):
                for extra in match.group(1).split(","):
                    yield f"{path.relative_to(REPO)}:{lineno}", extra.strip()


def test_the_scans_find_what_they_look_for() -> None:
    calls = list(require_calls())
    assert ("yaml", "rules") in {(m, e) for _, m, e in calls}
    assert ("uvicorn", "demo") in {(m, e) for _, m, e in calls}  # the loop in commands/demo.py
    assert "console" in {e for _, e in extras_mentioned()}


@pytest.mark.parametrize(("where", "module", "extra"), list(require_calls()))
def test_the_extra_an_import_error_names_brings_the_module(where: str, module: str, extra: str) -> None:
    assert extra in EXTRAS, f"{where}: require({module!r}, {extra!r}) names an extra pyproject.toml lacks"
    found = providers(module)
    assert found, f"{where}: no installed distribution provides {module} (the dev extra installs every extra)"
    assert found & declared([extra]), f"{where}: aiwatch[{extra}] does not bring {module} ({sorted(found)})"


def test_every_extra_named_in_code_and_docs_exists() -> None:
    unknown = [(where, extra) for where, extra in extras_mentioned() if extra not in EXTRAS]
    assert unknown == []


def test_extras_refer_only_to_existing_extras() -> None:
    for extra, reqs in EXTRAS.items():
        for text in reqs:
            req = Requirement(text)
            if canonicalize_name(req.name) == "aiwatch":
                assert set(req.extras) <= set(EXTRAS), (extra, text)


def test_all_gathers_every_feature_extra_and_dev_gathers_all() -> None:
    gathered = declared(["all"])
    for extra in set(EXTRAS) - GATHERING:
        assert declared([extra]) <= gathered, f"aiwatch[all] lacks part of aiwatch[{extra}]"
    assert {"all", "test"} <= {e for t in EXTRAS["dev"] if t.startswith("aiwatch[") for e in Requirement(t).extras}


def test_a_requirement_repeated_across_extras_has_one_floor() -> None:
    # (an upper bound may differ: pandas<3 belongs to the evidently extra alone)
    floors: dict[str, set[str]] = {}
    for text in CORE + [t for reqs in EXTRAS.values() for t in reqs]:
        req = Requirement(text)
        if canonicalize_name(req.name) != "aiwatch":
            low = {s.version for s in req.specifier if s.operator == ">="}
            floors.setdefault(canonicalize_name(req.name), set()).update(low or {"none"})
    assert {name: found for name, found in floors.items() if len(found) > 1} == {}


def test_the_otel_extra_brings_the_sdk_and_the_core_does_not() -> None:
    assert "opentelemetry-sdk" not in declared([])
    assert "opentelemetry-api" in declared([])
    assert "opentelemetry-sdk" in declared(["otel"])


@pytest.mark.slow  # a subprocess each
@pytest.mark.parametrize(("scenario", "extras", "expected"), [
    ("core_middleware", [], {"prometheus-client", "opentelemetry-api"}),
    ("rules_render", ["rules"], {"pyyaml"}),
    ("data_profile_build", ["data"], {"pandas"}),
    ("http_client", ["http"], {"httpx", "requests"}),
])
def test_what_aiwatch_imports_comes_with_the_core_and_the_extra(tmp_path: Path, scenario: str, extras: list[str],
                                                                  expected: set[str]) -> None:
    result = subprocess.run([sys.executable, "-m", "tests.extras_probe", scenario, str(tmp_path)],
                            env=python_env(), capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    imported = {canonicalize_name(d) for d in json.loads(result.stdout)} - {"aiwatch"}
    assert expected <= imported  # the scenario did use the extra
    assert imported <= declared(extras), f"aiwatch{extras} does not declare {sorted(imported - declared(extras))}"
