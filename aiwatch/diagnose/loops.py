"""How much of a network part's rise the event loops' waits explain: an estimate, said next to the part.

A caller's network time (its time minus the time the peer reported) holds the time the call waited for an event
loop: the request in the peer's socket until the peer's loop read it, the response in the caller's socket until
the caller's loop read it. About one wait on each side per call:

    loop wait per request = calls per request x (rise of the caller's expected wait + rise of the peer's)

where a loop's *expected wait* is how long an event arriving at a uniformly random time waits for it: over a window
of ``T`` seconds in which the loop stood still in blocks of ``B_k`` seconds, ``sum(B_k ** 2 / 2) / T`` (an arrival
inside a block waits for the rest of it, half of it on average, and lands in it with probability ``B_k / T``).

Estimating it from the sampler (:mod:`aiwatch.eventloop`). The sampler's timer is due ``I`` (the interval) after the
previous sample ran, and records ``d``, how late it ran; each sample adds ``I + d`` to the watched time, so per
window ``I = (watched - sum) / count`` (``aiwatch_event_loop_sampled_seconds_total``, the delay's ``_sum`` and
``_count``). The mean delay per sample, the estimate before, is right while the loop's blocks are shorter than the
interval: the samples fall at random moments, and a block is sampled about as often as its length says. A block
longer than the interval is sampled exactly once (the next sample is due ``I`` after it ends), however long, where
an arrival lands in it with probability ``B / T`` and waits ``B / 2``. So the samples are taken in two kinds:

- a *long* sample (``d > I``) is one stall of ``B = d + a`` seconds, ``a`` being how long it had run when the sample
  was due, between 0 and ``I`` (``I / 2`` on average): its arrivals waited about ``(d + I / 2) ** 2 / 2``, which is
  ``d (d + I) / 2`` leaving out ``I ** 2 / 8``;
- the *short* samples (``d <= I``) are the wait at random moments of the rest of the time, ``sum(I + d)`` over
  them: there the wait is their mean delay, as before.

    expected wait = (mean short d x sum over short (I + d) + sum over long d (d + I) / 2) / watched

A loop without long samples gets the mean delay per sample exactly; a loop blocked 1 s in every 2 s waits 0.25 s on
average, and its mean delay per sample is 0.09 s.

The metrics give no sample's own ``d``, only the histogram's buckets and the exact ``_sum``. The long samples are
taken as close together as their buckets allow (each at one level, clamped into its bucket), adding up to the
``_sum`` less the short ones at their buckets' midpoints: the smallest sum of squares the buckets allow them, so a
few percent low for stalls spread over wide buckets (1-2.5 s, 2.5-5 s). The short samples then share the rest of
the ``_sum``, each at the same relative place in its bucket (the mean delay exactly without long samples). The
``+Inf`` bucket's samples (over 10 s) take what the finite buckets at their midpoints leave of the ``_sum`` (at
least 10 s each). Checked against an exact simulation of the sampler (``tests/diagnose/loop_stalls.py``; ``python
-m tests.diagnose.loop_stalls`` prints the table in docs/diagnose.md): within 6% of the true wait where the old mean
was 2-50x low (9% high for a strictly periodic 1 s block), and the old mean where blocks are shorter than the
interval. Blocks that come at the interval's period fall in step with the sampler and read too high, as before (less
so). A window without the watched time (an aiwatch before ``aiwatch_event_loop_sampled_seconds_total``) falls back
to the mean delay per sample, and the report says so. Several loops under one service (replicas, workers) add up:
the estimate is their time-weighted mean. The loops are read per replica (scrape target): where only some replicas
have the watched time (a rolling upgrade from an older aiwatch), the estimate and the stalled share are those of the
replicas with it, each one's delay over its own watched time, and the report names the replicas left out
(:func:`unwatched_notes`); another replica's delay over their watched time would read as stalls that never were.

A network part that rose by the noise floor or more gets this estimate; when it is at least :data:`EXPLAINS_SHARE` of
the part's rise, the diagnosis says that the loops, not the wire, moved. The part's own number stays as measured.
The peer's loop is found under its ``peer`` label as a service name: aiwatch servers name themselves (the
``Server-Timing`` ``desc``); a ``host:port`` peer, or a service without the sampler (WSGI, grpcio's thread-pool
server, an older aiwatch), has no delay series, and its side counts as unknown.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from aiwatch.diagnose.split import Part
from aiwatch.diagnose.window import Key, WindowTotals
from aiwatch.promapi import bucket_bound

#: The loops explain a network rise when their estimated wait is at least this share of it.
EXPLAINS_SHARE = 0.5
#: A loop is named as starved when it added at least this share of the loops' estimate.
SIDE_SHARE = 0.25


@dataclass(frozen=True)
class LoopWait:
    """The estimated rise of the time one network part's calls waited for event loops, per request of the diagnosed
    service: ``caller_seconds`` on the caller's loop, ``peer_seconds`` on the peer's (``None`` where that service
    has no delay series in both windows); ``explains``: their sum is at least :data:`EXPLAINS_SHARE` of the part's
    rise; ``mean_only``: the sides whose estimate is, in a window, only the mean delay per sample (no watched-time
    counter: an older aiwatch), which under-counts stalls longer than the sampling interval. ``worst_shares``: per
    side whose replicas export ``aiwatch_event_loop_stalled_ratio`` (:func:`worst_worker_share`), ``(service,
    share)``: the worst worker's share of the 5 minutes before the incident window's end it stood still (not the
    window's share: the gauge's own fixed 5 minutes); empty without the gauge. ``worst_gone``: ``(service,
    seconds)`` for each of those shares that is the last value of a replica gone before the incident window's end
    (it vanished in the window: its share is of the 5 minutes before it was last scraped), how long before the end;
    ``gone_within``: how much later than said those times may have been (0: exact; the incident window's
    :meth:`~aiwatch.diagnose.window.WindowTotals.gone_within`)."""

    caller: str
    peer: str
    caller_seconds: float | None
    peer_seconds: float | None
    calls_per_request: float
    explains: bool
    mean_only: tuple[str, ...] = ()
    worst_shares: tuple[tuple[str, float], ...] = ()
    worst_gone: tuple[tuple[str, float], ...] = ()
    gone_within: float = 0.0

    @property
    def seconds(self) -> float:
        return sum(s for s in (self.caller_seconds, self.peer_seconds) if s is not None)

    def starved(self) -> list[str]:
        """The services whose loop added at least :data:`SIDE_SHARE` of the loops' estimate (the larger one when
        neither did): a side that added a few milliseconds next to the other's hundred is not named."""
        sides = [(name, s) for name, s in ((self.caller, self.caller_seconds), (self.peer, self.peer_seconds))
                 if s is not None and s > 0]
        named = [name for name, s in sides if s >= SIDE_SHARE * self.seconds]
        if not named and sides:
            named = [max(sides, key=lambda side: side[1])[0]]
        return list(dict.fromkeys(named))  # a service calling itself waits on one loop

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"caller_seconds": self.caller_seconds, "peer_seconds": self.peer_seconds,
                               "seconds": self.seconds, "calls_per_request": self.calls_per_request,
                               "explains": self.explains, "mean_delay_only": list(self.mean_only)}
        if self.worst_shares:  # only where the gauge is: the output of an older aiwatch stays as it was
            out[WORST_SHARE_FIELD] = dict(self.worst_shares)
        if self.worst_gone:  # only where a share is a gone replica's last value
            out[WORST_GONE_FIELD] = dict(self.worst_gone)
        return out


