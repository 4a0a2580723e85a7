"""The console's configuration: passed from ``aiwatch console`` to the Streamlit app through environment variables.

    >>> cfg = ConsoleConfig.from_env({"AIWATCH_CONSOLE_SCRAPE": "http://127.0.0.1:8000/metrics", "AIWATCH_CONSOLE_REFRESH": "5"})
    >>> cfg.scrape, cfg.refresh, cfg.aggregation_labels
    (('http://127.0.0.1:8000/metrics',), 5.0, ('cluster', 'namespace'))
"""  # noqa: E501

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from aiwatch import env as _env
from aiwatch.amounts import period, warn_implausible
from aiwatch.console.source import MIN_WINDOW, DataSource
from aiwatch.console.text import check_trace_url
from aiwatch.gpuseries import GpuSeries
from aiwatch.httpconfig import HTTPConfig
from aiwatch.promql import check_selection, label_list

DEFAULT_SCRAPE = _env.CONSOLE_SCRAPE.default


def scrape_urls(texts: Iterable[str]) -> tuple[str, ...]:
    """The ``/metrics`` URLs of ``texts``, each a list of them separated by commas or spaces (a URL holds neither
    unencoded), as ``AIWATCH_CONSOLE_SCRAPE`` and ``--scrape`` give them.

    >>> scrape_urls(["http://a/m, http://b/m", "http://c/m"])
    ('http://a/m', 'http://b/m', 'http://c/m')
    """
    return tuple(url for text in texts for url in text.replace(",", " ").split())

#: Each field's environment variable (the rows of :mod:`aiwatch.env`'s table); ``http`` has its own
#: (:data:`aiwatch.httpconfig.ENV`).
ENV = {
    "prometheus": _env.CONSOLE_PROMETHEUS,
    "scrape": _env.CONSOLE_SCRAPE,
    "interval": _env.CONSOLE_INTERVAL,
    "history": _env.CONSOLE_HISTORY,
    "refresh": _env.CONSOLE_REFRESH,
    "window": _env.CONSOLE_WINDOW,
    "span": _env.CONSOLE_SPAN,
    "timeout": _env.CONSOLE_TIMEOUT,
    "aggregation_labels": _env.CONSOLE_AGGREGATION_LABELS,
    "match": _env.CONSOLE_MATCH,
    "gpu_source": _env.CONSOLE_GPU_SOURCE,
    "dcgm_utilization": _env.CONSOLE_DCGM_UTILIZATION,
    "trace_url": _env.CONSOLE_TRACE_URL,
}
_SECONDS = ("interval", "history", "refresh", "window", "span", "timeout")
#: the settings ``aiwatch console`` has no option for (its variable only)
_NO_OPTION = ("span",)


def _setting(name: str, note: str = "") -> str:
    """How an error names the setting ``name``: by the option and the variable that set it (the value may come from
    either), so that ``AIWATCH_CONSOLE_SPAN=0`` is found in the environment it came from.

        >>> _setting("span"), _setting("refresh", "0: off")
        ('console span (AIWATCH_CONSOLE_SPAN)', 'console refresh (--refresh or AIWATCH_CONSOLE_REFRESH; 0: off)')
    """
    option = "" if name in _NO_OPTION else f"--{name} or "
    return f"console {name} ({option}{ENV[name].name}{'; ' + note if note else ''})"
_TEXT = ("prometheus", "match", "gpu_source", "dcgm_utilization", "trace_url")

#: A scrape ``interval`` or a ``refresh`` outside these bounds (a tenth of a second, an hour) is warned of: above,
#: the console's data or view stays an hour or more old (``5000`` meant as milliseconds); below, each URL is scraped
#: (or the view redrawn, querying its source again) more than ten times a second.
SHORT_INTERVAL, LONG_INTERVAL = 0.1, 3600.0
_IMPLAUSIBLE = {
    "interval": ("its /metrics URLs are scraped that often", "the charts get a point that rarely, and a rate needs "
                 "two of them (the default is 5)"),
    "refresh": ("the open view is redrawn that often, querying its source each time", "the open view is redrawn "
                "that rarely (the default is 10; 0 turns redraws off)"),
}


