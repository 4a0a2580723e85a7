"""Drift tests: each a small function over arrays that returns a :class:`TestResult`.

Names, default thresholds and the direction of each decision follow Evidently 0.7 (``evidently.legacy.calculations
.stattests``), so a method name or threshold that works there means the same here:

============== =============================== ========== ====================
name           statistic                       threshold  drift when
============== =============================== ========== ====================
ks             two-sample Kolmogorov-Smirnov   0.05       p-value <= threshold
chisquare      chi-square goodness of fit      0.05       p-value < threshold
z              two-proportion z-test           0.05       p-value < threshold
psi            population stability index      0.1        score >= threshold
jensenshannon  Jensen-Shannon distance (ln)    0.1        score >= threshold
wasserstein    Wasserstein-1 / reference std   0.1        score >= threshold
============== =============================== ========== ====================

Zero shares: PSI replaces a share that is exactly 0 by :data:`~aiwatch.drift.promql.PSI_EPSILON` (0.0001, Evidently's
value; Evidently uses ``min share / 1e6`` instead when the smallest non-zero share is itself <= 0.0001, aiwatch
always uses 0.0001 so that the fleet PromQL computes the same number). Chi-square gives a bucket the reference never
saw (an unseen category) the expected share :data:`CHI2_EPSILON` instead of 0, renormalised, so an unseen category
makes the p-value small but never exactly 0 by a division by zero (Evidently's own chi-square returns p = 0 there).

scipy is imported where a test or a correction calls it, so that importing :mod:`aiwatch.drift` does not.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from aiwatch.drift.promql import PSI_EPSILON

ArrayLike = npt.ArrayLike
CHI2_EPSILON = PSI_EPSILON
#: Evidently's floor for the reference standard deviation in the normalised Wasserstein distance.
WASSERSTEIN_MIN_STD = 0.001


@dataclass(frozen=True)
class TestResult:
    """One test's outcome. ``pvalue`` is None for distance tests (PSI, Jensen-Shannon, Wasserstein)."""

    __test__ = False  # not a pytest test class

    method: str
    statistic: float
    pvalue: float | None
    threshold: float
    drifted: bool

    @property
    def score(self) -> float:
        """What Evidently reports as the drift score: the p-value for hypothesis tests, else the statistic."""
        return self.pvalue if self.pvalue is not None else self.statistic


@dataclass(frozen=True)
class Method:
    name: str
    default_threshold: float
    has_pvalue: bool
    #: True when drift means "p-value <= threshold" (KS); False for "<" (chi-square, z).
    inclusive: bool = False

    def drifted(self, statistic: float, pvalue: float | None, threshold: float) -> bool:
        if self.has_pvalue:
            assert pvalue is not None
            return pvalue <= threshold if self.inclusive else pvalue < threshold
        return statistic >= threshold


METHODS: dict[str, Method] = {
    "ks": Method("ks", 0.05, True, inclusive=True),
    "chisquare": Method("chisquare", 0.05, True),
    "z": Method("z", 0.05, True),
    "psi": Method("psi", 0.1, False),
    "jensenshannon": Method("jensenshannon", 0.1, False),
    "wasserstein": Method("wasserstein", 0.1, False),
}


def method(name: str) -> Method:
    found = METHODS.get(name)
    if found is None:
        raise ValueError(f"unknown drift test {name!r}; known: {', '.join(METHODS)}")
    return found


def _result(name: str, statistic: float, pvalue: float | None, threshold: float | None) -> TestResult:
    m = METHODS[name]
    thr = m.default_threshold if threshold is None else float(threshold)
    return TestResult(name, float(statistic), None if pvalue is None else float(pvalue), thr,
                      bool(m.drifted(statistic, pvalue, thr)))


def _total(counts: npt.NDArray[np.float64]) -> float:
    """The sum of one side's counts; a side with none is refused (its shares would be NaN, a test of it meaningless)."""
    total = float(counts.sum())
    if total <= 0:
        raise ValueError("counts are all zero: no data")
    return total


def _shares(counts: ArrayLike) -> npt.NDArray[np.float64]:
    arr = np.asarray(counts, dtype=np.float64)
    return np.asarray(arr / _total(arr), dtype=np.float64)


