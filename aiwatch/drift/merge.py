"""Merging the features of two profiles built on parts of the same data into the features of the whole.

Both parts must use the same bin edges (build the first part, then pass ``edges_from=first`` when building the
others, or fix ``edges=``). Bin counts, categorical counts, missing counts, count/mean/std/min/max merge exactly;
the samples merge exactly as a uniform sample of the union (:func:`aiwatch.drift.sampling.keep_smallest`).
Categorical counts are exact as long as each part saw at most ``top_k`` distinct categories; otherwise a category
folded into one part's "other" count makes the merged count a lower bound and the merged feature is marked
``exact=False``. Features with different edges refuse to merge (re-binning would not be exact).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping

import numpy as np

from aiwatch.drift.columns import FloatArray
from aiwatch.drift.errors import ProfileError
from aiwatch.drift.features import (
    DISCRETE_LIMIT,
    MAX_OTHER_NAMES,
    CategoricalFeature,
    Feature,
    Floats,
    NumericalFeature,
    split_top_k,
)
from aiwatch.drift.sampling import keep_smallest


def merge_features(a: Mapping[str, Feature], b: Mapping[str, Feature], *, top_k: int | None,
                   sample_size: int) -> dict[str, Feature]:
    """Feature-by-feature merge; both sides must have the same features, of the same kinds (``top_k=None``: keep
    every category, as the parts of a profile built on a cluster do until the last merge)."""
    if set(a) != set(b):
        raise ProfileError(f"cannot merge profiles with different features: {sorted(set(a) ^ set(b))}")
    merged: dict[str, Feature] = {}
    for name, fa in a.items():
        fb = b[name]
        if isinstance(fa, NumericalFeature) and isinstance(fb, NumericalFeature):
            merged[name] = merge_numerical(fa, fb, sample_size)
        elif isinstance(fa, CategoricalFeature) and isinstance(fb, CategoricalFeature):
            merged[name] = merge_categorical(fa, fb, top_k)
        else:
            raise ProfileError(f"cannot merge feature {name!r}: {fa.kind} in one profile, {fb.kind} in the other")
    return merged


def merge_numerical(a: NumericalFeature, b: NumericalFeature, sample_size: int) -> NumericalFeature:
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
    values, keys = keep_smallest(_joined(a.sample, b.sample), _joined(a.sample_keys, b.sample_keys), sample_size)
    return NumericalFeature(a.name, a.cuts, [x + y for x, y in zip(a.bin_counts, b.bin_counts, strict=True)], n,
                            a.missing + b.missing, mean, std, lo, hi, distinct, values, keys,
                            invalid=a.invalid + b.invalid)


def _joined(a: Floats, b: Floats) -> FloatArray:
    """Two samples (arrays or lists) end to end, as one float64 array."""
    return np.concatenate([np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)])


def merge_categorical(a: CategoricalFeature, b: CategoricalFeature, top_k: int | None) -> CategoricalFeature:
    counts: Counter[str] = Counter(dict(zip(a.categories, a.counts, strict=True)))
    counts.update(dict(zip(b.categories, b.counts, strict=True)))
    exact = a.exact and b.exact and not (set(a.categories) & set(b.other_names)) \
        and not (set(b.categories) & set(a.other_names))
    # top_k None: parts of one build, every category kept, as the builder's partial features keep them
    kept, others = (sorted(counts.items()), []) if top_k is None else split_top_k(counts.items(), top_k)
    other = a.other_count + b.other_count + sum(n for _, n in others)
    names = sorted((set(a.other_names) | set(b.other_names) | {c for c, _ in others}) - {c for c, _ in kept})
    return CategoricalFeature(a.name, [c for c, _ in kept], [n for _, n in kept], other, a.count + b.count,
                              a.missing + b.missing, names[:MAX_OTHER_NAMES],
                              exact=exact and len(names) <= MAX_OTHER_NAMES)
