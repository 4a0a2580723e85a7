"""The aiwatch console: a Streamlit app (``aiwatch console``) and the data sources behind it.

The sources need no optional dependency; only :mod:`aiwatch.console.app` imports Streamlit (extra ``console``).

    >>> from aiwatch.console import ScrapeSource
    >>> src = ScrapeSource(["http://127.0.0.1:8000/metrics"], interval=5, start=False)
    >>> src.health()[0].error
    'not scraped yet'
"""

from __future__ import annotations

from aiwatch.console.prometheus import PrometheusSource
from aiwatch.console.scrape import ScrapeSource
from aiwatch.console.source import (
    AlertRow,
    BinRow,
    DataSource,
    DriftRow,
    GpuRow,
    NotSupported,
    Series,
    Signal,
    SourceError,
    SourceSlow,
    SourceUnavailable,
    TargetHealth,
    histogram_quantile,
)

__all__ = [
    "AlertRow",
    "BinRow",
    "DataSource",
    "DriftRow",
    "GpuRow",
    "NotSupported",
    "PrometheusSource",
    "ScrapeSource",
    "Series",
    "Signal",
    "SourceError",
    "SourceSlow",
    "SourceUnavailable",
    "TargetHealth",
    "histogram_quantile",
]