# ------------------------------------------------------------------------------------------------- raw values


def ks(reference: ArrayLike, current: ArrayLike, threshold: float | None = None) -> TestResult:
    """Two-sample Kolmogorov-Smirnov (``scipy.stats.ks_2samp``, two-sided, method ``auto``).

    >>> ks([1.0, 2, 3, 4, 5], [1.0, 2, 3, 4, 5]).pvalue
    1.0
    """
    from scipy import stats

    res = stats.ks_2samp(np.asarray(reference, dtype=np.float64), np.asarray(current, dtype=np.float64))
    return _result("ks", float(res.statistic), float(res.pvalue), threshold)


def wasserstein(reference: ArrayLike, current: ArrayLike, threshold: float | None = None,
                reference_std: float | None = None, reference_sorted: bool = False,
                current_sorted: bool = False, scratch: Scratch | None = None) -> TestResult:
    """Wasserstein-1 distance divided by ``max(std(reference), 0.001)`` (Evidently's normalised Wasserstein).

    ``reference_std`` (population std, ddof 0) lets a profile pass the exact std of the full reference when
    ``reference`` is a sample of it; ``reference_sorted`` / ``current_sorted`` skip sorting a side that already is.
    With ``scratch`` (a check's current values: millions in the exact mode, a sample of up to 100 000 by
    default), unsorted current values are not sorted, see :func:`wasserstein_distance_to_sorted`.

    >>> round(wasserstein([0.0, 1.0], [1.0, 2.0]).statistic, 6)
    2.0
    """
    ref = np.asarray(reference, dtype=np.float64)
    std = float(np.std(ref)) if reference_std is None else float(reference_std)
    norm = max(std, WASSERSTEIN_MIN_STD)
    u = ref if reference_sorted else np.sort(ref)
    cur = np.asarray(current, dtype=np.float64)
    if scratch is not None and not current_sorted:
        distance = wasserstein_distance_to_sorted(u, cur, scratch)
    else:
        distance = wasserstein_distance_sorted(u, cur if current_sorted else np.sort(cur))
    return _result("wasserstein", distance / norm, None, threshold)


def wasserstein_distance_sorted(u: npt.NDArray[np.float64], v: npt.NDArray[np.float64]) -> float:
    """Wasserstein-1 distance between two *sorted* samples, as ``scipy.stats.wasserstein_distance`` (unweighted).

    It is computed as ``integral over t in (0, 1] of |Q_u(t) - Q_v(t)|`` (the two quantile functions, equal to
    scipy's integral of ``|F_u - F_v|``), in blocks of the shorter sample: over block ``k`` (``t`` in
    ``(k/m, (k+1)/m]``) ``Q_u`` is ``u[k]``, and the longer sample's values there are summed on each side of
    ``u[k]`` (one ``np.add.reduceat`` pass; values far from 0 for their spread are taken from their median first).
    So the cost past the sorting is one pass over the longer sample and a few over the shorter (a stored profile
    keeps a 20 000-value reference sample; the current data can hold millions), and no array as long as it.
    """
    if u.size == 0 or v.size == 0:
        raise ValueError("Wasserstein distance needs values on both sides")
    if u.size > v.size:
        u, v = v, u
    m, n = u.size, v.size
    largest = max(abs(float(u[0])), abs(float(u[-1])), abs(float(v[0])), abs(float(v[-1])))
    if 2.0 * m * n * largest > _SUMS_FIT:  # the sums below would overflow: work in units of a power of two
        exponent = math.frexp(largest)[1]
        u, v = np.ldexp(u, -exponent), np.ldexp(v, -exponent)
        with np.errstate(over="ignore"):  # a distance past the largest float is inf
            return float(np.ldexp(_sorted_distance(u, v), exponent))
    return _sorted_distance(u, v)


#: The largest partial sum :func:`_sorted_distance` may reach without losing it: twice the largest magnitude times
#: ``m n`` (its unit is ``1 / (m n)``) stays below this, or the values are scaled by a power of two first.
_SUMS_FIT = 2.0**1000


