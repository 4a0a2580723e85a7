"""The AI-traffic signals of the HTTP middlewares: traffic classes, payload sizes, streamed chunks, token usage and
timing, degraded responses and model versions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, StreamingResponse
from flask import Flask, Response, stream_with_context
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry
from starlette.background import BackgroundTask
from starlette.responses import Response as StarletteResponse

import aiwatch
from aiwatch.traffic import TrafficClasses, parse_routes
from tests.http.asgi_driver import call


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, {"service": "svc", **labels})


def requests_of(registry: CollectorRegistry, route: str, traffic_class: str, method: str = "GET") -> float | None:
    return sample(registry, "aiwatch_request_duration_seconds_count", route=route, method=method, status="200",
                  traffic_class=traffic_class)


def fastapi_app(registry: CollectorRegistry, **options: Any) -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    @app.post("/v1/bulk/embed")
    async def bulk(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            await asyncio.sleep(0.03)  # the headers are out already: the first chunk's time must include this
            for i in range(3):
                aiwatch.record_tokens(output_tokens=2)
                yield f"token{i} ".encode()
                await asyncio.sleep(0.01)

        aiwatch.record_tokens(input_tokens=5)
        return StreamingResponse(chunks())

    @app.get("/fallback")
    async def fallback() -> dict[str, str]:
        aiwatch.set_model("ranker", "v2")
        aiwatch.degraded("cached_prediction")
        aiwatch.degraded("cached_prediction")  # counted once per response
        return {"answer": "cached"}

    return aiwatch.instrument(app, registry=registry, service="svc", **options)


async def test_traffic_class_comes_from_the_header_within_the_configured_classes(registry: CollectorRegistry) -> None:
    app = fastapi_app(registry)
    await call(app, "/items/1")
    await call(app, "/items/2", headers=[("aiwatch-traffic-class", "batch")])
    await call(app, "/items/3", headers=[("aiwatch-traffic-class", "BATCH")])
    await call(app, "/items/4", headers=[("aiwatch-traffic-class", "made-up")])  # not a class: the default
    assert requests_of(registry, "/items/{item_id}", "realtime") == 2
    assert requests_of(registry, "/items/{item_id}", "batch") == 2
    assert sample(registry, "aiwatch_request_duration_seconds_count", route="/items/{item_id}", method="GET",
                  status="200", traffic_class="made-up") is None


async def test_a_route_rule_sets_the_class_whatever_the_header_says(registry: CollectorRegistry) -> None:
    app = fastapi_app(registry, traffic_classes=TrafficClasses(routes={"/v1/bulk/*": "batch"}))
    await call(app, "/v1/bulk/embed", method="POST", body=b"x" * 10,
               headers=[("aiwatch-traffic-class", "realtime")])
    await call(app, "/items/1")
    assert requests_of(registry, "/v1/bulk/embed", "batch", method="POST") == 1
    assert requests_of(registry, "/v1/bulk/embed", "realtime", method="POST") is None
    assert requests_of(registry, "/items/{item_id}", "realtime") == 1


async def test_a_route_rule_sets_the_class_of_its_route_once_the_route_label_has_folded(
        registry: CollectorRegistry) -> None:
    """The route label's bound folds the routes seen after it into ``__overflow__``; the rule was matched against
    that folded label, so a batch route past the bound was counted as real-time traffic."""
    app = fastapi_app(registry, traffic_classes=TrafficClasses(routes={"/v1/bulk/*": "batch"}), max_label_values=1)
    await call(app, "/items/1")  # the one route label the bound admits
    await call(app, "/v1/bulk/embed", method="POST", body=b"x" * 10)
    assert requests_of(registry, "__overflow__", "batch", method="POST") == 1
    assert requests_of(registry, "__overflow__", "realtime", method="POST") is None


def test_route_rules_and_classes_are_validated() -> None:
    with pytest.raises(ValueError, match="not one of"):
        TrafficClasses(routes={"/x": "bulk"})
    with pytest.raises(ValueError, match="traffic class"):
        TrafficClasses(classes=["real time"])
    assert TrafficClasses(classes=["interactive", "offline"]).default == "interactive"


def test_a_class_name_outside_ascii_is_a_value_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # "批量".isalnum() is true, so it passed the check and failed at .encode("latin-1") with a UnicodeEncodeError
    # naming no traffic class (and no header or gRPC metadata value could carry it)
    with pytest.raises(ValueError, match=r"traffic class.*'批量'"):
        TrafficClasses(classes=["realtime", "批量"])
    fullwidth = "\uff42\uff41\uff54\uff43\uff48"  # "batch" in fullwidth letters: isalnum() too
    with pytest.raises(ValueError, match=rf"traffic class.*'{fullwidth}'"):
        TrafficClasses(classes=["realtime", fullwidth])
    monkeypatch.setenv("AIWATCH_TRAFFIC_CLASSES", "realtime,批量")
    with pytest.raises(ValueError, match=r"traffic class.*'批量'"):
        TrafficClasses()


def test_classes_given_as_one_str_are_a_type_error() -> None:
    # a str is an Iterable[str] of its characters: classes="batch" made the classes b, a, t, c and h
    with pytest.raises(TypeError, match="classes"):
        TrafficClasses(classes="batch")


def test_route_rules_given_in_code_name_their_class_as_classes_do() -> None:
    # classes=["Batch"] was lowercased to "batch", but routes={"/x": "Batch"} was refused ("names traffic class
    # 'Batch', not one of ('realtime', 'batch')"): the environment's rules were lowercased, the code's were not
    classes = TrafficClasses(classes=["Realtime", "Batch"], routes={"/v1/bulk/*": " Batch", "/train": "BATCH"})
    assert classes.for_route("/v1/bulk/embed", "realtime") == "batch"
    assert classes.for_route("/train", "realtime") == "batch"


def test_a_route_rule_with_glob_characters_matches_its_own_template() -> None:
    """A Django ``re_path`` template has ``?`` and ``[``: as a glob it matched no route, itself included."""
    django_regex = r"^bulk/(?P<pk>[0-9]+)/$"
    classes = TrafficClasses(routes={django_regex: "batch", "/v1/bulk/*": "batch"})
    assert classes.for_route(django_regex, "realtime") == "batch"
    assert classes.for_route("^bulk/7/$", "realtime") == "realtime"  # a template, not a path: no regex matching
    assert classes.for_route("/v1/bulk/embed", "realtime") == "batch"  # globs still match


def test_route_rules_from_the_environment_keep_the_commas_inside_a_templates_brackets(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``AIWATCH_TRAFFIC_CLASS_ROUTES`` splits at commas; a regex route's ``{1,3}`` was cut in two, and the rule
    refused as no ``ROUTE=CLASS``."""
    quantified, listed = r"^bulk/(?P<pk>[0-9]{1,3})/$", r"^jobs/(?P<kind>(train,eval|[,;]))/$"
    monkeypatch.setenv("AIWATCH_TRAFFIC_CLASS_ROUTES", f"{quantified}=batch, /v1/bulk/*=batch,{listed}=batch")
    classes = TrafficClasses()
    for route in (quantified, listed, "/v1/bulk/embed"):
        assert classes.for_route(route, "realtime") == "batch"
    assert classes.for_route("/v1/predict", "realtime") == "realtime"


@pytest.mark.parametrize(("text", "rules"), [
    ("/a[=batch,/b=batch", {"/a[": "batch", "/b": "batch"}),  # never closed
    ("/a(]=batch,/b=batch", {"/a(]": "batch", "/b": "batch"}),  # closed by the wrong bracket
    ("^a{1,3}$=batch,/x[=batch,/y=realtime", {"^a{1,3}$": "batch", "/x[": "batch", "/y": "realtime"}),
    ("/a)=batch,/b]=batch", {"/a)": "batch", "/b]": "batch"}),  # closes nothing
], ids=["unclosed", "mismatched", "unclosed-after-closed", "stray-closer"])
def test_a_bracket_that_never_closes_does_not_join_the_route_rules_after_it(text: str, rules: dict[str, str]) -> None:
    assert parse_routes(text) == rules


def _bracketed(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """``inner`` pieces joined by commas inside one pair of brackets: a regex's ``{1,3}``, ``[,;]``, ``(a|b,c)``."""
    return st.builds(lambda b, parts: b[0] + ",".join(parts) + b[1], st.sampled_from(["()", "[]", "{}"]),
                     st.lists(inner, min_size=1, max_size=3))


_TEMPLATES = st.lists(st.recursive(st.text(alphabet="/ab09?*^$.<>:", max_size=4), _bracketed, max_leaves=6),
                      min_size=1, max_size=4).map("".join).filter(lambda p: p.strip() == p and p != "")


@given(st.lists(st.tuples(_TEMPLATES, st.sampled_from(["batch", "realtime"])), min_size=1, max_size=4))
def test_route_rules_are_read_back_as_written_whatever_commas_their_brackets_hold(
        rules: list[tuple[str, str]]) -> None:
    """Templates with commas inside closed brackets, at any depth, come back as written; only the commas between
    rules separate them."""
    assert parse_routes(",".join(f"{p}={c}" for p, c in rules)) == dict(rules)


@pytest.mark.parametrize(("classes", "routes", "error"), [
    (["realtime", 7], None, TypeError),
    (["realtime", None], None, TypeError),
    (None, {"/x": 7}, TypeError),
    (None, {7: "batch"}, TypeError),
    (None, {" ": "batch"}, ValueError),
], ids=["class-int", "class-none", "rule-class-int", "rule-pattern-int", "rule-pattern-blank"])
def test_class_names_and_rules_that_are_no_str_are_refused_by_name(classes: Any, routes: Any,
                                                                   error: type[Exception]) -> None:
    # a class name that was no str raised AttributeError ('int' object has no attribute 'strip')
    with pytest.raises(error, match=r"traffic class|route rule"):
        TrafficClasses(classes=classes, routes=routes)


async def test_request_and_response_body_sizes_per_route(registry: CollectorRegistry) -> None:
    app = fastapi_app(registry)
    payload = b"f" * 5000
    resp = await call(app, "/v1/bulk/embed", method="POST", body=payload,
                      headers=[("content-length", str(len(payload)))])
    assert resp.body == b'{"bytes":5000}'
    labels = {"route": "/v1/bulk/embed", "method": "POST"}
    assert sample(registry, "aiwatch_request_size_bytes_sum", **labels) == 5000
    assert sample(registry, "aiwatch_response_size_bytes_sum", **labels) == len(resp.body)
    assert sample(registry, "aiwatch_request_size_bytes_bucket", **labels, le="4096.0") == 0
    assert sample(registry, "aiwatch_request_size_bytes_bucket", **labels, le="16384.0") == 1


ABSURD_LENGTHS = [pytest.param("9" * 400, id="400-digits"), pytest.param(str(2**53 + 1), id="2**53+1")]


@pytest.mark.parametrize("length", ABSURD_LENGTHS)
async def test_an_absurd_content_length_is_refused_and_the_requests_other_signals_kept(
        registry: CollectorRegistry, length: str) -> None:
    # before: a Content-Length of 400 digits failed the request's metrics at the end (OverflowError into a float,
    # counted as a metrics error) and its degraded-response count was lost with it; 2**53 + 1 was recorded as a size.
    # Then it was refused as aiwatch's error; it is the client's: the size is the bytes received (none here)
    app = fastapi_app(registry)
    await call(app, "/fallback", headers=[("content-length", length)])
    await call(app, "/fallback", headers=[("content-length", "10")])
    labels = {"route": "/fallback", "method": "GET"}
    assert sample(registry, "aiwatch_request_size_bytes_sum", **labels) == 10
    assert sample(registry, "aiwatch_request_size_bytes_count", **labels) == 2
    assert sample(registry, "aiwatch_response_size_bytes_count", **labels) == 2
    assert sample(registry, "aiwatch_degraded_responses_total", model="ranker", reason="cached_prediction") == 2
    assert registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "metrics"}) == 0


