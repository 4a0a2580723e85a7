"""The drift package flows one way: its modules import each other without a cycle (counting imports inside
functions and under TYPE_CHECKING, which would hide one) and never import each other's private names."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import aiwatch.drift
from tests.sourcecode import parse

PACKAGE = "aiwatch.drift"
ROOT = Path(aiwatch.drift.__file__).parent
MODULES = {f"{PACKAGE}.{p.stem}" if p.stem != "__init__" else PACKAGE: p for p in sorted(ROOT.glob("*.py"))}
#: Front ends outside the package that must use its public names only.
CLIENTS = {f"aiwatch.commands.{n}": ROOT.parent / "commands" / f"{n}.py" for n in ("drift", "profile")}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _imports(module: str, path: Path) -> list[tuple[str, str | None, int]]:
    """(imported drift module, imported name or None for the module itself, line) of every import anywhere in the
    file, relative imports resolved."""
    found: list[tuple[str, str | None, int]] = []
    package = module if path.stem == "__init__" else module.rpartition(".")[0]
    for node in ast.walk(parse(path)):
        if isinstance(node, ast.Import):
            found += [(a.name, None, node.lineno) for a in node.names if a.name.startswith(PACKAGE)]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            if not base.startswith(PACKAGE):
                continue
            for a in node.names:
                if f"{base}.{a.name}" in MODULES:  # `from aiwatch.drift import stattests`: the module itself
                    found.append((f"{base}.{a.name}", None, node.lineno))
                else:
                    found.append((base, a.name, node.lineno))
    return found


def _module_aliases(path: Path) -> set[str]:
    """Local names bound to a drift module (``from aiwatch.drift import stattests``, ``import ... as st``)."""
    aliases: set[str] = set()
    for node in ast.walk(parse(path)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE):
            aliases |= {a.asname or a.name for a in node.names if f"{node.module}.{a.name}" in MODULES}
        elif isinstance(node, ast.Import):
            aliases |= {a.asname for a in node.names if a.asname and a.name in MODULES}
    return aliases


def test_drift_modules_import_each_other_without_a_cycle() -> None:
    graph = {module: {target for target, _, _ in _imports(module, path) if target != module}
             for module, path in MODULES.items()}
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        raise AssertionError(f"import cycle in {PACKAGE}: {' -> '.join(exc.args[1])}") from None
    assert set(order) >= set(MODULES)


def test_no_private_name_is_imported_across_drift_modules() -> None:
    offences = []
    for module, path in {**MODULES, **CLIENTS}.items():
        for target, name, line in _imports(module, path):
            if target != module and name is not None and _private(name):
                offences.append(f"{path.name}:{line} imports {name} from {target}")
        aliases = _module_aliases(path)
        for node in ast.walk(parse(path)):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases \
                    and _private(node.attr):
                offences.append(f"{path.name}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert offences == []


def test_the_checks_see_function_level_imports_and_private_names(tmp_path: Path) -> None:
    """The parser itself: an import inside a function counts, a private name is reported."""
    path = tmp_path / "probe.py"
    path.write_text("def f():\n    from aiwatch.drift.batch import _hidden\n    from . import stattests\n")
    found = _imports(f"{PACKAGE}.probe", path)
    assert (f"{PACKAGE}.batch", "_hidden", 2) in found and (f"{PACKAGE}.stattests", None, 3) in found
