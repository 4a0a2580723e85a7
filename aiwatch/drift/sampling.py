"""Bounded samples of a column's values, for the tests that need raw values (KS, Wasserstein).

* :func:`keep_smallest`: a uniform sample that merges exactly. Every value carries a random key and the ``size``
  smallest keys are kept, so the sample of a union is the sample of the parts' samples (profiles built in parts,
  files read in chunks).
* :func:`row_keys`: the random key of each row, a function of the seed and the row's position in the data only, so
  that data read in chunks on one machine or in partitions on a cluster keeps the very same sample.
* :func:`smallest_keys_sample`: the same sample of one column, drawn without a key per value.
* :func:`stratified_sample`: one value at a random place in each run of k values in a row, for one column held
  in memory.
"""

from __future__ import annotations

import numpy as np

from aiwatch.drift.columns import FloatArray


def keep_smallest(values: FloatArray, keys: FloatArray, size: int) -> tuple[FloatArray, FloatArray]:
    """The ``size`` values with the smallest keys, and their keys (everything when there are at most ``size``)."""
    if keys.size <= size:
        return values, keys
    idx = np.argpartition(keys, size)[:size]
    return values[idx], keys[idx]


_GOLDEN, _MIX1, _MIX2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def key_seed(seed: int | None) -> int:
    """The seed of :func:`row_keys` (``None``: a random one)."""
    if seed is None:
        return int(np.random.default_rng().integers(0, 2**63))
    return int(seed) % 2**64


def row_keys(seed: int, start: int, n: int) -> FloatArray:
    """Uniform keys in ``[0, 1)`` of rows ``start .. start + n - 1``: SplitMix64 of the seed and the row number.

    A key depends on nothing but its row's position, not on how the rows were split into chunks or partitions, so
    :func:`keep_smallest` over any split keeps the same rows.

    >>> bool((row_keys(0, 3, 2) == row_keys(0, 0, 5)[3:]).all())
    True
    """
    with np.errstate(over="ignore"):
        z = np.arange(start + 1, start + n + 1, dtype=np.uint64)
        z *= _GOLDEN
        z += np.uint64(seed % 2**64)
        z ^= z >> np.uint64(30)
        z *= _MIX1
        z ^= z >> np.uint64(27)
        z *= _MIX2
        z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def stratified_sample(values: FloatArray, size: int, rng: np.random.Generator | None = None) -> FloatArray:
    """At most ``size`` of ``values`` (``values`` itself when it is small enough): the values cut into runs of
    ``k = ceil(n / size)`` in a row, one value at a random place in each run (in the last, shorter run, with the
    chance its length gives), so every value is drawn with the same chance ``1 / k``.

    Not every k-th value from one random start (systematic sampling): data whose order repeats with a period that
    divides ``k`` would line up with such a draw (rows alternating between two sources: every 2nd row is one
    source's only, and the sample of a mixture that has not moved reads as drifted).

    >>> picked = stratified_sample(np.arange(10.0), 4, np.random.default_rng(0))
    >>> [int(v) // 3 for v in picked] == list(range(picked.size))  # one from each run of 3: 0-2, 3-5, 6-8, 9
    True
    """
    n = values.size
    if n <= size:
        return values
    rng = rng or np.random.default_rng(0)
    step = -(-n // size)
    runs = -(-n // step)
    # floor(u * step) with u uniform in [0, 1): below step (u * step rounds down from step - step * 2**-53), and 3x
    # faster than rng.integers(0, step), which draws by rejection
    picked = (rng.random(runs) * step).astype(np.intp)
    picked += np.arange(0, runs * step, step)
    return values[picked[:-1] if picked[-1] >= n else picked]


def smallest_keys_sample(values: FloatArray, size: int, rng: np.random.Generator) -> tuple[FloatArray, FloatArray]:
    """What ``keep_smallest(values, rng.random(values.size), size)`` keeps, drawn in ``O(size)`` instead of a key
    per value: the same distribution, so the sample merges with :func:`keep_smallest` as if every value had a key.

    A uniformly chosen ``size`` of the values (in random order) carry the ``size`` smallest of ``values.size``
    uniform keys: the ``i``-th smallest of ``n`` uniforms is the sum of ``i`` exponential spacings over the sum of
    ``n + 1``, and the ``n + 1 - size`` spacings past the kept ones add up to one gamma variate."""
    n = values.size
    if n <= size:
        return values, rng.random(n)
    chosen = rng.choice(n, size, replace=False)
    partial = np.cumsum(rng.standard_exponential(size))
    keys = partial / (partial[-1] + rng.standard_gamma(n + 1 - size))
    return values[chosen], keys
