"""Added cost of each AI-traffic signal (issue 15) per request, and per streamed chunk, measured in one process.

Same method as ``http_bench.py`` (a FastAPI app called through a raw ASGI driver, variants interleaved in rounds,
this thread's CPU time, the median over rounds of each variant minus its baseline in the same round). Per request,
against ``aiwatch`` (the default: a phase, Server-Timing, payload sizes on):

- ``no-sizes``: ``payload_sizes=False`` (so the cost of the payload-size histograms is aiwatch - no-sizes);
- ``batch-header``: the request carries ``aiwatch-traffic-class: batch``;
- ``degraded``: the endpoint calls ``aiwatch.degraded("cached_prediction")``;
- ``tokens``: the endpoint calls ``aiwatch.record_tokens(input_tokens=5, output_tokens=3)``;
- ``version``: the endpoint calls ``aiwatch.set_model("ranker", "v2")``;
- ``render``: the app's default response class is ``aiwatch.TimedJSONResponse``.

Per chunk: a ``StreamingResponse`` of 1 and of 21 chunks, bare and instrumented; the per-chunk cost is
``((aiwatch21 - bare21) - (aiwatch1 - bare1)) / 20``, and again with ``record_tokens(output_tokens=1)`` per chunk.

Per streamed gRPC message on the client: reading a response stream through aiwatch's counting wrapper
(``aiwatch.grpc.streambytes``: the message's ``ByteSize()`` added to the call's tally) against reading the same
messages bare, over the example service's ``PredictReply`` messages (no network: the wrapper's own cost).

    python bench/ai_signals_bench.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from prometheus_client import CollectorRegistry

import aiwatch

CHUNKS = 21
_cpu = time.thread_time


def json_app(extra: Callable[[], None] | None = None, **fastapi: Any) -> FastAPI:
    app = FastAPI(**fastapi)

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        with aiwatch.phase("inference"):
            if extra is not None:
                extra()
            return {"id": item_id}

    return app


def stream_app(chunks: int, tokens: bool = False) -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            for _ in range(chunks):
                if tokens:
                    aiwatch.record_tokens(output_tokens=1)
                yield b"token "

        return StreamingResponse(body())

    return app


def instrumented(app: FastAPI, **options: Any) -> FastAPI:
    return aiwatch.instrument(app, registry=CollectorRegistry(), service="bench", **options)


HEADERS = [(b"host", b"bench"), (b"user-agent", b"bench"), (b"accept", b"*/*")]
BATCH = [*HEADERS, (b"aiwatch-traffic-class", b"batch")]

#: name -> (app factory, request headers)
VARIANTS: dict[str, tuple[Callable[[], Any], list[tuple[bytes, bytes]]]] = {
    "bare": (lambda: json_app(), HEADERS),
    "aiwatch": (lambda: instrumented(json_app()), HEADERS),
    "no-sizes": (lambda: instrumented(json_app(), payload_sizes=False), HEADERS),
    "batch-header": (lambda: instrumented(json_app()), BATCH),
    "degraded": (lambda: instrumented(json_app(lambda: aiwatch.degraded("cached_prediction"))), HEADERS),
    "tokens": (lambda: instrumented(json_app(lambda: aiwatch.record_tokens(input_tokens=5, output_tokens=3))),
               HEADERS),
    "version": (lambda: instrumented(json_app(lambda: aiwatch.set_model("ranker", "v2"))), HEADERS),
    "render": (lambda: instrumented(json_app(default_response_class=aiwatch.TimedJSONResponse)), HEADERS),
    "stream1-bare": (lambda: stream_app(1), HEADERS),
    "stream1": (lambda: instrumented(stream_app(1)), HEADERS),
    f"stream{CHUNKS}-bare": (lambda: stream_app(CHUNKS), HEADERS),
    f"stream{CHUNKS}": (lambda: instrumented(stream_app(CHUNKS)), HEADERS),
    f"stream{CHUNKS}-tokens": (lambda: instrumented(stream_app(CHUNKS, tokens=True)), HEADERS),
    "stream1-tokens": (lambda: instrumented(stream_app(1, tokens=True)), HEADERS),
}


async def run_requests(app: Any, headers: list[tuple[bytes, bytes]], n: int) -> float:
    """Mean CPU seconds per request over ``n`` sequential requests."""
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": "/items/42", "raw_path": b"/items/42", "query_string": b"",
             "root_path": "", "headers": headers, "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}
    statuses: list[int] = []
    never = asyncio.Event()
    request = {"type": "http.request", "body": b"", "more_body": False}

    def receiver() -> Callable[[], Any]:
        read = False

        async def receive() -> dict[str, Any]:
            nonlocal read
            if read:  # like a connected client: a streaming response's disconnect listener waits here
                await never.wait()
            read = True
            return request

        return receive

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    start = _cpu()
    for _ in range(n):
        await app(dict(scope), receiver(), send)
    elapsed = _cpu() - start
    if len(statuses) != n or any(s != 200 for s in statuses):
        raise RuntimeError(f"unexpected statuses: {sorted(set(statuses))}")
    return elapsed / n


async def bench(rounds: int, n: int) -> dict[str, list[float]]:
    names = list(VARIANTS)
    apps = {name: (factory(), headers) for name, (factory, headers) in VARIANTS.items()}
    for app, headers in apps.values():
        await run_requests(app, headers, max(n // 10, 100))
    results: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            gc.collect()
            results[name].append(await run_requests(*apps[name], n))
    return results


def grpc_stream_message_cost(rounds: int, n: int) -> float:
    """Median over rounds of the µs a counted response stream adds per message (see the module's docstring)."""
    from aiwatch.grpc.streambytes import CountedResponses, StreamBytes
    from aiwatch.metrics import Metrics
    from examples.grpc_service.servicer import pb

    messages = [pb.PredictReply(score=i / 7, model="ranker", index=i) for i in range(n)]
    tally = StreamBytes(Metrics(CollectorRegistry()))
    added = []
    for _ in range(rounds):
        gc.collect()
        start = _cpu()
        for _message in iter(messages):
            pass
        bare = _cpu() - start
        start = _cpu()
        for _message in CountedResponses(iter(messages), tally):
            pass
        added.append((_cpu() - start - bare) / n)
    return statistics.median(added) * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and requests")
    parser.add_argument("--rounds", type=int, help="rounds per variant (default 31, quick 11)")
    parser.add_argument("--requests", type=int, help="requests per round (default 1000, quick 300)")
    args = parser.parse_args(argv)
    rounds = args.rounds or (11 if args.quick else 31)
    n = args.requests or (300 if args.quick else 1000)
    results = asyncio.run(bench(rounds, n))

    def diff(a: str, b: str) -> float:
        """Median over rounds of a - b, in µs."""
        return statistics.median(x - y for x, y in zip(results[a], results[b], strict=True)) * 1e6

    print(f"python {sys.version.split()[0]}, {rounds} rounds x {n} requests per variant, thread CPU time")
    print(f"aiwatch (default) added over bare: {diff('aiwatch', 'bare'):.1f} µs/request")
    print(f"payload sizes (aiwatch - no-sizes): {diff('aiwatch', 'no-sizes'):+.1f} µs/request")
    for name in ("batch-header", "degraded", "tokens", "version", "render"):
        print(f"{name} (- aiwatch): {diff(name, 'aiwatch'):+.1f} µs/request")
    one = diff("stream1", "stream1-bare")
    many = diff(f"stream{CHUNKS}", f"stream{CHUNKS}-bare")
    print(f"streaming: aiwatch on a 1-chunk stream {one:+.1f} µs, on a {CHUNKS}-chunk stream {many:+.1f} µs: "
          f"{(many - one) / (CHUNKS - 1):+.2f} µs per chunk")
    tokens = diff(f"stream{CHUNKS}-tokens", f"stream{CHUNKS}") - diff("stream1-tokens", "stream1")
    print(f"record_tokens(output_tokens=1) per chunk: {tokens / (CHUNKS - 1):+.2f} µs")
    print(f"gRPC client, bytes of a streamed message: {grpc_stream_message_cost(rounds, n * 10):+.2f} µs per message")
    return 0


if __name__ == "__main__":
    sys.exit(main())
