"""aiwatch.semconv's helpers and names: the parsing the conventions describe, and the attribute names checked against
the installed opentelemetry-semantic-conventions."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from opentelemetry.semconv._incubating.attributes import rpc_attributes
from opentelemetry.trace import Status, StatusCode

from aiwatch import semconv
from aiwatch.exclusion import ExcludedUrls, asgi_url, wsgi_url


def test_stable_rpc_names_are_the_packages() -> None:
    assert semconv.RPC_SYSTEM_NAME == rpc_attributes.RPC_SYSTEM_NAME
    assert semconv.RPC_METHOD_ORIGINAL == rpc_attributes.RPC_METHOD_ORIGINAL
    assert semconv.RPC_RESPONSE_STATUS_CODE == rpc_attributes.RPC_RESPONSE_STATUS_CODE
    assert semconv.RPC_GRPC_REQUEST_METADATA == rpc_attributes.RPC_GRPC_REQUEST_METADATA_TEMPLATE
    assert semconv.RPC_REQUEST_METADATA == rpc_attributes.RPC_REQUEST_METADATA_TEMPLATE
    from opentelemetry.semconv._incubating.attributes import net_attributes

    assert (semconv.NET_PEER_IP, semconv.NET_PEER_PORT) == (net_attributes.NET_PEER_IP, net_attributes.NET_PEER_PORT)


@pytest.mark.parametrize(("target", "expected"), [
    ("grpc.io:50051", ("grpc.io", 50051)),
    ("dns://1.2.3.4/grpc.io:50051", ("grpc.io", 50051)),
    ("dns:///grpc.io:443", ("grpc.io", 443)),
    ("[::1]:50051", ("::1", 50051)),
    ("unix:///run/containerd/containerd.sock", ("/run/containerd/containerd.sock", None)),
    ("zk://zookeeper:2181/my-server", ("zk://zookeeper:2181/my-server", None)),
    ("ipv4:198.51.100.123:50051,198.51.100.124:50051", ("ipv4:198.51.100.123:50051,198.51.100.124:50051", None)),
    ("inference", ("inference", None)),
])
def test_grpc_target_address_as_the_grpc_conventions_parse_it(target: str, expected: tuple[str, int | None]) -> None:
    assert semconv.grpc_target_address(target) == expected


@pytest.mark.parametrize(("peer", "expected"), [
    ("ipv4:10.0.0.7:51234", ("10.0.0.7", 51234)),
    ("ipv6:%5B::1%5D:33406", ("::1", 33406)),  # as grpcio writes it
    ("ipv6:[2001:db8::1]:443", ("2001:db8::1", 443)),
    ("unix:/run/app.sock", ("/run/app.sock", None)),
    ("unix:", None),  # an unnamed socket: grpcio's peer for a client of a unix-socket server
    ("unix-abstract:x", None), ("", None), ("ipv4:", None), ("garbage", None),
])
def test_grpc_peer_as_grpcio_writes_it(peer: str, expected: tuple[str, int | None] | None) -> None:
    assert semconv.grpc_peer(peer) == expected


@pytest.mark.parametrize(("conventions", "expected"), [
    (semconv.RpcConventions(), {"net.peer.ip": "10.0.0.7", "net.peer.port": 51234}),
    (semconv.RpcConventions(old=False, new=True), {"network.peer.address": "10.0.0.7", "network.peer.port": 51234}),
])
def test_grpc_peer_attributes_follow_the_opted_in_set(conventions: semconv.RpcConventions,
                                                      expected: dict[str, object]) -> None:
    assert semconv.grpc_peer_attributes("ipv4:10.0.0.7:51234", conventions) == expected
    assert semconv.grpc_peer_attributes("unix:", conventions) == {}


@pytest.mark.parametrize(("value", "old", "new"), [
    ("", True, False), ("http", True, False), ("rpc", False, True), (" rpc ,http", False, True),
    ("rpc/dup", True, True), ("rpc,rpc/dup", True, True), ("rpcx", True, False),
])
def test_opt_in_values_as_contrib_reads_them(value: str, old: bool, new: bool) -> None:
    conventions = semconv.rpc_conventions({"OTEL_SEMCONV_STABILITY_OPT_IN": value})
    assert (conventions.old, conventions.new) == (old, new)


@pytest.mark.parametrize(("url", "expected"), [
    ("http://a.b/x?y=1", "http://a.b/x?y=1"),
    ("https://u:p@a.b:8443/x", "https://REDACTED:REDACTED@a.b:8443/x"),
    ("https://a.b/x?AWSAccessKeyId=k&Signature=s&keep=1", "https://a.b/x?AWSAccessKeyId=REDACTED&Signature=REDACTED&keep=1"),
    ("https://b.s3.amazonaws.com/w.bin?X-Amz-Credential=AKIA%2Fx&X-Amz-Security-Token=t&X-Amz-Signature=s#f",
     "https://b.s3.amazonaws.com/w.bin?X-Amz-Credential=REDACTED&X-Amz-Security-Token=REDACTED&X-Amz-Signature=REDACTED#f"),
])
def test_url_full_redaction(url: str, expected: str) -> None:
    assert semconv.redact_url(url) == expected


_QUERY_PART = st.one_of(st.sampled_from(semconv.REDACTED_QUERY_PARAMS), st.sampled_from(["sig ", "SIG", "q", ""]),
                        st.text(alphabet="aX-=&%2F", max_size=8))


@given(st.lists(st.tuples(_QUERY_PART, st.sampled_from(["=", "", "=="]), st.text(max_size=12)), max_size=8))
@example([("X-Amz-Signature", "=", "a=b"), ("sig", "", "x")])
def test_redact_query_hides_every_sensitive_value_and_keeps_the_rest(parts: list[tuple[str, str, str]]) -> None:
    """Any query string a client sends: each ``&``-separated item whose key is on the list (matched exactly) and has
    a value becomes ``key=REDACTED``; every other item, and the items' order and count, are unchanged."""
    query = "&".join(f"{key}{sep}{value}" for key, sep, value in parts)
    redacted = semconv.redact_query(query)
    before, after = query.split("&"), redacted.split("&")
    assert len(after) == len(before)
    for item, out in zip(before, after, strict=True):
        key, sep, _ = item.partition("=")
        assert out == (f"{key}=REDACTED" if sep and key in semconv.REDACTED_QUERY_PARAMS else item)