@dataclass(frozen=True)
class ConsoleConfig:
    """Where the console reads from and how often it refreshes.

    - ``prometheus``: Prometheus URL; when set, the console uses :class:`PrometheusSource` and ignores ``scrape``.
    - ``scrape``: ``/metrics`` URLs scraped by the embedded :class:`ScrapeSource` every ``interval`` seconds,
      keeping ``history`` seconds.
    - ``refresh``: seconds between automatic redraws of the open view (0 turns it off).
    - ``window``: the default rate / quantile window in seconds (at least 1 ms: PromQL cannot say less).
    - ``span``: seconds of history the over-time charts draw from Prometheus.
    - ``timeout``: seconds one request to Prometheus (or one scrape) may take.
    - ``aggregation_labels``: the labels Prometheus queries keep apart (clusters, namespaces).
    - ``match``: PromQL matchers added to every Prometheus query (``cluster="eu-1"``).
    - ``gpu_source`` / ``dcgm_utilization``: where the GPU panels read from (:mod:`aiwatch.gpuseries`).
    - ``trace_url``: a link to one trace, ``{trace_id}`` standing for its id (:func:`~aiwatch.console.text.trace_link`);
      empty: trace ids are shown as text.
    - ``http``: headers, credentials, a tenant and TLS for Prometheus and the scraped URLs.
    """

    prometheus: str = _env.CONSOLE_PROMETHEUS.default
    scrape: tuple[str, ...] = (DEFAULT_SCRAPE,)
    interval: float = float(_env.CONSOLE_INTERVAL.default)
    history: float = float(_env.CONSOLE_HISTORY.default)
    refresh: float = float(_env.CONSOLE_REFRESH.default)
    window: float = float(_env.CONSOLE_WINDOW.default)
    span: float = float(_env.CONSOLE_SPAN.default)
    timeout: float = float(_env.CONSOLE_TIMEOUT.default)
    aggregation_labels: tuple[str, ...] = label_list(_env.CONSOLE_AGGREGATION_LABELS.default)
    match: str = _env.CONSOLE_MATCH.default
    gpu_source: str = _env.CONSOLE_GPU_SOURCE.default
    dcgm_utilization: str = _env.CONSOLE_DCGM_UTILIZATION.default
    trace_url: str = _env.CONSOLE_TRACE_URL.default
    http: HTTPConfig = field(default_factory=HTTPConfig)

    def __post_init__(self) -> None:
        for name in ("interval", "history", "window", "span", "timeout"):
            period(getattr(self, name), _setting(name))
        if self.window < MIN_WINDOW:  # it would be the PromQL duration "0ms", which Prometheus refuses
            raise ValueError(f"{ENV['window'].name} must be at least {MIN_WINDOW:g} s (PromQL durations count whole "
                             f"milliseconds), got {self.window:g}")
        if self.refresh != 0:  # NaN passed "< 0", and the view said it redrew every nan s and never did
            period(self.refresh, _setting("refresh", "0: off"))
        for name, (often, rarely) in _IMPLAUSIBLE.items():
            value = getattr(self, name)
            if value == 0:  # refresh off
                continue
            if value < SHORT_INTERVAL:
                warn_implausible(value, _setting(name), below=SHORT_INTERVAL, effect=often)
            else:
                warn_implausible(value, _setting(name), above=LONG_INTERVAL, effect=rarely)
        if not self.prometheus and not self.scrape:
            raise ValueError("the console needs a Prometheus URL or at least one /metrics URL to scrape")
        check_selection(self.match, "console match")
        if self.trace_url:
            check_trace_url(self.trace_url, ENV["trace_url"].name)
        if self.gpu.dcgm and not self.prometheus:
            raise ValueError("the dcgm GPU source needs a Prometheus URL: the embedded scraper reads aiwatch's own "
                             "metrics only")

    @property
    def gpu(self) -> GpuSeries:
        return GpuSeries(self.gpu_source, self.dcgm_utilization)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ConsoleConfig:
        """Read the ``AIWATCH_CONSOLE_*`` and ``AIWATCH_PROMETHEUS_*`` variables (unset ones keep their
        defaults)."""
        return cls(**cls.env_values(env))  # type: ignore[arg-type]

    @staticmethod
    def env_values(env: Mapping[str, str] | None = None) -> dict[str, object]:
        """The fields the variables set, parsed (``ValueError`` naming a variable that is malformed)."""
        kwargs: dict[str, object] = {"http": HTTPConfig.from_env(env)}
        for field_name, var in ENV.items():
            raw = var.raw(env).strip()
            if not raw:
                continue
            if field_name == "match":
                kwargs[field_name] = check_selection(raw, var.name)
            elif field_name in _TEXT:
                kwargs[field_name] = raw
            elif field_name == "scrape":
                kwargs[field_name] = scrape_urls([raw])
            elif field_name == "aggregation_labels":
                kwargs[field_name] = label_list(raw, var.name)
            else:
                try:
                    kwargs[field_name] = float(raw)
                except ValueError:
                    raise ValueError(f"{var.name} must be a number of seconds, got {raw!r}") from None
        return kwargs

    def to_env(self) -> dict[str, str]:
        """The environment variables that :meth:`from_env` reads back into this config."""
        out = {ENV[name].name: str(getattr(self, name)) for name in (*_TEXT, *_SECONDS)}
        out[ENV["scrape"].name] = ",".join(self.scrape)
        out[ENV["aggregation_labels"].name] = ",".join(self.aggregation_labels) or "none"
        out.update(self.http.to_env())
        return out

    def make_source(self) -> DataSource:
        """The data source this config names (a started :class:`ScrapeSource` unless ``prometheus`` is set)."""
        if self.prometheus:
            from aiwatch.console.prometheus import PrometheusSource
            from aiwatch.console.queries import PanelQueries

            return PrometheusSource(self.prometheus, span=self.span, timeout=self.timeout, http=self.http,
                                    queries=PanelQueries(self.aggregation_labels, self.match, self.gpu))
        from aiwatch.console.scrape import ScrapeSource

        return ScrapeSource(self.scrape, interval=self.interval, history=self.history,
                            timeout=min(self.timeout, self.interval), http=self.http)


_SOURCES: dict[ConsoleConfig, DataSource] = {}
_SOURCES_LOCK = threading.Lock()


def shared_source(config: ConsoleConfig) -> DataSource:
    """The source ``config`` names, one per process, made on the first call: every browser session shares it (the
    scrape thread and its history). Streamlit runs the app's script only when a page is viewed, so ``aiwatch
    console`` makes it before the server starts (:mod:`aiwatch.console.streamlit_server`): the scrape history runs
    from the console's start, not from the first page view."""
    with _SOURCES_LOCK:
        source = _SOURCES.get(config)
        if source is None:
            source = _SOURCES[config] = config.make_source()
        return source