def _sorted_distance(u: npt.NDArray[np.float64], v: npt.NDArray[np.float64]) -> float:
    """:func:`wasserstein_distance_sorted` of ``u`` no longer than ``v``, whose sums fit in a float."""
    m, n = u.size, v.size
    center = float(v[n // 2])
    if abs(center) > float(v[-1] - v[0]):  # far from 0 for its spread: sums of the values would lose the distances
        u, v = u - center, v - center
    # in units of 1 / (m n): block k is (k n, (k + 1) n]; v[j] holds Q_v on (j m, (j + 1) m]
    k = np.arange(m, dtype=np.int64)
    start, end = k * n, (k + 1) * n
    first = start // m  # v index at the block's left end
    last = (end - 1) // m  # v index at its right end
    left_width = np.minimum((first + 1) * m, end) - start
    right_width = np.where(last > first, end - last * m, 0)
    total = float(np.sum(left_width * np.abs(u - v[first])) + np.sum(right_width * np.abs(u - v[last])))
    # v[a:b] lie wholly inside their blocks (width m each): split at u[k], each side summed on its own (a few
    # neighbouring values: exact to a few ulps, where differences of running sums over the whole of v were not)
    a = first + 1
    b = np.maximum(last, a)
    split = _splits(v, u, a, b)
    below_sum, above_sum = _run_sums(v, np.stack([a, split, b], axis=1).ravel())
    below = (split - a) * u - below_sum
    above = above_sum - (b - split) * u
    total += m * float(np.sum(below + above))
    return total / (m * n)


def _splits(v: npt.NDArray[np.float64], u: npt.NDArray[np.float64], a: npt.NDArray[np.int64],
            b: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """``np.clip(np.searchsorted(v, u), a, b)``: where each ``u[k]`` splits the run ``v[a[k]:b[k]]``. A ``u[k]`` at
    or before its run's first value splits it at ``a[k]``, one past its last at ``b[k]``; only the rest (few: a run
    is ~n/m values, and ``u[k]`` lands in its own one only where the two quantile functions cross) are searched for
    in ``v``. A binary search of 20 000 values in 1M costs about as much as the rest of the distance."""
    first = v[np.minimum(a, v.size - 1)]
    last = v[b - 1]
    split = np.where(u <= first, a, b)
    inside = (u > first) & (u <= last)  # never for an empty run: there first >= last
    if inside.any():  # v[a] < u <= v[b - 1]: the search lands in (a, b) without a clip
        split[inside] = np.searchsorted(v, u[inside])
    return split


def _run_sums(v: npt.NDArray[np.float64], bounds: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.float64],
                                                                                  npt.NDArray[np.float64]]:
    """``bounds`` holds ``a, split, b`` of each block, all non-decreasing: the sums of ``v[a:split]`` and of
    ``v[split:b]`` of every block, by one ``np.add.reduceat`` pass over ``v`` (no array of running sums)."""
    n = v.size
    inside = bounds < n  # reduceat refuses an index past the end; a run from there is empty
    sums = np.zeros(bounds.size, dtype=np.float64)
    if inside.any():
        sums[inside] = np.add.reduceat(v, bounds[inside])
    following = np.append(bounds[1:], n)
    sums[following <= bounds] = 0.0  # an empty run: reduceat gives v[start] there
    by_block = sums.reshape(-1, 3)
    return by_block[:, 0], by_block[:, 1]


class Scratch:
    """Work arrays reused by :func:`wasserstein_distance_to_sorted` from one column to the next: a new 8 MB array
    per 1M-value column costs page faults (the allocator returns such blocks to the system on free). Their
    contents are valid until the next call."""

    def __init__(self) -> None:
        self._floats = np.empty(0)
        self._cells = np.empty(0, dtype=np.intp)

    def floats(self, n: int) -> npt.NDArray[np.float64]:
        if self._floats.size < n:
            self._floats = np.empty(n)
        return self._floats[:n]

    def cells(self, n: int) -> npt.NDArray[np.intp]:
        if self._cells.size < n:
            self._cells = np.empty(n, dtype=np.intp)
        return self._cells[:n]


#: Cells per reference value in :func:`wasserstein_distance_to_sorted`: more cells leave fewer current values in
#: crossing cells (to be sorted) but make every per-cell array longer.
CELLS_PER_REFERENCE = 2
#: With fewer than this many current values per reference value, :func:`wasserstein_distance_to_sorted` sorts them.
MIN_CURRENT_PER_REFERENCE = 4
#: When more than this share of the current values lies in crossing cells, they are all sorted instead.
MAX_CROSSING_SHARE = 0.25
#: A cell holding more reference values than this is taken to be crossing (the current values' distribution function
#: jumps there too): when such cells hold more than ``MAX_CROSSING_SHARE`` of the reference, the current values are
#: sorted at once, before the pass over them (heavy-tailed and discrete columns: latencies, token counts).
DENSE_CELL = 4


def wasserstein_distance_to_sorted(u: npt.NDArray[np.float64], v: npt.NDArray[np.float64],
                                   scratch: Scratch | None = None,
                                   max_crossing_share: float = MAX_CROSSING_SHARE) -> float:
    """:func:`wasserstein_distance_sorted` of a *sorted* reference ``u`` and current values ``v`` in any order,
    without sorting ``v`` (millions of values in the exact mode, against a 20 000-value reference sample). A NaN
    among them gives NaN, as scipy and :func:`wasserstein_distance_sorted` do.

    The distance is ``integral of |F_u - F_v|``. Every value is taken to cell units, ``x * scale + shift``
    (``scale`` a power of two, about :data:`CELLS_PER_REFERENCE` cells per reference value, the reference from 1),
    and goes to a cell by one monotone map (that, clipped and truncated: a value in a lower cell is smaller than any
    value in a higher one); per cell, both sides' counts and sums (``np.bincount``). Where ``F_v`` stays on one side
    of ``F_u`` over a whole cell (its largest value over the cell at most the other's smallest, compared exactly in
    integers), the cell's part of the integral is linear in the sums, since over ``(P, Q)``,
    ``integral of D = Q D(Q-) - P D(P) - (sum of v there / n - sum of u there / m)`` with ``D = F_v - F_u``; summed
    with the sign of ``D``, the ``Q D`` terms of neighbouring cells cancel, and vanish where ``D`` is 0. Only the
    cells where ``F_v`` may cross ``F_u`` (few: ``D`` is the difference of two distribution functions' noise) have
    their values sorted and merged with the reference values there, as scipy does; each run of them gives the
    cut points ``P`` and ``Q`` of its neighbours. The values summed are in cell units, near 0 for their spread
    wherever the data lies, so the sums keep the distances. ``v`` is sorted instead (then
    :func:`wasserstein_distance_sorted`) when short, against a reference of one value, at magnitudes whose sums
    could overflow, or with more than ``max_crossing_share`` of its values in crossing cells.
    """
    if u.size == 0 or v.size == 0:
        raise ValueError("Wasserstein distance needs values on both sides")
    m, n = u.size, v.size
    lo, hi = float(u[0]), float(u[-1])
    span = hi - lo
    if n < MIN_CURRENT_PER_REFERENCE * m or not 0.0 < span < math.inf or m * n > _COUNTS_EXACT:
        return wasserstein_distance_sorted(u, np.sort(v))
    # cells of width 1 / scale; scale a power of two (x * scale is exact) at most CELLS_PER_REFERENCE cells per value
    cells = CELLS_PER_REFERENCE * m / span
    exponent = math.frexp(cells)[1] - 1  # 2**exponent <= cells
    if not (math.isfinite(cells) and -1000 < exponent < 1000) or max(abs(lo), abs(hi)) * 2.0**exponent > _CELLS_LARGEST:
        return wasserstein_distance_sorted(u, np.sort(v))
    scale = 2.0**exponent
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # a sum past the largest float: sorted instead, below
            found = _cells_distance(u, v, scale, scratch or Scratch(), max_crossing_share)
    except ValueError:
        # a NaN has no cell: cast to an index it is negative on x86, which bincount refuses (on ARM it is 0 and the
        # sums turn NaN: sorted below too). Sorted, NaN as scipy's and as without a scratch; no pass looks for it.
        if not np.isnan(v).any():
            raise
        found = None
    if found is None or not math.isfinite(found):
        return wasserstein_distance_sorted(u, np.sort(v))
    return found


#: The largest scaled reference magnitude :func:`wasserstein_distance_to_sorted` takes into cells (sums of a million
#: such values times the counts stay far from overflow); larger ones are sorted.
_CELLS_LARGEST = 2.0**400
#: Counts times counts stay exact integers in a float up to here.
_COUNTS_EXACT = 2**53


def _shifted_cells(x: npt.NDArray[np.float64], scale: float, shift: float, top: float,
                   shifted: npt.NDArray[np.float64],
                   cells: npt.NDArray[np.intp]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.intp]]:
    """The values in cell units, ``x * scale + shift`` (``scale`` a power of two: only the shift rounds, by an
    ulp of a number near the cells' count, as a subtraction of the median would), and each one's cell: the first
    clipped to ``[0, top]`` and truncated, a non-decreasing function of ``x`` (each rounded step is), the same for
    both sides. A value in a lower cell is smaller than any in a higher one."""
    np.multiply(x, scale, out=shifted)
    np.add(shifted, shift, out=shifted)
    np.clip(shifted, 0.0, top, out=cells, casting="unsafe")  # float to int truncates: 0 <= clipped values
    return shifted, cells


def _cells_distance(u: npt.NDArray[np.float64], v: npt.NDArray[np.float64], scale: float, scratch: Scratch,
                    max_crossing_share: float) -> float | None:
    """:func:`wasserstein_distance_to_sorted` past its checks, in cell units (``x * scale + shift``, the reference
    from 1); None when too many values are in crossing cells."""
    m, n = u.size, v.size
    shift = 1.0 - float(u[0]) * scale
    top = float(math.floor(float(u[-1]) * scale + shift) + 1)
    k = int(top) + 1
    u, cu = _shifted_cells(u, scale, shift, top, np.empty(m), np.empty(m, dtype=np.intp))
    nu = np.bincount(cu, minlength=k)
    if float(np.sum(nu[nu > DENSE_CELL])) > max_crossing_share * m:  # most cells would cross: sort v now
        return None
    v, cv = _shifted_cells(v, scale, shift, top, scratch.floats(n), scratch.cells(n))
    nv = np.bincount(cv, minlength=k)
    sv, su = np.bincount(cv, weights=v, minlength=k), np.bincount(cu, weights=u, minlength=k)
    before_v, before_u = np.cumsum(nv) - nv, np.cumsum(nu) - nu
    # in units of 1 / (m n): F_v spans [before_v m, (before_v + nv) m] over a cell, F_u [before_u n, ...]
    below = (before_v + nv) * m <= before_u * n  # F_v <= F_u over the cell (and the gaps beside it)
    above = before_v * m >= (before_u + nu) * n  # F_v >= F_u; both only for an empty cell
    crossing = ~(below | above)
    terms = np.where(above, 1.0, -1.0) * (su * n - sv * m)
    terms[crossing] = 0.0
    total = float(np.sum(terms))
    if not crossing.any():
        return total / m / n / scale
    # runs of crossing cells (empty cells between them join them): their values sorted, merged with the reference's
    nonempty = np.flatnonzero(nv + nu)
    cross = crossing[nonempty]
    first_cells = nonempty[cross & ~np.concatenate(([False], cross[:-1]))]
    last_cells = nonempty[cross & ~np.concatenate((cross[1:], [False]))]
    steps = np.zeros(k + 1, dtype=np.int64)
    steps[first_cells] = 1
    steps[last_cells + 1] -= 1
    in_run = np.cumsum(steps[:k]) > 0
    where_v = np.flatnonzero(np.take(in_run, cv))
    if where_v.size > max_crossing_share * n:
        return None
    w = np.sort(v[where_v])
    in_u = np.take(in_run, cu)
    r = u[in_u]  # sorted already
    kw, kr = w.size, r.size
    w_upto_r = np.searchsorted(w, r, "right")  # #w <= r[i]
    w_below_r = np.searchsorted(w, r, "left")  # #w < r[i]
    r_below_w = np.cumsum(np.bincount(w_upto_r, minlength=kw + 1))[:kw]  # #r < w[j]: #{i: w_upto_r[i] <= j}
    r_upto_w = np.cumsum(np.bincount(w_below_r, minlength=kw + 1))[:kw]  # #r <= w[j]: #{i: w_below_r[i] <= j}
    at_w = np.arange(kw) + r_below_w  # merged, w first where equal
    at_r = np.arange(kr) + w_upto_r
    points = np.empty(kw + kr)
    points[at_w], points[at_r] = w, r
    count_w = np.empty(kw + kr, dtype=np.int64)  # values <= each point among the sorted ones
    count_w[at_w], count_w[at_r] = _upto(w), w_upto_r
    count_r = np.empty(kw + kr, dtype=np.int64)
    count_r[at_w], count_r[at_r] = r_upto_w, _upto(r)
    # each point's run: the runs' values follow each other in the merged order
    run_v = (before_v + nv)[last_cells] - before_v[first_cells]
    run_u = (before_u + nu)[last_cells] - before_u[first_cells]
    run = np.repeat(np.arange(first_cells.size), run_v + run_u)
    # every value of a run's cells is among the sorted ones: the count at or below a point is the count before its
    # run plus the sorted ones at or below it, less those of the runs before
    all_v = (before_v[first_cells] - (np.cumsum(run_v) - run_v))[run] + count_w
    all_u = (before_u[first_cells] - (np.cumsum(run_u) - run_u))[run] + count_r
    gap = np.abs(all_v * m - all_u * n).astype(np.float64)
    same = run[1:] == run[:-1]
    total += float(np.sum((np.diff(points) * gap[:-1])[same]))
    # the runs' ends cut the linear cells' integrals: + P |D| before a run, - Q |D| after it
    d_before = np.abs(before_v[first_cells] * m - before_u[first_cells] * n).astype(np.float64)
    d_after = np.abs((before_v + nv)[last_cells] * m - (before_u + nu)[last_cells] * n).astype(np.float64)
    first_points = points[np.concatenate(([True], ~same))]
    last_points = points[np.concatenate((~same, [True]))]
    total += float(np.sum(first_points * d_before) - np.sum(last_points * d_after))
    return total / m / n / scale


def _upto(a: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """For sorted ``a``: how many of its values are <= each one (the index past its run of equal values)."""
    last = np.flatnonzero(np.append(a[1:] != a[:-1], True))
    return np.repeat(last + 1, np.diff(np.append(-1, last)))


# -------------------------------------------------------------------------------------------- bucket counts


def psi(reference_counts: ArrayLike, current_counts: ArrayLike, threshold: float | None = None) -> TestResult:
    """Population Stability Index over the same buckets: ``sum((c - r) * ln(c / r))`` on shares, a share of
    exactly 0 replaced by 0.0001.

    >>> round(psi([50, 50], [50, 50]).statistic, 12)
    0.0
    """
    r, c = _shares(reference_counts), _shares(current_counts)
    r = np.where(r == 0, PSI_EPSILON, r)
    c = np.where(c == 0, PSI_EPSILON, c)
    return _result("psi", float(np.sum((c - r) * np.log(c / r))), None, threshold)


def jensenshannon(reference_counts: ArrayLike, current_counts: ArrayLike,
                  threshold: float | None = None) -> TestResult:
    """Jensen-Shannon distance (natural log) between the bucket shares: ``scipy.spatial.distance.jensenshannon``.

    >>> round(jensenshannon([1, 0], [0, 1]).statistic ** 2, 12) == round(math.log(2), 12)
    True
    """
    from scipy.spatial import distance

    r, c = _shares(reference_counts), _shares(current_counts)
    with np.errstate(invalid="ignore"):
        value = float(distance.jensenshannon(r, c))
    # scipy takes the square root of a sum that rounding can leave a hair below 0 for near-identical shares
    return _result("jensenshannon", 0.0 if math.isnan(value) else value, None, threshold)


def chisquare(reference_counts: ArrayLike, current_counts: ArrayLike,
              threshold: float | None = None) -> TestResult:
    """Chi-square goodness of fit of the current counts to the reference shares (Evidently's ``chisquare``:
    expected = reference share x current total, then ``scipy.stats.chisquare(f_obs, f_exp)``: ``k - 1`` degrees of
    freedom over the buckets that either side uses). A bucket the reference never saw gets the expected share
    :data:`CHI2_EPSILON` (the other shares renormalised), never 0.

    >>> chisquare([10, 10], [10, 10]).pvalue
    1.0
    """
    ref = np.asarray(reference_counts, dtype=np.float64)
    cur = np.asarray(current_counts, dtype=np.float64)
    used = (ref > 0) | (cur > 0)
    ref, cur = ref[used], cur[used]
    _total(cur)  # chisquare_expected refuses an empty reference
    f_exp = chisquare_expected(ref, cur)
    if f_exp.size < 2:
        return _result("chisquare", 0.0, 1.0, threshold)
    from scipy import stats

    res = stats.chisquare(cur, f_exp)
    return _result("chisquare", float(res.statistic), float(res.pvalue), threshold)


def chisquare_expected(reference_counts: ArrayLike, current_counts: ArrayLike) -> npt.NDArray[np.float64]:
    """The expected counts :func:`chisquare` compares against (zero reference shares lifted to CHI2_EPSILON)."""
    r = _shares(reference_counts)
    if np.any(r == 0):
        r = np.where(r == 0, CHI2_EPSILON, r)
        r = r / r.sum()
    return np.asarray(r * float(np.sum(np.asarray(current_counts, dtype=np.float64))), dtype=np.float64)


def z(reference_counts: ArrayLike, current_counts: ArrayLike, threshold: float | None = None) -> TestResult:
    """Two-proportion z-test on the first bucket's share (Evidently's ``z`` test for binary categories).

    >>> z([30, 70], [30, 70]).pvalue
    1.0
    """
    ref = np.asarray(reference_counts, dtype=np.float64)
    cur = np.asarray(current_counts, dtype=np.float64)
    used = (ref > 0) | (cur > 0)
    ref, cur = ref[used], cur[used]
    n1, n2 = _total(ref), _total(cur)
    if ref.size <= 1:
        return _result("z", 0.0, 1.0, threshold)
    p1, p2 = 1 - ref[0] / n1, 1 - cur[0] / n2
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    denom = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if denom == 0:
        return _result("z", 0.0, 1.0, threshold)
    from scipy import stats

    statistic = (p1 - p2) / denom
    return _result("z", statistic, float(2 * stats.norm.sf(abs(statistic))), threshold)


# ------------------------------------------------------------------------------------ selection and verdicts


def default_method(kind: str, reference_count: int, n_values: int) -> str:
    """Evidently's default test for a column: ``reference_count`` non-missing reference values, ``n_values``
    distinct values in reference and current together.

    >>> default_method("numerical", 500, 100), default_method("numerical", 5000, 100)
    ('ks', 'wasserstein')
    >>> [default_method("categorical", n, k) for n, k in [(500, 4), (500, 2), (5000, 2)]]
    ['chisquare', 'z', 'jensenshannon']
    """
    if reference_count <= 1000:
        if kind == "numerical" and n_values > 5:
            return "ks"
        return "chisquare" if n_values > 2 else "z"
    if kind == "numerical" and n_values > 5:
        return "wasserstein"
    return "jensenshannon"


def bonferroni(pvalues: Sequence[float]) -> list[float]:
    """Bonferroni-adjusted p-values: ``min(1, p * m)``."""
    m = len(pvalues)
    return [min(1.0, p * m) for p in pvalues]


def benjamini_hochberg(pvalues: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values: ``scipy.stats.false_discovery_control(method="bh")``."""
    if len(pvalues) == 0:
        return []
    from scipy import stats

    return [float(v) for v in stats.false_discovery_control(np.asarray(pvalues, dtype=np.float64), method="bh")]


CORRECTIONS = {"bonferroni": bonferroni, "bh": benjamini_hochberg}

# ------------------------------------------------------------------------------------------------ registry
#: Tests on raw values (the reference sample and the current values); the others work on bin / bucket counts.
VALUE_TESTS = ("ks", "wasserstein")
#: Tests on counts over the same buckets, called as ``test(reference_counts, current_counts, threshold)``.
COUNT_TESTS: dict[str, Callable[[ArrayLike, ArrayLike, float | None], TestResult]] = {
    "psi": psi, "jensenshannon": jensenshannon, "chisquare": chisquare, "z": z}
