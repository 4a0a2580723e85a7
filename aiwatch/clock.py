"""The clocks of aiwatch's readers (the console, ``aiwatch diagnose``, the Prometheus and ``/metrics`` clients): the
one place they read now, and the one seam a test sets a clock ahead, behind or stepped back at.

Callers read them through the module (``clock.wall()``, never ``from aiwatch.clock import wall``), so that a test's
``monkeypatch.setattr(clock, "wall", ...)`` reaches every one of them.

* :func:`wall`: this machine's wall clock, for times compared with Prometheus' (a query's end, the ``Date`` of its
  answers) and the embedded scraper's history. It can run ahead of or behind Prometheus' and be set back
  (an NTP step, a VM's resume): what asks Prometheus about now reads Prometheus' now instead
  (:meth:`aiwatch.promapi.PrometheusAPI.server_time`, :attr:`~aiwatch.promapi.PrometheusAPI.clock_offset`).
* :func:`monotonic`: for waits, deadlines and the time between two readings, which a wall clock set back would
  lengthen or turn negative.
"""

from __future__ import annotations

import datetime
import time
from email.utils import parsedate_to_datetime
from typing import Any

#: The smallest offset between two machines' clocks, read from a ``Date`` header (:func:`answer_offset`), worth
#: correcting a time by: less is within a scrape interval, and within what the header's whole seconds can tell.
OFFSET_SECONDS = 2.0


def wall() -> float:
    """This machine's wall clock, unix seconds (:func:`time.time`)."""
    return time.time()


def monotonic() -> float:
    """Seconds on a clock that never goes back (:func:`time.monotonic`): only differences of two readings mean
    anything."""
    return time.monotonic()


def correction(offset: float | None) -> float:
    """The seconds to add to a time read on this machine's clock to put it on the other's, from ``offset`` (an
    :func:`answer_offset`): the offset where it is :data:`OFFSET_SECONDS` or more either way, else 0.

        >>> correction(None), correction(1.4), correction(-7200.2)
        (0.0, 0.0, -7200.2)
    """
    return offset if offset is not None and abs(offset) >= OFFSET_SECONDS else 0.0


def answer_offset(resp: Any) -> float | None:
    """The answering server's wall clock minus this machine's (:func:`wall`), from the ``Date`` of an HTTP answer
    whose headers were just read: to within half a second (the header has whole seconds) and the answer's travel.
    ``None`` for an answer without one, or with one that is no date (a proxy's)."""
    try:
        date = parsedate_to_datetime(resp.headers.get("Date", ""))
        sent = (date if date.tzinfo is not None else date.replace(tzinfo=datetime.UTC)).timestamp()
    except (TypeError, ValueError, OverflowError, AttributeError):
        return None
    return sent + 0.5 - wall()  # sent in that second: its middle
