"""Which ``status`` label values count as errors: the one definition the console, the rules (the default of
``slo.error_status``), the Grafana dashboard and ``aiwatch diagnose`` share.

A request is an error when the *server* failed it:

* HTTP: every 5xx. A 4xx is the client's (``499``, a client that went away, included);
* gRPC: the codes OpenTelemetry's gRPC conventions mark as server errors, :data:`GRPC_SERVER_ERRORS`. The other
  codes answer the request as asked (``NOT_FOUND``, ``INVALID_ARGUMENT``, ``PERMISSION_DENIED``, ...), were
  cancelled by the client (``CANCELLED``), or refused it on purpose: ``RESOURCE_EXHAUSTED`` is a quota or a message
  size limit as often as an overloaded server, so, as in HTTP, where 429 is no 5xx, it spends no error budget.

    >>> [s for s in ("200", "404", "499", "500", "503", "CANCELLED", "RESOURCE_EXHAUSTED", "UNAVAILABLE")
    ...  if is_error_status(s)]
    ['500', '503', 'UNAVAILABLE']
"""

from __future__ import annotations

import re

#: gRPC status codes that mean the server failed the call (OpenTelemetry's rpc conventions, as
#: opentelemetry-instrumentation-grpc sets a server span's ERROR status).
GRPC_SERVER_ERRORS: tuple[str, ...] = ("UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE",
                                       "DATA_LOSS")

ERROR_STATUS_RE = "|".join(("5..", *GRPC_SERVER_ERRORS))
"""The ``status`` values counted as errors, as a regular expression for PromQL's ``status=~`` (which anchors it at
both ends): HTTP 5xx and :data:`GRPC_SERVER_ERRORS`."""

_ERROR_STATUS = re.compile(f"(?:{ERROR_STATUS_RE})")


def is_error_status(status: str) -> bool:
    """Whether a ``status`` label value counts as an error: what PromQL's ``status=~ERROR_STATUS_RE`` selects."""
    return _ERROR_STATUS.fullmatch(status) is not None
