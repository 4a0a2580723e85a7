"""The arithmetic of diagnose: one service's time per request, split into parts that add up exactly.

aiwatch's phases partition every request (``overhead`` is the remainder), so a service's mean request time is the
sum of its phases' time per request. A phase in which the service called another service splits further: the
calls' client-observed time is the network time (client time minus the time the callee reported back) plus the
callee's own server time, and the callee's server time splits into the callee's phases, down the call graph::

    gateway request ─┬─ features
                     ├─ inference_call ─┬─ (the phase's own time outside the call)
                     │                  ├─ network gateway -> inference
                     │                  └─ inference server time ─┬─ queue
                     │                                            ├─ inference   (the model)
                     │                                            └─ overhead
                     └─ overhead

What is exact and what is not:

* exact: the parts of one service add up to its mean request time (a part ``unaccounted`` holds any difference,
  e.g. phases that ran at once, and is normally 0; phases recorded outside a request have their own histogram and
  are not read); the network time and the callee's server time of the calls made *by this caller*;
* proportional: the callee's server time is split among the callee's phases in the proportions of *all* the
  callee's requests in the window. When the callee serves other callers whose requests look different, this split
  is an estimate; the total it splits is still exact.

The same split applies to the tail (:func:`tail_split`): per-phase seconds counted only for requests slower than
the service's latency objective, per request of the service. Unlike a percentile, that measure adds up.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from aiwatch.diagnose.window import WindowTotals

OVERHEAD = "overhead"
#: How deep the split follows the call graph (a call cycle stops earlier: a service is not split inside itself).
MAX_DEPTH = 8


@dataclass(frozen=True, order=True)
class Part:
    """One part of a request's time.

    ``component`` is one of:

    - ``model``: a phase that is the model's own time (``latency.model_phases``, default ``inference``);
    - ``queue``: the ``queue`` phase (waiting for a worker or a batch);
    - ``overhead``: request time outside every named phase;
    - ``phase``: any other named phase (``features``...), or what is left of a phase after its calls;
    - ``network``: the time between ``service`` and ``peer``, measured by ``service``;
    - ``peer``: the server time of a peer that is not split into its own parts: it is not instrumented with
      aiwatch, or diagnose cannot split it the same way in both windows (no requests of it recorded in one), or
      splitting it would go round a call cycle or deeper than :data:`MAX_DEPTH`;
    - ``unaccounted``: the difference between the request time and its phases (normally 0).
    """

    component: str
    service: str
    phase: str = ""
    peer: str = ""

    def describe(self) -> str:
        """A short English name for the part, as the verdict uses it."""
        if self.component == "network":
            return f"network {self.service} -> {self.peer}"
        if self.component == "peer":
            return f"{self.peer}'s server time (not split into its parts), called by {self.service}"
        if self.component == "model":
            return f"the model's own time in {self.service} ({self.phase})"
        if self.component == "queue":
            return f"queue wait in {self.service}"
        if self.component == "overhead":
            return f"overhead in {self.service}"
        if self.component == "unaccounted":
            return f"time outside {self.service}'s phases"
        return f"{self.phase} in {self.service}"


def classify(phase: str, model_phases: Collection[str]) -> str:
    """The component of a phase name."""
    if phase in model_phases:
        return "model"
    if phase == OVERHEAD:
        return "overhead"
    if phase == "queue" or phase.startswith("queue"):
        return "queue"
    return "phase"


def mean_seconds(w: WindowTotals, service: str) -> float | None:
    """The service's mean request time in the window, ``None`` without requests."""
    requests = w.total("requests", service)
    return w.total("request_seconds", service) / requests if requests > 0 else None


def request_split(w: WindowTotals, service: str, model_phases: Collection[str] = ("inference",), *,
                  splittable: Collection[str] | None = None) -> dict[Part, float]:
    """The service's mean request time in ``w``, split into parts (seconds per request) that add up to it.

    Empty when the service served no request in the window. ``splittable``: the callees that may be split into
    their own parts (default: every one with requests in ``w``); any other callee's server time is one ``peer``
    part. Two windows compared must be split alike, or a callee's parts would seem to vanish from one of them.
    """
    out: dict[Part, float] = {}
    _split(w, service, 1.0, False, model_phases, (service,), out, splittable)
    return out


