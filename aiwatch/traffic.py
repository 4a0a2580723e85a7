"""Traffic classes: telling real-time requests from batch ones that share the same replicas.

Every request carries one ``traffic_class`` label value from a bounded set (default ``realtime`` and ``batch``; the
first one is the default). It comes from, in order:

1. a **route rule** of the configuration: the route template (``/v1/embed/bulk``, or a ``*`` glob) names its class,
   so an endpoint that only batch jobs call is batch whatever its callers send;
2. the **``aiwatch-traffic-class`` request header** (gRPC: the metadata key of the same name), sent by the caller:
   a batch job's client sets it once, and aiwatch's client integrations forward the class of the request they are
   called in (its route rule's, once the app has routed it), so the whole call graph under a batch request is batch;
3. else the **default class** (the first one).

A header value outside the configured classes counts as the default class: callers cannot add label values. A
repeated header (or a comma-separated list in one) names a class only when every item names that same class, however
the server hands it over (ASGI and gRPC: one value each; WSGI: joined with commas).

    >>> t = TrafficClasses(routes={"/v1/bulk/*": "batch"})
    >>> t.from_header(b"batch"), t.from_header("BULK"), t.for_route("/v1/bulk/{id}", "realtime")
    ('batch', 'realtime', 'batch')
    >>> t.from_header("batch, batch"), t.from_headers([b"batch", b"realtime"])
    ('batch', 'realtime')

Why a header of aiwatch's own: RFC 9218's ``Priority`` header says in which order a client would like responses
*delivered*, and browsers and proxies set it on every request for their own reasons, so it would classify all
browser traffic; W3C ``baggage`` reaches the next service only where OpenTelemetry's propagator runs on every hop,
and its keys are everyone's. ``aiwatch-traffic-class`` means one thing, is read in one place, and is valid both as an
HTTP header and as gRPC metadata (lowercase).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence

from aiwatch.cardinality import MAX_VALUE_LENGTH, UNMATCHED_ROUTE
from aiwatch.env import TRAFFIC_CLASS_ROUTES, TRAFFIC_CLASSES

HEADER = "aiwatch-traffic-class"
"""The request header (and gRPC metadata key) naming a request's traffic class."""
HEADER_BYTES = HEADER.encode("latin-1")
#: The header as a WSGI environ key.
ENVIRON_KEY = "HTTP_" + HEADER.upper().replace("-", "_")

REALTIME = "realtime"
BATCH = "batch"
DEFAULT_CLASSES: tuple[str, ...] = (REALTIME, BATCH)
MAX_CLASSES = 16


def _valid_class(name: str) -> str:
    # ASCII: a header value or gRPC metadata value has to carry it ("批量".isalnum() is true)
    if (not isinstance(name, str) or not name or len(name) > 64 or not name.isascii()
            or not all(c.isalnum() or c in "_-." for c in name)):
        raise ValueError(f"a traffic class is 1-64 ASCII letters, digits, '_', '-' or '.', got {name!r}")
    return name


class TrafficClasses:
    """The traffic classes a server tells apart (see the module docstring).

    - ``classes``: the allowed classes, the first one the default (default ``realtime, batch``, or
      ``$AIWATCH_TRAFFIC_CLASSES``).
    - ``routes``: route template or ``*`` glob -> class (default: ``$AIWATCH_TRAFFIC_CLASS_ROUTES``,
      ``"/v1/bulk/*=batch, /train=batch"``); a Django template, which has no leading slash, matches a rule written
      as its URL path too. A rule naming a class outside ``classes`` is a ``ValueError``.
    - ``header``: the request header to read (default ``aiwatch-traffic-class``).
    """

    def __init__(self, classes: Iterable[str] | None = None, routes: Mapping[str, str] | None = None,
                 header: str = HEADER) -> None:
        names = _class_names(classes)
        self.classes = names
        self.default = names[0]
        rules = _route_rules(routes) if routes is not None else parse_routes(TRAFFIC_CLASS_ROUTES.text())
        for pattern, name in rules.items():
            if name not in names:
                where = "" if routes is not None else f"{TRAFFIC_CLASS_ROUTES.name}: "
                raise ValueError(f"{where}route rule {pattern!r} names traffic class {name!r}, not one of {names}")
        # every rule is tried as the exact template first: a Django re_path route (^items/(?P<pk>[0-9]+)/$) has glob
        # characters, and as a glob it would not match itself
        self._exact = dict(rules)
        self._globs = tuple((p, c) for p, c in rules.items() if _is_glob(p))
        self.has_routes = bool(rules)
        self.header = header.lower()
        self.header_bytes = self.header.encode("latin-1")
        self.environ_key = "HTTP_" + self.header.upper().replace("-", "_")
        self._known = {c.encode("latin-1"): c for c in names} | {c: c for c in names}
        self._routes: dict[str, str | None] = {}

    def from_header(self, value: str | bytes | None) -> str:
        """The class a request header's value names; the default class for none or a value not configured.

        A comma-separated list (a repeated header as a WSGI server or a proxy joins it, ``"batch, batch"``) names a
        class only when every non-empty item names that same class; else it is the default class."""
        if value is None:
            return self.default
        found = self._known.get(value)
        if found is not None:
            return found
        try:
            text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
        except Exception:
            return self.default
        found = self._known.get(text.strip().lower())
        if found is not None or "," not in text:
            return found or self.default
        names = {item.strip().lower() for item in text.split(",")} - {""}
        return self._known.get(names.pop(), self.default) if len(names) == 1 else self.default

    def from_headers(self, values: Sequence[str | bytes]) -> str:
        """The class a header sent ``len(values)`` times names: read as one comma-separated list (RFC 9110's
        reading of a repeated header), as :meth:`from_header` reads it."""
        if len(values) == 1:
            return self.from_header(values[0])
        try:
            return self.from_header(",".join(v.decode("latin-1") if isinstance(v, bytes) else str(v)
                                             for v in values))
        except Exception:
            return self.default

    def for_route(self, route: str, current: str) -> str:
        """The class of a request to ``route`` that its header made ``current``: a route rule's class wins."""
        if not self.has_routes:
            return current
        found = self._routes.get(route, "")
        if found == "":
            as_path = _as_path(route)
            found = self._exact.get(route) or self._exact.get(as_path)
            if found is None:
                found = next((c for p, c in self._globs
                              if fnmatch.fnmatchcase(route, p) or fnmatch.fnmatchcase(as_path, p)), None)
            # bounded in number, and in length as a label value is: a gRPC proxy's catch-all handler is asked for
            # any method a client names (10 000 names of 7 kB held 70 MB for the server's life)
            if len(self._routes) < 10_000 and len(route) <= MAX_VALUE_LENGTH:
                self._routes[route] = found
        return found or current

    def __repr__(self) -> str:
        return f"TrafficClasses(classes={self.classes!r}, header={self.header!r})"


