"""Snapshots of services' ``/metrics`` and the arithmetic the demo's summary needs: deltas between two snapshots
and the cumulative buckets of a histogram's delta, for :func:`aiwatch.console.source.histogram_quantile`.

    >>> before = {("h_bucket", (("le", "0.1"),)): 1.0, ("h_bucket", (("le", "+Inf"),)): 1.0}
    >>> after = {("h_bucket", (("le", "0.1"),)): 5.0, ("h_bucket", (("le", "+Inf"),)): 11.0}
    >>> d = delta(after, before)
    >>> from aiwatch.console.source import histogram_quantile
    >>> round(histogram_quantile(0.5, buckets(d, "h")), 3)   # 10 new: 4 under 0.1, 6 above (in the +Inf bucket)
    0.1
"""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping

Key = tuple[str, tuple[tuple[str, str], ...]]
Samples = dict[Key, float]


def parse(text: str, instance: str = "") -> Samples:
    """Samples of a Prometheus text exposition; ``instance`` (if given) is added as a label."""
    from prometheus_client.parser import text_string_to_metric_families

    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            labels = dict(sample.labels)
            if instance:
                labels["instance"] = instance
            samples[(sample.name, tuple(sorted(labels.items())))] = float(sample.value)
    return samples


def scrape(url: str, timeout: float = 5.0) -> Samples:
    """GET ``url`` (a ``/metrics`` endpoint) and parse it, labelling every sample with ``instance=url``."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return parse(resp.read().decode("utf-8"), instance=url)


def scrape_all(urls: list[str], timeout: float = 5.0) -> Samples:
    merged: Samples = {}
    for url in urls:
        merged.update(scrape(url, timeout))
    return merged


def delta(after: Samples, before: Samples) -> Samples:
    """``after - before`` per sample (a series absent before counts from 0; a reset counts from 0 again)."""
    out: Samples = {}
    for key, value in after.items():
        previous = before.get(key, 0.0)
        out[key] = value - previous if value >= previous else value
    return out


def _matches(labels: tuple[tuple[str, str], ...], match: Mapping[str, str]) -> bool:
    have = dict(labels)
    return all(have.get(k) == v for k, v in match.items())


def total(samples: Samples, name: str, **match: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``match``."""
    return sum(v for (n, labels), v in samples.items() if n == name and _matches(labels, match))


def values(samples: Samples, name: str, by: str, **match: str) -> dict[str, float]:
    """Samples called ``name`` matching ``match``, summed per value of label ``by``."""
    out: dict[str, float] = {}
    for (n, labels), v in samples.items():
        if n == name and _matches(labels, match):
            key = dict(labels).get(by, "")
            out[key] = out.get(key, 0.0) + v
    return out


def buckets(samples: Samples, histogram: str, **match: str) -> list[tuple[float, float]]:
    """The cumulative ``(upper bound, count)`` buckets of ``histogram``, summed over the matching series."""
    per_le = values(samples, f"{histogram}_bucket", "le", **match)
    return sorted((float(le), count) for le, count in per_le.items())
