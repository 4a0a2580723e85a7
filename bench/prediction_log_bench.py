"""What ``PredictionLog.log`` adds to a request: per unlogged (sampled-out) and per logged request, against the bare
handler, and what the background writer spends per record.

The handler builds a 20-feature input dict and a small output, as a recommender does; variants:

- ``bare``: the handler alone;
- ``unlogged``: + ``log.log(...)`` with ``sample_rate=0`` (a draw and a counter, nothing queued);
- ``logged``: + ``log.log(...)`` with ``sample_rate=1`` into a ``ParquetSink`` (the writer thread runs meanwhile);
- ``logged+hash``: the same with two fields HMAC-hashed and one denied (the policy runs on the writer thread).

Figures are medians of ``--rounds`` rounds of ``--calls`` calls, in µs per call of the calling thread's CPU
(``thread_time``: the request path's own cost; the writer's CPU is reported apart, per record, since under the GIL
it competes with requests for the same core). Then a burst far faster than the writer: how many records the
bounded queue dropped (counted), and that the caller was not slowed.

    PYTHONPATH=. python bench/prediction_log_bench.py
    PYTHONPATH=. python bench/prediction_log_bench.py --calls 50000 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Any

from prometheus_client import CollectorRegistry

from aiwatch.feedback import ParquetSink, PredictionLog

FEATURES = [f"f{i}" for i in range(18)]


def handler(i: int) -> tuple[dict[str, Any], dict[str, float]]:
    inputs: dict[str, Any] = {name: i * 0.5 for name in FEATURES}
    inputs["user_id"] = i
    inputs["country"] = "FR"
    return inputs, {"score": 0.25}


def run(calls: int, log: PredictionLog | None) -> tuple[float, float]:
    """(µs of the calling thread's CPU per call, µs of the whole process's CPU per call)."""
    t0, p0 = time.thread_time(), time.process_time()
    if log is None:
        for i in range(calls):
            handler(i)
    else:
        for i in range(calls):
            inputs, outputs = handler(i)
            log.log("ranker", inputs, outputs, version="v1", latency=0.03)
        log.flush(120)
    return (time.thread_time() - t0) / calls * 1e6, (time.process_time() - p0) / calls * 1e6


def make_log(tmp: str, rate: float, policy: bool) -> PredictionLog:
    extra: dict[str, Any] = {"hash_fields": {"user_id", "country"}, "hash_key": b"k", "deny": {"f0"}} if policy else {}
    return PredictionLog(ParquetSink(tmp, max_rows=500_000), sample_rate=rate, queue_size=1_000_000,
                         registry=CollectorRegistry(), **extra)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}; {args.calls} calls x {args.rounds} rounds")
    results: dict[str, list[tuple[float, float]]] = {k: [] for k in ("bare", "unlogged", "logged", "logged+hash")}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            results["bare"].append(run(args.calls, None))
            for name, rate, policy in (("unlogged", 0.0, False), ("logged", 1.0, False), ("logged+hash", 1.0, True)):
                log = make_log(os.path.join(tmp, f"{name}-{r}"), rate, policy)
                results[name].append(run(args.calls, log))
                log.close()
        bare = statistics.median(t for t, _ in results["bare"])
        print(f"{'variant':<12} {'caller µs/call':>15} {'added µs':>9} {'writer µs/record':>17}")
        for name, rows in results.items():
            caller = statistics.median(t for t, _ in rows)
            writer = statistics.median(p - t for t, p in rows)
            print(f"{name:<12} {caller:>15.2f} {caller - bare:>9.2f} {writer if name != 'bare' else 0:>17.2f}")

        # a burst: a slow sink's queue fills; records are dropped and counted, the caller's cost does not grow
        registry = CollectorRegistry()
        log = PredictionLog(ParquetSink(os.path.join(tmp, "burst")), queue_size=1_000, registry=registry)
        t0 = time.thread_time()
        for i in range(args.calls):
            inputs, outputs = handler(i)
            log.log("ranker", inputs, outputs)
        burst = (time.thread_time() - t0) / args.calls * 1e6
        log.close()
        dropped = registry.get_sample_value("aiwatch_prediction_log_records_total",
                                            {"log": "predictions", "result": "dropped"}) or 0
        written = registry.get_sample_value("aiwatch_prediction_log_records_total",
                                            {"log": "predictions", "result": "written"}) or 0
        print(f"burst of {args.calls} with queue_size=1000: {written:.0f} written, {dropped:.0f} dropped and counted; "
              f"caller {burst:.2f} µs/call (handler included)")


if __name__ == "__main__":
    main()