async def test_chunked_request_bodies_are_counted_as_the_app_reads_them(registry: CollectorRegistry) -> None:
    app = fastapi_app(registry)
    await call(app, "/v1/bulk/embed", method="POST", body=b"z" * 300, headers=[("transfer-encoding", "chunked")])
    assert sample(registry, "aiwatch_request_size_bytes_sum", route="/v1/bulk/embed", method="POST") == 300


async def test_payload_sizes_can_be_turned_off(registry: CollectorRegistry) -> None:
    app = fastapi_app(registry, payload_sizes=False)
    await call(app, "/items/1")
    assert requests_of(registry, "/items/{item_id}", "realtime") == 1
    assert sample(registry, "aiwatch_response_size_bytes_count", route="/items/{item_id}", method="GET") is None


async def test_a_stream_records_its_first_body_chunk_and_the_gaps_between_chunks(registry: CollectorRegistry) -> None:
    app = fastapi_app(registry)
    resp = await call(app, "/stream")
    assert resp.body == b"token0 token1 token2 "
    first = sample(registry, "aiwatch_time_to_first_chunk_seconds_sum", route="/stream")
    assert first is not None and first >= 0.03  # the body's first byte, not the headers sent before the sleep
    assert sample(registry, "aiwatch_time_to_first_chunk_seconds_count", route="/stream") == 1
    gaps = sample(registry, "aiwatch_time_between_chunks_seconds_count", route="/stream")
    assert gaps is not None and gaps >= 2
    total = sample(registry, "aiwatch_request_duration_seconds_sum", route="/stream", method="GET", status="200",
                   traffic_class="realtime")
    assert total is not None and total >= first


