"""A diagnosis: which parts of a service's request time moved between a baseline and an incident window, the
signals next to them, and a one-line verdict.

    >>> from aiwatch.diagnose.window import WindowTotals
    >>> def window(start, model, network):
    ...     return WindowTotals(start, start + 60, {
    ...         "requests": {("gw",): 60, ("inf",): 60}, "request_seconds": {("gw",): 60 * (model + network + .01),
    ...         ("inf",): 60 * model}, "phase_seconds": {("gw", "call"): 60 * (model + network),
    ...         ("gw", "overhead"): 60 * .01, ("inf", "inference"): 60 * model},
    ...         "call_seconds": {("gw", "inf", "call"): 60 * (model + network)},
    ...         "network_seconds": {("gw", "inf", "call"): 60 * network}})
    >>> d = diagnose_windows(window(0, .03, .005), window(60, .03, .305), "gw")
    >>> print(d.verdict)
    gw mean 45 -> 345 ms at x1.0 load; 100% of the added time is network gw -> inf (+300 ms); the model's own time is flat (+0.0 ms)
    >>> d.contributors[0].part.component, round(d.contributors[0].delta_seconds, 3)
    ('network', 0.3)
"""  # noqa: E501

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiwatch.diagnose.loops import LoopWait, loop_wait, stalled_share, unwatched_notes, wait_estimate
from aiwatch.diagnose.split import Part, graph_services, mean_seconds, request_split, splittable_in, tail_split
from aiwatch.diagnose.window import WindowTotals
from aiwatch.promapi import bucket_bound

DEFAULT_MODEL_PHASES: tuple[str, ...] = ("inference",)
#: The noise floor: a part whose time per request moved by less than this many seconds...
NOISE_FLOOR_SECONDS = 0.002
#: ...or by less than this share of the baseline's mean request time did not move.
NOISE_FLOOR_SHARE = 0.05
#: Load changes within this factor are "the same load" in the verdict.
SAME_LOAD = 1.2
#: A network part is said to be a lower bound when at least this share of its calls in a window had a peer's report
#: longer than the call (their network time recorded as 0: ``aiwatch_network_clamped_total``).
CLAMPED_SHARE = 0.01
#: The signal of each loop's expected wait (:func:`aiwatch.diagnose.loops.wait_estimate`)...
WAIT_SIGNAL = "event loop wait (estimated)"
#: ...its name where neither window has the watched time (an older aiwatch): the mean delay per sample...
MEAN_SIGNAL = "event loop delay (mean)"
#: ...and the share of the time each loop stood still.
STALLED_SIGNAL = "event loop stalled (share of time)"


class DiagnoseError(Exception):
    """Nothing can be diagnosed; the message says why (no traffic, unknown service, unreachable source...)."""

    exit_code = 4


@dataclass(frozen=True)
class WindowSummary:
    """The service's traffic and latency in one window."""

    start: float
    end: float
    requests: float
    rate: float
    mean_seconds: float | None
    p99_seconds: float | None
    error_ratio: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "requests": self.requests, "rate": self.rate,
                "mean_seconds": self.mean_seconds, "p99_seconds": self.p99_seconds, "error_ratio": self.error_ratio}


@dataclass(frozen=True)
class Contributor:
    """One part's time per request in both windows; ``share`` is its delta over the sum of the positive deltas
    (the added time), negative for a part that got faster. ``event_loop``: for a network part that rose, the
    estimated rise of the time its calls waited for the event loops (:mod:`aiwatch.diagnose.loops`)."""

    part: Part
    baseline_seconds: float
    incident_seconds: float
    share: float
    event_loop: LoopWait | None = None

    @property
    def delta_seconds(self) -> float:
        return self.incident_seconds - self.baseline_seconds

    def to_dict(self) -> dict[str, Any]:
        p = self.part
        return {"component": p.component, "service": p.service, "phase": p.phase or None, "peer": p.peer or None,
                "baseline_seconds": self.baseline_seconds, "incident_seconds": self.incident_seconds,
                "delta_seconds": self.delta_seconds, "share": self.share,
                "event_loop": self.event_loop.to_dict() if self.event_loop is not None else None}


