"""Synthetic traffic recorded through aiwatch's real recorders, scraped on a synthetic clock: a ``gateway`` whose
``inference_call`` phase calls an ``inference`` service over a network (the call recorded by a real
:class:`~aiwatch.client._core.ClientRecorder` from the callee's Server-Timing), with the exposition of every
"scrape" kept, so that one history can be fed to every source diagnose reads:

- :meth:`Traffic.openmetrics`: one OpenMetrics file with timestamps, for ``promtool tsdb create-blocks-from
  openmetrics`` (a real Prometheus then serves it);
- :attr:`Traffic.scrapes`: ``(time, Prometheus text)`` per scrape, for :meth:`ScrapeSource.record`;
- :meth:`Traffic.samples`: the parsed scrape at a time, for :func:`totals_from_snapshots`.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from prometheus_client import CollectorRegistry, generate_latest

from aiwatch.client._core import ClientRecorder
from aiwatch.diagnose import Diagnosis, diagnose_windows, totals_from_snapshots
from aiwatch.metrics import Metrics
from aiwatch.scrape import Samples, parse_metrics
from aiwatch.servertiming import format_server_timing
from aiwatch.timing import RequestRecorder
from tests.background import record_background_phase
from tests.diagnose.loop_stalls import blocks_after_gaps, sample


@dataclass(frozen=True)
class Means:
    """Mean seconds of each part of one gateway request (each drawn uniformly in [0.5, 1.5] x mean)."""

    features: float = 0.004
    call_own: float = 0.0005
    network: float = 0.005
    queue: float = 0.003
    model: float = 0.030
    inference_overhead: float = 0.001
    gateway_overhead: float = 0.001
    queue_depth: float = 3.0
    #: mean event loop delays (add the same to ``network``: a starved loop's wait is network time to the caller)
    gateway_loop: float = 0.0005
    inference_loop: float = 0.0005
    #: in a history whose loops' sampler is simulated (``watched``): the inference loop stands still this many
    #: seconds at a time (uniform in [0.5, 1.5] x it; 0: never) after exponential gaps of ``stall_gap`` seconds on
    #: average (add :func:`stall_wait` to ``network``)
    inference_stall: float = 0.0
    stall_gap: float = 3.0
    #: seconds the inference service adds to the total it reports beyond its own time (a bogus report: more than
    #: the network's mean makes the caller's network time negative, clamped to 0)
    reported_extra: float = 0.0
    #: the share of the gateway's features lookup that runs beside its call to inference (the call starts that
    #: much earlier): 1 hides the whole lookup behind the call, and the gateway's phases add up to more than its
    #: requests (their overhead clamped to 0 and counted)
    overlap: float = 0.0
    #: the share of the gateway's calls that get no answer: they time out after ``unanswered_after`` seconds without
    #: reaching inference (a load balancer's queue, a partition), recorded with no Server-Timing: the client labels
    #: them ``inference``, the name that answered its calls to ``/predict`` at that address before
    unanswered: float = 0.0
    unanswered_after: float = 0.2
    #: seconds a background job in the gateway's process records per gateway request as its phase ``reindex``,
    #: outside any request (``aiwatch.record_phase`` with the gateway's recorder as the default, as
    #: ``aiwatch.instrument`` sets it): not request time
    background: float = 0.0


def stall_wait(stall: float, gap: float) -> float:
    """The expected wait of an arrival at a random time on a loop standing still as :class:`Means` says: the
    stalls' rate times the mean of their square, halved."""
    return (stall ** 2 + stall ** 2 / 12) / 2 / (gap + stall)


#: event loop delay samples per service per scrape (drawn from their own random sequence: the requests' draws are
#: the same with or without them)
LOOP_SAMPLES = 20


