"""A burst of aiwatch's failures (or rate-limited warnings) that stops is summed up in one line: before, the count
of the suppressed ones was logged only with the next line after the burst's window, so a failure that repeated for a
while and then stopped left the log at its first line (only the counter had the rest).

The clock safety reads is the test's: frozen while a burst is recorded (so which ones fall in the window does not
depend on how fast a loaded machine runs the test), then running on from where it stood, when the summary is waited
for (with a deadline: it comes ``burst_seconds`` after the last suppressed one)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest

from aiwatch import safety
from tests.servers import REPO, python_env, wait_until

BURST = 0.2


class Clock:
    def __init__(self) -> None:
        self.frozen: float | None = None
        self.shift = 0.0

    def monotonic(self) -> float:
        return self.frozen if self.frozen is not None else time.monotonic() + self.shift

    def freeze(self) -> None:
        self.frozen = self.monotonic()

    def advance(self, seconds: float) -> None:
        assert self.frozen is not None
        self.frozen += seconds

    def run_on(self) -> None:
        assert self.frozen is not None
        self.shift, self.frozen = self.frozen - time.monotonic(), None


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def about(self, text: str) -> list[str]:
        return [line for line in self.lines if text in line]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(safety, "time", clock)
    monkeypatch.setattr(safety, "_burst", safety._BurstLog(BURST))
    if hasattr(safety, "_Summaries"):  # a thread of this test's own, which no other test's burst has started
        monkeypatch.setattr(safety, "_summaries", safety._Summaries())
    return clock


@pytest.fixture
def log() -> Iterator[Lines]:
    lines = Lines()
    logger = logging.getLogger("aiwatch")
    logger.addHandler(lines)
    try:
        yield lines
    finally:
        logger.removeHandler(lines)


def summed_up(log: Lines, text: str) -> list[str]:
    return [line for line in log.about(text) if "after the last report" in line]


def test_a_failure_burst_that_stops_is_summed_up_with_its_component_subject_and_type(clock: Clock,
                                                                                     log: Lines) -> None:
    clock.freeze()
    for _ in range(5):
        safety.record_error("queue", RuntimeError("full"), subject="'ranker'")
        clock.advance(0.01)
    clock.run_on()
    wait_until(lambda: bool(summed_up(log, "queue 'ranker'")), what="the burst's summary")
    assert log.about("queue 'ranker'") == [
        "aiwatch: queue 'ranker' failed and was skipped: RuntimeError('full')",
        f"aiwatch: queue 'ranker' failed with RuntimeError (4 more in the 0.04 s after the last report, then none "
        f"for {BURST} s)"]
    assert safety._burst._suppressed == {}


def test_a_rate_limited_warning_that_stops_is_summed_up_with_its_message(clock: Clock, log: Lines) -> None:
    clock.freeze()
    for value in ("a", "b", "c"):
        safety.warn_rate_limited("label_overflow:model", "aiwatch: label %r over its bound (value %r)", "model", value)
    clock.run_on()
    wait_until(lambda: bool(summed_up(log, "label 'model'")), what="the warning's summary")
    assert log.about("label 'model'") == [
        "aiwatch: label 'model' over its bound (value 'a')",
        f"aiwatch: label 'model' over its bound (value 'a') (2 more in the 0 s after the last report, then none for "
        f"{BURST} s)"]


def test_nothing_suppressed_no_summary_and_no_thread(clock: Clock, log: Lines) -> None:
    clock.freeze()
    safety.record_error("cache", KeyError("once"))
    assert safety._summaries._thread is None and safety._summaries._due == []  # nothing to sum up: no thread
    safety.warn_rate_limited("other", "aiwatch: other")
    safety.warn_rate_limited("other", "aiwatch: other")  # suppressed: its summary comes after the cache's would
    assert safety._summaries._thread is not None
    clock.run_on()
    wait_until(lambda: bool(summed_up(log, "aiwatch: other")), what="the other warning's summary")
    assert log.about("cache") == ["aiwatch: cache failed and was skipped: KeyError('once')"]


def test_a_burst_going_on_past_its_window_is_told_by_its_next_line_once(clock: Clock, log: Lines) -> None:
    clock.freeze()
    for _ in range(3):
        safety.record_error("drift", ValueError("bad row"))
        clock.advance(0.05)
    clock.advance(BURST - 0.1)  # past the window of the burst's first line, short of a quiet burst_seconds
    safety.record_error("drift", ValueError("bad row"))
    safety.warn_rate_limited("later", "aiwatch: later")
    safety.warn_rate_limited("later", "aiwatch: later")  # its summary is due after any the drift burst had
    clock.run_on()
    wait_until(lambda: bool(summed_up(log, "aiwatch: later")), what="the later warning's summary")
    assert log.about("drift") == ["aiwatch: drift failed and was skipped: ValueError('bad row')",
                                  "aiwatch: drift failed and was skipped (2 more since the last report): "
                                  "ValueError('bad row')"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX")
def test_a_forked_child_does_not_inherit_the_parents_pending_summary(clock: Clock, log: Lines) -> None:
    from tests.test_forksafe import child_reports

    clock.freeze()
    for _ in range(3):
        safety.record_error("queue", RuntimeError("parent's"))

    def child() -> dict[str, object]:
        pending = [key for _, _, _, key in safety._summaries._due]
        log.lines.clear()
        safety._summaries.at_exit()  # what would be logged at the child's exit: every summary pending, at once
        safety.record_error("queue", RuntimeError("child's"))
        return {"pending": pending, "suppressed": dict(safety._burst._suppressed), "lines": log.lines}

    reported = child_reports(child)
    assert reported == {"pending": [], "suppressed": {},
                        "lines": ["aiwatch: queue failed and was skipped: RuntimeError(\"child's\")"]}
    clock.run_on()
    wait_until(lambda: bool(summed_up(log, "queue")), what="the parent's summary")
    assert summed_up(log, "queue") == [f"aiwatch: queue failed with RuntimeError (2 more in the 0 s after the last "
                                       f"report, then none for {BURST} s)"]


def test_a_summary_pending_at_exit_is_logged_then() -> None:
    code = textwrap.dedent("""
        import logging
        from aiwatch import safety
        logging.basicConfig(format="%(message)s")
        for _ in range(3):
            safety.warn_rate_limited("k", "aiwatch: the disk is full")
    """)
    done = subprocess.run([sys.executable, "-c", code], env=python_env(), cwd=REPO, capture_output=True, text=True,
                          timeout=60, check=True)
    lines = [line for line in done.stderr.splitlines() if "disk is full" in line]
    assert len(lines) == 2, done.stderr
    assert lines[0] == "aiwatch: the disk is full"
    assert lines[1].startswith("aiwatch: the disk is full (2 more in the ")
    assert lines[1].endswith(" s after the last report, the process exiting)")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX")
def test_a_child_forked_while_the_summaries_lock_was_held_suppresses_and_sums_up(clock: Clock) -> None:
    from tests.test_forksafe import child_while_held

    def suppress() -> bool:  # schedules a summary: takes the lock, starts the child's own thread
        safety.warn_rate_limited("forked", "aiwatch: the child warns")
        safety.warn_rate_limited("forked", "aiwatch: the child warns")
        return safety._summaries._thread is not None and safety._summaries._thread.is_alive()

    assert child_while_held([safety._summaries._cond], suppress) == "done"