async def test_a_one_chunk_response_is_no_stream(registry: CollectorRegistry) -> None:
    app = fastapi_app(registry)
    await call(app, "/items/1")
    assert sample(registry, "aiwatch_time_to_first_chunk_seconds_count", route="/items/{item_id}") is None


async def test_tokens_give_usage_time_to_first_token_and_time_per_output_token(registry: CollectorRegistry) -> None:
    app = fastapi_app(registry)
    await call(app, "/stream")
    usage = "aiwatch_gen_ai_token_usage_tokens_sum"
    assert sample(registry, usage, model="", token_type="input") == 5
    assert sample(registry, usage, model="", token_type="output") == 6
    ttft = sample(registry, "aiwatch_gen_ai_time_to_first_token_seconds_sum", model="", traffic_class="realtime")
    assert ttft is not None and ttft >= 0.03
    # 4 tokens after the first record, which came 2 gaps of >= 10 ms before the last one
    tpot = sample(registry, "aiwatch_gen_ai_time_per_output_token_seconds_sum", model="", traffic_class="realtime")
    assert tpot is not None and tpot >= 0.02 / 4


async def test_token_timing_carries_the_requests_trace_id_as_exemplar(registry: CollectorRegistry,
                                                                       provider: TracerProvider) -> None:
    """A slow first token leads to its request's trace, as a slow request does: the token-timing histograms carry
    the sampled trace's id as exemplar (Grafana's time-to-first-token panel draws them)."""
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    await call(fastapi_app(registry, tracer_provider=provider), "/stream",
               headers=[("traceparent", f"00-{trace_id}-00f067aa0ba902b7-01")])
    exemplars = {m.name: s.exemplar.labels for m in registry.collect() if m.name.startswith("aiwatch_gen_ai_time")
                 for s in m.samples if s.exemplar is not None}
    assert exemplars == {"aiwatch_gen_ai_time_to_first_token_seconds": {"trace_id": trace_id},
                         "aiwatch_gen_ai_time_per_output_token_seconds": {"trace_id": trace_id}}


