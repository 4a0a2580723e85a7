"""What ``aiwatch diagnose`` reads about one time window, whatever the source.

Every question diagnose asks of a window is one row of :data:`READS`: a sample name, the labels to sum by, and
whether the value is a counter's increase over the window or a gauge's average (or maximum) over it. A source
(Prometheus' HTTP API, the console's embedded scrape source, two snapshots of scraped ``/metrics``) answers each row
with ``{label values: number}``; :class:`WindowTotals` holds the answers and the arithmetic never sees the source.

    >>> w = WindowTotals(0.0, 60.0, {"requests": {("gateway",): 120.0}})
    >>> w.total("requests", "gateway"), w.rate("requests", "gateway"), w.total("requests", "nobody")
    (120.0, 2.0, 0.0)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

Key = tuple[str, ...]
ReadKind = Literal["increase", "avg", "mean", "max", "last", "gone"]


@dataclass(frozen=True)
class Read:
    """One question about a window: ``kind`` of ``metric`` over the window, summed by ``by``.

    - ``increase``: how much the counter (or histogram ``_sum`` / ``_count`` / ``_bucket``) grew in the window, the
      sum over every series with the same ``by`` labels;
    - ``avg``: the gauge's average over the window, summed over series with the same ``by`` labels (queue depth
      of every replica adds up);
    - ``mean``: the gauge's average over the window, averaged over series with the same ``by`` labels (a share such
      as a GPU's utilization: GPU 0 of every host is another GPU, and their shares do not add up);
    - ``max``: the gauge's largest value in the window, the maximum over series with the same ``by`` labels;
    - ``last``: the gauge's latest value in the window (at its end), the maximum over series with the same ``by``
      labels;
    - ``gone``: how many seconds before the window's end the gauge's latest value in the window was taken, for the
      ``by`` labels none of whose series is present at the end (gone from the last scrape at or before it:
      Prometheus marked them stale, or they are older than its lookback), and 0 for those with one present: a
      ``last`` read of a replica that vanished in the window is its last value, not one at the end.

    ``errors_only`` keeps only series whose ``status`` label counts as an error.
    """

    key: str
    metric: str
    by: tuple[str, ...]
    kind: ReadKind = "increase"
    errors_only: bool = False


REPLICA = ("job", "instance")
"""The labels that tell a scrape target (a replica) apart: Prometheus' own; the console's scrape source and merged
snapshots give each endpoint an ``instance`` (a source without a label reads it as ``""``)."""

READS: tuple[Read, ...] = (
    # the latency split: requests, their phases, and the calls each phase made to other services
    Read("requests", "aiwatch_request_duration_seconds_count", ("service",)),
    Read("request_seconds", "aiwatch_request_duration_seconds_sum", ("service",)),
    Read("request_buckets", "aiwatch_request_duration_seconds_bucket", ("service", "le")),
    Read("errors", "aiwatch_request_duration_seconds_count", ("service",), errors_only=True),
    Read("phase_seconds", "aiwatch_phase_duration_seconds_sum", ("service", "phase")),
    Read("call_seconds", "aiwatch_client_request_duration_seconds_sum", ("service", "peer", "phase")),
    Read("network_seconds", "aiwatch_network_duration_seconds_sum", ("service", "peer", "phase")),
    Read("network_calls", "aiwatch_network_duration_seconds_count", ("service", "peer", "phase")),
    # every call, with a network time or not (no report came back, or the call was retried)
    Read("calls", "aiwatch_client_request_duration_seconds_count", ("service", "peer", "phase")),
    # calls whose peer reported more time than the caller saw: their network time was recorded as 0
    Read("network_clamped", "aiwatch_network_clamped_total", ("service", "peer")),
    # requests whose phases added up to more than the request (run at once): their overhead was recorded as 0
    Read("overhead_clamped", "aiwatch_overhead_clamped_total", ("service",)),
    # the tail: the same split, counted only for requests slower than the service's latency objective
    Read("slow_requests", "aiwatch_slow_requests_total", ("service",)),
    Read("slow_phase_seconds", "aiwatch_slow_phase_seconds_total", ("service", "phase")),
    Read("slow_call_seconds", "aiwatch_slow_call_seconds_total", ("service", "peer", "phase")),
    Read("slow_network_seconds", "aiwatch_slow_network_seconds_total", ("service", "peer", "phase")),
    Read("slow_threshold", "aiwatch_slow_threshold_seconds", ("service",), "max"),
    # supporting signals
    Read("queue_depth", "aiwatch_queue_depth", ("queue",), "avg"),
    Read("in_flight", "aiwatch_requests_in_flight", ("service",), "avg"),
    # the event loop's delay, from which how long an event arriving at the loop waits (some of a caller's network
    # time) is estimated: the samples' sum, their buckets (the +Inf bucket is their count) and the wall time watched,
    # per replica (REPLICA): a replica of an older aiwatch has no watched time, and its delay is no one else's share
    Read("loop_delay_seconds", "aiwatch_event_loop_delay_seconds_sum", ("service", *REPLICA)),
    Read("loop_delay_buckets", "aiwatch_event_loop_delay_seconds_bucket", ("service", *REPLICA, "le")),
    Read("loop_sampled_seconds", "aiwatch_event_loop_sampled_seconds_total", ("service", *REPLICA)),
    # the worst worker's own share of the 5 minutes before the window's end (a merged multiprocess target's mean
    # above dilutes one stalled worker among N); none from an aiwatch without the gauge
    Read("loop_worst_share", "aiwatch_event_loop_stalled_ratio", ("service", *REPLICA), "last"),
    # and, for a replica gone before the window's end, how long before it that last value was
    Read("loop_worst_share_gone", "aiwatch_event_loop_stalled_ratio", ("service", *REPLICA), "gone"),
    Read("batch_items", "aiwatch_batch_size_sum", ("model",)),
    Read("batches", "aiwatch_batch_size_count", ("model",)),
    Read("cache_lookups", "aiwatch_feature_cache_requests_total", ("cache", "result")),
    Read("gpu_utilization", "aiwatch_gpu_utilization_ratio", ("gpu",), "mean"),
    Read("gpu_memory_used", "aiwatch_gpu_memory_used_bytes", ("gpu",), "max"),
    Read("gpu_throttle", "aiwatch_gpu_throttle_reason", ("gpu", "reason"), "max"),
    Read("drift_detected", "aiwatch_drift_detected", ("model", "feature"), "max"),
)
"""Everything diagnose reads, in one table: a source that answers these rows can be diagnosed."""

READ_KEYS = frozenset(r.key for r in READS)

#: Steps of a subquery over a window (where its data begins, when a gone replica was last seen): its precision is
#: the window over this many (:func:`subquery_step`).
COVERAGE_STEPS = 250


def subquery_step(seconds: float) -> float:
    """The step of the Prometheus source's subqueries over a window of ``seconds``: whole seconds, at least 1."""
    return max(1.0, round(seconds / COVERAGE_STEPS))

