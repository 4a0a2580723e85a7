"""Building the features of a reference profile from columns, in one or two passes and bounded memory.

:class:`ProfileBuilder` reads chunks of columns (a file read chunk by chunk, or one in-memory table) and produces
the :mod:`~aiwatch.drift.features` of every numerical and categorical column;
:class:`~aiwatch.drift.profile.ReferenceProfile` wraps them (``ReferenceProfile.build``, ``.from_file``).

    >>> builder = build_in_memory({"x": np.arange(100.0), "c": ["a", "b"] * 50})
    >>> features = builder.features()
    >>> features["x"].bin_counts, features["c"].counts
    ([10, 10, 10, 10, 10, 10, 10, 10, 10, 10], [50, 50])
"""

from __future__ import annotations

import itertools
import logging
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from aiwatch.drift.columns import (
    FloatArray,
    NullableInts,
    SortBuffer,
    category_counts,
    category_key,
    describe_values,
    finite_values,
    fitting_none,
    head_more_distinct,
    infer_kind_counting,
    is_missing,
    present_examples,
    python_column,
    to_float_counting,
)
from aiwatch.drift.counting import count_bins, count_bins_sorted
from aiwatch.drift.errors import ProfileError
from aiwatch.drift.features import (
    DEFAULT_BINS,
    DEFAULT_SAMPLE_SIZE,
    DEFAULT_TOP_K,
    DISCRETE_LIMIT,
    MAX_OTHER_NAMES,
    CategoricalFeature,
    Feature,
    NumericalFeature,
    split_top_k,
)
from aiwatch.drift.reweight import ThinnedChunk
from aiwatch.drift.sampling import keep_smallest, key_seed, row_keys, smallest_keys_sample
from aiwatch.drift.selection import order_statistics
from aiwatch.drift.validation import DEFAULT_LIMITS, ProfileLimits, check_cuts

_log = logging.getLogger("aiwatch.drift")

_MAX_FLOAT = float(np.finfo(np.float64).max)

#: How many of the data's first rows decide its columns' kinds, however many rows a chunk holds
#: (:meth:`ProfileBuilder.add_chunks`), and for data held in memory too (:meth:`ProfileBuilder.add_whole`).
KIND_ROWS = 100_000


def numerical_cuts(finite: FloatArray, n_bins: int) -> list[float]:
    """Interior bin edges from the quantiles of ``finite`` values.

    With at most :data:`~aiwatch.drift.features.DISCRETE_LIMIT` distinct values every value gets its own bin (a cut
    just below the smallest value, then one at each value), so a constant column has the bins "below", "the value",
    "above"."""
    if finite.size == 0:
        return []
    if not head_more_distinct(finite, DISCRETE_LIMIT):
        distinct = np.unique(finite)
        if distinct.size <= DISCRETE_LIMIT:
            return _discrete_cuts(distinct)
    qs = np.quantile(finite, np.linspace(0, 1, n_bins + 1)[1:-1])
    return [float(c) for c in np.unique(qs)]


def numerical_cuts_sorted(ordered: FloatArray, n_bins: int, unordered: FloatArray | None = None) -> list[float]:
    """:func:`numerical_cuts` of values already sorted: the distinct values and the quantiles are read off the
    sorted array (``np.quantile``'s linear interpolation, without its partition); ``unordered`` as in
    :func:`distinct_sorted`."""
    if ordered.size == 0:
        return []
    distinct = distinct_sorted(ordered, DISCRETE_LIMIT, unordered)
    if distinct is not None:
        return _discrete_cuts(distinct)
    return [float(c) for c in np.unique(quantiles_sorted(ordered, np.linspace(0, 1, n_bins + 1)[1:-1]))]


def numerical_cuts_selected(finite: FloatArray, n_bins: int, sample: FloatArray) -> list[float]:
    """:func:`numerical_cuts` of a column with more than :data:`~aiwatch.drift.features.DISCRETE_LIMIT` distinct
    values, whose quantiles are selected (:func:`quantiles_selected`) rather than sorted for."""
    return [float(c) for c in np.unique(quantiles_selected(finite, np.linspace(0, 1, n_bins + 1)[1:-1], sample))]