def test_http_span_names() -> None:
    assert semconv.http_span_name("GET", "/items/{id}") == "GET /items/{id}"
    assert semconv.http_span_name("GET") == "GET"
    assert semconv.http_span_name("_OTHER", "/x") == "HTTP /x"


def test_excluded_urls_semantics() -> None:
    # OpenTelemetry's list: comma-separated, stripped, searched anywhere in the URL
    rule = ExcludedUrls.parse(" healthz , ^https://internal")
    assert rule.excludes("http://svc/api/healthz") and rule.excludes("https://internal/x")
    assert not rule.excludes("http://svc/api/items")
    # aiwatch's own: one regex, commas allowed
    assert ExcludedUrls.parse("", r"/v\d{1,2}/ping$").excludes("http://svc/v12/ping")
    assert not ExcludedUrls.parse("", "").active and not ExcludedUrls.parse(" , ").active


def test_urls_matched_as_opentelemetry_builds_them() -> None:
    scope = {"scheme": "https", "path": "/a/b", "headers": [(b"host", b"api:8443")], "server": ("10.0.0.1", 80)}
    assert asgi_url(scope) == "https://api:8443/a/b"
    assert asgi_url({"path": "/x", "server": ("10.0.0.1", 8000)}) == "http://10.0.0.1:8000/x"
    assert wsgi_url({"wsgi.url_scheme": "http", "SERVER_NAME": "h", "SERVER_PORT": "8080", "SCRIPT_NAME": "/app",
                     "PATH_INFO": "/x"}) == "http://h:8080/app/x"
    assert wsgi_url({"wsgi.url_scheme": "https", "HTTP_HOST": "api", "PATH_INFO": "/x"}) == "https://api/x"


class _RecordingSpan:
    """What end_http_server_span calls on a span, recorded (the core's tests run without the SDK)."""

    def __init__(self) -> None:
        self.name = "GET"
        self.attributes: dict[str, object] = {}
        self.status: Status | None = None

    def set_attributes(self, attributes: dict[str, object]) -> None:
        self.attributes.update(attributes)

    def set_attribute(self, key: str, value: object) -> None:
        self.attributes[key] = value

    def update_name(self, name: str) -> None:
        self.name = name

    def set_status(self, status: Status) -> None:
        self.status = status


def test_a_str_status_is_read_as_its_number_as_opentelemetry_reads_it() -> None:
    # a server that passed a str status: the >= 500 check raised, and the span had no error.type nor ERROR status
    span = _RecordingSpan()
    semconv.end_http_server_span(span, True, "GET", "/items/{id}", "503", None)  # type: ignore[arg-type]
    assert span.name == "GET /items/{id}"
    assert span.attributes == {"http.route": "/items/{id}", "http.response.status_code": 503, "error.type": "503"}
    assert span.status is not None and span.status.status_code is StatusCode.ERROR


@pytest.mark.parametrize("status", ["teapot", [503], "5e2"])
def test_a_status_that_is_no_number_is_the_spans_error_type(status: object) -> None:
    span = _RecordingSpan()
    semconv.end_http_server_span(span, True, "GET", "/items/{id}", status, None)  # type: ignore[arg-type]
    assert span.attributes == {"http.route": "/items/{id}", "error.type": str(status)}
    assert span.status is not None and span.status.status_code is StatusCode.ERROR
    assert span.status.description == f"Non-integer HTTP status: {status}"


class _Raising:
    def __int__(self) -> int:
        raise RuntimeError("__int__ broke")

    def __str__(self) -> str:
        raise RuntimeError("__str__ broke")


