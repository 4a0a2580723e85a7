"""The aiwatch console, a Streamlit app: ``aiwatch console`` runs it (or ``streamlit run aiwatch/console/app.py``).

Six views, picked in the sidebar: **Latency**, **AI traffic** (real-time vs batch, streams and tokens, fallbacks,
model versions), **Resources**, **Drift**, **Alerts** and **Runbooks**. Each panel
asks one question of the data source (:mod:`aiwatch.console.source`) and draws the answer; a panel whose question
fails or has no data shows a message saying why, and the other panels go on. A tile (the latest p99, time per
request) shows "—" for a service or traffic class without requests in the window now, never the value from before
they stopped. The Runbooks view serves the runbook
of every aiwatch alert from the package (:mod:`aiwatch.runbooks`); ``?runbook=<AlertName>`` opens one, so a rules
config can point ``runbook_url`` at the console (``http://CONSOLE/?runbook={alert}``).


Label values, feature names, annotations, URLs and error messages come from traffic or from the source, so they are
written through :func:`~aiwatch.console.text.md` wherever Streamlit would render Markdown: they show as text, never
as links, emphasis or HTML.

Configuration comes from ``AIWATCH_CONSOLE_*`` environment variables (:class:`~aiwatch.console.config.ConsoleConfig`);
a test (or an embedding app) can instead put a ready :class:`~aiwatch.console.source.DataSource` in
``st.session_state["aiwatch_source"]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

from aiwatch import clock, runbooks
from aiwatch._optional import require
from aiwatch.console.config import ConsoleConfig, shared_source
from aiwatch.console.pool import Prefetch
from aiwatch.console.source import (
    CAVEAT_TEXT,
    CAVEATS,
    GPU_EXTREMES,
    MODEL_PHASES,
    DataSource,
    GpuTable,
    GpuUtilization,
    LoopStall,
    MissingRow,
    NotSupported,
    Series,
    SourceError,
    SourceUnavailable,
    TracedRequest,
    by_service,
    current,
    loop_stuck_window,
    service_order,
    unstored_share,
)
from aiwatch.console.text import latency_text, md, md_link, safe_url, trace_link
from aiwatch.diagnose.report import CLAMPED_SHARE
from aiwatch.rules.config import Drift, Latency
from aiwatch.traffic import REALTIME

st: Any = require("streamlit", "console")
pd: Any = require("pandas", "console")
alt: Any = require("altair", "console")

VIEWS = ("Latency", "AI traffic", "Resources", "Drift", "Alerts", "Runbooks")
#: the query parameter that opens the Runbooks view on one alert's page
RUNBOOK_PARAM = "runbook"
WINDOWS = (30.0, 60.0, 300.0, 900.0, 3600.0)
MODEL_COLOR = "#d62728"
NOT_MODEL_COLORS = ("#1f77b4", "#6baed6", "#9ecae1", "#7f7f7f", "#bcbd22", "#17becf", "#c7c7c7")

T = TypeVar("T")


def _config() -> ConsoleConfig:
    return ConsoleConfig.from_env()


# What a windowed panel with nothing to draw says when the window is too short for the scrape interval ("" when it is
# not): set for each drawing of the views, read by panel().
_SHORT_WINDOW: ContextVar[str] = ContextVar("aiwatch_console_short_window", default="")


def short_window_note(window: float, interval: float | None) -> str:
    """What a rate panel without data says when ``window`` is shorter than two scrape intervals (``interval``): a
    rate then has fewer than two scrapes in the window to compare, whatever the traffic. "" otherwise, or when the
    interval is unknown."""
    if interval is None or window >= 2 * interval:
        return ""
    return (f"Nothing to show over {_window_label(window)}: the window is shorter than two scrape intervals (the "
            f"targets are scraped every {_window_label(interval)}), so a rate has fewer than two scrapes in it to "
            f"compare, whatever the traffic. Pick a window of {_window_label(4 * interval)} or more (four scrape "
            "intervals).")


def _scrape_interval(src: DataSource, service: str | None = None) -> float | None:
    try:
        return src.scrape_interval(service)
    except Exception:  # only a better message is lost: the panels say what they would have said
        return None


def _window_label(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


# --- drawing helpers ------------------------------------------------------------------------------------------
# The key of a frame()'s attrs naming its points that are only lower bounds: column -> set of times. (Comments, not
# docstrings: Streamlit would draw a bare string.)
LOWER_BOUNDS = "aiwatch_lower_bounds"


def frame(series: Sequence[Series], name: Callable[[Series], str], scale: float = 1.0) -> Any:
    """Wide DataFrame: a time index and one column per series (the points that are only lower bounds, a
    quantile above its histogram's largest finite bucket, in ``attrs[LOWER_BOUNDS]``, for :func:`chart`)."""
    columns = {}
    bounds: dict[str, set[Any]] = {}
    for s in series:
        key = name(s)
        if key in columns:  # two series named alike: neither may hide the other
            key = f"{key} ({s.name()})"
        # Whole seconds: sub-second scrape times would only clutter the time axis.
        columns[key] = pd.Series({pd.Timestamp(round(t), unit="s"): v * scale for t, v in s.points},
                                     dtype=float)
        if s.lower_bounds:
            bounds[key] = {pd.Timestamp(round(t), unit="s") for t in s.lower_bounds}
    df = pd.DataFrame(columns).sort_index()
    df.index.name = "time"
    df.attrs[LOWER_BOUNDS] = bounds
    return df


def panel(title: str, fetch: Callable[[], T], draw: Callable[[T], None], empty: str,
          empty_is_good: bool = False, windowed: bool = False) -> T | None:
    """A titled panel: fetch its data, draw it, or say clearly why there is nothing to draw. ``title`` and
    ``empty`` are Markdown: data in them must already be escaped with :func:`md`; error messages are escaped here.
    A ``windowed`` panel (rates over the view's window) with nothing to draw says instead that the window is too
    short, when it is shorter than two scrape intervals (:func:`short_window_note`)."""
    st.markdown(f"**{title}**")
    try:
        data = fetch()
    except NotSupported as exc:
        st.info(md(exc))
        return None
    except SourceUnavailable as exc:
        st.error(md(exc))
        return None
    except SourceError as exc:
        st.warning(f"{title}: {md(exc)}")
        return None
    except Exception as exc:  # a panel must never turn into a traceback
        st.error(f"{title} could not be drawn: {type(exc).__name__}: {md(exc)}")
        return None
    if not data:
        if windowed and _SHORT_WINDOW.get():
            st.warning(_SHORT_WINDOW.get())
        else:
            (st.success if empty_is_good else st.info)(empty)
        return None
    draw(data)
    return data


def chart(df: Any, unit: str, *, area: bool = False, colors: Sequence[str] | None = None, height: int = 260,
          legend_columns: int = 0) -> None:
    """A time chart of a wide DataFrame (one column per series): lines, or a stacked area in column order."""
    names = [str(c) for c in df.columns]
    bounds: dict[str, set[Any]] = df.attrs.get(LOWER_BOUNDS, {})
    long = df.reset_index().melt("time", var_name="series", value_name="value").dropna()
    long["order"] = long["series"].map({n: i for i, n in enumerate(names)})
    long["at_least"] = [t in bounds.get(name, ()) for name, t in zip(long["series"], long["time"], strict=True)]
    long["bound"] = long["at_least"].map({True: AT_LEAST_POINT, False: ""})
    long.attrs.clear()  # the frame's, taken by melt: not for Streamlit to serialize
    legend = alt.Legend(orient="bottom", columns=legend_columns) if legend_columns else alt.Legend(orient="bottom")
    color = alt.Color("series:N", title=None, legend=legend,
                      scale=alt.Scale(domain=names, range=list(colors)) if colors else alt.Scale(domain=names))
    base = alt.Chart(long).encode(
        # the times are UTC wall clock (naive timestamps, which the browser draws as they are): said so, since the
        # reader's other tools may show local time
        x=alt.X("time:T", title="time (UTC)", axis=alt.Axis(format="%H:%M:%S", labelOverlap=True)),
        y=alt.Y("value:Q", title=unit, stack="zero" if area else None, axis=alt.Axis(format="~r")),
        color=color, order=alt.Order("order:Q"),
        tooltip=[alt.Tooltip("time:T", format="%H:%M:%S", title="time (UTC)"), "series:N",
                 alt.Tooltip("value:Q", format=".3~f"), alt.Tooltip("bound:N", title="note")])
    mark = base.mark_area(opacity=0.85) if area else base.mark_line()
    if long["at_least"].any():  # a percentile the histogram cannot give: its bucket bound, marked apart
        mark = mark + base.transform_filter(alt.datum.at_least).mark_point(shape="triangle-up", filled=True, size=60)
    st.altair_chart(mark.properties(height=height), width="stretch")
    if long["at_least"].any():
        st.caption(f"▲ {AT_LEAST_POINT}: {AT_LEAST}")


def line(series: Sequence[Series], keys: Sequence[str], unit: str, scale: float = 1.0) -> None:
    chart(frame(series, lambda s: s.name(*keys), scale), unit)


# --- views ----------------------------------------------------------------------------------------------------
ALL_SERVICES = "All services"


def _service_order(*answers: Callable[[], list[Series]]) -> list[str]:
    """The services the answers name, callers first (see :func:`service_order`); empty when none answered."""
    found: list[Series] = []
    for answer in answers:
        try:
            found.extend(answer())
        except Exception:  # the panel of that answer shows why
            continue
    callers = [s for s in found if "peer" in s.labels]
    return service_order({s.labels.get("service", "") for s in found if "peer" not in s.labels}, callers)


def _only(series: list[Series], services: list[str] | None, *labels: str) -> list[Series]:
    """The series whose ``labels`` (any of them) name one of ``services``; all of them when ``services`` is None."""
    if services is None:
        return series
    return [s for s in series if any(s.labels.get(k) in services for k in labels)]


def small_multiples(kind: str, series: list[Series], order: Sequence[str],
                    draw: Callable[[str, list[Series]], None], per_row: int = 2) -> None:
    """One small chart per ``service``, side by side in ``order``: never one chart summing services.
    Each service's part is a container keyed ``"<kind>-<service>"``, headed by the service's name."""
    groups = by_service(series)
    names = [s for s in order if s in groups] + sorted(s for s in groups if s not in order)
    for start in range(0, len(names), per_row):
        cols = st.columns(per_row if len(names) > 1 else 1, gap="large")
        for col, service in zip(cols, names[start:start + per_row], strict=False):
            with col, st.container(key=f"{kind}-{service}"):
                st.markdown(f"**{md(service)}**" if service else "**(no service label)**")
                draw(service, groups[service])


def latency_view(src: DataSource, window: float) -> None:
    with Prefetch() as prefetch:
        _latency_view(src, window, prefetch)


def _latency_view(src: DataSource, window: float, prefetch: Prefetch) -> None:
    w = _window_label(window)
    st.header("Latency: where the time goes")
    now = _Now(src.now(), src.latest_point_age(), window)
    rates = prefetch(lambda: src.throughput(window))
    network = prefetch(lambda: src.network_time(window))
    links = prefetch(lambda: src.link_throughput(window))
    caveats = prefetch(lambda: src.measurement_caveats(window))
    loops = prefetch(lambda: src.loop_delay(window))
    background = prefetch(lambda: src.background_phases(window))
    stalls = prefetch(lambda: src.loop_stalls(window))
    latency = prefetch(lambda: src.latency_quantiles(window))
    traced = prefetch(lambda: src.slowest_traces(window))
    phases = prefetch(lambda: src.phase_split(window))
    errors = prefetch(lambda: src.error_ratio(window))
    order = _service_order(rates, network)
    options = [ALL_SERVICES, *sorted(order)]
    state = st.session_state
    if state.get("latency_service") not in options:
        state["latency_service"] = ALL_SERVICES
    if state.get("latency_baseline") not in BASELINES:
        state["latency_baseline"] = BASELINES[0]
    pick, compare, _ = st.columns([1, 1, 1])
    with pick:
        choice = st.selectbox("Service", options, key="latency_service",
                              help="Each service's requests, phases and calls are shown apart: a caller's phase "
                                   "that calls another service already contains that service's whole time.")
    with compare:
        baseline = st.selectbox("Compare with", BASELINES, key="latency_baseline",
                                format_func=lambda b: _baseline_label(b, window),
                                help="The diagnosis compares the last window with this baseline, just before it.")
    shown = None if choice == ALL_SERVICES else [str(choice)]
    if shown is not None:  # the picked service's targets may be scraped less often; body() resets the note after
        _SHORT_WINDOW.set(short_window_note(window, _scrape_interval(src, shown[0])))
    diagnosis_panel(src, window, baseline or window, None if shown is None else shown[0])
    panel("Request latency p50 / p95 / p99 per service (ms)", lambda: _only(latency(), shown, "service"),
          lambda d: small_multiples("latency", d, order,
                                    lambda svc, found: _draw_latency(svc, found, _serving(rates, svc, now))),
          f"No request latency yet: aiwatch_request_duration_seconds has no samples in the last {w}. "
          "Send traffic to the service, or wait for the next scrape.", windowed=True)
    panel(f"Slowest traced requests per service (last {w}): the exemplars of the p99 panel's series",
          lambda: [r for r in traced() if shown is None or r.service in shown],
          lambda d: _draw_slowest_traces(d, _trace_url()),
          f"No traced request in the last {w}. Exemplars need sampled traces (aiwatch with an OpenTelemetry SDK) "
          "and a Prometheus run with `--enable-feature=exemplar-storage`, which keeps the trace ids it scrapes.")
    panel(f"Time per request by phase, per service (ms, stacked; mean over {w}): model vs not model",
          lambda: _only(phases(), shown, "service"),
          lambda d: _draw_phase_services(d, order, lambda svc: _serving(rates, svc, now)),
          f"No phase timings yet: aiwatch_phase_duration_seconds has no samples in the last {w}.", windowed=True)
    panel("Network time seen by callers (ms; calling service → peer)",
          lambda: _only(network(), shown, "service", "peer"),
          lambda d: line(d, ["service", "peer", "quantile"], "ms", 1000.0),
          "No network timings: aiwatch_network_duration_seconds is measured by instrumented *clients* "
          "(calls that read the server's Server-Timing); none reported in the window.", windowed=True)
    panel("Effective throughput per link (MB per second of network time; calling service → peer)",
          lambda: _only(links(), shown, "service", "peer"),
          lambda d: line(d, ["service", "peer"], "MB/s", 1e-6),
          "No link throughput: it needs both the bytes instrumented clients moved (aiwatch_client_bytes_total) "
          f"and their network time to the peer in the last {w}.", windowed=True)
    panel(f"What the split could not measure as it is (share of calls or requests, over {w})",
          lambda: _only(_grown(caveats(), CAVEAT_NOISE), shown, "service", "peer"),
          lambda d: _draw_caveats(d, w, now.ids(caveats)),
          f"Every call's network time and every request's overhead in the last {w} were measured as they are: no "
          "peer reported more time than its caller saw or left a call without its report, no request's phases added "
          "up to more than the request, no WSGI response was dropped unclosed.", empty_is_good=True, windowed=True)
    panel(f"Event loop delay per service (ms; p99 and mean over {w}): how late each asyncio server's loop ran; a "
          "starved loop slows every request and shows as network time on its callers",
          lambda: _only(loops(), shown, "service"),
          lambda d: line(d, ["service", "stat"], "ms", 1000.0),
          "No event loop delay: aiwatch_event_loop_delay_seconds is sampled by the ASGI middleware and the grpc.aio "
          "interceptor (asyncio servers; WSGI and grpcio's thread-pool servers have no loop); none reported in the "
          f"last {w}.", windowed=True)
    panel(f"Time each replica's event loop stood still (share of the last {w}, worst first): what "
          "AiwatchEventLoopDelayHigh fires on",
          lambda: [r for r in stalls() if shown is None or r.service in shown],
          lambda d: _draw_loop_stalls(d, w),
          "No time stood still per replica: it needs aiwatch_event_loop_sampled_seconds_total (the time each "
          "asyncio server's loop sampler watched) next to the delay's _sum; no target reported it in the last "
          f"{w}.", windowed=True)
    left, right = st.columns(2)
    with left:
        panel("Throughput (requests/s)", lambda: _only(rates(), shown, "service"),
              lambda d: line(d, ["service"], "req/s"), f"No requests in the last {w}.", windowed=True)
    with right:
        panel("Error ratio (share of requests with a 5xx or failed gRPC status)",
              lambda: _only(errors(), shown, "service"),
              lambda d: line(d, ["service"], "ratio"), f"No requests in the last {w}, so no error ratio.",
              windowed=True)
    panel(f"Phases outside requests per service (ms; p99 and mean over {w}): background workers and batch jobs in "
          "the services' processes, not request time",
          lambda: _only(background(), shown, "service"),
          lambda d: line(d, ["service", "phase", "stat"], "ms", 1000.0),
          f"No phase was recorded outside a request in the last {w} "
          "(aiwatch_background_phase_duration_seconds).", windowed=True)


def _trace_url() -> str:
    try:
        return _config().trace_url
    except ValueError:  # main() said so above the views
        return ""


def _draw_slowest_traces(rows: list[TracedRequest], trace_url: str) -> None:
    """The traced requests as a table: their trace ids as text, and links to the traces when ``trace_url`` (a
    template, :func:`~aiwatch.console.text.trace_link`) is set."""
    df = pd.DataFrame([{"service": r.service, "time (ms)": r.seconds * 1000.0,
                        "observed (UTC)": pd.Timestamp(round(r.at), unit="s"), "trace_id": r.trace_id,
                        **({"trace": trace_link(trace_url, r.trace_id)} if trace_url else {})} for r in rows])
    columns: dict[str, Any] = {"time (ms)": st.column_config.NumberColumn("time (ms)", format="%.1f")}
    if trace_url:
        columns["trace"] = st.column_config.LinkColumn("trace", display_text="open trace")
    st.dataframe(df, hide_index=True, width="stretch", column_config=columns)
    if not trace_url:
        st.caption(md("Set AIWATCH_CONSOLE_TRACE_URL to your tracing backend's trace page, {trace_id} standing for "
                      "the id (e.g. https://tempo.example/trace/{trace_id}), to link each request to its trace."))


# A caveat's share at or under this is 0: a share of calls with no network time is one less a ratio of two rates
# that Prometheus extrapolates each on its own, a rounding away from 0 when every call was measured. (Comments, not
# docstrings: Streamlit's magic draws a bare string on every page.)
CAVEAT_NOISE = 1e-6

# The share of a service's calls or requests from which a caveat is warned about (the diagnosis' own threshold for
# its note on a clamped network part, aiwatch.diagnose.report.CLAMPED_SHARE).
CAVEAT_SHARE = CLAMPED_SHARE


def _caveat_subject(s: Series) -> str:
    """Who a caveat's series is about: ``service`` or ``service → peer``."""
    peer = s.labels.get("peer")
    return s.labels.get("service", "") + (f" → {peer}" if peer is not None else "")


def _draw_caveats(series: list[Series], w: str, live: set[int]) -> None:
    """A warning per caveat whose share now is :data:`CAVEAT_SHARE` or more for some service (names escaped: they
    come from traffic; ``live``: the ``id`` of the series current now, :meth:`_Now.ids`), then a table of the latest
    shares and a chart of them over time."""
    ordered = sorted(series, key=lambda s: (CAVEATS.index(s.labels["caveat"]), _caveat_subject(s)))
    warned = False
    for caveat in CAVEATS:
        what, of, why = CAVEAT_TEXT[caveat]
        worst = sorted(((s.last, _caveat_subject(s)) for s in ordered
                        if s.labels["caveat"] == caveat and id(s) in live and s.last is not None
                        and s.last >= CAVEAT_SHARE),
                       key=lambda found: (-found[0], found[1]))
        if worst:
            warned = True
            st.warning(f"{what} in the last {w}: "
                       + ", ".join(f"{md(who)} {share:.1%} of {of}" for share, who in worst[:10])
                       + ("…" if len(worst) > 10 else "") + f". {why}")
    if not warned:
        st.info(f"Under {CAVEAT_SHARE:.0%} of every service's calls and requests in the last {w}: the panels above "
                "stand as measured.")
    rows = [{"caveat": CAVEAT_TEXT[s.labels["caveat"]][0], "service → peer": _caveat_subject(s),
             "share %": None if s.last is None else s.last * 100} for s in ordered]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch",
                 column_config={"share %": st.column_config.NumberColumn(format="%.1f%%")})
    chart(frame(ordered, lambda s: f"{s.labels['caveat']}: {_caveat_subject(s)}", 100.0), "%")


