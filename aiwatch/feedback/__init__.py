"""The feedback path: what production actually saw, kept for drift checks, retraining and realised quality.

:class:`PredictionLog` samples requests (more of the slow and failed ones), queues each record without blocking and
hands batches, on a background thread, to a sink: :class:`ParquetSink` (rotated, partitioned Parquet files),
:class:`RedisStreamSink` (a Redis Stream), or anything with the :class:`PredictionSink` methods (a Kafka producer,
see docs/prediction-log.md). :class:`FieldPolicy` keeps PII out (allow/deny lists, keyed hashing).
"""

from __future__ import annotations

from aiwatch.feedback.log import PredictionLog
from aiwatch.feedback.parquet_sink import ParquetSink
from aiwatch.feedback.redis_sink import RedisStreamSink
from aiwatch.feedback.sampling import SamplingPolicy
from aiwatch.feedback.schema import LOG_COLUMNS, FieldPolicy, PredictionRecord
from aiwatch.feedback.sink import PredictionSink, RowsLost

__all__ = [
    "LOG_COLUMNS",
    "FieldPolicy",
    "ParquetSink",
    "PredictionLog",
    "PredictionRecord",
    "PredictionSink",
    "RedisStreamSink",
    "RowsLost",
    "SamplingPolicy",
]