def _discrete_cuts(distinct: FloatArray) -> list[float]:
    """A cut at each distinct value, after one just below the smallest (bin 0: values below them all). Below the
    most negative float no finite value exists (and its ``nextafter`` is -inf, which a profile refuses), so a column
    holding it has no "below" bin: bin 0 is that value."""
    smallest = float(distinct[0])
    below = [float(np.nextafter(smallest, -np.inf))] if smallest > -_MAX_FLOAT else []
    return [*below, *map(float, distinct)]


def distinct_sorted(ordered: FloatArray, limit: int, unordered: FloatArray | None = None) -> FloatArray | None:
    """The distinct values of a sorted array, or ``None`` when there are more than ``limit``. ``unordered``: the
    same values before sorting, whose first few thousand are probed first (more than ``limit`` distinct among them
    answers ``None`` without a pass over the whole array)."""
    if ordered.size == 0:
        return ordered
    if unordered is not None and head_more_distinct(unordered, limit):
        return None
    starts = np.empty(ordered.size, dtype=bool)
    starts[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=starts[1:])
    if int(np.count_nonzero(starts)) > limit:
        return None
    return ordered[starts]


def quantiles_sorted(ordered: FloatArray, qs: FloatArray) -> FloatArray:
    """``np.quantile(ordered, qs)`` (method ``linear``) of a sorted, non-empty array, by the same arithmetic."""
    below, above, gamma = _quantile_positions(ordered.size, qs)
    return _interpolate(ordered[below], ordered[above], gamma)


def quantiles_selected(finite: FloatArray, qs: FloatArray, sample: FloatArray) -> FloatArray:
    """:func:`quantiles_sorted` of ``finite`` values in any order: the order statistics it reads are selected
    (:func:`~aiwatch.drift.selection.order_statistics`, ``sample`` drawn from ``finite``), not sorted for."""
    below, above, gamma = _quantile_positions(finite.size, qs)
    positions = np.unique(np.concatenate([below, above]))
    statistics = order_statistics(finite, positions, sample)
    return _interpolate(statistics[np.searchsorted(positions, below)], statistics[np.searchsorted(positions, above)],
                        gamma)


def _quantile_positions(n: int, qs: FloatArray) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], FloatArray]:
    """The two order statistics each quantile of ``n`` values lies between, and how far along (``np.quantile``'s
    ``linear`` method)."""
    virtual = (n - 1) * qs
    below = np.floor(virtual).astype(np.intp)
    return below, np.minimum(below + 1, n - 1), virtual - below


def _interpolate(a: FloatArray, b: FloatArray, gamma: FloatArray) -> FloatArray:
    diff = b - a
    out = a + diff * gamma
    np.subtract(b, diff * (1 - gamma), out=out, where=gamma >= 0.5)  # numpy's _lerp: exact at both ends
    return np.asarray(out, dtype=np.float64)


