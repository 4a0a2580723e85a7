"""A tiny simulator of instrumented services: requests with phases and calls, aggregated into the counters that
aiwatch exports, so that diagnose's arithmetic can be checked against the truth it should recover."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from aiwatch.diagnose.window import WindowTotals


@dataclass
class Service:
    name: str
    #: phase -> mean seconds of the phase's own work (outside calls)
    phases: dict[str, float]
    #: phase -> [(peer service or uninstrumented peer name, network seconds per call, calls per request)]
    calls: dict[str, list[tuple[str, float, int]]] = field(default_factory=dict)


@dataclass
class World:
    services: dict[str, Service]
    counters: dict[str, dict[tuple[str, ...], float]] = field(default_factory=dict)
    #: the truth: (service, component key) -> total seconds attributed, for each root request
    slow_threshold: float = 0.1
    uninstrumented_seconds: float = 0.02

    def add(self, read: str, key: tuple[str, ...], value: float) -> None:
        bucket = self.counters.setdefault(read, {})
        bucket[key] = bucket.get(key, 0.0) + value

    def request(self, name: str, rng: np.random.Generator) -> tuple[float, list[tuple[str, str, float]]]:
        """Serve one request of ``name``: returns its total and its timeline (kind, label, seconds)."""
        svc = self.services[name]
        total = 0.0
        timeline: list[tuple[str, str, float]] = []
        call_parts: list[tuple[str, str, float, float]] = []
        for phase, mean in svc.phases.items():
            seconds = float(rng.exponential(mean)) if mean > 0 else 0.0
            for peer, network, n in svc.calls.get(phase, []):
                for _ in range(n):
                    if peer in self.services:
                        server, _ = self.request(peer, rng)
                    else:
                        server = self.uninstrumented_seconds
                    net = float(rng.exponential(network))
                    client = server + net
                    self.add("call_seconds", (name, peer, phase), client)
                    self.add("network_seconds", (name, peer, phase), net)
                    self.add("network_calls", (name, peer, phase), 1.0)
                    self.add("calls", (name, peer, phase), 1.0)
                    call_parts.append((peer, phase, client, net))
                    seconds += client
            self.add("phase_seconds", (name, phase), seconds)
            timeline.append(("phase", phase, seconds))
            total += seconds
        self.add("requests", (name,), 1.0)
        self.add("request_seconds", (name,), total)
        self.add("slow_threshold", (name,), 0.0)
        self.counters["slow_threshold"][(name,)] = self.slow_threshold
        if total > self.slow_threshold:
            self.add("slow_requests", (name,), 1.0)
            for _, phase, seconds in timeline:
                self.add("slow_phase_seconds", (name, phase), seconds)
            for peer, phase, client, net in call_parts:
                self.add("slow_call_seconds", (name, peer, phase), client)
                self.add("slow_network_seconds", (name, peer, phase), net)
        return total, timeline

    def window(self, root: str, n: int, seed: int, start: float = 0.0, seconds: float = 60.0) -> WindowTotals:
        self.counters = {}
        rng = np.random.default_rng(seed)
        for _ in range(n):
            self.request(root, rng)
        return WindowTotals(start, start + seconds, {k: dict(v) for k, v in self.counters.items()})