@dataclass(frozen=True)
class SignalChange:
    """A supporting signal in both windows (``None`` where the window has no value)."""

    name: str
    labels: dict[str, str]
    baseline: float | None
    incident: float | None
    unit: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "labels": self.labels, "baseline": self.baseline, "incident": self.incident,
                "unit": self.unit}


@dataclass(frozen=True)
class Tail:
    """Seconds spent in slow requests (slower than ``threshold_seconds``, the incident's threshold, or the
    baseline's without one) per request, split the same way. ``baseline_threshold_seconds``: the baseline's
    threshold; where it differs, the two tails count different requests."""

    threshold_seconds: float | None
    baseline_seconds: float
    incident_seconds: float
    baseline_slow_share: float | None
    incident_slow_share: float | None
    contributors: list[Contributor]
    baseline_threshold_seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"threshold_seconds": self.threshold_seconds,
                "baseline_threshold_seconds": self.baseline_threshold_seconds,
                "baseline_seconds": self.baseline_seconds,
                "incident_seconds": self.incident_seconds, "baseline_slow_share": self.baseline_slow_share,
                "incident_slow_share": self.incident_slow_share,
                "contributors": [c.to_dict() for c in self.contributors]}


@dataclass(frozen=True)
class Diagnosis:
    """What moved in ``service``'s request time between ``baseline`` and ``incident``."""

    service: str
    baseline: WindowSummary
    incident: WindowSummary
    contributors: list[Contributor]
    noise_floor_seconds: float
    tail: Tail | None = None
    signals: list[SignalChange] = field(default_factory=list)
    drifted: list[tuple[str, str]] = field(default_factory=list)
    verdict: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def moved(self) -> list[Contributor]:
        """The contributors whose time per request rose by more than the noise floor, largest first."""
        return [c for c in self.contributors if c.delta_seconds > self.noise_floor_seconds]

    @property
    def cause(self) -> str:
        """The top cause as a short key: ``network:gw->inf``, ``model:inf/inference``, ``queue:inf``,
        ``phase:gw/features``, ``overhead:gw``, ``peer:gw->x``, ``drift:model/feature`` or ``none``."""
        if self.moved:
            return cause_key(self.moved[0].part)
        if self.drifted:
            model, feature = self.drifted[0]
            return f"drift:{model}/{feature}"
        return "none"

    def to_dict(self) -> dict[str, Any]:
        return {"service": self.service, "baseline": self.baseline.to_dict(), "incident": self.incident.to_dict(),
                "verdict": self.verdict, "cause": self.cause, "noise_floor_seconds": self.noise_floor_seconds,
                "contributors": [c.to_dict() for c in self.contributors],
                "tail": self.tail.to_dict() if self.tail is not None else None,
                "signals": [s.to_dict() for s in self.signals],
                "drifted_features": [{"model": m, "feature": f} for m, f in self.drifted],
                "notes": list(self.notes)}


def cause_key(part: Part) -> str:
    """The short key of a part (see :attr:`Diagnosis.cause`)."""
    if part.component in ("network", "peer"):
        return f"{part.component}:{part.service}->{part.peer}"
    if part.component in ("model", "phase"):
        return f"{part.component}:{part.service}/{part.phase}"
    return f"{part.component}:{part.service}"


