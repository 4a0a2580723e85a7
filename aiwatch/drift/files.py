"""Columns from files: CSV or Parquet read chunk by chunk, so memory stays bounded by the chunk size.

Reading files needs pandas (CSV) or pyarrow (Parquet): ``pip install "aiwatch[data]"``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from aiwatch._optional import require
from aiwatch.drift.columns import arrow_values, check_column_names
from aiwatch.drift.errors import ProfileError

DEFAULT_CHUNK_ROWS = 100_000


def read_chunks(path: str | os.PathLike[str], chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[dict[str, Any]]:
    """Column dicts of at most ``chunk_rows`` rows from a ``.csv`` or ``.parquet`` file. A file that pandas or
    pyarrow cannot read (corrupt, not CSV / Parquet, not text) raises :class:`ProfileError` naming it."""
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ProfileError(f"chunk_rows must be a whole number >= 1, got {chunk_rows!r}")
    p = Path(path)
    if not p.exists():
        raise ProfileError(f"data file {os.fspath(path)!r} does not exist")
    suffix = p.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        yield from _reading(p, lambda: _parquet_chunks(p, chunk_rows))
    elif suffix in TEXT_SUFFIXES:
        pd = require("pandas", "data")
        sep = text_separator(p)
        yield from _reading(p, lambda: ({str(c): csv_column(frame[c]) for c in frame.columns}
                                        for frame in pd.read_csv(p, chunksize=chunk_rows, sep=sep)))
    else:
        raise unreadable_suffix(path)


def column_chunks(path: str | os.PathLike[str], name: str, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[Any]:
    """The values of one column of a ``.csv`` or ``.parquet`` file, ``chunk_rows`` at a time, read alone (the other
    columns are not decoded); nothing when the file has no such column, or is none :func:`read_chunks` reads."""
    p = Path(path)
    suffix = p.suffix.lower()
    if not p.exists() or suffix not in (*PARQUET_SUFFIXES, *TEXT_SUFFIXES):
        return iter(())

    def parquet() -> Iterator[dict[str, Any]]:
        file = require("pyarrow.parquet", "data").ParquetFile(p)
        if name in file.schema_arrow.names:
            for batch in file.iter_batches(batch_size=chunk_rows, columns=[name]):
                yield {name: arrow_values(batch.column(0))}

    def text() -> Iterator[dict[str, Any]]:
        pd = require("pandas", "data")
        sep = text_separator(p)
        if name in pd.read_csv(p, nrows=0, sep=sep).columns:
            for frame in pd.read_csv(p, usecols=[name], chunksize=chunk_rows, sep=sep):
                yield {name: csv_column(frame[name])}

    return (chunk[name] for chunk in _reading(p, parquet if suffix in PARQUET_SUFFIXES else text))


def _parquet_chunks(path: Path, chunk_rows: int) -> Iterator[dict[str, Any]]:
    parquet = require("pyarrow.parquet", "data").ParquetFile(path)
    # a file may hold two columns of one name (pyarrow writes them): the batch's dict kept the last one's values
    # under it, silently (a dataset of such files is refused by pyarrow, a DataFrame of them by columns_of)
    try:
        check_column_names(parquet.schema_arrow.names)
    except ProfileError as exc:
        raise ProfileError(f"cannot read data file {os.fspath(path)!r}: {exc}") from None
    index = pandas_index_columns(parquet.schema_arrow)
    for batch in parquet.iter_batches(batch_size=chunk_rows):
        yield {name: arrow_values(col) for name, col in zip(batch.schema.names, batch.columns, strict=True)
               if name not in index}


def pandas_index_columns(schema: Any) -> set[str]:
    """The columns of a Parquet schema (pyarrow's) that hold a pandas DataFrame's index: those its ``pandas``
    metadata lists in ``index_columns`` (``__index_level_0__`` for an unnamed index, its name for a named one;
    ``to_parquet`` stores an index that is not a RangeIndex so, a filtered frame's for one). Dask's
    ``read_parquet`` (``index=None``) makes them the frame's index, not columns; the local readers leave them out
    too, so that both paths see the same columns (they were a drift feature, or an unknown column, on one machine
    only). A RangeIndex is stored as metadata, not a column (a dict in ``index_columns``)."""
    metadata = (schema.metadata or {}).get(b"pandas")
    if not metadata:
        return set()
    try:
        index = json.loads(metadata).get("index_columns", [])
    # not JSON (or nested past the recursion limit), or not an object: no index pandas could read either
    except (ValueError, AttributeError, RecursionError):
        return set()
    return {name for name in index if isinstance(name, str)} & set(schema.names) if isinstance(index, list) else set()


#: The suffixes of the text files :func:`read_chunks` reads with pandas' CSV reader (tab-separated for ``.tsv``).
TEXT_SUFFIXES = (".csv", ".txt", ".tsv")
#: The suffixes of the Parquet files read as one file (a directory or a glob is a dataset, whatever its names).
PARQUET_SUFFIXES = (".parquet", ".pq")


def unreadable_suffix(path: str | os.PathLike[str]) -> ProfileError:
    """The error for a data file whose suffix is none of :data:`TEXT_SUFFIXES` and :data:`PARQUET_SUFFIXES`: one
    message for every reader (one machine's, and ``--dask``'s :func:`~aiwatch.drift.on_dask.read_frame`, which sent
    any such file to Dask's CSV reader: a ``.csv.gz`` or a file without a suffix was read there and refused here)."""
    return ProfileError(f"cannot read {os.fspath(path)!r}: expected a .csv, .txt or .tsv file (uncompressed text) "
                        "or a .parquet or .pq file")


def text_separator(path: str | os.PathLike[str]) -> str:
    """The field separator of a text file of :data:`TEXT_SUFFIXES`: a tab for ``.tsv``, else a comma. One rule for
    every reader (one machine's and ``--dask``'s, which read a ``.tsv`` file with commas: one column)."""
    return "\t" if Path(path).suffix.lower() == ".tsv" else ","

#: How many of a text column's first values :func:`csv_column` tries as numbers before it leaves the column as text.
NUMBER_PROBE = 100


def csv_column(column: Any) -> Any:
    """A column of a CSV chunk (a pandas Series) as numpy, each field that reads as a number a number.

    pandas types a CSV column per chunk: one field that is not a number ("unknown", "-") makes that chunk's whole
    column text, and each number in it a string, which a numerical feature would count as wrong-typed (a profile
    lost the whole chunk). Here such a column keeps its numbers: :func:`numbers_in_text`."""
    values = column.to_numpy()
    return values if values.dtype != object else numbers_in_text(values)


def numbers_in_text(values: Any, *, exact: bool = False, probe: bool = True) -> Any:
    """A numpy object array of text (and None) with each value that reads as a number made that number, typed as
    pandas types a CSV column of them alone (ints when every one is written as an int, else floats); the other
    values stay as they are. An array none of whose first :data:`NUMBER_PROBE` present values is a number is text
    and is returned as it is (parsing costs about 1 µs per value that is not a number).

    pandas parses a decimal to the nearest double or one next to it (14 % of random doubles' shortest text come
    back 1 ulp off), as its CSV reader does, which is what a CSV's other chunks get. ``exact=True`` is for doubles
    written as text (a Parquet column read as text because other files hold it as doubles): each number becomes
    the nearest double, a float even when it is written as an int ("-0" is -0.0), so it comes back bit for bit.
    ``probe=False`` parses every value of a column known to hold numbers (a regressor's predictions or outcomes), so
    numbers after a run of text are kept."""
    pd = require("pandas", "data")
    column = pd.Series(values, dtype=object, copy=False)
    if probe:
        head = column.iloc[:4 * NUMBER_PROBE].dropna()  # not the whole column's dropna: that cost 5 ms per 100k rows
        if len(head) < NUMBER_PROBE < len(column):
            head = column.dropna()
        if not pd.to_numeric(head.iloc[:NUMBER_PROBE], errors="coerce").notna().any():
            return values
    parsed = pd.to_numeric(column, errors="coerce").to_numpy()  # float64 with NaN where not a number, or int64
    is_number = ~np.isnan(parsed) if parsed.dtype.kind == "f" else np.ones(parsed.size, dtype=np.bool_)
    if exact:
        parsed = np.full(parsed.size, np.nan)
        parsed[is_number] = np.asarray(values)[is_number].astype(np.float64)  # Python's float(): correctly rounded
    if np.array_equal(is_number, column.notna().to_numpy()):  # numbers and missing fields only
        return parsed
    numbers = parsed[is_number]
    out = values.copy()
    if not exact and numbers.size and np.all(numbers == np.floor(numbers)):  # maybe ints: parsed again alone
        again = pd.to_numeric(pd.Series(values[is_number]), errors="coerce")
        out[is_number] = (again if again.dtype.kind in "iu" else numbers).tolist()
    else:
        out[is_number] = numbers.tolist()
    return out


def _reading(path: Path, chunks: Callable[[], Iterator[dict[str, Any]]]) -> Iterator[dict[str, Any]]:
    """``chunks()``, with any error of the reading library turned into a :class:`ProfileError` naming the file
    (pandas and pyarrow raise many kinds: ParserError, EmptyDataError, ArrowInvalid, UnicodeDecodeError...)."""
    try:
        yield from chunks()
    except (ProfileError, ImportError):
        raise
    except Exception as exc:  # whatever the parser raises, the file is unreadable
        detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ProfileError(f"cannot read data file {os.fspath(path)!r}: {detail}") from exc
