"""``aiwatch diagnose``: which part of a service's request time moved between a baseline and an incident window.

See docs/diagnose.md. The arithmetic (:mod:`aiwatch.diagnose.split`, :mod:`aiwatch.diagnose.report`) works on
:class:`~aiwatch.diagnose.window.WindowTotals`, which any source can fill: Prometheus' HTTP API, the console's
embedded scrape source, or two snapshots of scraped ``/metrics``.
"""

from aiwatch.diagnose.report import Contributor, DiagnoseError, Diagnosis, SignalChange, Tail, diagnose_windows
from aiwatch.diagnose.split import Part, request_split, tail_split
from aiwatch.diagnose.window import READS, Read, WindowTotals

__all__ = [
    "READS",
    "Contributor",
    "DiagnoseError",
    "Diagnosis",
    "Part",
    "Read",
    "SignalChange",
    "Tail",
    "WindowTotals",
    "diagnose_windows",
    "request_split",
    "tail_split",
]
