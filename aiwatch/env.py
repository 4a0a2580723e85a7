"""Every environment variable aiwatch reads, with its default and meaning, in one table.

Modules read a variable through its :class:`EnvVar` row (``SERVICE.text()``, ``MAX_LABEL_VALUES.integer()``), never
``os.environ`` directly, so each name and default is written once. An argument given in code always wins over the
variable. docs/configuration.md is generated from :data:`VARIABLES` (``aiwatch env --markdown``).

    >>> MAX_LABEL_VALUES.integer({"AIWATCH_MAX_LABEL_VALUES": "20"}), MAX_LABEL_VALUES.integer({})
    (20, 100)
    >>> service_name({"OTEL_SERVICE_NAME": "ranker"}), service_name({})
    ('ranker', 'app')
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class EnvVar:
    """One environment variable: its name, the default used when it is unset or empty, and what it does."""

    name: str
    default: str
    meaning: str
    #: Whose variable it is: ``aiwatch``, or the library whose standard variable aiwatch honours.
    owner: str = "aiwatch"
    #: A secret (a token, a password): ``aiwatch env`` says whether it is set, never its value.
    secret: bool = False

    def raw(self, env: Mapping[str, str] | None = None) -> str:
        """The value as set in ``env`` (default ``os.environ``); ``""`` when unset. The first read of the process's
        environment warns of the variables that look like a misspelling of one of aiwatch's
        (:func:`warn_misspelled_variables`)."""
        if env is None:
            if not _misspellings_checked:
                warn_misspelled_variables()
            return os.environ.get(self.name, "")
        return env.get(self.name, "")

    def is_set(self, env: Mapping[str, str] | None = None) -> bool:
        """Whether the variable is set, even empty."""
        if env is None and not _misspellings_checked:
            warn_misspelled_variables()
        return self.name in (os.environ if env is None else env)

    def text(self, env: Mapping[str, str] | None = None) -> str:
        """The value, or the default when the variable is unset or empty."""
        return self.raw(env) or self.default

    def integer(self, env: Mapping[str, str] | None = None) -> int:
        value = self.text(env)
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"{self.name} must be an integer, got {value!r}") from None

    def switch(self, env: Mapping[str, str] | None = None) -> bool:
        """``on`` (``true``, ``1``, ``yes``) or ``off`` (``false``, ``0``, ``no``), any case; the default when unset
        or empty; anything else is a ValueError."""
        value = self.text(env).strip().lower()
        if value in ("on", "true", "1", "yes"):
            return True
        if value in ("off", "false", "0", "no"):
            return False
        raise ValueError(f"{self.name} must be on or off, got {self.text(env)!r}")

    def seconds(self, env: Mapping[str, str] | None = None) -> float:
        value = self.text(env)
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"{self.name} must be a number of seconds, got {value!r}") from None


# --- every integration ------------------------------------------------------------------------------------
SERVICE = EnvVar("AIWATCH_SERVICE", "app",
                 "The `service` label of every integration not given `service=` (a client's call made inside an "
                 "aiwatch server request takes that request's service). When unset (or empty), "
                 "`OTEL_SERVICE_NAME` is used if set, else `app`; blanks around the name are dropped, blanks alone are "
                 "an error when an integration is set up.")
OTEL_SERVICE_NAME = EnvVar("OTEL_SERVICE_NAME", "",
                           "OpenTelemetry's service name: aiwatch's `service` label when `AIWATCH_SERVICE` is unset.",
                           owner="OpenTelemetry")
SLOW_THRESHOLD = EnvVar("AIWATCH_SLOW_THRESHOLD_SECONDS", "0.3",
                        "Requests slower than this many seconds count in the slow-request counters "
                        "(`aiwatch_slow_*`), the tail that `aiwatch diagnose` splits by phase. Set it to your latency "
                        "objective (the rules config's `slo.latency_threshold_seconds`). Above 60 (the largest "
                        "bucket of `aiwatch_request_duration_seconds`: `300` meant as milliseconds) it is kept and "
                        "warned of once, as is `slow_threshold=` in code.")
MAX_LABEL_VALUES = EnvVar("AIWATCH_MAX_LABEL_VALUES", "100",
                          "The cardinality guard's bound: distinct values kept per traffic label (`route`, `model`, "
                          "`phase`, `peer`, `feature`, `queue`, `cache`) per registry before new ones fold into "
                          "`__overflow__`, for integrations not given `max_label_values=`.")
TRACING = EnvVar("AIWATCH_TRACING", "on",
                 "`off`, `false`, `0` or `no` turn aiwatch's spans off even when a TracerProvider is given or "
                 "installed (metrics are unaffected); `on`, `true`, `1` or `yes` leave them on; any other value is "
                 "an error when an integration is set up.")
OTEL_SDK_DISABLED = EnvVar("OTEL_SDK_DISABLED", "false",
                           "`true` turns aiwatch's spans off, as it turns OpenTelemetry's SDK off.",
                           owner="OpenTelemetry")
SEMCONV_STABILITY_OPT_IN = EnvVar(
    "OTEL_SEMCONV_STABILITY_OPT_IN", "",
    "Comma-separated: `rpc` gives gRPC spans the stable RPC conventions (`rpc.system.name`, `rpc.method` = "
    "`pkg.Service/Method`, `rpc.response.status_code`, `error.type`) instead of the ones "
    "opentelemetry-instrumentation-grpc emits by default; `rpc/dup` gives them both sets.",
    owner="OpenTelemetry")
HTTP_KNOWN_METHODS = EnvVar(
    "OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS", "",
    "Comma-separated, case-sensitive: the HTTP methods reported as they are in the `method` label and "
    "`http.request.method`, in place of the default ten (RFC 9110's, `PATCH`, `QUERY`) when it lists any; any "
    "other method is `_OTHER`. A full override, as the HTTP conventions define it (list the defaults you keep); "
    "at most 64 methods, each an HTTP token, else the middleware and clients refuse to start (`ValueError`).",
    owner="OpenTelemetry")
_CAPTURE = ("Comma-separated regular expressions (Python `re`, any case), each matched against a whole header name: "
            "the {which} headers put on the {side} spans aiwatch makes, as `http.{kind}.header.<name>` (lowercase, "
            "dashes kept) with the list of values; none by default (headers can hold credentials). A pattern that is "
            "no regular expression is an error naming this variable when the {maker} is made.")
CAPTURE_SERVER_REQUEST_HEADERS = EnvVar(
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", "",
    _CAPTURE.format(which="request", side="SERVER", kind="request", maker="middleware")
    + " Given to the span when it starts, so a sampler sees them.", owner="OpenTelemetry")
CAPTURE_SERVER_RESPONSE_HEADERS = EnvVar(
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE", "",
    _CAPTURE.format(which="response", side="SERVER", kind="response", maker="middleware")
    + " `Server-Timing` too, when it matches: the headers as sent.", owner="OpenTelemetry")
CAPTURE_CLIENT_REQUEST_HEADERS = EnvVar(
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST", "",
    _CAPTURE.format(which="request", side="CLIENT", kind="request", maker="client recorder")
    + " The application's headers, before aiwatch adds the trace context.", owner="OpenTelemetry")
CAPTURE_CLIENT_RESPONSE_HEADERS = EnvVar(
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_RESPONSE", "",
    _CAPTURE.format(which="response", side="CLIENT", kind="response", maker="client recorder"),
    owner="OpenTelemetry")
CAPTURE_HEADERS_SANITIZE_FIELDS = EnvVar(
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS", "",
    "Comma-separated regular expressions (any case), each searched in a captured header's name: the values of the "
    "headers they find are captured as `[REDACTED]` (e.g. `x-user-email,x-forwarded-for`). A header (or gRPC "
    "metadata key) named like a credential is always redacted, this list adds to them: `Authorization`, "
    "`Proxy-Authorization`, `Cookie`, `Set-Cookie`, `X-Api-Key`, `api-key`, and any name with a word `token`, "
    "`secret`, `password`, `key`, `auth`, `session`, `signature`, `credential`, `jwt` or `cookie` "
    "(`X-Auth-Token`, `x-goog-api-key`), except an `Idempotency-Key` and the like (`aiwatch.semconv."
    "is_credential_name`).",
    owner="OpenTelemetry")
CAPTURE_GRPC_SERVER_REQUEST_METADATA = EnvVar(
    "OTEL_INSTRUMENTATION_GRPC_CAPTURE_METADATA_SERVER_REQUEST", "",
    "Comma-separated gRPC metadata keys (regular expressions, each matched against a whole key) whose values the "
    "SERVER spans aiwatch's gRPC server interceptors start carry, as `rpc.grpc.request.metadata.<key>` "
    "(`rpc.request.metadata.<key>` under `OTEL_SEMCONV_STABILITY_OPT_IN=rpc`); the name is the OpenTelemetry Java "
    "agent's. `OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS` redacts here too.",
    owner="OpenTelemetry")
CAPTURE_GRPC_CLIENT_REQUEST_METADATA = EnvVar(
    "OTEL_INSTRUMENTATION_GRPC_CAPTURE_METADATA_CLIENT_REQUEST", "",
    "`OTEL_INSTRUMENTATION_GRPC_CAPTURE_METADATA_SERVER_REQUEST` for the CLIENT spans of aiwatch's gRPC client "
    "interceptors: the keys of the metadata the app sends.", owner="OpenTelemetry")
TRAFFIC_CLASSES = EnvVar("AIWATCH_TRAFFIC_CLASSES", "realtime,batch",
                         "The traffic classes servers tell apart (the `traffic_class` label), comma-separated; the "
                         "first is the default, given to requests that name no class (or one not listed) in their "
                         "`aiwatch-traffic-class` header and match no route rule.")
TRAFFIC_CLASS_ROUTES = EnvVar("AIWATCH_TRAFFIC_CLASS_ROUTES", "",
                              "Route rules `ROUTE=CLASS`, comma-separated (`/v1/bulk/*=batch,/train=batch`): a "
                              "request whose route template matches (exactly, or as a `*` glob) is of that class "
                              "whatever its header says (a Django template, written without the leading slash, "
                              "matches a rule written as its URL path). A comma inside brackets belongs to the route "
                              "(a regex route's `{1,3}`).")
# --- URLs neither timed nor traced (comma-separated regexes, each searched in the request's full URL) --------
EXCLUDED_URLS = EnvVar("AIWATCH_EXCLUDED_URLS", "",
                       "One regular expression (Python `re`, commas allowed): requests whose full URL "
                       "(`scheme://host/path`) it is found in are neither timed nor traced, on top of the "
                       "`OTEL_PYTHON_*_EXCLUDED_URLS` lists.")
OTEL_EXCLUDED_URLS = EnvVar("OTEL_PYTHON_EXCLUDED_URLS", "",
                            "Comma-separated regexes searched in each request's full URL: matching requests are "
                            "neither timed nor traced, for every HTTP server integration without its own variable "
                            "below.", owner="OpenTelemetry")
OTEL_ASGI_EXCLUDED_URLS = EnvVar("OTEL_PYTHON_ASGI_EXCLUDED_URLS", "",
                                 "`OTEL_PYTHON_EXCLUDED_URLS` for a bare ASGI app's `AiwatchMiddleware` "
                                 "(when set, instead of it).", owner="OpenTelemetry")
OTEL_WSGI_EXCLUDED_URLS = EnvVar("OTEL_PYTHON_WSGI_EXCLUDED_URLS", "",
                                 "`OTEL_PYTHON_EXCLUDED_URLS` for a bare WSGI app's `AiwatchWSGIMiddleware` "
                                 "(when set, instead of it).", owner="OpenTelemetry")
OTEL_FASTAPI_EXCLUDED_URLS = EnvVar("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS", "",
                                    "`OTEL_PYTHON_EXCLUDED_URLS` for FastAPI apps given to `aiwatch.instrument` "
                                    "(when set, instead of it).", owner="OpenTelemetry")
OTEL_STARLETTE_EXCLUDED_URLS = EnvVar("OTEL_PYTHON_STARLETTE_EXCLUDED_URLS", "",
                                      "`OTEL_PYTHON_EXCLUDED_URLS` for Starlette apps given to "
                                      "`aiwatch.instrument` (when set, instead of it).", owner="OpenTelemetry")
OTEL_FLASK_EXCLUDED_URLS = EnvVar("OTEL_PYTHON_FLASK_EXCLUDED_URLS", "",
                                  "`OTEL_PYTHON_EXCLUDED_URLS` for Flask apps given to `aiwatch.instrument` "
                                  "(when set, instead of it).", owner="OpenTelemetry")
OTEL_DJANGO_EXCLUDED_URLS = EnvVar("OTEL_PYTHON_DJANGO_EXCLUDED_URLS", "",
                                   "`OTEL_PYTHON_EXCLUDED_URLS` for Django's WSGI or ASGI handler given to "
                                   "`aiwatch.instrument` (when set, instead of it).", owner="OpenTelemetry")
# --- RPCs neither timed nor traced -------------------------------------------------------------------------
GRPC_EXCLUDED_SERVICES = EnvVar("OTEL_PYTHON_GRPC_EXCLUDED_SERVICES", "",
                                "Comma-separated full gRPC service names (`grpc.health.v1.Health`): RPCs to them "
                                "are neither timed nor traced by aiwatch's gRPC server and client interceptors "
                                "(the `excluded_services=` argument replaces this list).", owner="OpenTelemetry")
MULTIPROC_DIR = EnvVar("PROMETHEUS_MULTIPROC_DIR", "",
                       "prometheus_client's multiprocess mode (gunicorn with several workers): when set (before "
                       "prometheus_client is imported), every worker writes its samples there (aiwatch makes the "
                       "directory when it is missing), `/metrics` serves the "
                       "merged view, `aiwatch.gunicorn.on_starting` removes the files a previous run's processes left "
                       "there and `aiwatch.gunicorn.child_exit` drops a dead worker's live gauges and folds its "
                       "other files into the master's archive files (`counter_archive-<pid>.db`...), so the directory "
                       "does not grow with every worker `max_requests` recycles. The old "
                       "lowercase `prometheus_multiproc_dir` is read when this is unset, as prometheus_client does; "
                       "set but empty, or unset while gunicorn runs several workers, is an error `on_starting` logs. "
                       "Set only after prometheus_client was imported (in code, or with gunicorn's `-e` / "
                       "`raw_env`, which gunicorn applies after its config file imported `aiwatch.gunicorn`), every "
                       "process keeps its "
                       "metrics in memory and the merged `/metrics` would be empty: `aiwatch.instrument()` and the "
                       "WSGI middleware refuse it (`ValueError`), as they refuse a path that is a file, not a "
                       "directory, and a directory the process cannot write to (nothing would be recorded); an "
                       "`AiwatchMiddleware` made by hand logs it, and its `/metrics` answers 503 saying why (counted "
                       "under `component=\"metrics\"`).",
                       owner="prometheus_client")
LEGACY_MULTIPROC_DIR = EnvVar("prometheus_multiproc_dir", "",
                              "The old lowercase name of `PROMETHEUS_MULTIPROC_DIR`, which prometheus_client (with a "
                              "DeprecationWarning) and aiwatch still read when that is unset.",
                              owner="prometheus_client")
MULTIPROCESS_DROP_DEAD = EnvVar(
    "AIWATCH_MULTIPROCESS_DROP_DEAD", "on",
    "In multiprocess mode, `/metrics` removes the live gauges' files (what `mark_process_dead` removes) of the pids "
    "no longer running before each merge, for servers that never call it (`uvicorn --workers`, hypercorn), but only "
    "when the process serving it maps its own sample files in the directory writable, as prometheus_client maps its "
    "values (it is one of the directory's writers, read from `/proc/self/maps`: Linux only, elsewhere nothing is "
    "removed); and folds the other sample files of those pids into the archives of its parent (the server's "
    "supervisor), for servers with no exit hook to fold them (gunicorn's `child_exit` does). `off` turns both off: "
    "set it when a process that writes the directory too serves `/metrics` from another pid namespace than the "
    "workers' (a sidecar sharing the volume), where a worker's pid may read as gone. "
    "Anything but `on` or `off` (or `true`, `false`, `1`, `0`, `yes`, `no`) is an error when the `/metrics` app is "
    "made, when `aiwatch.instrument()` instruments an app, and when the WSGI middleware is made.")
# --- signals ----------------------------------------------------------------------------------------------
GPU_POLL_INTERVAL = EnvVar("AIWATCH_GPU_POLL_INTERVAL", "5",
                           "Seconds between two NVML polls of `GpuPoller` / `GpuCollector` not given `interval=`. "
                           "Above 3600 (`5000` meant as milliseconds) it is kept and warned of once, as is "
                           "`interval=` in code.")
EVENT_LOOP_INTERVAL = EnvVar("AIWATCH_EVENT_LOOP_INTERVAL", "0.1",
                             "Seconds between two samples of the event loop's delay "
                             "(`aiwatch_event_loop_delay_seconds`) on each loop an ASGI or grpc.aio server serves "
                             "requests on; `off` turns the sampler off. Anything else that is not a number of seconds "
                             "from 0.001 to 1e9 is an error when the integration is set up. Read by each integration "
                             "when it is made; a loop has one sampler, at the interval of the first integration to "
                             "serve on it: a later one asking for another gets that one, and a warning naming both is "
                             "logged, once per loop. Over 60 s (half the rules' default `latency.loop_stuck_window`, "
                             "which must be at least 2 scrape intervals plus it) a warning is logged: healthy loops "
                             "would read as stuck.")
# --- console (``aiwatch console`` passes its options to the Streamlit app through these) -----------------------
CONSOLE_PROMETHEUS = EnvVar("AIWATCH_CONSOLE_PROMETHEUS", "",
                            "Prometheus URL the console queries; when set, `AIWATCH_CONSOLE_SCRAPE` is ignored.")
CONSOLE_SCRAPE = EnvVar("AIWATCH_CONSOLE_SCRAPE", "http://127.0.0.1:8000/metrics",
                        "`/metrics` URLs (comma or space separated) the console scrapes itself when no Prometheus "
                        "URL is set.")
CONSOLE_INTERVAL = EnvVar("AIWATCH_CONSOLE_INTERVAL", "5",
                          "Seconds between the console's own scrapes. Below 0.1 or above 3600 (`5000` meant as "
                          "milliseconds) it is kept and warned of once, as is `--interval`.")
CONSOLE_HISTORY = EnvVar("AIWATCH_CONSOLE_HISTORY", "1800",
                         "Seconds of scraped history the console keeps (at least 120: the event loop table's stuck "
                         "check reads 2 minutes).")
CONSOLE_REFRESH = EnvVar("AIWATCH_CONSOLE_REFRESH", "10",
                         "Seconds between automatic redraws of the open view (0 turns them off). Below 0.1 or above "
                         "3600 (`10000` meant as milliseconds) it is kept and warned of once, as is `--refresh`.")
CONSOLE_WINDOW = EnvVar("AIWATCH_CONSOLE_WINDOW", "60",
                        "The default rate and quantile window, in seconds (at least 0.001: PromQL durations count "
                        "whole milliseconds).")
CONSOLE_SPAN = EnvVar("AIWATCH_CONSOLE_SPAN", "900",
                      "Seconds of history the over-time charts draw from Prometheus.")
CONSOLE_TIMEOUT = EnvVar("AIWATCH_CONSOLE_TIMEOUT", "5",
                         "Seconds one request to Prometheus may take, its answer read (a panel not answered in time "
                         "says so; the others still draw).")
CONSOLE_AGGREGATION_LABELS = EnvVar(
    "AIWATCH_CONSOLE_AGGREGATION_LABELS", "cluster,namespace",
    "Labels the console's Prometheus queries always keep apart (comma separated; `none` for none): series of "
    "different clusters or namespaces are never summed. Absent labels are harmless.")
CONSOLE_MATCH = EnvVar("AIWATCH_CONSOLE_MATCH", "",
                       "PromQL label matchers added to every console query, e.g. `cluster=\"eu-1\"`: one cluster "
                       "of a Thanos or Mimir holding several.")
CONSOLE_GPU_SOURCE = EnvVar("AIWATCH_CONSOLE_GPU_SOURCE", "aiwatch",
                            "Where the console's GPU panels read from: `aiwatch` (aiwatch's NVML collector) or "
                            "`dcgm` (NVIDIA's dcgm-exporter).")
CONSOLE_DCGM_UTILIZATION = EnvVar("AIWATCH_CONSOLE_DCGM_UTILIZATION", "DCGM_FI_DEV_GPU_UTIL",
                                  "With `dcgm`: the field that is GPU utilization, `DCGM_FI_DEV_GPU_UTIL` or, with "
                                  "profiling metrics on, `DCGM_FI_PROF_SM_ACTIVE`.")
CONSOLE_TRACE_URL = EnvVar("AIWATCH_CONSOLE_TRACE_URL", "",
                           "An http(s) link to one trace, `{trace_id}` standing for its id, e.g. "
                           "`https://tempo.example/trace/{trace_id}`: the Latency view links its slowest traced "
                           "requests there (unset: their trace ids are shown as text).")
# --- reading Prometheus (the console, ``aiwatch diagnose``; also sent to the /metrics URLs they scrape) ------
PROMETHEUS_HEADERS = EnvVar("AIWATCH_PROMETHEUS_HEADERS", "",
                            "Extra headers for every request, `name=value` pairs separated by commas, values "
                            "percent-encoded (as `OTEL_EXPORTER_OTLP_HEADERS`).")
PROMETHEUS_BEARER_TOKEN = EnvVar("AIWATCH_PROMETHEUS_BEARER_TOKEN", "",
                                 "A bearer token sent as `Authorization: Bearer ...`.", secret=True)
PROMETHEUS_BEARER_TOKEN_FILE = EnvVar("AIWATCH_PROMETHEUS_BEARER_TOKEN_FILE", "",
                                      "A file holding the bearer token, read on every request (a rotated token is "
                                      "picked up).")
PROMETHEUS_BASIC_AUTH_USER = EnvVar("AIWATCH_PROMETHEUS_BASIC_AUTH_USER", "", "The basic-auth username.")
PROMETHEUS_BASIC_AUTH_PASSWORD = EnvVar("AIWATCH_PROMETHEUS_BASIC_AUTH_PASSWORD", "", "The basic-auth password.",
                                        secret=True)
PROMETHEUS_BASIC_AUTH_PASSWORD_FILE = EnvVar("AIWATCH_PROMETHEUS_BASIC_AUTH_PASSWORD_FILE", "",
                                             "A file holding the basic-auth password, read on every request.")
PROMETHEUS_TENANT = EnvVar("AIWATCH_PROMETHEUS_TENANT", "",
                           "The tenant, sent as `X-Scope-OrgID` (Mimir, Cortex).")
PROMETHEUS_CA_FILE = EnvVar("AIWATCH_PROMETHEUS_CA_FILE", "",
                            "A PEM bundle of the CAs that verify the server's certificate (default: the system's).")
PROMETHEUS_CERT_FILE = EnvVar("AIWATCH_PROMETHEUS_CERT_FILE", "",
                              "A PEM client certificate (mutual TLS); its key too unless "
                              "`AIWATCH_PROMETHEUS_KEY_FILE` is set.")
PROMETHEUS_KEY_FILE = EnvVar("AIWATCH_PROMETHEUS_KEY_FILE", "", "The client certificate's PEM key.")

VARIABLES: tuple[EnvVar, ...] = (
    SERVICE, OTEL_SERVICE_NAME, SLOW_THRESHOLD, MAX_LABEL_VALUES, TRAFFIC_CLASSES, TRAFFIC_CLASS_ROUTES, TRACING,
    OTEL_SDK_DISABLED, HTTP_KNOWN_METHODS, CAPTURE_SERVER_REQUEST_HEADERS, CAPTURE_SERVER_RESPONSE_HEADERS,
    CAPTURE_CLIENT_REQUEST_HEADERS, CAPTURE_CLIENT_RESPONSE_HEADERS, CAPTURE_HEADERS_SANITIZE_FIELDS,
    CAPTURE_GRPC_SERVER_REQUEST_METADATA, CAPTURE_GRPC_CLIENT_REQUEST_METADATA,
    SEMCONV_STABILITY_OPT_IN, EXCLUDED_URLS, OTEL_EXCLUDED_URLS, OTEL_ASGI_EXCLUDED_URLS, OTEL_WSGI_EXCLUDED_URLS,
    OTEL_FASTAPI_EXCLUDED_URLS, OTEL_STARLETTE_EXCLUDED_URLS, OTEL_FLASK_EXCLUDED_URLS, OTEL_DJANGO_EXCLUDED_URLS,
    GRPC_EXCLUDED_SERVICES, MULTIPROC_DIR, LEGACY_MULTIPROC_DIR, MULTIPROCESS_DROP_DEAD,
    GPU_POLL_INTERVAL, EVENT_LOOP_INTERVAL,
    CONSOLE_PROMETHEUS, CONSOLE_SCRAPE, CONSOLE_INTERVAL, CONSOLE_HISTORY, CONSOLE_REFRESH, CONSOLE_WINDOW,
    CONSOLE_SPAN, CONSOLE_TIMEOUT, CONSOLE_AGGREGATION_LABELS, CONSOLE_MATCH, CONSOLE_GPU_SOURCE,
    CONSOLE_DCGM_UTILIZATION, CONSOLE_TRACE_URL,
    PROMETHEUS_HEADERS, PROMETHEUS_BEARER_TOKEN, PROMETHEUS_BEARER_TOKEN_FILE, PROMETHEUS_BASIC_AUTH_USER,
    PROMETHEUS_BASIC_AUTH_PASSWORD, PROMETHEUS_BASIC_AUTH_PASSWORD_FILE, PROMETHEUS_TENANT, PROMETHEUS_CA_FILE,
    PROMETHEUS_CERT_FILE, PROMETHEUS_KEY_FILE,
)


PREFIX = "AIWATCH_"
#: How alike (difflib's ratio of the names after ``AIWATCH_``) an unknown name must be to a known one to be taken
#: for its misspelling: ``SLOW_THRESOLD`` / ``SLOW_THRESHOLD_SECONDS`` 0.74, ``CONSOLE_PROMETHEUS_URL`` /
#: ``CONSOLE_PROMETHEUS`` 0.90; an app's own ``AIWATCH_GPU_PORT`` or ``AIWATCH_REDIS_URL`` stays under (0.56, 0.55).
SIMILAR = 0.7
_misspellings_checked = False


def closest_variable(name: str) -> str | None:
    """The name of aiwatch's variable that ``name`` (one aiwatch does not read) most likely misspells, or ``None``.

        >>> closest_variable("AIWATCH_SLOW_THRESOLD"), closest_variable("aiwatch_service")
        ('AIWATCH_SLOW_THRESHOLD_SECONDS', 'AIWATCH_SERVICE')
        >>> closest_variable("AIWATCH_REDIS_URL") is None
        True
    """
    known = {var.name[len(PREFIX):]: var.name for var in VARIABLES if var.name.startswith(PREFIX)}
    upper = name.upper()
    if not upper.startswith(PREFIX):
        return None
    suffix = upper[len(PREFIX):]
    if suffix in known:  # the right name in the wrong case: the environment's names are case-sensitive
        return known[suffix]
    close = difflib.get_close_matches(suffix, known, n=1, cutoff=SIMILAR)
    return known[close[0]] if close else None


def unknown_variables(env: Mapping[str, str] | None = None) -> list[tuple[str, str | None]]:
    """The variables set in ``env`` (default ``os.environ``) named ``AIWATCH_...`` (any case) that aiwatch does not
    read, sorted, each with :func:`closest_variable`: a misspelled one is ignored, and its setting with it."""
    known = {var.name for var in VARIABLES}
    names = (os.environ if env is None else env).keys()
    return [(name, closest_variable(name)) for name in sorted(names)
            if name.upper().startswith(PREFIX) and name not in known]


def misspelled_variables(env: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """:func:`unknown_variables` that are close to one of aiwatch's names; an app's own ``AIWATCH_...`` variables
    (``AIWATCH_REDIS_URL``) are not."""
    return [(name, like) for name, like in unknown_variables(env) if like is not None]


def warn_misspelled_variables() -> None:
    """Log once per process a warning naming each variable of :func:`misspelled_variables` and the one it is
    probably meant to be: a typo'd ``AIWATCH_SLOW_THRESOLD=1`` left the slow threshold at its default, silently."""
    global _misspellings_checked
    _misspellings_checked = True
    try:
        found = misspelled_variables()
    except Exception:  # never fail a read of a variable over a warning
        return
    if found:
        logging.getLogger("aiwatch").warning(
            "aiwatch ignores %s: no variable it reads (`aiwatch env` lists them)",
            ", ".join(f"{name} (did you mean {like}?)" for name, like in found))


