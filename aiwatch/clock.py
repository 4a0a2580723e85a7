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

import time


def wall() -> float:
    """This machine's wall clock, unix seconds (:func:`time.time`)."""
    return time.time()


def monotonic() -> float:
    """Seconds on a clock that never goes back (:func:`time.monotonic`): only differences of two readings mean
    anything."""
    return time.monotonic()
