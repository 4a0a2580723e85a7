"""Cardinality floods: 20k random names through every entry point that turns traffic into a label.

Entry points: HTTP routes, models and phase names (with the calls made inside those phases and the slow-request
counters), WSGI routes, phases outside requests, peers (a new httpx client per call, and peers naming themselves in
Server-Timing), drift features and categories, queues, caches and batchers.

Each traffic label (route, model, phase, peer, feature, queue, cache; categories map onto the profile's fixed
buckets) passes the registry's one label guard, so after the flood every such label holds at most
``max_label_values`` values plus ``__overflow__``, the overflow counter counted the rest, the guard logged a few
rate-limited warnings instead of 20k lines, and the registry's series and the process' RSS stay under the bounds
documented in docs/limits.md ("Cardinality flood").
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import os
import queue
import random
import string
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

import aiwatch
import aiwatch.client
from aiwatch import safety
from aiwatch.cardinality import OVERFLOW
from aiwatch.drift import DriftMonitor, ReferenceProfile
from aiwatch.metrics import Metrics

FLOOD = 20_000
BOUND = 100  # max_label_values: the default
#: docs/limits.md: the whole flood below (20k names through each entry point) leaves at most this many series
MAX_SERIES = 36_000
#: docs/limits.md: ... and grows the process' resident memory by at most this much
MAX_RSS_GROWTH = 32 * 2**20
TRAFFIC_LABELS = ("route", "model", "phase", "peer", "feature", "queue", "cache")

TOKEN = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"


def names(rng: random.Random, n: int) -> list[str]:
    """``n`` distinct random names (valid phase-name tokens, 6 to 40 characters)."""
    out: set[str] = set()
    while len(out) < n:
        out.add("".join(rng.choices(TOKEN, k=rng.randint(6, 40))))
    return sorted(out)


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def series_by_family(registry: CollectorRegistry) -> dict[str, int]:
    return {family.name: len(family.samples) for family in registry.collect()}


def series(registry: CollectorRegistry) -> int:
    return sum(series_by_family(registry).values())


def label_values(registry: CollectorRegistry, label: str) -> set[str]:
    return {s.labels[label] for family in registry.collect() for s in family.samples if label in s.labels}


# --- one driver per entry point: each pushes every value of ``values`` through it ---------------------------------
def http_routes_and_phases(metrics: Metrics, values: list[str]) -> None:
    """ASGI requests whose route template, model and phase names come from the request; inside the phase, a call
    to a peer that reports a service name of its own choosing; every request slow, so the slow-request counters
    (by phase, by peer and phase) are fed too."""
    def peer(request: httpx.Request) -> httpx.Response:
        name = hashlib.sha1(request.url.raw_path).hexdigest()[:12]  # a new service name per request
        return httpx.Response(200, content=b"ok", headers={"server-timing": f'total;dur=0;desc="svc-{name}"'})

    client = aiwatch.client.instrument_httpx(httpx.AsyncClient(transport=httpx.MockTransport(peer)), service="svc",
                                             metrics=metrics)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        name = scope["path"][1:]
        aiwatch.set_model(name)
        with aiwatch.phase(name):
            await client.get("http://peer.example/call", params={"n": name})
        with aiwatch.phase("inference", model=name[::-1]):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    wrapped = aiwatch.instrument(app, metrics=metrics, service="svc", route_resolver=lambda s: s["path"],
                                 slow_threshold=1e-9)

    async def drive() -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b""}

        async def send(message: dict[str, Any]) -> None:
            pass

        for v in values:
            await wrapped({"type": "http", "method": "GET", "path": f"/{v}", "headers": [], "query_string": b"",
                           "root_path": ""}, receive, send)

    asyncio.run(drive())


def wsgi_routes(metrics: Metrics, values: list[str]) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"ok"]

    wrapped = aiwatch.instrument(app, metrics=metrics, service="wsgi", route_resolver=lambda e: e["PATH_INFO"])
    for v in values:
        body = wrapped({"REQUEST_METHOD": "POST", "PATH_INFO": f"/w/{v}"}, lambda *a: None)
        list(body)
        body.close()


def phases_outside_requests(metrics: Metrics, values: list[str]) -> None:
    aiwatch.instrument(lambda e, s: [], metrics=metrics, service="worker")  # the default recorder: phases go there
    for v in values:
        aiwatch.record_phase(v, 0.001, model=v)


def httpx_client_per_call(metrics: Metrics, values: list[str]) -> None:
    """A new instrumented httpx client per call, to a new host each time, with a route named by the caller (the
    first 2k calls; an httpx client costs a millisecond to build, so the other calls each get a new aiwatch
    transport, which is where each client's recorder and, before the fix, its own label guard came from)."""
    def handler(request: httpx.Request) -> httpx.Response:
        # total 0: the network time is never clamped, so which peers have a clamp counter cannot vary by timing
        return httpx.Response(200, content=b"ok", headers={"server-timing": "total;dur=0"})

    mock = httpx.MockTransport(handler)
    for i, v in enumerate(values):
        url, route = f"http://host{i % 1000}.example:{8000 + i // 1000}/x", {aiwatch.client.ROUTE_EXTENSION: f"/c/{v}"}
        if i < 2000:
            with aiwatch.client.instrument_httpx(httpx.Client(transport=mock), service="gw",
                                                 metrics=metrics) as client:
                client.get(url, extensions=route)
        else:
            transport = aiwatch.client.AiwatchTransport(mock, service="gw", metrics=metrics)
            transport.handle_request(httpx.Request("GET", url, extensions=route)).close()


def drift_features_and_categories(metrics: Metrics, values: list[str]) -> None:
    rng = np.random.default_rng(0)
    profile = ReferenceProfile.build({"x": rng.normal(size=1000), "color": ["red", "blue", "green"] * 333 + ["red"]})
    monitor = DriftMonitor(profile, model="m", metrics=metrics, window_size=500)
    for i, v in enumerate(values):
        monitor.observe({"x": 0.1, "color": v, v: 1})  # an unknown feature name and an unseen category per row
        if i % 1000 == 0:
            monitor.observe_batch({"x": [0.2, 0.3], "color": [v, v[::-1]], f"col_{v}": [1, 2]})
    monitor.evaluate()


def queues_caches_batchers(metrics: Metrics, values: list[str]) -> None:
    for v in values:
        q = aiwatch.instrument_queue(queue.Queue(), v, metrics=metrics)
        q.put(1)
        q.get()
        cache = aiwatch.FeatureCache(v, metrics=metrics, phase=None)
        with cache.lookup() as lookup:
            lookup.hit()

    async def echo(items: list[int]) -> list[int]:
        return items

    async def batches() -> None:
        for v in values[:2000]:  # a batcher is heavier (a worker task each): 2k names are enough to fill the bound
            async with aiwatch.MicroBatcher(echo, max_batch_size=1, queue=f"q{v}", model=f"m{v}",
                                            metrics=metrics) as b:
                await b.submit(1)

    asyncio.run(batches())


DRIVERS: dict[str, Callable[[Metrics, list[str]], None]] = {
    "http routes, models and phases": http_routes_and_phases,
    "wsgi routes": wsgi_routes,
    "phases outside requests": phases_outside_requests,
    "a new httpx client per call": httpx_client_per_call,
    "drift features and categories": drift_features_and_categories,
    "queues, caches and batchers": queues_caches_batchers,
}


def test_a_20k_name_flood_through_every_entry_point_stays_bounded(caplog: pytest.LogCaptureFixture,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(safety, "_burst", safety._BurstLog(burst_seconds=3600))
    # only the first driver's requests are slow (its own threshold): at the default 0.3 s another driver's request
    # slowed by a loaded machine added slow-request series to one flood and not the other
    monkeypatch.setenv("AIWATCH_SLOW_THRESHOLD_SECONDS", "3600")
    caplog.set_level(logging.WARNING, logger="aiwatch")
    rng = random.Random(13)
    # first a flood just past the bound, on another registry: the series it leaves are all a flood can leave, and
    # it warms up imports, code paths and allocator pools before RSS is measured
    small, few = Metrics(CollectorRegistry()), names(rng, 3 * BOUND)
    for drive in DRIVERS.values():
        drive(small, few)
    small_series, small_families = series(small.registry), series_by_family(small.registry)
    del small
    gc.collect()

    metrics = Metrics(CollectorRegistry())
    values = names(rng, FLOOD)
    before = rss()
    for drive in DRIVERS.values():
        drive(metrics, values)
    gc.collect()
    grown = rss() - before
    registry = metrics.registry

    # named in code, not by traffic: the recorders' default model, the drift monitor's model and its profile's
    # features, the phase aiwatch computes, the route of calls that name none
    given_in_code = {"", "m", "x", "color", "overhead", "__unmatched__"}
    for label in TRAFFIC_LABELS:
        seen = label_values(registry, label)
        assert len(seen - {OVERFLOW} - given_in_code) <= BOUND, f"{label}: {len(seen)} values"
        assert OVERFLOW in seen, label
        assert (registry.get_sample_value("aiwatch_label_overflow_total", {"label": label}) or 0) > 0, label
    # categories land in the profile's fixed buckets: its three values, and the buckets for the others
    color_bins = {s.labels["bin"] for family in registry.collect() for s in family.samples
                  if s.labels.get("feature") == "color" and "bin" in s.labels}
    assert color_bins == {"red", "blue", "green", "__other__", "__unseen__"}
    # the guard warned a few times (once per label), not once per value
    overflow_lines = [r for r in caplog.records if "reached its bound" in r.getMessage()]
    assert {r.args[0] for r in overflow_lines if isinstance(r.args, tuple)} <= set(TRAFFIC_LABELS)
    assert len(overflow_lines) <= len(TRAFFIC_LABELS)
    assert len([r for r in caplog.records if "not in the reference profile" in r.getMessage()]) == 1
    total = series(registry)
    print(f"flood of {FLOOD} names through {len(DRIVERS)} entry points: {total} series ({small_series} after "
          f"{3 * BOUND} names), RSS +{grown / 2**20:.1f} MiB")
    families = series_by_family(registry)
    grew = {k: (small_families.get(k), n) for k, n in families.items() if n != small_families.get(k)}
    assert total == small_series, grew  # names past the bound add no series at all
    assert total <= MAX_SERIES
    assert grown <= MAX_RSS_GROWTH


#: Names a JSON body can carry (``json.loads('"\\ud800"')``) but UTF-8 cannot encode: lone surrogates.
UNENCODABLE = ["a\ud800b", "\udfff", "x\ud83dy"]


def test_names_utf8_cannot_encode_leave_the_registry_scrapable() -> None:
    # one such label value made every later scrape fail (UnicodeEncodeError in the exposition), for good: the
    # guard now writes the surrogate out as its escape, in every entry point above that takes a name from traffic
    from prometheus_client import generate_latest

    metrics = Metrics(CollectorRegistry())
    wsgi_routes(metrics, UNENCODABLE)
    aiwatch.instrument(lambda e, s: [], metrics=metrics, service="worker")  # the default recorder
    for name in UNENCODABLE:  # a phase name is a token (refused otherwise); its model is any text
        aiwatch.record_phase("p", 0.001, model=name)
    httpx_client_per_call(metrics, UNENCODABLE)
    drift_features_and_categories(metrics, UNENCODABLE)
    queues_caches_batchers(metrics, UNENCODABLE)
    for name in UNENCODABLE:
        aiwatch.record_tokens(3, 4, model=name)
    text = generate_latest(metrics.registry).decode("utf-8")
    escaped = [name.encode("utf-8", "backslashreplace").decode("utf-8") for name in UNENCODABLE]
    for label in ("route", "model", "feature", "queue", "cache"):
        values = label_values(metrics.registry, label)
        for value in values:
            value.encode("utf-8")  # raises on a surrogate
        assert any(e in value for e in escaped for value in values), (label, values)
    assert "a\\\\ud800b" in text  # the escape's backslash, escaped again by the exposition format