def service_name(env: Mapping[str, str] | None = None) -> str:
    """The default ``service`` label: ``$AIWATCH_SERVICE``, else ``$OTEL_SERVICE_NAME``, else ``app`` (an empty
    variable counts as unset), without blanks around it; a variable of blanks alone is a ValueError naming it.

        >>> service_name({"AIWATCH_SERVICE": "  "})
        Traceback (most recent call last):
        ...
        ValueError: AIWATCH_SERVICE must name the service, got '  ' (unset it for the default)
    """
    for variable in (SERVICE, OTEL_SERVICE_NAME):
        value = variable.raw(env)
        if value and not value.strip():
            # a label of blanks matches no service="..." of a rule or a dashboard
            raise ValueError(f"{variable.name} must name the service, got {value!r} (unset it for the default)")
        if value:
            # "ranker " (a quoted YAML value, a .env line) labelled service="ranker ", which no rule matches
            return value.strip()
    return SERVICE.default


def service_label(service: str | None, env: Mapping[str, str] | None = None) -> str:
    """The ``service`` label of an integration given ``service`` (``None`` or ``""``: :func:`service_name`), checked
    as the variables are: without blanks around it, blanks alone a ValueError (``service="  "`` labelled every
    series ``service="  "``, which no rule or dashboard matches, where ``AIWATCH_SERVICE="  "`` was refused).

        >>> service_label(" ranker "), service_label(None, {"AIWATCH_SERVICE": "ranker"})
        ('ranker', 'ranker')
    """
    if service is None or service == "":
        return service_name(env)
    if not isinstance(service, str):
        raise TypeError(f"service must be a str, got {service!r}")
    if not service.strip():
        raise ValueError(f"service must name the service, got {service!r}")
    return service.strip()