#: the histograms of a streamed response's chunks
CHUNK_HISTOGRAMS = ("aiwatch_time_to_first_chunk_seconds", "aiwatch_time_between_chunks_seconds")


async def test_a_streams_chunk_timing_carries_its_sampled_trace_id_as_exemplar(registry: CollectorRegistry,
                                                                             provider: TracerProvider) -> None:
    """A slow first chunk leads to its request's trace, as a slow request does (ASGI and WSGI); an unsampled
    stream, served last, leaves the exemplars as they were."""
    from tests.spans import exemplar_trace_ids

    trace_id, unsampled = "4bf92f3577b34da6a3ce929d0e0e4736", "0af7651916cd43dd8448eb211c80319c"
    app = fastapi_app(registry, tracer_provider=provider)
    await call(app, "/stream", headers=[("traceparent", f"00-{trace_id}-00f067aa0ba902b7-01")])
    await call(app, "/stream", headers=[("traceparent", f"00-{unsampled}-00f067aa0ba902b7-00")])
    other = CollectorRegistry()
    client = flask_app(other, tracer_provider=provider).test_client()
    assert client.get("/stream", headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}, buffered=True).data
    assert client.get("/stream", headers={"traceparent": f"00-{unsampled}-00f067aa0ba902b7-00"}, buffered=True).data
    for streamed in (registry, other):
        assert sample(streamed, "aiwatch_time_to_first_chunk_seconds_count", route="/stream") == 2
        found = exemplar_trace_ids(streamed)
        assert {name: found.get(name) for name in CHUNK_HISTOGRAMS} == {name: {trace_id} for name in CHUNK_HISTOGRAMS}


