"""--since/--until bounds outside a timestamp column's range (a timestamp[ns] holds 1677-09-21 to 2262-04-11): the
single-machine reader selects the rows the Dask path selects, every row on one side, none on the other; a bound
cast to nanoseconds raised "would result in out of bounds timestamp" on one machine."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from aiwatch.drift.datasets import open_dataset, parse_time, scan_chunks, time_filter  # noqa: E402

NS_MIN, NS_MAX = -(2**63) + 1, 2**63 - 1  # pandas reads -2**63 as NaT: the first instant both read is one more
BOUNDS = ["0001-01-01", "1500-01-01", "1677-09-21T00:12:43.145224Z", "1677-09-21T00:12:43.145225Z", "1970-01-01",
          "2262-04-11T23:47:16.854775Z", "2262-04-11T23:47:16.854776Z", "2300-01-01", "9999-12-31T23:59:59.999999Z"]


def write(path: Path, unit: str, tz: str | None) -> Path:
    """Rows at the ends of the column type's int64 range where it is timestamp[ns] (1500 and 2400 too otherwise),
    one before the epoch, the epoch, and a null."""
    per_ns = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}[unit]
    ticks: list[int | None] = [NS_MIN // per_ns + (unit != "ns"), -1, 0, NS_MAX // per_ns, None]
    if unit != "ns":  # instants a timestamp[ns] cannot hold
        ticks += [int((datetime(1500, 1, 1) - datetime(1970, 1, 1)).total_seconds()) * 10**9 // per_ns,
                  int((datetime(2400, 1, 1) - datetime(1970, 1, 1)).total_seconds()) * 10**9 // per_ns]
    pq.write_table(pa.table({"row": list(range(len(ticks))), "timestamp": pa.array(ticks, pa.timestamp(unit, tz))}),
                   path)
    return path


def local_rows(path: Path, since: datetime | None, until: datetime | None) -> list[int]:
    dataset = open_dataset(path)
    predicate = time_filter(dataset, since, until, "timestamp")
    return sorted(int(v) for chunk in scan_chunks(dataset, ["row"], predicate=predicate) for v in chunk["row"])


def dask_rows(path: Path, since: datetime | None, until: datetime | None) -> list[int]:
    pytest.importorskip("dask.dataframe")
    from aiwatch.drift.on_dask import read_frame

    frame = read_frame(str(path), columns=["row"], since=since, until=until).compute(scheduler="synchronous")
    return sorted(int(v) for v in frame["row"])


@pytest.mark.parametrize("tz", [None, "UTC"])
@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_bounds_past_the_columns_range_select_as_on_dask(tmp_path: Path, unit: str, tz: str | None) -> None:
    path = write(tmp_path / "t.parquet", unit, tz)
    every = [0, 1, 2, 3] if unit == "ns" else [0, 1, 2, 3, 5, 6]  # row 4 is null: on neither side
    for text in BOUNDS:
        t = parse_time(text)
        since, until = local_rows(path, t, None), local_rows(path, None, t)
        assert sorted(since + until) == every, text  # each non-null row on exactly one side
        assert (since, until) == (dask_rows(path, t, None), dask_rows(path, None, t)), text
    if unit == "ns":  # the whole column is after a bound before 1677 and before one after 2262
        for text in ("1500-01-01", "1677-09-21T00:12:43.145224Z"):
            assert local_rows(path, parse_time(text), None) == every
            assert local_rows(path, None, parse_time(text)) == []
        for text in ("2262-04-11T23:47:16.854776Z", "2300-01-01"):
            assert local_rows(path, parse_time(text), None) == []
            assert local_rows(path, None, parse_time(text)) == every
