"""``aiwatch drift`` over a directory of Parquet files against the floor: the time pyarrow alone needs to read the
same columns, and peak memory.

Writes ``--rows`` rows x 25 float64 columns (20 shifted in the current data) as ``--files`` zstd Parquet files with
row groups of 128k rows under ``--dir`` (default: a temporary directory under /tmp, deleted afterwards), builds a
profile from 200k reference rows, then runs each measurement in a fresh subprocess (so ``ru_maxrss`` is its own):

- ``pyarrow``: ``pyarrow.dataset`` reading the 25 columns batch by batch, threads on (the floor the issue names);
- ``row-groups``: pyarrow reading them as aiwatch's reader does (a row group at a time, no pre-buffering) into
  numpy arrays, nothing counted (the floor of aiwatch's own reading; "ratio rg" is aiwatch against it);
- ``aiwatch``: ``aiwatch drift PROFILE DIR --json`` (the same read, plus the bins, new values and samples);
- with ``--dask-workers N``: the same command with ``--dask`` on a LocalCluster of N worker processes started for
  each size (the command's own peak, and the largest worker's).

The load average (1 min) is printed after each size: on a shared machine it says how far to trust the figures.

    PYTHONPATH=. python bench/drift_dataset_bench.py --rows 1000000 10000000 --dask-workers 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

COLUMNS = [f"x{i}" for i in range(25)]
ROW_GROUP = 128 * 1024

READ_FLOOR = """
import sys, pyarrow.dataset as ds
d = ds.dataset(sys.argv[1], format="parquet")
n = 0
for b in d.to_batches(columns={columns!r}, batch_size=100_000):
    n += b.num_rows
print(n)
"""

#: The same columns read the way aiwatch reads them (one row group at a time, every core decoding it, no
#: pre-buffering) and turned into numpy arrays, with nothing counted: the floor of aiwatch's own reader.
READ_ROW_GROUPS = """
import sys, pyarrow.dataset as ds
d = ds.dataset(sys.argv[1], format="parquet")
options = ds.ParquetFragmentScanOptions(pre_buffer=False)
n = 0
for fragment in d.get_fragments():
    for piece in fragment.split_by_row_group(schema=d.schema):
        table = piece.to_table(schema=d.schema, columns={columns!r}, use_threads=True, fragment_scan_options=options)
        n += sum(col.to_numpy().size for col in table.columns) // len(table.columns)
print(n)
"""


def write_data(root: Path, rows: int, files: int, seed: int = 0) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    per_file = rows // files
    for f in range(files):
        writer = None
        for start in range(0, per_file, ROW_GROUP):
            n = min(ROW_GROUP, per_file - start)
            table = pa.table({c: rng.normal(0.3 if i < 20 else 0.0, 1.0, n) for i, c in enumerate(COLUMNS)})
            if writer is None:
                writer = pq.ParquetWriter(root / f"part-{f:04d}.parquet", table.schema, compression="zstd")
            writer.write_table(table, row_group_size=ROW_GROUP)
        if writer is not None:
            writer.close()


def measure(args: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of a child process."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", "import resource, subprocess, sys; "
                           "r = subprocess.run(sys.argv[1:]); "
                           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
                           "sys.exit(r.returncode)", *args], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        raise RuntimeError(proc.stderr)
    return seconds, int(proc.stderr.strip().splitlines()[-1]) / 1024


def dask_run(profile: Path, data: Path, workers: int) -> tuple[float, float, float]:
    """``aiwatch drift --dask`` on a fresh LocalCluster: wall seconds, the command's peak MiB, the largest worker's."""
    import resource

    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        seconds, client_mb = measure([sys.executable, "-m", "aiwatch", "drift", str(profile), str(data), "--json",
                                      "--dask", cluster.scheduler_address])
        peaks = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return seconds, client_mb, max(peaks.values()) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--dir", default=None, help="where to write the data, kept and reused by the next run "
                                                     "(default: a temporary directory, deleted)")
    parser.add_argument("--dask-workers", type=int, default=0, help="also run with --dask on this many workers")
    args = parser.parse_args()
    base = Path(args.dir or tempfile.mkdtemp(prefix="aiwatch-drift-bench-"))
    try:
        ref = base / "reference"
        ref.mkdir(parents=True, exist_ok=True)
        import pyarrow as pa
        import pyarrow.parquet as pq

        rng = np.random.default_rng(1)
        pq.write_table(pa.table({c: rng.normal(0, 1, 200_000) for c in COLUMNS}), ref / "ref.parquet")
        profile = base / "profile.json"
        subprocess.run([sys.executable, "-m", "aiwatch", "profile", "build", str(ref / "ref.parquet"), "-o",
                        str(profile)], check=True, capture_output=True)
        dask_head = f" {'dask s':>7} {'ratio':>6} {'client MiB':>10} {'worker MiB':>10}" if args.dask_workers else ""
        print(f"{'rows':>11} {'pyarrow s':>10} {'row-groups s':>12} {'aiwatch s':>10} {'ratio':>6} {'ratio rg':>8} "
              f"{'pyarrow MiB':>12} {'aiwatch MiB':>12}{dask_head}  load")
        for rows in args.rows:
            data = base / f"current-{rows}"
            data.mkdir(exist_ok=True)
            if not any(data.glob("*.parquet")):  # --dir: data written by an earlier run is reused
                write_data(data, rows, args.files)
            floor_s, floor_mb = measure([sys.executable, "-c", READ_FLOOR.format(columns=COLUMNS), str(data)])
            groups_s, _ = measure([sys.executable, "-c", READ_ROW_GROUPS.format(columns=COLUMNS), str(data)])
            ours_s, ours_mb = measure([sys.executable, "-m", "aiwatch", "drift", str(profile), str(data), "--json"])
            on_dask = ""
            if args.dask_workers:
                dask_s, client_mb, worker_mb = dask_run(profile, data, args.dask_workers)
                on_dask = f" {dask_s:>7.2f} {dask_s / floor_s:>6.2f} {client_mb:>10.0f} {worker_mb:>10.0f}"
            print(f"{rows:>11} {floor_s:>10.2f} {groups_s:>12.2f} {ours_s:>10.2f} {ours_s / floor_s:>6.2f} "
                  f"{ours_s / groups_s:>8.2f} {floor_mb:>12.0f} {ours_mb:>12.0f}{on_dask}  {os.getloadavg()[0]:.1f}",
                  flush=True)
            if args.dir is None:
                shutil.rmtree(data)
    finally:
        if args.dir is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