async def test_token_timing_is_only_for_successful_responses(registry: CollectorRegistry) -> None:
    app = FastAPI()

    @app.get("/fail")
    async def fail() -> StarletteResponse:
        aiwatch.record_tokens(input_tokens=3, output_tokens=1)
        return StarletteResponse(b"overloaded", status_code=503)

    aiwatch.instrument(app, registry=registry, service="svc")
    await call(app, "/fail")
    assert sample(registry, "aiwatch_gen_ai_token_usage_tokens_sum", model="", token_type="input") == 3
    assert sample(registry, "aiwatch_gen_ai_time_to_first_token_seconds_count", model="",
                  traffic_class="realtime") is None


def test_bad_token_counts_are_counted_as_aiwatch_errors_not_raised(registry: CollectorRegistry) -> None:
    recorder = aiwatch.make_recorder(registry=registry, service="svc")
    aiwatch.timing.set_default_recorder(recorder)
    aiwatch.record_tokens(input_tokens=-1)
    aiwatch.record_tokens(output_tokens=1.5)  # type: ignore[arg-type]
    aiwatch.record_tokens(input_tokens=7)  # outside a request: recorded at once
    assert registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "genai"}) == 2
    assert sample(registry, "aiwatch_gen_ai_token_usage_tokens_sum", model="", token_type="input") == 7


async def test_an_absurd_token_count_is_refused_and_the_requests_other_signals_kept(
        registry: CollectorRegistry) -> None:
    # 10**400 tokens passed the checks and failed at the request's end, converting to float: the request's
    # token usage and its degraded-response count were lost with it
    app = FastAPI()

    @app.get("/huge")
    async def huge() -> dict[str, int]:
        aiwatch.record_tokens(input_tokens=10**400)
        aiwatch.record_tokens(output_tokens=2**53 + 1)
        aiwatch.record_tokens(input_tokens=5, output_tokens=2)
        aiwatch.degraded("fallback")
        return {"ok": 1}

    aiwatch.instrument(app, registry=registry, service="svc")
    await call(app, "/huge")
    assert registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "genai"}) == 2
    assert registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "metrics"}) == 0
    assert sample(registry, "aiwatch_gen_ai_token_usage_tokens_sum", model="", token_type="input") == 5
    assert sample(registry, "aiwatch_gen_ai_token_usage_tokens_sum", model="", token_type="output") == 2
    assert sample(registry, "aiwatch_degraded_responses_total", model="", reason="fallback") == 1


