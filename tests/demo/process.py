"""Reading a running ``aiwatch demo``'s output, shared by the tests that start one."""

from __future__ import annotations

import subprocess
import time


def lines_until_load(proc: subprocess.Popen[str], seconds: float) -> list[str]:
    """The demo's output lines up to the first that says its load runs (``warm-up`` / ``stage normal``), or what it
    printed before ``seconds`` passed or its output ended."""
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith(("warm-up", "stage normal")):
            break
    return lines
