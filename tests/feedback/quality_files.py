"""The files `aiwatch quality`'s tests read: a labels CSV and a prediction log written by ParquetSink."""

from __future__ import annotations

from pathlib import Path

from aiwatch.feedback import ParquetSink


def labels_csv(tmp_path: Path, rows: list[tuple[str, object]], name: str = "labels.csv") -> Path:
    """``rows`` of (request id, outcome) as a labels CSV in ``tmp_path``."""
    path = tmp_path / name
    path.write_text("request_id,outcome\n" + "".join(f"{rid},{outcome}\n" for rid, outcome in rows))
    return path


def sink_log(tmp_path: Path, rows: list[dict[str, object]]) -> Path:
    """``rows`` written by a ParquetSink into ``tmp_path``/log, closed; the log's directory."""
    sink = ParquetSink(tmp_path / "log")
    sink.write(rows)
    sink.close()
    return tmp_path / "log"
