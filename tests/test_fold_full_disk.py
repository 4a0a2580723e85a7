"""gunicorn's master folds an exited worker's sample files (``aiwatch.gunicorn.child_exit``) on a real full disk: a
small tmpfs as ``PROMETHEUS_MULTIPROC_DIR`` (mounting needs root)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.disks import tmpfs
from tests.servers import python_env

#: a gunicorn master (the app preloaded, its metrics made, or not) whose worker served 300 routes and exited, on a disk
#: that then fills up; its child_exit hook runs, the disk is freed, and it runs again at the next exit
MASTER = """
import json, os, subprocess, sys
from types import SimpleNamespace

directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
subprocess.run([sys.executable, "-c", '''
from prometheus_client import Counter
requests = Counter("req_total", "r", ["route"])
for i in range(300):
    requests.labels("/route/%d" % i).inc()
'''], check=True)
worker = SimpleNamespace(pid=int(next(n for n in os.listdir(directory) if n.startswith("counter_"))[8:-3]))

from aiwatch.gunicorn import child_exit
from aiwatch.metrics import default_metrics

metrics = default_metrics() if os.environ["PRELOADED"] == "1" else None
ballast = sys.argv[1]
try:
    with open(ballast, "wb") as file:
        while True:
            file.write(b"\\0" * 4096)
except OSError:
    pass
child_exit(None, worker)
kept = sorted(os.listdir(directory))
errors = metrics.child(metrics.instrumentation_errors, ("multiprocess",))._value.get() if metrics else None
os.remove(ballast)
child_exit(None, worker)
from prometheus_client import CollectorRegistry, multiprocess
registry = CollectorRegistry()
multiprocess.MultiProcessCollector(registry)
total = sum(registry.get_sample_value("req_total", {"route": f"/route/{i}"}) for i in range(300))
after = sorted(os.listdir(directory))
print(json.dumps({"worker": f"counter_{worker.pid}.db", "kept": kept, "errors": errors, "after": after,
                  "total": total}))
"""


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path, "1m") as disk:
        yield disk


@pytest.mark.parametrize("preloaded", [True, False], ids=["preload", "no-preload"])
def test_a_fold_on_a_full_disk_is_an_error_counted_not_a_sigbus_of_the_master(small_disk: Path,
                                                                              preloaded: bool) -> None:
    # before: the archive was written through prometheus_client's MmapedDict (truncate, then writes into the mmap):
    # on a full disk the master died of SIGBUS (exit -7), taking every worker with it. Without --preload the master
    # had no metrics yet: counting the failure made them, new sample files written through mmap: SIGBUS again
    directory = small_disk / "multiproc"
    directory.mkdir()
    env = python_env(PROMETHEUS_MULTIPROC_DIR=str(directory), PRELOADED="1" if preloaded else "0")
    done = subprocess.run([sys.executable, "-c", MASTER, str(small_disk / "ballast")], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, (done.returncode, done.stderr[-3000:])
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["worker"] in result["kept"]  # left for the next fold
    assert not any(name.endswith(".new") for name in result["kept"])  # its partial archive gave its space back
    assert result["errors"] == (1 if preloaded else None)  # no metrics to count in: made now, they were the SIGBUS
    assert "No space left on device" in done.stderr
    assert result["worker"] not in result["after"]
    assert result["total"] == 300  # every request the worker served, folded once the disk had room