def _class_names(classes: Iterable[str] | None) -> tuple[str, ...]:
    """The classes given (``None``: ``$AIWATCH_TRAFFIC_CLASSES``, whose errors name it), lowercase, checked."""
    if isinstance(classes, (str, bytes)):  # not the classes of its characters
        raise TypeError(f"classes must be a collection of class names, got the single {type(classes).__name__} "
                        f"{classes!r}: write [{classes!r}]")
    if classes is None:
        try:
            return _class_names(parse_classes(TRAFFIC_CLASSES.text()))
        except ValueError as exc:
            raise ValueError(f"{TRAFFIC_CLASSES.name}: {exc}") from None
    names = tuple(dict.fromkeys(_valid_class(_class_name(c)) for c in classes))
    if not names or len(names) > MAX_CLASSES:
        raise ValueError(f"between 1 and {MAX_CLASSES} traffic classes are needed, got {names!r}")
    return names


def _class_name(name: object) -> str:
    """A class name as given in code, stripped and lowercased as the environment's are."""
    if not isinstance(name, str):
        raise TypeError(f"a traffic class name is a str, got {name!r}")
    return name.strip().lower()


def _route_rules(routes: Mapping[str, str]) -> dict[str, str]:
    """``routes`` as given in code, their class names read as :func:`_class_name` reads ``classes``: ``{"/x":
    "Batch"}`` names the class ``batch``, as ``classes=["Batch"]`` does."""
    rules: dict[str, str] = {}
    for pattern, name in dict(routes).items():
        if not isinstance(pattern, str):
            raise TypeError(f"a route rule's pattern is a str, got {pattern!r}")
        if not pattern.strip():
            raise ValueError(f"a route rule's pattern is a route template or glob, got {pattern!r}")
        rules[pattern.strip()] = _class_name(name)
    return rules


def _as_path(route: str) -> str:
    """``route`` as the URL path it matches begins: Django writes its templates without the leading slash
    (``v1/bulk/<int:n>/``, a ``re_path``'s ``^v1/bulk/(?P<n>[0-9]+)/$``), so a rule written as the path
    (``/v1/bulk/*``) matches them too."""
    if route.startswith("/") or route == UNMATCHED_ROUTE:
        return route
    return "/" + route.removeprefix("^")


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def parse_classes(text: str) -> list[str]:
    """``"realtime, batch"`` -> ``["realtime", "batch"]``."""
    return [c.strip() for c in text.replace(";", ",").split(",") if c.strip()]


_OPENERS = {"(": ")", "[": "]", "{": "}"}


def split_rules(text: str) -> list[str]:
    """``text`` split at the commas outside brackets: a route template's own commas (a regex route's ``{1,3}`` or
    ``[,;]``, a group's ``(a|b,c)``) stay in it. A bracket that never closes, or closes nothing, is text: it
    does not join the rules after it into one."""
    unclosed: set[int] = set()  # openers taken as text
    while True:
        parts, start, open_at = [], 0, []  # (closing character, position) of each bracket open here
        for i, c in enumerate(text):
            if c in _OPENERS and i not in unclosed:
                open_at.append((_OPENERS[c], i))
            elif open_at and c == open_at[-1][0]:
                open_at.pop()
            elif c == "," and not open_at:
                parts.append(text[start:i])
                start = i + 1
        if not open_at:
            return [*parts, text[start:]]
        unclosed.add(open_at[0][1])


def parse_routes(text: str) -> dict[str, str]:
    """``"/v1/bulk/*=batch, /train=batch"`` -> ``{"/v1/bulk/*": "batch", "/train": "batch"}``; a comma inside
    brackets is the route's (``"^items/[0-9]{1,3}/$=batch"``)."""
    rules: dict[str, str] = {}
    for part in split_rules(text):
        part = part.strip()
        if not part:
            continue
        pattern, sep, name = part.rpartition("=")
        if not sep or not pattern.strip() or not name.strip():
            raise ValueError(f"{TRAFFIC_CLASS_ROUTES.name}: {part!r} is not ROUTE=CLASS")
        rules[pattern.strip()] = name.strip().lower()
    return rules
