"""Environment variables: read in one table (aiwatch/env.py), every reader goes through it and honours it, and
docs/configuration.md is what ``aiwatch env --markdown`` generates."""

from __future__ import annotations

import ast
import atexit
import base64
import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from aiwatch import env
from aiwatch.commands.env import markdown
from tests.servers import REPO, python_env
from tests.sourcecode import parse


def test_docs_configuration_md_matches_the_code() -> None:
    doc = (REPO / "docs" / "configuration.md").read_text()
    assert doc == markdown(), "docs/configuration.md is stale: run `python -m aiwatch env --markdown > " \
                              "docs/configuration.md`"


def test_every_variable_and_recorder_option_has_a_row() -> None:
    from aiwatch.recording import OPTIONS

    text = markdown()
    for var in env.VARIABLES:
        assert f"| `{var.name}` |" in text
    for option in OPTIONS:
        assert f"| `{option.name}` | {option.side} |" in text


def test_cli_prints_the_same_markdown() -> None:
    out = subprocess.run([sys.executable, "-m", "aiwatch", "env", "--markdown"], capture_output=True, text=True,
                         env=python_env(), check=True, cwd=REPO).stdout
    assert out == markdown()


def test_cli_shows_the_values_set() -> None:
    out = subprocess.run([sys.executable, "-m", "aiwatch", "env"], capture_output=True, text=True, check=True,
                         env=python_env(AIWATCH_SERVICE="ranker", AIWATCH_MAX_LABEL_VALUES=""), cwd=REPO).stdout
    assert re.search(r"^AIWATCH_SERVICE +'ranker'$", out, re.M)
    assert re.search(r"^AIWATCH_MAX_LABEL_VALUES +\(unset: '100'\)$", out, re.M)


@pytest.mark.parametrize("name", ["PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir"])
def test_cli_shows_a_multiprocess_directory_set_but_empty_as_set(name: str) -> None:
    # set but empty, prometheus_client runs in multiprocess mode (aiwatch.gunicorn.on_starting logs it as an
    # error), but aiwatch env showed it "(unset)", as if multiprocess mode were off
    env = python_env(**{name: ""})
    env.pop("PROMETHEUS_MULTIPROC_DIR" if name != "PROMETHEUS_MULTIPROC_DIR" else "prometheus_multiproc_dir", None)
    out = subprocess.run([sys.executable, "-m", "aiwatch", "env"], capture_output=True, text=True, check=True,
                         env=env, cwd=REPO).stdout
    assert re.search(rf"^{name} +'' \(set but empty: prometheus_client is in multiprocess mode", out, re.M), out


def test_cli_shows_the_names_of_the_extra_headers_not_their_values() -> None:
    # header values are credentials as often as not (Authorization=Basic ..., an API key): HTTPConfig's repr and
    # every message name the headers only, and so does aiwatch env
    out = subprocess.run([sys.executable, "-m", "aiwatch", "env"], capture_output=True, text=True, check=True,
                         env=python_env(AIWATCH_PROMETHEUS_HEADERS="Authorization=Basic%20czNjcmV0, X-Api-Key=k3y,"),
                         cwd=REPO).stdout
    assert "czNjcmV0" not in out and "k3y" not in out
    assert re.search(r"^AIWATCH_PROMETHEUS_HEADERS +\(set: Authorization, X-Api-Key; values not shown\)$", out, re.M)


def test_cli_shows_urls_without_their_credentials() -> None:
    # refused where they are used, such URLs were still printed whole by aiwatch env
    out = subprocess.run([sys.executable, "-m", "aiwatch", "env"], capture_output=True, text=True, check=True,
                         env=python_env(AIWATCH_CONSOLE_PROMETHEUS="http://ops:pa55word@prom:9090",
                                        AIWATCH_CONSOLE_SCRAPE="http://a:8000/metrics,http://ops:pa55word@b/m"),
                         cwd=REPO).stdout
    assert "pa55word" not in out
    assert re.search(r"^AIWATCH_CONSOLE_PROMETHEUS +'http://REDACTED:REDACTED@prom:9090'$", out, re.M)
    assert re.search(r"^AIWATCH_CONSOLE_SCRAPE +'http://a:8000/metrics,http://REDACTED:REDACTED@b/m'$", out, re.M)


