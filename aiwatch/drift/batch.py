"""Batch drift on files: CSV or Parquet read chunk by chunk, so memory stays bounded by the chunk size.

Reading files needs pandas (CSV) or pyarrow (Parquet): ``pip install "aiwatch[data]"``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from aiwatch.drift.current import ChunkedCurrent, CurrentFeature
from aiwatch.drift.evaluate import DriftReport, Options, compare_features
from aiwatch.drift.files import DEFAULT_CHUNK_ROWS, read_chunks
from aiwatch.drift.profile import ReferenceProfile

__all__ = ["DEFAULT_CHUNK_ROWS", "compare_file", "load_reference", "profile_file", "read_chunks"]


def profile_file(path: str | os.PathLike[str], *, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                 **options: Any) -> ReferenceProfile:
    """Build a profile from a CSV/Parquet file in bounded memory (:meth:`ReferenceProfile.from_file`)."""
    return ReferenceProfile.from_file(path, chunk_rows=chunk_rows, **options)


def load_reference(source: str | os.PathLike[str], **options: Any) -> ReferenceProfile:
    """A saved profile (``.json``) or a data file profiled on the fly."""
    if Path(source).suffix.lower() == ".json":
        return ReferenceProfile.load(source)
    return profile_file(source, **options)


def compare_file(profile: ReferenceProfile, path: str | os.PathLike[str], options: Options | None = None,
                 chunk_rows: int = DEFAULT_CHUNK_ROWS) -> DriftReport:
    """Drift of a CSV/Parquet file against ``profile``, chunk by chunk: bin and category counts are exact over
    every row; KS/Wasserstein use a uniform sample of at most ``options.max_exact`` values per feature, or every
    value with ``options.exact`` (then the numerical columns' values are held in memory)."""
    options = options or Options()
    options.validate(profile)
    rng = np.random.default_rng(options.seed)
    acc = {name: ChunkedCurrent(feat, options.sample_limit(), rng) for name, feat in profile.features.items()}
    columns_seen: set[str] = set()
    for chunk in read_chunks(path, chunk_rows):
        columns_seen.update(chunk)
        for name in profile.features:
            if name in chunk:
                acc[name].add(chunk[name])
    current: dict[str, CurrentFeature] = {}
    for name, chunked in acc.items():
        summary = chunked.result()
        if summary is not None:
            current[name] = summary
    report = compare_features(profile, current, options)
    report.unknown_features = sorted(columns_seen - set(profile.features))
    return report