def named_variable(name: str, env: Mapping[str, str] | None = None) -> str:
    """The value of an environment variable the user named (``--bearer-token-env NAME``), not one of the table's;
    ``""`` when unset."""
    return (os.environ if env is None else env).get(name, "")


#: The OpenTelemetry instrumentation names whose ``OTEL_PYTHON_{NAME}_EXCLUDED_URLS`` aiwatch honours.
_EXCLUDED_URLS_BY_INSTRUMENTATION = {
    "ASGI": OTEL_ASGI_EXCLUDED_URLS, "WSGI": OTEL_WSGI_EXCLUDED_URLS, "FASTAPI": OTEL_FASTAPI_EXCLUDED_URLS,
    "STARLETTE": OTEL_STARLETTE_EXCLUDED_URLS, "FLASK": OTEL_FLASK_EXCLUDED_URLS,
    "DJANGO": OTEL_DJANGO_EXCLUDED_URLS,
}


def otel_excluded_urls(instrumentation: str, env: Mapping[str, str] | None = None) -> str:
    """OpenTelemetry's excluded-URL list for ``instrumentation`` (``ASGI``, ``WSGI``, ``FASTAPI``, ``STARLETTE``,
    ``FLASK``, ``DJANGO``): its own ``OTEL_PYTHON_{NAME}_EXCLUDED_URLS`` when set, else
    ``OTEL_PYTHON_EXCLUDED_URLS``, as ``opentelemetry.util.http.get_excluded_urls`` reads them.

        >>> otel_excluded_urls("ASGI", {"OTEL_PYTHON_EXCLUDED_URLS": "a", "OTEL_PYTHON_ASGI_EXCLUDED_URLS": "b"})
        'b'
        >>> otel_excluded_urls("FLASK", {"OTEL_PYTHON_EXCLUDED_URLS": "a", "OTEL_PYTHON_ASGI_EXCLUDED_URLS": "b"})
        'a'
    """
    return otel_excluded_urls_variable(instrumentation, env).raw(env)


def otel_excluded_urls_variable(instrumentation: str, env: Mapping[str, str] | None = None) -> EnvVar:
    """The variable :func:`otel_excluded_urls` reads for ``instrumentation``: its own when set, else
    ``OTEL_PYTHON_EXCLUDED_URLS``."""
    own = _EXCLUDED_URLS_BY_INSTRUMENTATION[instrumentation]
    return own if own.raw(env) else OTEL_EXCLUDED_URLS
