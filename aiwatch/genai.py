"""Token usage and token timing of generative-AI requests, after OpenTelemetry's GenAI semantic conventions.

Inside a request, say how many tokens the model read and, as it produces them, how many it wrote::

    @app.post("/v1/completions")
    async def complete(body: dict) -> StreamingResponse:
        aiwatch.record_tokens(input_tokens=len(tokenize(body["prompt"])))

        async def stream():
            async for token in model.generate(body["prompt"]):
                aiwatch.record_tokens(output_tokens=1)      # as each token (or chunk of tokens) is produced
                yield token
        return StreamingResponse(stream())

When the request finishes, aiwatch records (OpenTelemetry's name, then the contract's Prometheus name):

============================================  ================================================  =====================
``gen_ai.server.time_to_first_token``          ``aiwatch_gen_ai_time_to_first_token_seconds``    request start to the
                                                                                                 first output tokens
``gen_ai.server.time_per_output_token``        ``aiwatch_gen_ai_time_per_output_token_seconds``  time after the first
                                                                                                 output / tokens after
                                                                                                 the first record
``gen_ai.client.token.usage``                  ``aiwatch_gen_ai_token_usage_tokens``             tokens per request
(``gen_ai.token.type``)                        (``token_type`` = ``input`` / ``output``)
============================================  ================================================  =====================

with OpenTelemetry's recommended buckets. The two timings are recorded for successful responses only (HTTP 1xx-3xx,
gRPC ``OK``), as the conventions define them; token usage for every response. The request's span gets
``gen_ai.usage.input_tokens``, ``gen_ai.usage.output_tokens`` and ``gen_ai.request.model`` (the model's name as given,
not the label the cardinality guard may have folded it to). The ``model`` label is the
request's model (``aiwatch.set_model``, as it is when the request finishes, so tokens counted before the model is
picked are the picked model's) unless ``record_tokens(model=...)`` names one; each named model's usage is its own, a
call that names none after one that did counts for the model named last, and the two timings are labelled with the
model of the first output.

Outside a request (a batch job) only the token usage is recorded, for the default service.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from aiwatch.amounts import MAX_COUNT, count
from aiwatch.fastpath import observe
from aiwatch.safety import record_error
from aiwatch.timing import _get_ident, _guarded, current_timeline, recorder_outside_requests
from aiwatch.utf8 import text_or_value

if TYPE_CHECKING:
    from aiwatch.timing import RequestRecorder, RequestTimeline

INPUT = "input"
OUTPUT = "output"

_clock = time.perf_counter


#: Counts above it are refused (:data:`aiwatch.amounts.MAX_COUNT`): a histogram sums in float64, which holds every
#: integer only up to 2**53, and one past float64's range failed the whole request's remaining metrics when observed.
MAX_TOKENS = MAX_COUNT


def successful(status: str) -> bool:
    """Whether a response with this ``status`` label succeeded: HTTP 1xx-3xx or gRPC ``OK``."""
    return status == "OK" or (len(status) == 3 and status[0] in "123")


class TokenUsage:
    """One request's tokens: how many in and out per model, and when the first and the latest output tokens came.

    A model named in ``record_tokens(model=...)`` keeps its own counts, so a request that calls two models (an
    embedder, then a generator) records each one's usage under its name, and a later call that names none counts
    for the model named last (a stream's per-token calls need not repeat it). Before any call names one, tokens are
    the request's model's, read when the request finishes: a gateway that counts the prompt's tokens before it
    picks a model (``aiwatch.set_model``) gets them under the model it picked."""

    __slots__ = ("counts", "first", "first_model", "first_name", "first_output", "last", "named", "named_as",
                 "opening_name")

    def __init__(self) -> None:
        #: ``[input, output]`` per named model; ``None`` for the request's model.
        self.counts: dict[str | None, list[int]] = {}
        #: When output was first recorded, how many tokens that first record counted, and for which model.
        self.first: float | None = None
        self.first_output = 0
        self.first_model: str | None = None
        self.last = 0.0
        #: The model the latest call named: its label, and its name as given.
        self.named: str | None = None
        self.named_as: str | None = None
        #: The names as given (not folded by the cardinality guard, for the span) of the first output's model and
        #: of the first call's; ``None``: the request's model.
        self.first_name: str | None = None
        self.opening_name: str | None = None

    def add(self, model: str | None, input_tokens: int, output_tokens: int, now: float,
            name: str | None = None) -> None:
        """Count tokens for the model labelled ``model`` (``None``: the one named last), named ``name`` by the
        caller."""
        if model is None:
            model, name = self.named, self.named_as
        else:
            self.named, self.named_as = model, name
        if not self.counts:
            self.opening_name = name
        counts = self.counts.get(model)
        if counts is None:
            counts = self.counts[model] = [0, 0]
        counts[0] += input_tokens
        if output_tokens:
            if self.first is None:
                self.first = now
                self.first_output = output_tokens
                self.first_model = model
                self.first_name = name
            counts[1] += output_tokens
            self.last = now

    def by_model(self, request_model: str) -> dict[str, list[int]]:
        """``[input, output]`` per ``model`` label, the request's own tokens under ``request_model``."""
        totals: dict[str, list[int]] = {}
        for model, (input_tokens, output_tokens) in self.counts.items():
            label = request_model if model is None else model
            total = totals.setdefault(label, [0, 0])
            total[0] += input_tokens
            total[1] += output_tokens
        return totals

    def observe(self, recorder: RequestRecorder, tl: RequestTimeline, status: str) -> None:
        """Record the finished request's usage and, if it succeeded, its token timing (under the model of the first
        output)."""
        m, service = recorder.metrics, recorder.service
        for model, (input_tokens, output_tokens) in self.by_model(tl.model).items():
            observe(m.child(m.token_usage, (service, model, INPUT)), input_tokens)
            observe(m.child(m.token_usage, (service, model, OUTPUT)), output_tokens)
        if self.first is None or not successful(status):
            return
        labels = (service, tl.model if self.first_model is None else self.first_model, tl.traffic_class)
        exemplar = {"trace_id": tl.trace_id} if tl.trace_id else None
        observe(m.child(m.time_to_first_token, labels), max(self.first - tl.start, 0.0), exemplar)
        after_first = sum(counts[1] for counts in self.counts.values()) - self.first_output
        if after_first > 0:
            observe(m.child(m.time_per_output_token, labels), (self.last - self.first) / after_first, exemplar)

    def describe(self, span: Any, tl: RequestTimeline) -> None:
        """The GenAI usage attributes on the request's span: the request's totals, and the model that produced the
        first output (else the first model named), by the name the app gave, not the label the cardinality guard
        folded it to: a span has no cardinality to bound, and the conventions want the model requested."""
        span.set_attribute("gen_ai.usage.input_tokens", sum(counts[0] for counts in self.counts.values()))
        span.set_attribute("gen_ai.usage.output_tokens", sum(counts[1] for counts in self.counts.values()))
        model = self.first_name if self.first is not None else self.opening_name
        if model is None:
            model = tl.model_name
        if model:
            span.set_attribute("gen_ai.request.model", text_or_value(model))


def _add_tokens(tl: RequestTimeline, model: str | None, input_tokens: int, output_tokens: int, now: float,
                name: str | None) -> None:
    if tl.finished:  # recorded already (a thread the request left running): its usage is read, or gone
        return
    usage = tl.tokens
    if usage is None:
        usage = tl.tokens = TokenUsage()
    usage.add(model, input_tokens, output_tokens, now, name)


def record_tokens(input_tokens: int = 0, output_tokens: int = 0, model: str | None = None) -> None:
    """Count tokens the current request's model read (``input_tokens``) or wrote (``output_tokens``). Call it with
    the output as it is produced (per token or per chunk): the first call with output marks the time to the first
    token, the later ones the time per output token. Counts add up over the request. Outside a request the usage is
    recorded for the default service at once. A negative, non-integer or absurd (past 2**53) count is counted as
    aiwatch's error (component ``genai``) and ignored; nothing is raised."""
    now = _clock()
    tl = current_timeline()
    recorder = tl.recorder if tl is not None else recorder_outside_requests("genai")
    if recorder is None:
        return
    try:
        counts = (count(input_tokens, "input_tokens"), count(output_tokens, "output_tokens"))
    except (TypeError, ValueError) as exc:
        record_error("genai", exc, recorder.metrics)
        return
    if tl is not None:
        try:
            # with the request's lock when another thread touched it (a request's work fanned out to threads): the
            # lazy TokenUsage and per-model counts lost tokens, and a thread the request left running broke
            # finish()'s reading of them (timing._guarded)
            label = tl.recorder.guard.fold("model", model) if model else None
            if tl.owner == _get_ident():  # the common case inlined (a streamed response counts every chunk)
                busy = tl.busy
                tl.busy = True
                if tl.lock is None:
                    try:
                        _add_tokens(tl, label, counts[0], counts[1], now, model)
                    finally:
                        tl.busy = busy
                    return
                tl.busy = busy
            _guarded(tl, _add_tokens, tl, label, counts[0], counts[1], now, model)
        except Exception as exc:
            record_error("genai", exc, tl.recorder.metrics)
        return
    try:
        m = recorder.metrics
        label = recorder.guard.fold("model", model) if model else recorder.model
        for token_type, tokens in ((INPUT, counts[0]), (OUTPUT, counts[1])):
            if tokens:
                observe(m.child(m.token_usage, (recorder.service, label, token_type)), tokens)
    except Exception as exc:
        record_error("genai", exc, recorder.metrics)
