"""Drift detection: reference profiles, exact statistical tests, a streaming monitor and fleet-wide PromQL.

Three paths share one :class:`ReferenceProfile`: the :class:`DriftMonitor` (local, exact tests on a window),
the fleet sketch in Prometheus (:mod:`aiwatch.drift.promql`) and the batch CLI (:mod:`aiwatch.drift.batch`).
Importing this package does not import scipy; running a test does.
"""

from aiwatch.drift.monitor import DriftMonitor
from aiwatch.drift.profile import ProfileError, ReferenceProfile

__all__ = ["DriftMonitor", "ProfileError", "ReferenceProfile", "compare"]


def __getattr__(name: str) -> object:
    if name == "compare":
        from aiwatch.drift.evaluate import compare

        return compare
    raise AttributeError(f"module 'aiwatch.drift' has no attribute {name!r}")
