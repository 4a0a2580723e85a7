"""Floods of propagator headers with B3 as the global propagator (``OTEL_PROPAGATORS=b3multi``), through real servers:
uvicorn (ASGI), werkzeug (WSGI) and grpcio (the call's metadata).

Two requests: one that repeats ``X-B3-TraceId`` and ``X-B3-SpanId`` 500 times each (the first pair a real context,
the rest other ids), and one that carries a B3 context among 10,000 junk headers (some named like B3's:
``x-b3-junk-N``). For each: the app's response is the one the same app gives without aiwatch, aiwatch counts no
error of its own, the SERVER span's parent is the one OpenTelemetry's B3 propagator picks when called directly on
the request's headers as the app saw them (OpenTelemetry's own instrumentations' carrier: every value of a header,
in order, of which B3 reads the first; behind werkzeug, which joins a repeated header with commas, the joined value,
which B3 reads as no context), and the work aiwatch hands the propagator is bounded: one ``extract`` per request, on
a carrier of B3's headers alone, each value one header's (the server's joined one behind werkzeug), however many
other headers came. Nothing here is timed.

The servers (tests/propagation.py) have their own limits raised so that the floods reach aiwatch.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.propagators.b3 import B3MultiFormat
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from aiwatch.metrics import Metrics
from aiwatch.tracing import B3_FIELDS
from tests.propagation import SERVERS, Seen, ids, recording, server_spans, without_host
from tests.servers import wait_until
from tests.spans import global_textmap

pytestmark = pytest.mark.slow

TRACE, SPAN = "463ac35c9f6413ad48485a3953bb6124", "a2fb4a1d1a96d312"
REPEATS = 500
JUNK = 10_000  # a header block of about 250 KB


def _hex(rng: random.Random, digits: int) -> str:
    return f"{rng.getrandbits(digits * 4):0{digits}x}"


def repeated_b3() -> list[tuple[str, str]]:
    """500 ``X-B3-TraceId`` and 500 ``X-B3-SpanId`` headers, the first pair (TRACE, SPAN), the others random."""
    rng = random.Random(13)
    out = [("X-B3-TraceId", TRACE), ("X-B3-SpanId", SPAN), ("X-B3-Sampled", "1")]
    for _ in range(REPEATS - 1):
        out += [("X-B3-TraceId", _hex(rng, 32)), ("X-B3-SpanId", _hex(rng, 16))]
    return out


def junk_around_b3() -> list[tuple[str, str]]:
    """A B3 context in the middle of 10,000 junk headers, a tenth of them named like B3's (``x-b3-junk-N``)."""
    rng = random.Random(17)
    junk = [(f"x-b3-junk-{i}" if i % 10 == 0 else f"x-junk-{i}", _hex(rng, 8)) for i in range(JUNK)]
    middle = JUNK // 2
    return [*junk[:middle], ("X-B3-TraceId", TRACE), ("X-B3-SpanId", SPAN), ("X-B3-Sampled", "1"), *junk[middle:]]


FLOODS = pytest.mark.parametrize("flood", [repeated_b3, junk_around_b3], ids=["b3-repeated-500", "junk-10000"])


RecordingB3 = recording(B3MultiFormat)


def _errors(registry: CollectorRegistry) -> float:
    return sum(s.value for family in registry.collect() if family.name == "aiwatch_instrumentation_errors"
               for s in family.samples if s.name.endswith("_total"))


@SERVERS
@FLOODS
def test_a_flood_of_propagator_headers_changes_nothing_and_hands_the_propagator_a_bounded_carrier(
        metrics: Metrics, provider: TracerProvider, exporter: InMemorySpanExporter, server: Any,
        flood: Callable[[], list[tuple[str, str]]], monkeypatch: pytest.MonkeyPatch) -> None:
    headers = flood()
    propagator = RecordingB3()
    bare_seen: list[Seen] = []
    seen: list[Seen] = []
    with global_textmap(propagator):
        with server(False, metrics, provider, bare_seen, monkeypatch) as send:
            bare = send(headers)
        with server(True, metrics, provider, seen, monkeypatch) as send:
            reply = send(headers)
            wait_until(lambda: len(server_spans(exporter)) == 1, what="the request's SERVER span ended")
    # the flood reached the app (the servers' limits were raised past it), and its reply is the bare app's
    assert bare[0] in (0, 200), bare
    assert reply == bare
    assert [without_host(s.carrier) for s in seen] == [without_host(s.carrier) for s in bare_seen]
    assert _errors(metrics.registry) == 0
    # the parent is the one OpenTelemetry's propagator picks from the request's headers as the app saw them
    [(carrier, _)] = seen
    expected = ids(trace.get_current_span(B3MultiFormat().extract(carrier)).get_span_context())
    [span] = server_spans(exporter)
    assert ids(span.parent) == expected
    if flood is junk_around_b3:
        assert expected == (TRACE, SPAN)  # the junk hides nothing
    # bounded: one extract, of B3's headers alone, each one value: the first sent (behind werkzeug: its joined one)
    [handed] = propagator.carriers
    assert set(handed) <= set(B3_FIELDS)
    assert set(handed) == {name for name in carrier if name in B3_FIELDS}
    for name, value in handed.items():
        assert value == carrier[name][0]
