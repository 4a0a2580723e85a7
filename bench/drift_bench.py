"""Drift benchmark: aiwatch vs Evidently DataDriftPreset vs a plain scipy per-column loop, and streaming observe.

    python bench/drift_bench.py            # 100k and 1M rows, Evidently at both sizes (1M Evidently: ~1-2 min)
    python bench/drift_bench.py --quick    # the same, without the 1M Evidently run

Data: ``rows`` x 20 numerical + 5 categorical columns; current data against a prebuilt profile (aiwatch) or the
reference data (Evidently, scipy), half the numerical columns shifted. Each run is a fresh subprocess: wall time of
the evaluation only, and its extra peak memory = the process' peak RSS during the evaluation (VmHWM reset through
/proc/self/clear_refs just before) minus the RSS before it, next to the size of the current data it reads.
The scipy loop runs what Evidently's defaults pick at these sizes (Wasserstein normalised by the reference std,
Jensen-Shannon on category shares) and nothing else.
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


def worker(method: str, rows: int, profile_path: str) -> dict[str, Any]:
    current = make_data(rows, seed=2, shifted=True)
    input_mb = sum(a.nbytes for a in current.values()) / 2**20
    if method == "aiwatch":
        from aiwatch.drift.evaluate import compare
        from aiwatch.drift.profile import ReferenceProfile

        profile = ReferenceProfile.load(profile_path)

        def run() -> Any:
            report = compare(profile, current)
            return report.drifted_count

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
    t0 = time.perf_counter()
    drifted = run()
    wall = time.perf_counter() - t0
    peak = hwm_kib()
    return {"method": method, "rows": rows, "wall_s": wall, "extra_peak_mb": (peak - before) / 1024,
            "input_mb": input_mb, "drifted": int(drifted), "peak_reset": exact_peak}


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
    print(f"drift benchmark: {N_NUM} numerical + {N_CAT} categorical columns, current vs prebuilt profile")
    print(f"{'rows':>9} {'method':<10} {'wall s':>9} {'extra peak MB':>14} {'input MB':>9} {'drifted':>8} "
          f"{'vs aiwatch':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        for rows in sizes:
            t0 = time.perf_counter()
            profile = ReferenceProfile.build(make_data(rows, seed=1, shifted=False))
            build_s = time.perf_counter() - t0
            path = str(Path(tmp) / f"profile-{rows}.json")
            profile.save(path)
            results = [run_worker("aiwatch", rows, path), run_worker("scipy", rows, path)]
            if not (args.quick and rows >= 1_000_000):
                results.append(run_worker("evidently", rows, path))
            base = results[0]["wall_s"]
            for r in results:
                print(f"{rows:>9} {r['method']:<10} {r['wall_s']:>9.3f} {r['extra_peak_mb']:>14.1f} "
                      f"{r['input_mb']:>9.1f} {r['drifted']:>8} {r['wall_s'] / base:>10.1f}x")
            num_only = run_worker_numeric(rows, path)
            print(f"{rows:>9} {'aiwatch':<10} {num_only:>9.3f}   (20 numerical columns only)")
            print(f"{rows:>9} profile build (not timed above): {build_s:.2f} s")
    s = streaming()
    print(f"streaming observe: single row {s['single_row_us']:.1f} us for 20 features "
          f"({s['single_values_per_s'] / 1e6:.2f} M values/s); batches of 1000 rows: "
          f"{s['batch_values_per_s'] / 1e6:.1f} M values/s")


def run_worker_numeric(rows: int, profile_path: str) -> float:
    code = (
        "import sys, time, json; sys.argv=['x']; import numpy as np\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from bench.drift_bench import make_data\n"
        "from aiwatch.drift.evaluate import compare\n"
        "from aiwatch.drift.profile import ReferenceProfile\n"
        f"p = ReferenceProfile.load({profile_path!r})\n"
        f"cur = {{k: v for k, v in make_data({rows}, 2, True).items() if k.startswith('num')}}\n"
        "t = time.perf_counter(); compare(p, cur); print(time.perf_counter() - t)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    return float(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
