"""tests/hangs.py: a test that pytest-timeout fails reports every thread's stack, taken by faulthandler's watchdog
(no GIL needed) shortly before the timeout, and the run ends with each thread's innermost frames."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.hangs import dump_delay, innermost_frames

REPO = Path(__file__).resolve().parent.parent


def test_the_dump_is_taken_before_the_timeout() -> None:
    assert dump_delay(300) == 295
    assert 0 < dump_delay(2) < 2


def test_a_summary_keeps_each_threads_header_and_its_innermost_frames() -> None:
    dump = textwrap.dedent("""\
        Thread 0x01 (most recent call first):
          File "/v/lib/python3.11/site-packages/grpc/_server.py", line 1 in a
          File "/v/lib/python3.11/site-packages/grpc/_server.py", line 2 in b
          File "/v/lib/python3.11/threading.py", line 3 in c

        Current thread 0x02 (most recent call first):
          File "/repo/tests/x.py", line 4 in d
        """)
    assert innermost_frames(dump, frames=2) == [
        "Thread 0x01 (most recent call first):",
        '  File "grpc/_server.py", line 1 in a',
        '  File "grpc/_server.py", line 2 in b',
        "Current thread 0x02 (most recent call first):",
        '  File "/repo/tests/x.py", line 4 in d',
    ]


def test_a_hung_test_reports_the_stack_of_a_thread_that_was_waiting(tmp_path: Path) -> None:
    (tmp_path / "test_hung.py").write_text(textwrap.dedent("""\
        import threading, time

        def waits_in_a_thread_of_its_own():
            time.sleep(60)

        def test_hung():
            threading.Thread(target=waits_in_a_thread_of_its_own, daemon=True).start()
            time.sleep(60)
        """))
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.hangs", "-p", "no:cacheprovider", "-o", "timeout=3",
         "--rootdir", str(tmp_path), str(tmp_path / "test_hung.py")],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=tmp_path)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "threads of test_hung.py::test_hung before its timeout" in run.stdout, run.stdout + run.stderr
    summary = run.stdout.split("threads of test_hung.py::test_hung before its timeout", 1)[1]
    assert "in waits_in_a_thread_of_its_own" in summary
    assert "in test_hung" in summary