# AiwatchEventLoopDelayHigh's default threshold on a replica's share of the time stood still (rules config
# latency.loop_stalled_ratio; the console does not read the rules config).
LOOP_STALLED_RATIO = Latency().loop_stalled_ratio
# How many replicas the loop warning names.
NAMED_REPLICAS = 10


#: The note of a replica whose share is not a finite number.
UNKNOWN_SHARE = "unknown: a counter is not a finite number"


#: The worst worker's column: a share of the last 5 minutes (aiwatch_event_loop_stalled_ratio), whatever the window.
WORST_WORKER = "worst worker % (5m)"


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _stall_over(row: LoopStall) -> bool:
    """Whether AiwatchEventLoopDelayHigh (at its default threshold) would count this replica: stuck, one of its
    loops stuck, or the mean share or the worst worker's over the threshold."""
    return (row.stuck or row.worker_stuck or row.stalled > LOOP_STALLED_RATIO
            or (_finite(row.worst) and (row.worst or 0.0) > LOOP_STALLED_RATIO))


def _stall_text(row: LoopStall, w: str) -> str:
    if row.stuck:
        return f"no sample in the last {w}: hung?"
    if row.worker_stuck:
        return f"one worker's loop took no sample in the last {loop_stuck_window()}: hung?"
    mean = f"{row.stalled:.1%}" if math.isfinite(row.stalled) else UNKNOWN_SHARE
    if _finite(row.worst) and (row.worst or 0.0) > LOOP_STALLED_RATIO:
        return f"worst worker {row.worst:.1%} of the last 5m (mean {mean})"
    return mean