@dataclass
class _NumericalPass1:
    """Pass 1 over one numerical column: exact statistics (Chan's merge), distinct values while few, a sample."""

    count: int = 0
    missing: int = 0
    mean: float = 0.0
    m2: float = 0.0
    min: float = math.inf
    max: float = -math.inf
    distinct: set[float] | None = field(default_factory=set)
    sample: FloatArray = field(default_factory=lambda: np.empty(0))
    keys: FloatArray = field(default_factory=lambda: np.empty(0))
    invalid: int = 0

    def add(self, finite: FloatArray, ordered: FloatArray | None = None, scratch: FloatArray | None = None) -> None:
        """Add the finite values of one chunk of a column to the statistics; ``ordered``: the same values sorted,
        which gives the extremes and the distinct values without another pass; ``scratch``: a buffer of at least as
        many floats for the deviations (otherwise a new array)."""
        n = int(finite.size)
        if n == 0:
            return
        with np.errstate(over="ignore", invalid="ignore"):  # huge values: mean or std not finite, refused in _numerical
            mean = float(finite.mean())
            # squared in place and summed pairwise; not np.dot: BLAS wakes its thread pool, which on a busy machine
            # cost more CPU than the whole rest of a 100k-value column's build
            deviation = finite - mean if scratch is None else np.subtract(finite, mean, out=scratch[:n])
            m2 = float(np.square(deviation, out=deviation).sum())
        if self.count:
            total = self.count + n
            delta = mean - self.mean
            self.mean += delta * n / total
            self.m2 += m2 + delta * delta * self.count * n / total
            self.count = total
        else:  # taken as they are: delta**2 * 0 is nan when delta**2 overflows
            self.count, self.mean, self.m2 = n, mean, m2
        low, high = (ordered[0], ordered[-1]) if ordered is not None else (finite.min(), finite.max())
        self.min = min(self.min, float(low))
        self.max = max(self.max, float(high))
        if self.distinct is not None:
            if ordered is not None:
                distinct = distinct_sorted(ordered, DISCRETE_LIMIT, finite)
            elif head_more_distinct(finite, DISCRETE_LIMIT):
                distinct = None
            else:
                distinct = np.unique(finite)
            if distinct is None:
                self.distinct = None
            else:
                self.distinct.update(distinct.tolist())
                if len(self.distinct) > DISCRETE_LIMIT:
                    self.distinct = None

    def keep(self, values: FloatArray, keys: FloatArray, sample_size: int) -> None:
        """Offer values with their keys to the sample (the ``sample_size`` smallest keys are kept)."""
        if self.keys.size >= sample_size:  # only keys below the largest kept one can enter: skip the rest cheaply
            below = keys < self.keys.max()
            values, keys = values[below], keys[below]
        if self.sample.size:
            values, keys = np.concatenate([self.sample, values]), np.concatenate([self.keys, keys])
        self.sample, self.keys = keep_smallest(values, keys, sample_size)


class _Scratch(SortBuffer):
    """What :meth:`ProfileBuilder.add_whole` reuses from one column to the next: the buffer of the sorted copy,
    and one for the deviations from the mean."""

    def __init__(self) -> None:
        super().__init__()
        self._deviations = np.empty(0)

    def deviations(self, n: int) -> FloatArray:
        if self._deviations.size < n:
            self._deviations = np.empty(n)
        return self._deviations[:n]


#: :meth:`ProfileBuilder.add_whole` selects a numerical column's quantiles instead of sorting it
#: (:func:`quantiles_selected`) from this many finite values on, when its sample holds at least
#: :data:`SELECT_MIN_SAMPLE` of them and its first values are not few distinct ones; a smaller column's sort is
#: cheap, and a discrete column's distinct values are read off its sort.
SELECT_MIN_VALUES = 65_536
SELECT_MIN_SAMPLE = 2_000


def _selects(finite: FloatArray, sample: FloatArray) -> bool:
    return (finite.size >= SELECT_MIN_VALUES and sample.size >= SELECT_MIN_SAMPLE
            and head_more_distinct(finite, DISCRETE_LIMIT))


