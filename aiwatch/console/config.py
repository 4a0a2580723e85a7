"""The console's configuration: passed from ``aiwatch console`` to the Streamlit app through environment variables.

    >>> cfg = ConsoleConfig.from_env({"AIWATCH_CONSOLE_SCRAPE": "http://127.0.0.1:8000/metrics", "AIWATCH_CONSOLE_REFRESH": "5"})
    >>> cfg.scrape, cfg.refresh
    (('http://127.0.0.1:8000/metrics',), 5.0)
"""  # noqa: E501

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aiwatch import env as _env
from aiwatch.console.source import DataSource

DEFAULT_SCRAPE = _env.CONSOLE_SCRAPE.default

#: Each field's environment variable (the rows of :mod:`aiwatch.env`'s table).
ENV = {
    "prometheus": _env.CONSOLE_PROMETHEUS,
    "scrape": _env.CONSOLE_SCRAPE,
    "interval": _env.CONSOLE_INTERVAL,
    "history": _env.CONSOLE_HISTORY,
    "refresh": _env.CONSOLE_REFRESH,
    "window": _env.CONSOLE_WINDOW,
    "span": _env.CONSOLE_SPAN,
}


@dataclass(frozen=True)
class ConsoleConfig:
    """Where the console reads from and how often it refreshes.

    - ``prometheus``: Prometheus URL; when set, the console uses :class:`PrometheusSource` and ignores ``scrape``.
    - ``scrape``: ``/metrics`` URLs scraped by the embedded :class:`ScrapeSource` every ``interval`` seconds,
      keeping ``history`` seconds.
    - ``refresh``: seconds between automatic redraws of the open view (0 turns it off).
    - ``window``: the default rate / quantile window in seconds.
    - ``span``: seconds of history the over-time charts draw from Prometheus.
    """

    prometheus: str = _env.CONSOLE_PROMETHEUS.default
    scrape: tuple[str, ...] = (DEFAULT_SCRAPE,)
    interval: float = float(_env.CONSOLE_INTERVAL.default)
    history: float = float(_env.CONSOLE_HISTORY.default)
    refresh: float = float(_env.CONSOLE_REFRESH.default)
    window: float = float(_env.CONSOLE_WINDOW.default)
    span: float = float(_env.CONSOLE_SPAN.default)

    def __post_init__(self) -> None:
        for name in ("interval", "history", "window", "span"):
            if getattr(self, name) <= 0:
                raise ValueError(f"console {name} must be > 0 seconds, got {getattr(self, name)}")
        if self.refresh < 0:
            raise ValueError(f"console refresh must be >= 0 seconds, got {self.refresh}")
        if not self.prometheus and not self.scrape:
            raise ValueError("the console needs a Prometheus URL or at least one /metrics URL to scrape")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ConsoleConfig:
        """Read the ``AIWATCH_CONSOLE_*`` variables (unset ones keep their defaults)."""
        kwargs: dict[str, object] = {}
        for field_name, var in ENV.items():
            raw = var.raw(env).strip()
            if not raw:
                continue
            if field_name == "prometheus":
                kwargs[field_name] = raw
            elif field_name == "scrape":
                kwargs[field_name] = tuple(u for u in raw.replace(",", " ").split() if u)
            else:
                try:
                    kwargs[field_name] = float(raw)
                except ValueError:
                    raise ValueError(f"{var.name} must be a number of seconds, got {raw!r}") from None
        return cls(**kwargs)  # type: ignore[arg-type]

    def to_env(self) -> dict[str, str]:
        """The environment variables that :meth:`from_env` reads back into this config."""
        return {
            ENV["prometheus"].name: self.prometheus,
            ENV["scrape"].name: ",".join(self.scrape),
            ENV["interval"].name: str(self.interval),
            ENV["history"].name: str(self.history),
            ENV["refresh"].name: str(self.refresh),
            ENV["window"].name: str(self.window),
            ENV["span"].name: str(self.span),
        }

    def make_source(self) -> DataSource:
        """The data source this config names (a started :class:`ScrapeSource` unless ``prometheus`` is set)."""
        if self.prometheus:
            from aiwatch.console.prometheus import PrometheusSource

            return PrometheusSource(self.prometheus, span=self.span)
        from aiwatch.console.scrape import ScrapeSource

        return ScrapeSource(self.scrape, interval=self.interval, history=self.history)
