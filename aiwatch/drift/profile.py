"""Reference profiles: what the training data looked like, built once and loaded by every drift path.

A :class:`ReferenceProfile` holds one :class:`~aiwatch.drift.features.NumericalFeature` or
:class:`~aiwatch.drift.features.CategoricalFeature` per column (see :mod:`aiwatch.drift.features`):

* numerical: bin edges from the reference quantiles (``n_bins`` bins, default 10), the reference count in each bin,
  exact summary statistics (count, mean, std, min, max) and a bounded uniform sample of the values (for the exact
  KS / Wasserstein tests);
* categorical: the counts of the ``top_k`` most frequent categories plus one "other" count.

Column types are inferred with Evidently's rules (:func:`~aiwatch.drift.columns.infer_kind`) unless ``kinds=``
overrides them. This class is the front door; the work is done by :mod:`~aiwatch.drift.builder` (building),
:mod:`~aiwatch.drift.persistence` (the JSON format) and :mod:`~aiwatch.drift.merge` (merging).

    >>> import numpy as np
    >>> p = ReferenceProfile.build({"x": np.arange(1000.0), "c": ["a", "b"] * 500})
    >>> p.features["x"].kind, len(p.features["x"].bin_counts), p.features["c"].kind
    ('numerical', 10, 'categorical')
    >>> ReferenceProfile.from_json(p.to_json()).features["c"].categories
    ['a', 'b']

**Merging.** Two profiles built on parts of the same data merge (:meth:`ReferenceProfile.merge`) into the profile of
the whole when both used the same bin edges: build the first part, then pass ``edges_from=first`` when building the
others (or fix ``edges=`` yourself). See :mod:`aiwatch.drift.merge` for what is exact.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from aiwatch.drift import persistence
from aiwatch.drift.builder import ProfileBuilder, build_in_memory, numerical_cuts
from aiwatch.drift.columns import (
    INTEGER_CARDINALITY_LIMIT,
    FloatArray,
    category_key,
    columns_of,
    infer_kind,
    to_float_counting,
)
from aiwatch.drift.errors import ProfileError
from aiwatch.drift.features import (
    DEFAULT_BINS,
    DEFAULT_SAMPLE_SIZE,
    DEFAULT_TOP_K,
    DISCRETE_LIMIT,
    MAX_OTHER_NAMES,
    OTHER,
    UNSEEN,
    CategoricalFeature,
    Feature,
    Kind,
    NumericalFeature,
)
from aiwatch.drift.files import DEFAULT_CHUNK_ROWS, read_chunks
from aiwatch.drift.merge import merge_features
from aiwatch.drift.persistence import FORMAT, VERSION, StoredProfile
from aiwatch.drift.validation import DEFAULT_LIMITS, ProfileLimits, check_feature

# The names this module defined before the drift package was split by job stay importable from here.
__all__ = [
    "DEFAULT_BINS",
    "DEFAULT_SAMPLE_SIZE",
    "DEFAULT_TOP_K",
    "DISCRETE_LIMIT",
    "FORMAT",
    "INTEGER_CARDINALITY_LIMIT",
    "MAX_OTHER_NAMES",
    "OTHER",
    "UNSEEN",
    "VERSION",
    "CategoricalFeature",
    "Feature",
    "FloatArray",
    "Kind",
    "NumericalFeature",
    "ProfileBuilder",
    "ProfileError",
    "ProfileLimits",
    "ReferenceProfile",
    "category_key",
    "columns_of",
    "infer_kind",
    "numerical_cuts",
    "to_float_counting",
]


class ReferenceProfile:
    """The reference distribution of every monitored feature (and model output), loaded by all three drift paths."""

    def __init__(self, features: Mapping[str, Feature], *, n_bins: int = DEFAULT_BINS, top_k: int = DEFAULT_TOP_K,
                 sample_size: int = DEFAULT_SAMPLE_SIZE, skipped: Mapping[str, str] | None = None,
                 limits: ProfileLimits = DEFAULT_LIMITS) -> None:
        """Every feature is checked (:func:`~aiwatch.drift.validation.check_feature`): a feature built by hand
        with unsorted edges or negative counts raises :class:`ProfileError` here, not a wrong score later."""
        if len(features) > limits.max_features:
            raise ProfileError(f"{len(features)} features, more than the limit ({limits.max_features})")
        for name, feature in features.items():
            check_feature(feature, limits)
            if feature.name != name:
                raise ProfileError(f"feature {feature.name!r} is stored under the name {name!r}")
        self.features: dict[str, Feature] = dict(features)
        self.n_bins, self.top_k, self.sample_size = n_bins, top_k, sample_size
        #: Columns left out, with their inferred kind (text, datetime, unknown).
        self.skipped: dict[str, str] = dict(skipped or {})
        self.limits = limits

    def __repr__(self) -> str:
        kinds = Counter(f.kind for f in self.features.values())
        return f"ReferenceProfile({len(self.features)} features: {dict(kinds)})"

    # ---------------------------------------------------------------------------------------------- building
    @classmethod
    def build(cls, data: Any, *, n_bins: int = DEFAULT_BINS, top_k: int = DEFAULT_TOP_K,
              sample_size: int = DEFAULT_SAMPLE_SIZE, kinds: Mapping[str, str] | None = None,
              edges: Mapping[str, Sequence[float]] | None = None, edges_from: ReferenceProfile | None = None,
              seed: int | None = 0, limits: ProfileLimits = DEFAULT_LIMITS) -> ReferenceProfile:
        """Profile in-memory data: a dict of columns (lists or numpy arrays), a list of row dicts, a pandas
        DataFrame, or a 2-D numpy array (columns named ``"0"``, ``"1"``...).

        ``kinds`` overrides inferred types (``{"zip": "categorical"}``); ``edges`` / ``edges_from`` fix the bin
        edges (to build profiles that merge). Bin edges come from the exact quantiles of all the data."""
        all_edges: dict[str, Sequence[float]] = dict(edges or {})
        if edges_from is not None:
            for name, feat in edges_from.features.items():
                if isinstance(feat, NumericalFeature):
                    all_edges.setdefault(name, feat.cuts)
            kinds = {**{n: f.kind for n, f in edges_from.features.items()}, **(kinds or {})}
        return cls.from_builder(build_in_memory(columns_of(data), n_bins=n_bins, top_k=top_k,
                                                sample_size=sample_size, kinds=kinds, edges=all_edges, seed=seed,
                                                limits=limits))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                  **options: Any) -> ReferenceProfile:
        """Profile a CSV or Parquet file chunk by chunk, in bounded memory (a second pass when a column outgrows
        the sample, see :class:`~aiwatch.drift.builder.ProfileBuilder`). ``options`` are ProfileBuilder's."""
        builder = ProfileBuilder(**options)
        builder.add_chunks(read_chunks(path, chunk_rows))
        if builder.needs_second_pass:
            for chunk in read_chunks(path, chunk_rows):
                builder.count(chunk)
        return cls.from_builder(builder)

    @classmethod
    def from_builder(cls, builder: ProfileBuilder) -> ReferenceProfile:
        """The profile of everything a :class:`~aiwatch.drift.builder.ProfileBuilder` has read."""
        return cls(builder.features(), n_bins=builder.n_bins, top_k=builder.top_k, sample_size=builder.sample_size,
                   skipped=builder.skipped, limits=builder.limits)

    # ------------------------------------------------------------------------------------------- persistence
    def _stored(self) -> StoredProfile:
        return StoredProfile(self.features, self.n_bins, self.top_k, self.sample_size, self.skipped)

    @classmethod
    def _from_stored(cls, stored: StoredProfile, limits: ProfileLimits) -> ReferenceProfile:
        return cls(stored.features, n_bins=stored.n_bins, top_k=stored.top_k, sample_size=stored.sample_size,
                   skipped=stored.skipped, limits=limits)

    def to_dict(self) -> dict[str, Any]:
        return persistence.profile_to_dict(self._stored())

    def to_json(self) -> str:
        return persistence.profile_to_json(self._stored())

    def save(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def from_dict(cls, data: Any, source: str = "profile", limits: ProfileLimits = DEFAULT_LIMITS) -> ReferenceProfile:
        return cls._from_stored(persistence.profile_from_dict(data, source, limits), limits)

    @classmethod
    def from_json(cls, text: str, source: str = "profile", limits: ProfileLimits = DEFAULT_LIMITS) -> ReferenceProfile:
        return cls._from_stored(persistence.profile_from_json(text, source, limits), limits)

    @classmethod
    def load(cls, path: str | os.PathLike[str], limits: ProfileLimits = DEFAULT_LIMITS) -> ReferenceProfile:
        """Load a saved profile; a missing, corrupt, oversized or version-mismatched file, or one with an
        inconsistent feature, raises :class:`ProfileError` (bounds: :class:`~aiwatch.drift.validation.ProfileLimits`).
        """
        return cls._from_stored(persistence.read_profile(path, limits), limits)

    # ------------------------------------------------------------------------------------------------- merge
    def merge(self, other: ReferenceProfile) -> ReferenceProfile:
        """The profile of both parts' data (see :mod:`aiwatch.drift.merge` for what is exact)."""
        top_k, sample_size = max(self.top_k, other.top_k), max(self.sample_size, other.sample_size)
        merged = merge_features(self.features, other.features, top_k=top_k, sample_size=sample_size)
        return ReferenceProfile(merged, n_bins=self.n_bins, top_k=top_k, sample_size=sample_size,
                                skipped={**self.skipped, **other.skipped}, limits=self.limits)