def usage_of(registry: CollectorRegistry, model: str) -> tuple[float | None, float | None, float | None]:
    """(input tokens, output tokens, requests) in the token-usage histogram of ``model``."""
    name = "aiwatch_gen_ai_token_usage_tokens"
    return (sample(registry, f"{name}_sum", model=model, token_type="input"),
            sample(registry, f"{name}_sum", model=model, token_type="output"),
            sample(registry, f"{name}_count", model=model, token_type="input"))


async def test_tokens_counted_before_the_model_is_picked_are_the_picked_models(registry: CollectorRegistry) -> None:
    # a gateway counts the prompt's tokens, then routes by its length: the usage was filed under the model that was
    # current at the first record_tokens (the default, ""), not the one that served the request
    app = FastAPI()

    @app.post("/v1/completions")
    async def complete() -> dict[str, str]:
        aiwatch.record_tokens(input_tokens=900)
        aiwatch.set_model("long-context")
        aiwatch.record_tokens(output_tokens=3)
        return {"text": "abc"}

    aiwatch.instrument(app, registry=registry, service="svc")
    await call(app, "/v1/completions", method="POST")
    assert usage_of(registry, "long-context") == (900, 3, 1)
    assert usage_of(registry, "") == (None, None, None)
    assert sample(registry, "aiwatch_gen_ai_time_to_first_token_seconds_count", model="long-context",
                  traffic_class="realtime") == 1


async def test_a_fallback_marked_before_the_model_is_picked_is_the_picked_models(
        registry: CollectorRegistry) -> None:
    # degraded() took the request's model when it was called: a gateway that marks the fallback, then names the
    # model that served it, had its degraded response filed under the default model "" while the request's phases
    # and tokens went under the model it named
    app = FastAPI()

    @app.get("/route")
    async def route() -> dict[str, str]:
        aiwatch.degraded("cached_prediction")
        aiwatch.set_model("ranker")
        aiwatch.degraded("cached_prediction")  # the same fallback for the same (now resolved) model: counted once
        aiwatch.degraded("smaller_model", model="tiny")  # a model named in the call stays that model
        return {"answer": "cached"}

    aiwatch.instrument(app, registry=registry, service="svc")
    await call(app, "/route")
    name = "aiwatch_degraded_responses_total"
    assert sample(registry, name, model="ranker", reason="cached_prediction") == 1
    assert sample(registry, name, model="", reason="cached_prediction") is None
    assert sample(registry, name, model="tiny", reason="smaller_model") == 1
    assert sample(registry, "aiwatch_phase_duration_seconds_count", model="ranker", model_version="",
                  phase="overhead") == 1


async def test_each_named_model_of_a_request_gets_its_own_usage(registry: CollectorRegistry) -> None:
    # an embedder then a generator in one request: the generator's tokens were filed under the embedder's name
    app = FastAPI()

    @app.get("/rag")
    async def rag() -> dict[str, str]:
        aiwatch.record_tokens(input_tokens=2)  # before any call names a model: the request's own, ""
        aiwatch.record_tokens(input_tokens=40, model="embedder")
        aiwatch.record_tokens(input_tokens=700, model="generator")
        aiwatch.record_tokens(output_tokens=1)  # the model named last
        aiwatch.record_tokens(output_tokens=4, model="generator")
        return {"answer": "..."}

    aiwatch.instrument(app, registry=registry, service="svc")
    await call(app, "/rag")
    assert usage_of(registry, "embedder") == (40, 0, 1)
    assert usage_of(registry, "generator") == (700, 5, 1)
    assert usage_of(registry, "") == (2, 0, 1)
    timing = "aiwatch_gen_ai_time_per_output_token_seconds_count"
    assert sample(registry, timing, model="generator", traffic_class="realtime") == 1
    assert sample(registry, timing, model="embedder", traffic_class="realtime") is None


async def test_a_named_model_that_is_the_requests_own_is_one_usage(registry: CollectorRegistry) -> None:
    app = FastAPI()

    @app.get("/same")
    async def same() -> dict[str, str]:
        aiwatch.set_model("m")
        aiwatch.record_tokens(input_tokens=3)
        aiwatch.record_tokens(input_tokens=4, output_tokens=1, model="m")
        return {"ok": "1"}

    aiwatch.instrument(app, registry=registry, service="svc")
    await call(app, "/same")
    assert usage_of(registry, "m") == (7, 1, 1)


