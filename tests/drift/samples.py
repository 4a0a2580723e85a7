"""Data shared by the statistic tests: the same samples go through aiwatch, scipy and Evidently."""

from __future__ import annotations

import numpy as np

RNG = np.random.default_rng(42)
SAMPLES = {
    "same": (RNG.normal(0, 1, 300), RNG.normal(0, 1, 200)),
    "shifted": (RNG.normal(0, 1, 300), RNG.normal(0.4, 1.2, 250)),
    "small": (RNG.normal(0, 1, 12), RNG.normal(1, 1, 9)),
    "ties": (RNG.integers(0, 8, 400).astype(float), RNG.integers(0, 9, 300).astype(float)),
    "large": (RNG.exponential(2.0, 5000), RNG.exponential(2.3, 20000)),
}
COUNTS = {
    "uniform": ([25, 25, 25, 25], [30, 20, 25, 25]),
    "skewed": ([500, 300, 150, 50], [100, 200, 300, 400]),
    "zero-current": ([40, 30, 20, 10], [50, 50, 0, 0]),
    "identical": ([10, 20, 30], [10, 20, 30]),
    "many": (list(RNG.integers(1, 100, 30)), list(RNG.integers(1, 100, 30))),
}