def test_cli_shows_nothing_of_malformed_extra_headers() -> None:
    # "Authorization: Basic ..." has no "=": read as a name, the whole header, credential included, was shown
    out = subprocess.run([sys.executable, "-m", "aiwatch", "env"], capture_output=True, text=True, check=True,
                         env=python_env(AIWATCH_PROMETHEUS_HEADERS="Authorization: Basic czNjcmV0"), cwd=REPO).stdout
    assert "czNjcmV0" not in out
    assert re.search(r"^AIWATCH_PROMETHEUS_HEADERS +\(set, malformed: each header is written name=value; not shown\)$",
                     out, re.M)


def _environment_reads() -> set[str]:
    """``file:line`` of every use of ``os.environ`` / ``os.getenv`` in aiwatch/ other than copying the whole
    environment for a child process (``dict(os.environ)``)."""
    found = set()
    for path in sorted((REPO / "aiwatch").rglob("*.py")):
        tree = parse(path)
        copies = {id(node.args[0]) for node in ast.walk(tree)
                  if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict"
                  and len(node.args) == 1}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr in ("environ", "environb", "getenv")
                    and isinstance(node.value, ast.Name) and node.value.id == "os" and id(node) not in copies):
                found.add(f"{path.relative_to(REPO).as_posix()}:{node.lineno}")
    return found


def test_only_the_env_table_reads_the_environment() -> None:
    reads = _environment_reads()
    assert {r.split(":")[0] for r in reads} == {"aiwatch/env.py"}  # found there: the scan works


_VARIABLE_NAME = re.compile(r"(AIWATCH|OTEL|PROMETHEUS)_[A-Z0-9_]+")


def test_variable_names_are_written_only_in_the_table() -> None:
    outside = set()
    for path in sorted((REPO / "aiwatch").rglob("*.py")):
        if path.name == "env.py" and path.parent.name == "aiwatch":
            continue
        tree = parse(path)
        exported = {id(name) for node in ast.walk(tree) if isinstance(node, ast.Assign)
                    and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
                    for name in ast.walk(node.value)}  # names of the module's API (PROMETHEUS_RULE_FILE), no variable
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in exported
                    and _VARIABLE_NAME.fullmatch(node.value)):
                outside.add(f"{path.relative_to(REPO).as_posix()}: {node.value}")
    assert not outside


def _gpu_interval() -> float:
    from aiwatch.signals.gpu import GpuPoller

    return GpuPoller(nvml=types.SimpleNamespace()).interval


def _traffic_classes() -> str:
    from aiwatch.traffic import TrafficClasses

    return ",".join(TrafficClasses().classes)


def _traffic_route_class() -> str:
    from aiwatch.traffic import TrafficClasses

    return TrafficClasses().for_route("/v1/bulk/embed", "realtime")


def _console(field: str) -> Callable[[], Any]:
    def read() -> Any:
        from aiwatch.console.config import ConsoleConfig

        return getattr(ConsoleConfig.from_env(), field)

    return read


def _recorder_service() -> str:
    from prometheus_client import CollectorRegistry

    from aiwatch.recording import make_recorder

    return make_recorder(registry=CollectorRegistry()).service


def _slow_threshold() -> float:
    from prometheus_client import CollectorRegistry

    from aiwatch.recording import make_recorder

    return make_recorder(registry=CollectorRegistry()).slow_threshold


def _loop_interval() -> float | None:
    from prometheus_client import CollectorRegistry

    from aiwatch.recording import make_recorder

    return make_recorder(registry=CollectorRegistry()).loop_interval


