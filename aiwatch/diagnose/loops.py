"""How much of a network part's rise the event loops' delay explains: an estimate, said next to the part.

A caller's network time (its time minus the time the peer reported) holds the time the call waited for an event
loop: the request in the peer's socket until the peer's loop read it, the response in the caller's socket until
the caller's loop read it. The mean delay the loop sampler records (``aiwatch_event_loop_delay_seconds``) estimates
how long an event arriving at a random time waits for that loop, so about one wait on each side per call is

    loop wait per request = calls per request x (rise of the caller's mean delay + rise of the peer's mean delay)

A network part that rose by the noise floor or more gets this estimate; when it is at least :data:`EXPLAINS_SHARE` of
the part's rise, the diagnosis says that the loops, not the wire, moved. The part's own number stays as measured.
The peer's loop is found under its ``peer`` label as a service name: aiwatch servers name themselves (the
``Server-Timing`` ``desc``); a ``host:port`` peer, or a service without the sampler (WSGI, grpcio's thread-pool
server, an older aiwatch), has no delay series, and its side counts as unknown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiwatch.diagnose.split import Part
from aiwatch.diagnose.window import WindowTotals

#: The loops explain a network rise when their estimated wait is at least this share of it.
EXPLAINS_SHARE = 0.5
#: A loop is named as starved when it added at least this share of the loops' estimate.
SIDE_SHARE = 0.25


@dataclass(frozen=True)
class LoopWait:
    """The estimated rise of the time one network part's calls waited for event loops, per request of the diagnosed
    service: ``caller_seconds`` on the caller's loop, ``peer_seconds`` on the peer's (``None`` where that service
    has no delay series in both windows); ``explains``: their sum is at least :data:`EXPLAINS_SHARE` of the part's
    rise."""

    caller: str
    peer: str
    caller_seconds: float | None
    peer_seconds: float | None
    calls_per_request: float
    explains: bool

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
        return {"caller_seconds": self.caller_seconds, "peer_seconds": self.peer_seconds, "seconds": self.seconds,
                "calls_per_request": self.calls_per_request, "explains": self.explains}


def mean_delay(w: WindowTotals, service: str) -> float | None:
    """The mean sampled delay of the service's event loop(s) in ``w``; ``None`` without samples."""
    samples = w.total("loop_delay_samples", service)
    return w.total("loop_delay_seconds", service) / samples if samples > 0 else None


def delay_rise(baseline: WindowTotals, incident: WindowTotals, service: str) -> float | None:
    """The rise of the service's mean loop delay between the windows; ``None`` unless both have samples."""
    before, after = mean_delay(baseline, service), mean_delay(incident, service)
    return None if before is None or after is None else after - before


def loop_wait(baseline: WindowTotals, incident: WindowTotals, part: Part, per_request: float,
              delta: float) -> LoopWait | None:
    """The loops' estimated share of the rise ``delta`` of the network ``part`` (``per_request``: its seconds per
    request of the diagnosed service in the incident). ``None`` when neither side has the delay in both windows,
    or the incident's calls cannot be counted."""
    caller = delay_rise(baseline, incident, part.service)
    peer = delay_rise(baseline, incident, part.peer)
    if caller is None and peer is None:
        return None
    key = (part.service, part.peer, part.phase)
    calls, seconds = incident.of("network_calls").get(key, 0.0), incident.of("network_seconds").get(key, 0.0)
    if calls <= 0 or seconds <= 0:
        return None
    # the part's seconds per request over the seconds per call: calls per request of the diagnosed service, also
    # for a callee's call reached through the call graph (scaled like its network time)
    calls_per_request = per_request * calls / seconds
    wait = LoopWait(part.service, part.peer, None if caller is None else caller * calls_per_request,
                    None if peer is None else peer * calls_per_request, calls_per_request, False)
    return LoopWait(**{**wait.__dict__, "explains": delta > 0 and wait.seconds >= EXPLAINS_SHARE * delta})
