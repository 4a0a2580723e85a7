"""The console's data-source interface: a small set of named *panel questions* with one answer per source.

Every view of the console asks only these questions, so :class:`~aiwatch.console.prometheus.PrometheusSource`
(Prometheus' HTTP API) and :class:`~aiwatch.console.scrape.ScrapeSource` (scrapes ``/metrics`` endpoints itself)
give the same panels. Answers are plain data (no pandas) so the sources need no optional dependency:

* time series questions return a list of :class:`Series` (labels + ``(unix time, value)`` points);
* table questions return lists of small dataclasses (:class:`GpuRow`, :class:`DriftRow`, ...).

A question raises :class:`SourceUnavailable` when the source cannot be reached at all, :class:`SourceSlow` when it
did not answer in time, :class:`NotSupported` when this kind of source cannot answer it (alerts need Prometheus' rule
evaluation), another :class:`SourceError` when the answer is unusable (garbage, the wrong shape, too large), and
returns an empty list when the source answered but holds no data for it (no traffic yet, or the family is absent,
e.g. no GPU). No other exception leaves a question.
"""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from aiwatch import clock

# the results of journal recovery are the metrics contract's (RECOVERY_RESULTS, in the order the console shows them)
from aiwatch.metrics import RECOVERY_RESULTS as RECOVERY_RESULTS
from aiwatch.metrics import UNFINISHED_RECOVERY_RESULTS

# the one definition of an error lives in aiwatch.status; these names stay importable from here
from aiwatch.status import ERROR_STATUS_RE as ERROR_STATUS_RE
from aiwatch.status import is_error_status as is_error_status

if TYPE_CHECKING:
    from aiwatch.diagnose.window import WindowTotals

QUANTILES: tuple[tuple[str, float], ...] = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
"""The request-latency quantiles the Latency view draws."""

MODEL_PHASES: frozenset[str] = frozenset({"inference"})
"""Phases that are the model's own time; every other phase (queue, features, overhead...) is *not model*."""

class SourceError(Exception):
    """A question could not be answered; the message is meant for the person reading the console."""


class SourceUnavailable(SourceError):
    """The source cannot be reached at all (Prometheus down, every endpoint down)."""


class SourceSlow(SourceError):
    """The source is reachable but did not answer a question in time (the message names the question and the time)."""


class NotSupported(SourceError):
    """This kind of source cannot answer this question."""


@dataclass(frozen=True)
class Series:
    """One time series: its identifying labels and ``(unix seconds, value)`` points in time order."""

    labels: dict[str, str]
    points: list[tuple[float, float]]
    lower_bounds: frozenset[float] = frozenset()
    """The times of the points whose value is only a lower bound: a quantile whose rank lies in the histogram's
    ``+Inf`` bucket, above its largest finite bound, which is all ``histogram_quantile`` can answer then
    (:func:`quantile_overflows`)."""

    @property
    def at_least(self) -> bool:
        """The latest value is only a lower bound (see :attr:`lower_bounds`)."""
        return bool(self.points) and self.points[-1][0] in self.lower_bounds

    def name(self, *keys: str) -> str:
        """A display name from the given label keys (all labels when none given)."""
        keys = keys or tuple(sorted(self.labels))
        return ", ".join(self.labels.get(k, "") for k in keys) or "all"

    @property
    def last(self) -> float | None:
        return self.points[-1][1] if self.points else None


GPU_EXTREMES = 5
"""The over-time GPU utilization chart of a fleet draws its this many busiest and this many idlest GPUs (by mean
utilization over the chart's span) and the fleet's min / median / max."""
EVERY_GPU_UP_TO = 16
"""... and of a fleet of up to this many GPUs, every GPU."""


@dataclass(frozen=True)
class GpuUtilization:
    """GPU utilization over time: every GPU of a small fleet (``fleet`` empty); of a larger one, its
    :data:`GPU_EXTREMES` busiest and idlest GPUs (``rank`` label ``busiest`` / ``idlest``) and the ``fleet``'s
    ``min`` / ``median`` / ``max`` over its GPUs (``stat`` label), so that the answer and the chart stay the same
    size however many GPUs there are. ``total``: the GPUs with utilization over the span."""

    gpus: list[Series]
    total: int
    fleet: list[Series] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.gpus)


def extremes(series: Sequence[Series], n: int = GPU_EXTREMES) -> GpuUtilization:
    """:class:`GpuUtilization` from every GPU's series: all of them up to :data:`EVERY_GPU_UP_TO`; past it the
    ``n`` busiest and ``n`` idlest by mean, and the fleet's min / median / max (PromQL's ``quantile(0.5)``) at
    each time."""
    found = [s for s in series if s.points]
    if len(found) <= EVERY_GPU_UP_TO:
        return GpuUtilization(found, len(found))
    ranked = sorted(found, key=lambda s: sum(v for _, v in s.points) / len(s.points))
    gpus = ([Series({**s.labels, "rank": "busiest"}, s.points) for s in reversed(ranked[-n:])]
            + [Series({**s.labels, "rank": "idlest"}, s.points) for s in ranked[:n]])
    at: dict[float, list[float]] = {}
    for s in found:
        for t, v in s.points:
            at.setdefault(t, []).append(v)
    times = sorted(at)
    stats: dict[str, Callable[[list[float]], float]] = {"min": min, "median": _median, "max": max}
    fleet = [Series({"stat": name}, [(t, stat(at[t])) for t in times]) for name, stat in stats.items()]
    return GpuUtilization(gpus, len(found), fleet)


def _median(values: list[float]) -> float:
    """PromQL's ``quantile(0.5, ...)``: the middle value, or the mean of the two middle ones."""
    ordered = sorted(values)
    middle = (len(ordered) - 1) / 2
    low, high = ordered[math.floor(middle)], ordered[math.ceil(middle)]
    return low + (high - low) * (middle - math.floor(middle))