#: The JSON field of :attr:`LoopWait.worst_shares`: a 5-minute share at the incident window's end, whatever the
#: window's length.
WORST_SHARE_FIELD = "worst_worker_stalled_share_5m_to_incident_end"
#: The JSON field of :attr:`LoopWait.worst_gone`: per service whose share in :data:`WORST_SHARE_FIELD` is the last
#: value of a replica gone before the incident window's end, how many seconds before the end that value was.
WORST_GONE_FIELD = "worst_worker_stalled_share_last_seen_seconds_before_incident_end"


def _watched(w: WindowTotals, service: str) -> dict[Key, float]:
    """The watched seconds of each of the service's replicas (the loop reads' labels after ``service``) whose
    watched time grew in ``w``: those that export it."""
    return {replica: v for replica, v in w.matching("loop_sampled_seconds", service) if v > 0}


def _unwatched(w: WindowTotals, service: str, watched: Collection[Key]) -> int:
    """How many of the service's replicas took samples in ``w`` but are not in ``watched``."""
    return sum(1 for (*replica, le), n in w.matching("loop_delay_buckets", service)
               if le == "+Inf" and n > 0 and tuple(replica) not in watched)


def mean_delay(w: WindowTotals, service: str) -> float | None:
    """The mean sampled delay of the service's event loop(s) in ``w``; ``None`` without samples or with a ``_sum``
    that is not a number."""
    samples, delay = _samples(w, service), w.total("loop_delay_seconds", service)
    return delay / samples if samples > 0 and math.isfinite(delay) else None


