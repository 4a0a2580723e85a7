"""The stored-profile check repeated in one process: the exact mode against the default (sampled) one.

    python bench/drift_repeat_bench.py                  # 1M rows, 15 rounds
    python bench/drift_repeat_bench.py --rows 100000 --rounds 30

``bench/drift_bench.py`` times each workflow once, in a fresh process (like Evidently and scipy, which it compares
with): its stored-profile row is a first check, with whatever that first call costs. In production a stored profile
is checked again and again by one long-lived process, so this bench builds the profile once and then alternates the
two modes on the same current data for ``--rounds`` rounds (sampled then exact, so that a change in the machine's
load falls on both), timing each check's CPU time. The data is drift_bench's: 20 numerical + 5 categorical columns.

Per numerical column, the default mode runs Wasserstein on a stratified sample of at most 100 000 current values
against the profile's 20 000-value reference sample; the exact mode runs it on every current value. Both work on
unsorted values: per cell of about half a reference value's width, counts and sums, and only the values in cells
where the two distribution functions may cross are sorted (``aiwatch.drift.stattests.wasserstein_distance_to_sorted``;
until stop 35 the exact mode sorted every current value, until stop 45 the default mode sorted its sample). Both
count every categorical value; neither counts numerical bins (Wasserstein, the default test at these sizes, reads
raw values only). Each prints how many values it reads into Wasserstein.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from drift_bench import N_CAT, N_NUM, stored_profile_case  # noqa: E402

from aiwatch.drift.evaluate import DEFAULT_MAX_EXACT, compare  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    profile, current = stored_profile_case(args.rows)
    print(f"stored-profile check, {args.rows} rows x ({N_NUM} numerical + {N_CAT} categorical), {args.rounds} rounds;"
          f" python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.2f} at the start")
    sampled_values = min(args.rows, DEFAULT_MAX_EXACT) * N_NUM
    reads = {"sampled": f"Wasserstein on {sampled_values} current values (stratified sample, by cells, unsorted)",
             "exact": f"Wasserstein on {args.rows * N_NUM} current values (by cells, unsorted)"}
    cpu: dict[str, list[float]] = {"sampled": [], "exact": []}
    verdicts: dict[str, set[int]] = {"sampled": set(), "exact": set()}
    for _ in range(args.rounds):
        for mode in cpu:
            start = time.process_time()
            report = compare(profile, current, exact=mode == "exact")
            cpu[mode].append(time.process_time() - start)
            verdicts[mode].add(report.drifted_count)
    for mode, times in cpu.items():
        print(f"  {mode:8s} CPU ms: min {min(times) * 1e3:6.1f}  median {statistics.median(times) * 1e3:6.1f}"
              f"  max {max(times) * 1e3:6.1f}  first {times[0] * 1e3:6.1f}   drifted {sorted(verdicts[mode])}"
              f"   {reads[mode]}")
    exact, sampled = cpu["exact"], cpu["sampled"]
    print(f"  exact / sampled: median {statistics.median(exact) / statistics.median(sampled):.2f}x,"
          f" min {min(exact) / min(sampled):.2f}x, first {exact[0] / sampled[0]:.2f}x;"
          f" load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
