"""What a prediction-log sink is: three methods, called from the log's background writer thread only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class PredictionSink(Protocol):
    """Where logged predictions go. Rows are flat dicts (docs/prediction-log.md, "Schema"): the log's columns,
    then one column per kept input and ``output`` / ``output.<name>`` columns, with JSON-friendly values
    (``timestamp`` is Unix seconds as a float).

    Every method is called from one background thread, never from a request. A method that raises is counted in
    ``aiwatch_instrumentation_errors_total{component="prediction_log"}`` and its rows in
    ``aiwatch_prediction_log_records_total{result="failed"}``; the writer goes on with the next batch.
    """

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        """Store one batch of rows."""

    def flush(self) -> None:
        """Called about every ``flush_seconds``: make what was written durable (rotate old files, flush a
        producer)."""

    def close(self) -> None:
        """Called once, when the log closes: make everything durable and release resources."""
