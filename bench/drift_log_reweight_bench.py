"""What thinning a prediction log by its ``sample_rate`` costs ``aiwatch drift`` (aiwatch.drift.reweight).

Writes ``--rows`` rows x 10 float64 inputs and a ``sample_rate`` column (0.05, or 1.0 for the 10 % "slow" requests,
so about 69 % of the rows are at 1.0, as a log keeping 5 % and every slow request) as 8 zstd Parquet files with
128k-row groups, builds a profile from 200k reference rows, then times ``compare_source`` on the directory
``--repeat`` times each, alternating: thinned (the default), ``reweight=False`` (every row, as before), and a copy
whose ``sample_rate`` is one constant (nothing to thin: the first pass only). Prints the median and the best.

    PYTHONPATH=. python bench/drift_log_reweight_bench.py --rows 1000000
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from aiwatch.drift.batch import compare_source
from aiwatch.drift.evaluate import Options
from aiwatch.drift.profile import ReferenceProfile

COLUMNS = [f"x{i}" for i in range(10)]


def write(root: Path, rows: int, constant: bool, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    root.mkdir()
    per = -(-rows // 8)
    for i in range(8):
        n = min(per, rows - i * per)
        slow = rng.random(n) < 0.69
        table = {c: rng.normal(0, 1, n) + np.where(slow, 0.5, 0.0) for c in COLUMNS}
        table["sample_rate"] = np.full(n, 0.05) if constant else np.where(slow, 1.0, 0.05)
        pq.write_table(pa.table(table), root / f"part-{i}.parquet", row_group_size=128 * 1024, compression="zstd")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rng = np.random.default_rng(1)
        profile = ReferenceProfile.build({c: rng.normal(0, 1, 200_000) for c in COLUMNS})
        write(root / "log", args.rows, constant=False)
        write(root / "constant", args.rows, constant=True)
        cases = {"thinned": (root / "log", Options()), "every row": (root / "log", Options(reweight=False)),
                 "one rate": (root / "constant", Options())}
        times: dict[str, list[float]] = {name: [] for name in cases}
        kept = {}
        for _ in range(args.repeat):
            for name, (path, options) in cases.items():
                start = time.perf_counter()
                report = compare_source(profile, path, options)
                times[name].append(time.perf_counter() - start)
                kept[name] = report.sample_rate_thinning
        for name, ts in times.items():
            print(f"{name:>10}: median {statistics.median(ts):.3f} s, best {min(ts):.3f} s  {kept[name]}")


if __name__ == "__main__":
    main()
