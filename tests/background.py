"""A background job's phase recorded by aiwatch's own path for phases outside any request, for test traffic."""

from __future__ import annotations

from aiwatch import timing
from aiwatch.timing import RequestRecorder, record_phase


def record_background_phase(recorder: RequestRecorder, name: str, seconds: float) -> None:
    """``aiwatch.record_phase(name, seconds)`` outside any request with ``recorder`` as the default recorder (as
    ``aiwatch.instrument`` sets it), for this call only: other tests in the process keep theirs."""
    kept = timing._default_recorder
    timing.set_default_recorder(recorder)
    try:
        record_phase(name, seconds)
    finally:
        timing.set_default_recorder(kept)