async def test_degraded_responses_are_counted_by_reason_and_model(registry: CollectorRegistry) -> None:
    app = fastapi_app(registry)
    for _ in range(3):
        await call(app, "/fallback")
    aiwatch.degraded("")  # not a reason: aiwatch's error, nothing raised
    assert sample(registry, "aiwatch_degraded_responses_total", model="ranker", reason="cached_prediction") == 3
    assert registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "degraded"}) == 1


async def test_model_versions_label_the_models_phases(registry: CollectorRegistry) -> None:
    app = fastapi_app(registry)
    await call(app, "/fallback")
    await call(app, "/items/1")
    phases = "aiwatch_phase_duration_seconds_count"
    assert sample(registry, phases, model="ranker", model_version="v2", phase="overhead") == 1
    assert sample(registry, phases, model="", model_version="", phase="overhead") == 1


async def test_a_versioned_models_failed_requests_are_counted_per_version(registry: CollectorRegistry) -> None:
    app = FastAPI()

    @app.get("/v/{version}/{status}")
    async def versioned(version: str, status: int) -> StarletteResponse:
        aiwatch.set_model("ranker", version)
        return StarletteResponse(status_code=status)

    @app.get("/unversioned")
    async def unversioned() -> StarletteResponse:
        aiwatch.set_model("ranker")
        return StarletteResponse(status_code=503)

    aiwatch.instrument(app, registry=registry, service="svc")
    for path in ("/v/v1/200", "/v/v2/500", "/v/v2/200", "/v/v2/404", "/unversioned"):
        await call(app, path)
    errors = "aiwatch_model_version_errors_total"
    # 5xx only (a 404 is the client's), per version; a model without a version has its errors in the request
    # histogram alone
    assert sample(registry, errors, model="ranker", model_version="v2") == 1
    assert sample(registry, errors, model="ranker", model_version="v1") is None
    assert sample(registry, errors, model="ranker", model_version="") is None
    # the denominator of the version's error share: its requests, one overhead phase each
    assert sample(registry, "aiwatch_phase_duration_seconds_count", model="ranker", model_version="v2",
                  phase="overhead") == 3


async def test_model_versions_are_bounded_like_every_traffic_label(registry: CollectorRegistry) -> None:
    app = FastAPI()

    @app.get("/v/{version}")
    async def versioned(version: str) -> dict[str, str]:
        aiwatch.set_model("ranker", version)
        return {}

    aiwatch.instrument(app, registry=registry, service="svc", max_label_values=2)
    for version in ("a", "b", "c", "d"):
        await call(app, f"/v/{version}")
    phases = "aiwatch_phase_duration_seconds_count"
    assert sample(registry, phases, model="ranker", model_version="a", phase="overhead") == 1
    assert sample(registry, phases, model="ranker", model_version="__overflow__", phase="overhead") == 2


def flask_app(registry: CollectorRegistry, **options: Any) -> Flask:
    app = Flask("ai_signals")

    @app.post("/echo")
    def echo() -> bytes:
        from flask import request
        return request.get_data()

    @app.get("/stream")
    def stream() -> Response:
        def chunks() -> Iterator[bytes]:
            for i in range(3):
                time.sleep(0.01)
                yield f"c{i}".encode()

        return Response(stream_with_context(chunks()))

    return aiwatch.instrument(app, registry=registry, service="svc", **options)