def diagnose_windows(baseline: WindowTotals, incident: WindowTotals, service: str | None = None, *,
                     model_phases: Collection[str] = DEFAULT_MODEL_PHASES,
                     noise_floor: float | None = None) -> Diagnosis:
    """Diagnose ``service`` (default: the entry service, see :func:`entry_service`) between two windows.

    ``noise_floor``: seconds per request below which a part did not move (default: the larger of
    :data:`NOISE_FLOOR_SECONDS` and :data:`NOISE_FLOOR_SHARE` of the baseline's mean request time).
    Raises :class:`DiagnoseError` when there is nothing to diagnose.
    """
    if service is None:
        service = entry_service(baseline, incident)
    known = baseline.services() | incident.services()
    if service not in known:
        served = ", ".join(sorted(known)) or "none"
        raise DiagnoseError(f"no requests recorded for service {service!r} in either window "
                            f"(services with requests: {served})")
    for name, w in (("baseline", baseline), ("incident", incident)):
        if w.total("requests", service) <= 0:
            raise DiagnoseError(f"service {service!r} served no requests in the {name} window "
                                f"({_span(w)}): nothing to compare")
    before, after = summarise(baseline, service), summarise(incident, service)
    floor = noise_floor if noise_floor is not None else max(
        NOISE_FLOOR_SECONDS, NOISE_FLOOR_SHARE * (before.mean_seconds or 0.0))
    # a callee is split in both windows or in neither: its parts cannot move between windows it is missing from
    splittable = splittable_in(baseline, incident)
    contributors = with_loops(baseline, incident, floor,
                              compare(request_split(baseline, service, model_phases, splittable=splittable),
                                      request_split(incident, service, model_phases, splittable=splittable)))
    drifted = newly_drifted(baseline, incident)
    clamped = lower_bound_edges(baseline, incident, contributors, clamped_share)
    unmeasured = lower_bound_edges(baseline, incident, contributors, unmeasured_share)
    overlapped = overlapped_services(contributors, floor)
    graph = graph_services(service, baseline, incident)
    diagnosis = Diagnosis(service, before, after, contributors, floor, _tail(baseline, incident, service,
                                                                               model_phases, splittable),
                          signals(baseline, incident, service), drifted,
                          notes=restart_notes(baseline, incident, graph)
                          + unwatched_notes(baseline, incident, graph)
                          + [clamped_note(*edge) for edge in clamped]
                          + [unmeasured_note(*edge) for edge in unmeasured]
                          + [overlap_note(baseline, incident, s) for s in overlapped])
    lower_bounds = [f"network {caller} -> {peer}"
                    for caller, peer in sorted({(caller, peer) for caller, peer, _, _ in clamped + unmeasured})]
    return Diagnosis(**{**diagnosis.__dict__,
                        "verdict": verdict(diagnosis, lower_bounds, overlapped, len(clamped) + len(unmeasured))})


def clamped_share(w: WindowTotals, caller: str, peer: str) -> float | None:
    """The share of ``caller``'s calls to ``peer`` in ``w`` whose network time was clamped to 0 (the peer reported
    more time than the call took); ``None`` without calls."""
    calls = w.total("network_calls", caller, peer)
    return min(1.0, w.total("network_clamped", caller, peer) / calls) if calls > 0 else None


def lower_bound_edges(baseline: WindowTotals, incident: WindowTotals, contributors: list[Contributor],
                      share: Callable[[WindowTotals, str, str], float | None],
                      ) -> list[tuple[str, str, float | None, float | None]]:
    """``(caller, peer, baseline share, incident share)`` of each network part of the split with at least
    :data:`CLAMPED_SHARE` of its calls in a window counted by ``share`` (:func:`clamped_share`,
    :func:`unmeasured_share`): those calls' network time counts as 0 or not at all, and their whole time as the
    peer's, so the part is a lower bound and the peer's parts upper bounds, whatever the ranking says."""
    edges = sorted({(c.part.service, c.part.peer) for c in contributors if c.part.component == "network"})
    found = []
    for caller, peer in edges:
        before, after = share(baseline, caller, peer), share(incident, caller, peer)
        if max(before or 0.0, after or 0.0) >= CLAMPED_SHARE:
            found.append((caller, peer, before, after))
    return found


def clamped_note(caller: str, peer: str, before: float | None, after: float | None) -> str:
    """The note of a network part found by :func:`lower_bound_edges` with :func:`clamped_share`."""
    return (f"network {caller} -> {peer} is a lower bound: {peer} reported more time than {caller} saw the call take "
            f"in {_share_text(after)} of the calls in the incident window ({_share_text(before)} in the baseline; "
            f"aiwatch_network_clamped_total). Their network time counts as 0 and the whole call as {peer}'s time, so "
            f"{peer}'s parts are upper bounds: compare the total in {peer}'s Server-Timing with the time {caller} "
            "measures (a total that counts time before the request reached it, or read on another clock)")


