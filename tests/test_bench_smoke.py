"""The quick benchmarks still run against the current code. Two of them (signals, rule evaluation) had raised
"Incorrect label count" since the contract's histograms gained labels, one of them while printing figures of an
empty target. No timing is asserted: only that each bench finishes and prints its result lines."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.servers import REPO, python_env, require_binary

pytestmark = pytest.mark.slow

#: bench script and arguments -> a line its output must hold (seconds each on this machine: 2-15; the console's 35)
QUICK = {
    ("signals_bench.py", "--quick"): "scrape (generate_latest) of aiwatch's metrics",
    ("grpc_bench.py", "--quick"): "CPU: aiwatch (metrics + span) / same families + span by hand added",
    ("http_bench.py", "--rounds", "2", "--requests", "100"): "median: aiwatch / same-families added",
    ("header_capture_bench.py", "--quick"): "capture - no-capture, median of the rounds' differences",
    ("wsgi_bench.py", "--quick"): "django: aiwatch / one-histogram added",
    ("ai_signals_bench.py", "--quick"): "aiwatch (default) added over bare",
    ("alerts_rule_eval.py", "--quick"): "all aiwatch groups",
    ("console_bench.py", "--quick", "--renders", "1"): "all four views from Prometheus",
    ("drift_exact_passes.py", "--rows", "100000", "--repeat", "1"): "the passes alone:",
    ("drift_rules_scale.py", "--replicas", "2", "--features", "2", "--minutes", "20", "--interval", "1s",
     "--evaluations", "1"): "aiwatch-drift.rules / model_feature:aiwatch_feature_psi:1h",
    ("drift_rules_scale.py", "--replicas", "2", "--features", "2", "--minutes", "20", "--interval", "1s",
     "--evaluations", "1", "--windows", "1h,2h", "--raw-window-max", "1h"):
        "aiwatch-drift.rules / model_feature_bin:aiwatch_feature_bin:rate5m",
}


@pytest.mark.parametrize(("args", "expected"), list(QUICK.items()), ids=[a[0] for a in QUICK])
def test_a_quick_bench_runs_to_its_figures(args: tuple[str, ...], expected: str) -> None:
    if args[0] in ("alerts_rule_eval.py", "console_bench.py", "drift_rules_scale.py"):
        require_binary("prometheus")
        require_binary("promtool")
    done = subprocess.run([sys.executable, str(REPO / "bench" / args[0]), *args[1:]], cwd=REPO, env=python_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert expected in done.stdout, done.stdout[-2000:]
