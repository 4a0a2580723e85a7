"""A :class:`~aiwatch.diagnose.report.Diagnosis` as plain text for a terminal: the verdict, the two windows, the
ranked contributors, the tail and the signals.

Label values come from traffic (service, phase and peer names), so every control character is shown escaped: a
name cannot move the cursor, clear the screen or forge a line of the report.
"""

from __future__ import annotations

from aiwatch.diagnose.report import Contributor, Diagnosis, SignalChange, WindowSummary, ms, signed_ms
from aiwatch.diagnose.timeargs import format_time

#: Contributors listed before the rest are summarised in one line.
ROWS = 12
#: The widest the parts' column grows: a longer name (from traffic) is shown whole on a line of its own.
NAME_WIDTH = 72


def printable(text: str, *, backslashes: bool = True) -> str:
    r"""``text`` with every non-printable character escaped, and every backslash doubled (unless ``backslashes`` is
    false), so that an escape reads apart from the same text written by the traffic.

    >>> print(printable("gw\x1b[2J\nx"), printable("gw\\x1b"))
    gw\x1b[2J\nx gw\\x1b
    >>> print(printable("'a\\b'\x07", backslashes=False))
    'a\b'\x07
    """
    return "".join(c if c.isprintable() and (c != "\\" or not backslashes)
                   else c.encode("unicode_escape").decode("ascii") for c in text)


def format_diagnosis(d: Diagnosis, rows: int = ROWS) -> str:
    """The human-readable report of ``d``."""
    lines = [d.verdict, "", _window("baseline", d.baseline), _window("incident", d.incident)]
    lines += [f"note: {note}" for note in d.notes]
    lines.append("")
    lines.append(f"Time per request of {d.service}, by part (ms; ranked by added time; noise floor "
                 f"{ms(d.noise_floor_seconds)} ms)")
    lines += _table(d.contributors, d.noise_floor_seconds, rows)
    lines += _loops(d)
    if d.tail is not None:
        t = d.tail
        threshold = f"{ms(t.threshold_seconds)} ms" if t.threshold_seconds is not None else "the slow threshold"
        if t.baseline_threshold_seconds not in (None, t.threshold_seconds):
            threshold += (f" ({ms(t.baseline_threshold_seconds)} ms in the baseline: the two tails count different "
                          "requests)")
        lines += ["", f"Tail: seconds spent in requests slower than {threshold}, per request (ms); slow requests "
                      f"{_pct(t.baseline_slow_share)} -> {_pct(t.incident_slow_share)} of all"]
        lines += _table(t.contributors, d.noise_floor_seconds, rows)
    if d.signals:
        lines += ["", "Signals (baseline -> incident)"]
        lines += [f"  {_signal(s)}" for s in d.signals]
    if d.drifted:
        lines += ["", "Newly drifted input features: " + ", ".join(f"{f} (model {m})" for m, f in d.drifted)]
    return "\n".join(printable(line) for line in lines) + "\n"


def _loops(d: Diagnosis) -> list[str]:
    """What the event loops' delay explains of each network part that rose (an estimate)."""
    rows = [c for c in d.contributors if c.event_loop is not None]
    if not rows:
        return []
    out = ["", "Event loops: the estimated rise of the network time spent waiting for a loop (the rise of each "
               "loop's expected wait for an event arriving at a random time x calls per request)"]
    for c in rows:
        wait = c.event_loop
        assert wait is not None
        sides = ", ".join(f"{name} {'no delay series' if s is None else signed_ms(s) + ' ms'}" for name, s in
                          ((wait.caller, wait.caller_seconds), (wait.peer, wait.peer_seconds)))
        said = "the loops, not the wire" if wait.explains else "not the loops"
        out.append(f"  {c.part.describe()} {signed_ms(c.delta_seconds)} ms: loops {signed_ms(wait.seconds)} ms "
                   f"({sides}; {wait.calls_per_request:.3g} call(s) per request): mostly {said}")
        if wait.mean_only:
            out.append(f"    {' and '.join(wait.mean_only)}: the mean delay per sample, no watched time "
                       "(aiwatch_event_loop_sampled_seconds_total: an older aiwatch) in a window; it under-counts "
                       "stalls longer than the sampling interval")
        if wait.worst_shares:
            out.append("    worst worker's share of the time stood still in the 5 minutes to the incident window's end "
                       "(aiwatch_event_loop_stalled_ratio, not the window's share; the figures above are the mean "
                       "over a multiprocess target's workers): "
                       + ", ".join(f"{name} {share:.1%}" + _gone(dict(wait.worst_gone).get(name), wait.gone_within)
                                   for name, share in wait.worst_shares))
    return out