def tail_split(w: WindowTotals, service: str, model_phases: Collection[str] = ("inference",), *,
               splittable: Collection[str] | None = None) -> dict[Part, float]:
    """Seconds spent in the service's *slow* requests (slower than its latency objective), per request of the
    service, split into parts that add up to it. Empty without requests or without the slow-request counters.
    ``splittable`` as in :func:`request_split`."""
    out: dict[Part, float] = {}
    _split(w, service, 1.0, True, model_phases, (service,), out, splittable)
    return out


def splittable_in(*windows: WindowTotals) -> set[str]:
    """The services that can be split into their parts in every one of ``windows`` (a positive mean request time
    in each)."""
    found = [{s for s in w.services() if (mean_seconds(w, s) or 0.0) > 0} for w in windows]
    return set.intersection(*found) if found else set()


def _split(w: WindowTotals, service: str, scale: float, slow: bool, model_phases: Collection[str],
           path: tuple[str, ...], out: dict[Part, float], splittable: Collection[str] | None) -> None:
    requests = w.total("requests", service)
    if requests <= 0:
        return
    prefix = "slow_" if slow else ""
    phases = {k[0]: v / requests for k, v in w.matching(f"{prefix}phase_seconds", service)}
    calls: dict[str, dict[str, tuple[float, float]]] = {}
    for (peer, phase), seconds in w.matching(f"{prefix}call_seconds", service):
        calls.setdefault(phase, {})[peer] = (seconds / requests, 0.0)
    for (peer, phase), seconds in w.matching(f"{prefix}network_seconds", service):
        client, _ = calls.setdefault(phase, {}).get(peer, (0.0, 0.0))
        calls[phase][peer] = (client, seconds / requests)

    whole = (w.total("slow_phase_seconds", service) if slow else w.total("request_seconds", service)) / requests
    accounted = 0.0
    for phase, seconds in phases.items():
        accounted += seconds
        own = seconds
        for peer, (client, network) in calls.get(phase, {}).items():
            own -= client
            _add(out, Part("network", service, phase, peer), scale * network)
            _callee(w, peer, service, phase, scale * (client - network), model_phases, path, out, splittable)
        _add(out, Part(classify(phase, model_phases), service, phase), scale * own)
    if not slow:
        _add(out, Part("unaccounted", service), scale * (whole - accounted))


def _callee(w: WindowTotals, peer: str, caller: str, phase: str, server_seconds: float,
            model_phases: Collection[str], path: tuple[str, ...], out: dict[Part, float],
            splittable: Collection[str] | None) -> None:
    """Split the server time a caller saw from ``peer`` among the peer's own parts (proportionally)."""
    peer_mean = mean_seconds(w, peer)
    if (peer_mean is None or peer_mean <= 0 or peer in path or len(path) >= MAX_DEPTH
            or (splittable is not None and peer not in splittable)):
        _add(out, Part("peer", caller, phase, peer), server_seconds)
        return
    _split(w, peer, server_seconds / peer_mean, False, model_phases, (*path, peer), out, splittable)


def _add(out: dict[Part, float], part: Part, seconds: float) -> None:
    out[part] = out.get(part, 0.0) + seconds


def graph_services(service: str, *windows: WindowTotals) -> set[str]:
    """``service`` and the peers it calls, directly or through other services, in any of ``windows``: the services
    whose metrics its diagnosis reads."""
    graphs = [call_graph(w) for w in windows]
    found, todo = {service}, [service]
    while todo:
        caller = todo.pop()
        for peer in set().union(*(g.get(caller, set()) for g in graphs)) - found:
            found.add(peer)
            todo.append(peer)
    return found


def call_graph(w: WindowTotals) -> dict[str, set[str]]:
    """``caller -> peers`` from the calls recorded in the window (peers that are services or not)."""
    graph: dict[str, set[str]] = {}
    for (caller, peer, _phase), seconds in w.of("call_seconds").items():
        if seconds > 0:
            graph.setdefault(caller, set()).add(peer)
    return graph