def _stall_note(row: LoopStall, w: str) -> str:
    return _stall_text(row, w) if row.stuck or row.worker_stuck or not math.isfinite(row.stalled) else ""


def _draw_loop_stalls(rows: list[LoopStall], w: str) -> None:
    """The share of the window each replica's loop stood still (the mean over a multiprocess target's workers)
    and, where the replica exports it, its worst worker's share of the last 5 minutes, worst first by the larger
    of the two (the sources sort them); a loop whose sampler took no sample all window reads 100% with a note, as
    does (in the note) one whose stalest worker took none over the alert's stuck window; one whose share is not a
    finite number (a counter at infinity) is unknown: no figure, a note, and last. A warning names those the alert
    would count at its default threshold."""
    over = [r for r in rows if _stall_over(r)]
    if over:
        st.warning(f"Event loops standing still more than {LOOP_STALLED_RATIO:.0%} of the last {w}: "
                   + "; ".join(f"{md(r.instance)} of {md(r.service)}: {_stall_text(r, w)}"
                               for r in over[:NAMED_REPLICAS])
                   + ("…" if len(over) > NAMED_REPLICAS else "")
                   + ". Runbook AiwatchEventLoopDelayHigh.")
    # the worst worker's gauges (an aiwatch that has them): a share, or a stuck worker (its timestamp)
    worst = any(r.worst is not None for r in rows)
    if worst or any(r.worker_stuck for r in rows):
        st.caption(f"\"stood still %\": the seconds each replica's timers ran late per second its sampler watched "
                   f"the loop, over {w}: the share of the time it stood still (each stall counted by its length; the "
                   f"mean over the workers of a multiprocess target, so one worker stalled 60% of the time among "
                   f"four reads 15%). A prompt loop reads about 1%. "
                   + (f"\"{WORST_WORKER}\": the share of its worst worker alone (each worker's own sampler; the "
                      f"largest of the live workers, aiwatch_event_loop_stalled_ratio), over the last 5 minutes "
                      f"whatever the window; empty where the replica's aiwatch does not export it. The rows are "
                      f"sorted by the larger of the two. " if worst else "")
                   + f"AiwatchEventLoopDelayHigh fires above {LOOP_STALLED_RATIO:.0%} (latency.loop_stalled_ratio, "
                   f"its default){' on either' if worst else ''} held for its 'for' time, or when a replica takes no "
                   f"sample while its target is up: such a replica reads 100%, \"no sample in the last {w}: "
                   f"hung?\" (a loop blocked all window; or a host that runs its loop only per request), or when one "
                   f"of its workers takes none over the last {loop_stuck_window()} whatever the window (the alert's "
                   f"range, latency.loop_stuck_window, its default; its last-sample timestamp did not change over two "
                   f"scrapes or more in it): \"one worker's loop took no sample in the last {loop_stuck_window()}: "
                   f"hung?\", while the others' share reads on.")
    else:  # an aiwatch without the gauges: nothing to say of them
        st.caption(f"The seconds each replica's timers ran late per second its sampler watched the loop, over {w}: "
                   f"the share of the time it stood still (each stall counted by its length; the mean over the "
                   f"workers of a multiprocess target). A prompt loop reads about 1%. AiwatchEventLoopDelayHigh fires "
                   f"above {LOOP_STALLED_RATIO:.0%} (latency.loop_stalled_ratio, its default) held for its 'for' "
                   f"time, or when a replica takes no sample while its target is up: such a replica reads 100%, "
                   f"\"no sample in the last {w}: hung?\" (a loop blocked all window; or a host that runs its loop "
                   f"only per request).")
    df = pd.DataFrame([{"service": r.service, "instance": r.instance, "job": r.job,
                        "stood still %": r.stalled * 100 if math.isfinite(r.stalled) else None,
                        WORST_WORKER: (r.worst or 0.0) * 100 if _finite(r.worst) else None,
                        "note": _stall_note(r, w)} for r in rows])
    if len({r.job for r in rows}) < 2:  # one job (or none, scraped directly): the instance says which replica
        df = df.drop(columns="job")
    if not worst:  # an aiwatch without the gauge: the column would be empty
        df = df.drop(columns=WORST_WORKER)
    if not any(_stall_note(r, w) for r in rows):
        df = df.drop(columns="note")
    st.dataframe(df, hide_index=True, width="stretch", height=min(400, 38 + 35 * len(df)),
                 column_config={"stood still %": st.column_config.NumberColumn(format="%.1f%%"),
                                WORST_WORKER: st.column_config.NumberColumn(format="%.1f%%")})


# The diagnosis' baselines: 0 is the window before the view's window (as long as it), the others are seconds.
# (Comments, not docstrings: Streamlit would draw a bare string.)
BASELINES: tuple[float, ...] = (0.0, 900.0, 3600.0)
# How many of the ranked contributors the Latency view lists.
CONTRIBUTORS = 5


def _baseline_label(baseline: float, window: float) -> str:
    if not baseline:
        return f"the {_window_label(window)} before"
    return f"the {_window_label(baseline)} before"


