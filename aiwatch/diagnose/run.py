"""``diagnose(source, ...)``: read the baseline and incident windows from a source and diagnose them. The one
implementation behind ``aiwatch diagnose``, the console's Latency view and any script.

    >>> from aiwatch.diagnose.sources import PrometheusWindows
    >>> d = diagnose(PrometheusWindows("http://127.0.0.1:9090"), service="gateway")  # doctest: +SKIP
    >>> print(d.verdict)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Collection

from aiwatch import clock as _clock  # not `clock`: windows() names the clock it reads by that
from aiwatch.console.source import SourceError
from aiwatch.diagnose.report import DEFAULT_MODEL_PHASES, DiagnoseError, Diagnosis, diagnose_windows
from aiwatch.diagnose.sources import WindowSource
from aiwatch.diagnose.timeargs import format_time, not_in_future
from aiwatch.diagnose.window import WindowTotals
from aiwatch.promapi import PrometheusError

#: The incident window's default length: the last 5 minutes.
DEFAULT_INCIDENT = 300.0
#: The baseline window's default length: the hour before the incident window.
DEFAULT_BASELINE = 3600.0


class DiagnoseSourceError(DiagnoseError):
    """The source could not answer (Prometheus unreachable or failing, every endpoint down)."""

    exit_code = 3


def windows(incident: float = DEFAULT_INCIDENT, baseline: float = DEFAULT_BASELINE,
            at: float | None = None, now: float | None = None, clock: str = "Prometheus' clock",
            ) -> tuple[tuple[float, float], tuple[float, float]]:
    """``((baseline start, end), (incident start, end))``: the incident window is the ``incident`` seconds
    ending at ``at`` (default ``now``, on ``clock``, itself default this machine's clock;
    :class:`~aiwatch.diagnose.timeargs.FutureTimeError` for a time after ``now``), the baseline the ``baseline``
    seconds just before it.

    >>> windows(300, 3600, at=10_000)
    ((6100, 9700), (9700, 10000))
    """
    if not incident > 0 or not baseline > 0:
        raise ValueError(f"windows must be positive, got incident={incident} baseline={baseline}")
    if now is None:
        now, clock = _clock.wall(), "this machine's clock"
    end = now if at is None else not_in_future(at, now, clock)
    return (end - incident - baseline, end - incident), (end - incident, end)


def diagnose(source: WindowSource, service: str | None = None, incident: float = DEFAULT_INCIDENT,
             baseline: float = DEFAULT_BASELINE, at: float | None = None, *,
             model_phases: Collection[str] = DEFAULT_MODEL_PHASES, noise_floor: float | None = None) -> Diagnosis:
    """Diagnose ``service`` (default: the entry service whose time rose most) on ``source``: the ``incident``
    seconds ending at ``at`` (unix seconds, default now on the source's clock: Prometheus' own) against the
    ``baseline`` seconds before them. ``at`` must not be after now on the source's clock: a time Prometheus gave (an
    alert's ``activeAt``) is never refused for this machine's clock running behind.

    Raises :class:`DiagnoseSourceError` (``exit_code`` 3) when the source fails, :class:`DiagnoseError`
    (``exit_code`` 4) when there is nothing to diagnose: no aiwatch metrics at all, no traffic in a window, an
    unknown service. ``ValueError`` for arguments that make no window (``FutureTimeError`` for an ``at`` after now).
    """
    windows(incident, baseline)  # windows of no length, refused before any query
    (b0, b1), (i0, i1) = windows(incident, baseline, at, _now(source))
    before, after = _read(source, b0, b1), _read(source, i0, i1)
    if not before.of("requests") and not after.of("requests"):
        raise DiagnoseError(f"{source.description} holds no aiwatch request metrics "
                            f"(aiwatch_request_duration_seconds) between {format_time(b0)} and "
                            f"{format_time(i1)}: has the service served requests then (the family has no "
                            f"series before a first request), is it instrumented with aiwatch, and is it scraped?")
    return diagnose_windows(before, after, service, model_phases=model_phases, noise_floor=noise_floor)


def _now(source: WindowSource) -> float | None:
    """Now on the source's clock (Prometheus' own), where the windows of a diagnosis of now end; ``None`` for a
    source without one. This machine's clock 8 s ahead of Prometheus' put the last 8 s of a 10 s incident window
    where Prometheus had no samples yet, and its request rate read a fifth of what it was."""
    now = getattr(source, "now", None)
    if now is None:
        return None
    try:
        return float(now())
    except (PrometheusError, SourceError) as exc:
        raise DiagnoseSourceError(str(exc)) from exc


def _read(source: WindowSource, start: float, end: float) -> WindowTotals:
    try:
        return source.window_totals(start, end)
    except (PrometheusError, SourceError) as exc:
        raise DiagnoseSourceError(str(exc)) from exc

