"""A uWSGI mule (``--mule=tests/http/uwsgi_mule.py``) that makes a prediction log and writes one record into
``$AIWATCH_TEST_LOG_DIR/mule``, then idles: a mule is forked by the master and forks nothing, so aiwatch must not
report uWSGI's fork hooks missing in it."""

from __future__ import annotations

import os
import time
from pathlib import Path

from aiwatch.feedback import ParquetSink, PredictionLog

log = PredictionLog(ParquetSink(Path(os.environ["AIWATCH_TEST_LOG_DIR"]) / "mule", max_file_seconds=0.2, fsync=False),
                    name="mule", batch_size=1, flush_seconds=0.1)
log.log("mule", {"x": 1.0}, {"y": 1.0})
while True:
    time.sleep(1)
