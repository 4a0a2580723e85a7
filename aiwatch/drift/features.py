"""The feature model: what a reference profile knows about one column.

* :class:`NumericalFeature`: bin edges from the reference quantiles, the reference count in each bin, exact
  summary statistics (count, mean, std, min, max) and a bounded uniform sample of the values (for the exact
  KS / Wasserstein tests);
* :class:`CategoricalFeature`: the counts of the ``top_k`` most frequent categories plus one "other" count.

Live values are counted against a feature with :mod:`aiwatch.drift.counting`: numerical values into the bins,
categorical values into buckets (a top-K category, :data:`OTHER` for a reference category outside the top-K,
:data:`UNSEEN` for a category the reference never had).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Literal

import numpy as np
import numpy.typing as npt

from aiwatch.drift.columns import FloatArray
from aiwatch.drift.counting import CategoryBuckets, bin_index, new_values

DEFAULT_BINS = 10
DEFAULT_TOP_K = 100
DEFAULT_SAMPLE_SIZE = 20_000
#: Reference columns with at most this many distinct values get one bin per value (see
#: :func:`aiwatch.drift.builder.numerical_cuts`).
DISCRETE_LIMIT = 20
#: At most this many reference categories outside the top-K are remembered by name (to tell "other" from "unseen").
MAX_OTHER_NAMES = 1000
OTHER = "__other__"
UNSEEN = "__unseen__"
#: The longest category name a ``bin`` label carries whole (see :func:`bucket_label`).
MAX_LABEL_CHARS = 200
#: the bucket names a category cannot take: a category named so is counted in :data:`OTHER` (see :func:`split_top_k`)
BUCKET_NAMES = frozenset((OTHER, UNSEEN))

Kind = Literal["numerical", "categorical"]
#: A sequence of floats: a float64 array or a list (``np.asarray(values, dtype=np.float64)`` reads both).
Floats = list[float] | FloatArray
_SAMPLE_FIELDS = ("sample", "sample_keys")


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
    #: A bounded uniform sample of the values, and each one's key in [0, 1) (see :mod:`aiwatch.drift.sampling`):
    #: float64 arrays where aiwatch built or merged the profile (20 000 Python floats per column cost more to make
    #: and check than the rest of a 1M-value column's build), lists where they were read from JSON or given.
    sample: Floats = field(default_factory=list)
    sample_keys: Floats = field(default_factory=list)
    kind: Kind = "numerical"
    #: Values that are not numbers (text in a column given the kind numerical, or read as numbers with a few text
    #: fields), left out and counted here, not in ``missing``. 0 in a profile written before this count existed.
    invalid: int = 0

    def __eq__(self, other: object) -> bool:
        """Field by field, as a dataclass compares, with the sample and its keys compared by value (array or
        list)."""
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, NumericalFeature)
        return self._scalars() == other._scalars() and all(
            np.array_equal(np.asarray(getattr(self, n), dtype=np.float64),
                           np.asarray(getattr(other, n), dtype=np.float64)) for n in _SAMPLE_FIELDS)

    def _scalars(self) -> tuple[object, ...]:
        return tuple(getattr(self, f.name) for f in fields(self) if f.name not in _SAMPLE_FIELDS)

    @property
    def bin_labels(self) -> list[str]:
        """The ``bin`` label values of the fleet sketch: the bin index, as a string."""
        return [str(i) for i in range(len(self.bin_counts))]

    def reference_shares(self) -> FloatArray:
        return _shares(self.bin_counts)

    @property
    def reference_id(self) -> str:
        """The ``reference`` label of the fleet sketch: what the bins mean (their edges) and hold (the shares)."""
        return _digest("numerical", [float(c) for c in self.cuts], self.reference_shares().tolist())

    def cut_array(self) -> FloatArray:
        return np.asarray(self.cuts, dtype=np.float64)

    def bin_index(self, values: FloatArray) -> npt.NDArray[np.intp]:
        """Bin of each (finite) value."""
        return bin_index(self.cut_array(), values)

    def new_values(self, finite: FloatArray) -> FloatArray:
        """Distinct values the reference did not have (see :func:`aiwatch.drift.counting.new_values`)."""
        return new_values(self.distinct, finite)


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
        return [*map(bucket_label, self.categories), OTHER, UNSEEN]

    def bucket_counts(self) -> list[int]:
        return [*self.counts, self.other_count, 0]

    def reference_shares(self) -> FloatArray:
        return _shares(self.bucket_counts())

    @property
    def reference_id(self) -> str:
        """The ``reference`` label of the fleet sketch: which bucket each category goes to (see :meth:`lookup`,
        :attr:`unseen_bucket`) and the buckets' shares."""
        return _digest("categorical", self.categories, sorted(self.other_names), self.unseen_bucket,
                       self.reference_shares().tolist())

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

    def buckets(self) -> CategoryBuckets:
        """The bucket of every live value (see :class:`aiwatch.drift.counting.CategoryBuckets`)."""
        return CategoryBuckets(self.lookup(), self.unseen_bucket, len(self.categories) + 2)  # + OTHER, UNSEEN

    def has_new_values(self, bucket_counts: npt.NDArray[np.int64]) -> bool:
        """Whether live values counted into ``bucket_counts`` include a category the reference never had."""
        return bool(bucket_counts[-1])  # the UNSEEN bucket: only ever used when the reference knows every name


