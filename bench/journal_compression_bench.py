"""What a starting ``ParquetSink`` spends recovering a journal whose batches carry Arrow IPC body compression (which
the sink never writes): a hostile or foreign journal of a few kilobytes whose zstd bodies decode to gigabytes.

Each batch is one row of the sink's columns whose ``request_id`` is ``--mib`` MiB of zeros (one value: the bound on
values per byte does not see it), compressed with zstd to a few kilobytes; the journal holds ``--batches`` of them
after one uncompressed batch as the sink writes it. Each run is a fresh process that starts a sink on a directory
holding that journal; it reports its peak resident size (``VmHWM``: Linux) and the wall time of the start
(``--batches 0``: the journal of the uncompressed batch alone, what importing pyarrow and starting a sink costs).
``--tree`` names the checkout whose ``aiwatch`` is imported (the code before and after a change, runs alternating).

    python bench/journal_compression_bench.py --tree OLD --tree . --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa

SCHEMA = pa.schema([("request_id", pa.string()), ("timestamp", pa.timestamp("us", tz="UTC")),
                    ("model_version", pa.string()), ("latency_seconds", pa.float64()), ("error", pa.bool_())])
NAME = ".part-20260921T141320-1-000001.parquet.journal"

CHILD = """
import aiwatch, json, logging, resource, sys, time
from pathlib import Path
logging.disable(logging.CRITICAL)
from aiwatch.feedback import ParquetSink
start = time.perf_counter()
sink = ParquetSink(Path(sys.argv[1]))
seconds = time.perf_counter() - start
# VmHWM: this process's peak since its exec (ru_maxrss keeps the forking parent's, which built the journal)
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"seconds": seconds, "peak_rss_mib": peak / 1024,
                  "files": {k: v for k, v in sink.recovery.files.items() if v}, "records": sink.recovery.records,
                  "aiwatch": aiwatch.__file__}))
"""


def batch(request_id: str) -> pa.RecordBatch:
    return pa.record_batch([pa.array([request_id]), pa.array([1_758_463_260_000_000], pa.timestamp("us", tz="UTC")),
                            pa.array(["v1"]), pa.array([0.01]), pa.array([False])], schema=SCHEMA)


def compressed_message(mib: int) -> bytes:
    """One record batch message, its body zstd-compressed: the stream's bytes less its schema and end marker."""
    out = pa.BufferOutputStream()
    with pa.ipc.new_stream(out, SCHEMA, options=pa.ipc.IpcWriteOptions(compression="zstd")) as writer:
        writer.write_batch(batch("\0" * (mib << 20)))
    data = out.getvalue().to_pybytes()
    return data[len(SCHEMA.serialize().to_pybytes()):-8]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", required=True, help="a checkout whose aiwatch is imported")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--batches", type=int, default=4)
    args = parser.parse_args()
    journal = (SCHEMA.serialize().to_pybytes() + batch("r0").serialize().to_pybytes()
               + compressed_message(args.mib) * args.batches)
    print(f"journal: {len(journal)} bytes, {args.batches} compressed batches of {args.mib} MiB decoded each; "
          f"load: {os.getloadavg()}")
    results: dict[str, list[dict[str, float]]] = {tree: [] for tree in args.tree}
    with tempfile.TemporaryDirectory() as scratch:
        for run in range(args.runs):
            for tree in args.tree:  # alternating
                folder = Path(scratch) / f"{run}-{len(results[tree])}-{args.tree.index(tree)}"
                hour = folder / "model=m" / "hour=2026-09-21T14"
                hour.mkdir(parents=True)
                (hour / NAME).write_bytes(journal)
                root = Path(tree).resolve()  # -c puts the working directory first on the path
                env = {**os.environ, "PYTHONPATH": str(root)}
                done = subprocess.run([sys.executable, "-c", CHILD, str(folder)], cwd=root, env=env,
                                      capture_output=True, text=True, check=True)
                result = json.loads(done.stdout)
                results[tree].append(result)
                print(tree, json.dumps(result))
                shutil.rmtree(folder)
    for tree, runs in results.items():
        for key in ("peak_rss_mib", "seconds"):
            values = [r[key] for r in runs]
            print(f"{tree}: {key} median {statistics.median(values):.2f} range {min(values):.2f}-{max(values):.2f}")
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
