"""The demo's drift hook: live feature values counted into the reference profile's bins.

The reference profile is the training data's deciles per feature. The hook exports the mergeable drift sketch of
the metric contract (``aiwatch_feature_bin_total`` and ``aiwatch_feature_reference_ratio``), from which PSI is
computed per stage by :mod:`aiwatch.demo.summary` and fleet-wide by the PromQL of :mod:`aiwatch.drift.promql`.
It stands in for ``aiwatch.DriftMonitor`` and its ``ReferenceProfile``: :class:`DriftHook` is the interface the
inference service calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np

from aiwatch.metrics import Metrics
from aiwatch.safety import record_error


class DriftHook(Protocol):
    def observe(self, features: Mapping[str, float]) -> None: ...


def bin_labels(edges: np.ndarray) -> list[str]:
    """One label per bin: its upper edge, ``+Inf`` for the last."""
    return [f"{e:.6g}" for e in edges] + ["+Inf"]


class BinSketch:
    """Counts each observed feature value into its reference bin; never raises into the request."""

    def __init__(self, reference: Mapping[str, np.ndarray], metrics: Metrics, model: str, bins: int = 10) -> None:
        self.model = model
        self._metrics = metrics
        self.edges: dict[str, np.ndarray] = {}
        self._children: dict[str, list[object]] = {}
        for feature, values in reference.items():
            edges = np.unique(np.quantile(np.asarray(values, dtype=np.float64), np.linspace(0, 1, bins + 1)[1:-1]))
            self.edges[feature] = edges
            labels = bin_labels(edges)
            counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(labels))
            for label, share in zip(labels, counts / counts.sum(), strict=True):
                metrics.child(metrics.feature_reference_ratio, (model, feature, label)).set(float(share))
            self._children[feature] = [metrics.child(metrics.feature_bin, (model, feature, label)) for label in labels]

    def observe(self, features: Mapping[str, float]) -> None:
        for feature, edges in self.edges.items():
            try:
                value = float(features[feature])
                if value != value or value in (float("inf"), float("-inf")):
                    self._metrics.child(self._metrics.feature_missing, (self.model, feature)).inc()
                    continue
                index = int(np.searchsorted(edges, value, side="right"))
                self._children[feature][index].inc()  # type: ignore[attr-defined]
            except Exception as exc:
                record_error("demo_drift", exc, self._metrics)