def _gone(seconds: float | None, within: float) -> str:
    """What follows a worst worker's share that is the last value of a replica gone before the incident's end.
    ``within``: how much later than said its last sample may have been, 0 where the source has each sample's own
    time (exact); from Prometheus, its subquery's step (the window asked over
    :data:`~aiwatch.diagnose.window.COVERAGE_STEPS`): it says about, and the step."""
    if seconds is None:
        return ""
    when = f"{seconds:.0f} s" if within <= 0 else f"about {seconds:.0f} s (to within {within:.0f} s)"
    return (f" (the last value seen, {when} before the incident window's end: its replica was gone by "
            "then, and it is of the 5 minutes before that)")


def _window(name: str, w: WindowSummary) -> str:
    errors = "-" if w.error_ratio is None else f"{w.error_ratio:.2%}"
    return (f"{name:<9} {format_time(w.start)} to {format_time(w.end)}: {w.requests:.0f} requests "
            f"({w.rate:.3g}/s), mean {ms(w.mean_seconds)} ms, p99 {ms(w.p99_seconds)} ms, errors {errors}")


def _table(contributors: list[Contributor], floor: float, rows: int) -> list[str]:
    if not contributors:
        return ["  (no parts recorded)"]
    # measured as shown (escaped, when format_diagnosis escapes the lines); a name longer than the column gets a
    # line of its own, its numbers the next
    names = [c.part.describe() for c in contributors[:rows]]
    shown = [len(printable(name)) for name in names]
    width = min(NAME_WIDTH, max(40, *shown))
    out = [f"  {'part':<{width}} {'baseline':>9} {'incident':>9} {'delta':>9} {'share':>6}"]
    # a share of added time that is itself noise says nothing (a +0.01 ms sum made a -456% and a 100%): "-"
    added = sum(max(0.0, c.delta_seconds) for c in contributors)
    for c, name, length in zip(contributors[:rows], names, shown, strict=True):
        if length > width:
            out.append(f"  {name}")
            name, length = "", 0
        mark = "" if abs(c.delta_seconds) > floor else "  (within noise)"
        out.append(f"  {name}{' ' * (width - length)} {ms(c.baseline_seconds):>9} {ms(c.incident_seconds):>9} "
                   f"{signed_ms(c.delta_seconds):>9} {_share(c.share) if added > floor else '-':>6}{mark}")
    rest = contributors[rows:]
    if rest:
        largest = max(abs(c.delta_seconds) for c in rest)
        out.append(f"  ... {len(rest)} more part(s), each moved by at most {ms(largest)} ms")
    return out


def _share(value: float) -> str:
    return f"{value:.0%}" if abs(value) >= 0.005 else "0%"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "ratio":
        return f"{value:.1%}"
    if unit == "bytes":
        return f"{value / 2**30:.2f} GiB"
    if unit == "0/1":
        return "yes" if value >= 0.5 else "no"
    return f"{value:.3g} {unit}"


def _signal(s: SignalChange) -> str:
    labels = ", ".join(f"{k}={v}" for k, v in s.labels.items())
    return f"{s.name} ({labels}): {_value(s.baseline, s.unit)} -> {_value(s.incident, s.unit)}"