class Traffic:
    """Records requests at a synthetic clock and keeps a scrape every ``interval`` seconds."""

    def __init__(self, start: float, interval: float = 15.0, seed: int = 3, slow_threshold: float = 0.1,
                 gateway: str = "gateway", inference: str = "inference", watched: bool = False) -> None:
        self.registry = CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.gateway = RequestRecorder(self.metrics, gateway, slow_threshold=slow_threshold)
        self.inference = RequestRecorder(self.metrics, inference, "ranker", slow_threshold=slow_threshold)
        self.client = ClientRecorder(service=gateway, metrics=self.metrics)
        self.rng = random.Random(seed)
        self.loop_rng = random.Random(seed + 1000)
        #: the loops' sampler simulated (tests/diagnose/loop_stalls.py) over each scrape interval, with the watched
        #: time (aiwatch_event_loop_sampled_seconds_total); else LOOP_SAMPLES draws around the means, without it
        self.watched = watched
        self.clock = start
        self.interval = interval
        self.scrapes: list[tuple[float, str]] = []
        self._parsed: dict[float, Samples] = {}
        self.scrape()

    def _draw(self, mean: float) -> float:
        return mean * self.rng.uniform(0.5, 1.5)

    def request(self, m: Means) -> None:
        if m.background:  # a background job's step, into the gateway's metrics
            record_background_phase(self.gateway, "reindex", m.background)
        t = self.clock
        gw = self.gateway.begin(start=t)
        features = self._draw(m.features)
        gw.add("features", None, features)
        own = t + features * (1.0 - m.overlap)  # the call phase's start: the lookup's end, or beside it
        call_start = own + self._draw(m.call_own)
        if m.unanswered and self.rng.random() < m.unanswered:  # drawn only then: the other histories keep theirs
            call_end = call_start + m.unanswered_after
            peer = self.client.record(call_start, call_end, "10.0.0.2:8001", "/predict", "ReadTimeout", None, gw,
                                      "inference_call", "server_timing")
            assert peer == self.inference.service, peer
            gw.add("inference_call", None, call_end - own)
            self.gateway.finish(gw, "/recommend", "POST", "504", end=call_end + self._draw(m.gateway_overhead))
            return
        served = self.inference.begin(start=call_start)
        parts = [("queue", self._draw(m.queue)), ("inference", self._draw(m.model))]
        for name, seconds in parts:
            served.add(name, None, seconds)
        total = sum(s for _, s in parts) + self._draw(m.inference_overhead)
        self.inference.finish(served, "/predict", "POST", "200", end=call_start + total)
        call_end = call_start + total + self._draw(m.network)
        timing = format_server_timing(parts, overhead=0.0, total=total + m.reported_extra,
                                      service=self.inference.service)
        self.client.record(call_start, call_end, "10.0.0.2:8001", "/predict", "200", timing, gw, "inference_call",
                           "server_timing")
        gw.add("inference_call", None, call_end - own)
        self.gateway.finish(gw, "/recommend", "POST", "200", end=call_end + self._draw(m.gateway_overhead))

    def run(self, seconds: float, per_scrape: int, means: Means) -> None:
        """``seconds`` of traffic: ``per_scrape`` requests then a scrape, every ``interval`` seconds."""
        for _ in range(round(seconds / self.interval)):
            for _ in range(per_scrape):
                self.request(means)
            self.metrics.queue_depth.labels("predict").set(self._draw(means.queue_depth))
            for recorder, delay in ((self.gateway, means.gateway_loop), (self.inference, means.inference_loop)):
                if self.watched:
                    self._sample_loop(recorder.service, means.inference_stall if recorder is self.inference else 0.0,
                                      means.stall_gap)
                    continue
                for _ in range(LOOP_SAMPLES):
                    self.metrics.event_loop_delay.labels(recorder.service).observe(
                        delay * self.loop_rng.uniform(0.5, 1.5))
            self.clock += self.interval
            self.scrape()

    def _sample_loop(self, service: str, stall: float, gap: float) -> None:
        """A scrape interval of the loop sampler (every 0.1 s) over a loop standing still in stalls of about
        ``stall`` seconds after exponential gaps of ``gap`` seconds on average (none for 0)."""
        rng = self.loop_rng
        blocks = blocks_after_gaps(rng, self.interval, lambda: rng.expovariate(1 / gap),
                                   lambda: stall * rng.uniform(0.5, 1.5)) if stall > 0 else []
        sampled = sample(blocks, self.interval, seed=rng.randrange(2**32))
        for delay in sampled.delays:
            self.metrics.event_loop_delay.labels(service).observe(delay)
        self.metrics.event_loop_sampled.labels(service).inc(sampled.watched)

    def scrape(self) -> None:
        self.scrapes.append((self.clock, generate_latest(self.registry).decode()))

    def samples(self, at: float) -> Samples:
        """The scrape taken at ``at``, parsed."""
        if at not in self._parsed:
            self._parsed[at] = parse_metrics(next(text for t, text in self.scrapes if t == at))
        return self._parsed[at]

    def openmetrics(self) -> str:
        """Every scrape as one OpenMetrics text with timestamps (:func:`openmetrics`)."""
        return openmetrics(self.scrapes, self.samples)


