"""Which requests a prediction log keeps: a base rate, raised for slow and for failed requests."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from aiwatch.forksafe import at_fork_in_child


def _check_rate(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")


#: aiwatch's own random stream: the module-level functions share one state with the host app, whose
#: ``random.seed(...)`` sequence each kept-or-not draw would otherwise move on by one. Reseeded in a forked child, as
#: the random module's own is: gunicorn's workers forked from one master drew the same sequence.
_draws = random.Random()
at_fork_in_child(_draws.seed)


@dataclass(frozen=True)
class SamplingPolicy:
    """Keep a request with probability ``rate``; ``error_rate`` for failed requests; ``slow_rate`` for requests
    whose latency is at least ``slow_seconds`` (``None``: no slow rule). The rate applied is written with the
    record (``sample_rate``) so that counts can be re-weighted (a record stands for ``1 / sample_rate``
    requests)."""

    rate: float = 1.0
    slow_seconds: float | None = None
    slow_rate: float = 1.0
    error_rate: float = 1.0

    def __post_init__(self) -> None:
        _check_rate("rate", self.rate)
        _check_rate("slow_rate", self.slow_rate)
        _check_rate("error_rate", self.error_rate)
        if self.slow_seconds is not None and (isinstance(self.slow_seconds, bool)
                                              or not (isinstance(self.slow_seconds, int | float)
                                                      and 0 <= self.slow_seconds < math.inf)):
            raise ValueError(f"slow_seconds must be a finite number >= 0 or None, got {self.slow_seconds!r}")

    def rate_for(self, latency: float | None, error: bool) -> float:
        """The keep probability of one request."""
        rate = self.rate
        if error and self.error_rate > rate:
            rate = self.error_rate
        if (self.slow_seconds is not None and latency is not None and latency >= self.slow_seconds
                and self.slow_rate > rate):
            rate = self.slow_rate
        return rate

    def keep(self, rate: float, draw: float | None = None) -> bool:
        """Whether to keep a request whose keep probability is ``rate``."""
        if rate >= 1.0:
            return True
        if rate <= 0.0:
            return False
        return (_draws.random() if draw is None else draw) < rate
