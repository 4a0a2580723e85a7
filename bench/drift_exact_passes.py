"""What issue 17's "exact check within 2x of the sampled one" leaves the exact mode, against what its passes cost.

    PYTHONPATH=. python bench/drift_exact_passes.py            # 1M rows, drift_bench's data

On drift_bench's data (20 numerical + 5 categorical columns, a stored profile), one process:

* the whole check, sampled (``compare``) and exact (``compare(exact=True)``), CPU seconds, best of ``--repeat``;
* per numerical column, the Wasserstein distance the two modes take: of the 100 000-value stratified sample, and of
  every value (``wasserstein_distance_to_sorted``, by cells, as ``compare`` calls it);
* per numerical column, the passes over every value that the exact distance cannot do without, each alone: the
  values to cell units (a multiply and an add), each value's cell (a clip into integers), the cells' counts and the
  cells' sums (two ``np.bincount``), in a reused scratch as ``compare`` does.

From the two checks and the sampled distances it prints the exact distance's budget per column: the time per column
at which the exact check would cost 2x the sampled one (the rest of the check, the same in both modes, counted
once), next to what the exact distance takes and what its passes alone take.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from drift_bench import N_NUM, stored_profile_case

from aiwatch.drift import stattests
from aiwatch.drift.evaluate import compare
from aiwatch.drift.features import NumericalFeature
from aiwatch.drift.sampling import stratified_sample


def best_cpu(run: Callable[[], Any], repeat: int) -> float:
    best = math.inf
    for _ in range(repeat):
        start = time.process_time()
        run()
        best = min(best, time.process_time() - start)
    return best


def per_column(run: Callable[[str], Any], repeat: int) -> float:
    """The mean over the numerical columns of each column's best CPU time."""
    return float(np.mean([best_cpu(functools.partial(run, name), repeat) for name in NUMERICAL]))


NUMERICAL = [f"num{i}" for i in range(N_NUM)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    profile, current = stored_profile_case(args.rows)
    sampled_check = best_cpu(lambda: compare(profile, current), args.repeat)
    exact_check = best_cpu(lambda: compare(profile, current, exact=True), args.repeat)

    reference = {}
    for name in NUMERICAL:
        feature = profile.features[name]
        assert isinstance(feature, NumericalFeature)
        reference[name] = np.sort(np.asarray(feature.sample, dtype=np.float64))
    scratch = stattests.Scratch()
    samples = {name: stratified_sample(current[name], 100_000, np.random.default_rng(0)) for name in NUMERICAL}
    sampled = per_column(lambda n: stattests.wasserstein_distance_to_sorted(reference[n], samples[n], scratch),
                         args.repeat)
    exact = per_column(lambda n: stattests.wasserstein_distance_to_sorted(reference[n], current[n], scratch),
                       args.repeat)

    n = args.rows
    shifted, cells = np.empty(n), np.empty(n, dtype=np.intp)
    cuts: dict[str, tuple[float, float, float, int]] = {}
    for name in NUMERICAL:
        u = reference[name]
        scale = 2.0 ** (math.frexp(stattests.CELLS_PER_REFERENCE * u.size / (u[-1] - u[0]))[1] - 1)
        shift = 1.0 - float(u[0]) * scale
        top = float(math.floor(float(u[-1]) * scale + shift) + 1)
        cuts[name] = (scale, shift, top, int(top) + 1)

    def to_units(name: str) -> None:
        scale, shift, _, _ = cuts[name]
        np.multiply(current[name], scale, out=shifted)
        np.add(shifted, shift, out=shifted)

    def to_cells(name: str) -> None:
        to_units(name)
        np.clip(shifted, 0.0, cuts[name][2], out=cells, casting="unsafe")

    passes = {
        "multiply + add (cell units)": per_column(to_units, args.repeat),
        "clip into integers (cells)": per_column(to_cells, args.repeat) - per_column(to_units, args.repeat),
    }
    counted: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in NUMERICAL:  # each column's cells and units, kept for the counting passes
        to_cells(name)
        counted[name] = (cells.copy(), shifted.copy())
    passes["bincount (counts)"] = per_column(lambda n: np.bincount(counted[n][0], minlength=cuts[n][3]), args.repeat)
    passes["bincount with weights (sums)"] = per_column(
        lambda n: np.bincount(counted[n][0], weights=counted[n][1], minlength=cuts[n][3]), args.repeat)

    columns = len(NUMERICAL)
    rest = sampled_check - columns * sampled  # the check outside the numerical columns' distances, in both modes
    budget = (2 * sampled_check - rest) / columns
    print(f"rows {n}, {columns} numerical columns, CPU s best of {args.repeat}")
    print(f"check, sampled:  {sampled_check * 1e3:8.1f} ms")
    print(f"check, exact:    {exact_check * 1e3:8.1f} ms   ({exact_check / sampled_check:.2f}x the sampled one)")
    print(f"per column: the sampled distance {sampled * 1e3:.2f} ms; the rest of the check {rest * 1e3:.1f} ms")
    print(f"per column: the exact distance {exact * 1e3:.2f} ms; its budget for 2x: {budget * 1e3:.2f} ms")
    for label, seconds in passes.items():
        print(f"  pass: {label:<32} {seconds * 1e3:6.2f} ms")
    floor = sum(passes.values())
    print(f"  the passes alone:                      {floor * 1e3:6.2f} ms ({floor / budget:.2f}x the budget)")


if __name__ == "__main__":
    main()