def diagnosis_panel(src: DataSource, window: float, baseline: float, service: str | None) -> None:
    """The diagnosis of ``service`` (the entry service when None): the view's window against the ``baseline``
    seconds before it, by the same code as ``aiwatch diagnose``. Names come from traffic, so everything that
    shows them is plain text (``st.text``, a table), never Markdown."""
    from aiwatch.diagnose.report import DiagnoseError
    from aiwatch.diagnose.run import diagnose

    with st.container(key="diagnosis", border=True):
        st.markdown(f"**Diagnosis: the last {_window_label(window)} against "
                    f"{_baseline_label(baseline, window)}**")
        try:
            d = diagnose(src, service, incident=window, baseline=baseline or window)
        except DiagnoseError as exc:
            st.caption("No diagnosis:")
            st.text(str(exc))
            return
        except Exception as exc:  # the view goes on without its diagnosis
            st.caption("The diagnosis could not be made:")
            st.text(f"{type(exc).__name__}: {exc}")
            return
        st.text(d.verdict)
        for note in d.notes:
            st.text(f"note: {note}")
        top = d.contributors[:CONTRIBUTORS]
        if top:
            st.dataframe(pd.DataFrame([{
                "part": c.part.describe(), "baseline ms": c.baseline_seconds * 1000,
                "incident ms": c.incident_seconds * 1000, "delta ms": c.delta_seconds * 1000,
                "share of the added time": c.share * 100} for c in top]),
                hide_index=True, width="stretch", column_config={
                    "baseline ms": st.column_config.NumberColumn(format="%.1f"),
                    "incident ms": st.column_config.NumberColumn(format="%.1f"),
                    "delta ms": st.column_config.NumberColumn(format="%+.1f"),
                    "share of the added time": st.column_config.NumberColumn(format="%.0f%%")})
        st.caption(f"Time per request of the service, split into parts that add up (down the call graph); parts "
                   f"that moved less than {d.noise_floor_seconds * 1000:.1f} ms are noise. Same as `aiwatch "
                   f"diagnose` on this source; see docs/diagnose.md.")


@dataclass(frozen=True)
class _Now:
    """When a view asked its questions, how old the last point of a series still current then may be
    (:meth:`DataSource.latest_point_age`), and how far behind now the source may run (the view's window: a
    Prometheus fed by remote write ingests late; an answer whose latest point is older than that is of a fleet
    gone): what :func:`~aiwatch.console.source.current` needs."""

    asked: float
    age: float | None
    late: float

    def of(self, series: Sequence[Series]) -> list[Series]:
        return current(series, self.asked, self.age, self.late)

    def ids(self, *answers: Callable[[], list[Series]]) -> set[int]:
        """The ``id`` of each series current now of the ``answers`` (prefetched: each gives the same list every
        time), read whole: a panel that draws part of an answer (the series that grew) still tells a series that
        ended before the answer's latest point."""
        return {id(s) for answer in answers for s in self.of(_answer(answer))}


def _serving(rates: Callable[[], list[Series]], service: str, now: _Now) -> bool:
    """Whether ``service``'s request rate now is above zero: the latest quantile or mean of a service without
    requests now is from before they stopped (a rate over no requests has no quantile), and so is the last one of a
    service whose rate series ended (every replica gone: :func:`~aiwatch.console.source.current`). True when the
    rates failed: their panel says why, and the tiles show what they have."""
    try:
        found = rates()
    except Exception:
        return True
    return any((s.last or 0.0) > 0 for s in now.of(found) if s.labels.get("service", "") == service)


NO_REQUESTS_NOW = "No requests in the window now: the chart's latest value is from before they stopped."
# What a chart's point that is only a lower bound says in its tooltip.
AT_LEAST_POINT = "≥ bound"
AT_LEAST = ("At least this: the percentile lies above the histogram's largest finite bucket bound, so the histogram "
            "can only say it is at least that bound (histogram_quantile answers the bound itself).")


def _quantile_tile(col: Any, label: str, found: Series | None, help_text: str | None = None) -> None:
    """A tile of a quantile series' latest value ("—" without one; "≥" before a lower bound, with why)."""
    at_least = found is not None and found.at_least
    col.metric(label, latency_text(None if found is None else found.last, at_least),
               help=help_text or (AT_LEAST if at_least else None))


def _draw_latency(service: str, series: list[Series], serving: bool) -> None:
    latest = {s.labels.get("quantile", ""): s for s in series} if serving else {}
    cols = st.columns(3)
    for col, name in zip(cols, ("p50", "p95", "p99"), strict=True):
        _quantile_tile(col, f"request {name}", latest.get(name), None if serving else NO_REQUESTS_NOW)
    chart(frame(sorted(series, key=lambda s: s.labels.get("quantile", "")), lambda s: s.labels.get("quantile", ""),
                1000.0), "ms", height=180)


def _phase_label(phase: str, has_model: bool) -> str:
    if phase in MODEL_PHASES:
        return f"{phase} (model)"
    return f"{phase} (not model)" if has_model else phase


def _draw_phase_services(series: list[Series], order: Sequence[str], serving: Callable[[str], bool]) -> None:
    if len(by_service(series)) > 1:
        st.caption("One stack per service: each splits that service's own request time. A phase that calls another "
                   "service (a gateway's inference_call) holds that service's whole time plus the network, so "
                   "services are never added up.")
    small_multiples("phases", series, order, lambda svc, found: _draw_phases(svc, found, serving(svc)))


def _draw_phases(service: str, series: list[Series], serving: bool) -> None:
    phases = [s.labels.get("phase", "") for s in series]
    has_model = any(p in MODEL_PHASES for p in phases)
    ordered = sorted(series, key=lambda s: (s.labels.get("phase", "") not in MODEL_PHASES, s.labels.get("phase", "")))
    df = frame(ordered, lambda s: _phase_label(s.labels.get("phase", ""), has_model), 1000.0)
    colors: list[str] = []
    others = iter(NOT_MODEL_COLORS * 4)
    for column in df.columns:
        colors.append(MODEL_COLOR if column.endswith("(model)") else next(others))
    cols = st.columns(3)
    if not serving:
        for col, label in zip(cols, ("time per request", "model time" if has_model else "largest phase",
                                     "model share" if has_model else "its share"), strict=True):
            col.metric(label, "—", help=NO_REQUESTS_NOW)
        chart(df, "ms per request", area=True, colors=colors, height=220, legend_columns=2)
        return
    latest = df.ffill().iloc[-1].fillna(0.0)
    total = float(latest.sum())
    name = md(service)
    cols[0].metric("time per request", latency_text(total / 1000),
                   help=f"Mean request time of {name}: its phases stacked.")
    if has_model:
        model = float(sum(v for c, v in latest.items() if str(c).endswith("(model)")))
        cols[1].metric("model time", latency_text(model / 1000),
                       help=f"Mean time of the model phase per {name} request.")
        cols[2].metric("model share", f"{model / total if total > 0 else 0.0:.0%}",
                       help=f"The model's share of {name}'s request time.")
    else:
        biggest = str(latest.idxmax())
        cols[1].metric(md(biggest), latency_text(float(latest.max()) / 1000),
                       help=f"{name} records no model phase ('inference'): its largest phase is shown. A phase "
                            "that calls another service holds that service's whole time; see its own stack.")
        cols[2].metric(f"{md(biggest)} share", f"{float(latest.max()) / total if total > 0 else 0.0:.0%}")
    chart(df, "ms per request", area=True, colors=colors, height=220, legend_columns=2)




def ai_traffic_view(src: DataSource, window: float) -> None:
    w = _window_label(window)
    st.header("AI traffic: real-time vs batch, streams, fallbacks, model versions")
    now = _Now(src.now(), src.latest_point_age(), window)
    with Prefetch() as prefetch:
        classes, class_rates = prefetch(lambda: src.latency_by_class(window)), \
            prefetch(lambda: src.throughput_by_class(window))
        first_chunk, first_token = prefetch(lambda: src.first_chunk(window)), prefetch(lambda: src.first_token(window))
        per_token, tokens = prefetch(lambda: src.per_output_token(window)), prefetch(lambda: src.token_rate(window))
        degraded = prefetch(lambda: src.degraded_share(window))
        versions, version_errors = prefetch(lambda: src.version_latency(window)), \
            prefetch(lambda: src.version_error_ratio(window))
        order = _service_order(class_rates)
        panel(f"Real-time vs batch: request latency p95 per traffic class, per service (ms; over {w})", classes,
              lambda d: _draw_classes(d, now.of(_answer(class_rates)), order),
              f"No requests in the last {w} (aiwatch_request_duration_seconds).", windowed=True)
        left, right = st.columns(2)
        with left:
            panel("Streams: time to the first body chunk (ms; service, route)", first_chunk,
                  lambda d: line(d, ["service", "route", "quantile"], "ms", 1000.0),
                  f"No streamed responses in the last {w} (aiwatch_time_to_first_chunk_seconds): responses of "
                  "two body chunks or more, or gRPC server streams.", windowed=True)
            panel("Time per output token (ms; service, model, traffic class)", per_token,
                  lambda d: line(d, ["service", "model", "traffic_class", "quantile"], "ms", 1000.0),
                  f"No time per output token in the last {w}: the service calls aiwatch.record_tokens with two "
                  "output tokens or more.", windowed=True)
            panel(f"Degraded share: responses served by a fallback, by model and reason (over {w})", degraded,
                  lambda d: line(d, ["service", "model", "reason"], "ratio"),
                  f"No fallback answers in the last {w} (aiwatch.degraded), or no requests.", empty_is_good=True,
                  windowed=True)
        with right:
            panel("Time to first token (ms; service, model, traffic class)", first_token,
                  lambda d: line(d, ["service", "model", "traffic_class", "quantile"], "ms", 1000.0),
                  f"No time to first token in the last {w}: the service does not call aiwatch.record_tokens.",
                  windowed=True)
            panel("Token usage (tokens/s; service, model, token type)", tokens,
                  lambda d: line(d, ["service", "model", "token_type"], "tokens/s"),
                  f"No token usage in the last {w} (aiwatch.record_tokens).", windowed=True)
            panel(f"Model versions: error share per version (over {w})", version_errors,
                  lambda d: line(d, ["service", "model", "model_version"], "ratio"),
                  f"No versioned model served in the last {w}: set_model(model, version) tells a canary apart.",
                  windowed=True)
        panel("Model versions: the model's own time (inference phase) per version (ms)", versions,
              lambda d: line(d, ["service", "model", "model_version", "quantile"], "ms", 1000.0),
              f"No versioned inference phase in the last {w}: set_model(model, version) labels it.", windowed=True)


