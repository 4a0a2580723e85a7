"""A token-streaming (LLM-style) FastAPI service instrumented by aiwatch, with a fake generator.

    pip install "aiwatch[all]"
    python examples/token_streaming/app.py --port 8000
    curl -sN localhost:8000/v1/completions -H 'content-type: application/json' -d '{"prompt": "tell me a story"}'
    curl -sN localhost:8000/v1/completions -H 'aiwatch-traffic-class: batch' -d '{"prompt": "summarise"}' \
         -H 'content-type: application/json'
    curl -s localhost:8000/metrics | grep -E 'aiwatch_(gen_ai|time_to_first_chunk|degraded)'

The response is a stream of server-sent events, one per token. aiwatch records the time to the first body chunk
and between chunks (``aiwatch_time_to_first_chunk_seconds``, ``aiwatch_time_between_chunks_seconds``), and, from
``aiwatch.record_tokens``, OpenTelemetry's GenAI signals: time to first token, time per output token and token usage
(``aiwatch_gen_ai_*``). Requests whose ``aiwatch-traffic-class`` header says ``batch`` are told apart from real-time
ones, and a prompt longer than the model's window is answered by a smaller model, counted by ``aiwatch.degraded``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator

import uvicorn
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

import aiwatch

MODEL = "tiny-llm"
FALLBACK = "tinier-llm"
CONTEXT_WINDOW = 64  # words

app = aiwatch.instrument(FastAPI(title="completions"), service="completions", model=MODEL,
                         exclude_paths=["/healthz"])


class CompletionBody(BaseModel):
    prompt: str = Field(min_length=1, max_length=10_000)
    max_tokens: int = Field(default=8, ge=1, le=256)
    prefill_ms: float = Field(default=20.0, ge=0, le=5_000)
    token_ms: float = Field(default=5.0, ge=0, le=1_000)


async def generate(prompt: str, max_tokens: int, prefill_ms: float, token_ms: float) -> AsyncIterator[str]:
    """A fake model: a prefill pause, then one word of the prompt (reversed) per token."""
    words = prompt.split()[::-1] or ["..."]
    async with aiwatch.phase("prefill"):
        await asyncio.sleep(prefill_ms / 1000)
    for i in range(max_tokens):
        await asyncio.sleep(token_ms / 1000)
        yield words[i % len(words)]


@app.post("/v1/completions")
async def complete(body: CompletionBody) -> StreamingResponse:
    prompt_tokens = len(body.prompt.split())
    model = FALLBACK if prompt_tokens > CONTEXT_WINDOW else MODEL
    aiwatch.set_model(model, "v1")
    if model == FALLBACK:  # a long prompt goes to the smaller model: an honest, counted fallback
        aiwatch.degraded("smaller_model")
    aiwatch.record_tokens(input_tokens=prompt_tokens)

    async def events() -> AsyncIterator[bytes]:
        async for token in generate(body.prompt, body.max_tokens, body.prefill_ms, body.token_ms):
            aiwatch.record_tokens(output_tokens=1)
            yield f"data: {json.dumps({'token': token})}\n\n".encode()
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8000)
    uvicorn.run(app, host="127.0.0.1", port=parser.parse_args().port, log_level="warning")
