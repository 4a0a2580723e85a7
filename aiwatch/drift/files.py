"""Columns from files: CSV or Parquet read chunk by chunk, so memory stays bounded by the chunk size.

Reading files needs pandas (CSV) or pyarrow (Parquet): ``pip install "aiwatch[data]"``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiwatch._optional import require
from aiwatch.drift.errors import ProfileError

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