def _answer(fetch: Callable[[], list[Series]]) -> list[Series]:
    """``fetch``'s answer, or none when it failed (the panel drawing it goes on without it)."""
    try:
        return fetch()
    except Exception:
        return []


def _draw_classes(series: list[Series], rates: list[Series], order: Sequence[str]) -> None:
    """Each service's traffic classes side by side; ``rates`` are the classes' request rates now (their series
    that ended before left out: their last value is not now)."""
    st.caption(f"Each service's {REALTIME} and batch requests side by side, on the same replicas: batch traffic "
               f"that raises {REALTIME} latency shows as the {REALTIME} line climbing with the batch share. The SLOs "
               f"and autoscaling signals count {REALTIME} traffic only.")
    share: dict[str, tuple[float, float]] = {}
    serving: set[tuple[str, str]] = set()
    for s in rates:
        svc, cls = s.labels.get("service", ""), s.labels.get("traffic_class", "")
        total, batch = share.get(svc, (0.0, 0.0))
        value = s.last or 0.0
        share[svc] = (total + value, batch + (value if cls != REALTIME else 0.0))
        if value > 0:
            serving.add((svc, cls))

    def draw(service: str, found: list[Series]) -> None:
        p95 = [s for s in found if s.labels.get("quantile") == "p95"]
        # a class without requests now has no p95 now: its latest point is from before they stopped
        latest = {s.labels.get("traffic_class", ""): s for s in p95
                  if (service, s.labels.get("traffic_class", "")) in serving and s.last is not None}
        total, batch = share.get(service, (0.0, 0.0))
        cols = st.columns(3)
        _quantile_tile(cols[0], f"{REALTIME} p95", latest.get(REALTIME))
        _quantile_tile(cols[1], "other classes p95",
                       max((s for c, s in latest.items() if c != REALTIME), key=lambda s: s.last or 0.0, default=None))
        cols[2].metric(f"not-{REALTIME} share of requests", f"{batch / total:.0%}" if total > 0 else "—")
        chart(frame(sorted(p95, key=lambda s: s.labels.get("traffic_class", "")),
                    lambda s: s.labels.get("traffic_class", "") or "(none)", 1000.0), "ms p95", height=180)

    small_multiples("classes", series, order, draw)


def resources_view(src: DataSource, window: float) -> None:
    w = _window_label(window)
    st.header("Resources: GPUs, queues, batching, cache")
    with Prefetch() as prefetch:
        gpus, utilization, queues = prefetch(src.gpu_table), prefetch(src.gpu_utilization), prefetch(src.queue_depth)
        batches, in_flight = prefetch(lambda: src.batch_size(window)), prefetch(src.in_flight)
        cache = prefetch(lambda: src.cache_hit_ratio(window))
        panel("GPUs (latest)", gpus, _draw_gpus,
              "No GPU metrics: the source has no aiwatch_gpu_* series. This service has no GPU, or its GPU collector "
              "(pip install \"aiwatch[gpu]\") is not running. The rest of the console works without it.")
        panel("GPU utilization over time", utilization, _draw_gpu_utilization,
              "No GPU utilization series (aiwatch_gpu_utilization_ratio).")
        left, right = st.columns(2)
        with left:
            panel("Queue depth (items)", queues, lambda d: line(d, ["queue"], "items"),
                  "No queue metrics: nothing exports aiwatch_queue_depth yet.")
            panel(f"Mean batch size (items per model call, over {w})", batches,
                  lambda d: line(d, ["model"], "items"), f"No batches in the last {w} (aiwatch_batch_size).",
                  windowed=True)
        with right:
            panel("Requests in flight", in_flight, lambda d: line(d, ["service"], "requests"),
                  "No in-flight gauge (aiwatch_requests_in_flight) yet.")
            panel(f"Feature-cache hit ratio (over {w})", cache, lambda d: line(d, ["cache"], "ratio"),
                  f"No feature-cache lookups in the last {w} (aiwatch_feature_cache_requests_total).", windowed=True)


def _draw_gpu_utilization(found: GpuUtilization) -> None:
    if not found.fleet:
        line(found.gpus, ["gpu", "uuid"], "ratio")
        return
    busiest = sum(s.labels.get("rank") == "busiest" for s in found.gpus)
    st.caption(f"{len(found.gpus)} of {found.total} GPUs drawn: the {busiest} busiest and the "
               f"{len(found.gpus) - busiest} idlest by mean utilization over the chart's span, under the fleet's "
               "min / median / max over every GPU.")
    chart(frame(found.fleet, lambda s: s.name(), 1.0), "ratio (fleet)", height=200)
    line(found.gpus, ["rank", "gpu", "uuid"], "ratio")


def _draw_gpus(table: GpuTable) -> None:
    gib, rows = 2.0**30, table.rows
    df = pd.DataFrame([{
        # the UUID tells apart GPU 0 of every host (a fleet's table has one row per GPU of each)
        "GPU": r.gpu, "name": r.name, "uuid": r.uuid, "up": None if r.up is None else r.up >= 0.5,
        "utilization %": None if r.utilization is None else r.utilization * 100,
        "memory used GiB": None if r.memory_used_bytes is None else r.memory_used_bytes / gib,
        "memory total GiB": None if r.memory_total_bytes is None else r.memory_total_bytes / gib,
        "memory %": None if r.memory_share is None else r.memory_share * 100,
        "power W": r.power_watts, "temperature °C": r.temperature_celsius,
        **({"attention": ", ".join(r.attention)} if table.cut else {}),
    } for r in rows])
    if table.cut:
        st.caption(f"{len(rows)} of {table.total} GPUs listed, those needing attention first: "
                   + (f"{table.down} down (up to {GPU_EXTREMES} listed), " if table.down else "none down; ")
                   + f"the {GPU_EXTREMES} hottest, the {GPU_EXTREMES} with the fullest memory, the "
                   f"{GPU_EXTREMES} busiest and the {GPU_EXTREMES} idlest. Under the table: the fleet's min / median"
                   " / max over every GPU.")
    else:
        busy = df["utilization %"].dropna()
        st.caption(f"{len(rows)} GPU(s); mean utilization "
                   + (f"{busy.mean():.0f}%" if len(busy) else "unknown") + ".")
    st.dataframe(df, hide_index=True, width="stretch", column_config={
        "utilization %": st.column_config.ProgressColumn("utilization %", min_value=0, max_value=100, format="%.0f"),
        "memory %": st.column_config.ProgressColumn("memory %", min_value=0, max_value=100, format="%.0f"),
        "memory used GiB": st.column_config.NumberColumn(format="%.1f"),
        "memory total GiB": st.column_config.NumberColumn(format="%.1f"),
        "power W": st.column_config.NumberColumn(format="%.0f"),
        "temperature °C": st.column_config.NumberColumn(format="%.0f"),
    })
    if table.fleet:
        scales = {"utilization": ("utilization %", 100.0), "memory_share": ("memory %", 100.0),
                  "power_watts": ("power W", 1.0), "temperature_celsius": ("temperature °C", 1.0)}
        st.dataframe(pd.DataFrame([{"fleet": stat, **{scales[reading][0]: found[stat] * scales[reading][1]
                                                      for reading, found in table.fleet.items() if stat in found}}
                                   for stat in ("min", "median", "max")]),
                     hide_index=True, width="stretch", column_config={
                         name: st.column_config.NumberColumn(format="%.0f") for name, _ in scales.values()})