def unmeasured_share(w: WindowTotals, caller: str, peer: str) -> float | None:
    """The share of ``caller``'s calls to ``peer`` in ``w`` that have no network time: no total came back in the
    peer's report (an error or a timeout before the peer answered, a proxy that drops the header), or the call was
    retried; ``None`` without calls."""
    calls = w.total("calls", caller, peer)
    return min(1.0, max(0.0, 1.0 - w.total("network_calls", caller, peer) / calls)) if calls > 0 else None


def unmeasured_note(caller: str, peer: str, before: float | None, after: float | None) -> str:
    """The note of a network part found by :func:`lower_bound_edges` with :func:`unmeasured_share`."""
    return (f"network {caller} -> {peer} is a lower bound: {_share_text(after)} of {caller}'s calls to {peer} in the "
            f"incident window ({_share_text(before)} in the baseline) have no network time, since no total came "
            f"back from {peer} (an error or a timeout before {peer} answered, a proxy that drops the Server-Timing "
            "header) or the call was retried (aiwatch_client_request_duration_seconds_count against "
            f"aiwatch_network_duration_seconds_count). Their whole time counts as {peer}'s, so {peer}'s parts may "
            f"hold time {peer} never saw: compare them with {peer}'s own request latency, and {caller}'s calls by "
            "status")


def overlapped_services(contributors: list[Contributor], floor: float) -> list[str]:
    """The services of the split whose phases added up to more than their requests by at least ``floor`` per
    request (of the diagnosed service) in a window: their ``unaccounted`` part is that much below 0. Phases that
    run at once (``asyncio.gather``, threads) each count their whole time, so such a service's phase parts
    overstate what they added to its requests."""
    return sorted({c.part.service for c in contributors if c.part.component == "unaccounted"
                   and min(c.baseline_seconds, c.incident_seconds) <= -floor})


def overlap_per_request(w: WindowTotals, service: str) -> float:
    """How much longer than ``service``'s mean request its phases add up to in ``w`` (0 when they do not)."""
    requests = w.total("requests", service)
    if requests <= 0:
        return 0.0
    return max(0.0, (w.total("phase_seconds", service) - w.total("request_seconds", service)) / requests)


def overlap_note(baseline: WindowTotals, incident: WindowTotals, service: str) -> str:
    """The note of a service found by :func:`overlapped_services`."""
    def share(w: WindowTotals) -> str:
        requests = w.total("requests", service)
        return _share_text(min(1.0, w.total("overhead_clamped", service) / requests) if requests > 0 else None)

    return (f"{service}'s phases overlap: in the incident window they add up to "
            f"{ms(overlap_per_request(incident, service))} ms more than its mean request "
            f"({ms(overlap_per_request(baseline, service))} ms in the baseline), from {share(incident)} of its "
            f"requests ({share(baseline)} in the baseline; aiwatch_overhead_clamped_total). Phases that run at once "
            "each count their whole time, so a phase that grew beside a longer one may have added nothing to the "
            f"request; the part 'time outside {service}'s phases' is that overlap, below 0")


def _share_text(share: float | None) -> str:
    return "-" if share is None else f"{share:.0%}" if share >= 0.01 or share == 0 else f"{share:.2%}"


def restart_notes(baseline: WindowTotals, incident: WindowTotals, services: Collection[str]) -> list[str]:
    """A note for each window whose source saw counter resets of ``services`` (the diagnosed call graph's; another
    service's restart undercounts nothing the diagnosis reads) it counts series by series (Prometheus'
    ``increase()``): a histogram's ``_sum`` that grew past its value before the restart counts only the excess."""
    notes = []
    for name, w in (("baseline", baseline), ("incident", incident)):
        resets = sum(w.resets.get(s, 0.0) for s in services)
        if resets > 0:
            count = f"{resets:.0f} counter reset{'' if resets == 1 else 's'}"
            notes.append(f"the {name} window holds a restart ({count}): parts may be undercounted; compare windows "
                         "without a restart")
    return notes