@dataclass(frozen=True)
class GpuRow:
    """The latest state of one GPU (``None`` where the GPU collector exported no value). ``attention``: in a
    fleet's table (:class:`GpuTable`), why the GPU is one of the rows (:data:`GPU_ATTENTION`)."""

    gpu: str
    name: str = ""
    uuid: str = ""
    up: float | None = None
    utilization: float | None = None
    memory_used_bytes: float | None = None
    memory_total_bytes: float | None = None
    power_watts: float | None = None
    temperature_celsius: float | None = None
    attention: tuple[str, ...] = ()

    @property
    def memory_share(self) -> float | None:
        if self.memory_used_bytes is None or not self.memory_total_bytes:
            return None
        return self.memory_used_bytes / self.memory_total_bytes


GPU_ATTENTION: tuple[tuple[str, str, bool], ...] = (
    ("down", "up", False),
    ("hottest", "temperature_celsius", True),
    ("fullest memory", "memory_share", True),
    ("busiest", "utilization", True),
    ("idlest", "utilization", False),
)
"""Why a fleet's GPU table lists a GPU, most urgent first: (reason, the :class:`GpuRow` reading it ranks by, highest
first). A fleet's table lists the :data:`GPU_EXTREMES` GPUs of each (``down``: with ``up`` under 0.5; ``idlest``:
among the GPUs not the busiest)."""

GPU_FLEET_READINGS = ("utilization", "memory_share", "power_watts", "temperature_celsius")
"""The readings a fleet's GPU table summarizes over every GPU (:attr:`GpuTable.fleet`)."""


@dataclass(frozen=True)
class GpuTable:
    """The latest state of the GPUs: every GPU of a small fleet (up to :data:`EVERY_GPU_UP_TO`); of a larger one
    only those needing attention first (:data:`GPU_ATTENTION`: at most ``5 x`` :data:`GPU_EXTREMES` rows, chosen by
    Prometheus however many GPUs), ``fleet``: ``{reading: {"min" | "median" | "max": value}}`` over every GPU
    (:data:`GPU_FLEET_READINGS`), and ``down``: how many GPUs are down. ``total``: the GPUs of the fleet."""

    rows: list[GpuRow]
    total: int
    fleet: dict[str, dict[str, float]] = field(default_factory=dict)
    down: int = 0

    def __bool__(self) -> bool:
        return bool(self.rows)

    @property
    def cut(self) -> bool:
        """Whether the fleet is too large to list every GPU."""
        return self.total > EVERY_GPU_UP_TO


def _ranked(row: GpuRow, reading: str) -> float | None:
    value: float | None = getattr(row, reading)
    if value is None or math.isnan(value):
        return None
    return value


def attention_first(rows: Sequence[GpuRow]) -> list[GpuRow]:
    """A fleet's chosen GPUs, by their most urgent reason (:data:`GPU_ATTENTION`), then by its reading (the
    hottest first, the idlest first...), then by UUID."""
    order = {reason: (i, reading, high) for i, (reason, reading, high) in enumerate(GPU_ATTENTION)}

    def key(row: GpuRow) -> tuple[int, float, str]:
        i, reading, high = min((order[r] for r in row.attention if r in order), default=(len(order), "up", True))
        value = _ranked(row, reading)
        return (i, math.inf if value is None else -value if high else value, row.uuid)
    return sorted(rows, key=key)


def gpu_table(rows: Sequence[GpuRow], n: int = GPU_EXTREMES) -> GpuTable:
    """:class:`GpuTable` from every GPU's row, as Prometheus' answer cuts it (the scrape source's table): every GPU
    up to :data:`EVERY_GPU_UP_TO`; past it the ``n`` GPUs of each :data:`GPU_ATTENTION` reason, and the fleet's
    min / median / max of each :data:`GPU_FLEET_READINGS`."""
    if len(rows) <= EVERY_GPU_UP_TO:
        return GpuTable(list(rows), len(rows))
    reasons: dict[int, list[str]] = {}
    busiest: set[int] = set()
    for reason, reading, high in GPU_ATTENTION:
        ranked = [(value, i) for i, row in enumerate(rows) if (value := _ranked(row, reading)) is not None
                  and (reason != "down" or value < 0.5) and (reason != "idlest" or i not in busiest)]
        ranked.sort(key=lambda vi: -vi[0] if high else vi[0])
        for _, i in ranked[:n]:
            reasons.setdefault(i, []).append(reason)
        if reason == "busiest":
            busiest = {i for _, i in ranked[:n]}
    chosen = [replace(rows[i], attention=tuple(found)) for i, found in reasons.items()]
    fleet: dict[str, dict[str, float]] = {}
    for reading in GPU_FLEET_READINGS:
        values = [v for row in rows if (v := _ranked(row, reading)) is not None]
        if values:
            fleet[reading] = {"min": min(values), "median": _median(values), "max": max(values)}
    down = sum(row.up is not None and row.up < 0.5 for row in rows)
    return GpuTable(attention_first(chosen), len(rows), fleet, down)


@functools.cache
def loop_stuck_window() -> str:
    """The range AiwatchEventLoopDelayHigh's clock-free stuck branch reads a last-sample timestamp over (the rules
    config's default ``latency.loop_stuck_window``: the console does not read the rules config), and so the
    console's :attr:`LoopStall.worker_stuck`, whatever the console's window: a longer window would hide a worker
    stuck for this long after sampling earlier in it, a shorter one flag a worker the alert does not (yet) count.
    Read at the first call, not at import: :mod:`aiwatch.rules` loads its renderer and the drift statistics, which
    ``aiwatch diagnose`` (it imports this module) does not need."""
    from aiwatch.rules.config import Latency

    return Latency().loop_stuck_window


def loop_stuck_seconds() -> float:
    """:func:`loop_stuck_window` in seconds."""
    from aiwatch.rules.config import duration_ns

    return (duration_ns(loop_stuck_window()) or 0) / 1e9