def stalled_share(w: WindowTotals, service: str) -> float | None:
    """The share of the time the service's loop(s) stood still in ``w``: the delays' sum over the time the sampler
    watched (what ``AiwatchEventLoopDelayHigh`` fires on), at most 1; ``None`` without the watched time, or with a
    ``_sum`` or watched time that is not a number. Only the replicas with the watched time count."""
    replicas = _watched(w, service)
    watched = sum(replicas.values())
    delay = sum(v for replica, v in w.matching("loop_delay_seconds", service) if replica in replicas)
    if not (watched > 0 and math.isfinite(watched) and math.isfinite(delay)):
        return None
    # a stall that began before the window is counted whole by the sample that ends it
    return min(1.0, delay / watched)


def worst_worker_share(w: WindowTotals, service: str) -> tuple[float, float | None] | None:
    """The largest ``aiwatch_event_loop_stalled_ratio`` of the service's replicas at the end of ``w``: each one's
    worst live worker's share of the 5 minutes before it stood still (its own sampler's, where the delays read above
    are a merged multiprocess target's mean over its workers), with, where it is the last value of a replica gone
    before the end (the ``loop_worst_share_gone`` read), how many seconds before the end it was (else ``None``; of
    equal shares, a present replica's); ``None`` where no replica exports it (an older aiwatch) or none is a finite
    number."""
    gone = w.of("loop_worst_share_gone")
    found = [(v, gone.get((service, *replica), 0.0)) for replica, v in w.matching("loop_worst_share", service)
             if math.isfinite(v)]
    if not found:
        return None
    share, seconds = max(found, key=lambda f: (f[0], -f[1]))
    return share, seconds if seconds > 0 else None


@dataclass(frozen=True)
class WaitEstimate:
    """How long an event arriving at a random time in a window waits for the service's loop(s): ``seconds``;
    ``watched``: estimated from the buckets and the watched time (:func:`expected_wait`), else (no watched time in
    the window: an older aiwatch) the mean delay per sample, which under-counts stalls longer than the interval;
    ``left_out``: the replicas with samples but no watched time that a ``watched`` estimate leaves out, of
    ``replicas`` with samples or watched time."""

    seconds: float
    watched: bool
    left_out: int = 0
    replicas: int = 0


