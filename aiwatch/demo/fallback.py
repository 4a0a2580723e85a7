"""The gateway's graceful degradation: a deadline per real-time request, and recent answers to serve when the
inference service cannot answer within it.

A real-time request has ``budget`` seconds at the gateway. Before it calls the inference service, the gateway
compares the time left with what the call would take (:class:`CallEstimate`, from its recent calls). When the
call would not return in time, it does not make it: it answers from :class:`RecentAnswers`, the user's own last
recommendations if it still holds them (``cached_prediction``), else the most recent answer it gave anyone
(``default_answer``), and marks the response with :func:`aiwatch.degraded`. A call once made is waited for: cancelling
it would not give the model its time back (the request already sits in its queue), and the shed calls are what
relieve the queue. Batch requests have no deadline: a backfill job would rather wait than get a stale answer.

    >>> answers = RecentAnswers(capacity=2)
    >>> answers.fallback(1)
    ([], 'default_answer')
    >>> answers.remember(1, [10, 11]); answers.remember(2, [20]); answers.remember(3, [30])
    >>> answers.fallback(1), answers.fallback(3)       # user 1 was the least recent: forgotten
    (([30], 'default_answer'), ([30], 'cached_prediction'))
"""

from __future__ import annotations

import time
from collections import OrderedDict

from aiwatch.degradation import CACHED_PREDICTION, DEFAULT_ANSWER

#: The share of the budget below which the gateway does not start the call, whatever recent calls took.
MIN_CALL_SHARE = 0.1


class CallEstimate:
    """How long the next call to the inference service would take, from the calls the gateway made and has in flight.

    The recent calls' time (a moving average, exponentially weighted, ``weight`` per finished call), scaled down
    when fewer calls are in flight than the recent calls had (Little's law: with fewer ahead of it in the service's
    queue, a call waits less). When the gateway stops calling, its calls in flight finish and the estimate falls with
    them, so calls resume as the queue drains; with as many in flight as usual, it is what calls took (a slow link
    or a slow model, which no queue explains, is not multiplied).

    >>> est = CallEstimate(weight=1.0)
    >>> calls = [est.start() for _ in range(4)]       # four calls in flight
    >>> est.finish(calls[-1], 0.4)                    # the fourth (4 in flight when it started) took 0.4 s
    >>> round(est.expected(), 3)                      # 3 in flight and the next: as many as it had
    0.4
    >>> for c in calls[:2]:
    ...     est.finish(c, float("nan"))               # two fail: they say nothing about the time, but leave
    >>> round(est.expected(), 3)                      # 1 in flight and the next: half as many ahead
    0.2
    """

    def __init__(self, weight: float = 0.1) -> None:
        if not 0 < weight <= 1:
            raise ValueError(f"weight must be in (0, 1], got {weight}")
        self.weight = weight
        self.in_flight = 0
        self._seconds: float | None = None
        self._concurrency = 1.0

    def expected(self) -> float:
        """The next call's expected time in seconds (0 before any call finished)."""
        if self._seconds is None:
            return 0.0
        return self._seconds * min(1.0, (self.in_flight + 1) / self._concurrency)

    def start(self) -> int:
        """A call starts; returns the calls in flight with it, for :meth:`finish`."""
        self.in_flight += 1
        return self.in_flight

    def finish(self, in_flight_at_start: int, seconds: float) -> None:
        """A call that :meth:`start` returned ``in_flight_at_start`` for ended after ``seconds`` (``nan``: it
        failed, and says nothing about the time)."""
        self.in_flight = max(self.in_flight - 1, 0)
        if seconds != seconds:  # nan
            return
        if self._seconds is None:
            self._seconds, self._concurrency = seconds, float(max(in_flight_at_start, 1))
            return
        self._seconds += self.weight * (seconds - self._seconds)
        self._concurrency += self.weight * (max(in_flight_at_start, 1) - self._concurrency)


class RecentAnswers:
    """The last answer per user, for at most ``capacity`` users (least recently answered forgotten first)."""

    def __init__(self, capacity: int = 2000) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._answers: OrderedDict[int, list[int]] = OrderedDict()
        self._latest: list[int] = []

    def remember(self, user_id: int, items: list[int]) -> None:
        self._answers[user_id] = items
        self._answers.move_to_end(user_id)
        if len(self._answers) > self.capacity:
            self._answers.popitem(last=False)
        self._latest = items

    def fallback(self, user_id: int) -> tuple[list[int], str]:
        """The answer to serve without the model, and the reason to count it under."""
        items = self._answers.get(user_id)
        if items is not None:
            return items, CACHED_PREDICTION
        return self._latest, DEFAULT_ANSWER

    def __len__(self) -> int:
        return len(self._answers)


class Deadline:
    """A request's time budget, from when it started (``time.monotonic``); ``budget=None``: no deadline."""

    def __init__(self, budget: float | None, start: float | None = None) -> None:
        self.budget = budget
        self.start = time.monotonic() if start is None else start

    def remaining(self) -> float | None:
        """Seconds left (<= 0 once passed), or ``None`` without a deadline."""
        if self.budget is None:
            return None
        return self.start + self.budget - time.monotonic()

    def too_near(self, call_seconds: float) -> bool:
        """Too little time is left for a call expected to take ``call_seconds``."""
        left = self.remaining()
        return (left is not None and self.budget is not None
                and left < max(call_seconds, MIN_CALL_SHARE * self.budget))