class ProfileBuilder:
    """Builds a profile's features from chunks of columns in bounded memory (used for files; arrays go through it
    too, see :func:`build_in_memory`).

    Pass 1 (:meth:`add`) keeps exact statistics, categorical counts and a bounded uniform sample per numerical
    column. When every numerical column fit in the sample (or ``edges`` were given), :meth:`features` needs nothing
    more; otherwise the bin edges come from the sample's quantiles and a second pass (:meth:`count`) over the same
    chunks counts every value into the bins exactly. :attr:`needs_second_pass` says which.
    """

    def __init__(self, *, n_bins: int = DEFAULT_BINS, top_k: int = DEFAULT_TOP_K,
                 sample_size: int = DEFAULT_SAMPLE_SIZE, kinds: Mapping[str, str] | None = None,
                 edges: Mapping[str, Sequence[float]] | None = None, seed: int | None = 0,
                 limits: ProfileLimits = DEFAULT_LIMITS, row_offset: int = 0) -> None:
        _check_size("n_bins", n_bins, limits.max_bins, "max_bins")
        _check_size("top_k", top_k, limits.max_categories, "max_categories")
        _check_size("sample_size", sample_size, limits.max_sample, "max_sample")
        self.n_bins, self.top_k, self.sample_size, self.limits = n_bins, top_k, sample_size, limits
        self.overrides = dict(kinds or {})
        for name, kind in self.overrides.items():
            if kind not in ("numerical", "categorical"):
                raise ProfileError(f"kind of {name!r} must be 'numerical' or 'categorical', got {kind!r}")
        self.edges = checked_edges(edges or {}, limits)
        self.rng = np.random.default_rng(seed)
        self.key_seed = key_seed(seed)
        #: The position of the next row :meth:`add` reads (its sample keys come from it).
        self.rows = row_offset
        self.kinds: dict[str, str] = {}
        #: Columns left out, with their inferred kind (text, datetime, unknown).
        self.skipped: dict[str, str] = {}
        self._num: dict[str, _NumericalPass1] = {}
        self._cat: dict[str, Counter[str]] = {}
        self._cat_missing: dict[str, int] = {}
        self._cuts: dict[str, list[float]] = {}
        self._bins: dict[str, npt.NDArray[np.int64]] = {}
        self._order: list[str] = []

    def add(self, columns: Mapping[str, Any]) -> None:
        """Pass 1 over one chunk (column name -> values, all of one length). The first chunk fixes each column's
        kind. A :class:`~aiwatch.drift.reweight.ThinnedChunk` holds the rows kept of a longer one: each value gets
        the sample key of its row's position, and the rows read move on by the whole chunk's."""
        keys: FloatArray | None = None
        rows = 0
        kept = columns.kept if isinstance(columns, ThinnedChunk) else None
        for name, values in columns.items():
            name = str(name)
            kind, counts = self._kind(name, values)
            if kind == "numerical":
                arr, invalid = to_float_counting(values)
                if keys is None:
                    rows = arr.size if kept is None else kept.size
                    keys = row_keys(self.key_seed, self.rows, rows)
                    if kept is not None:
                        keys = keys[kept]
                finite_mask = np.isfinite(arr)
                every = bool(finite_mask.all())
                finite = arr if every else arr[finite_mask]
                acc = self._num.setdefault(name, _NumericalPass1())
                acc.missing += int(arr.size - finite.size) - invalid
                acc.invalid += invalid
                acc.add(finite)
                acc.keep(finite, keys if every else keys[finite_mask], self.sample_size)
            elif kind == "categorical" or kind is None:
                if kind == "categorical":
                    self._add_categorical(name, values, counts)
                rows = rows or (len(values) if kept is None else kept.size)
        self.rows += rows

    def add_chunks(self, chunks: Iterable[Mapping[str, Any]]) -> None:
        """Pass 1 over every chunk, each column's kind decided on the first :data:`KIND_ROWS` rows however the data
        is cut into chunks: the first chunk alone decided it, so that a small ``chunk_rows`` took a few repeated
        categories for text (each distinct in its 3 rows) and 30 distinct ints for categories (10 per chunk). The
        chunks up to that many rows are held until the kinds are known."""
        held: list[Mapping[str, Any]] = []
        rows = 0
        iterator = iter(chunks)
        for chunk in iterator:
            held.append(chunk)
            rows += _chunk_rows(chunk)
            if rows >= KIND_ROWS:
                break
        if len(held) > 1 or rows > KIND_ROWS:  # one chunk of at most KIND_ROWS rows decides as it is added
            self.decide_kinds(_head(held, KIND_ROWS))
        for chunk in held:
            self.add(chunk)
        del held
        for chunk in iterator:
            self.add(chunk)

    def use_kinds(self, kinds: Mapping[str, str]) -> None:
        """Take the kinds another builder decided (on the first rows of the data) for a part of the data, as they
        are: a part holding no value of a column's kind still gets that kind (and an empty feature to merge), where
        a kind given by the caller (``kinds=``) that fits none of the first values is refused."""
        for name, kind in kinds.items():
            if name not in self.kinds:
                self.kinds[name] = kind
                self._order.append(name)

    def decide_kinds(self, columns: Mapping[str, Any]) -> None:
        """Fix each column's kind from a first chunk without adding it (then :attr:`kinds` and :attr:`skipped`):
        what :meth:`add` does with its first chunk, for builders whose parts must all agree on the kinds."""
        for name, values in columns.items():
            self._kind(str(name), values)

    def _kind(self, name: str, values: Any) -> tuple[str | None, Counter[Any] | None]:
        """The kind of column ``name`` (decided by its first chunk; ``None`` for a column left out), and the
        chunk's distinct counts when inferring the kind counted them."""
        counts = None
        if name not in self.kinds and name not in self.skipped:
            kind = self.overrides.get(name)
            if kind is None:
                kind, counts = infer_kind_counting(values)
            else:
                _check_fits(name, kind, values)
            if kind not in ("numerical", "categorical"):
                self.skipped[name] = kind
                if kind == "unknown":
                    _tell_unknown(name, values)
                return None, None
            self.kinds[name] = kind
            self._order.append(name)
        return self.kinds.get(name), counts

    def _add_categorical(self, name: str, values: Any, counts: Counter[Any] | None = None) -> None:
        counter = self._cat.setdefault(name, Counter())
        missing = 0
        for v, n in category_counts(values, counts).items():  # distinct values only: fast on long columns
            key = None if is_missing(v) else category_key(v)
            if key is None:
                missing += n
            else:
                counter[key] += n
        self._cat_missing[name] = self._cat_missing.get(name, 0) + missing

    def add_whole(self, columns: Mapping[str, Any]) -> None:
        """Both passes at once over columns held whole in memory (:func:`build_in_memory`): each numerical column's
        cuts are the exact quantiles of all its values (unless ``edges`` fixes them), and its bins count every
        value. A large column with many distinct values has its quantiles selected (:func:`quantiles_selected`);
        any other is sorted once, and its cuts, bin counts and distinct values are read off the sorted values.
        Each column's kind is decided on its first :data:`KIND_ROWS` values, as a file's is."""
        scratch = _Scratch()
        for name, values in columns.items():
            name = str(name)
            head = first_rows(values, KIND_ROWS)
            kind, counts = self._kind(name, head)
            if head is not values:  # counted over the first rows only
                counts = None
            if kind == "categorical":
                self._add_categorical(name, values, counts)
            elif kind == "numerical":
                if name in self._num:
                    raise ProfileError(f"column {name!r} was already added: add_whole takes each column once")
                arr, invalid = to_float_counting(values)
                finite = finite_values(arr)
                acc = self._num[name] = _NumericalPass1(invalid=invalid)
                acc.missing = int(arr.size - finite.size) - invalid
                acc.sample, acc.keys = smallest_keys_sample(finite, self.sample_size, self.rng)
                if _selects(finite, acc.sample):
                    acc.distinct = None  # _selects found more distinct values than that among the first ones
                    acc.add(finite, scratch=scratch.deviations(finite.size))
                    cuts = self.edges[name] if name in self.edges else self._checked_cuts(
                        name, numerical_cuts_selected(finite, self.n_bins, acc.sample))
                    self._bins[name] = count_bins(np.asarray(cuts, dtype=np.float64), finite)
                else:
                    ordered = scratch.sorted_copy(finite)
                    acc.add(finite, ordered=ordered, scratch=scratch.deviations(finite.size))
                    cuts = self.edges[name] if name in self.edges else self._checked_cuts(
                        name, numerical_cuts_sorted(ordered, self.n_bins, finite))
                    self._bins[name] = count_bins_sorted(np.asarray(cuts, dtype=np.float64), ordered)
                self._cuts[name] = cuts

    def _checked_cuts(self, name: str, cuts: list[float]) -> list[float]:
        check_cuts(cuts, self.limits, f"edges of {name!r}")
        return cuts

    @property
    def needs_second_pass(self) -> bool:
        return any(acc.count > self.sample_size and name not in self.edges for name, acc in self._num.items())

    def _cuts_for(self, name: str) -> list[float]:
        if name not in self._cuts:
            acc = self._num[name]
            if name in self.edges:
                self._cuts[name] = self.edges[name]
            elif acc.distinct is not None:
                self._cuts[name] = numerical_cuts(np.asarray(sorted(acc.distinct)), self.n_bins)
            else:
                self._cuts[name] = numerical_cuts(acc.sample, self.n_bins)
        return self._cuts[name]

    def count(self, columns: Mapping[str, Any]) -> None:
        """Pass 2 over one chunk: count every numerical value into its bin."""
        for name, values in columns.items():
            name = str(name)
            if self.kinds.get(name) != "numerical":
                continue
            self.add_bin_counts({name: count_finite(self._cuts_for(name), values)})

    def cuts(self) -> dict[str, list[float]]:
        """Every numerical column's bin edges (known after pass 1)."""
        return {name: self._cuts_for(name) for name in self._num}

    def add_bin_counts(self, counts: Mapping[str, npt.NDArray[np.int64]]) -> None:
        """Add pass-2 bin counts made elsewhere (another builder's part of the data, counted with :meth:`cuts`)."""
        for name, part in counts.items():
            self._bins[name] = self._bins[name] + part if name in self._bins else np.asarray(part, dtype=np.int64)

    def partial_features(self) -> dict[str, Feature]:
        """What pass 1 has learnt, as features that :func:`~aiwatch.drift.merge.merge_features` merges exactly with
        other parts' (``top_k=None`` there): numerical ones without bin edges (one bin), categorical ones with every
        category counted (none folded into "other")."""
        features: dict[str, Feature] = {}
        for name in self._order:
            if self.kinds[name] == "numerical":
                acc = self._num[name]
                features[name] = NumericalFeature(
                    name, [], [acc.count], acc.count, acc.missing, acc.mean, math.sqrt(acc.m2 / acc.count)
                    if acc.count else 0.0, acc.min, acc.max,
                    sorted(acc.distinct) if acc.distinct is not None else None, acc.sample.tolist(),
                    acc.keys.tolist(), invalid=acc.invalid)
            else:
                counter = self._cat.get(name, Counter())
                features[name] = CategoricalFeature(name, sorted(counter), [counter[c] for c in sorted(counter)], 0,
                                                    sum(counter.values()), self._cat_missing.get(name, 0))
        return features

    def absorb(self, partial: Mapping[str, Feature]) -> None:
        """Take over pass 1 from :meth:`partial_features` (merged over the parts of the data), in their order; this
        builder has read nothing itself. Then :meth:`cuts`, :meth:`add_bin_counts` and :meth:`features`."""
        if self.kinds:
            raise ProfileError("absorb() needs a builder that has read nothing")
        for name, feat in partial.items():
            self.kinds[name] = feat.kind
            self._order.append(name)
            if isinstance(feat, NumericalFeature):
                acc = self._num[name] = _NumericalPass1(
                    feat.count, feat.missing, feat.mean if feat.count else 0.0,
                    feat.std**2 * feat.count if feat.count else 0.0, feat.min, feat.max,
                    set(feat.distinct) if feat.distinct is not None else None, invalid=feat.invalid)
                acc.keep(np.asarray(feat.sample, dtype=np.float64), np.asarray(feat.sample_keys, dtype=np.float64),
                         self.sample_size)
            else:
                self._cat[name] = Counter(dict(zip(feat.categories, feat.counts, strict=True)))
                self._cat_missing[name] = feat.missing

    def features(self) -> dict[str, Feature]:
        """Every profiled column's feature, in column order (after pass 2 when :attr:`needs_second_pass`). A kind
        given for a column the data does not have (a typo, which would be ignored) is refused by name."""
        self._check_kinds_found()
        if not self.kinds:
            detail = f" (skipped: {self.skipped})" if self.skipped else ""
            raise ProfileError(f"no numerical or categorical column to profile{detail}")
        features: dict[str, Feature] = {}
        for name in self._order:
            if self.kinds[name] == "numerical":
                features[name] = self._numerical(name)
            else:
                features[name] = self._categorical(name)
        return features

    def _check_kinds_found(self) -> None:
        columns = [*self._order, *self.skipped]
        shown = ", ".join(columns[:20]) + (f", ... ({len(columns)} in all)" if len(columns) > 20 else "")
        for name in self.overrides:
            if name not in self.kinds and name not in self.skipped:
                raise ProfileError(f"a kind is given for {name!r}, but the data has no column {name!r} (its "
                                   f"columns: {shown})")
        for name in self.edges:  # else ignored: the column got quantile edges, with no word of the typo
            if name not in self.kinds and name not in self.skipped:
                raise ProfileError(f"edges are given for {name!r}, but the data has no column {name!r} (its "
                                   f"columns: {shown})")
            kind = self.kinds.get(name) or self.skipped[name]
            if kind != "numerical":
                raise ProfileError(f"edges are given for {name!r}, which is {kind}: bin edges are for numerical "
                                   "columns")

    def _numerical(self, name: str) -> NumericalFeature:
        acc = self._num[name]
        cuts = self._cuts_for(name)
        if name in self._bins:
            bins = self._bins[name]
        elif acc.count <= self.sample_size:
            bins = count_bins(np.asarray(cuts, dtype=np.float64), acc.sample)
        else:
            raise ProfileError(f"column {name!r} needs a second pass (ProfileBuilder.count) over the data")
        std = math.sqrt(acc.m2 / acc.count) if acc.count else math.nan
        if acc.count and not (math.isfinite(acc.mean) and math.isfinite(std)):
            largest = max(abs(acc.min), abs(acc.max))
            raise ProfileError(f"column {name!r}: values as large as {largest:.4g} overflow float64 (largest "
                               f"{_MAX_FLOAT:.4g}) when its mean and standard deviation are summed; rescale the "
                               f"column or leave it out of the data")
        order = np.argsort(acc.keys, kind="stable")  # the sample in key order: the same however it was gathered
        return NumericalFeature(
            name, cuts, [int(c) for c in bins], acc.count, acc.missing, acc.mean if acc.count else math.nan, std,
            acc.min if acc.count else math.nan, acc.max if acc.count else math.nan,
            sorted(acc.distinct) if acc.distinct is not None else None, acc.sample[order], acc.keys[order],
            invalid=acc.invalid)

    def _categorical(self, name: str) -> CategoricalFeature:
        counter = self._cat[name]
        kept, others = split_top_k(counter.items(), self.top_k)
        rest = [c for c, _ in others]
        return CategoricalFeature(
            name, [c for c, _ in kept], [n for _, n in kept], sum(n for _, n in others),
            sum(counter.values()), self._cat_missing.get(name, 0), sorted(rest[:MAX_OTHER_NAMES]),
            exact=len(rest) <= MAX_OTHER_NAMES)


