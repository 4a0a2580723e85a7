"""Drift benchmark: aiwatch vs Evidently DataDriftPreset vs a plain scipy per-column loop, on the same data.

    python bench/drift_bench.py            # 100k and 1M rows, Evidently at both sizes (1M Evidently: ~2-3 min)
    python bench/drift_bench.py --quick    # the same, without the 1M Evidently run

Data: ``rows`` x 20 numerical + 5 categorical columns (reference and current, half the numerical columns and one
categorical column shifted). aiwatch is timed in its two workflows:

* **stored profile** (the production case): a profile built once and saved, loaded once, and used for check after
  check: the time is one check (the load is timed on its own row, the build is done once);
* **one-off**: two raw datasets compared once, the profile build included (what Evidently and scipy always do).

each in the default mode (KS / Wasserstein against the profile's reference sample of 20 000 values, on a
stratified sample of 100 000 current values; category counts, and bin counts where a test uses them (none of
Wasserstein's here), over every value) and in the exact mode
(every current value). Evidently and the scipy loop read all the raw data of both sides. The scipy loop runs what
Evidently's defaults pick at these sizes (Wasserstein normalised by the reference std, Jensen-Shannon on category
shares) and nothing else. The profile build of the reference alone is timed too.

Module imports are not timed on any side: Evidently's (which imports scipy) and pandas' happen before its timer, and
so do the scipy modules aiwatch imports on its first test (``import_cpu_s`` in a worker's output, both modules:
0.9 s of CPU at load 6; ``scipy.spatial`` alone, which the one-off comparison needs, added about 0.4 s to it at
100k rows, more than the comparison itself).

Each measurement is a fresh subprocess: wall and CPU time (this process, all threads) of the work only, and its
extra peak memory = the process' peak RSS during the work (VmHWM reset through /proc/self/clear_refs just before)
minus the RSS before it, next to the size of the current data it reads.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
N_NUM, N_CAT = 20, 5
CATEGORIES = [f"c{i}" for i in range(8)]


def make_data(rows: int, seed: int, shifted: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    data: dict[str, np.ndarray] = {}
    for i in range(N_NUM):
        shift = 0.3 if shifted and i % 2 == 0 else 0.0
        data[f"num{i}"] = rng.normal(10.0 * i + shift * (1 + i), 1.0 + i, rows)
    probs = np.arange(1, len(CATEGORIES) + 1, dtype=float)
    for j in range(N_CAT):
        p = probs[::-1] if shifted and j == 0 else probs
        data[f"cat{j}"] = np.asarray(CATEGORIES, dtype=object)[rng.choice(len(CATEGORIES), rows, p=p / p.sum())]
    return data


def stored_profile_case(rows: int) -> tuple[Any, dict[str, np.ndarray]]:
    """The stored-profile workflow's inputs: the reference data (:func:`make_data`, seed 1) built into a
    ``ReferenceProfile``, and the shifted current data (seed 2); the scipy modules the first check imports are
    imported here, outside any timing."""
    import scipy.spatial.distance
    import scipy.stats  # noqa: F401

    from aiwatch.drift.profile import ReferenceProfile

    return ReferenceProfile.build(make_data(rows, seed=1, shifted=False)), make_data(rows, seed=2, shifted=True)


def rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def hwm_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM"):
                return int(line.split()[1])
    return 0


def reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ----------------------------------------------------------------------------------------------- workers


#: What each aiwatch workflow samples (printed next to its figures).
SAMPLING = {
    "profile": "ref: 20k-value profile sample; cur: 100k stratified sample (categories: every value counted)",
    "profile-exact": "ref: 20k-value profile sample; cur: every value",
    "one-off": "build from all ref values (20k sample kept); cur: 100k stratified sample",
    "one-off-exact": "build from all ref values (20k sample kept); cur: every value",
    "build": "the reference profile build alone (all values)",
    "load": "loading the stored profile (JSON, every field checked), once per process",
    "scipy": "all values, both sides",
    "evidently": "all values, both sides",
}


def worker(method: str, rows: int, profile_path: str) -> dict[str, Any]:
    current = make_data(rows, seed=2, shifted=True)
    input_mb = sum(a.nbytes for a in current.values()) / 2**20
    import_cpu = 0.0
    if method in ("profile", "profile-exact", "one-off", "one-off-exact", "build", "load"):
        from aiwatch.drift.evaluate import compare
        from aiwatch.drift.profile import ReferenceProfile

        c0 = time.process_time()
        import scipy.spatial.distance  # what aiwatch's tests import on first use
        import scipy.stats  # noqa: F401

        import_cpu = time.process_time() - c0

        exact = method.endswith("exact")
        if method == "load":
            def run() -> Any:
                return len(ReferenceProfile.load(profile_path).features)
        elif method.startswith("profile"):
            profile = ReferenceProfile.load(profile_path)  # loaded once, checked again and again: not timed

            def run() -> Any:
                return compare(profile, current, exact=exact).drifted_count
        else:
            reference = make_data(rows, seed=1, shifted=False)
            if method == "build":
                def run() -> Any:
                    return len(ReferenceProfile.build(reference).features)
            else:
                def run() -> Any:
                    return compare(ReferenceProfile.build(reference), current, exact=exact).drifted_count

    elif method == "scipy":
        from scipy import stats
        from scipy.spatial import distance

        reference = make_data(rows, seed=1, shifted=False)

        def run() -> Any:
            drifted = 0
            for name, ref in reference.items():
                cur = current[name]
                if name.startswith("num"):
                    score = stats.wasserstein_distance(ref, cur) / max(float(np.std(ref)), 0.001)
                else:
                    ref_counts, cur_counts = Counter(ref.tolist()), Counter(cur.tolist())
                    keys = sorted(set(ref_counts) | set(cur_counts))
                    r = np.array([ref_counts[k] for k in keys]) / ref.size
                    c = np.array([cur_counts[k] for k in keys]) / cur.size
                    score = distance.jensenshannon(r, c)
                drifted += score >= 0.1
            return drifted

    elif method == "evidently":
        import pandas as pd
        from evidently import Report
        from evidently.presets import DataDriftPreset

        reference = make_data(rows, seed=1, shifted=False)
        ref_df, cur_df = pd.DataFrame(reference), pd.DataFrame(current)
        del reference
        current = {}
        input_mb = cur_df.memory_usage(deep=False).sum() / 2**20

        def run() -> Any:
            snapshot = Report([DataDriftPreset()]).run(cur_df, ref_df)
            return snapshot.dict()["metrics"][0]["value"]["count"]

    else:
        raise SystemExit(f"unknown method {method}")
    gc.collect()
    before = rss_kib()
    exact_peak = reset_peak()
    t0, c0 = time.perf_counter(), time.process_time()
    drifted = run()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = hwm_kib()
    return {"method": method, "rows": rows, "wall_s": wall, "cpu_s": cpu, "extra_peak_mb": (peak - before) / 1024,
            "input_mb": input_mb, "drifted": int(drifted), "peak_reset": exact_peak, "import_cpu_s": import_cpu}


def streaming() -> dict[str, float]:
    from prometheus_client import CollectorRegistry

    from aiwatch.drift import DriftMonitor, ReferenceProfile

    rng = np.random.default_rng(0)
    profile = ReferenceProfile.build({f"f{i}": rng.normal(size=20_000) for i in range(20)})
    monitor = DriftMonitor(profile, model="bench", registry=CollectorRegistry(), window_size=10_000)
    rows = [{f"f{i}": float(v) for i, v in enumerate(rng.normal(size=20))} for _ in range(1000)]
    n_single = 50_000
    t0 = time.perf_counter()
    for k in range(n_single):
        monitor.observe(rows[k % 1000])
    single = (time.perf_counter() - t0) / n_single
    batch = {f"f{i}": rng.normal(size=1000) for i in range(20)}
    n_batches = 500
    t0 = time.perf_counter()
    for _ in range(n_batches):
        monitor.observe_batch(batch)
    per_batch = (time.perf_counter() - t0) / n_batches
    return {"single_row_us": single * 1e6, "single_values_per_s": 20 / single,
            "batch_values_per_s": 20 * 1000 / per_batch}


# ----------------------------------------------------------------------------------------------- driver


def run_worker(method: str, rows: int, profile_path: str) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    out = subprocess.run([sys.executable, __file__, "--worker", method, "--rows", str(rows), "--profile",
                          profile_path], capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{method} worker failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="skip Evidently at 1M rows")
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--profile", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.rows, args.profile)))
        return

    sys.path.insert(0, str(REPO))
    from aiwatch.drift.profile import ReferenceProfile

    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"drift benchmark: {N_NUM} numerical + {N_CAT} categorical columns; python {sys.version.split()[0]}, "
          f"load average {os.getloadavg()[0]:.2f} at the start")
    print(f"{'rows':>9} {'method':<14} {'wall s':>8} {'CPU s':>8} {'peak MB':>8} {'input MB':>9} {'drifted':>8} "
          f"{'Evidently / this (wall, CPU)':>28}  sampling")
    with tempfile.TemporaryDirectory() as tmp:
        for rows in sizes:
            path = str(Path(tmp) / f"profile-{rows}.json")
            ReferenceProfile.build(make_data(rows, seed=1, shifted=False)).save(path)  # the stored profile
            methods = ["profile", "profile-exact", "one-off", "one-off-exact", "build", "load", "scipy"]
            if not (args.quick and rows >= 1_000_000):
                methods.append("evidently")
            results = {m: run_worker(m, rows, path) for m in methods}
            evidently = results.get("evidently")
            for m, r in results.items():
                versus = ""
                if evidently is not None and m != "evidently":
                    versus = f"{evidently['wall_s'] / r['wall_s']:.1f}x, {evidently['cpu_s'] / r['cpu_s']:.1f}x"
                drifted = "" if m in ("build", "load") else str(r["drifted"])
                print(f"{rows:>9} {m:<14} {r['wall_s']:>8.3f} {r['cpu_s']:>8.3f} {r['extra_peak_mb']:>8.1f} "
                      f"{r['input_mb']:>9.1f} {drifted:>8} {versus:>28}  {SAMPLING[m]}")
            for kind in ("profile", "one-off"):
                exact, sampled = results[f"{kind}-exact"], results[kind]
                print(f"{rows:>9} {kind} exact / sampled: {exact['wall_s'] / sampled['wall_s']:.2f}x wall, "
                      f"{exact['cpu_s'] / sampled['cpu_s']:.2f}x CPU")
    s = streaming()
    print(f"streaming observe: single row {s['single_row_us']:.1f} us for 20 features "
          f"({s['single_values_per_s'] / 1e6:.2f} M values/s); batches of 1000 rows: "
          f"{s['batch_values_per_s'] / 1e6:.1f} M values/s")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
