"""The demo's arithmetic on ``/metrics`` snapshots (read with :mod:`aiwatch.scrape`): deltas between two snapshots,
sums over matching series, and the cumulative buckets of a histogram's delta, for
:func:`aiwatch.console.source.histogram_quantile`.

    >>> before = {"h_bucket": {(("le", "0.1"),): 1.0, (("le", "+Inf"),): 1.0}}
    >>> after = {"h_bucket": {(("le", "0.1"),): 5.0, (("le", "+Inf"),): 11.0}}
    >>> d = delta(after, before)
    >>> from aiwatch.console.source import histogram_quantile
    >>> round(histogram_quantile(0.5, buckets(d, "h")), 3)   # 10 new: 4 under 0.1, 6 above (in the +Inf bucket)
    0.1
"""

from __future__ import annotations

from collections.abc import Mapping

from aiwatch.scrape import LabelKey, Samples, fetch_metrics


def scrape_all(urls: list[str], timeout: float = 5.0) -> Samples:
    """Every endpoint's samples in one snapshot, each series labelled ``instance=<its url>``."""
    merged: Samples = {}
    for url in urls:
        for name, series in fetch_metrics(url, timeout, labels={"instance": url}).items():
            merged.setdefault(name, {}).update(series)
    return merged


def delta(after: Samples, before: Samples) -> Samples:
    """``after - before`` per series (a series absent before counts from 0; a reset counts from 0 again)."""
    out: Samples = {}
    for name, series in after.items():
        earlier = before.get(name, {})
        changed = out[name] = {}
        for key, value in series.items():
            previous = earlier.get(key, 0.0)
            changed[key] = value - previous if value >= previous else value
    return out


def _matches(labels: LabelKey, match: Mapping[str, str]) -> bool:
    have = dict(labels)
    return all(have.get(k) == v for k, v in match.items())


def total(samples: Samples, name: str, **match: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``match``."""
    return sum(v for labels, v in samples.get(name, {}).items() if _matches(labels, match))


def values(samples: Samples, name: str, by: str, **match: str) -> dict[str, float]:
    """Samples called ``name`` matching ``match``, summed per value of label ``by``."""
    out: dict[str, float] = {}
    for labels, v in samples.get(name, {}).items():
        if _matches(labels, match):
            key = dict(labels).get(by, "")
            out[key] = out.get(key, 0.0) + v
    return out


def buckets(samples: Samples, histogram: str, **match: str) -> list[tuple[float, float]]:
    """The cumulative ``(upper bound, count)`` buckets of ``histogram``, summed over the matching series."""
    per_le = values(samples, f"{histogram}_bucket", "le", **match)
    return sorted((float(le), count) for le, count in per_le.items())