def entry_service(baseline: WindowTotals, incident: WindowTotals) -> str:
    """The service to diagnose when none is named: among services no other service calls in either window (the
    entry points), the one whose mean request time rose the most, then the busiest."""
    services = baseline.services() & incident.services()
    if not services:
        raise DiagnoseError("no service served requests in both windows: nothing to diagnose (is the target "
                            "instrumented with aiwatch, and is there traffic?)")
    # a service called in either window is a callee: its caller's metrics may be missing from the other
    called = {peer for w in (baseline, incident) for read in ("call_seconds", "network_seconds")
              for (_caller, peer, _phase) in w.of(read)}
    roots = sorted(services - called) or sorted(services)

    def rise(name: str) -> tuple[float, float]:
        b, i = mean_seconds(baseline, name) or 0.0, mean_seconds(incident, name) or 0.0
        return i - b, incident.total("requests", name)

    return max(roots, key=rise)


def summarise(w: WindowTotals, service: str) -> WindowSummary:
    requests = w.total("requests", service)
    errors = w.total("errors", service)
    buckets = [(bound, count) for (le,), count in w.matching("request_buckets", service)
               if (bound := bucket_bound(le)) is not None]
    return WindowSummary(w.start, w.end, requests, w.rate("requests", service), mean_seconds(w, service),
                         histogram_quantile(0.99, buckets), errors / requests if requests > 0 else None)


def compare(before: dict[Part, float], after: dict[Part, float]) -> list[Contributor]:
    """Contributors ranked by added time (largest rise first); parts absent from a window count as 0 there."""
    parts = set(before) | set(after)
    added = sum(max(0.0, after.get(p, 0.0) - before.get(p, 0.0)) for p in parts)
    rows = [Contributor(p, before.get(p, 0.0), after.get(p, 0.0),
                        (after.get(p, 0.0) - before.get(p, 0.0)) / added if added > 0 else 0.0) for p in parts]
    return sorted(rows, key=lambda c: (-c.delta_seconds, c.part))


def with_loops(baseline: WindowTotals, incident: WindowTotals, floor: float,
               contributors: list[Contributor]) -> list[Contributor]:
    """``contributors`` with the event loops' estimated share of each network part that rose by more than
    ``floor``."""
    out = []
    for c in contributors:
        wait = None
        if c.part.component == "network" and c.delta_seconds > floor:
            wait = loop_wait(baseline, incident, c.part, c.incident_seconds, c.delta_seconds)
        out.append(dataclasses.replace(c, event_loop=wait) if wait is not None else c)
    return out


def _tail(baseline: WindowTotals, incident: WindowTotals, service: str, model_phases: Collection[str],
          splittable: Collection[str]) -> Tail | None:
    if not (baseline.of("slow_phase_seconds") or incident.of("slow_phase_seconds")):
        return None  # the services predate the slow-request counters
    before = tail_split(baseline, service, model_phases, splittable=splittable)
    after = tail_split(incident, service, model_phases, splittable=splittable)
    def threshold(w: WindowTotals) -> float | None:
        found = w.total("slow_threshold", service)
        return found if found > 0 else None

    def share(w: WindowTotals) -> float | None:
        requests = w.total("requests", service)
        return w.total("slow_requests", service) / requests if requests > 0 else None

    baseline_threshold = threshold(baseline)
    incident_threshold = threshold(incident)
    return Tail(incident_threshold if incident_threshold is not None else baseline_threshold,
                sum(before.values()), sum(after.values()), share(baseline), share(incident),
                compare(before, after), baseline_threshold)


def newly_drifted(baseline: WindowTotals, incident: WindowTotals) -> list[tuple[str, str]]:
    """``(model, feature)`` pairs flagged as drifted in the incident window but not in the baseline."""
    before = {k for k, v in baseline.of("drift_detected").items() if v >= 0.5}
    return sorted((k[0], k[1]) for k, v in incident.of("drift_detected").items() if v >= 0.5 and k not in before)


