"""Reading a Parquet dataset holds a few row groups, not the data: with a consumer slower than the reader (counting
is), Arrow's live allocations stay under a few row groups' worth however many row groups there are. (pyarrow's
dataset scanner, used before, decoded ahead up to its own back-pressure limit and pre-buffered whole files: the
batch drift's peak memory grew from 510 MiB at 1M rows to 1,493 MiB at 10M.)"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from aiwatch.drift.datasets import ROW_GROUPS_AHEAD, open_dataset, scan_chunks  # noqa: E402

COLUMNS = 6
GROUP_ROWS = 20_000
GROUP_BYTES = GROUP_ROWS * COLUMNS * 8


def write(folder: Path, files: int, groups: int) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir()
    for f in range(files):
        table = pa.table({f"x{i}": rng.normal(size=GROUP_ROWS * groups) for i in range(COLUMNS)})
        pq.write_table(table, folder / f"part-{f}.parquet", row_group_size=GROUP_ROWS)
    return folder


def peak_arrow_bytes(folder: Path) -> tuple[int, int]:
    """Rows read and the peak of Arrow's live allocations above where they started, with a slow consumer."""
    start = pa.total_allocated_bytes()
    peak = rows = 0
    for chunk in scan_chunks(open_dataset(folder), [f"x{i}" for i in range(COLUMNS)], chunk_rows=10_000):
        rows += len(chunk["x0"])
        time.sleep(0.005)  # the counting a real consumer does: the reader gets ahead if it can
        peak = max(peak, pa.total_allocated_bytes() - start)
    return rows, peak


def test_the_reader_holds_a_few_row_groups_however_large_the_data(tmp_path: Path) -> None:
    small = peak_arrow_bytes(write(tmp_path / "small", files=2, groups=2))
    large = peak_arrow_bytes(write(tmp_path / "large", files=4, groups=6))  # 6x the row groups
    assert small[0] == 4 * GROUP_ROWS and large[0] == 24 * GROUP_ROWS
    bound = (ROW_GROUPS_AHEAD + 2) * GROUP_BYTES * 1.5  # the groups in flight, the one being sliced, slack
    assert large[1] <= bound, f"peak {large[1] / 2**20:.1f} MiB for 24 row groups of {GROUP_BYTES / 2**20:.1f} MiB"
    assert large[1] <= small[1] * 2.5 + GROUP_BYTES
