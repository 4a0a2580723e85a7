"""``aiwatch env``: the environment variables aiwatch reads and their values here, or (``--markdown``) the
configuration reference page, docs/configuration.md: the recorder options and the environment variables."""

from __future__ import annotations

import argparse
import textwrap
from typing import Any

DOC_PATH = "docs/configuration.md"

SERVER_INTEGRATIONS = ("aiwatch.instrument", "AiwatchMiddleware", "AiwatchWSGIMiddleware", "grpc_server_interceptor",
                       "grpc_aio_server_interceptor", "AiwatchGrpcInstrumentorServer")
CLIENT_INTEGRATIONS = ("instrument_httpx", "AiwatchTransport", "AiwatchAsyncTransport", "instrument_requests",
                       "AiwatchHTTPAdapter", "grpc_client_interceptor", "grpc_aio_client_interceptors",
                       "AiwatchGrpcInstrumentorClient")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("env", help="print the environment variables aiwatch reads and their values")
    parser.add_argument("--markdown", action="store_true",
                        help=f"print the configuration reference page ({DOC_PATH} is this output)")
    parser.set_defaults(handler=run)


def _wrap(text: str) -> list[str]:
    return textwrap.wrap(text, width=116, subsequent_indent="  ", break_on_hyphens=False)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown() -> str:
    """The configuration page, generated from :data:`aiwatch.recording.OPTIONS` and :data:`aiwatch.env.VARIABLES`."""
    from aiwatch.env import VARIABLES
    from aiwatch.recording import OPTIONS

    def names(items: tuple[str, ...]) -> str:
        return ", ".join(f"`{n}`" for n in items)

    lines = [
        "# Configuration",
        "",
        "How aiwatch is configured: the options every integration takes, and the environment variables aiwatch reads.",
        "This page is generated from `aiwatch/recording.py` and `aiwatch/env.py`; do not edit it by hand. After",
        "changing either, regenerate it (a test fails while they disagree):",
        "",
        "```bash",
        f"python -m aiwatch env --markdown > {DOC_PATH}",
        "```",
        "",
        "An argument given in code wins over an environment variable, which wins over the default.",
        "",
        "## Recorder options",
        "",
        "Every integration takes the same options for where and under which labels it records, and gets its recorder",
        "from one factory (`aiwatch.recording`).",
        "",
        *_wrap(f"- server side: `recorder` is an `aiwatch.RequestRecorder` (`aiwatch.make_recorder(...)`): "
               f"{names(SERVER_INTEGRATIONS)};"),
        *_wrap(f"- client side: `recorder` is an `aiwatch.client.ClientRecorder` "
               f"(`aiwatch.make_client_recorder(...)`), which HTTP and gRPC clients can share: "
               f"{names(CLIENT_INTEGRATIONS)}."),
        "",
        "Each integration also has options of its own (`server_timing`, `metrics_path`, `propagate`, ...): see",
        "[http.md](http.md) and [grpc.md](grpc.md). An on/off option (`server_timing`, `payload_sizes`, `propagate`,",
        "`MicroBatcher`'s `record_phases`, `ParquetSink`'s `fsync`...) takes `True` or `False` (or numpy's bool):",
        "anything else, the string `\"false\"` included (true to Python), is a `TypeError` naming the option and the",
        "value when the object is made. The environment's switches are strings: `on`/`off`, `true`/`false`, `1`/`0`,",
        "`yes`/`no`, any case; any other value is a `ValueError` naming the variable.",
        "",
        "| option | side | default | meaning |",
        "|---|---|---|---|",
    ]
    for option in OPTIONS:
        lines.append(f"| `{option.name}` | {option.side} | {_cell(option.default)} | {_cell(option.meaning)} |")
    lines += [
        "",
        "## Environment variables",
        "",
        "Every variable aiwatch reads; an unset or empty variable means its default. Variables owned by another",
        "library are the ones aiwatch honours as that library does.",
        "",
        "| variable | default | meaning |",
        "|---|---|---|",
    ]
    for var in VARIABLES:
        owner = "" if var.owner == "aiwatch" else f" *({var.owner}'s variable)*"
        owner += " *(a secret: `aiwatch env` says only whether it is set)*" if var.secret else ""
        default = f"`{var.default}`" if var.default else "(unset)"
        lines.append(f"| `{var.name}` | {default} | {_cell(var.meaning)}{owner} |")
    return "\n".join(lines) + "\n"


def _header_names(value: str) -> str:
    """The names of the ``name=value`` headers of ``AIWATCH_PROMETHEUS_HEADERS``, their values left out (as
    :class:`~aiwatch.httpconfig.HTTPConfig` shows them: a value may be a credential, ``Authorization=Basic ...``).
    Nothing of a value that is malformed is shown: a header written ``Authorization: Basic ...`` has no name apart."""
    from aiwatch.httpconfig import parse_headers_env

    try:
        names = [name for name, _ in parse_headers_env(value)]
    except ValueError:
        return "(set, malformed: each header is written name=value; not shown)"
    return f"(set: {', '.join(names)}; values not shown)"


def run(args: argparse.Namespace) -> int:
    from aiwatch.env import (
        LEGACY_MULTIPROC_DIR,
        MULTIPROC_DIR,
        OTEL_SERVICE_NAME,
        PROMETHEUS_HEADERS,
        SERVICE,
        VARIABLES,
        unknown_variables,
    )
    from aiwatch.semconv import redact_text

    if args.markdown:
        print(markdown(), end="")
        return 0
    width = max(len(var.name) for var in VARIABLES)
    for var in VARIABLES:
        value = var.raw()
        if value and var.secret:
            shown = "(set, not shown)"
        elif value and var is PROMETHEUS_HEADERS:
            shown = _header_names(value)
        elif not value and var in (MULTIPROC_DIR, LEGACY_MULTIPROC_DIR) and var.is_set():
            # not its default: set, even empty, it puts prometheus_client in multiprocess mode
            shown = "'' (set but empty: prometheus_client is in multiprocess mode with no directory to merge)"
        elif not value and var is SERVICE and OTEL_SERVICE_NAME.raw():
            # its default is not 'app' then: the service label is OTEL_SERVICE_NAME's
            shown = f"(unset: {redact_text(OTEL_SERVICE_NAME.raw())!r}, from {OTEL_SERVICE_NAME.name})"
        else:
            # a URL's user:password@ (refused where it is used, but set it may be) is not printed either
            shown = repr(redact_text(value)) if value else f"(unset: {var.default!r})" if var.default else "(unset)"
        print(f"{var.name:<{width}}  {shown}")
    unknown = unknown_variables()
    if unknown:
        # their values are not shown: an app's own AIWATCH_... variable may hold a key
        print("\nset, but not read by aiwatch (ignored):")
        for name, like in unknown:
            print(f"{name:<{width}}  " + (f"did you mean {like}?" if like else "(not aiwatch's)"))
    return 0