@dataclass(frozen=True)
class LoopStall:
    """One replica's (scrape target's) event loop of one ``service`` over the window: ``stalled``, the share of the
    time it stood still (the seconds its timers ran late per second its sampler watched it, the mean over the
    workers of a multiprocess target; what AiwatchEventLoopDelayHigh fires on). ``stuck``: its sampler took no
    sample in the whole window while the target answered its scrapes (a loop blocked all along, or hung for good),
    shown as ``stalled`` 1.0. A ``stalled`` that is not a finite number (NaN or infinite: a counter at infinity
    makes the growth unknown) is an unknown share. ``job`` is empty where the source has none (the scrape source).

    ``worst``: the share of the last 5 minutes (not the window) its worst worker's loop stood still, by that
    worker's own sampler (``aiwatch_event_loop_stalled_ratio``, the largest of a merged target's live workers; the
    alert's worst-worker branch); None where the replica does not export it (an older aiwatch). ``worker_stuck``:
    one of its loops took no sample over the last :func:`loop_stuck_window` (not the window) while the target
    answered (its ``aiwatch_event_loop_last_sample_timestamp_seconds``, the stalest live worker's, did not change
    over two scrapes or more in it: the alert's clock-free stuck branch), while the others may sample on."""

    service: str
    instance: str
    stalled: float
    stuck: bool = False
    job: str = ""
    worst: float | None = None
    worker_stuck: bool = False

    @property
    def worse(self) -> float:
        """The larger of the mean share and the worst worker's, of those that are finite numbers; NaN if neither
        is."""
        known = [v for v in (self.stalled, self.worst) if v is not None and math.isfinite(v)]
        return max(known) if known else math.nan


def worst_first(stalls: Iterable[LoopStall]) -> list[LoopStall]:
    """The replicas stuck (all their loops, or one) first, then by the worse of the share of the time stood still
    and the worst worker's, highest first; one with neither a finite number (NaN: a counter at infinity) is
    unknown, and last."""
    return sorted(stalls, key=lambda r: (not (r.stuck or r.worker_stuck), not math.isfinite(r.worse),
                                         -r.worse if math.isfinite(r.worse) else 0.0,
                                         r.service, r.instance, r.job))


@dataclass(frozen=True)
class DriftRow:
    """The latest drift evaluation of one feature by one test."""

    model: str
    feature: str
    test: str
    score: float | None
    pvalue: float | None
    detected: bool | None


@dataclass(frozen=True)
class RecoveryRow:
    """What the ParquetSinks of one prediction log did with the journals they recovered (of writers that died, and
    their own kept ones), summed over its replicas, each since its process started:
    ``aiwatch_prediction_log_recovery_files_total`` by ``result`` (:data:`RECOVERY_RESULTS`) and
    ``aiwatch_prediction_log_recovered_records_total``."""

    log: str
    files: dict[str, float]
    records: float | None
    #: Per result, the unix time one of the log's sinks last counted a file with it, the latest over replicas
    #: (``aiwatch_prediction_log_recovery_last_timestamp_seconds``: torn, set_aside and failed only; a Prometheus
    #: source gives when Prometheus first saw that time, on its own clock, as the source's :meth:`DataSource.now`);
    #: a result without one is left out (none counted, or an app older than that gauge).
    last: dict[str, float] = field(default_factory=dict)

    @property
    def unfinished(self) -> dict[str, float]:
        """The results above 0 whose rows are in no finished file (torn, set_aside, failed): what
        AiwatchPredictionLogRecoveryIncomplete fires on."""
        return {r: self.files[r] for r in UNFINISHED_RECOVERY_RESULTS if self.files.get(r, 0.0) > 0}


@dataclass(frozen=True)
class QualityRow:
    """A model's realised quality in its latest labelled window (``aiwatch quality``: delayed labels joined to the
    prediction log) and the objective it is held to."""

    model: str
    metric: str
    value: float | None
    objective: float | None
    labelled: float | None

    @property
    def off_objective(self) -> bool | None:
        """Below the objective (accuracy, precision, recall) or above it (MAE, RMSE); None without one."""
        from aiwatch.feedback.outcomes import HIGHER_IS_BETTER

        if self.value is None or self.objective is None:
            return None
        return self.value < self.objective if self.metric in HIGHER_IS_BETTER else self.value > self.objective


@dataclass(frozen=True)
class BinRow:
    """One bin of a feature: the reference profile's share and the live share over the window."""

    bin: str
    reference: float | None
    live: float | None


@dataclass(frozen=True)
class MissingRow:
    """One feature's share of missing live values over the window (None, NaN, inf, or the key absent from the
    row), over the replicas of one reference profile, against that profile's share: what AiwatchFeatureMissing
    compares. ``counted``: the values and missing ones it counted over the window. ``reference_id``: the
    profile's ``reference`` label (while a re-baselined profile rolls out, a feature has a row per profile)."""

    model: str
    feature: str
    live: float | None
    reference: float | None
    counted: float | None
    reference_id: str = ""

    def past(self, increase: float, min_counted: float) -> bool:
        """Whether the live share is more than ``increase`` above the reference's, from at least ``min_counted``
        values and missing ones: AiwatchFeatureMissing's condition (``drift.missing_share_increase``,
        ``drift.fleet_min_values``). A feature without a reference share never is, as the alert never fires for it.

        >>> [MissingRow("m", "f", 0.3, 0.05, counted).past(0.2, 200.0) for counted in (500.0, 50.0)]
        [True, False]
        """
        return (self.live is not None and self.reference is not None and self.counted is not None
                and self.counted >= min_counted and self.live > self.reference + increase)


@dataclass(frozen=True)
class AlertRow:
    """A firing or pending alert, read generically from its labels and annotations."""

    name: str
    state: str
    severity: str
    summary: str
    runbook_url: str
    active_at: str = ""
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Signal:
    """One autoscaling signal: the value a scaler (KEDA, HPA) would act on."""

    name: str
    value: float | None
    unit: str
    help: str
    at_least: bool = False
    """The value is only a lower bound (a quantile above the histogram's largest finite bucket bound)."""


@dataclass(frozen=True)
class TracedRequest:
    """A request the request-latency histogram kept as exemplar: its service, its time, when it was observed (unix
    seconds) and the id of its trace (as the exemplar's ``trace_id`` label has it: text from the scrape target)."""

    service: str
    seconds: float
    at: float
    trace_id: str


#: How many of each service's slowest traced requests :meth:`DataSource.slowest_traces` gives.
SLOWEST_TRACES = 5


@dataclass(frozen=True)
class TargetHealth:
    """Whether one scraped endpoint answered its latest scrape."""

    url: str
    up: bool
    error: str = ""


