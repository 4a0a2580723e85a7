"""Which gRPC request metadata go on the spans aiwatch's gRPC interceptors start (:mod:`aiwatch.grpc`; this module
imports no grpc, so that the settings are read and checked where the extra is not installed).

``OTEL_INSTRUMENTATION_GRPC_CAPTURE_METADATA_SERVER_REQUEST`` (SERVER spans) and ``..._CLIENT_REQUEST`` (CLIENT
spans: the metadata the app sends) list the keys, comma-separated; the names are the OpenTelemetry Java agent's
(opentelemetry-instrumentation-grpc for Python captures none). As for HTTP headers, each item is a regular expression
matched against a whole key in any case, so a plain key matches itself;
``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS`` redacts values here too, and those of a key named
like a credential (:func:`aiwatch.semconv.is_credential_name`: ``authorization``, ``x-api-key``...) always are.

A captured key is the attribute ``rpc.grpc.request.metadata.<key>`` (``rpc.request.metadata.<key>`` under
``OTEL_SEMCONV_STABILITY_OPT_IN=rpc``, both under ``rpc/dup``), its value the list of the key's values in the order
sent. A binary key's values (``-bin``: bytes) are captured as the base64 text gRPC sends on the wire.

Nothing is captured unless configured (metadata can hold credentials), and a span another instrumentation started
is that instrumentation's to fill.

    >>> from aiwatch.semconv import RpcConventions
    >>> capture = MetadataCapture.server(RpcConventions(), {
    ...     "OTEL_INSTRUMENTATION_GRPC_CAPTURE_METADATA_SERVER_REQUEST": "x-tenant, x-api-key, trace-bin",
    ...     "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS": "api-key"})
    >>> capture.attributes([("x-tenant", "a"), ("x-api-key", "s3cr3t"), ("trace-bin", b"\\x00\\x01"),
    ...                     ("x-tenant", "b"), ("user-agent", "grpc-python")])
    {'rpc.grpc.request.metadata.x-tenant': ['a', 'b'], 'rpc.grpc.request.metadata.x-api-key': ['[REDACTED]'], \
'rpc.grpc.request.metadata.trace-bin': ['AAE=']}
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from aiwatch.env import (
    CAPTURE_GRPC_CLIENT_REQUEST_METADATA,
    CAPTURE_GRPC_SERVER_REQUEST_METADATA,
    CAPTURE_HEADERS_SANITIZE_FIELDS,
    EnvVar,
)
from aiwatch.headercapture import NameDecisions, header_patterns
from aiwatch.semconv import RPC_GRPC_REQUEST_METADATA, RPC_REQUEST_METADATA, RpcConventions

__all__ = ["MetadataCapture"]


class MetadataCapture:
    """The request metadata one side (server or client) captures on its spans, under the conventions' names."""

    __slots__ = ("_decisions", "_first", "_second")

    def __init__(self, keys: Any, sanitize: Any, conventions: RpcConventions) -> None:
        prefixes = [f"{RPC_GRPC_REQUEST_METADATA}." if conventions.old else "",
                    f"{RPC_REQUEST_METADATA}." if conventions.new else ""]
        prefixes = [prefix for prefix in prefixes if prefix]
        self._decisions = NameDecisions(keys, sanitize, prefixes[0])
        self._first = prefixes[0]
        #: the second set's prefix under rpc/dup, which names each captured key twice
        self._second = prefixes[1] if len(prefixes) > 1 else None

    @classmethod
    def server(cls, conventions: RpcConventions, env: Mapping[str, str] | None = None) -> MetadataCapture | None:
        """The SERVER spans' capture; ``None`` when no key is configured. A pattern that is no regular expression
        is a ``ValueError`` naming the variable."""
        return cls._of(CAPTURE_GRPC_SERVER_REQUEST_METADATA, conventions, env)

    @classmethod
    def client(cls, conventions: RpcConventions, env: Mapping[str, str] | None = None) -> MetadataCapture | None:
        """The CLIENT spans' capture; ``None`` when no key is configured."""
        return cls._of(CAPTURE_GRPC_CLIENT_REQUEST_METADATA, conventions, env)

    @classmethod
    def _of(cls, variable: EnvVar, conventions: RpcConventions,
            env: Mapping[str, str] | None) -> MetadataCapture | None:
        keys = header_patterns(variable, env)
        if keys is None:
            return None
        return cls(keys, header_patterns(CAPTURE_HEADERS_SANITIZE_FIELDS, env), conventions)

    def attributes(self, metadata: Iterable[Any]) -> dict[str, list[str]]:
        """The span attributes of ``metadata`` (grpcio's ``(key, value)`` items); ``{}`` when none is captured."""
        captured = self._decisions.capture(_text_items(metadata))
        second = self._second
        if second is not None and captured:
            cut = len(self._first)
            captured.update({second + name[cut:]: list(values) for name, values in list(captured.items())})
        return captured


def _text_items(metadata: Iterable[Any]) -> Iterator[tuple[str, str]]:
    for item in metadata:
        key, value = item[0], item[1]
        yield key, value if value.__class__ is str else base64.b64encode(value).decode("ascii")