def bucket_label(category: str) -> str:
    """The ``bin`` label of a top-K category: its name, or for a name longer than :data:`MAX_LABEL_CHARS` (a
    templated prompt, a JSON blob: every one would be a label of its own in every scrape) its first
    :data:`MAX_LABEL_CHARS` characters, ``...`` and 16 hex digits of its hash. Longer than any name kept whole, so
    no cut label is another category's name, and two long names that share their start stay apart.

    >>> label = bucket_label("x" * 5000)
    >>> len(label), label[-19:-16], label == bucket_label("x" * 4999 + "y")
    (219, '...', False)
    """
    if len(category) <= MAX_LABEL_CHARS:
        return category
    digest = hashlib.blake2b(category.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
    return f"{category[:MAX_LABEL_CHARS]}...{digest}"


def split_top_k(counts: Iterable[tuple[str, int]], k: int) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """The ``k`` most frequent categories (ties by name) sorted by name, and the others, most frequent first.

    A category named like one of the buckets (:data:`BUCKET_NAMES`: data whose pipeline already folded rare values
    into an ``__other__`` of its own) is never kept: its exported ``bin`` label would be one series with the
    bucket's, whose counts and reference ratio would then mix. It is counted in :data:`OTHER`, which it means.

    >>> split_top_k([("a", 5), ("__other__", 9), ("b", 7), ("c", 1)], 2)
    ([('a', 5), ('b', 7)], [('__other__', 9), ('c', 1)])
    """
    ranked = sorted(counts, key=lambda kv: (-kv[1], kv[0]))
    kept = [kv for kv in ranked if kv[0] not in BUCKET_NAMES][:k]
    names = {name for name, _ in kept}
    return sorted(kept), [kv for kv in ranked if kv[0] not in names]


Feature = NumericalFeature | CategoricalFeature


REFERENCE_ID_HEX = 12
"""Hex digits of a feature's :attr:`~NumericalFeature.reference_id`: a collision of two references of one feature
live at once (a rollout) is a 1 in 2**48 chance."""


def _digest(*parts: object) -> str:
    """A short content hash of ``parts`` (JSON: floats by their shortest repr, so a profile reloaded from its JSON
    has the hash of the one it was saved from)."""
    text = json.dumps(parts, ensure_ascii=False, separators=(",", ":"))
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=REFERENCE_ID_HEX // 2).hexdigest()


def _shares(counts: list[int]) -> FloatArray:
    arr = np.asarray(counts, dtype=np.float64)
    total = arr.sum()
    return arr / total if total > 0 else arr
