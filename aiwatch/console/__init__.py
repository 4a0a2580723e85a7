"""The aiwatch console: a Streamlit app (``aiwatch console``) and the data sources behind it.

The sources need no optional dependency; only :mod:`aiwatch.console.app` imports Streamlit (extra ``console``).

    >>> from aiwatch.console import ScrapeSource
    >>> src = ScrapeSource(["http://127.0.0.1:8000/metrics"], interval=5, start=False)
    >>> src.health()[0].error
    'not scraped yet'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiwatch._optional import lazy_attribute
from aiwatch.console.source import (
    AlertRow,
    BinRow,
    DataSource,
    DriftRow,
    GpuRow,
    GpuTable,
    GpuUtilization,
    MissingRow,
    NotSupported,
    Series,
    Signal,
    SourceError,
    SourceSlow,
    SourceUnavailable,
    TargetHealth,
    TracedRequest,
    histogram_quantile,
)

if TYPE_CHECKING:
    from aiwatch.console.prometheus import PrometheusSource
    from aiwatch.console.scrape import ScrapeSource

# The two sources are imported on first use: `aiwatch diagnose` imports the console's source module only, and the
# sources' PromQL pulls in the drift package (numpy, scipy) it does not need.
_LAZY = {"PrometheusSource": "aiwatch.console.prometheus", "ScrapeSource": "aiwatch.console.scrape"}

__all__ = [
    "AlertRow",
    "BinRow",
    "DataSource",
    "DriftRow",
    "GpuRow",
    "GpuTable",
    "GpuUtilization",
    "MissingRow",
    "NotSupported",
    "PrometheusSource",
    "ScrapeSource",
    "Series",
    "Signal",
    "SourceError",
    "SourceSlow",
    "SourceUnavailable",
    "TargetHealth",
    "TracedRequest",
    "histogram_quantile",
]


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, globals(), _LAZY, name)