def openmetrics(scrapes: Sequence[tuple[float, str]], parsed: Callable[[float], Samples] | None = None) -> str:
    """``(time, Prometheus text)`` scrapes as one OpenMetrics text with timestamps (families grouped, each series'
    points in the scrapes' order: time order), the input of ``promtool tsdb create-blocks-from openmetrics``;
    ``parsed``: the scrape at a time, parsed (default: each text parsed here; scrapes of several endpoints, their
    series told apart by their labels, may then share a time)."""
    types: dict[str, str] = {}
    points: dict[str, dict[tuple[tuple[str, str], ...], list[tuple[float, float]]]] = {}
    family_of: dict[str, tuple[str, str]] = {}
    for t, text in scrapes:
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split()
                types[name] = kind
        for name, series in (parsed(t) if parsed else parse_metrics(text)).items():
            family = _family(name, types)
            family_of[name] = family
            for key, value in series.items():
                points.setdefault(name, {}).setdefault(key, []).append((t, value))
    out: list[str] = []
    for family, kind in sorted(set(family_of.values())):
        out.append(f"# TYPE {family} {kind}")
        for name in sorted(n for n, f in family_of.items() if f == (family, kind)):
            for key, values in sorted(points[name].items()):
                labels = ",".join(f'{k}="{_escape(v)}"' for k, v in key)
                for t, value in values:
                    out.append(f"{name}{{{labels}}} {value!r} {t:.3f}")
    return "\n".join(out) + "\n# EOF\n"


def _family(name: str, types: dict[str, str]) -> tuple[str, str]:
    """The OpenMetrics family and type of a sample of the text format (where a counter's TYPE line names the
    sample, ``x_total``, and OpenMetrics' names the family, ``x``)."""
    kind = types.get(name)
    if kind == "counter":
        return name.removesuffix("_total"), "counter"
    if kind is not None:
        return name, "unknown" if kind == "untyped" else kind
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if base != name and types.get(base) == "histogram":
            return base, "histogram"
    return name, "unknown"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


BASELINE, INCIDENT, IDLE = 1200.0, 300.0, 300.0
INTERVAL, PER_SCRAPE = 30.0, 60


@dataclass
class History:
    """A recorded history and its windows' edges: baseline ``[start, incident_start]``, incident
    ``[incident_start, incident_end]``, then no traffic until ``idle_end``."""

    traffic: Traffic
    start: float
    incident_start: float
    incident_end: float
    idle_end: float


@functools.lru_cache(maxsize=8)
def history(injected: Means, seed: int = 3, watched: bool = False) -> History:
    """A baseline at the default means, an incident with ``injected`` at the same load, then no traffic at all
    (the services stay up: their counters stop growing). Starts 3 hours ago, on the scrape interval's grid.
    ``watched``: the loops' sampler simulated, with the watched time (:attr:`Traffic.watched`)."""
    start = float(int(time.time() - 3 * 3600) // INTERVAL * INTERVAL)
    traffic = Traffic(start, INTERVAL, seed=seed, watched=watched)
    traffic.run(BASELINE, PER_SCRAPE, Means())
    traffic.run(INCIDENT, PER_SCRAPE, injected)
    incident_end = traffic.clock
    traffic.run(IDLE, 0, Means())
    return History(traffic, start, start + BASELINE, incident_end, traffic.clock)


@functools.lru_cache(maxsize=4)
def restarted_history(injected: Means, seed: int = 3, start: float | None = None, gateway: str = "gateway",
                      inference: str = "inference") -> History:
    """As :func:`history`, but the services restart when the incident starts: every counter starts again from 0
    (the last scrape before the restart is the incident window's first), then serves the incident. ``start``:
    another history's, to lay the two side by side; ``gateway``, ``inference``: the services' names."""
    if start is None:
        start = float(int(time.time() - 3 * 3600) // INTERVAL * INTERVAL)
    traffic = Traffic(start, INTERVAL, seed=seed, gateway=gateway, inference=inference)
    traffic.run(BASELINE, PER_SCRAPE, Means())
    restarted = Traffic(traffic.clock, INTERVAL, seed=seed + 1, gateway=gateway, inference=inference)
    restarted.scrapes.clear()  # its first scrape, before any request, is at the time of the last one before it
    restarted.run(INCIDENT, PER_SCRAPE, injected)
    traffic.scrapes.extend(restarted.scrapes)
    traffic.clock = restarted.clock
    return History(traffic, start, start + BASELINE, traffic.clock, traffic.clock)


def from_snapshots(h: History, service: str = "gateway") -> Diagnosis:
    """The diagnosis of ``h``'s two windows from their edges' snapshots."""
    s = h.traffic.samples
    return diagnose_windows(totals_from_snapshots(s(h.start), s(h.incident_start), h.start, h.incident_start),
                            totals_from_snapshots(s(h.incident_start), s(h.incident_end), h.incident_start,
                                                  h.incident_end), service)


def slower(**parts: float) -> Means:
    """The default means with some parts slower by the given seconds."""
    base = Means()
    return replace(base, **{k: getattr(base, k) + v for k, v in parts.items()})
