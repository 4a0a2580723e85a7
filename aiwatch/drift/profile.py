"""Reference profiles: what the training data looked like, built once and loaded by every drift path.

A :class:`ReferenceProfile` holds one :class:`NumericalFeature` or :class:`CategoricalFeature` per column:

* numerical: bin edges from the reference quantiles (``n_bins`` bins, default 10), the reference count in each bin,
  exact summary statistics (count, mean, std, min, max) and a bounded uniform sample of the values (for the exact
  KS / Wasserstein tests);
* categorical: the counts of the ``top_k`` most frequent categories plus one "other" count.

Column types are inferred with Evidently's rules (:func:`infer_kind`) unless ``kinds=`` overrides them.

    >>> import numpy as np
    >>> p = ReferenceProfile.build({"x": np.arange(1000.0), "c": ["a", "b"] * 500})
    >>> p.features["x"].kind, len(p.features["x"].bin_counts), p.features["c"].kind
    ('numerical', 10, 'categorical')
    >>> ReferenceProfile.from_json(p.to_json()).features["c"].categories
    ['a', 'b']

**Merging.** Two profiles built on parts of the same data merge (:meth:`ReferenceProfile.merge`) into the profile of
the whole when both used the same bin edges: build the first part, then pass ``edges_from=first`` when building the
others (or fix ``edges=`` yourself). Bin counts, categorical counts, missing counts, count/mean/std/min/max merge
exactly; the samples merge exactly as a uniform sample of the union (each value carries a random key and the
``sample_size`` smallest keys are kept). Categorical counts are exact as long as each part saw at most ``top_k``
distinct categories; otherwise a category folded into one part's "other" count makes the merged count a lower bound
and the merged feature is marked ``exact=False``. Profiles with different edges refuse to merge (re-binning would
not be exact).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

FORMAT = "aiwatch.reference_profile"
VERSION = 1
DEFAULT_BINS = 10
DEFAULT_TOP_K = 100
DEFAULT_SAMPLE_SIZE = 20_000
#: Reference columns with at most this many distinct values get one bin per value (see :func:`numerical_cuts`).
DISCRETE_LIMIT = 20
#: Evidently's limit: an integer column with at most this many distinct values is categorical.
INTEGER_CARDINALITY_LIMIT = 10
#: At most this many reference categories outside the top-K are remembered by name (to tell "other" from "unseen").
MAX_OTHER_NAMES = 1000
OTHER = "__other__"
UNSEEN = "__unseen__"

Kind = Literal["numerical", "categorical"]
FloatArray = npt.NDArray[np.float64]


class ProfileError(ValueError):
    """A profile could not be built, loaded or merged; the message names the problem."""


# ---------------------------------------------------------------------------------------------------------------
# type inference (Evidently 0.7's evidently.core.datasets.infer_column_type, on numpy arrays and Python values)


def infer_kind(values: Any) -> str:
    """``numerical``, ``categorical``, ``text``, ``datetime`` or ``unknown``, with Evidently's column-type rules.

    float -> numerical; integer -> categorical with at most 10 distinct values, else numerical; bool and pandas
    category -> categorical; strings -> text when more than half of the non-missing values are distinct, else
    categorical; datetimes -> datetime. Plain Python lists are first given the dtype pandas would give them.

    >>> infer_kind([1.5, 2.0]), infer_kind([1, 2, 3]), infer_kind(list(range(50))), infer_kind(["a", "a", "a", "b"])
    ('numerical', 'categorical', 'numerical', 'categorical')
    """
    dtype_name = str(getattr(values, "dtype", ""))
    if not dtype_name:
        values = _python_column(values)
        dtype_name = str(values.dtype)
    if dtype_name.startswith("float"):
        return "numerical"
    if dtype_name.startswith(("int", "uint", "Int", "UInt")):
        distinct = len(np.unique(np.asarray(values)[~_isna(values)]))
        return "categorical" if distinct <= INTEGER_CARDINALITY_LIMIT else "numerical"
    if dtype_name in ("bool", "boolean", "category"):
        return "categorical"
    if dtype_name.startswith("datetime"):
        return "datetime"
    if dtype_name in ("string", "str", "object") or dtype_name.startswith("<U"):
        items = np.asarray(values, dtype=object).tolist()
        first = next((v for v in items if not _missing(v)), None)
        last = next((v for v in reversed(items) if not _missing(v)), None)
        if first is None:
            return "unknown"
        if isinstance(first, str) and isinstance(last, str):
            counts = Counter(items)
            present = [v for v in counts if not _missing(v)]
            n_present = sum(counts[v] for v in present)
            return "text" if len(present) > 0.5 * n_present else "categorical"
        return "unknown"
    return "unknown"


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and not math.isfinite(v))


def _isna(values: Any) -> npt.NDArray[np.bool_]:
    arr = np.asarray(values)
    if arr.dtype.kind == "f":
        return np.asarray(~np.isfinite(arr), dtype=bool)
    if arr.dtype.kind == "O":
        return np.fromiter((_missing(v) for v in arr.tolist()), dtype=bool, count=arr.size)
    return np.zeros(arr.shape, dtype=bool)


def _python_column(values: Iterable[Any]) -> npt.NDArray[Any]:
    """A list as pandas would type it: all ints -> int64, ints/floats/None -> float64, bools -> bool, else object."""
    items = list(values)
    present = [v for v in items if v is not None]
    if present and all(isinstance(v, (bool, np.bool_)) for v in present) and len(present) == len(items):
        return np.asarray(items, dtype=bool)
    numeric = all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
                  for v in present)
    if present and numeric:
        if len(present) == len(items) and all(isinstance(v, (int, np.integer)) for v in present):
            return np.asarray(items, dtype=np.int64)
        return np.asarray([math.nan if v is None else v for v in items], dtype=np.float64)
    return np.asarray(items, dtype=object)


# ---------------------------------------------------------------------------------------------------------------
# features


@dataclass
class NumericalFeature:
    """A numerical reference column. Bin ``i`` holds values in ``(cuts[i-1], cuts[i]]`` (open-ended at both ends)."""

    name: str
    cuts: list[float]
    bin_counts: list[int]
    count: int
    missing: int = 0
    mean: float = math.nan
    std: float = math.nan
    min: float = math.nan
    max: float = math.nan
    #: The reference's distinct values when there are at most DISCRETE_LIMIT of them, else None.
    distinct: list[float] | None = None
    sample: list[float] = field(default_factory=list)
    sample_keys: list[float] = field(default_factory=list)
    kind: Kind = "numerical"

    @property
    def bin_labels(self) -> list[str]:
        """The ``bin`` label values of the fleet sketch: the bin index, as a string."""
        return [str(i) for i in range(len(self.bin_counts))]

    def reference_shares(self) -> FloatArray:
        counts = np.asarray(self.bin_counts, dtype=np.float64)
        total = counts.sum()
        return counts / total if total > 0 else counts

    def bin_index(self, values: FloatArray) -> npt.NDArray[np.intp]:
        """Bin of each (finite) value."""
        return np.searchsorted(np.asarray(self.cuts, dtype=np.float64), values, side="left")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "cuts": self.cuts, "bin_counts": self.bin_counts, "count": self.count,
                "missing": self.missing, "mean": _num(self.mean), "std": _num(self.std), "min": _num(self.min),
                "max": _num(self.max), "distinct": self.distinct, "sample": _encode(self.sample),
                "sample_keys": _encode(self.sample_keys)}


@dataclass
class CategoricalFeature:
    """A categorical reference column: counts of the ``top_k`` most frequent categories and one "other" count.

    Live values map to a bucket: a top-K category, :data:`OTHER` (a reference category outside the top-K) or
    :data:`UNSEEN` (never in the reference)."""

    name: str
    categories: list[str]
    counts: list[int]
    other_count: int = 0
    count: int = 0
    missing: int = 0
    other_names: list[str] = field(default_factory=list)
    #: False when more reference categories fell outside the top-K than MAX_OTHER_NAMES (their names are
    #: forgotten, so live values outside the top-K all count as OTHER), or after an inexact merge.
    exact: bool = True
    kind: Kind = "categorical"

    @property
    def bin_labels(self) -> list[str]:
        return [*self.categories, OTHER, UNSEEN]

    def bucket_counts(self) -> list[int]:
        return [*self.counts, self.other_count, 0]

    def reference_shares(self) -> FloatArray:
        counts = np.asarray(self.bucket_counts(), dtype=np.float64)
        total = counts.sum()
        return counts / total if total > 0 else counts

    def lookup(self) -> dict[str, int]:
        """category -> bucket index, for the categories the reference saw."""
        table = {c: i for i, c in enumerate(self.categories)}
        other = len(self.categories)
        for name in self.other_names:
            table[name] = other
        return table

    @property
    def unseen_bucket(self) -> int:
        """Where a category the reference never saw goes (OTHER when the other names were not all kept)."""
        return len(self.categories) + (1 if self.exact or not self.other_count else 0)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "categories": self.categories, "counts": self.counts,
                "other_count": self.other_count, "count": self.count, "missing": self.missing,
                "other_names": self.other_names, "exact": self.exact}


Feature = NumericalFeature | CategoricalFeature


def category_key(value: Any) -> str | None:
    """The category string of a live or reference value (None when it cannot be a category).

    Integral floats read as ints (a CSV column 1, 2, NaN is float in pandas but categories "1", "2")."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return "True" if value else "False"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return str(int(f)) if f.is_integer() else repr(f)
    return None


