"""What a prediction-log sink is: three methods, called from the log's background writer thread only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from aiwatch.safety import disk_full


@runtime_checkable
class PredictionSink(Protocol):
    """Where logged predictions go. Rows are flat dicts (docs/prediction-log.md, "Schema"): the log's columns,
    then one column per kept input and ``output`` / ``output.<name>`` columns, with JSON-friendly values
    (``timestamp`` is Unix seconds as a float).

    Every method is called from one background thread, never from a request. A method that raises is counted in
    ``aiwatch_instrumentation_errors_total{component="prediction_log"}`` and its rows in
    ``aiwatch_prediction_log_records_total{result="failed"}``; the writer goes on with the next batch. A sink that
    stored some rows and not others raises :class:`RowsLost` to have them counted exactly.
    """

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        """Store one batch of rows."""

    def flush(self) -> None:
        """Called about every ``flush_seconds``: make what was written durable (rotate old files, flush a
        producer)."""

    def close(self) -> None:
        """Called once, when the log closes: make everything durable and release resources."""


class RowsLost(Exception):
    """Raised by a sink's ``write``, ``flush`` or ``close`` that kept some rows and not others (raise it ``from``
    the cause): ``failed`` rows of the batch being written were not stored, the rest were; ``lost`` rows of earlier
    batches, which the log counted as written, are gone too (a Parquet file that could not be completed);
    ``recoverable`` rows (of earlier batches or of this one, counted written) are not in a finished file but kept
    where a later start of the sink recovers them (a ParquetSink's journal). The log counts them as
    ``result="failed"``, ``result="lost"`` and ``result="recoverable"``; ``why`` (the cause) ends the message. Counts
    that are no whole numbers from 0 up (or ``failed`` past the batch's rows) are not trusted: the whole batch is
    counted failed, and a ``lost`` or ``recoverable`` that is no count counts nothing. ``stored``, when given, is
    how many rows of the batch were stored, for the message."""

    def __init__(self, failed: int, lost: int, why: object = None, *, recoverable: int = 0,
                 stored: int | None = None) -> None:
        # what was kept and what was not, and why: "0 rows of this batch not stored, 0 rows written before lost:
        # [Errno 28] ..." was logged for a journal that the full disk refused, every row stored
        counts = []
        if _none(failed) and _none(lost):
            counts.append("no rows lost")
        if isinstance(stored, int) and isinstance(failed, int):
            counts.append(f"{failed} of {stored + failed} rows of this batch not stored" if failed
                          else f"all {stored} rows of this batch stored")
        elif not _none(failed):
            counts.append(f"{failed} rows of this batch not stored")
        if not _none(lost):
            counts.append(f"{lost} rows written before lost")
        if not _none(recoverable):
            counts.append(f"{recoverable} rows kept for recovery")
        because = "" if why is None else f": {failure_text(why) if isinstance(why, BaseException) else why}"
        super().__init__(", ".join(counts) + because)
        self.failed, self.lost, self.recoverable = failed, lost, recoverable


def _none(count: object) -> bool:
    return isinstance(count, int) and count == 0


def failure_text(exc: BaseException, what: str = "") -> str:
    """``exc`` as the end of a message, after ``what`` failed (``the journal ... could not be appended to``), led by
    ``the disk is full`` when it is (ENOSPC or EDQUOT, :func:`aiwatch.safety.disk_full`)."""
    text = str(exc) or repr(exc)
    if what:
        text = f"{what} ({text})"
    return f"the disk is full: {text}" if disk_full(exc) else text