def _max_label_values() -> int:
    from aiwatch.cardinality import LabelGuard

    return LabelGuard().max_values


def _traces() -> bool:
    from aiwatch.tracing import TracerSource

    return TracerSource(TracerProvider()).tracer() is not None


def _multiprocess() -> bool:
    from aiwatch.exposition import multiprocess_enabled

    return multiprocess_enabled()


def _drop_dead() -> bool:
    from aiwatch.exposition import drop_dead_enabled

    return drop_dead_enabled()


def _rpc_conventions() -> tuple[bool, bool]:
    from aiwatch.semconv import rpc_conventions

    conventions = rpc_conventions()
    return conventions.old, conventions.new


_HEADERS = [("X-Tenant", "a"), ("X-Key", "s3cr3t")]


def _server_captures(side: str) -> list[str]:
    """The header attributes a middleware made now puts on its SERVER spans' ``side`` (request, response)."""
    from prometheus_client import CollectorRegistry

    from aiwatch.middleware.asgi import AiwatchMiddleware

    capture = AiwatchMiddleware(lambda *a: None, registry=CollectorRegistry()).header_capture  # type: ignore[arg-type]
    return sorted(getattr(capture, f"{side}_attributes")(_HEADERS))


def _client_captures(side: str) -> list[str]:
    from prometheus_client import CollectorRegistry

    from aiwatch.client import ClientRecorder

    return sorted(getattr(ClientRecorder(registry=CollectorRegistry()).header_capture, f"{side}_attributes")(_HEADERS))


def _grpc_captures(side: str) -> list[str]:
    """The span attributes the gRPC ``side``'s interceptor captures from metadata with X-Key and X-Tenant (where
    grpcio is installed: the lowest-versions run has no grpc extra, and reads the capture the interceptor makes)."""
    from prometheus_client import CollectorRegistry

    from aiwatch.metadatacapture import MetadataCapture
    from aiwatch.semconv import rpc_conventions

    try:
        from aiwatch.grpc import grpc_client_interceptor, grpc_server_interceptor
    except ImportError:
        make = MetadataCapture.server if side == "server" else MetadataCapture.client
        capture = make(rpc_conventions())
    else:
        interceptor = grpc_server_interceptor if side == "server" else grpc_client_interceptor
        capture = interceptor(service="svc", registry=CollectorRegistry())._core.metadata_capture
    return [] if capture is None else sorted(capture.attributes([("x-key", "s3cr3t"), ("x-tenant", "a")]))