def drift_view(src: DataSource, window: float) -> None:
    w = _window_label(window)
    st.header("Drift: which input features moved")
    now = _Now(src.now(), src.latest_point_age(), window)
    rows = panel("Per-feature drift (latest evaluation; click a column to sort)", src.drift_table, _draw_drift_table,
                 "No drift results yet: no aiwatch_drift_score series. Drift gauges appear after the first "
                 "DriftMonitor evaluation.")
    panel(f"Missing values per feature: live share over {w} vs the reference profile's",
          lambda: src.feature_missing(window), lambda d: _draw_missing(d, w),
          "No missing-value counts: no aiwatch_feature_missing_total or aiwatch_feature_reference_missing_ratio "
          "series. A DriftMonitor exports them with its drift gauges.", windowed=True)
    panel("Realised model quality (delayed labels joined to the prediction log)", src.model_quality,
          _draw_quality, "No realised quality: no aiwatch_model_quality series. `aiwatch quality LOG LABELS "
          "--textfile ...` exports them once labels arrive (docs/prediction-log.md); until then prediction drift, "
          "the output.* features above, is the proxy.")
    panel(f"Prediction log: what became of kept records (records/s, over {w})", lambda: src.prediction_log(window),
          lambda d: _draw_prediction_log(d, w, now.of(d)),
          "No prediction log: no aiwatch_prediction_log_records_total series. Log each prediction with "
          "`aiwatch.PredictionLog` (docs/prediction-log.md): drift checks on what was served and delayed labels "
          "(`aiwatch quality`) read that log, and this panel shows whether its records reach storage.", windowed=True)
    panel("Prediction log: journals recovered (files, since each process started)", src.prediction_log_recovery,
          lambda rows: _draw_recovery(rows, src.now()),
          "No journal recovery counts: no aiwatch_prediction_log_recovery_files_total series (only a prediction log "
          "with a ParquetSink keeps journals, docs/prediction-log.md).")
    features = sorted({(r.model, r.feature) for r in rows or []})
    if not features:
        return
    top: list[tuple[str, str]] = []
    for r in rows or []:
        if (r.model, r.feature) not in top:
            top.append((r.model, r.feature))
    # Options in a stable (alphabetical) order and defaults seeded once: scores move on every refresh, and
    # options or defaults that move would reset the person's choice.
    state = st.session_state
    if state.get("drift_feature") not in features:
        state["drift_feature"] = top[0]
    if "drift_over_time" not in state:
        state["drift_over_time"] = top[:5]
    else:
        state["drift_over_time"] = [f for f in state["drift_over_time"] if f in features]
    choice = st.selectbox("Feature", features, format_func=lambda mf: f"{mf[1]} (model {mf[0]})",
                          key="drift_feature")
    model, feature = choice if choice else top[0]
    picked = list(state["drift_over_time"])
    with Prefetch() as prefetch:
        distribution = prefetch(lambda: src.feature_distribution(model, feature, window))
        over_time = prefetch(lambda: src.drift_over_time(picked))
        panel(f"Reference vs live distribution of {md(feature)} (live over {w})", distribution, _draw_distribution,
              f"No bin sketch for {md(feature)}: aiwatch_feature_reference_ratio / aiwatch_feature_bin_total are "
              "absent (the fleet drift sketch is not enabled for this model).")
        st.multiselect("Drift over time for", features, key="drift_over_time",
                       format_func=lambda mf: f"{mf[1]} (model {mf[0]})")
        panel("Drift score over time", over_time, lambda d: line(d, _drift_keys(d), "score"),
              "Pick features above to see their drift score over time." if not picked
              else "No drift score history for these features yet.")


def _drift_keys(series: list[Series]) -> list[str]:
    """The labels that name each drift score line: the model too where two models' features share a name."""
    models = {s.labels.get("model", "") for s in series}
    return ["model", "feature", "test"] if len(models) > 1 else ["feature", "test"]


def _draw_quality(rows: list[Any]) -> None:
    off = [r for r in rows if r.off_objective]
    if off:
        st.error("Quality off its objective: " + ", ".join(f"{md(r.metric)} of {md(r.model)}" for r in off[:10])
                 + ("…" if len(off) > 10 else ""))
    df = pd.DataFrame([{"model": r.model, "metric": r.metric, "value": r.value, "objective": r.objective,
                        "off objective": r.off_objective, "labelled requests": r.labelled} for r in rows])
    st.dataframe(df, hide_index=True, width="stretch",
                 column_config={"value": st.column_config.NumberColumn(format="%.4g"),
                                "objective": st.column_config.NumberColumn(format="%.4g"),
                                "labelled requests": st.column_config.NumberColumn(format="%.0f")})


RECOVERY_ALERT = "AiwatchPredictionLogRecoveryIncomplete"


def _ago(seconds: float) -> str:
    """``seconds`` ago, coarse: the banner names how old a count is, not when to the second."""
    if seconds < 60:
        return "under a minute ago"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min ago"
    if seconds < 2 * 86400:
        return f"{seconds // 3600:.0f} h ago"
    return f"{seconds // 86400:.0f} days ago"


def _draw_recovery(rows: list[Any], now: float) -> None:
    """The recovery banners and table; ``now`` on the source's clock (Prometheus', for a Prometheus source): this
    machine's clock put a recovery counted minutes ago past the alert's hour on a console machine running ahead
    (and one counted hours ago within it on one behind)."""
    from aiwatch.console.source import RECOVERY_RECENT_SECONDS, RECOVERY_RESULTS

    recent: list[str] = []
    old: list[str] = []
    for r in rows:
        for result, n in r.unfinished.items():
            at = r.last.get(result)
            told = f"{md(r.log)} {n:.0f} {result}" + ("" if at is None else f" (last {_ago(max(0.0, now - at))})")
            # a count without a time (an app older than the gauge) stays red, as it was
            (old if at is not None and now - at >= RECOVERY_RECENT_SECONDS else recent).append(told)
    page = runbook_page_link(RECOVERY_ALERT)
    see = f"; see the [runbook]({page})." if page else "."
    if recent:
        st.error("Prediction log journals not recovered: " + ", ".join(recent[:10])
                 + ("…" if len(recent) > 10 else "") + ". Their rows are in no "
                 "finished file: torn (dropped, with every byte after them), set_aside (kept as "
                 ".journal.unrecoverable for a person) or failed (left for the next start)" + see)
    if old:
        st.warning("Prediction log journals not recovered, last counted over an hour ago (past the alert's "
                   "default window): " + ", ".join(old[:10]) + ("…" if len(old) > 10 else "")
                   + ". Their rows are still in no finished file until "
                   "someone acts" + see)
    if not recent and not old:
        st.success("No journal torn, set aside or left unrecovered since the logs' processes started.")
    st.caption(f"What each log's ParquetSinks did with the journals they found at their start (of writers that "
               f"died) and with their own kept ones (files that failed), summed over replicas, each since its "
               f"process started: the counters' values, not their rates (a start counts before the first scrape). "
               f"{RECOVERY_ALERT} fires on torn, set_aside and failed while the log last counted one within "
               f"meta.prediction_log_recovery_window (1h by default): the red banner names those, a yellow one "
               f"those counted longer ago.")
    df = pd.DataFrame([{"log": r.log, **{result: r.files.get(result, 0.0) for result in RECOVERY_RESULTS},
                        "rows recovered": r.records} for r in rows])
    st.dataframe(df, hide_index=True, width="stretch", column_config={
        c: st.column_config.NumberColumn(format="%.0f") for c in (*RECOVERY_RESULTS, "rows recovered")})


# Colours of the prediction log's results: reds for the records it lost, orange for those waiting in a journal,
# blues and greens for the others.
LOSS_COLORS = ("#d62728", "#8c564b", "#e377c2", "#9467bd")
WAITING_COLOR = "#ff7f0e"
KEPT_COLORS = ("#1f77b4", "#2ca02c", "#9ecae1", "#98df8a", "#7f7f7f")
NOT_STORED, IN_JOURNAL = " (not stored)", " (in a journal)"


def _draw_prediction_log(series: list[Series], w: str, live: list[Series]) -> None:
    """What became of each log's records: banners on the shares now (of the ``live`` series, current now: a log
    whose every process is gone has no share now), a table and a chart."""
    from aiwatch.rules.render import HANDLED_RESULTS, LOST_RESULTS, UNSTORED_RESULTS, WAITING_RESULTS

    def lost(result: str) -> bool:
        return result in UNSTORED_RESULTS

    def order(s: Series) -> tuple[str, bool, int, str]:
        result = s.labels.get("result", "")
        return (s.labels.get("log", ""), lost(result), UNSTORED_RESULTS.index(result) if lost(result) else 0, result)

    def worst(shares: dict[str, float | None]) -> list[tuple[str, float]]:
        return sorted(((log, share) for log, share in shares.items() if share), key=lambda ls: (-ls[1], ls[0]))

    shares = unstored_share(series)
    losing = worst(unstored_share(live, LOST_RESULTS))
    kept = worst(unstored_share(live, WAITING_RESULTS))
    if losing:
        st.error("Prediction log losing records: " + ", ".join(f"{md(log)} {share:.1%} not stored"
                                                               for log, share in losing[:10])
                 + ("…" if len(losing) > 10 else ""))
    if kept:
        st.warning("Prediction log records waiting in journals: " + ", ".join(
            f"{md(log)} {share:.1%} not in a finished file" for log, share in kept[:10])
            + ("…" if len(kept) > 10 else "") + ". Drift checks and "
            "label joins do not see them until the sink makes them into a file (a minute after the disk has "
            "room again, or at the log's close; a restarted process on the directory does it at its start).")
    if not losing and not kept and any(share is not None for share in unstored_share(live).values()):
        st.success(f"Every record the prediction log kept in the last {w} reached a finished file.")
    st.caption(f"Not stored: the share of the records a log dealt with that were dropped (its queue was full), failed "
               f"or lost by its sink, or are recoverable (written, but their file could not be finished: they wait "
               f"in its journal until the sink makes it into a file, and count here for the window even once it "
               f"has), ({' + '.join(UNSTORED_RESULTS)}) / "
               f"({' + '.join(HANDLED_RESULTS)}), over {w} and summed over replicas; "
               "AiwatchPredictionLogLosingRecords fires on the same share per replica, over "
               "meta.prediction_log_window. Drift checks and label joins on the log miss every record not in a "
               "finished file.")
    ordered = sorted(series, key=order)
    rows: dict[str, dict[str, Any]] = {}
    for s in ordered:
        log = s.labels.get("log", "")
        share = shares.get(log)
        row = rows.setdefault(log, {"log": log, "not stored %": None if share is None else share * 100})
        row[f"{s.labels.get('result', '')}/s"] = s.last
    df = pd.DataFrame(list(rows.values()))
    st.dataframe(df, hide_index=True, width="stretch", column_config={
        "not stored %": st.column_config.NumberColumn(format="%.1f%%"),
        **{c: st.column_config.NumberColumn(format="%.2f") for c in df.columns if str(c).endswith("/s")}})

    def name(s: Series) -> str:
        result = s.labels.get("result", "")
        return f"{s.labels.get('log', '')} {result}" + (IN_JOURNAL if result in WAITING_RESULTS else
                                                         NOT_STORED if lost(result) else "")

    def color(column: str) -> str:
        return WAITING_COLOR if column.endswith(IN_JOURNAL) else next(reds) if column.endswith(NOT_STORED) \
            else next(blues)

    wide = frame(ordered, name)
    reds, blues = iter(LOSS_COLORS * len(wide.columns)), iter(KEPT_COLORS * len(wide.columns))
    chart(wide, "records/s", colors=[color(str(c)) for c in wide.columns])


