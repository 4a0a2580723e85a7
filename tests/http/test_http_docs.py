"""The FastAPI example in docs/http.md runs as written and does what the page says."""

from __future__ import annotations

import re
from typing import Any

from prometheus_client import REGISTRY

from aiwatch.servertiming import parse_server_timing
from tests.http.asgi_driver import call
from tests.servers import REPO


async def test_fastapi_example_from_docs() -> None:
    text = (REPO / "docs" / "http.md").read_text()
    block = re.search(r"```python\n(# app\.py.*?)```", text, re.S)
    assert block is not None
    namespace: dict[str, Any] = {}
    before = REGISTRY.get_sample_value("aiwatch_request_duration_seconds_count", {"traffic_class": "realtime",
        "service": "recommender", "route": "/predict/{user_id}", "method": "POST", "status": "200"}) or 0.0
    exec(compile(block.group(1), "docs/http.md", "exec"), namespace)
    resp = await call(namespace["app"], "/predict/7", method="POST")
    assert resp.status == 200
    assert set(parse_server_timing(resp.headers["server-timing"])) == {"features", "inference", "overhead", "total"}
    after = REGISTRY.get_sample_value("aiwatch_request_duration_seconds_count", {"traffic_class": "realtime",
        "service": "recommender", "route": "/predict/{user_id}", "method": "POST", "status": "200"})
    assert after == before + 1
    assert REGISTRY.get_sample_value("aiwatch_phase_duration_seconds_count",
                                     {"model_version": "",
                                      "service": "recommender", "model": "ranker", "phase": "inference"})