def _tell_unknown(name: str, values: Any) -> None:
    """Log, by name, a column left out of a profile because its kind is unknown (values of no one kind, or none
    present): it is listed in ``profile.skipped``, which a library caller may never read."""
    try:
        shown = present_examples(values)
        described = describe_values(shown)
        fits = next((k for k in ("categorical", "numerical") if fitting_none(k, values) is None), None)
    except Exception:  # a value whose str() or == fails: the name is what matters
        shown, described, fits = [None], "values that cannot be shown", None
    if len(described) > 200:  # a value can be long (a list, a document): the name and the types matter
        described = described[:200] + "..."
    what = f"its values are of no kind drift tests ({described})" if shown else "every value is missing"
    if fits is None or not shown:  # lists, dicts...: an override would be refused
        _log.warning("aiwatch: column %r left out of the profile: %s", name, what)
    else:
        _log.warning("aiwatch: column %r left out of the profile: %s; to test it, give it a kind: kinds={%r: %r} "
                     "(CLI: --kind %s=%s)", name, what, name, fits, name, fits)


def _check_fits(name: str, kind: str, values: Any) -> None:
    """A kind given for a column that none of its (first) values fits is refused: its feature would be empty, every
    value counted as missing."""
    unfit = fitting_none(kind, values)
    if unfit is not None:
        what = "a number" if kind == "numerical" else "a category"
        raise ProfileError(f"column {name!r} cannot be {kind}: none of its values is {what} (they are "
                           f"{describe_values(unfit)}); give it another kind, or leave it to inference")