async def test_a_pathsend_response_counts_the_file_as_its_body(registry: CollectorRegistry, tmp_path: Path) -> None:
    """``http.response.pathsend`` (Starlette's FileResponse when the server offers the extension) sends the body as a
    file, not as body messages; before, it was recorded as 0 bytes, and timed to the end of the background task.
    No installed server implements the extension: the in-process driver plays the server."""
    data = tmp_path / "weights.bin"
    data.write_bytes(b"w" * 5000)
    counted_before_background: list[float | None] = []
    app = FastAPI()

    @app.get("/file")
    async def file() -> FileResponse:
        return FileResponse(data, background=BackgroundTask(
            lambda: counted_before_background.append(sample(registry, "aiwatch_response_size_bytes_count",
                                                            route="/file", method="GET"))))

    async def undeclared(scope: Any, receive: Any, send: Any) -> None:  # no Content-Length: the file's size
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.pathsend", "path": str(data)})

    pathsend = {"http.response.pathsend": {}}
    response = await call(aiwatch.instrument(app, registry=registry, service="svc"), "/file", extensions=pathsend)
    assert (response.status, response.body) == (200, b"w" * 5000)
    assert sample(registry, "aiwatch_response_size_bytes_sum", route="/file", method="GET") == 5000
    assert counted_before_background == [1]
    other = CollectorRegistry()
    await call(aiwatch.instrument(undeclared, registry=other, service="svc"), "/", extensions=pathsend)
    assert other.get_sample_value("aiwatch_response_size_bytes_sum",
                                  {"service": "svc", "route": "__unmatched__", "method": "GET"}) == 5000


def test_wsgi_traffic_class_sizes_and_chunks(registry: CollectorRegistry) -> None:
    client = flask_app(registry).test_client()
    resp = client.post("/echo", data=b"q" * 1000, headers={"aiwatch-traffic-class": "batch"}, buffered=True)
    assert resp.data == b"q" * 1000
    assert requests_of(registry, "/echo", "batch", method="POST") == 1
    assert sample(registry, "aiwatch_request_size_bytes_sum", route="/echo", method="POST") == 1000
    assert sample(registry, "aiwatch_response_size_bytes_sum", route="/echo", method="POST") == 1000
    resp = client.get("/stream", buffered=True)
    assert resp.data == b"c0c1c2"
    first = sample(registry, "aiwatch_time_to_first_chunk_seconds_sum", route="/stream")
    assert first is not None and first >= 0.01
    assert sample(registry, "aiwatch_time_between_chunks_seconds_count", route="/stream") == 2


@pytest.mark.parametrize("length", ABSURD_LENGTHS)
def test_wsgi_an_absurd_content_length_is_refused_and_the_requests_other_signals_kept(
        registry: CollectorRegistry, length: str) -> None:
    # before: as for ASGI, the first request's metrics failed at the end (its response size was lost). Then it was
    # refused as aiwatch's error; it is the client's: no body is declared (size 0)
    client = flask_app(registry).test_client()
    client.post("/echo", data=b"", environ_overrides={"CONTENT_LENGTH": length}, buffered=True)
    client.post("/echo", data=b"q" * 10, buffered=True)
    assert sample(registry, "aiwatch_request_size_bytes_sum", route="/echo", method="POST") == 10
    assert sample(registry, "aiwatch_request_size_bytes_count", route="/echo", method="POST") == 2
    assert sample(registry, "aiwatch_response_size_bytes_count", route="/echo", method="POST") == 2
    assert sample(registry, "aiwatch_request_duration_seconds_count", route="/echo", method="POST", status="400",
                  traffic_class="realtime") == 1  # werkzeug's answer to a body that never comes
    assert registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "metrics"}) == 0


async def test_a_timed_response_class_makes_rendering_a_phase(registry: CollectorRegistry) -> None:
    from aiwatch.servertiming import parse_server_timing

    app = FastAPI(default_response_class=aiwatch.TimedJSONResponse)

    @app.get("/scores")
    async def scores() -> dict[str, list[float]]:
        return {"scores": [0.5] * 10_000}

    aiwatch.instrument(app, registry=registry, service="svc")
    resp = await call(app, "/scores")
    assert resp.status == 200 and resp.body.startswith(b'{"scores":[0.5,')
    assert "render" in parse_server_timing(resp.headers["server-timing"])
    assert sample(registry, "aiwatch_phase_duration_seconds_count", model="", model_version="", phase="render") == 1