AUTOSCALING_SIGNALS: tuple[tuple[str, str, str], ...] = (
    ("queue depth per replica", "items", "Items waiting in queues, summed and divided by the replicas."),
    ("in-flight requests per replica", "requests", "Concurrent requests per replica."),
    ("real-time request rate per replica", "req/s",
     "Real-time requests per second per replica over the window: batch traffic (traffic_class) is no demand to "
     "scale for; it shows as real-time latency in the AI traffic view."),
    ("queue wait p95", "seconds", "95th percentile of queue wait over the window."),
    ("GPU utilization (mean)", "ratio", "Mean kernel-busy share over every GPU."),
)
"""(name, unit, help) of the autoscaling signals, in display order."""


class DataSource(ABC):
    """The panel questions. ``window`` is the rate/quantile window in seconds."""

    description: str = ""

    @abstractmethod
    def health(self) -> list[TargetHealth]:
        """Per scrape target, whether it is up; raises :class:`SourceUnavailable` when the source is down."""

    def scrape_interval(self, service: str | None = None) -> float | None:
        """Seconds between two scrapes of the source's targets (the shortest, when they differ), or None when the
        source cannot tell. A rate over a window shorter than two of them has nothing to compare. With ``service``
        (a name as the panels show it), of the targets that export that service's series: the one the person
        looks at may be scraped less often than the others."""
        return None

    def now(self) -> float:
        """Now on the clock of the source's times, which the questions of now are asked at and their answers' times
        compared with (:func:`current`): this machine's, unless the source keeps its own."""
        return clock.wall()

    def latest_point_age(self) -> float | None:
        """The most seconds before a question was asked that the last point of an over-time answer's series still
        current then can lie (the answer's time step, and for a scraper the time since its last scrape): a series
        whose last point is older ended before (every replica of a service gone), and its last value is not now.
        None when the source cannot tell (:func:`current` then reads the answer's own latest time as now)."""
        return None

    def answer_warnings(self, since: float) -> list[str]:
        """What the source warned about the answers it gave at or after ``since`` (a :func:`aiwatch.clock.monotonic`
        reading): a Prometheus remote-read store that failed, a Thanos or Mimir partial response. The answers are
        incomplete then."""
        return []

    @abstractmethod
    def latency_quantiles(self, window: float) -> list[Series]:
        """Request latency p50/p95/p99 over time, per ``service`` and ``quantile``."""

    def slowest_traces(self, window: float) -> list[TracedRequest]:
        """Each service's :data:`SLOWEST_TRACES` slowest requests kept as exemplars of the request-latency histogram
        over the last ``window`` seconds (the series the p99 panel reads), slowest first; raises
        :class:`NotSupported` for a source that keeps no exemplars."""
        raise NotSupported(f"{type(self).__name__} keeps no exemplars, so no request's trace id")

    @abstractmethod
    def phase_split(self, window: float) -> list[Series]:
        """Mean seconds per request spent in each phase over time, per ``service`` and ``phase``. Stacked, one
        service's phases add up to that service's mean request time (``overhead`` is the rest). Services are never
        summed: a caller's phase that calls another service contains that service's whole time."""

    @abstractmethod
    def throughput(self, window: float) -> list[Series]:
        """Requests per second by ``service``."""

    @abstractmethod
    def error_ratio(self, window: float) -> list[Series]:
        """Share of requests with an error status, by ``service``."""

    @abstractmethod
    def network_time(self, window: float) -> list[Series]:
        """Network time seen by callers, p50/p95 by calling ``service``, ``peer`` and ``quantile``."""

    @abstractmethod
    def loop_delay(self, window: float) -> list[Series]:
        """How late each service's asyncio event loop ran a timer that was due (``aiwatch_event_loop_delay_seconds``):
        the p99 and the mean over the window, per ``service`` and ``stat`` (``p99``, ``mean``). A starved loop holds
        every request of the process, and its callers count that wait as network time."""

    @abstractmethod
    def background_phases(self, window: float) -> list[Series]:
        """The phases recorded outside any request (``aiwatch_background_phase_duration_seconds``: a background
        worker, a batch job): the p99 and the mean over the window, per ``service``, ``phase`` and ``stat``
        (``p99``, ``mean``). Not request time: the latency split leaves them out."""

    @abstractmethod
    def loop_stalls(self, window: float) -> list[LoopStall]:
        """The share of the window each replica's event loop stood still, per ``service`` and scrape target,
        worst first (:func:`worst_first`): rate of ``aiwatch_event_loop_delay_seconds_sum`` over rate of
        ``aiwatch_event_loop_sampled_seconds_total``, the expression AiwatchEventLoopDelayHigh reads. A replica whose
        sampled counter did not grow over the window while its target answered is :attr:`LoopStall.stuck`. Where
        the replica exports them, its worst worker's 5-minute share (``aiwatch_event_loop_stalled_ratio``) is
        :attr:`LoopStall.worst`, and a last-sample timestamp that did not change over the last
        :func:`loop_stuck_window` (whatever the window, as the alert reads it) while its target answered makes it
        :attr:`LoopStall.worker_stuck`."""

    @abstractmethod
    def link_throughput(self, window: float) -> list[Series]:
        """Bytes moved (both directions) per second of network time, by calling ``service`` and ``peer``; links
        without network time have no series."""

    @abstractmethod
    def measurement_caveats(self, window: float) -> list[Series]:
        """What the latency split could not measure as it is: per ``caveat`` (:data:`CAVEATS`) and ``service``
        (and ``peer`` for :data:`NETWORK_CLAMPED` and :data:`UNMEASURED`), the share of the service's calls or
        requests it happened to, from its counter's rate over the calls' or requests' rate. A series exists once its
        counter does."""

    # --- AI traffic ---------------------------------------------------------------------------------------
    @abstractmethod
    def latency_by_class(self, window: float) -> list[Series]:
        """Request latency p50/p95 per ``service``, ``traffic_class`` and ``quantile``: real-time and batch apart."""

    @abstractmethod
    def throughput_by_class(self, window: float) -> list[Series]:
        """Requests per second per ``service`` and ``traffic_class``."""

    @abstractmethod
    def first_chunk(self, window: float) -> list[Series]:
        """Time to the first body chunk of streamed responses, p50/p95 per ``service``, ``route``, ``quantile``."""

    @abstractmethod
    def first_token(self, window: float) -> list[Series]:
        """Time to first token, p50/p95 per ``service``, ``model``, ``traffic_class`` and ``quantile``."""

    @abstractmethod
    def per_output_token(self, window: float) -> list[Series]:
        """Time per output token, p50/p95 per ``service``, ``model``, ``traffic_class`` and ``quantile``."""

    @abstractmethod
    def token_rate(self, window: float) -> list[Series]:
        """Tokens per second per ``service``, ``model`` and ``token_type``."""

    @abstractmethod
    def degraded_share(self, window: float) -> list[Series]:
        """Share of each service's responses served by a fallback, per ``service``, ``model`` and ``reason``."""

    @abstractmethod
    def version_latency(self, window: float) -> list[Series]:
        """The ``inference`` phase p50/p95 per ``service``, ``model``, ``model_version`` and ``quantile``
        (versioned models only)."""

    @abstractmethod
    def version_error_ratio(self, window: float) -> list[Series]:
        """Share of requests with an error status per ``service``, ``model`` and ``model_version``."""

    @abstractmethod
    def gpu_table(self) -> GpuTable:
        """The latest state of every GPU of a small fleet, of a larger one of those needing attention first
        (:class:`GpuTable`)."""

    @abstractmethod
    def gpu_utilization(self) -> GpuUtilization:
        """GPU utilization ratio over time, by ``gpu`` and ``uuid``: every GPU, or of a fleet its busiest and
        idlest and the fleet's distribution (:class:`GpuUtilization`)."""

    @abstractmethod
    def queue_depth(self) -> list[Series]:
        """Queue depth over time, by ``queue``."""

    @abstractmethod
    def in_flight(self) -> list[Series]:
        """Requests in flight over time, by ``service``."""

    @abstractmethod
    def batch_size(self, window: float) -> list[Series]:
        """Mean items per model call over time, by ``model``."""

    @abstractmethod
    def cache_hit_ratio(self, window: float) -> list[Series]:
        """Feature-cache hit ratio over time, by ``cache``."""

    @abstractmethod
    def prediction_log(self, window: float) -> list[Series]:
        """Records per second of each prediction log (:class:`aiwatch.PredictionLog`) per ``log`` and ``result``:
        what became of the records it kept (``queued``, then ``written``; or ``dropped``, ``failed``, ``lost``), its
        ``sampled_out`` requests left out. :func:`unstored_share` reads each log's share of losses from it."""

    @abstractmethod
    def prediction_log_recovery(self) -> list[RecoveryRow]:
        """Per prediction ``log``, the journals its ParquetSinks recovered by result, and the rows they made into
        files: the counters' values, summed over replicas (a start counts before the first scrape: a rate misses
        it). Empty when no log has a ParquetSink."""

    @abstractmethod
    def instrumentation_errors(self, window: float) -> list[Series]:
        """Failures aiwatch swallowed per second (``aiwatch_instrumentation_errors_total``), per ``instance`` (the
        scrape target, ``host:port``, where the source has one) and ``component`` (``metrics``, ``tracing``,
        ``drift``, ``prediction_log``, ...): the requests were served, that component's observations skipped."""

    @abstractmethod
    def label_overflow(self, window: float) -> list[Series]:
        """Label values the cardinality guard folded into ``__overflow__`` per second
        (``aiwatch_label_overflow_total``), per ``label`` (``route``, ``model``, ``peer``, ...)."""

    @abstractmethod
    def drift_table(self) -> list[DriftRow]:
        """The latest drift evaluation of every (model, feature, test)."""

    @abstractmethod
    def drift_over_time(self, features: Sequence[tuple[str, str]]) -> list[Series]:
        """Drift score over time of the given (model, feature) pairs, by ``model``, ``feature``, ``test``."""

    @abstractmethod
    def feature_distribution(self, model: str, feature: str, window: float) -> list[BinRow]:
        """Reference share vs live share per bin of one feature (live counted over ``window``)."""

    def feature_missing(self, window: float) -> list[MissingRow]:
        """Each feature's live share of missing values over ``window`` against its reference profile's (none when
        nothing exports the counts)."""
        return []

    @abstractmethod
    def alerts(self) -> list[AlertRow]:
        """Firing and pending alerts."""

    @abstractmethod
    def autoscaling_signals(self, window: float) -> list[Signal]:
        """The autoscaling signals of :data:`AUTOSCALING_SIGNALS`, in that order."""

    def model_quality(self) -> list[QualityRow]:
        """Every model's realised quality metrics with their objectives (none when nothing exports them)."""
        return []

    def window_totals(self, start: float, end: float) -> WindowTotals:
        """The answers to every read of ``aiwatch diagnose`` (:data:`aiwatch.diagnose.window.READS`) for the window
        ``[start, end]`` (unix seconds): what the Latency view's diagnosis compares."""
        raise NotSupported(f"{type(self).__name__} cannot answer diagnose's window reads")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release background resources (threads)."""


def slowest_first(found: Iterable[TracedRequest], per_service: int = SLOWEST_TRACES) -> list[TracedRequest]:
    """The ``per_service`` slowest of each service's traced requests (one per trace id: Prometheus keeps an
    exemplar per bucket series), services in name order, each slowest first."""
    best: dict[tuple[str, str], TracedRequest] = {}
    for row in found:
        key = (row.service, row.trace_id)
        if key not in best or row.seconds > best[key].seconds:
            best[key] = row
    by_service: dict[str, list[TracedRequest]] = {}
    for row in sorted(best.values(), key=lambda r: (-r.seconds, -r.at, r.trace_id)):
        kept = by_service.setdefault(row.service, [])
        if len(kept) < per_service:
            kept.append(row)
    return [row for service in sorted(by_service, key=natural_key) for row in by_service[service]]


def current(series: Sequence[Series], asked: float, age: float | None, late: float = 0.0) -> list[Series]:
    """The series of one over-time answer that are current when the question was ``asked`` (unix seconds): their
    last point no more than ``age`` seconds (:meth:`DataSource.latest_point_age`) before the answer's latest one,
    and that one no more than ``age + late`` before ``asked`` (``late``: how far behind now the source may run, a
    Prometheus fed by remote write ingesting its samples late); with ``age`` None, their last point is the answer's
    latest. A series that ended before is of something gone since (a service whose every replica is down): its last
    value is from then.

    >>> found = [Series({"service": "up"}, [(10.0, 1.0), (20.0, 1.0)]), Series({"service": "gone"}, [(10.0, 1.0)])]
    >>> [s.labels["service"] for s in current(found, 21.0, 5.0)], current(found, 60.0, 5.0)
    (['up'], [])
    >>> [s.labels["service"] for s in current(found, 60.0, 5.0, late=60.0)]
    ['up']
    """
    ends = [s.points[-1][0] for s in series if s.points]
    if not ends:
        return []
    latest = max(ends)
    if age is None:
        return [s for s in series if s.points and s.points[-1][0] >= latest]
    if latest < asked - age - late:
        return []
    return [s for s in series if s.points and s.points[-1][0] >= latest - age]


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """The ``q`` quantile from cumulative ``(upper bound, count)`` buckets, as PromQL's ``histogram_quantile``:
    linear interpolation inside the bucket holding the rank, the lowest bucket starting at 0, and the highest
    finite bound when the rank falls in ``+Inf``. ``None`` where PromQL answers NaN: no ``+Inf`` bucket, no
    observation. Its arithmetic is Prometheus' step for step, so that the console computing a quantile from the
    bucket rates it read shows the number ``histogram_quantile`` would have answered, to the bit.

    >>> histogram_quantile(0.5, [(1.0, 0.0), (2.0, 10.0), (math.inf, 10.0)])
    1.5
    """
    fixed = _cumulative(buckets)
    if fixed is None or math.isnan(q):
        return None
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    total = fixed[-1][1]
    if total <= 0:
        return None
    rank = q * total
    index = next(i for i, (_, count) in enumerate(fixed) if count >= rank)
    if index == len(fixed) - 1:
        return fixed[-2][0]
    end, count_end = fixed[index]
    if index == 0:
        if end <= 0:
            return end
        start, count_start = 0.0, 0.0
    else:
        start, count_start = fixed[index - 1]
    if count_end == count_start:  # q == 0 over an empty lowest bucket: PromQL's 0/0
        return None
    return start + (end - start) * ((rank - count_start) / (count_end - count_start))


def quantile_overflows(q: float, buckets: Iterable[tuple[float, float]]) -> bool:
    """Whether the ``q`` quantile's rank falls in the ``+Inf`` bucket of cumulative ``(upper bound, count)``
    ``buckets``: more than ``1 - q`` of the observations lie above the largest finite bound, and
    :func:`histogram_quantile` (like PromQL's) answers that bound, which is then only a lower bound.

    >>> quantile_overflows(0.5, [(10.0, 0.0), (math.inf, 4.0)]), quantile_overflows(0.5, [(10.0, 3.0), (math.inf, 4.0)])
    (True, False)
    """
    fixed = _cumulative(buckets)
    if fixed is None or not 0 <= q <= 1:
        return False
    total = fixed[-1][1]
    return total > 0 and fixed[-2][1] < q * total


def _cumulative(buckets: Iterable[tuple[float, float]]) -> list[tuple[float, float]] | None:
    """``buckets`` in bound order, those of the same bound added up (as Prometheus does: two exporters writing
    ``1`` and ``1.0``), each count at least the one before (counts from rates can be slightly non-monotonic;
    Prometheus takes the running maximum); None without a ``+Inf`` bucket and a finite one."""
    ordered = sorted(buckets)
    if not ordered or not math.isinf(ordered[-1][0]):
        return None
    merged: list[tuple[float, float]] = []
    for le, count in ordered:
        if merged and merged[-1][0] == le:
            merged[-1] = (le, merged[-1][1] + count)
        else:
            merged.append((le, count))
    if len(merged) < 2:
        return None
    fixed: list[tuple[float, float]] = []
    running = -math.inf
    for le, count in merged:
        running = max(running, count)
        fixed.append((le, running))
    return fixed


def natural_key(value: str) -> tuple[int, float, str]:
    """Sort key putting numeric strings in numeric order before the others (GPU indexes, bin labels)."""
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def gpu_rows(found: dict[tuple[str, str], dict[str, Any]]) -> list[GpuRow]:
    """The GPU table from (gpu index, uuid) -> :class:`GpuRow` fields, in GPU index order."""
    return [GpuRow(gpu=key[0], **fields)
            for key, fields in sorted(found.items(), key=lambda kv: (natural_key(kv[0][0]), kv[0][1]))]


def drift_rows(found: dict[tuple[str, str, str], dict[str, float]]) -> list[DriftRow]:
    """The drift table from (model, feature, test) -> {"score", "pvalue", "detected"} values, highest score first."""
    rows = [DriftRow(model, feature, test, v.get("score"), v.get("pvalue"),
                     None if "detected" not in v else v["detected"] >= 0.5)
            for (model, feature, test), v in found.items()]
    return sorted(rows, key=lambda r: (-(r.score if r.score is not None else -math.inf), r.model, r.feature, r.test))


def quality_rows(values: dict[tuple[str, str], float], objectives: dict[tuple[str, str], float],
                 labelled: dict[str, float]) -> list[QualityRow]:
    """The quality table from (model, metric) -> value / objective and model -> labelled requests."""
    return [QualityRow(model, name, finite(value), finite(objectives.get((model, name))),
                       finite(labelled.get(model)))
            for (model, name), value in sorted(values.items(), key=lambda kv: (natural_key(kv[0][0]), kv[0][1]))]


#: Seconds after which the console shows a journal torn, set aside or failed as old: the default
#: ``meta.prediction_log_recovery_window`` of AiwatchPredictionLogRecoveryIncomplete (1h), after which it stops firing.
RECOVERY_RECENT_SECONDS = 3600.0
#: How far back (seconds), and to what step, a Prometheus source looks for when it first saw a log's latest recovery
#: time (:meth:`~aiwatch.console.queries.PanelQueries.prediction_log_recovery_seen`): the alert's lookback (a day, far
#: wider than an app host's clock hours off Prometheus'), to the banner's minute.
RECOVERY_SEEN_SPAN, RECOVERY_SEEN_STEP = 86400.0, 60.0


def recovery_rows(files: dict[tuple[str, str], float], records: dict[str, float],
                  last: dict[tuple[str, str], float] | None = None) -> list[RecoveryRow]:
    """The recovery table from (log, result) -> files, log -> records and (log, result) -> the unix time it was
    last counted, one row per log that has files or records, by log name.

    >>> recovery_rows({("p", "set_aside"): 1.0, ("p", "bogus"): 5.0}, {"p": 0.0}, {("p", "set_aside"): 9.0})
    [RecoveryRow(log='p', files={'recovered': 0.0, 'torn': 0.0, 'set_aside': 1.0, 'orphan_removed': 0.0, \
'failed': 0.0}, records=0.0, last={'set_aside': 9.0})]
    """
    logs = {log for log, _ in files} | set(records)
    stamps = {key: t for key, t in (last or {}).items() if finite(t) is not None}
    return [RecoveryRow(log, {r: finite(files.get((log, r))) or 0.0 for r in RECOVERY_RESULTS},
                        finite(records.get(log)),
                        {r: stamps[(log, r)] for r in RECOVERY_RESULTS if (log, r) in stamps})
            for log in sorted(logs, key=natural_key)]


def unstored_share(series: Iterable[Series], results: Iterable[str] | None = None) -> dict[str, float | None]:
    """Per ``log`` of a :meth:`DataSource.prediction_log` answer, the share of the records it dealt with that are not
    in storage, as AiwatchPredictionLogLosingRecords computes it (:data:`aiwatch.rules.render.UNSTORED_RESULTS`
    over :data:`~aiwatch.rules.render.HANDLED_RESULTS`: (dropped + failed + lost + recoverable) / (queued + dropped +
    lost + recoverable), at most 1: records kept before and failed now are in no denominator now), from the rates
    at the latest time any of the log's series has; ``None`` for a log that dealt with no record then. ``results``
    counts only those (of the same denominator): the lost ones, say.

    >>> unstored_share([Series({"log": "p", "result": r}, [(1.0, v)])
    ...                 for r, v in (("queued", 10.0), ("written", 8.0), ("failed", 2.0))])
    {'p': 0.2}
    >>> unstored_share([Series({"log": "p", "result": r}, [(1.0, v)]) for r, v in (("queued", 1.0), ("failed", 30.0))])
    {'p': 1.0}
    """
    from aiwatch.rules.render import HANDLED_RESULTS, UNSTORED_RESULTS

    counted = tuple(UNSTORED_RESULTS if results is None else results)
    logs: dict[str, list[Series]] = {}
    for s in series:
        if s.points:
            logs.setdefault(s.labels.get("log", ""), []).append(s)
    out: dict[str, float | None] = {}
    for log, found in logs.items():
        at = max(s.points[-1][0] for s in found)
        rates: dict[str, float] = {}
        for s in found:
            value = dict(s.points).get(at)
            if value is not None:
                result = s.labels.get("result", "")
                rates[result] = rates.get(result, 0.0) + value
        handled = sum(rates.get(r, 0.0) for r in HANDLED_RESULTS)
        unstored = sum(rates.get(r, 0.0) for r in counted)
        # at most 1, as the alert clamps it: records kept before and failed now have no denominator now
        out[log] = min(1.0, unstored / handled) if handled > 0 else (1.0 if unstored > 0 else None)
    return out


def missing_rows(live: dict[tuple[str, str, str], float], reference: dict[tuple[str, str, str], float],
                 counted: dict[tuple[str, str, str], float]) -> list[MissingRow]:
    """The missing-share table from (model, feature, reference) -> live share, reference share and values counted:
    every feature with a share, the largest rise over the reference first (then by model, feature and reference),
    those without both shares last.

    >>> rows = missing_rows({("m", "a", "r"): 0.1, ("m", "b", "r"): 0.5}, {("m", "a", "r"): 0.0, ("m", "b", "r"): 0.0},
    ...                     {})
    >>> [r.feature for r in rows]
    ['b', 'a']
    """
    rows = [MissingRow(model, feature, finite(live.get(key)), finite(reference.get(key)), finite(counted.get(key)),
                       ref) for key in set(live) | set(reference) for model, feature, ref in (key,)]
    rows = [r for r in rows if r.live is not None or r.reference is not None]

    def rise(r: MissingRow) -> tuple[bool, float, tuple[int, float, str], str, str]:
        up = None if r.live is None or r.reference is None else r.live - r.reference
        return (up is None, -(up or 0.0), natural_key(r.model), r.feature, r.reference_id)

    return sorted(rows, key=rise)


def bin_rows(reference: dict[str, float], live: dict[str, float]) -> list[BinRow]:
    """One feature's bins, reference share against live share, in bin order."""
    return [BinRow(b, reference.get(b), live.get(b)) for b in sorted(set(reference) | set(live), key=natural_key)]


LabelledValues = Iterable[tuple[dict[str, str], float]]


def one_reference_bins(reference: LabelledValues, live: LabelledValues, values: dict[str, float]) -> list[BinRow]:
    """:func:`bin_rows` of the rows of one ``reference`` label (each series' ``bin``): while a re-baselined profile
    rolls out, a feature's bins come from two profiles (other edges, other shares under the same bin index), and one
    profile's shares against the other's live shares mean nothing. The reference kept is the one whose replicas
    counted the most live values (``values``, by reference), as the fleet mostly serves it; then the first by name.

    >>> rows = one_reference_bins([({"bin": "0", "reference": "a"}, 0.5), ({"bin": "0", "reference": "b"}, 0.9)],
    ...                           [({"bin": "0", "reference": "b"}, 1.0)], {"a": 10.0, "b": 30.0})
    >>> [(r.bin, r.reference, r.live) for r in rows]
    [('0', 0.9, 1.0)]
    """
    reference, live = list(reference), list(live)
    names = sorted({lb.get("reference", "") for lb, _ in [*reference, *live]} | set(values))
    if not names:
        return []
    kept = max(names, key=lambda name: values.get(name, 0.0))

    def of_kept(rows: list[tuple[dict[str, str], float]]) -> dict[str, float]:
        return {lb.get("bin", ""): v for lb, v in rows if lb.get("reference", "") == kept}

    return bin_rows(of_kept(reference), of_kept(live))


def by_service(series: Iterable[Series]) -> dict[str, list[Series]]:
    """Series grouped by their ``service`` label (``""`` for none), in first-seen order."""
    out: dict[str, list[Series]] = {}
    for s in series:
        out.setdefault(s.labels.get("service", ""), []).append(s)
    return out


def service_order(services: Iterable[str], network: Iterable[Series] = ()) -> list[str]:
    """The order the console lays services out in: callers before the services they call (from the ``service`` ->
    ``peer`` pairs of :meth:`DataSource.network_time`, where the peer is one of ``services``), then by name. Stable
    from one refresh to the next, unlike an order by request rate.

    >>> service_order(["inference", "gateway"], [Series({"service": "gateway", "peer": "inference"}, [])])
    ['gateway', 'inference']
    """
    names = sorted(set(services))
    calls = {(s.labels.get("service", ""), s.labels.get("peer", "")) for s in network}
    calls = {(a, b) for a, b in calls if a in names and b in names and a != b}
    depth = dict.fromkeys(names, 0)
    for _ in range(len(names)):  # longest call chain above each service; bounded, so a call cycle cannot loop
        changed = False
        for caller, callee in calls:
            if depth[callee] < depth[caller] + 1 <= len(names):
                depth[callee] = depth[caller] + 1
                changed = True
        if not changed:
            break
    return sorted(names, key=lambda n: (depth[n], n))


NETWORK_CLAMPED, UNMEASURED = "network_clamped", "unmeasured"
OVERHEAD_CLAMPED, UNCLOSED = "overhead_clamped", "unclosed"
"""The ``caveat`` of :meth:`DataSource.measurement_caveats`' series:

- ``network_clamped``: a call whose peer reported more time than the caller saw it take; its network time counts as
  0 and its whole time as the peer's (``aiwatch_network_clamped_total`` over the network time's count);
- ``unmeasured``: a call with no network time, since no total came back from the peer or the call was retried
  (the calls' count less the network time's, over the calls' count: only for the peers that report at all, whose
  network time has a count);
- ``overhead_clamped``: a request whose named phases added up to more than its time; its overhead counts as 0
  (``aiwatch_overhead_clamped_total`` over the requests);
- ``unclosed``: a WSGI response the server dropped without closing it, recorded as it stood then
  (``aiwatch_unclosed_responses_total`` over the requests)."""
CAVEATS = (NETWORK_CLAMPED, UNMEASURED, OVERHEAD_CLAMPED, UNCLOSED)

#: Per caveat: what happened to the calls or requests, what it does to the panels above, and what is counted.
CAVEAT_TEXT = {
    NETWORK_CLAMPED: ("Network time counted as 0", "calls",
                      "The peer reported more time than the caller saw the call take (a Server-Timing total that "
                      "counts time before the request reached it, or one read on another clock): the network panel "
                      "reads low for these links, and the peer's share of the caller's time high. The diagnosis "
                      "names such a network part as a lower bound."),
    UNMEASURED: ("Calls with no network time", "calls",
                 "No total came back from the peer (an error or a timeout before it answered, a proxy that drops the "
                 "Server-Timing header), or the call was retried: the network panel leaves them out, and the "
                 "diagnosis counts their whole time as the peer's, so it names such a network part as a lower "
                 "bound."),
    OVERHEAD_CLAMPED: ("Overhead counted as 0", "requests",
                       "Their named phases added up to more than the request (phases that ran concurrently, or "
                       "clock anomalies): these services' phase stacks add up to more than their request time."),
    UNCLOSED: ("WSGI responses the server dropped without closing them", "requests",
               "Each was recorded as it stood when dropped, so its time may end before its whole body was sent "
               "(PEP 3333 says the server must close it; werkzeug's development server does not when the client "
               "resets the connection)."),
}

NAME_LABELS = ("service", "peer", "model", "queue", "cache", "log", "component", "label")
"""Labels whose values name something the console shows by name (a service, a model, a queue, a cache, a prediction
log, one of aiwatch's own components, a label the cardinality guard folds)."""


def tell_scopes_apart(found: Sequence[dict[str, str]], scope: Sequence[str]) -> list[dict[str, str]]:
    """The label sets of one answer, where a name (:data:`NAME_LABELS`) appears in more than one scope (the
    aggregation labels: two clusters running a service of the same name) suffixed with its scope, so that they are
    never drawn, stacked or looked up as one. Names in one scope only are left as they are.

    >>> found = [{"cluster": "eu", "service": "api"}, {"cluster": "us", "service": "api"}, {"service": "db"}]
    >>> [s["service"] for s in tell_scopes_apart(found, ("cluster", "namespace"))]
    ['api (eu)', 'api (us)', 'db']
    """
    if not scope:
        return [dict(labels) for labels in found]
    where: dict[tuple[str, str], set[tuple[str, ...]]] = {}
    for labels in found:
        place = tuple(labels.get(s, "") for s in scope)
        for name in NAME_LABELS:
            if name in labels:
                where.setdefault((name, labels[name]), set()).add(place)
    out = []
    for labels in found:
        labels = dict(labels)
        place = tuple(labels.get(s, "") for s in scope)
        for name in NAME_LABELS:
            if name in labels and len(where[(name, labels[name])]) > 1:
                labels[name] = f"{labels[name]} ({'/'.join(p for p in place if p) or '-'})"
        out.append(labels)
    return out


def finite(value: float | None) -> float | None:
    """``value`` unless it is ``None``, NaN or infinite."""
    if value is None or math.isnan(value) or math.isinf(value):
        return None
    return value


#: The shortest window a PromQL duration can say: PromQL durations count whole milliseconds.
MIN_WINDOW = 0.001


def duration(seconds: float) -> str:
    """A PromQL duration for ``seconds`` (``90`` -> ``"90s"``; a fraction of a millisecond rounded)."""
    if seconds <= 0:
        raise ValueError(f"window must be positive, got {seconds}")
    if seconds < MIN_WINDOW:
        raise ValueError(f"window must be at least {MIN_WINDOW:g} s (PromQL durations count whole milliseconds), "
                         f"got {seconds:g}")
    return f"{round(seconds * 1000)}ms" if seconds < 1 or seconds != int(seconds) else f"{int(seconds)}s"
