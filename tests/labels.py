"""The labels a test can leave out when it reads a sample: the ones whose value is the default for the traffic the
tests send (every request is ``realtime`` unless it says otherwise, every phase has no model version)."""

from __future__ import annotations

DEFAULTS: dict[str, dict[str, str]] = {
    "aiwatch_request_duration_seconds": {"traffic_class": "realtime"},
    "aiwatch_phase_duration_seconds": {"model_version": ""},
}


def with_defaults(name: str, labels: dict[str, str]) -> dict[str, str]:
    """``labels`` of sample ``name`` (``..._count``, ``..._bucket``...) with the default labels it leaves out."""
    for family, defaults in DEFAULTS.items():
        if name.startswith(family):
            return {**defaults, **labels}
    return labels
