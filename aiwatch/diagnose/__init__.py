"""``aiwatch diagnose``: which part of a service's request time moved between a baseline and an incident window.

See docs/diagnose.md. The arithmetic (:mod:`aiwatch.diagnose.split`, :mod:`aiwatch.diagnose.report`) works on
:class:`~aiwatch.diagnose.window.WindowTotals`, which any source can fill (:mod:`aiwatch.diagnose.sources`):
Prometheus' HTTP API, the console's embedded scrape source, or two snapshots of scraped ``/metrics``.
:func:`~aiwatch.diagnose.run.diagnose` reads both windows from a source and diagnoses them; the CLI and the
console's Latency view call it.

    >>> from aiwatch.diagnose import PrometheusWindows, diagnose
    >>> print(diagnose(PrometheusWindows("http://127.0.0.1:9090"), "gateway").verdict)  # doctest: +SKIP
"""

from aiwatch.diagnose.report import Contributor, DiagnoseError, Diagnosis, SignalChange, Tail, diagnose_windows
from aiwatch.diagnose.run import DEFAULT_BASELINE, DEFAULT_INCIDENT, DiagnoseSourceError, diagnose, windows
from aiwatch.diagnose.sources import (
    PrometheusWindows,
    WindowSource,
    prometheus_totals,
    scrape_totals,
    totals_from_snapshots,
)
from aiwatch.diagnose.split import Part, request_split, tail_split
from aiwatch.diagnose.text import format_diagnosis
from aiwatch.diagnose.timeargs import parse_duration, parse_time
from aiwatch.diagnose.window import READS, Read, WindowTotals

__all__ = [
    "DEFAULT_BASELINE",
    "DEFAULT_INCIDENT",
    "READS",
    "Contributor",
    "DiagnoseError",
    "DiagnoseSourceError",
    "Diagnosis",
    "Part",
    "PrometheusWindows",
    "Read",
    "SignalChange",
    "Tail",
    "WindowSource",
    "WindowTotals",
    "diagnose",
    "diagnose_windows",
    "format_diagnosis",
    "parse_duration",
    "parse_time",
    "prometheus_totals",
    "request_split",
    "scrape_totals",
    "tail_split",
    "totals_from_snapshots",
    "windows",
]
