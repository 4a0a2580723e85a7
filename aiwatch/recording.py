"""Where every integration gets its recorder: the one factory, and the options all integrations share.

Server side (ASGI and WSGI middleware, ``aiwatch.instrument``, gRPC server interceptors and their instrumentor) a
:class:`~aiwatch.timing.RequestRecorder` from :func:`make_recorder`; client side (httpx, requests, gRPC client
interceptors and their instrumentor) a :class:`~aiwatch.client.ClientRecorder` from :func:`make_client_recorder`.
Each integration passes its recorder options through :func:`resolve_recorder` or :func:`resolve_client_recorder`,
so they mean the same everywhere: :data:`OPTIONS` lists them (docs/configuration.md is generated from it).

A recorder takes its label guard from :func:`aiwatch.cardinality.guard_for`, its default service from
:func:`aiwatch.env.service_name` and its tracer from :class:`aiwatch.tracing.TracerSource`: each is decided there
and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from prometheus_client import CollectorRegistry

from aiwatch.cardinality import guard_for
from aiwatch.client import ClientRecorder
from aiwatch.client._core import MARKUP_TEXT, MAX_REPORTED_NAME, NAMES_PER_ADDRESS
from aiwatch.metrics import Metrics, get_metrics
from aiwatch.timing import RequestRecorder
from aiwatch.traffic import TrafficClasses

R = TypeVar("R")


@dataclass(frozen=True)
class RecorderOption:
    """One option every integration of a ``side`` accepts: ``server``, ``client`` or ``both``."""

    name: str
    default: str
    meaning: str
    side: Literal["server", "client", "both"] = "both"


OPTIONS: tuple[RecorderOption, ...] = (
    RecorderOption("recorder", "a new one, from the options below",
                   "An existing recorder to record into instead of the options below (passing both is a "
                   "`TypeError`). Integrations given the same recorder share its service, label guard and tracer: "
                   "`aiwatch.make_recorder(...)` for servers, `aiwatch.make_client_recorder(...)` for clients."),
    RecorderOption("service", "`$AIWATCH_SERVICE`, else `$OTEL_SERVICE_NAME`, else `app`; a client's call made "
                   "inside an aiwatch server request: that request's service",
                   "The `service` label (on the client side, the calling service's: a client not given one labels "
                   "a call with the service of the request it is made in, as the call graph needs, and only a call "
                   "outside any request with the default). Blanks around it are dropped; blanks alone are a "
                   "`ValueError`, as in the variables."),
    RecorderOption("registry", "prometheus_client's global registry",
                   "The `CollectorRegistry` the metrics go to (a fresh one in tests)."),
    RecorderOption("metrics", "the registry's `Metrics`",
                   "An `aiwatch.Metrics` to record into; wins over `registry`."),
    RecorderOption("max_label_values", "`$AIWATCH_MAX_LABEL_VALUES`, else 100",
                   "The cardinality guard's bound: distinct values kept per traffic label (`route`, `model`, "
                   "`phase`, `peer`, ...); later new values fold into `__overflow__`, counted in "
                   "`aiwatch_label_overflow_total`. One guard serves the whole registry: when integrations on one "
                   "registry pass different values, the largest wins ([limits.md](limits.md))."),
    RecorderOption("tracer_provider", "the global provider, if an SDK provider is installed",
                   "The OpenTelemetry TracerProvider of the SERVER span per request and its phase spans (clients: "
                   "a CLIENT span per call). A span OpenTelemetry's own instrumentation already opened for the "
                   "request or call is used instead of a second one."),
    RecorderOption("model", '`""`', "The default `model` label of the phases (per request: `aiwatch.set_model`, "
                   "per phase: `aiwatch.phase(name, model=)`).", "server"),
    RecorderOption("model_version", '`""`', "The default `model_version` label of the phases of the default model "
                   "(per request: `aiwatch.set_model(model, version)`).", "server"),
    RecorderOption("traffic_classes", "`$AIWATCH_TRAFFIC_CLASSES` and `$AIWATCH_TRAFFIC_CLASS_ROUTES`, else "
                   "`realtime` (the default) and `batch`, no route rules",
                   "An `aiwatch.TrafficClasses`: the classes of the `traffic_class` label, the route rules that "
                   "set it and the request header that names it (`aiwatch-traffic-class`; see "
                   "[http.md](http.md#traffic-classes-real-time-and-batch)).", "server"),
    RecorderOption("slow_threshold", "`$AIWATCH_SLOW_THRESHOLD_SECONDS`, else 0.3",
                   "Seconds above which a request counts as slow in the `aiwatch_slow_*` counters (the tail that "
                   "`aiwatch diagnose` splits by phase): your latency objective. A number above 0 and at most 1e9; "
                   "anything else is a `ValueError`.", "server"),
    RecorderOption("peer", "the service name the peer reports (aiwatch servers send it in Server-Timing / the "
                   f"`server-timing` trailer; printable text of at most {MAX_REPORTED_NAME} characters without "
                   f"`{MARKUP_TEXT}`, at most {NAMES_PER_ADDRESS} names per address), else each call's `host:port` "
                   "(HTTP), the channel's target, else `unknown` (gRPC)",
                   "A fixed `peer` label, instead of the name the peer reports: pass it when the peer is not "
                   "trusted to name itself. The gRPC client interceptors take it next to `recorder` (one recorder "
                   "can serve channels to several peers).", "client"),
    RecorderOption("route_resolver", "none: calls that name no route are `__unmatched__`",
                   "`(method, url) -> route template or None` for HTTP calls that name no route.", "client"),
)
"""The recorder options, the same for every integration (docs/configuration.md, "Recorder options")."""

#: The server-side recorder options (what :func:`make_recorder` takes).
RECORDER_OPTIONS = frozenset(o.name for o in OPTIONS if o.side != "client" and o.name != "recorder")
#: The client-side recorder options (what :func:`make_client_recorder` takes).
CLIENT_RECORDER_OPTIONS = frozenset(o.name for o in OPTIONS if o.side != "server" and o.name != "recorder")


def make_recorder(*, service: str | None = None, model: str = "", registry: CollectorRegistry | None = None,
                  metrics: Metrics | None = None, tracer_provider: Any = None,
                  max_label_values: int | None = None, slow_threshold: float | None = None,
                  model_version: str = "", traffic_classes: TrafficClasses | None = None) -> RequestRecorder:
    """A server-side recorder for the recorder options (:data:`OPTIONS`)."""
    m = metrics if metrics is not None else get_metrics(registry)
    return RequestRecorder(m, service, model, guard_for(m, max_label_values), tracer_provider, slow_threshold,
                           model_version, traffic_classes)


def make_client_recorder(*, service: str | None = None, peer: str | None = None,
                         registry: CollectorRegistry | None = None, metrics: Metrics | None = None,
                         tracer_provider: Any = None, max_label_values: int | None = None,
                         route_resolver: Callable[[str, str], str | None] | None = None) -> ClientRecorder:
    """A client-side recorder for the recorder options, plus ``peer`` (a fixed ``peer`` label) and
    ``route_resolver`` (``(method, url) -> route template``, for HTTP calls that name none)."""
    return ClientRecorder(service=service, peer=peer, registry=registry, metrics=metrics,
                          tracer_provider=tracer_provider, route_resolver=route_resolver,
                          max_label_values=max_label_values)


def resolve_recorder(recorder: RequestRecorder | None, options: Mapping[str, Any]) -> RequestRecorder:
    """``recorder`` if given (then none of the recorder ``options`` may be set as well), else
    :func:`make_recorder` of ``options``."""
    return _resolve(recorder, options, make_recorder)


def resolve_client_recorder(recorder: ClientRecorder | None, options: Mapping[str, Any]) -> ClientRecorder:
    """:func:`resolve_recorder` for the client side (:func:`make_client_recorder`)."""
    return _resolve(recorder, options, make_client_recorder)


def _resolve(recorder: R | None, options: Mapping[str, Any], make: Callable[..., R]) -> R:
    if recorder is None:
        return make(**options)
    given = sorted(k for k, v in options.items() if v not in (None, ""))
    if given:
        raise TypeError(f"pass either recorder= or the recorder options, not both (got {', '.join(given)})")
    return recorder