def _encode(values: list[float]) -> str:
    """Floats as base64 of little-endian float64: exact, and about half the size of decimal JSON numbers."""
    return base64.b64encode(np.asarray(values, dtype="<f8").tobytes()).decode("ascii")


def _decode(data: Any) -> list[float]:
    if isinstance(data, str):
        raw = base64.b64decode(data.encode("ascii"), validate=True)
        if len(raw) % 8:
            raise ValueError("sample: base64 data is not a whole number of float64 values")
        return [float(v) for v in np.frombuffer(raw, dtype="<f8")]
    return [float(v) for v in data]


def _num(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _float(x: Any) -> float:
    return math.nan if x is None else float(x)


# ---------------------------------------------------------------------------------------------------------------
# building


def numerical_cuts(finite: FloatArray, n_bins: int) -> list[float]:
    """Interior bin edges from the quantiles of ``finite`` values.

    With at most :data:`DISCRETE_LIMIT` distinct values every value gets its own bin (a cut just below the smallest
    value, then one at each value), so a constant column has the bins "below", "the value", "above"."""
    if finite.size == 0:
        return []
    if np.unique(finite[:4096]).size <= DISCRETE_LIMIT:  # cheap probe before a full sort
        distinct = np.unique(finite)
        if distinct.size <= DISCRETE_LIMIT:
            return [float(np.nextafter(distinct[0], -np.inf)), *map(float, distinct)]
    qs = np.quantile(finite, np.linspace(0, 1, n_bins + 1)[1:-1])
    return [float(c) for c in np.unique(qs)]


@dataclass
class _NumAcc:
    count: int = 0
    missing: int = 0
    mean: float = 0.0
    m2: float = 0.0
    min: float = math.inf
    max: float = -math.inf
    distinct: set[float] | None = field(default_factory=set)
    sample: FloatArray = field(default_factory=lambda: np.empty(0))
    keys: FloatArray = field(default_factory=lambda: np.empty(0))

    def add(self, values: FloatArray, rng: np.random.Generator, sample_size: int) -> None:
        finite = values[np.isfinite(values)]
        self.missing += int(values.size - finite.size)
        n = int(finite.size)
        if n == 0:
            return
        mean = float(finite.mean())
        m2 = float(((finite - mean) ** 2).sum())
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.count * n / total
        self.count = total
        self.min = min(self.min, float(finite.min()))
        self.max = max(self.max, float(finite.max()))
        if self.distinct is not None:
            if np.unique(finite[:4096]).size > DISCRETE_LIMIT:  # cheap probe before a full sort
                self.distinct = None
            else:
                self.distinct.update(np.unique(finite).tolist())
                if len(self.distinct) > DISCRETE_LIMIT:
                    self.distinct = None
        keys = rng.random(n)
        self.sample, self.keys = _keep_smallest(np.concatenate([self.sample, finite]),
                                                np.concatenate([self.keys, keys]), sample_size)


def _keep_smallest(values: FloatArray, keys: FloatArray, size: int) -> tuple[FloatArray, FloatArray]:
    if keys.size <= size:
        return values, keys
    idx = np.argpartition(keys, size)[:size]
    return values[idx], keys[idx]


class ProfileBuilder:
    """Builds a profile from chunks of columns in bounded memory (used for files; arrays go through it too).

    Pass 1 (:meth:`add`) keeps exact statistics, categorical counts and a bounded uniform sample per numerical
    column. When every numerical column fit in the sample (or ``edges`` were given), :meth:`finish` needs nothing
    more; otherwise the bin edges come from the sample's quantiles and a second pass (:meth:`count`) over the same
    chunks counts every value into the bins exactly. :attr:`needs_second_pass` says which.
    """

    def __init__(self, *, n_bins: int = DEFAULT_BINS, top_k: int = DEFAULT_TOP_K,
                 sample_size: int = DEFAULT_SAMPLE_SIZE, kinds: Mapping[str, str] | None = None,
                 edges: Mapping[str, Sequence[float]] | None = None, seed: int | None = 0) -> None:
        if n_bins < 1:
            raise ProfileError(f"n_bins must be >= 1, got {n_bins}")
        if top_k < 1:
            raise ProfileError(f"top_k must be >= 1, got {top_k}")
        self.n_bins, self.top_k, self.sample_size = n_bins, top_k, sample_size
        self.overrides = dict(kinds or {})
        for name, kind in self.overrides.items():
            if kind not in ("numerical", "categorical"):
                raise ProfileError(f"kind of {name!r} must be 'numerical' or 'categorical', got {kind!r}")
        self.edges = {k: [float(e) for e in v] for k, v in (edges or {}).items()}
        self.rng = np.random.default_rng(seed)
        self.kinds: dict[str, str] = {}
        self.skipped: dict[str, str] = {}
        self._num: dict[str, _NumAcc] = {}
        self._cat: dict[str, Counter[str]] = {}
        self._cat_missing: dict[str, int] = {}
        self._cuts: dict[str, list[float]] = {}
        self._bins: dict[str, npt.NDArray[np.int64]] = {}
        self._order: list[str] = []

    def add(self, columns: Mapping[str, Any]) -> None:
        """Pass 1 over one chunk (column name -> values). The first chunk fixes each column's kind."""
        for name, values in columns.items():
            name = str(name)
            if name not in self.kinds and name not in self.skipped:
                kind = self.overrides.get(name) or infer_kind(values)
                if kind not in ("numerical", "categorical"):
                    self.skipped[name] = kind
                    continue
                self.kinds[name] = kind
                self._order.append(name)
            if self.kinds.get(name) == "numerical":
                acc = self._num.setdefault(name, _NumAcc())
                acc.add(to_float_counting(values)[0], self.rng, self.sample_size)
            elif self.kinds.get(name) == "categorical":
                counter = self._cat.setdefault(name, Counter())
                missing = 0
                raw = values if isinstance(values, list) else np.asarray(values, dtype=object).tolist()
                for v, n in Counter(raw).items():  # distinct values only: fast on long columns
                    key = None if _missing(v) else category_key(v)
                    if key is None:
                        missing += n
                    else:
                        counter[key] += n
                self._cat_missing[name] = self._cat_missing.get(name, 0) + missing

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
            cuts = np.asarray(self._cuts_for(name))
            arr = to_float_counting(values)[0]
            arr = arr[np.isfinite(arr)]
            counts = np.bincount(np.searchsorted(cuts, arr, side="left"), minlength=cuts.size + 1)
            self._bins[name] = self._bins.get(name, np.zeros(cuts.size + 1, dtype=np.int64)) + counts

    def finish(self) -> ReferenceProfile:
        if not self.kinds:
            detail = f" (skipped: {self.skipped})" if self.skipped else ""
            raise ProfileError(f"no numerical or categorical column to profile{detail}")
        features: dict[str, Feature] = {}
        for name in self._order:
            if self.kinds[name] == "numerical":
                features[name] = self._finish_numerical(name)
            else:
                features[name] = self._finish_categorical(name)
        return ReferenceProfile(features, n_bins=self.n_bins, top_k=self.top_k, sample_size=self.sample_size,
                                skipped=dict(self.skipped))

    def _finish_numerical(self, name: str) -> NumericalFeature:
        acc = self._num[name]
        cuts = self._cuts_for(name)
        if name in self._bins:
            bins = self._bins[name]
        elif acc.count <= self.sample_size:
            bins = np.bincount(np.searchsorted(np.asarray(cuts), acc.sample, side="left"), minlength=len(cuts) + 1)
        else:
            raise ProfileError(f"column {name!r} needs a second pass (ProfileBuilder.count) over the data")
        std = math.sqrt(acc.m2 / acc.count) if acc.count else math.nan
        return NumericalFeature(
            name, cuts, [int(c) for c in bins], acc.count, acc.missing, acc.mean if acc.count else math.nan, std,
            acc.min if acc.count else math.nan, acc.max if acc.count else math.nan,
            sorted(acc.distinct) if acc.distinct is not None else None,
            acc.sample.tolist(), acc.keys.tolist())

    def _finish_categorical(self, name: str) -> CategoricalFeature:
        counter = self._cat[name]
        top = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
        kept = sorted(top[: self.top_k])
        rest = [c for c, _ in top[self.top_k:]]
        return CategoricalFeature(
            name, [c for c, _ in kept], [n for _, n in kept], sum(n for _, n in top[self.top_k:]),
            sum(counter.values()), self._cat_missing.get(name, 0), sorted(rest[:MAX_OTHER_NAMES]),
            exact=len(rest) <= MAX_OTHER_NAMES)


def to_float_counting(values: Any) -> tuple[FloatArray, int]:
    """float64 array of ``values``; wrong-typed entries (strings, bools...) become NaN and are counted."""
    arr = values if isinstance(values, np.ndarray) else np.asarray(values, dtype=object)
    if arr.dtype.kind == "O" and arr.size and all(type(v) is float or type(v) is int for v in arr.tolist()):
        arr = arr.astype(np.float64)
    if arr.dtype.kind in "fiu":
        return arr.astype(np.float64, copy=False), 0
    out = np.empty(arr.size, dtype=np.float64)
    invalid = 0
    for i, v in enumerate(arr.ravel().tolist()):
        if v is None:
            out[i] = math.nan
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[i] = float(v)
        else:
            out[i] = math.nan
            invalid += 1
    return out, invalid


def columns_of(data: Any) -> dict[str, Any]:
    """Column name -> values for a mapping of columns, a pandas DataFrame or a list of row dicts."""
    if isinstance(data, Mapping):
        return {str(k): v for k, v in data.items()}
    if hasattr(data, "columns") and hasattr(data, "__getitem__"):  # pandas DataFrame (duck-typed)
        return {str(c): data[c].to_numpy() if hasattr(data[c], "to_numpy") else data[c] for c in data.columns}
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        names: dict[str, None] = {}
        for row in data:
            if not isinstance(row, Mapping):
                raise ProfileError(f"rows must be dicts of feature -> value, got {type(row).__name__}")
            names.update(dict.fromkeys(row))
        return {str(n): _python_column([row.get(n) for row in data]) for n in names}
    raise ProfileError(f"cannot read columns from {type(data).__name__}: pass a dict of columns, a list of row "
                       "dicts or a pandas DataFrame")


# ---------------------------------------------------------------------------------------------------------------
# the profile


class ReferenceProfile:
    """The reference distribution of every monitored feature (and model output), loaded by all three drift paths."""

    def __init__(self, features: Mapping[str, Feature], *, n_bins: int = DEFAULT_BINS, top_k: int = DEFAULT_TOP_K,
                 sample_size: int = DEFAULT_SAMPLE_SIZE, skipped: Mapping[str, str] | None = None) -> None:
        self.features: dict[str, Feature] = dict(features)
        self.n_bins, self.top_k, self.sample_size = n_bins, top_k, sample_size
        #: Columns left out, with their inferred kind (text, datetime, unknown).
        self.skipped: dict[str, str] = dict(skipped or {})

    def __repr__(self) -> str:
        kinds = Counter(f.kind for f in self.features.values())
        return f"ReferenceProfile({len(self.features)} features: {dict(kinds)})"

    @classmethod
    def build(cls, data: Any, *, n_bins: int = DEFAULT_BINS, top_k: int = DEFAULT_TOP_K,
              sample_size: int = DEFAULT_SAMPLE_SIZE, kinds: Mapping[str, str] | None = None,
              edges: Mapping[str, Sequence[float]] | None = None, edges_from: ReferenceProfile | None = None,
              seed: int | None = 0) -> ReferenceProfile:
        """Profile in-memory data: a dict of columns (lists or numpy arrays), a list of row dicts, a pandas
        DataFrame, or a 2-D numpy array (columns named ``"0"``, ``"1"``...).

        ``kinds`` overrides inferred types (``{"zip": "categorical"}``); ``edges`` / ``edges_from`` fix the bin
        edges (to build profiles that merge). Bin edges come from the exact quantiles of all the data."""
        if isinstance(data, np.ndarray):
            if data.ndim != 2:
                raise ProfileError(f"a numpy array must be 2-D (rows x features), got shape {data.shape}")
            data = {str(i): data[:, i] for i in range(data.shape[1])}
        columns = columns_of(data)
        all_edges: dict[str, Sequence[float]] = dict(edges or {})
        if edges_from is not None:
            for name, feat in edges_from.features.items():
                if isinstance(feat, NumericalFeature):
                    all_edges.setdefault(name, feat.cuts)
            kinds = {**{n: f.kind for n, f in edges_from.features.items()}, **(kinds or {})}
        builder = ProfileBuilder(n_bins=n_bins, top_k=top_k, sample_size=sample_size, kinds=kinds,
                                 edges=all_edges, seed=seed)
        builder.add(columns)
        for name, kind in builder.kinds.items():
            if kind == "numerical" and name not in all_edges:
                arr = to_float_counting(columns[name])[0]
                all_edges[name] = numerical_cuts(arr[np.isfinite(arr)], n_bins)
        builder.edges = {k: [float(e) for e in v] for k, v in all_edges.items()}
        builder.count(columns)
        return builder.finish()

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **options: Any) -> ReferenceProfile:
        """Profile a CSV or Parquet file chunk by chunk (see :mod:`aiwatch.drift.batch`)."""
        from aiwatch.drift.batch import profile_file

        return profile_file(path, **options)

    # ----------------------------------------------------------------------------------------- persistence
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "n_bins": self.n_bins, "top_k": self.top_k,
                "sample_size": self.sample_size, "skipped": self.skipped,
                "features": {name: f.to_dict() for name, f in self.features.items()}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False)

    def save(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def from_dict(cls, data: Any, source: str = "profile") -> ReferenceProfile:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ProfileError(f"{source} is not an aiwatch reference profile (no \"format\": \"{FORMAT}\")")
        version = data.get("version")
        if version != VERSION:
            raise ProfileError(f"{source} has profile version {version!r}; this aiwatch reads version {VERSION} "
                               "(rebuild it with `aiwatch profile build`)")
        features: dict[str, Feature] = {}
        name = ""
        try:
            for name, f in data["features"].items():
                if f["kind"] == "numerical":
                    num = NumericalFeature(
                        name, [float(c) for c in f["cuts"]], [int(c) for c in f["bin_counts"]], int(f["count"]),
                        int(f.get("missing", 0)), _float(f.get("mean")), _float(f.get("std")),
                        _float(f.get("min")), _float(f.get("max")),
                        None if f.get("distinct") is None else [float(v) for v in f["distinct"]],
                        _decode(f.get("sample", [])), _decode(f.get("sample_keys", [])))
                    if len(num.bin_counts) != len(num.cuts) + 1:
                        raise ProfileError(f"{source}: feature {name!r} has {len(num.cuts)} cuts but "
                                           f"{len(num.bin_counts)} bin counts (expected cuts + 1)")
                    feat: Feature = num
                elif f["kind"] == "categorical":
                    feat = CategoricalFeature(
                        name, [str(c) for c in f["categories"]], [int(c) for c in f["counts"]],
                        int(f.get("other_count", 0)), int(f["count"]), int(f.get("missing", 0)),
                        [str(c) for c in f.get("other_names", [])], bool(f.get("exact", True)))
                    if len(feat.categories) != len(feat.counts):
                        raise ProfileError(f"{source}: feature {name!r} has {len(feat.categories)} categories "
                                           f"but {len(feat.counts)} counts")
                else:
                    raise ProfileError(f"{source}: feature {name!r} has unknown kind {f['kind']!r}")
                features[name] = feat
        except ProfileError:
            raise
        except KeyError as exc:
            where = f" in feature {name!r}" if name else ""
            raise ProfileError(f"{source} is corrupt: missing field {exc!s}{where}") from exc
        except (TypeError, ValueError, AttributeError, binascii.Error) as exc:
            where = f" in feature {name!r}" if name else ""
            raise ProfileError(f"{source} is corrupt: bad value{where}: {exc!s}") from exc
        return cls(features, n_bins=int(data.get("n_bins", DEFAULT_BINS)), top_k=int(data.get("top_k", 0)),
                   sample_size=int(data.get("sample_size", 0)), skipped=data.get("skipped") or {})

    @classmethod
    def from_json(cls, text: str, source: str = "profile") -> ReferenceProfile:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ProfileError(f"{source} is not valid JSON (corrupt profile?): {exc}") from exc
        return cls.from_dict(data, source)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ReferenceProfile:
        """Load a saved profile; a missing, corrupt or version-mismatched file raises :class:`ProfileError`."""
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ProfileError(f"cannot read profile {os.fspath(path)!r}: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise ProfileError(f"profile {os.fspath(path)!r} is not text (corrupt profile?)") from exc
        return cls.from_json(text, f"profile {os.fspath(path)!r}")

    # ----------------------------------------------------------------------------------------------- merge
    def merge(self, other: ReferenceProfile) -> ReferenceProfile:
        """The profile of both parts' data (see the module docs for what is exact)."""
        if set(self.features) != set(other.features):
            raise ProfileError(f"cannot merge profiles with different features: "
                               f"{sorted(set(self.features) ^ set(other.features))}")
        merged: dict[str, Feature] = {}
        for name, a in self.features.items():
            b = other.features[name]
            if isinstance(a, NumericalFeature) and isinstance(b, NumericalFeature):
                merged[name] = _merge_numerical(a, b, max(self.sample_size, other.sample_size))
            elif isinstance(a, CategoricalFeature) and isinstance(b, CategoricalFeature):
                merged[name] = _merge_categorical(a, b, max(self.top_k, other.top_k))
            else:
                raise ProfileError(f"cannot merge feature {name!r}: {a.kind} in one profile, {b.kind} in the other")
        return ReferenceProfile(merged, n_bins=self.n_bins, top_k=max(self.top_k, other.top_k),
                                sample_size=max(self.sample_size, other.sample_size),
                                skipped={**self.skipped, **other.skipped})


def _merge_numerical(a: NumericalFeature, b: NumericalFeature, sample_size: int) -> NumericalFeature:
    if a.cuts != b.cuts:
        raise ProfileError(f"cannot merge feature {a.name!r}: the profiles have different bin edges; build the "
                           "second part with edges_from=<first profile> so that bins add up exactly")
    n = a.count + b.count
    if a.count == 0 or b.count == 0:
        src = a if b.count == 0 else b
        mean, std, lo, hi = src.mean, src.std, src.min, src.max
    else:
        delta = b.mean - a.mean
        mean = a.mean + delta * b.count / n
        m2 = a.std**2 * a.count + b.std**2 * b.count + delta * delta * a.count * b.count / n
        std, lo, hi = math.sqrt(m2 / n), min(a.min, b.min), max(a.max, b.max)
    distinct = None
    if a.distinct is not None and b.distinct is not None:
        union = sorted(set(a.distinct) | set(b.distinct))
        distinct = union if len(union) <= DISCRETE_LIMIT else None
    values, keys = _keep_smallest(np.asarray(a.sample + b.sample), np.asarray(a.sample_keys + b.sample_keys),
                                  sample_size)
    return NumericalFeature(a.name, a.cuts, [x + y for x, y in zip(a.bin_counts, b.bin_counts, strict=True)], n,
                            a.missing + b.missing, mean, std, lo, hi, distinct, values.tolist(), keys.tolist())


def _merge_categorical(a: CategoricalFeature, b: CategoricalFeature, top_k: int) -> CategoricalFeature:
    counts: Counter[str] = Counter(dict(zip(a.categories, a.counts, strict=True)))
    counts.update(dict(zip(b.categories, b.counts, strict=True)))
    exact = a.exact and b.exact and not (set(a.categories) & set(b.other_names)) \
        and not (set(b.categories) & set(a.other_names))
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    kept = sorted(top[:top_k])
    other = a.other_count + b.other_count + sum(n for _, n in top[top_k:])
    names = sorted((set(a.other_names) | set(b.other_names) | {c for c, _ in top[top_k:]}) - {c for c, _ in kept})
    return CategoricalFeature(a.name, [c for c, _ in kept], [n for _, n in kept], other, a.count + b.count,
                              a.missing + b.missing, names[:MAX_OTHER_NAMES],
                              exact=exact and len(names) <= MAX_OTHER_NAMES)