def signals(baseline: WindowTotals, incident: WindowTotals, service: str) -> list[SignalChange]:
    """The supporting signals: load, errors, queues, in-flight, event loops, batching, cache, GPU and drift, in both
    windows."""
    out: list[SignalChange] = []

    def add(name: str, labels: dict[str, str], unit: str, before: float | None, after: float | None) -> None:
        if before is not None or after is not None:
            out.append(SignalChange(name, labels, before, after, unit))

    def ratio(w: WindowTotals, num: float, den: float) -> float | None:
        return num / den if den > 0 else None

    add("request rate", {"service": service}, "req/s", baseline.rate("requests", service),
        incident.rate("requests", service))
    add("error ratio", {"service": service}, "ratio",
        ratio(baseline, baseline.total("errors", service), baseline.total("requests", service)),
        ratio(incident, incident.total("errors", service), incident.total("requests", service)))
    for read, name, unit, label in (("queue_depth", "queue depth", "items", "queue"),
                                    ("in_flight", "in-flight requests", "requests", "service"),
                                    ("gpu_utilization", "GPU utilization", "ratio", "gpu"),
                                    ("gpu_memory_used", "GPU memory used", "bytes", "gpu")):
        for key in _keys(baseline, incident, read):
            add(name, {label: key[0]}, unit, baseline.of(read).get(key), incident.of(read).get(key))
    for loop in sorted({k[0] for w in (baseline, incident) for k in w.of("loop_delay_seconds")}):
        # how long an event arriving at a random time waited for the loop (loops.py), and the share of the time it
        # stood still (what AiwatchEventLoopDelayHigh fires on); without the watched time, the mean delay per sample
        before, after = wait_estimate(baseline, loop), wait_estimate(incident, loop)
        watched = any(e is not None and e.watched for e in (before, after))
        add(WAIT_SIGNAL if watched else MEAN_SIGNAL, {"service": loop}, "s",
            None if before is None else before.seconds, None if after is None else after.seconds)
        add(STALLED_SIGNAL, {"service": loop}, "ratio", stalled_share(baseline, loop), stalled_share(incident, loop))
    for (model,) in sorted({k for w in (baseline, incident) for k in w.of("batches")}):
        add("batch size", {"model": model}, "items",
            ratio(baseline, baseline.total("batch_items", model), baseline.total("batches", model)),
            ratio(incident, incident.total("batch_items", model), incident.total("batches", model)))
    for cache in sorted({k[0] for w in (baseline, incident) for k in w.of("cache_lookups")}):
        add("cache hit ratio", {"cache": cache}, "ratio",
            *(ratio(w, w.of("cache_lookups").get((cache, "hit"), 0.0), w.total("cache_lookups", cache))
              for w in (baseline, incident)))
    for key in _keys(baseline, incident, "gpu_throttle"):
        add("GPU throttled", {"gpu": key[0], "reason": key[1]}, "0/1", baseline.of("gpu_throttle").get(key),
            incident.of("gpu_throttle").get(key))
    for key in _keys(baseline, incident, "drift_detected"):
        add("drift detected", {"model": key[0], "feature": key[1]}, "0/1", baseline.of("drift_detected").get(key),
            incident.of("drift_detected").get(key))
    return out


def _keys(baseline: WindowTotals, incident: WindowTotals, read: str) -> list[tuple[str, ...]]:
    return sorted(set(baseline.of(read)) | set(incident.of(read)))


def verdict(d: Diagnosis, lower_bounds: Collection[str] = (), overlapped: Collection[str] = (),
            lower_bound_notes: int | None = None) -> str:
    """One line: the latency change and the load, the part that added the most time, the part that fell the most
    (when one fell beyond the noise floor), and the model's own time; and a caution naming the network parts that
    are ``lower_bounds`` (:func:`lower_bound_edges`: the split of their peers' time is not to be trusted), pointing
    at their ``lower_bound_notes`` (default: one each), and the services whose phases ``overlapped``
    (:func:`overlapped_services`: their phase parts overstate)."""
    line = _verdict(d)
    if lower_bounds:
        are = "is a lower bound" if len(lower_bounds) == 1 else "are lower bounds"
        notes = len(lower_bounds) if lower_bound_notes is None else lower_bound_notes
        line += f"; caution: {', '.join(lower_bounds)} {are} (see the note{'s' if notes > 1 else ''})"
    if overlapped:
        whose = ", ".join(f"{s}'s" for s in overlapped)
        line += f"; caution: {whose} phases overlap (see the note{'s' if len(overlapped) > 1 else ''})"
    return line


