"""What reading a CSV's fields one by one costs, against pandas' own typed read of the same file, in one process.

    python bench/csv_read_bench.py                 # 1M rows, 7 rounds
    python bench/csv_read_bench.py --rows 200000 --rounds 11

The file has 4 columns (two of floats, one of small ints, one of text). Each round times, in CPU seconds:

* ``pandas``: ``pd.read_csv(path, chunksize=100_000)`` and each column's ``to_numpy()``: the baseline, what
  ``read_chunks`` did before ``csv_column``;
* ``read_chunks``: aiwatch's CSV reader on the same file (``csv_column`` on each column: it probes a text column's
  first values and leaves a typed one as it is);
* ``pandas dirty`` / ``read_chunks dirty``: the same file with one ``unknown`` in a float column of every chunk
  (pandas reads that column as text; ``csv_column`` then parses its numbers with ``to_numeric``);
* ``as text``: what ``read_frame(..., csv_as_text=True)`` does per Dask partition, on one 100k-row chunk at a time
  here: ``pd.read_csv(dtype=object)`` then ``_typed_csv_fields``. Dask's own typed read of a partition is the
  ``pandas`` row's work.

It prints each side's fields read (rows x columns) and the ratio of its median to the ``pandas`` row of the same file
(``as text``: of the clean one).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO)]

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from aiwatch.drift.files import read_chunks  # noqa: E402
from aiwatch.drift.on_dask import _typed_csv_fields  # noqa: E402

CHUNK = 100_000


def write(folder: Path, rows: int, dirty: bool) -> Path:
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"age": np.round(rng.normal(40, 10, rows), 3),
                          "income": np.round(rng.lognormal(10, 1, rows), 2),
                          "rooms": rng.integers(1, 6, rows), "plan": rng.choice(["free", "pro", "team"], rows)})
    if dirty:
        age = frame["age"].astype(object)
        age.iloc[CHUNK // 2::CHUNK] = "unknown"
        frame["age"] = age
    path = folder / ("dirty.csv" if dirty else "clean.csv")
    frame.to_csv(path, index=False)
    return path


def pandas_typed(path: Path) -> int:
    fields = 0
    for frame in pd.read_csv(path, chunksize=CHUNK):
        fields += sum(frame[c].to_numpy().size for c in frame.columns)
    return fields


def aiwatch_chunks(path: Path) -> int:
    return sum(v.size for chunk in read_chunks(path, CHUNK) for v in chunk.values())


def as_text(path: Path) -> int:
    fields = 0
    for frame in pd.read_csv(path, chunksize=CHUNK, dtype=object):
        fields += _typed_csv_fields(frame).size
    return fields


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clean, dirty = write(Path(tmp), args.rows, False), write(Path(tmp), args.rows, True)
        sides: dict[str, tuple[Callable[[Path], int], Path]] = {
            "pandas": (pandas_typed, clean), "read_chunks": (aiwatch_chunks, clean),
            "pandas dirty": (pandas_typed, dirty), "read_chunks dirty": (aiwatch_chunks, dirty),
            "as text": (as_text, clean)}
        print(f"{args.rows} rows x 4 columns, chunks of {CHUNK}, {args.rounds} rounds; python "
              f"{sys.version.split()[0]}, pandas {pd.__version__}, load average {os.getloadavg()[0]:.2f} at the start")
        times: dict[str, list[float]] = {name: [] for name in sides}
        fields: dict[str, int] = {}
        for _ in range(args.rounds):
            for name, (read, path) in sides.items():  # one after the other each round: a load change hits all
                start = time.process_time()
                fields[name] = read(path)
                times[name].append(time.process_time() - start)
    print(f"{'side':<20} {'median s':>9} {'min s':>7} {'fields':>9} {'/ pandas':>9}")
    for name, spent in times.items():
        median = statistics.median(spent)
        base = statistics.median(times["pandas dirty" if name.endswith("dirty") else "pandas"])
        print(f"{name:<20} {median:>9.3f} {min(spent):>7.3f} {fields[name]:>9} {median / base:>9.2f}")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
