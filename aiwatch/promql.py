r"""PromQL text: string literals, label matchers, selectors, contract metric names and a few expression shapes.

Every PromQL expression aiwatch writes (the alert rules, the console's panels and the Grafana dashboard, the fleet
drift expressions, the autoscaling signals) is built with this module, so label values are quoted one way and every
metric name is checked against the contract in :mod:`aiwatch.metrics`.

    >>> REQUESTS = metric("aiwatch_request_duration_seconds")
    >>> print(series(REQUESTS.count, eq("service", 'a"b\\c}'), 'status=~"5.."'))
    aiwatch_request_duration_seconds_count{service="a\"b\\c}", status=~"5.."}
    >>> print(selector(one_of("model", ["v1.2", "x|y"])))
    {model=~"v1\\.2|x\\|y"}

A matcher is a :class:`Matcher` (built by :func:`eq`, :func:`ne`, :func:`matches`, :func:`not_matches`,
:func:`one_of`) or PromQL matcher text such as ``'service=~"$service"'``, which is parsed and written back the same
way (so text from a config file or a Grafana variable is validated, never pasted).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from aiwatch.metrics import SPECS

Op = Literal["=", "!=", "=~", "!~"]

LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_OPS: tuple[Op, ...] = ("=~", "!~", "!=", "=")

# --- string literals ----------------------------------------------------------------------------------------------

_NAMED_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_NEEDS_ESCAPE = re.compile(r'[\\"\x00-\x1f\x7f]')
_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    return _NAMED_ESCAPES.get(char) or f"\\x{ord(char):02x}"


def _escape_unprintable(match: re.Match[str]) -> str:
    char = match.group()
    if char.isprintable():
        return char
    return f"\\u{ord(char):04x}" if ord(char) <= 0xFFFF else f"\\U{ord(char):08x}"


def quote(value: str) -> str:
    r"""``value`` as a PromQL double-quoted string literal (Go's escaping: backslash, double quote, newline and the
    other control characters are escaped, and so is every character that is not printable, such as NEL or U+2028,
    which YAML readers would take for a line break; printable UTF-8 is written as is).

    >>> print(quote('a"b\\c\n'), quote("x\u2028y"))
    "a\"b\\c\n" "x\u2028y"
    """
    text = _NEEDS_ESCAPE.sub(_escape_char, value)
    return '"' + _NON_ASCII.sub(_escape_unprintable, text) + '"'


_SIMPLE_UNESCAPES = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92}


def unquote(literal: str) -> str:
    r"""The value of a PromQL string literal in double quotes, single quotes or backticks, with PromQL's (Go's)
    escape sequences; raises ``ValueError`` for anything PromQL would reject (a raw newline, an unknown escape).

    >>> unquote(r'"a\"b\n"'), unquote(r"'it\'s'"), unquote(r'`C:\dir`')
    ('a"b\n', "it's", 'C:\\dir')
    """

    if len(literal) < 2 or literal[0] not in "\"'`" or literal[-1] != literal[0]:
        raise ValueError(f"not a PromQL string literal: {literal!r}")
    quote_char, body = literal[0], literal[1:-1]
    if quote_char == "`":
        if "`" in body:
            raise ValueError(f"unescaped backtick in {literal!r}")
        return body
    if "\n" in body:
        raise ValueError(f"raw newline in {literal!r}: write \\n")
    out = bytearray()
    i = 0
    while i < len(body):
        char = body[i]
        if char == quote_char:
            raise ValueError(f"unescaped {char} in {literal!r}")
        if char != "\\":
            out += char.encode()
            i += 1
            continue
        if i + 1 >= len(body):
            raise ValueError(f"string literal ends in a lone backslash: {literal!r}")
        kind = body[i + 1]
        if kind in _SIMPLE_UNESCAPES:
            out.append(_SIMPLE_UNESCAPES[kind])
            i += 2
        elif kind in "'\"":
            if kind != quote_char:
                raise ValueError(f"\\{kind} is not an escape inside {quote_char}...{quote_char}: {literal!r}")
            out.append(ord(kind))
            i += 2
        elif kind in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[kind]
            digits = body[i + 2:i + 2 + width]
            if len(digits) != width or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise ValueError(f"\\{kind} needs {width} hex digits in {literal!r}")
            code = int(digits, 16)
            if kind == "x":
                out.append(code)
            elif code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                raise ValueError(f"\\{kind}{digits} is not a Unicode code point: {literal!r}")
            else:
                out += chr(code).encode()
            i += 2 + width
        elif kind in "01234567":
            digits = body[i + 1:i + 4]
            if len(digits) != 3 or not all(c in "01234567" for c in digits) or int(digits, 8) > 255:
                raise ValueError(f"octal escape needs 3 digits up to \\377 in {literal!r}")
            out.append(int(digits, 8))
            i += 4
        else:
            raise ValueError(f"unknown escape \\{kind} in {literal!r} (a regex backslash is written \\\\)")
    try:
        return out.decode()
    except UnicodeDecodeError:
        raise ValueError(f"string literal is not valid UTF-8 once unescaped: {literal!r}") from None


# --- regular expressions ------------------------------------------------------------------------------------------

_REGEX_SPECIALS = re.compile(r"[.^$*+?()\[\]{}|\\]")


def escape_regex(value: str) -> str:
    r"""A regular expression (RE2, as Prometheus uses) matching exactly ``value``.

    >>> escape_regex("v1.2|x")
    'v1\\.2\\|x'
    """
    return _REGEX_SPECIALS.sub(lambda m: "\\" + m.group(), value)


#: RE2 constructs that Go's regexp (Prometheus' engine) rejects although the RE2 library accepts them: ``\C`` (any
#: byte) and ``(?<name>...)`` (accepted from Go 1.22 only).
_NOT_IN_GO = re.compile(r"(?<!\\)(?:\\\\)*(\\C|\(\?<)")
MAX_REGEX_LENGTH = 4096


def check_regex(regex: str) -> str:
    r"""``regex`` if Prometheus can compile it (RE2 syntax, as Go's regexp reads it), else ``ValueError`` saying why.

    Compiled on its own (so ``a)|(b``, which would escape the anchoring group, is refused) and as Prometheus compiles a
    matcher's regex, anchored: ``^(?:regex)$`` (so ``\Q`` with no ``\E``, which would quote the closing parenthesis,
    is refused), with the RE2 library (``google-re2``, the ``rules`` extra), minus
    what Go's regexp does not accept.

    >>> check_regex("5..|UNKNOWN")
    '5..|UNKNOWN'
    >>> check_regex("(?=x)")
    Traceback (most recent call last):
    ...
    ValueError: not an RE2 regular expression: '(?=x)' (invalid perl operator: (?=)
    """
    from aiwatch._optional import require

    if len(regex) > MAX_REGEX_LENGTH:
        raise ValueError(f"regular expression longer than {MAX_REGEX_LENGTH} characters")
    try:
        alone, anchored = regex.encode(), f"^(?:{regex})$".encode()
    except UnicodeEncodeError:
        raise ValueError(f"not valid UTF-8: {regex!r}") from None
    go_only = _NOT_IN_GO.search(regex)
    if go_only:
        raise ValueError(f"not an RE2 regular expression Prometheus accepts: {regex!r} ({go_only.group(1)} is not "
                         "supported by Go's regexp)")
    re2 = require("re2", "rules")
    options = re2.Options()
    options.log_errors = False
    for pattern in (alone, anchored):  # alone: "a)|(b" would escape Prometheus' anchoring group
        try:
            re2.compile(pattern, options)
        except re2.error as exc:
            detail = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) \
                else str(exc)
            raise ValueError(f"not an RE2 regular expression: {regex!r} ({detail})") from None
    return regex


def alternatives(values: Iterable[str]) -> str:
    """A regular expression matching exactly one of ``values`` (PromQL anchors ``=~`` at both ends)."""
    return "|".join(escape_regex(v) for v in values)


# --- matchers and selectors ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Matcher:
    """One label matcher: ``label``, operator ``op`` and the (unquoted) ``value``, a regex for ``=~``/``!~``."""

    label: str
    op: Op
    value: str

    def __post_init__(self) -> None:
        check_label_name(self.label)
        if self.op not in _OPS:
            raise ValueError(f"not a PromQL matcher operator: {self.op!r}")

    def __str__(self) -> str:
        return f"{self.label}{self.op}{quote(self.value)}"


def check_label_name(name: str) -> str:
    """``name`` if it is a Prometheus label name, else ``ValueError``."""
    if not LABEL_NAME.fullmatch(name):
        raise ValueError(f"not a Prometheus label name: {name!r}")
    return name


def eq(label: str, value: str) -> Matcher:
    """``label="value"``."""
    return Matcher(label, "=", value)


def ne(label: str, value: str) -> Matcher:
    """``label!="value"``."""
    return Matcher(label, "!=", value)


def matches(label: str, regex: str) -> Matcher:
    """``label=~"regex"`` (``regex`` is RE2 text; it is quoted here, not escaped)."""
    return Matcher(label, "=~", regex)


def not_matches(label: str, regex: str) -> Matcher:
    """``label!~"regex"``."""
    return Matcher(label, "!~", regex)


def one_of(label: str, values: Iterable[str]) -> Matcher:
    """``label=~"..."`` matching exactly the given literal values."""
    return Matcher(label, "=~", alternatives(values))


_STRING = r'"(?:[^"\\\n]|\\.)*"|' r"'(?:[^'\\\n]|\\.)*'|`[^`]*`"
_MATCHER = re.compile(rf"\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*({_STRING})\s*(,|$)", re.S)


@functools.lru_cache(maxsize=512)  # the same few selectors are parsed on every console refresh
def parse_matchers(text: str) -> tuple[Matcher, ...]:
    r"""The matchers of PromQL matcher text without braces (``'service="x", phase=~"a|b"'``; a trailing comma and
    blanks are allowed). ``ValueError`` names the part that is not a matcher.

    >>> parse_matchers(r'service="a\"b", phase!~' + "'queue|overhead',")
    (Matcher(label='service', op='=', value='a"b'), Matcher(label='phase', op='!~', value='queue|overhead'))
    """
    found: list[Matcher] = []
    pos = 0
    while pos < len(text) and text[pos:].strip():
        match = _MATCHER.match(text, pos)
        if match is None:
            raise ValueError(f"not a PromQL label matcher at {text[pos:].strip()!r}")
        label, op, literal, _ = match.groups()
        found.append(Matcher(label, op, unquote(literal)))  # type: ignore[arg-type]
        pos = match.end()
    return tuple(found)


def matchers_of(items: Iterable[Matcher | str]) -> tuple[Matcher, ...]:
    """Matchers from :class:`Matcher` objects and matcher text (parsed), empty strings skipped."""
    out: list[Matcher] = []
    for item in items:
        out.extend((item,) if isinstance(item, Matcher) else parse_matchers(item))
    return tuple(out)


def check_selection(text: str, what: str) -> str:
    """``text`` if it is PromQL label matchers (:func:`parse_matchers`) whose regexes Prometheus compiles
    (:func:`check_regex`), else ``ValueError`` naming ``what`` (the option or variable that gave it): a regex
    Prometheus refuses would fail every query it is added to.

    >>> check_selection('cluster=~"eu-("', "--match")
    Traceback (most recent call last):
    ...
    ValueError: --match: the regex of cluster=~"eu-(" is one Prometheus cannot compile: not an RE2 regular ...
    """
    try:
        found = parse_matchers(text)
    except ValueError as exc:
        raise ValueError(f"{what}: {text!r} is not PromQL label matchers ({exc})") from None
    for m in found:
        if m.op in ("=~", "!~"):
            try:
                check_regex(m.value)
            except ValueError as exc:
                raise ValueError(f"{what}: the regex of {m} is one Prometheus cannot compile: {exc}") from None
    return text


def selector(*matchers: Matcher | str) -> str:
    """``{a="x", b=~"y"}`` from the matchers, or ``""`` when there are none."""
    found = matchers_of(matchers)
    return "{" + ", ".join(map(str, found)) + "}" if found else ""


def series(name: str | Metric, *matchers: Matcher | str) -> str:
    """An instant vector selector: ``name{matchers}``."""
    return f"{name}{selector(*matchers)}"


# --- metric names from the contract -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """A metric of the contract as PromQL names it; ``str()`` is its name, histograms add their series."""

    name: str
    kind: str

    def __str__(self) -> str:
        return self.name

    def _part(self, suffix: str) -> str:
        if self.kind != "histogram":
            raise ValueError(f"{self.name} is a {self.kind}, it has no {suffix} series")
        return self.name + suffix

    @property
    def bucket(self) -> str:
        return self._part("_bucket")

    @property
    def sum(self) -> str:
        return self._part("_sum")

    @property
    def count(self) -> str:
        return self._part("_count")


def metric(name: str) -> Metric:
    """The contract's metric ``name`` (:data:`aiwatch.metrics.SPECS`); ``LookupError`` if the contract has no such
    metric, so a module that names its metrics at import time fails at import, not at query time."""
    spec = SPECS.get(name)
    if spec is None:
        raise LookupError(f"{name!r} is not a metric of the contract (aiwatch/metrics.py)")
    return Metric(spec.name, spec.kind)


# --- expression shapes --------------------------------------------------------------------------------------------


def number(value: float) -> str:
    """A finite float as PromQL text, in the shortest form that reads back as the same float (``0.5``, ``14.4``,
    ``1e-05``, ``123456789012.5``; never rounded). ``ValueError`` for NaN and infinities, which a threshold must
    never be.

    >>> number(0.99), number(14.0), number(1e-7), number(123456789012.5)
    ('0.99', '14', '1e-07', '123456789012.5')
    """
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {value!r}")
    return repr(value).removesuffix(".0")


# --- aggregation labels -------------------------------------------------------------------------------------------

DEFAULT_AGGREGATION_LABELS: tuple[str, ...] = ("cluster", "namespace")
"""The labels every aggregation keeps by default, so that Prometheus federations (Thanos, Mimir) never sum series of
different clusters or namespaces. A label a series lacks groups as empty, so a single cluster without a ``cluster``
label gives the same answers as before."""


def scoped(scope: Sequence[str], labels: Sequence[str]) -> tuple[str, ...]:
    """``scope`` then ``labels``, each label once.

    >>> scoped(("cluster", "namespace"), ("service", "cluster"))
    ('cluster', 'namespace', 'service')
    """
    return tuple(dict.fromkeys((*scope, *labels)))


def label_list(text: str, what: str = "labels") -> tuple[str, ...]:
    """Label names written ``a, b`` or ``a b`` (``none`` or nothing for none); ``ValueError`` for a name that is no
    Prometheus label name (or a reserved ``__`` one).

    >>> label_list("cluster, namespace"), label_list("none")
    (('cluster', 'namespace'), ())
    """
    names = [n for n in text.replace(",", " ").split() if n]
    if names == ["none"]:
        return ()
    for name in names:
        if not LABEL_NAME.fullmatch(name) or name.startswith("__"):
            raise ValueError(f"{what}: {name!r} is not a label name")
    return tuple(dict.fromkeys(names))


def by(aggregation: str, labels: Sequence[str], expr: str) -> str:
    """``aggregation by (labels) (expr)``; without labels, ``aggregation(expr)``."""
    if not labels:
        return f"{aggregation}({expr})"
    return f"{aggregation} by ({', '.join(check_label_name(label) for label in labels)}) ({expr})"


def rate(name: str | Metric, window: str, *matchers: Matcher | str) -> str:
    """``rate(name{matchers}[window])``."""
    return f"rate({series(name, *matchers)}[{window}])"


def increase(name: str | Metric, window: str, *matchers: Matcher | str) -> str:
    """``increase(name{matchers}[window])``."""
    return f"increase({series(name, *matchers)}[{window}])"


def histogram_quantile(q: float, histogram: Metric, window: str, labels: Sequence[str],
                       *matchers: Matcher | str) -> str:
    """The ``q`` quantile of a contract histogram over ``window``, per ``labels`` (summed over everything else)."""
    return f"histogram_quantile({number(q)}, {by('sum', [*labels, 'le'], rate(histogram.bucket, window, *matchers))})"


_QUANTILE = re.compile(r"histogram_quantile\(([^,()]+), (.+)\)", re.DOTALL)


def quantile_parts(expr: str) -> tuple[float, str] | None:
    """The quantile and the bucket rates (``sum by (..., le) (rate(..._bucket[w]))``) of an expression
    :func:`histogram_quantile` wrote; None for any other expression.

    >>> quantile_parts(histogram_quantile(0.99, metric("aiwatch_queue_wait_seconds"), "1m", ["queue"]))
    (0.99, 'sum by (queue, le) (rate(aiwatch_queue_wait_seconds_bucket[1m]))')
    """
    found = _QUANTILE.fullmatch(expr)
    if found is None:
        return None
    try:
        return float(found.group(1)), found.group(2)
    except ValueError:
        return None