def _x_tenant_captured_as() -> list[str]:
    """The value X-Tenant (no credential: X-Key is one, always redacted) is captured with when the server captures
    it (the request list given here)."""
    from aiwatch.headercapture import HeaderCapture

    capture = HeaderCapture.server({**os.environ,
                                    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST": "x-tenant"})
    return capture.request_attributes(_HEADERS)["http.request.header.x-tenant"]


def _propfind_is_known() -> bool:
    """Whether a middleware made now labels PROPFIND as it is (it is outside the default methods)."""
    from prometheus_client import CollectorRegistry

    from aiwatch.middleware.asgi import AiwatchMiddleware

    return "PROPFIND" in AiwatchMiddleware(lambda *a: None, registry=CollectorRegistry()).known_methods  # type: ignore[arg-type]


def _excludes(instrumentation: str) -> Callable[[], bool]:
    def read() -> bool:
        from aiwatch.exclusion import ExcludedUrls

        return ExcludedUrls.from_env(instrumentation).excludes("http://svc:8000/healthz")

    return read


def _grpc_excludes_health() -> bool:
    """Whether the gRPC interceptors' default rule leaves the health service alone (read without grpcio, which the
    lowest-versions run does not install)."""
    from aiwatch.exclusion import ExcludedServices

    return ExcludedServices.resolve(None).excludes("/grpc.health.v1.Health/Check")


def _console_on_prometheus(field: str) -> Callable[[], Any]:
    """A console field that needs a Prometheus URL (the dcgm GPU source)."""
    def read() -> Any:
        from aiwatch.console.config import ConsoleConfig

        return getattr(ConsoleConfig(**{**ConsoleConfig.env_values(), "prometheus": "http://prom:9090"}), field)

    return read


_FILES = Path(tempfile.mkdtemp(prefix="aiwatch-test-env-"))
atexit.register(shutil.rmtree, _FILES, True)
(_FILES / "token").write_text("from-file\n")
(_FILES / "password").write_text("pw-from-file\n")


def _http_header(name: str, **env: str) -> Callable[[], Any]:
    """The ``name`` header HTTPConfig.from_env sends (``env``: variables set for the read too)."""
    def read() -> Any:
        from aiwatch.httpconfig import HTTPConfig

        return HTTPConfig.from_env({**os.environ, **env}).request_headers().get(name)

    return read


@functools.lru_cache(maxsize=1)
def _certificates() -> Any:
    from tests.tls import make_certificates

    return make_certificates(_FILES)


def _tls_context() -> bool:
    from aiwatch.httpconfig import HTTPConfig

    _certificates()
    return HTTPConfig.from_env().ssl_context is not None


def _client_key() -> str:
    from aiwatch.httpconfig import HTTPConfig

    try:
        HTTPConfig.from_env({**os.environ, "AIWATCH_PROMETHEUS_CERT_FILE": str(_certificates().client_cert)})
    except ValueError:
        return "certificate without its key"
    return "certificate and key"


def _basic(credentials: str) -> str:
    return "Basic " + base64.b64encode(credentials.encode()).decode()


# variable -> (what reads it, what it returns with the variable unset, a value to set, what it returns then)
READERS: dict[str, tuple[Callable[[], Any], Any, str, Any]] = {
    "AIWATCH_SERVICE": (_recorder_service, "app", "ranker", "ranker"),
    "OTEL_SERVICE_NAME": (_recorder_service, "app", "otel-ranker", "otel-ranker"),
    "AIWATCH_SLOW_THRESHOLD_SECONDS": (_slow_threshold, 0.3, "0.05", 0.05),
    "AIWATCH_MAX_LABEL_VALUES": (_max_label_values, 100, "7", 7),
    "AIWATCH_TRACING": (_traces, True, "off", False),
    "OTEL_SDK_DISABLED": (_traces, True, "true", False),
    "PROMETHEUS_MULTIPROC_DIR": (_multiprocess, False, "/tmp/aiwatch-multiproc", True),
    "prometheus_multiproc_dir": (_multiprocess, False, "/tmp/aiwatch-multiproc", True),
    "AIWATCH_MULTIPROCESS_DROP_DEAD": (_drop_dead, True, "off", False),
    "OTEL_SEMCONV_STABILITY_OPT_IN": (_rpc_conventions, (True, False), "http,rpc", (False, True)),
    "OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS": (_propfind_is_known, False, "GET,PROPFIND", True),
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST": (
        lambda: _server_captures("request"), [], "x-tenant", ["http.request.header.x-tenant"]),
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE": (
        lambda: _server_captures("response"), [], "X-.*", ["http.response.header.x-key",
                                                           "http.response.header.x-tenant"]),
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST": (
        lambda: _client_captures("request"), [], "x-key", ["http.request.header.x-key"]),
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_RESPONSE": (
        lambda: _client_captures("response"), [], "x-tenant", ["http.response.header.x-tenant"]),
    "OTEL_INSTRUMENTATION_GRPC_CAPTURE_METADATA_SERVER_REQUEST": (
        lambda: _grpc_captures("server"), [], "x-key", ["rpc.grpc.request.metadata.x-key"]),
    "OTEL_INSTRUMENTATION_GRPC_CAPTURE_METADATA_CLIENT_REQUEST": (
        lambda: _grpc_captures("client"), [], "x-tenant", ["rpc.grpc.request.metadata.x-tenant"]),
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS": (_x_tenant_captured_as, ["a"], "tenant",
                                                                  ["[REDACTED]"]),
    "AIWATCH_EXCLUDED_URLS": (_excludes("ASGI"), False, r"/health[z]{1,3}$", True),
    "OTEL_PYTHON_EXCLUDED_URLS": (_excludes("WSGI"), False, "nothing,healthz", True),
    "OTEL_PYTHON_ASGI_EXCLUDED_URLS": (_excludes("ASGI"), False, "healthz", True),
    "OTEL_PYTHON_WSGI_EXCLUDED_URLS": (_excludes("WSGI"), False, "healthz", True),
    "OTEL_PYTHON_FASTAPI_EXCLUDED_URLS": (_excludes("FASTAPI"), False, "healthz", True),
    "OTEL_PYTHON_STARLETTE_EXCLUDED_URLS": (_excludes("STARLETTE"), False, "healthz", True),
    "OTEL_PYTHON_FLASK_EXCLUDED_URLS": (_excludes("FLASK"), False, "healthz", True),
    "OTEL_PYTHON_DJANGO_EXCLUDED_URLS": (_excludes("DJANGO"), False, "healthz", True),
    "OTEL_PYTHON_GRPC_EXCLUDED_SERVICES": (_grpc_excludes_health, False, "a.B, grpc.health.v1.Health", True),
    "AIWATCH_GPU_POLL_INTERVAL": (_gpu_interval, 5.0, "0.5", 0.5),
    "AIWATCH_EVENT_LOOP_INTERVAL": (_loop_interval, 0.1, "0.5", 0.5),
    "AIWATCH_TRAFFIC_CLASSES": (_traffic_classes, "realtime,batch", "Interactive, offline", "interactive,offline"),
    "AIWATCH_TRAFFIC_CLASS_ROUTES": (_traffic_route_class, "realtime", "/v1/bulk/*=batch", "batch"),
    "AIWATCH_CONSOLE_PROMETHEUS": (_console("prometheus"), "", "http://prom:9090", "http://prom:9090"),
    "AIWATCH_CONSOLE_SCRAPE": (_console("scrape"), ("http://127.0.0.1:8000/metrics",), "http://a/m, http://b/m",
                               ("http://a/m", "http://b/m")),
    "AIWATCH_CONSOLE_INTERVAL": (_console("interval"), 5.0, "2", 2.0),
    "AIWATCH_CONSOLE_HISTORY": (_console("history"), 1800.0, "60", 60.0),
    "AIWATCH_CONSOLE_REFRESH": (_console("refresh"), 10.0, "0", 0.0),
    "AIWATCH_CONSOLE_WINDOW": (_console("window"), 60.0, "30", 30.0),
    "AIWATCH_CONSOLE_SPAN": (_console("span"), 900.0, "120", 120.0),
    "AIWATCH_CONSOLE_TIMEOUT": (_console("timeout"), 5.0, "2", 2.0),
    "AIWATCH_CONSOLE_AGGREGATION_LABELS": (_console("aggregation_labels"), ("cluster", "namespace"), "cluster",
                                           ("cluster",)),
    "AIWATCH_CONSOLE_MATCH": (_console("match"), "", 'cluster="eu"', 'cluster="eu"'),
    "AIWATCH_CONSOLE_TRACE_URL": (_console("trace_url"), "", "https://tempo.example/trace/{trace_id}",
                                  "https://tempo.example/trace/{trace_id}"),
    "AIWATCH_CONSOLE_GPU_SOURCE": (_console_on_prometheus("gpu_source"), "aiwatch", "dcgm", "dcgm"),
    "AIWATCH_CONSOLE_DCGM_UTILIZATION": (_console_on_prometheus("dcgm_utilization"), "DCGM_FI_DEV_GPU_UTIL",
                                         "DCGM_FI_PROF_SM_ACTIVE", "DCGM_FI_PROF_SM_ACTIVE"),
    "AIWATCH_PROMETHEUS_HEADERS": (_http_header("X-A"), None, "X-A=b%2Cc", "b,c"),
    "AIWATCH_PROMETHEUS_BEARER_TOKEN": (_http_header("Authorization"), None, "t0k3n", "Bearer t0k3n"),
    "AIWATCH_PROMETHEUS_BEARER_TOKEN_FILE": (_http_header("Authorization"), None, str(_FILES / "token"),
                                             "Bearer from-file"),
    "AIWATCH_PROMETHEUS_BASIC_AUTH_USER": (_http_header("Authorization"), None, "ops", _basic("ops:")),
    "AIWATCH_PROMETHEUS_BASIC_AUTH_PASSWORD": (
        _http_header("Authorization", AIWATCH_PROMETHEUS_BASIC_AUTH_USER="ops"), _basic("ops:"), "pw",
        _basic("ops:pw")),
    "AIWATCH_PROMETHEUS_BASIC_AUTH_PASSWORD_FILE": (
        _http_header("Authorization", AIWATCH_PROMETHEUS_BASIC_AUTH_USER="ops"), _basic("ops:"),
        str(_FILES / "password"), _basic("ops:pw-from-file")),
    "AIWATCH_PROMETHEUS_TENANT": (_http_header("X-Scope-OrgID"), None, "team-a", "team-a"),
    "AIWATCH_PROMETHEUS_CA_FILE": (_tls_context, False, str(_FILES / "ca.crt"), True),
    "AIWATCH_PROMETHEUS_CERT_FILE": (_tls_context, False, str(_FILES / "client.pem"), True),
    "AIWATCH_PROMETHEUS_KEY_FILE": (_client_key, "certificate without its key", str(_FILES / "client.key"),
                                    "certificate and key"),
}