def test_a_status_whose_int_and_str_raise_leaves_the_route_and_name_and_is_the_error_type() -> None:
    span = _RecordingSpan()
    semconv.end_http_server_span(span, True, "GET", "/items/{id}", _Raising(), None)  # type: ignore[arg-type]
    assert span.name == "GET /items/{id}"
    assert span.attributes == {"http.route": "/items/{id}", "error.type": "_Raising"}
    assert span.status is not None and span.status.status_code is StatusCode.ERROR


@pytest.mark.parametrize("status", [42, 0, 99, 600])
def test_an_int_status_outside_100_to_599_is_an_error_below_100_and_from_500(status: int) -> None:
    # OpenTelemetry's http_status_to_status_code for a server span: ERROR below 100 and from 500, else unset
    span = _RecordingSpan()
    semconv.end_http_server_span(span, True, "GET", "/", status, None)
    assert span.attributes == {"http.route": "/", "http.response.status_code": status, "error.type": str(status)}
    assert span.status is not None and span.status.status_code is StatusCode.ERROR


def test_a_str_status_below_500_is_no_error() -> None:
    span = _RecordingSpan()
    semconv.end_http_server_span(span, True, "GET", "/", "204", None)  # type: ignore[arg-type]
    assert span.attributes == {"http.route": "/", "http.response.status_code": 204}
    assert span.status is None


def _otlp_encodable(value: object) -> None:
    """What an OTLP exporter does with an attribute value (opentelemetry-proto's AnyValue): raises on an int past
    int64, which fails the whole batch the span is exported in. Where opentelemetry-proto is not installed (the
    core-only environment), the same int64 bound is checked directly."""
    if isinstance(value, bool) or not isinstance(value, int):
        return
    try:
        from opentelemetry.proto.common.v1.common_pb2 import AnyValue
    except ImportError:
        assert -(2**63) <= value < 2**63, value
        return
    AnyValue(int_value=value)


@given(st.text(max_size=30))
@example("api.example:²")
@example("api.example:99999999999999999999")
@example("[::1]:65536")
@example("[::1")
def test_split_host_never_raises_and_its_port_is_a_port(host: str) -> None:
    """The Host header comes from traffic: any text gives an address and a port from 0 to 65535 or none."""
    address, port = semconv.split_host(host)
    assert isinstance(address, str)
    assert port is None or (isinstance(port, int) and 0 <= port <= 65535)
    _otlp_encodable(port)


@pytest.mark.parametrize(("host", "expected"), [
    ("example.com:8080", ("example.com", 8080)), ("example.com", ("example.com", None)), ("[::1]:80", ("::1", 80)),
    ("[::1]", ("::1", None)),
    # a bracket left open: the address was the text less its first and last characters ('::', the unspecified
    # address, for '[::1'; '::1:808' for '[::1:8080')
    ("[::1", ("[::1", None)), ("[::1:8080", ("[::1:8080", None)), ("[", ("[", None)),
])
def test_split_host(host: str, expected: tuple[str, int | None]) -> None:
    assert semconv.split_host(host) == expected


def test_a_host_header_with_a_bracket_left_open_is_the_server_address_as_sent() -> None:
    attributes = semconv.http_server_attributes("GET", "http", "/", "", "[::1:8080", ("10.0.0.7", 8000), "1.1",
                                                frozenset({"GET"}), None, None)
    assert attributes[semconv.SERVER_ADDRESS] == "[::1:8080"
    assert semconv.SERVER_PORT not in attributes


@pytest.mark.parametrize(("text", "expected"), [("8443", 8443), ("0", 0), ("65535", 65535), ("65536", None),
                                                ("²", None), ("٣", None), ("99999999999999999999", None), ("", None),
                                                ("-1", None), ("+80", None)])
def test_port_number(text: str, expected: int | None) -> None:
    assert semconv.port_number(text) == expected


@pytest.mark.parametrize("status", [10**30, 1000, -1])
def test_an_int_status_outside_0_to_999_is_no_status_code(status: int) -> None:
    """No HTTP status (RFC 9110's are three digits): it stays off http.response.status_code, where a number past
    int64 would fail an OTLP export; it is the span's error.type."""
    span = _RecordingSpan()
    semconv.end_http_server_span(span, True, "GET", "/", status, None)
    assert span.attributes == {"http.route": "/", "error.type": str(status)}
    assert span.status is not None and span.status.status_code is StatusCode.ERROR
    for value in span.attributes.values():
        _otlp_encodable(value)


@pytest.mark.parametrize(("text", "expected"), [("200", 200), ("99999", None), ("²00", None), ("", None)])
def test_status_number(text: str, expected: int | None) -> None:
    assert semconv.status_number(text) == expected


@given(st.text(max_size=40))
@example("ipv4:1.2.3.4:\xb2")
@example("ipv6:%5B::1")
def test_grpc_peer_never_raises_and_its_port_is_a_port(peer: str) -> None:
    found = semconv.grpc_peer(peer)
    if found is not None:
        address, port = found
        assert isinstance(address, str) and address
        assert port is None or 0 <= port <= 65535
