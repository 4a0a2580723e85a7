"""Graceful degradation: counting the responses a service served from a fallback instead of its model.

Under overload a service should answer with something cheaper rather than fail: a cached prediction, a smaller
model, a default answer. Mark such a response and say why::

    try:
        scores = await asyncio.wait_for(call_model(features), timeout=deadline - now)
    except asyncio.TimeoutError:
        aiwatch.degraded("cached_prediction")
        scores = cache.get(user_id, DEFAULT_SCORES)

Each degraded response counts once per reason in ``aiwatch_degraded_responses_total{service, model, reason}``
(``model``: the request's model when it finishes, unless given) and its span gets ``aiwatch.degraded.reason``.
Divided by the request rate it is the degraded share: the console shows it, an alert fires above a configured share,
and it is a scale-out signal (docs/autoscaling.md): the service is still answering, but not with its model.

Reasons and models pass the cardinality guard, as every label that comes from code paths or traffic. Called in a
:class:`~aiwatch.signals.batcher.MicroBatcher`'s batch function, it marks every request of that batch: the batch
served them all (to mark one caller's response, call it in that caller, after ``submit`` returns).
"""

from __future__ import annotations

from aiwatch.safety import record_error
from aiwatch.timing import RequestTimeline, _guarded, current_timeline, recorder_outside_requests, shared_work

CACHED_PREDICTION = "cached_prediction"
SMALLER_MODEL = "smaller_model"
DEFAULT_ANSWER = "default_answer"


def _add_fallback(tl: RequestTimeline, entry: tuple[str, str | None]) -> None:
    if tl.finished:  # recorded already (a thread the request left running)
        return
    if tl.degraded is None:
        tl.degraded = [entry]
    elif entry not in tl.degraded:
        tl.degraded.append(entry)


def degraded(reason: str, model: str | None = None) -> None:
    """Mark the current response as served by a fallback, for ``reason`` (``cached_prediction``,
    ``smaller_model``, ``default_answer``, or your own word). Counted when the request finishes, once per reason;
    outside a request it is counted at once for the default service; in a
    :class:`~aiwatch.signals.batcher.MicroBatcher`'s batch function, for each request of the batch (with its
    service, route and model), as its fallback. Never raises: a reason that is not a non-empty string is counted as
    aiwatch's error (component ``degraded``) and ignored."""
    tl = current_timeline()
    if tl is None and isinstance(reason, str) and reason:
        work = shared_work()
        if work is not None:  # a batch's: each of its requests takes it when its result arrives
            if (reason, model) not in work.degraded:
                work.degraded.append((reason, model))
            return
    recorder = tl.recorder if tl is not None else recorder_outside_requests("degraded")
    if recorder is None:
        return
    if not isinstance(reason, str) or not reason:
        record_error("degraded", ValueError(f"degraded() needs a non-empty reason, got {reason!r}"),
                     recorder.metrics)
        return
    try:
        guard = recorder.guard
        if tl is not None:
            # no model named: the request's, resolved when the request finishes (a later set_model() moves it)
            entry = (guard.fold("reason", reason), guard.fold("model", model) if model else None)
            # with the request's lock when another thread touched it (timing._guarded): a fallback marked in a
            # thread the request left running broke finish()'s reading of them
            _guarded(tl, _add_fallback, tl, entry)
            return
        m = recorder.metrics
        label = guard.fold("model", model) if model else recorder.model
        m.child(m.degraded_responses, (recorder.service, label, guard.fold("reason", reason))).inc()
    except Exception as exc:
        record_error("degraded", exc, recorder.metrics)
