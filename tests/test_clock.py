"""``aiwatch.clock``: the one place the console, ``aiwatch diagnose`` and the Prometheus and ``/metrics`` clients read
now. A test sets this machine's clock ahead, behind or back by patching :func:`aiwatch.clock.wall` alone
(tests/diagnose/test_clock_skew.py, tests/console/test_console_clock_skew.py, test_console_clock_step.py): a reader
that went round it (``time.time()`` of its own, or a ``from aiwatch.clock import wall`` bound at import) would keep
the real clock there, and such a test would pass whatever that reader did."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aiwatch
from aiwatch import clock
from tests.sourcecode import parse

ROOT = Path(aiwatch.__file__).parent
#: the modules that read now for the readers of Prometheus and of /metrics endpoints
READERS = sorted([*(ROOT / "console").glob("*.py"), *(ROOT / "diagnose").glob("*.py"),
                  ROOT / "commands" / "diagnose.py", ROOT / "promapi.py", ROOT / "httpconfig.py", ROOT / "scrape.py"])
#: what reads a clock (``time.sleep``, ``time.gmtime`` and ``time.strftime`` read none)
CLOCKS = {"time", "time_ns", "monotonic", "monotonic_ns", "perf_counter", "perf_counter_ns", "now", "utcnow", "today"}


def clock_reads(path: Path) -> list[str]:
    found = []
    for node in ast.walk(parse(path)):
        if isinstance(node, ast.Attribute) and node.attr in CLOCKS and isinstance(node.value, ast.Name) \
                and node.value.id in ("time", "datetime", "date", "dt"):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value.id}.{node.attr}")
        if isinstance(node, ast.ImportFrom) and node.module in ("time", "datetime", "aiwatch.clock"):
            names = [a.name for a in node.names if node.module == "aiwatch.clock" or a.name in CLOCKS]
            found.extend(f"{path.relative_to(ROOT)}:{node.lineno}: from {node.module} import {n}" for n in names)
    return found


def test_the_readers_read_the_clock_only_through_aiwatch_clock() -> None:
    assert len(READERS) > 20  # the globs found the packages
    assert [read for path in READERS for read in clock_reads(path)] == []


def test_a_patched_wall_clock_is_what_the_sources_read(monkeypatch: pytest.MonkeyPatch) -> None:
    from aiwatch.console import PrometheusSource
    from aiwatch.diagnose.run import windows

    monkeypatch.setattr(clock, "wall", lambda: 1_000_000.0)
    # a Prometheus source before any answer (no Date to correct it by), and a window with no source's now
    assert PrometheusSource("http://127.0.0.1:9").now() == 1_000_000.0
    assert windows(10, 20) == ((999_970.0, 999_990.0), (999_990.0, 1_000_000.0))



class Answer:
    def __init__(self, **headers: str) -> None:
        self.headers = headers


def test_an_answers_date_gives_the_servers_clock_offset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clock, "wall", lambda: 1_000_000_000.25)  # 2001-09-09 01:46:40.25 UTC
    assert clock.answer_offset(Answer(Date="Sun, 09 Sep 2001 01:46:40 GMT")) == 0.25  # sent in that second's middle
    assert clock.answer_offset(Answer(Date="Sat, 08 Sep 2001 23:46:40 GMT")) == -7200 + 0.25
    assert clock.answer_offset(Answer(Date="Sun, 09 Sep 2001 01:46:40")) == 0.25  # no zone: GMT, as HTTP's are
    for broken in (Answer(), Answer(Date=""), Answer(Date="yesterday"), object()):
        assert clock.answer_offset(broken) is None


@settings(max_examples=300, deadline=None)
@given(st.text() | st.from_regex(r"(Mon|Sun), [0-9]{1,3} (Jan|Sep|Xyz) -?[0-9]{1,12} [0-9]{1,3}:[0-9]{1,3}"
                                 r"(:[0-9]{1,3})? ?(GMT|[+-][0-9]{4}|[A-Z]{1,5})?", fullmatch=True))
def test_any_date_header_an_app_or_a_proxy_sends_is_an_offset_or_none(date: str) -> None:
    # the Date of every /metrics and Prometheus answer is read: a hostile or broken one (a year past datetime's, a
    # zone of garbage, any text) must not raise out of the scrape or the query
    offset = clock.answer_offset(Answer(Date=date))
    assert offset is None or math.isfinite(offset)
    assert clock.correction(offset) in (0.0, offset)
