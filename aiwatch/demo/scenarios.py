"""The demo's fault scenarios: which part of the system a scenario slows (or changes) in the middle stage, and what
aiwatch should then say: the cause ``aiwatch diagnose`` should rank first and the alerts that should (and should not)
fire.

Every scenario runs the same three stages, ``normal`` / the fault / ``recovery``, and changes only the middle one:

======================  ======================================================================================
``flash-sale``          today's story: 10x the traffic with shifted basket values and new users; the model's
                        capacity is the limit and requests wait in its queue
``network``             the gateway -> inference link is congested: a delaying, bandwidth-limiting proxy on that
                        hop (:mod:`aiwatch.demo.slowlink`) adds ``severity`` per round trip
``feature-store``       the feature store answers ``severity`` slower and the feature cache was flushed: every
                        lookup misses and waits for the store
``model``               the model itself is ``severity`` slower per call, as a GPU that throttles its clocks
``drift``               the inputs shift (basket values up) at the same traffic; latency stays flat
``none``                the control: nothing changes
``batch-backfill``      a batch job (requests marked ``aiwatch-traffic-class: batch``) shares the replicas with
                        the same real-time traffic: its requests fill the model's queue and real-time requests
                        wait behind them
======================  ======================================================================================

``batch-backfill`` is not a fault of one part and is not in the root-cause matrix (:data:`FAULTS`): what it shows is
the traffic class, real-time latency raised by batch traffic that the real-time SLO does not count.

``severity`` (``--severity-ms``) is the time the fault adds to the part it slows. It does not apply to ``drift`` and
``none``, which add no time; for ``flash-sale`` it sets how much waiting the sale causes in the model's queue (see
:func:`sale_in_flight`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from aiwatch.demo.names import Names

DEFAULT = "flash-sale"
#: The batch client's workers in ``batch-backfill``: enough to keep the model's queue a few batches deep.
BATCH_WORKERS = 8


@dataclass(frozen=True)
class AlertMatch:
    """An alert by name, with label values it must carry (``{}``: any labels)."""

    alert: str
    labels: Mapping[str, str] = field(default_factory=dict)

    def matches(self, labels: Mapping[str, str]) -> bool:
        return labels.get("alertname") == self.alert and all(labels.get(k) == v for k, v in self.labels.items())

    def __str__(self) -> str:
        inner = ", ".join(f"{k}={v}" for k, v in sorted(self.labels.items()))
        return f"{self.alert}{{{inner}}}" if inner else self.alert


@dataclass(frozen=True)
class Scenario:
    name: str
    #: the middle stage's name in the summary
    stage: str
    story: str
    #: the middle stage's traffic, as a multiple of the normal rate
    rate_factor: float = 1.0
    #: the middle stage's inputs come from the shifted (sale) distribution, basket values ``shift`` times as far
    shifted_inputs: bool = False
    shift: float = 1.0
    #: share of the middle stage's requests from users new to the model and the cache
    new_user_share: float = 0.05
    uses_severity: bool = True
    #: concurrent workers of a batch client in the middle stage, each sending its next request when the last one is
    #: answered (a backfill job's worker pool), on top of the real-time traffic
    batch_workers: int = 0

    def expected_cause(self, names: Names) -> str:
        """The cause (:attr:`aiwatch.diagnose.Diagnosis.cause`) diagnose should name for the middle stage against
        the first, diagnosing the gateway."""
        return {
            "flash-sale": f"queue:{names.inference}",
            "network": f"network:{names.gateway}->{names.inference}",
            "feature-store": f"phase:{names.gateway}/features",
            "model": f"model:{names.inference}/inference",
            "drift": f"drift:{names.model}/basket_value",
            "none": "none",
            "batch-backfill": f"queue:{names.inference}",
        }[self.name]

    def required_alerts(self, names: Names) -> list[AlertMatch]:
        """Alerts that must fire during the middle stage."""
        non_model = "AiwatchNonModelLatencyHigh"
        return {
            "flash-sale": [AlertMatch(non_model, {"service": names.inference, "phase": "queue"})],
            "network": [AlertMatch("AiwatchNetworkLatencyHigh", {"service": names.gateway, "peer": names.inference}),
                        AlertMatch(non_model, {"service": names.gateway, "phase": "network",
                                               "peer": names.inference})],
            "feature-store": [AlertMatch(non_model, {"service": names.gateway, "phase": "features"}),
                              AlertMatch("AiwatchFeatureCacheHitRatioLow", {"cache": names.cache})],
            "model": [AlertMatch("AiwatchModelLatencyHigh", {"service": names.inference})],
            "drift": [AlertMatch("AiwatchLocalInputDrift", {"model": names.model, "feature": "basket_value"})],
            "none": [],
            "batch-backfill": [AlertMatch(non_model, {"service": names.inference, "phase": "queue"})],
        }[self.name]

    def forbidden_alerts(self, names: Names) -> list[AlertMatch]:
        """Alerts that must stay silent: the ones that would point at a part that did not change."""
        model = AlertMatch("AiwatchModelLatencyHigh", {"service": names.inference})
        non_model = "AiwatchNonModelLatencyHigh"
        network = AlertMatch("AiwatchNetworkLatencyHigh", {"service": names.gateway})
        network_phase = AlertMatch(non_model, {"service": names.gateway, "phase": "network"})
        features = AlertMatch(non_model, {"service": names.gateway, "phase": "features"})
        queue = AlertMatch(non_model, {"service": names.inference, "phase": "queue"})
        backlog = AlertMatch("AiwatchQueueBacklog", {"queue": names.model})
        cache = AlertMatch("AiwatchFeatureCacheHitRatioLow", {"cache": names.cache})
        local_drift = AlertMatch("AiwatchLocalInputDrift", {"model": names.model})
        latency = [AlertMatch(non_model, {"service": s}) for s in (names.gateway, names.inference)]
        return {
            "flash-sale": [model],
            "network": [model, queue, backlog, features, cache, local_drift],
            "feature-store": [model, network, network_phase, queue, backlog, local_drift],
            "model": [network, network_phase, features, backlog, cache, local_drift],
            "drift": [model, network, *latency, backlog, cache],
            "none": [model, network, *latency, backlog, cache, local_drift],
            "batch-backfill": [model, local_drift],
        }[self.name]


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("flash-sale", "flash sale", "10x the traffic with shifted inputs and new users: the model's capacity "
             "is the limit and requests wait in its queue", rate_factor=10.0, shifted_inputs=True,
             new_user_share=0.5),
    Scenario("network", "net congested", "the gateway -> inference link is congested (a delaying, "
             "bandwidth-limiting proxy on that hop)"),
    Scenario("feature-store", "slow store", "the feature store slows and its cache was flushed: every lookup "
             "misses and waits for the store"),
    Scenario("model", "gpu throttle", "the model itself slows down, as a GPU that throttles its clocks"),
    Scenario("drift", "input drift", "the inputs shift (basket values up, twice as far as in the sale) at the "
             "same traffic; latency stays flat", shifted_inputs=True, shift=2.0, uses_severity=False),
    Scenario("none", "no fault", "the control: nothing changes", uses_severity=False),
    Scenario("batch-backfill", "batch backfill", "a batch job shares the replicas with the same real-time traffic: "
             "its requests fill the model's queue, real-time requests wait behind them", uses_severity=False,
             batch_workers=BATCH_WORKERS),
)}

#: The scenarios that inject a fault into one part: the root-cause matrix's.
FAULTS: tuple[str, ...] = tuple(name for name in SCENARIOS if name != "batch-backfill")


def get(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r} (one of {', '.join(SCENARIOS)})") from None


def sale_in_flight(severity_seconds: float, model_seconds: float, capacity_rps: float) -> int:
    """The flash sale's bound on requests in flight that makes them wait about ``severity_seconds`` in the queue.

    The sale offers more than the model can serve, so the in-flight bound (a client's connection pool) is what
    the system holds: one batch in the model, about one more on its way to or from it (the gateway, the network),
    and the rest waiting, each batch of them for a call. By Little's law: ``2 + severity / call`` batches, where a
    call serves ``capacity * model_seconds`` requests."""
    per_call = max(1.0, capacity_rps * model_seconds)
    return math.ceil((2 + math.ceil(severity_seconds / model_seconds - 1e-9)) * per_call)