def _verdict(d: Diagnosis) -> str:
    b, i = d.baseline, d.incident
    if b.p99_seconds is not None and i.p99_seconds is not None:
        head = f"{d.service} p99 {ms(b.p99_seconds)} -> {ms(i.p99_seconds)} ms"
    else:
        head = f"{d.service} mean {ms(b.mean_seconds)} -> {ms(i.mean_seconds)} ms"
    load = i.rate / b.rate if b.rate > 0 else math.inf
    head += f" at x{load:.1f} load"
    model = sum(c.delta_seconds for c in d.contributors if c.part.component == "model")
    drift = ", ".join(f"{f} ({m})" for m, f in d.drifted)
    moved = d.moved
    if not moved:
        line = f"{head}; no part moved by more than the noise floor ({ms(d.noise_floor_seconds)} ms)"
        return f"{line}; inputs drifted: {drift}" if drift else line
    top = moved[0]
    line = (f"{head}; {top.share:.0%} of the added time is {top.part.describe()} "
            f"({signed_ms(top.delta_seconds)} ms){loop_clause(top)}")
    line += _offset(d, top)
    if top.part.component != "model":
        trend = "flat" if abs(model) <= d.noise_floor_seconds else ("up" if model > 0 else "down")
        line += f"; the model's own time is {trend} ({signed_ms(model)} ms)"
    elif len(moved) > 1:
        line += (f"; next: {moved[1].part.describe()} ({signed_ms(moved[1].delta_seconds)} ms)"
                 f"{loop_clause(moved[1])}")
    if drift:
        line += f"; inputs drifted: {drift}"
    return line


def loop_clause(c: Contributor) -> str:
    """``, of which the event loop delay of <service> rose +N ms (an estimate): ...`` for a network part whose rise
    the loops explain (:attr:`LoopWait.explains`); empty otherwise."""
    wait = c.event_loop
    if wait is None or not wait.explains:
        return ""
    names = wait.starved()
    seconds = sum(s for name, s in ((wait.caller, wait.caller_seconds), (wait.peer, wait.peer_seconds))
                  if name in names and s is not None)
    if len(names) == 1:
        whose, starved = f"delay of {names[0]}", "its loop is starved"
    else:
        whose, starved = f"delays of {' and '.join(names)}", "their loops are starved"
    return (f", of which the event loop {whose} rose {signed_ms(seconds)} ms (an estimate): {starved} "
            "(CPU-bound work on the loop or CPU saturation), not the wire")


def _offset(d: Diagnosis, top: Contributor) -> str:
    """``; offset by <part> (-N ms)``: the part that fell the most beyond the noise floor, so that an added time
    larger than the change of the mean is explained. The model's own fall is said by the model's trend instead."""
    fell = [c for c in d.contributors if c.delta_seconds < -d.noise_floor_seconds
            and (top.part.component == "model" or c.part.component != "model")]
    if not fell:
        return ""
    most = min(fell, key=lambda c: (c.delta_seconds, c.part))
    return f"; offset by {most.part.describe()} ({signed_ms(most.delta_seconds)} ms)"


def ms(seconds: float | None) -> str:
    """Milliseconds with sensible precision (``'-'`` for no value)."""
    if seconds is None:
        return "-"
    value = seconds * 1000.0
    text = f"{value:.1f}" if abs(value) < 10 else f"{value:.0f}"
    return text if text.strip("-0.") else text.lstrip("-")  # a rounding residue is 0, not "-0.0"


def signed_ms(seconds: float) -> str:
    text = ms(abs(seconds))
    return f"-{text}" if seconds < 0 and text.strip("0.") else f"+{text}"


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """PromQL's ``histogram_quantile`` over cumulative ``(upper bound, count)`` buckets."""
    from aiwatch.console.source import histogram_quantile as quantile

    return quantile(q, buckets)


def _span(w: WindowTotals) -> str:
    import datetime as dt

    def fmt(t: float) -> str:
        return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")

    return f"{fmt(w.start)} to {fmt(w.end)} UTC"