def first_rows(values: Any, rows: int) -> Any:
    """The first ``rows`` values of a column, or the column itself when it holds no more. A list is cut before it
    is typed, so that its first rows are typed alone, as a file's first chunk is."""
    try:
        if len(values) <= rows:
            return values
    except TypeError:  # no length: the column as it is
        return values
    if hasattr(values, "iloc"):  # a pandas Series: by position, whatever its index
        return values.iloc[:rows]
    try:
        return values[:rows]
    except (TypeError, KeyError, IndexError):
        return list(itertools.islice(values, rows))


def _chunk_rows(chunk: Mapping[str, Any]) -> int:
    return len(next(iter(chunk.values()))) if chunk else 0


def _head(chunks: Sequence[Mapping[str, Any]], rows: int) -> dict[str, Any]:
    """The first ``rows`` rows of each column over consecutive chunks, as one array (numpy arrays of one kind
    concatenate as numpy types them together: ints with floats are floats, as pandas reads a CSV column whole)."""
    parts: dict[str, list[Any]] = {}
    for chunk in chunks:
        for name, values in chunk.items():
            parts.setdefault(str(name), []).append(values)
    head: dict[str, Any] = {}
    for name, values in parts.items():
        arrays = [v.objects() if isinstance(v, NullableInts) else v if isinstance(v, np.ndarray) and v.ndim == 1
                  else python_column(v) for v in values]
        head[name] = np.concatenate(arrays)[:rows] if len(arrays) > 1 else arrays[0][:rows]
    return head


