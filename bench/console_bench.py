#!/usr/bin/env python3
"""Console refresh time with 100 features and 8 GPUs: how long each view takes to render.

A workload with 100 drift-monitored features (10 bins each) and 8 GPUs is served on a real /metrics endpoint and
scraped by a real Prometheus (1 s interval). Each view of the console is then rendered with Streamlit's AppTest
(the whole script run: every panel's questions, the DataFrames and the charts), reading from:

* PrometheusSource (production; range queries over the default 15 min span, 120 points), and
* ScrapeSource (the embedded default) on the same endpoint, as the baseline measured in the same run,

plus an empty Streamlit script, the framework's own floor. Prints the median per view and the ratio to the
baseline.

    PYTHONPATH=. python bench/console_bench.py           # 7 renders per view, 30 s of data
    PYTHONPATH=. python bench/console_bench.py --quick   # 3 renders per view, 10 s of data
    PYTHONPATH=. python bench/console_bench.py --quick --renders 1   # the smoke test's run
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from aiwatch.console import PrometheusSource, ScrapeSource  # noqa: E402
from aiwatch.console.source import DataSource  # noqa: E402
from tests.console.workload import serve  # noqa: E402
from tests.servers import prometheus  # noqa: E402

APP = str(REPO / "aiwatch" / "console" / "app.py")
VIEWS = ("Latency", "Resources", "Drift", "Alerts")


def render(source: DataSource | None, view: str, script: str = APP) -> float:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(script, default_timeout=120)
    if source is not None:
        at.session_state["aiwatch_source"] = source
        at.session_state["view"] = view
    started = time.perf_counter()
    at.run()
    elapsed = time.perf_counter() - started
    if at.exception:
        raise RuntimeError(f"{view}: {[e.value for e in at.exception]}")
    # the workload's drift, low quality, alerts, its prediction log's failing sink and its journals left torn and set
    # aside at start are on purpose
    errors = [e.value for e in at.error if not str(e.value).startswith((
        "Drift detected", "Quality off its objective", "1 firing", "Prediction log losing records",
        "Prediction log journals not recovered"))]
    if errors:
        raise RuntimeError(f"{view}: {errors}")
    return elapsed


def median_ms(source: DataSource | None, view: str, repeat: int, script: str = APP) -> float:
    render(source, view, script)  # warm-up: imports, caches
    return statistics.median(render(source, view, script) for _ in range(repeat)) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="fewer renders and less data (for CI / a busy box)")
    parser.add_argument("--features", type=int, default=100)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--renders", type=int, help="timed renders per view and source (default 7, quick 3)")
    args = parser.parse_args()
    repeat, settle = (3, 10.0) if args.quick else (7, 30.0)
    if args.renders is not None:
        if args.renders < 1:
            parser.error(f"--renders must be at least 1, got {args.renders}")
        repeat = args.renders
    os.environ["AIWATCH_CONSOLE_WINDOW"] = "60"
    import logging

    logging.getLogger("streamlit").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty.py"
        empty.write_text("import streamlit as st\nst.write('hello')\n")
        with serve(features=args.features, gpus=args.gpus, interval=1.0, requests=50) as svc, \
                prometheus([svc["target"]]) as prom:
            scrape = ScrapeSource([svc["url"]], interval=1.0, history=900)
            prom.wait_for("sum(rate(aiwatch_request_duration_seconds_count[10s])) > 0", timeout=60)
            time.sleep(settle)
            series = prom.value("count({__name__=~'aiwatch_.+'})")
            source = PrometheusSource(prom.url)
            floor = median_ms(None, "", repeat, str(empty))
            rows: list[tuple[str, float, float]] = []
            for view in VIEWS:
                rows.append((view, median_ms(source, view, repeat), median_ms(scrape, view, repeat)))
            scrape.close()
    print(f"console render time, {args.features} features x 10 bins, {args.gpus} GPUs, "
          f"{int(series or 0)} aiwatch series in Prometheus, median of {repeat} AppTest runs per view")
    print(f"empty Streamlit script (framework floor): {floor:.0f} ms")
    print(f"{'view':<10} {'Prometheus ms':>14} {'scrape ms':>10} {'Prometheus/scrape':>18}")
    for view, prom_ms, scrape_ms in rows:
        print(f"{view:<10} {prom_ms:>14.0f} {scrape_ms:>10.0f} {prom_ms / scrape_ms:>18.2f}")
    total = sum(r[1] for r in rows)
    print(f"all four views from Prometheus: {total:.0f} ms")
    return 0




if __name__ == "__main__":
    sys.exit(main())
