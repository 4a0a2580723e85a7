"""Drift on an integer column with missing values, against the same column as floats with NaN.

    python bench/drift_nullable_ints_bench.py                # 1M rows, 5 % missing, best of 5 calls each
    python bench/drift_nullable_ints_bench.py --rows 100000 --json

One column of ints 0..999 (numerical: more than 10 distinct) and one of ints 0..4 (categorical), 5 % missing, given
as a pyarrow table (an int array with nulls), as a pandas DataFrame of nullable ``Int64``, and written to a Parquet
file (``ReferenceProfile.from_file`` and ``compare_file``, 64k-row chunks); the pyarrow and pandas cases are also run
as float64 with NaN, what an integer column with a missing value should cost about as much as. Each case: the best
of ``--calls`` calls of ``ReferenceProfile.build`` (or ``from_file``) and of ``compare`` (or ``compare_file``) on the
same data, in seconds; ``peak MB``: tracemalloc's peak over one build and one compare.

Run it with ``PYTHONPATH`` set to the checkout to time (the bench imports ``aiwatch`` from there): alternate two
checkouts to compare them.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from aiwatch.drift import ReferenceProfile, compare
from aiwatch.drift.batch import compare_file


def best(call: Callable[[], Any], calls: int) -> float:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def peak_mb(call: Callable[[], Any]) -> float:
    tracemalloc.start()
    call()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 1e6


def _check_built(check: Callable[[Any], Any], build: Callable[[], Any]) -> Any:
    return check(build())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="one JSON object: case -> [build s, compare s, peak MB]")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n = args.rows
    many, few = rng.integers(0, 1000, n), rng.integers(0, 5, n)
    mask_many, mask_few = rng.random(n) < 0.05, rng.random(n) < 0.05
    arrow_ints = pa.table({"many": pa.array(many, mask=mask_many), "few": pa.array(few, mask=mask_few)})
    arrow_floats = pa.table({"many": pa.array(many.astype(float), mask=mask_many),
                             "few": pa.array(few.astype(float), mask=mask_few)})
    pandas_ints = pd.DataFrame({"many": pd.arrays.IntegerArray(many, mask_many),
                                "few": pd.arrays.IntegerArray(few, mask_few)})
    pandas_floats = pd.DataFrame({"many": np.where(mask_many, np.nan, many), "few": np.where(mask_few, np.nan, few)})
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "ints.parquet")
        pq.write_table(arrow_ints, path, row_group_size=64 * 1024)
        cases: dict[str, tuple[Callable[[], Any], Callable[[Any], Any]]] = {
            "arrow int+null": (lambda: ReferenceProfile.build(arrow_ints), lambda p: compare(p, arrow_ints)),
            "arrow float+NaN": (lambda: ReferenceProfile.build(arrow_floats), lambda p: compare(p, arrow_floats)),
            "pandas Int64+NA": (lambda: ReferenceProfile.build(pandas_ints), lambda p: compare(p, pandas_ints)),
            "pandas float+NaN": (lambda: ReferenceProfile.build(pandas_floats), lambda p: compare(p, pandas_floats)),
            "parquet int+null": (lambda: ReferenceProfile.from_file(path, chunk_rows=64 * 1024),
                                 lambda p: compare_file(p, path, chunk_rows=64 * 1024)),
        }
        for name, (build, check) in cases.items():
            profile = build()
            results[name] = [best(build, args.calls), best(partial(check, profile), args.calls),
                             peak_mb(partial(_check_built, check, build))]
    if args.json:
        print(json.dumps(results))
        return
    print(f"{'case':<20} {'build s':>8} {'compare s':>10} {'peak MB':>8}")
    for name, (built, compared, peak) in results.items():
        print(f"{name:<20} {built:8.4f} {compared:10.4f} {peak:8.1f}")


if __name__ == "__main__":
    main()
