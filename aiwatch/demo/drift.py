"""The demo's drift monitor: :class:`aiwatch.DriftMonitor` on the request features, against a
:class:`aiwatch.ReferenceProfile` built from the training data at start-up.

The inference service calls ``monitor.observe(row)`` for every request. The monitor exports both drift paths of the
metric contract:

- the local evaluation, every ``interval`` seconds on a background thread, of PSI (against the profile's reference
  deciles, threshold :data:`PSI_THRESHOLD`) on a window of the last ``window_seconds`` of requests:
  ``aiwatch_drift_score{test="psi"}``, ``aiwatch_drift_detected`` (never with fewer than :data:`MIN_DRIFT_SAMPLES`
  values in the window, where PSI is mostly sampling noise);
- the mergeable fleet sketch ``aiwatch_feature_bin_total`` / ``aiwatch_feature_reference_ratio``, from which the
  summary computes each stage's PSI and Prometheus the fleet PSI (:mod:`aiwatch.drift.promql`).
"""

from __future__ import annotations

from aiwatch.demo import data
from aiwatch.demo.names import Names
from aiwatch.drift import DriftMonitor, ReferenceProfile
from aiwatch.metrics import Metrics

MODEL = Names().model
#: PSI at or above this is drift (the common "significant shift" rule of thumb).
PSI_THRESHOLD = 0.2
#: Fewer live values than this and PSI is mostly sampling noise (about (bins - 1) / n, with a tail: at 120 values a
#: PSI of 0.2 happens now and then by chance); with 200 it is about 0.05 and 0.2 is out of reach: never called drift.
MIN_DRIFT_SAMPLES = 200


def reference_profile() -> ReferenceProfile:
    """The profile of the training data's request features (10 quantile bins per feature)."""
    return ReferenceProfile.build(data.reference_features())


def drift_monitor(metrics: Metrics, window_seconds: float = 10.0, interval: float = 0.5,
                  model: str = MODEL) -> DriftMonitor:
    """The monitor of the inference service (not started: call ``start()`` / ``stop()``). Bin counters are flushed
    every quarter second, so that a stage's counts stay in that stage."""
    return DriftMonitor(reference_profile(), model=model, metrics=metrics, window_size=50_000,
                        window_seconds=window_seconds, interval=interval, flush_interval=0.25, method="psi",
                        threshold=PSI_THRESHOLD, min_samples=MIN_DRIFT_SAMPLES)