def _draw_drift_table(rows: list[Any]) -> None:
    detected = sorted({(r.model, r.feature) for r in rows if r.detected})
    total = len({(r.model, r.feature) for r in rows})
    if detected:
        st.error(f"Drift detected in {len(detected)} of {total} features: "
                 + ", ".join(md(f) for _, f in detected[:10]) + ("…" if len(detected) > 10 else ""))
    else:
        st.success(f"No drift detected in {total} features.")
    df = pd.DataFrame([{"feature": r.feature, "model": r.model, "test": r.test, "score": r.score,
                        "p-value": r.pvalue, "detected": r.detected} for r in rows])
    df = df.sort_values("score", ascending=False, na_position="last")
    st.dataframe(df, hide_index=True, width="stretch", height=min(400, 38 + 35 * len(df)),
                 column_config={"score": st.column_config.NumberColumn(format="%.4f"),
                                "p-value": st.column_config.NumberColumn(format="%.4g")})


# AiwatchFeatureMissing's default thresholds (rules config drift.missing_share_increase and drift.fleet_min_values;
# the console does not read the rules config).
MISSING_SHARE_INCREASE = Drift().missing_share_increase
MISSING_MIN_COUNTED = Drift().fleet_min_values
MISSING_ALERT = "AiwatchFeatureMissing"


def _draw_missing(rows: list[MissingRow], w: str) -> None:
    """Each feature's live missing share against its reference's, the largest rise first (the sources sort them);
    a warning names those past AiwatchFeatureMissing's default threshold over the view's window."""
    margin = f"{MISSING_SHARE_INCREASE * 100:.4g} percentage points"
    over = [r for r in rows if r.past(MISSING_SHARE_INCREASE, MISSING_MIN_COUNTED)]
    page = runbook_page_link(MISSING_ALERT)
    see = f"; see the [runbook]({page})." if page else "."
    profiles: dict[tuple[str, str], int] = {}
    for r in rows:
        profiles[(r.model, r.feature)] = profiles.get((r.model, r.feature), 0) + 1

    def profile(r: MissingRow) -> str:  # named only where a feature has several (a rollout)
        return f" {md(r.reference_id)}" if profiles[(r.model, r.feature)] > 1 else ""

    if over:
        st.warning(f"Features missing more often than in their reference profile (over {margin} above its share) in "
                   f"the last {w}: "
                   + ", ".join(f"{md(r.feature)} of {md(r.model)} {r.live or 0.0:.1%} (reference{profile(r)} "
                               f"{r.reference or 0.0:.1%})" for r in over[:10])
                   + ("…" if len(over) > 10 else "")
                   + ". Missing values are left out of drift, so the drift tests above cannot see this" + see)
    else:
        st.success(f"No feature is missing over {margin} more often than in its reference profile in the last {w}.")
    st.caption(f"Missing: None, NaN or inf (aiwatch_feature_missing_total), or the key absent from the row "
               f"(aiwatch_feature_invalid_total, reason missing_feature), as a share of those and the values counted, "
               f"over the replicas of each reference profile (a rollout has a row per profile). {MISSING_ALERT} fires "
               f"when the share is over {margin} above the reference's over "
               f"drift.psi_window ({Drift().psi_window} by default, not the window picked here), from at least "
               f"{MISSING_MIN_COUNTED:g} values and missing ones; a feature without a reference share never fires.")
    df = pd.DataFrame([{"feature": r.feature, "model": r.model, "reference profile": r.reference_id,
                        "live missing %": None if r.live is None else r.live * 100,
                        "reference missing %": None if r.reference is None else r.reference * 100,
                        "values counted": r.counted,
                        "past threshold": r.past(MISSING_SHARE_INCREASE, MISSING_MIN_COUNTED)} for r in rows])
    st.dataframe(df, hide_index=True, width="stretch", height=min(400, 38 + 35 * len(df)),
                 column_config={"live missing %": st.column_config.NumberColumn(format="%.1f%%"),
                                "reference missing %": st.column_config.NumberColumn(format="%.1f%%"),
                                "values counted": st.column_config.NumberColumn(format="%.0f")})


def _draw_distribution(bins: list[Any]) -> None:
    df = pd.DataFrame({"reference": [b.reference for b in bins], "live": [b.live for b in bins]},
                      index=pd.Index([b.bin for b in bins], name="bin")).fillna(0.0)
    st.bar_chart(df, y_label="share of values", stack=False, sort=False, color=["#7f7f7f", MODEL_COLOR],
                 height=260)


def alerts_view(src: DataSource, window: float) -> None:
    w = _window_label(window)
    st.header("Alerts and autoscaling")
    now = _Now(src.now(), src.latest_point_age(), window)
    with Prefetch() as prefetch:
        alerts, signals = prefetch(src.alerts), prefetch(lambda: src.autoscaling_signals(window))
        errors, overflow = prefetch(lambda: src.instrumentation_errors(window)), \
            prefetch(lambda: src.label_overflow(window))
        panel("Firing and pending alerts", alerts, _draw_alerts, "No alerts firing or pending.", empty_is_good=True)
        panel(f"Autoscaling signals (over {w})", signals, _draw_signals, "No autoscaling signals.")
        panel(f"aiwatch's own errors (per second, over {w})", lambda: _grown([*errors(), *overflow()]),
              lambda d: _draw_own_errors(d, w, now.ids(errors, overflow)),
              f"aiwatch swallowed no errors in the last {w}, and its cardinality guard folded no label values.",
              empty_is_good=True, windowed=True)


def _grown(series: list[Series], above: float = 0.0) -> list[Series]:
    """The series of a counter's rate that were ``above`` zero (or a value that is noise) at some time: a counter
    that did not grow is no news."""
    return [s for s in series if any(v > above for _, v in s.points)]


def _per_name(series: list[Series], label: str) -> list[tuple[str, float]]:
    """The latest rate of each ``label`` value (summed over instances) that is above zero, highest first."""
    now: dict[str, float] = {}
    for s in series:
        name = s.labels.get(label, "")
        now[name] = now.get(name, 0.0) + (s.last or 0.0)
    return sorted(((n, v) for n, v in now.items() if v > 0), key=lambda nv: (-nv[1], nv[0]))


def _draw_own_errors(series: list[Series], w: str, live: set[int]) -> None:
    """Banners on the rates now (of the series whose ``id`` is in ``live``, current now: a replica gone since does not
    fail now), a table of the latest rates and a chart."""
    from aiwatch.cardinality import OVERFLOW
    from aiwatch.metrics import SIZE_CAP_COMPONENTS

    errors = [s for s in series if "component" in s.labels]
    folded = [s for s in series if "component" not in s.labels]
    counted = _per_name([s for s in errors if id(s) in live], "component")
    folding = _per_name([s for s in folded if id(s) in live], "label")
    failing = [(name, rate) for name, rate in counted if name not in SIZE_CAP_COMPONENTS]
    capped = [(name, rate) for name, rate in counted if name in SIZE_CAP_COMPONENTS]
    if capped:  # the cap at work, not a failure: as in AiwatchInstrumentationErrors, no warning
        st.info(f"Server-Timing values cut to their size cap in the last {w}: "
                + ", ".join(f"{md(name)} {rate:.3g}/s" for name, rate in capped)
                + ". The responses went out and every metric was kept; callers got fewer phase entries.")
    if failing:
        st.warning(f"aiwatch swallowed errors in the last {w}: "
                   + ", ".join(f"{md(name)} {rate:.3g}/s" for name, rate in failing[:10])
                   + ("…" if len(failing) > 10 else "")
                   + ". Requests were served; those components' observations were skipped (the app's log has the "
                   "first traceback of each burst; runbook AiwatchInstrumentationErrors).")
    else:
        st.success(f"aiwatch swallowed no errors in the last {w}.")
    if folding:
        st.warning(f"Label values folded into {OVERFLOW} in the last {w}: "
                   + ", ".join(f"{md(name)} {rate:.3g}/s" for name, rate in folding[:10])
                   + ("…" if len(folding) > 10 else "")
                   + ". The cardinality guard keeps max_label_values distinct values per label; raise it "
                   "(AIWATCH_MAX_LABEL_VALUES) if the values are legitimate, else template them (a route, not a path).")
    instances = {s.labels.get("instance", "") for s in errors}

    def name(s: Series) -> str:
        if "component" not in s.labels:
            return f"{s.labels.get('label', '')} values folded"
        where = s.labels.get("instance", "")
        return f"{s.labels['component']} errors" + (f" ({where})" if len(instances) > 1 and where else "")

    ordered = sorted(errors, key=lambda s: (s.labels.get("component", ""), s.labels.get("instance", ""))) + \
        sorted(folded, key=lambda s: s.labels.get("label", ""))
    rows = [{"what": "swallowed errors" if "component" in s.labels else "label values folded",
             "component / label": s.labels.get("component", s.labels.get("label", "")),
             "instance": s.labels.get("instance", ""), "per second": s.last} for s in ordered]
    df = pd.DataFrame(rows)
    if not instances - {""}:
        df = df.drop(columns="instance")
    st.dataframe(df, hide_index=True, width="stretch",
                 column_config={"per second": st.column_config.NumberColumn(format="%.3g")})
    chart(frame(ordered, name), "per second")


