"""What a valid feature is, and how big a profile may be: the checks every profile passes, loaded or built.

A profile decides what every drift path computes, so nothing in it is trusted: bin edges must be finite and
strictly increasing (unsorted edges put values in the wrong bins: PSI 6.8 instead of 0.008), counts non-negative
integers that add up to their totals (a negative count made PSI NaN, reported as "not drifted"), summary
statistics finite, and sizes within :class:`ProfileLimits` (a 1e6-bin profile took 15 s and 1.7 GB to load and
made a 226 MB scrape). :func:`check_feature` raises :class:`~aiwatch.drift.errors.ProfileError` naming the
feature and the field.

    >>> from aiwatch.drift.features import NumericalFeature
    >>> check_feature(NumericalFeature("x", [2.0, 1.0], [1, 1, 1], 3, sample=[0.0], sample_keys=[0.5]))
    Traceback (most recent call last):
    ...
    aiwatch.drift.errors.ProfileError: feature 'x': cuts must be strictly increasing (cuts[1] = 1.0 <= 2.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np

from aiwatch.drift.columns import FloatArray
from aiwatch.drift.errors import ProfileError
from aiwatch.drift.features import (
    BUCKET_NAMES,
    DISCRETE_LIMIT,
    MAX_OTHER_NAMES,
    CategoricalFeature,
    Feature,
    NumericalFeature,
)

#: Counts above 2**53 lose exactness as floats (the tests compute shares in float64).
MAX_COUNT = 2**53


@dataclass(frozen=True)
class ProfileLimits:
    """Bounds on a reference profile; pass ``limits=ProfileLimits(...)`` to load, build or construct a bigger one.

    The defaults hold a profile of a few hundred numerical features at the default sample size (about 0.4 MB of
    JSON each) and refuse one that would cost more to load than it is worth."""

    #: Bytes of a profile's JSON text (read no further).
    max_bytes: int = 128 * 2**20
    #: Nesting depth of the JSON (a profile needs 4).
    max_depth: int = 16
    #: JSON values in the document (counted, before parsing, as its commas and containers).
    max_items: int = 5_000_000
    #: Features in one profile.
    max_features: int = 10_000
    #: Bins of one numerical feature (each is a series of the fleet sketch).
    max_bins: int = 1_000
    #: Top-K categories of one categorical feature (each is a series of the fleet sketch).
    max_categories: int = 1_000
    #: Reference values kept in one numerical feature's sample.
    max_sample: int = 1_000_000

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ProfileLimits.{name} must be a positive integer, got {value!r}")
        if self.max_bins < DISCRETE_LIMIT + 2:
            raise ValueError(f"ProfileLimits.max_bins must be at least {DISCRETE_LIMIT + 2} (a discrete column "
                             f"gets one bin per value, up to {DISCRETE_LIMIT}, plus two)")


DEFAULT_LIMITS = ProfileLimits()


def check_feature(f: Feature, limits: ProfileLimits = DEFAULT_LIMITS) -> None:
    """Raise :class:`ProfileError` when ``f`` is inconsistent or over ``limits``."""
    if isinstance(f, NumericalFeature):
        check_numerical(f, limits)
    elif isinstance(f, CategoricalFeature):
        check_categorical(f, limits)
    else:
        raise ProfileError(f"not a feature: {type(f).__name__}")


def check_numerical(f: NumericalFeature, limits: ProfileLimits = DEFAULT_LIMITS) -> None:
    where = f"feature {f.name!r}"
    check_cuts(f.cuts, limits, where)
    if len(f.bin_counts) != len(f.cuts) + 1:
        raise ProfileError(f"{where} has {len(f.cuts)} cuts but {len(f.bin_counts)} bin counts (expected cuts + 1)")
    _counts(f.bin_counts, f"{where}: bin_counts")
    _count(f.count, f"{where}: count")
    _count(f.missing, f"{where}: missing")
    _count(f.invalid, f"{where}: invalid")
    if sum(f.bin_counts) != f.count:
        raise ProfileError(f"{where}: bin_counts add up to {sum(f.bin_counts)}, not to count = {f.count}")
    if f.count:
        for name in ("mean", "std", "min", "max"):
            _finite(getattr(f, name), f"{where}: {name}")
        if f.std < 0 or f.min > f.max:
            raise ProfileError(f"{where}: inconsistent statistics (std {f.std}, min {f.min}, max {f.max})")
    if len(f.sample) > min(f.count, limits.max_sample):
        raise ProfileError(f"{where}: the sample holds {len(f.sample)} values, more than count ({f.count}) or "
                           f"the limit ({limits.max_sample})")
    if f.count and len(f.sample) == 0:
        raise ProfileError(f"{where}: the sample is empty but count is {f.count}")
    _finite_array(f.sample, f"{where}: sample")
    if len(f.sample_keys) != len(f.sample):
        raise ProfileError(f"{where}: {len(f.sample_keys)} sample_keys for {len(f.sample)} sample values")
    keys = _finite_array(f.sample_keys, f"{where}: sample_keys")
    if keys.size and (keys.min() < 0 or keys.max() > 1):
        raise ProfileError(f"{where}: sample_keys must lie in [0, 1]")
    if f.distinct is not None:
        if len(f.distinct) > DISCRETE_LIMIT:
            raise ProfileError(f"{where}: {len(f.distinct)} distinct values, at most {DISCRETE_LIMIT} are kept")
        _increasing(f.distinct, f"{where}: distinct")


def check_categorical(f: CategoricalFeature, limits: ProfileLimits = DEFAULT_LIMITS) -> None:
    where = f"feature {f.name!r}"
    if len(f.categories) != len(f.counts):
        raise ProfileError(f"{where} has {len(f.categories)} categories but {len(f.counts)} counts")
    if len(f.categories) > limits.max_categories:
        raise ProfileError(f"{where} has {len(f.categories)} categories, more than the limit "
                           f"({limits.max_categories})")
    if not all(isinstance(c, str) for c in [*f.categories, *f.other_names]):
        raise ProfileError(f"{where}: category names must be strings")
    if len(set(f.categories)) != len(f.categories):
        raise ProfileError(f"{where}: a category is listed twice")
    named_as_bucket = sorted(BUCKET_NAMES.intersection(f.categories))
    if named_as_bucket:
        raise ProfileError(f"{where}: category {named_as_bucket[0]!r} has a bucket's name; a profile built since "
                           "aiwatch counts such a category in that bucket, so build the profile again")
    if len(f.other_names) > MAX_OTHER_NAMES or len(set(f.other_names)) != len(f.other_names) \
            or set(f.other_names) & set(f.categories):
        raise ProfileError(f"{where}: other_names must be at most {MAX_OTHER_NAMES} distinct names outside the "
                           "top-K categories")
    _counts(f.counts, f"{where}: counts")
    for name in ("other_count", "count", "missing"):
        _count(getattr(f, name), f"{where}: {name}")
    if sum(f.counts) + f.other_count != f.count:
        raise ProfileError(f"{where}: counts ({sum(f.counts)}) plus other_count ({f.other_count}) do not add up to "
                           f"count = {f.count}")
    if not isinstance(f.exact, bool):
        raise ProfileError(f"{where}: exact must be true or false")


def check_cuts(cuts: Sequence[float], limits: ProfileLimits = DEFAULT_LIMITS, where: str = "edges") -> None:
    """Bin edges: finite, strictly increasing, at most ``limits.max_bins - 1`` of them."""
    if len(cuts) + 1 > limits.max_bins:
        raise ProfileError(f"{where} has {len(cuts) + 1} bins, more than the limit ({limits.max_bins})")
    _increasing(cuts, f"{where}: cuts")


def _increasing(values: Sequence[float], what: str) -> None:
    arr = _finite_array(values, what)
    bad = np.flatnonzero(arr[1:] <= arr[:-1])  # not np.diff: -1e308 to 1e308 overflows it
    if bad.size:
        i = int(bad[0]) + 1
        raise ProfileError(f"{what} must be strictly increasing ({what.rpartition(': ')[2]}[{i}] = "
                           f"{float(arr[i])!r} <= {float(arr[i - 1])!r})")


#: Types that are numbers without a check per value (a sample holds 20 000 of them; ``isinstance(v, Real)``
#: costs an ABC lookup each).
_PLAIN_NUMBERS = frozenset({float, int})


def _finite_array(values: Sequence[float] | FloatArray, what: str) -> FloatArray:
    if isinstance(values, np.ndarray) and values.dtype == np.float64:  # numbers by their type (a built sample)
        arr: FloatArray = values
    else:
        if not set(map(type, values)) <= _PLAIN_NUMBERS and not all(
                isinstance(v, Real) and not isinstance(v, bool) for v in values):
            raise ProfileError(f"{what} must be numbers")
        try:
            arr = np.asarray(values, dtype=np.float64)
        except (OverflowError, ValueError, TypeError):
            raise ProfileError(f"{what} must be finite numbers") from None
    if arr.ndim != 1:
        raise ProfileError(f"{what} must be a flat list of numbers")
    if not np.isfinite(arr).all():
        raise ProfileError(f"{what} must be finite numbers (found {float(arr[~np.isfinite(arr)][0])!r})")
    return arr


def _finite(value: object, what: str) -> None:
    if not isinstance(value, Real) or isinstance(value, bool) or not math.isfinite(value):
        raise ProfileError(f"{what} must be a finite number, got {value!r}")


def _count(value: object, what: str) -> None:
    if not isinstance(value, Integral) or isinstance(value, bool) or not 0 <= int(value) <= MAX_COUNT:
        raise ProfileError(f"{what} must be a whole number between 0 and 2**53, got {value!r}")


def _counts(values: Sequence[int], what: str) -> None:
    for i, v in enumerate(values):
        _count(v, f"{what}[{i}]")
