"""The runnable example in docs/drift.md runs as written."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "drift.md"


def test_docs_example_runs(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    code = blocks[0].replace("/tmp/profile.json", str(tmp_path / "profile.json"))
    exec(compile(code, str(DOC), "exec"), {"__name__": "docs_example"})
    exec(compile(blocks[1], str(DOC), "exec"), {"__name__": "docs_example"})
