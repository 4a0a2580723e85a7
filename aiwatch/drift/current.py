"""One feature's current data, summarised for the drift tests the same way on every path.

A :class:`CurrentFeature` is what a test needs of the current data: the counts over the profile's bins or buckets,
the values themselves (numerical, for KS / Wasserstein), missing and wrong-typed counts, and how many values the
reference never had. It is made from raw values (:func:`numerical_current`, :func:`categorical_current`: the
in-memory comparison), from the monitor's window (the same functions on its numerical columns,
:func:`categorical_current_from_codes` on its bucket codes), or summed over a file's chunks (:class:`ChunkedCurrent`).
All of them count through :mod:`aiwatch.drift.counting`.

    >>> from aiwatch.drift.features import CategoricalFeature
    >>> color = CategoricalFeature("color", ["blue", "red"], [40, 60], count=100)
    >>> cur = categorical_current(color, ["red", "red", "green", None, ["?"]])
    >>> cur.bin_counts.tolist(), cur.count, cur.missing, cur.invalid, cur.new_distinct
    ([0, 2, 0, 1], 3, 1, 1, 1)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from aiwatch.drift.columns import FloatArray, SortBuffer, finite_of_sorted, finite_values, to_float_counting
from aiwatch.drift.counting import CategoryBuckets, IntArray, count_bins, count_bins_sorted, merge_new_values
from aiwatch.drift.features import CategoricalFeature, Feature, NumericalFeature
from aiwatch.drift.sampling import keep_smallest, stratified_sample

#: KS and Wasserstein use at most this many current values per feature (a stratified sample of larger data:
#: :func:`~aiwatch.drift.sampling.stratified_sample`), unless the exact mode asks for all of them
#: (``max_exact=None``). Bin and category counts always cover every value.
DEFAULT_MAX_EXACT = 100_000


@dataclass
class CurrentFeature:
    """What a test needs of one feature's current data.

    numerical: ``values`` (finite values, or a uniform sample of them) and ``bin_counts`` over the profile's bins
    (exact, over every value); categorical: ``bin_counts`` over the profile's buckets (categories, other, unseen).
    """

    count: int
    bin_counts: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64] | None = None
    missing: int = 0
    invalid: int = 0
    #: Values outside the reference's (for Evidently's test selection). numerical: the distinct current values
    #: outside the reference's distinct values (up to :data:`~aiwatch.drift.counting.NEW_VALUES_LIMIT`);
    #: categorical: 1 when a value fell in the unseen bucket, else 0.
    new_distinct: int = 0
    #: Whether ``values`` is sorted (the tests then do not sort it again).
    values_sorted: bool = False


def numerical_current(feat: NumericalFeature, values: Any, max_exact: int | None = DEFAULT_MAX_EXACT,
                      rng: np.random.Generator | None = None, bins: bool = True,
                      buffer: SortBuffer | None = None, sort: bool = True) -> CurrentFeature:
    """Summarise a column of current values for ``feat`` (non-finite values and wrong types are missing/invalid).

    ``max_exact``: the values kept for KS / Wasserstein (a stratified sample past it; ``None``: every value, sorted
    once, the bin counts read off the sorted values; ``buffer``: where to sort them, then the result's values are
    valid until the buffer's next use; ``sort=False`` with ``bins=False``: every finite value as it is, unsorted,
    possibly a view of ``values``, for a test that needs no order, see
    :func:`~aiwatch.drift.stattests.wasserstein_distance_to_sorted`). ``bins=False`` skips the bin counts (when the
    test uses raw values only)."""
    if max_exact is None and not sort and not bins:
        finite, missing, invalid = _finite(values)
        return CurrentFeature(int(finite.size), np.zeros(0, dtype=np.int64), finite, missing, invalid,
                              int(feat.new_values(finite).size))
    if max_exact is None:
        arr, invalid = to_float_counting(values)
        ordered = finite_of_sorted(np.sort(arr) if buffer is None else buffer.sorted_copy(arr))
        counts = count_bins_sorted(feat.cut_array(), ordered) if bins else np.zeros(0, dtype=np.int64)
        return CurrentFeature(int(ordered.size), counts, ordered, int(arr.size - ordered.size) - invalid, invalid,
                              int(feat.new_values(ordered).size), values_sorted=True)
    finite, missing, invalid = _finite(values)
    new = int(feat.new_values(finite).size)
    counts = count_bins(feat.cut_array(), finite) if bins else np.zeros(0, dtype=np.int64)
    return CurrentFeature(int(finite.size), counts, stratified_sample(finite, max_exact, rng), missing, invalid, new)


def categorical_current(feat: CategoricalFeature, values: Any,
                        buckets: CategoryBuckets | None = None) -> CurrentFeature:
    """Summarise a column of current values for ``feat`` (``buckets``: ``feat.buckets()``, when already made)."""
    return _categorical(feat, *(buckets or feat.buckets()).count(values))


def categorical_current_from_codes(feat: CategoricalFeature, codes: npt.NDArray[np.int32]) -> CurrentFeature:
    """Summarise values already turned into bucket codes (:meth:`~aiwatch.drift.counting.CategoryBuckets.codes`)."""
    return _categorical(feat, *feat.buckets().count_codes(codes))


def _categorical(feat: CategoricalFeature, counts: IntArray, missing: int, invalid: int) -> CurrentFeature:
    return CurrentFeature(int(counts.sum()), counts, None, missing, invalid, int(feat.has_new_values(counts)))


def _finite(values: Any) -> tuple[FloatArray, int, int]:
    """The finite values of a column, the missing count and the wrong-typed count."""
    arr, invalid = to_float_counting(values)
    finite = finite_values(arr)
    return finite, int(arr.size - finite.size) - invalid, invalid


@dataclass
class CurrentPart:
    """What :class:`ChunkedCurrent` knows of some rows of one feature, without the feature: what a cluster's
    partition sends back to merge."""

    total: CurrentFeature | None = None
    keys: FloatArray = field(default_factory=lambda: np.empty(0))
    new: FloatArray = field(default_factory=lambda: np.empty(0))
    values: list[FloatArray] = field(default_factory=list)  # the exact mode: every value


class ChunkedCurrent:
    """One feature's current data read in chunks: counts add up, new values unite, and the values stay a uniform
    sample of at most ``max_exact`` (the values whose rows have the smallest keys, see
    :func:`~aiwatch.drift.sampling.row_keys`), or, with ``max_exact=None`` (the exact mode), are all kept (memory
    grows with the data). The summaries of different rows of the same feature (:attr:`part`) :meth:`merge` exactly:
    that is how chunks add up, and how a cluster's partitions do."""

    def __init__(self, feat: Feature, max_exact: int | None) -> None:
        self.feat, self.max_exact = feat, max_exact
        self._buckets = feat.buckets() if isinstance(feat, CategoricalFeature) else None
        self._part = CurrentPart()
        # The sample is kept lazily: candidates (values and keys) pile up in these lists until they are more than
        # twice the sample's size, then the smallest keys are kept; a key at or above ``_below`` (the largest kept
        # at the last cut) can never enter. One selection per sample's worth of candidates, not one per chunk.
        self._pending_values: list[FloatArray] = []
        self._pending_keys: list[FloatArray] = []
        self._pending = 0
        self._below = np.inf

    @property
    def part(self) -> CurrentPart:
        """The summary of the rows counted so far (its sample cut to ``max_exact``)."""
        self._settle()
        return self._part

    def add(self, values: Any, keys: FloatArray) -> None:
        """Count one chunk of the column; ``keys``: its rows' sample keys (one per value)."""
        feat, part = self.feat, CurrentPart()
        if isinstance(feat, NumericalFeature):
            arr, invalid = to_float_counting(values)
            finite_mask = np.isfinite(arr)
            every = bool(finite_mask.all())
            chunk = arr if every else arr[finite_mask]
            sample = None
            if self.max_exact is None:
                part.values.append(chunk)
            else:
                sample, chunk_keys = chunk, keys if every else keys[finite_mask]
                if self._below < np.inf:  # a full sample: only keys below the largest kept one can enter
                    below = chunk_keys < self._below
                    sample, chunk_keys = sample[below], chunk_keys[below]
                sample, part.keys = keep_smallest(sample, chunk_keys, self.max_exact)
            part.new = feat.new_values(chunk)
            part.total = CurrentFeature(int(chunk.size), count_bins(feat.cut_array(), chunk), sample,
                                        int(arr.size - chunk.size) - invalid, invalid)
        else:
            part.total = categorical_current(feat, values, self._buckets)
        self.merge(part)

    def merge(self, other: CurrentPart) -> None:
        """Add the summary of other rows of this feature."""
        mine, theirs = self._part, other.total
        total = mine.total
        if theirs is None:
            return
        if total is None:
            self._part = CurrentPart(theirs, other.keys, other.new, list(other.values))
            return
        total.count += theirs.count
        total.bin_counts = total.bin_counts + theirs.bin_counts
        total.missing += theirs.missing
        total.invalid += theirs.invalid
        if isinstance(self.feat, CategoricalFeature):
            total.new_distinct = int(self.feat.has_new_values(total.bin_counts))
            return
        mine.new = merge_new_values(mine.new, other.new)
        mine.values.extend(other.values)
        if self.max_exact is not None and theirs.values is not None and other.keys.size:
            self._pending_values.append(theirs.values)
            self._pending_keys.append(other.keys)
            self._pending += other.keys.size
            if self._pending + mine.keys.size > 2 * self.max_exact:
                self._settle()

    def _settle(self) -> None:
        """Move the pending candidates into the sample, cut to the ``max_exact`` smallest keys."""
        total, size = self._part.total, self.max_exact
        if not self._pending or size is None or total is None:
            return
        kept = [] if total.values is None else [total.values]
        values = np.concatenate([*kept, *self._pending_values])
        keys = np.concatenate([self._part.keys, *self._pending_keys])
        self._pending_values, self._pending_keys, self._pending = [], [], 0
        total.values, self._part.keys = keep_smallest(values, keys, size)
        if self._part.keys.size >= size:
            self._below = float(self._part.keys.max())

    def result(self) -> CurrentFeature | None:
        """The summary of every chunk added (None before the first); the values sorted."""
        part = self.part
        total = part.total
        if total is None:
            return None
        if isinstance(self.feat, NumericalFeature):
            total.new_distinct = int(part.new.size)
            if part.values:
                total.values = np.concatenate(part.values)
                part.values = [total.values]
            if total.values is not None:
                total.values = np.sort(total.values)
                total.values_sorted = True
        return total