def count_finite(cuts: Sequence[float], values: Any) -> npt.NDArray[np.int64]:
    """The bin counts of a chunk of a numerical column's finite values (pass 2)."""
    arr = to_float_counting(values)[0]
    return count_bins(np.asarray(cuts, dtype=np.float64), arr[np.isfinite(arr)])


def _check_size(name: str, value: int, maximum: int, limit: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise ProfileError(f"{name} must be a whole number from 1 to {maximum} (ProfileLimits.{limit}), got {value!r}")


def checked_edges(edges: Mapping[str, Sequence[float]], limits: ProfileLimits) -> dict[str, list[float]]:
    """Bin edges given by the caller, as floats, after :func:`~aiwatch.drift.validation.check_cuts`."""
    out: dict[str, list[float]] = {}
    for name, cuts in edges.items():
        try:
            out[name] = [float(e) for e in cuts]
        except (TypeError, ValueError, OverflowError):
            raise ProfileError(f"edges of {name!r} must be numbers") from None
        check_cuts(out[name], limits, f"edges of {name!r}")
    return out


def build_in_memory(columns: Mapping[str, Any], *, n_bins: int = DEFAULT_BINS, top_k: int = DEFAULT_TOP_K,
                    sample_size: int = DEFAULT_SAMPLE_SIZE, kinds: Mapping[str, str] | None = None,
                    edges: Mapping[str, Sequence[float]] | None = None, seed: int | None = 0,
                    limits: ProfileLimits = DEFAULT_LIMITS) -> ProfileBuilder:
    """Both passes over columns held in memory. Their kinds are decided on their first :data:`KIND_ROWS` rows, as a
    file's are; unlike a file's, the bin edges come from the exact quantiles of all the data, not of the sample;
    ``edges`` fixes them per column."""
    builder = ProfileBuilder(n_bins=n_bins, top_k=top_k, sample_size=sample_size, kinds=kinds, edges=edges,
                             seed=seed, limits=limits)
    builder.add_whole(columns)
    return builder
