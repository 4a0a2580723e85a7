"""Reading aiwatch's own source in tests (``ast.parse``), safe from a CPython 3.11 bug.

CPython 3.11's AST constructor keeps its recursion depth in per-interpreter state, so another thread converting an
AST at the same moment (pytest rewriting an import, a library parsing source) makes ``ast.parse`` raise
``SystemError: AST constructor recursion depth mismatch`` at random (python/cpython gh-106905, pytest-dev/pytest
#10763; fixed in 3.12). The parse is retried: the error says nothing about the source read.
"""

from __future__ import annotations

import ast
from pathlib import Path

_MISMATCH = "AST constructor recursion depth mismatch"


def parse(source: str | Path, filename: str = "<unknown>") -> ast.Module:
    """``ast.parse`` of ``source`` (text, or a file to read), retried on CPython 3.11's spurious depth mismatch."""
    if isinstance(source, Path):
        source, filename = source.read_text(encoding="utf-8"), str(source)
    for attempt in range(5):
        try:
            return ast.parse(source, filename=filename)
        except SystemError as exc:
            if _MISMATCH not in str(exc) or attempt == 4:
                raise
    raise AssertionError("unreachable")