def expected_wait(buckets: Iterable[tuple[float, float]], delay_sum: float, watched: float) -> float | None:
    """The expected wait of a uniformly random arrival (see the module's docstring) from a window's increase of the
    delay histogram's cumulative ``(upper bound, count)`` buckets (``+Inf`` included: the samples' count), its
    ``_sum`` and the watched seconds, at most the watched seconds; ``None`` without samples or watched time, or
    with a ``_sum`` or watched time that is not a finite number.

        >>> inf = float("inf")
        >>> round(expected_wait([(0.001, 600), (inf, 600)], 600 * 0.0005, 600 * 0.1005), 6)  # prompt: the mean
        0.0005
        >>> # blocked 1 s in every 2 s for a minute (true wait 30 x 1 / 2 / 60 = 0.25 s): 285 prompt samples, and
        >>> # 30 that read 0.95 s on average (the stall had run 0.05 s when the sample was due); their mean is 0.091 s
        >>> round(expected_wait([(0.001, 285), (0.5, 285), (1.0, 315), (inf, 315)], 285 * 0.0005 + 30 * 0.95, 60), 3)
        0.25
    """
    cumulatives = sorted(buckets)
    if not cumulatives or not watched > 0 or not math.isfinite(watched) or not math.isfinite(delay_sum):
        return None
    counts: list[float] = []
    bounds: list[float] = []
    lows: list[float] = []
    seen = 0.0
    for le, cumulative in cumulatives:
        # Prometheus extrapolates each bucket's increase on its own: a cumulative count may dip, never below zero
        n = max(0.0, cumulative - seen)
        seen = max(seen, cumulative)
        lows.append(bounds[-1] if bounds else 0.0)
        bounds.append(le)
        counts.append(n)
    count = seen
    if count <= 0:
        return None
    interval = max(0.0, watched - delay_sum) / count
    rows = [(lo, hi, n) for lo, hi, n in zip(lows, bounds, counts, strict=True) if n > 0]
    long = [(lo, hi, n) for lo, hi, n in rows if (lo + hi) / 2 > interval and math.isfinite(hi)]
    short = [(lo, hi, n) for lo, hi, n in rows if (lo + hi) / 2 <= interval]
    over = [(lo, n) for lo, hi, n in rows if not math.isfinite(hi)]
    # the +Inf bucket's samples: what the finite buckets at their midpoints leave of the sum (at least its bound)
    over_mean = 0.0
    if over:
        lo, n = over[0]
        over_mean = max(lo, (delay_sum - sum(n * (lo + hi) / 2 for lo, hi, n in rows if math.isfinite(hi))) / n)
    left = delay_sum - sum(n * over_mean for _, n in over)
    # the long samples as close together as their buckets allow, adding up to the sum less the short samples at their
    # midpoints: the smallest sum of squares they can have
    level = _level(long, left - sum(n * (lo + hi) / 2 for lo, hi, n in short))
    samples = [(min(hi, max(lo, level)), n) for lo, hi, n in long]
    samples += [(over_mean, n) for _, n in over]
    # the short samples' buckets share the rest, each at the same relative place in its bucket: the mean delay per
    # sample exactly when there is no long sample
    short_place = _place(short, left - sum(d * n for d, n in samples[:len(long)]))
    short_samples = [(lo + short_place * (hi - lo), n) for lo, hi, n in short]
    short_count = sum(n for _, n in short_samples)
    short_mean = sum(d * n for d, n in short_samples) / short_count if short_count > 0 else 0.0
    # the short cycles' time at their samples' mean delay, and each long sample a stall of about d + interval / 2
    short_wait = short_mean * sum((interval + d) * n for d, n in short_samples)
    stalls_wait = sum(n * d * (d + interval) / 2 for d, n in samples)
    # a stall that began before the window (its sample's delay counted whole) can make the sum of squares exceed
    # what the watched time holds: no arrival in the window waits longer than the window
    return min(watched, (short_wait + stalls_wait) / watched)


def _place(buckets: list[tuple[float, float, float]], total: float) -> float:
    """The relative place (0: lower bounds, 1: upper bounds) in each of ``(lower, upper, count)`` buckets at which
    their samples add up to ``total``, within [0, 1]; 0.5 for no width."""
    width = sum((hi - lo) * n for lo, hi, n in buckets)
    if width <= 0:
        return 0.5
    return min(1.0, max(0.0, (total - sum(lo * n for lo, _, n in buckets)) / width))


