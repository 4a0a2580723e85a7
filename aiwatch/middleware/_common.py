"""What the ASGI and WSGI middleware share: the bounded ``route`` and ``method`` labels of HTTP requests."""

from __future__ import annotations

from aiwatch.semconv import KNOWN_HTTP_METHODS, OTHER_METHOD

__all__ = ["CLIENT_CLOSED_STATUS", "KNOWN_METHODS", "OTHER_METHOD", "UNMATCHED_ROUTE"]

UNMATCHED_ROUTE = "__unmatched__"
"""The route label of requests that matched no route template: the raw path is never used as a label."""

#: HTTP methods used as the ``method`` label as they are; any other method (clients can send any token) is
#: labelled ``_OTHER`` so that the label stays bounded (the same rule as the spans' ``http.request.method``).
KNOWN_METHODS = KNOWN_HTTP_METHODS

CLIENT_CLOSED_STATUS = "499"
"""The ``status`` label of a request whose response could not be delivered because the client went away (the
server's ``send`` raised): nginx's "client closed request". It is not a 5xx, so the availability SLO's error
selector (``slo.error_status``, default ``5..|...``) does not count it against the service."""
