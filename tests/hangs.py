"""Every thread's stack, taken a few seconds before pytest-timeout fails a hung test, added to that test's report.

pytest-timeout's own dump goes to a worker's terminal, which pytest-xdist does not show, and it needs the GIL: a
thread that holds the GIL in a C call (what kept a fixture waiting in ``socket()`` for 300 s in one CI run) stops
it. :mod:`faulthandler`'s watchdog is a C thread that needs no GIL. tests/conftest.py imports these hooks; the
controller prints each dump's innermost frames at the end of the run, where a CI log's tail shows them.
"""

from __future__ import annotations

import faulthandler
import os
import re
import tempfile
from typing import IO, Any

import pytest

SECTION = "every thread's stack before the timeout"
#: the dump is taken this long before pytest-timeout fails the test (or halfway through a short timeout: at 90% of a
#: 3 s one, a loaded CI machine once failed the test before the dump was written)
DUMP_AHEAD_SECONDS = 5.0
#: innermost frames of each thread in the end-of-run summary
FRAMES_PER_THREAD = 3

_dump = pytest.StashKey[IO[bytes]]()
_dumps_seen: list[tuple[str, str]] = []


def dump_delay(timeout: float) -> float:
    return max(timeout - DUMP_AHEAD_SECONDS, timeout * 0.5)


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> None:
    """Arms the dump; returns None so that pytest-timeout's own timer is set after it."""
    if not settings.timeout or settings.timeout <= 0:
        return
    dump = tempfile.TemporaryFile()  # noqa: SIM115  # closed by pytest_timeout_cancel_timer
    item.stash[_dump] = dump
    faulthandler.dump_traceback_later(dump_delay(float(settings.timeout)), file=dump)


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_timeout_cancel_timer(item: pytest.Item) -> None:
    dump = item.stash.get(_dump, None)
    if dump is not None:
        faulthandler.cancel_dump_traceback_later()
        del item.stash[_dump]
        dump.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    dump = item.stash.get(_dump, None)
    if report.failed and dump is not None:
        written = os.pread(dump.fileno(), os.fstat(dump.fileno()).st_size, 0)
        if written:
            report.sections.append((SECTION, written.decode(errors="replace")))
    return report


def innermost_frames(dump: str, frames: int = FRAMES_PER_THREAD) -> list[str]:
    """Each thread's header line of a faulthandler dump and its ``frames`` innermost frames, site-packages paths
    shortened to the package."""
    out: list[str] = []
    kept = 0
    for line in dump.splitlines():
        if line.startswith(("Thread ", "Current thread ")):
            out.append(line)
            kept = 0
        elif line.startswith("  File ") and kept < frames:
            out.append(re.sub(r'"[^"]*/site-packages/', '"', line))
            kept += 1
    return out


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for title, text in report.sections:
        if title == SECTION:
            _dumps_seen.append((report.nodeid, text))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for nodeid, text in _dumps_seen:
        terminalreporter.section(f"threads of {nodeid} before its timeout", sep="-")
        for line in innermost_frames(text):
            terminalreporter.line(line)