def runbook_page_link(alert: str) -> str | None:
    """The console's own page for ``alert``'s runbook (``?runbook=<alert>``), when aiwatch has one (its name is then
    one of the package's: letters and digits, safe in a link as it is)."""
    return f"?{RUNBOOK_PARAM}={alert}" if alert in runbooks.names() else None


# How many alerts the list above the table writes out one by one (the most urgent first); the table holds them all.
LISTED_ALERTS = 20


def _draw_alerts(rows: list[Any]) -> None:
    firing = [a for a in rows if a.state == "firing"]
    if firing:
        st.error(f"{len(firing)} firing, {len(rows) - len(firing)} pending.")
    else:
        st.warning(f"{len(rows)} pending.")
    for a in rows[:LISTED_ALERTS]:
        page = runbook_page_link(a.name)
        links = [f"[runbook]({page})"] if page else []
        if not a.runbook_url:
            links.append("no runbook_url annotation")
        elif safe_url(a.runbook_url):
            links.append(md_link("runbook_url", a.runbook_url))
        else:
            links.append(f"runbook_url is not an http(s) link: {md(a.runbook_url)}")
        st.markdown(f"- **{md(a.state.upper())}** \\[{md(a.severity or 'no severity')}\\] **{md(a.name)}**: "
                    f"{md(a.summary)} — {' · '.join(links)}")
    if len(rows) > LISTED_ALERTS:  # hundreds of lines (an alert per pod of a fleet) would bury the panels below
        st.caption(f"The {LISTED_ALERTS} most urgent are listed (firing first, then by severity); the table below "
                   f"has all {len(rows)}.")
    df = pd.DataFrame([{"state": a.state, "severity": a.severity, "alert": a.name, "summary": a.summary,
                        "runbook": runbook_page_link(a.name), "runbook_url": safe_url(a.runbook_url),
                        "since": a.active_at,
                        "labels": ", ".join(f"{k}={v}" for k, v in sorted(a.labels.items())
                                            if k not in ("alertname", "severity"))} for a in rows])
    st.dataframe(df, hide_index=True, width="stretch",
                 column_config={"runbook": st.column_config.LinkColumn("runbook", display_text="open runbook"),
                                "runbook_url": st.column_config.LinkColumn("runbook_url")})


def runbooks_view() -> None:
    """Every alert's runbook, from the package; ``?runbook=<AlertName>`` picks one (the view works without data)."""
    st.header("Runbooks")
    names = runbooks.names()
    wanted = st.query_params.get(RUNBOOK_PARAM)
    if wanted is not None and wanted not in names:
        st.warning(f"No runbook for an alert named “{md(wanted)}”. aiwatch's alerts: pick one below.")
    if st.session_state.get("runbook") not in names:
        st.session_state["runbook"] = wanted if wanted in names else names[0]
    name = st.selectbox("Alert", names, key="runbook")
    st.query_params[RUNBOOK_PARAM] = name
    st.caption(f"Shipped with aiwatch (aiwatch/runbooks/{name}.md). Link to this page: ?{RUNBOOK_PARAM}={name}; "
               "point a rules config's runbook_url here with http://CONSOLE/?runbook={alert}.")
    with st.container(key="runbook-page", border=True):
        st.markdown(runbooks.page(name))


def _draw_signals(signals: list[Any]) -> None:
    cols = st.columns(len(signals))
    for col, s in zip(cols, signals, strict=True):
        if s.value is None:
            text = "—"
        elif s.unit == "ratio":
            text = f"{s.value:.0%}"
        elif s.unit == "seconds":
            text = latency_text(s.value, s.at_least)
        else:
            text = f"{s.value:.2f}"
        label = s.name if s.unit in ("ratio", "seconds") else f"{s.name} ({s.unit})"
        notes = "" if s.value is not None else " No data for it yet."
        col.metric(label, text, help=s.help + notes + (f" {AT_LEAST}" if s.at_least else ""))


RENDER: dict[str, Callable[[DataSource, float], None]] = {
    "Latency": latency_view, "AI traffic": ai_traffic_view, "Resources": resources_view, "Drift": drift_view,
    "Alerts": alerts_view,
}


# --- page -----------------------------------------------------------------------------------------------------
# How many endpoints down the banners name one by one; the others are counted in one banner.
NAMED_DOWN = 10


def health_banner(src: DataSource) -> bool:
    """Show the source's state; False when it cannot answer at all (the views are then skipped)."""
    try:
        targets = src.health()
    except SourceUnavailable as exc:
        st.error(f"{md(exc)}. The console keeps retrying; check the URL and that Prometheus is running.")
        return False
    except SourceError as exc:
        st.warning(f"Could not read the scrape targets: {md(exc)}")
        return True
    down = [t for t in targets if not t.up]
    if targets and len(down) == len(targets) and all(t.error == "not scraped yet" for t in down):
        st.info("No data yet: waiting for the first scrape of " + ", ".join(md(t.url) for t in down) + ".")
        return True
    for t in down[:NAMED_DOWN]:
        st.warning(f"Endpoint down: {md(t.url)} ({md(t.error or 'no answer')}). Panels show the endpoints that "
                   "answer.")
    if len(down) > NAMED_DOWN:  # a Prometheus with hundreds of targets down would push the panels off the page
        st.warning(f"{len(down) - NAMED_DOWN} more of the {len(targets)} endpoints are down (the first "
                   f"{NAMED_DOWN} are named above). Panels show the endpoints that answer.")
    return True


def partial_data_notice(slot: Any, warnings: list[str]) -> None:
    """Say that the panels' answers came with warnings (a failed remote-read store, a partial response): the
    numbers below may be computed from part of the data."""
    if warnings:
        slot.warning("Prometheus warned that its answers may be incomplete, so the panels below may be computed from "
                     "part of the data: " + "; ".join(md(w) for w in warnings))


def main() -> None:
    st.set_page_config(page_title="aiwatch console", page_icon="📈", layout="wide")
    st.markdown("<style>.block-container {padding-top: 2rem;}</style>", unsafe_allow_html=True)
    try:
        config = _config()
    except ValueError as exc:
        st.error(f"Bad console configuration: {md(exc)}")
        return
    src: DataSource | None = st.session_state.get("aiwatch_source")
    if src is None:
        try:
            src = shared_source(config)  # one per process: the sessions share its scrape history
        except ValueError as exc:
            st.error(f"Bad console configuration: {md(exc)}")
            return
    if "view" not in st.session_state:  # a link into the console: ?runbook=<AlertName> or ?view=<View>
        if RUNBOOK_PARAM in st.query_params:
            st.session_state["view"] = "Runbooks"
        elif st.query_params.get("view") in VIEWS:
            st.session_state["view"] = st.query_params["view"]
    with st.sidebar:
        st.title("aiwatch console")
        view = st.radio("View", VIEWS, key="view")
        windows = sorted({*WINDOWS, config.window})
        window = st.selectbox("Window", windows, index=windows.index(config.window), key="window",
                              format_func=_window_label)
        st.caption(f"Source: {md(src.description)}")
        st.caption(f"Refreshes every {config.refresh:g} s." if config.refresh else "Auto-refresh is off.")

    if view == "Runbooks":  # the package's pages: no data source needed, no refresh
        runbooks_view()
        return
    if RUNBOOK_PARAM in st.query_params:
        del st.query_params[RUNBOOK_PARAM]

    def body() -> None:
        started = clock.monotonic()  # answer_warnings': a wall clock stepped back mid-refresh dated them before it
        if health_banner(src):
            notice = st.empty()  # above the panels, filled once they have asked their questions
            short = _SHORT_WINDOW.set(short_window_note(float(window), _scrape_interval(src)))
            try:
                RENDER[view](src, float(window))
            finally:
                _SHORT_WINDOW.reset(short)
            partial_data_notice(notice, src.answer_warnings(started))

    if config.refresh > 0:
        st.fragment(run_every=config.refresh)(body)()
    else:
        body()


main()