Reader = Callable[[Read], Mapping[Key, float]]
"""A source's answer to one :class:`Read` for one window."""


@dataclass(frozen=True)
class WindowTotals:
    """The answers to :data:`READS` for the window ``[start, end]`` (unix seconds). ``resets``: per service, the
    counter resets (restarts) the source saw in the window where it counts each series alone, so that a histogram's
    ``_sum`` may be undercounted (Prometheus); none where it counts a histogram's series from 0 together, or cannot
    tell.
    ``gone_step``: the step (s) of the subquery the source's ``gone`` read took its times from, that of the window
    asked (which may start before :attr:`start`, where the data does); 0 where the source has each sample's own time
    (the scrape source, two snapshots); ``None``, unknown (:meth:`gone_within`)."""

    start: float
    end: float
    values: Mapping[str, Mapping[Key, float]] = field(default_factory=dict)
    resets: Mapping[str, float] = field(default_factory=dict)
    gone_step: float | None = None

    @classmethod
    def read(cls, reader: Reader, start: float, end: float) -> WindowTotals:
        """Ask ``reader`` every row of :data:`READS`."""
        return cls(start, end, {r.key: dict(reader(r)) for r in READS})

    @property
    def seconds(self) -> float:
        return self.end - self.start

    def of(self, key: str) -> Mapping[Key, float]:
        """Every answer to the read ``key``: ``{label values: number}``."""
        if key not in READ_KEYS:
            raise KeyError(f"{key!r} is not one of diagnose's reads")
        return self.values.get(key, {})

    def total(self, key: str, *prefix: str) -> float:
        """The sum of the answers to ``key`` whose leading label values are ``prefix``."""
        return float(sum(v for k, v in self.of(key).items() if k[:len(prefix)] == prefix))

    def rate(self, key: str, *prefix: str) -> float:
        """:meth:`total` per second of the window."""
        return self.total(key, *prefix) / self.seconds if self.seconds > 0 else 0.0

    def matching(self, key: str, *prefix: str) -> Iterator[tuple[Key, float]]:
        """The answers to ``key`` whose leading label values are ``prefix``, with the rest of their labels."""
        n = len(prefix)
        for k, v in self.of(key).items():
            if k[:n] == prefix:
                yield k[n:], v

    def gone_within(self) -> float:
        """How many seconds later than a ``gone`` read says a replica's last sample may have been: 0 where the time
        is exact (:attr:`gone_step` 0), else the subquery's step (a step finds the last sample before it, up to a
        step earlier than the replica went); unknown (``None``), :func:`subquery_step` of the window.

            >>> WindowTotals(0.0, 3600.0, gone_step=346.0).gone_within(), WindowTotals(0.0, 86400.0).gone_within()
            (346.0, 346.0)
            >>> WindowTotals(0.0, 86400.0, gone_step=0.0).gone_within()  # each sample's own time: exact
            0.0
        """
        return float(subquery_step(self.seconds)) if self.gone_step is None else self.gone_step

    def services(self) -> set[str]:
        """Services that served requests in the window."""
        return {k[0] for k, v in self.of("requests").items() if v > 0}