def _level(buckets: list[tuple[float, float, float]], total: float) -> float:
    """The level ``c`` at which ``(lower, upper, count)`` buckets' samples, each at ``c`` clamped into its bucket,
    add up to ``total`` (the lowest or highest place where they cannot)."""
    low, high = 0.0, max((hi for _, hi, _ in buckets), default=0.0)
    for _ in range(60):
        mid = (low + high) / 2
        if sum(n * min(hi, max(lo, mid)) for lo, hi, n in buckets) < total:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def wait_estimate(w: WindowTotals, service: str) -> WaitEstimate | None:
    """The service's loops' expected wait in ``w`` (:func:`expected_wait`), or the mean delay per sample where the
    window has samples but no watched time; ``None`` without samples. Where only some replicas have the watched
    time, the estimate is theirs: each replica's delay goes with its own watched time."""
    replicas = _watched(w, service)
    if replicas:
        buckets: dict[float, float] = {}
        for (*replica, le), n in w.matching("loop_delay_buckets", service):
            bound = bucket_bound(le)
            if tuple(replica) in replicas and bound is not None:
                buckets[bound] = buckets.get(bound, 0.0) + n
        delay = sum(v for replica, v in w.matching("loop_delay_seconds", service) if replica in replicas)
        found = expected_wait(buckets.items(), delay, sum(replicas.values()))
        if found is not None:
            left_out = _unwatched(w, service, replicas)
            return WaitEstimate(found, True, left_out, len(replicas) + left_out)
    mean = mean_delay(w, service)
    return None if mean is None else WaitEstimate(mean, False)


def wait_rise(baseline: WindowTotals, incident: WindowTotals, service: str) -> tuple[float | None, bool]:
    """The rise of the service's expected loop wait between the windows (``None`` unless both have samples), and
    whether either window's is only the mean delay per sample (no watched time)."""
    before, after = wait_estimate(baseline, service), wait_estimate(incident, service)
    if before is None or after is None:
        return None, False
    return after.seconds - before.seconds, not (before.watched and after.watched)


def _samples(w: WindowTotals, service: str) -> float:
    """The samples' count: the +Inf bucket's increase (the same series as ``_count``)."""
    return sum(n for (*_, le), n in w.matching("loop_delay_buckets", service) if le == "+Inf")


def unwatched_notes(baseline: WindowTotals, incident: WindowTotals, services: Collection[str]) -> list[str]:
    """A note for each window and service of ``services`` (the diagnosed call graph's) whose loop estimate leaves
    out replicas without the watched time (:func:`wait_estimate`)."""
    notes = []
    for name, w in (("baseline", baseline), ("incident", incident)):
        for service in sorted({k[0] for k in w.of("loop_delay_seconds")} & set(services)):
            found = wait_estimate(w, service)
            if found is not None and found.left_out:
                notes.append(f"the {name} window's event loop estimates of {service} (wait, stalled share) leave "
                             f"out {found.left_out} of its {found.replicas} replicas: they export no "
                             "aiwatch_event_loop_sampled_seconds_total (an older aiwatch, as in a rolling upgrade); "
                             "the estimates are those of the replicas that do")
    return notes


def loop_wait(baseline: WindowTotals, incident: WindowTotals, part: Part, per_request: float,
              delta: float) -> LoopWait | None:
    """The loops' estimated share of the rise ``delta`` of the network ``part`` (``per_request``: its seconds per
    request of the diagnosed service in the incident). ``None`` when neither side has the delay in both windows,
    or the incident's calls cannot be counted."""
    caller, caller_mean = wait_rise(baseline, incident, part.service)
    peer, peer_mean = wait_rise(baseline, incident, part.peer)
    if caller is None and peer is None:
        return None
    key = (part.service, part.peer, part.phase)
    calls, seconds = incident.of("network_calls").get(key, 0.0), incident.of("network_seconds").get(key, 0.0)
    if calls <= 0 or seconds <= 0:
        return None
    # the part's seconds per request over the seconds per call: calls per request of the diagnosed service, also
    # for a callee's call reached through the call graph (scaled like its network time)
    calls_per_request = per_request * calls / seconds
    worst = [(name, found) for name in dict.fromkeys((part.service, part.peer))
             if (found := worst_worker_share(incident, name)) is not None]
    wait = LoopWait(part.service, part.peer, None if caller is None else caller * calls_per_request,
                    None if peer is None else peer * calls_per_request, calls_per_request, False,
                    tuple(dict.fromkeys(name for name, mean in ((part.service, caller_mean), (part.peer, peer_mean))
                                        if mean)),
                    tuple((name, share) for name, (share, _) in worst),
                    tuple((name, gone) for name, (_, gone) in worst if gone is not None))
    return LoopWait(**{**wait.__dict__, "explains": delta > 0 and wait.seconds >= EXPLAINS_SHARE * delta,
                       "gone_within": incident.gone_within() if wait.worst_gone else 0.0})