def test_every_variable_has_a_reader_test() -> None:
    assert set(READERS) == {var.name for var in env.VARIABLES}


@pytest.mark.parametrize("name", sorted(READERS))
def test_each_variable_changes_what_its_reader_returns(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in env.VARIABLES:
        monkeypatch.delenv(var.name, raising=False)
    read, unset, value, expected = READERS[name]
    assert read() == unset
    monkeypatch.setenv(name, value)
    assert read() == expected


def test_defaults_in_the_table_are_the_readers_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in env.VARIABLES:
        monkeypatch.delenv(var.name, raising=False)
    for var in env.VARIABLES:
        read, unset, _, _ = READERS[var.name]
        if var.default and var.name not in ("AIWATCH_TRACING", "OTEL_SDK_DISABLED",
                                                "AIWATCH_MULTIPROCESS_DROP_DEAD"):  # flags: "on" / "false"
            parsed = type(unset)(var.default) if not isinstance(unset, tuple) \
                else tuple(var.default.replace(",", " ").split())
            assert read() == parsed, var.name


@pytest.mark.parametrize(("var", "method", "message"), [
    (env.MAX_LABEL_VALUES, "integer", "AIWATCH_MAX_LABEL_VALUES must be an integer, got 'many'"),
    (env.GPU_POLL_INTERVAL, "seconds", "AIWATCH_GPU_POLL_INTERVAL must be a number of seconds, got 'many'"),
    (env.MULTIPROCESS_DROP_DEAD, "switch", "AIWATCH_MULTIPROCESS_DROP_DEAD must be on or off, got 'many'"),
])
def test_a_malformed_value_names_its_variable(var: env.EnvVar, method: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        getattr(var, method)({var.name: "many"})


@pytest.mark.parametrize(("name", "value", "message"), [
    ("AIWATCH_TRAFFIC_CLASSES", "realtime, bulk jobs", "AIWATCH_TRAFFIC_CLASSES: a traffic class is"),
    ("AIWATCH_TRAFFIC_CLASSES", " , ", "AIWATCH_TRAFFIC_CLASSES: between 1 and 16 traffic classes"),
    ("AIWATCH_TRAFFIC_CLASS_ROUTES", "/v1/bulk/*=bulk", "AIWATCH_TRAFFIC_CLASS_ROUTES: route rule '/v1/bulk/*'"),
])
def test_a_malformed_traffic_class_variable_names_itself(monkeypatch: pytest.MonkeyPatch, name: str, value: str,
                                                         message: str) -> None:
    # "a traffic class is 1-64 letters..., got 'bulk jobs'" said neither where the value came from nor, for
    # " , ", what was wrong with it; the other variables' errors name them (above)
    from aiwatch.traffic import TrafficClasses

    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=re.escape(message)):
        TrafficClasses()


@pytest.mark.parametrize("value", ["disabled", "nope", "of"])
def test_a_tracing_switch_that_is_neither_on_nor_off_is_an_error_at_set_up(
        value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # read as on before: AIWATCH_TRACING=disabled left aiwatch's spans on
    from aiwatch.tracing import TracerSource

    monkeypatch.setenv("AIWATCH_TRACING", value)
    with pytest.raises(ValueError, match=f"AIWATCH_TRACING must be on or off, got {value!r}"):
        TracerSource()
    for on in ("on", "TRUE", " 1 ", "yes", ""):
        monkeypatch.setenv("AIWATCH_TRACING", on)
        assert not TracerSource()._disabled


@pytest.mark.parametrize("name", ["AIWATCH_SERVICE", "OTEL_SERVICE_NAME"])
@pytest.mark.parametrize("value", ["  ", "\t"])
def test_a_service_variable_of_blanks_is_an_error_at_set_up(name: str, value: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # AIWATCH_SERVICE="  " was the service label "  ", which no rule's or dashboard's service="..." matches
    for var in (env.SERVICE, env.OTEL_SERVICE_NAME):
        monkeypatch.delenv(var.name, raising=False)
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=re.escape(f"{name} must name the service, got {value!r}")):
        _recorder_service()
    monkeypatch.setenv(name, "")  # empty is unset, as for every variable
    assert _recorder_service() == "app"


@pytest.mark.parametrize(("name", "meant"), [
    ("AIWATCH_SLOW_THRESOLD", "AIWATCH_SLOW_THRESHOLD_SECONDS"),
    ("AIWATCH_SLOW_THRESHOLD", "AIWATCH_SLOW_THRESHOLD_SECONDS"),
    ("AIWATCH_CONSOLE_SPANN", "AIWATCH_CONSOLE_SPAN"),
    ("AIWATCH_CONSOLE_PROMETHEUS_URL", "AIWATCH_CONSOLE_PROMETHEUS"),
    ("AIWATCH_MAX_LABEL_VALUE", "AIWATCH_MAX_LABEL_VALUES"),
    ("AIWATCH_SERVICE_NAME", "AIWATCH_SERVICE"),
    ("aiwatch_tracing", "AIWATCH_TRACING"),
])
def test_a_misspelled_variable_is_named_with_the_one_meant(name: str, meant: str) -> None:
    assert env.misspelled_variables({name: "1", "AIWATCH_SERVICE": "ranker"}) == [(name, meant)]


@pytest.mark.parametrize("name", ["AIWATCH_REDIS_URL", "AIWATCH_GPU_PORT", "AIWATCH_GPU_ADDR", "AIWATCH_LOG_KEY",
                                  "AIWATCH_VENV", "AIWATCH_TEST_LOG_DIR", "AIWATCH_SECRET", "NOT_AIWATCH_SERVICE"])
def test_an_apps_own_aiwatch_variable_is_no_misspelling(name: str) -> None:
    # the examples' AIWATCH_GPU_PORT and AIWATCH_REDIS_URL, the docs' AIWATCH_LOG_KEY: an app's own, not aiwatch's
    assert env.misspelled_variables({name: "x"}) == []


def test_a_misspelled_variable_is_warned_once_when_aiwatch_reads_the_environment() -> None:
    """AIWATCH_SLOW_THRESOLD=1 left the slow threshold at 0.3 s, and said nothing: the slow-request counters and
    diagnose counted another tail than the operator set."""
    code = ("from prometheus_client import CollectorRegistry\n"
            "from aiwatch.recording import make_recorder\n"
            "for _ in range(3):\n"
            "    print(make_recorder(registry=CollectorRegistry()).slow_threshold)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO,
                          env=python_env(AIWATCH_SLOW_THRESOLD="1", AIWATCH_REDIS_URL="redis://cache:6379"))
    assert done.stdout.split() == ["0.3"] * 3
    warnings = [line for line in done.stderr.splitlines() if "AIWATCH_SLOW_THRESOLD " in line]
    assert warnings == ["aiwatch ignores AIWATCH_SLOW_THRESOLD (did you mean AIWATCH_SLOW_THRESHOLD_SECONDS?): no "
                        "variable it reads (`aiwatch env` lists them)"]
    assert "AIWATCH_REDIS_URL" not in done.stderr


def test_cli_lists_the_aiwatch_variables_it_does_not_read_without_their_values() -> None:
    out = subprocess.run([sys.executable, "-m", "aiwatch", "env"], capture_output=True, text=True, check=True,
                         env=python_env(AIWATCH_CONSOLE_SPANN="3600", AIWATCH_LOG_KEY="s3cret"), cwd=REPO).stdout
    assert re.search(r"^AIWATCH_CONSOLE_SPAN +\(unset: '900'\)$", out, re.M)
    assert re.search(r"^AIWATCH_CONSOLE_SPANN +did you mean AIWATCH_CONSOLE_SPAN\?$", out, re.M)
    assert re.search(r"^AIWATCH_LOG_KEY +\(not aiwatch's\)$", out, re.M)
    assert "s3cret" not in out and "3600" not in out


def test_cli_shows_the_service_label_otel_service_name_gives() -> None:
    # it said AIWATCH_SERVICE (unset: 'app'), and every series was labelled service="ranker"
    out = subprocess.run([sys.executable, "-m", "aiwatch", "env"], capture_output=True, text=True, check=True,
                         env=python_env(AIWATCH_SERVICE="", OTEL_SERVICE_NAME="ranker"), cwd=REPO).stdout
    assert re.search(r"^AIWATCH_SERVICE +\(unset: 'ranker', from OTEL_SERVICE_NAME\)$", out, re.M)


@pytest.mark.parametrize("name", ["AIWATCH_SERVICE", "OTEL_SERVICE_NAME"])
@pytest.mark.parametrize("value", ["ranker ", " ranker", "\tranker\n"])
def test_blanks_around_the_service_name_are_dropped(name: str, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # AIWATCH_SERVICE="ranker " was the label service="ranker ", which no rule's service="ranker" matches
    for var in (env.SERVICE, env.OTEL_SERVICE_NAME):
        monkeypatch.delenv(var.name, raising=False)
    monkeypatch.setenv(name, value)
    assert _recorder_service() == "ranker"


@pytest.mark.parametrize("side", ["server", "client"])
def test_a_service_argument_is_checked_as_the_variables_are(side: str) -> None:
    # service="  " labelled every series service="  " (no rule's or dashboard's service="..." matches it), where
    # AIWATCH_SERVICE="  " is refused; service=" ranker " kept its blanks, where the variable's are dropped
    from prometheus_client import CollectorRegistry

    from aiwatch.recording import make_client_recorder, make_recorder

    make = make_recorder if side == "server" else make_client_recorder
    with pytest.raises(ValueError, match=re.escape("service must name the service, got '  '")):
        make(service="  ", registry=CollectorRegistry())
    assert make(service=" ranker ", registry=CollectorRegistry()).service == "ranker"
