"""Batch drift on files: CSV or Parquet read chunk by chunk, so memory stays bounded by the chunk size.

Reading files needs pandas (CSV) or pyarrow (Parquet): ``pip install "aiwatch[data]"``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from aiwatch._optional import require
from aiwatch.drift.evaluate import (
    CurrentFeature,
    DriftReport,
    Options,
    categorical_current,
    compare_features,
    numerical_current,
)
from aiwatch.drift.profile import (
    CategoricalFeature,
    NumericalFeature,
    ProfileBuilder,
    ProfileError,
    ReferenceProfile,
    _keep_smallest,
)

DEFAULT_CHUNK_ROWS = 100_000


def read_chunks(path: str | os.PathLike[str], chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[dict[str, Any]]:
    """Column dicts of at most ``chunk_rows`` rows from a ``.csv`` or ``.parquet`` file."""
    p = Path(path)
    if not p.exists():
        raise ProfileError(f"data file {os.fspath(path)!r} does not exist")
    suffix = p.suffix.lower()
    if suffix in (".parquet", ".pq"):
        pq = require("pyarrow.parquet", "data")
        for batch in pq.ParquetFile(p).iter_batches(batch_size=chunk_rows):
            yield {name: col.to_numpy(zero_copy_only=False) for name, col in zip(batch.schema.names, batch.columns,
                                                                                 strict=True)}
    elif suffix in (".csv", ".txt", ".tsv"):
        pd = require("pandas", "data")
        sep = "\t" if suffix == ".tsv" else ","
        for frame in pd.read_csv(p, chunksize=chunk_rows, sep=sep):
            yield {str(c): frame[c].to_numpy() for c in frame.columns}
    else:
        raise ProfileError(f"cannot read {os.fspath(path)!r}: expected a .csv or .parquet file")


def profile_file(path: str | os.PathLike[str], *, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                 **options: Any) -> ReferenceProfile:
    """Build a profile from a CSV/Parquet file in bounded memory (a second pass when a column outgrows the
    sample, see :class:`~aiwatch.drift.profile.ProfileBuilder`)."""
    builder = ProfileBuilder(**options)
    for chunk in read_chunks(path, chunk_rows):
        builder.add(chunk)
    if builder.needs_second_pass:
        for chunk in read_chunks(path, chunk_rows):
            builder.count(chunk)
    return builder.finish()


def load_reference(source: str | os.PathLike[str], **options: Any) -> ReferenceProfile:
    """A saved profile (``.json``) or a data file profiled on the fly."""
    if Path(source).suffix.lower() == ".json":
        return ReferenceProfile.load(source)
    return profile_file(source, **options)


def compare_file(profile: ReferenceProfile, path: str | os.PathLike[str], options: Options | None = None,
                 chunk_rows: int = DEFAULT_CHUNK_ROWS) -> DriftReport:
    """Drift of a CSV/Parquet file against ``profile``, chunk by chunk: bin and category counts are exact over
    every row; KS/Wasserstein use a uniform sample of at most ``options.max_exact`` values per feature."""
    options = options or Options()
    rng = np.random.default_rng(options.seed)
    acc: dict[str, CurrentFeature] = {}
    keys: dict[str, np.ndarray[Any, Any]] = {}
    columns_seen: set[str] = set()
    for chunk in read_chunks(path, chunk_rows):
        columns_seen.update(chunk)
        for name, feat in profile.features.items():
            if name not in chunk:
                continue
            if isinstance(feat, NumericalFeature):
                part = numerical_current(feat, chunk[name], max_exact=len(chunk[name]) + 1)
            elif isinstance(feat, CategoricalFeature):
                part = categorical_current(feat, chunk[name])
            prev = acc.get(name)
            if part.values is not None:
                part_keys = rng.random(part.values.size)
                if prev is not None and prev.values is not None:
                    part.values, part_keys = _keep_smallest(np.concatenate([prev.values, part.values]),
                                                            np.concatenate([keys[name], part_keys]), options.max_exact)
                else:
                    part.values, part_keys = _keep_smallest(part.values, part_keys, options.max_exact)
                keys[name] = part_keys
            if prev is not None:
                part.count += prev.count
                part.bin_counts = part.bin_counts + prev.bin_counts
                part.missing += prev.missing
                part.invalid += prev.invalid
                part.new_distinct = max(part.new_distinct, prev.new_distinct)
            acc[name] = part
    report = compare_features(profile, acc, options)
    report.unknown_features = sorted(columns_seen - set(profile.features))
    return report
