from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiwatch.servertiming import (
    Entry,
    fit,
    format_server_timing,
    parse,
    parse_server_timing,
    printable_ascii,
    quote,
    server_total,
    timing_tail,
)
from aiwatch.timing import RESERVED_PHASES


def test_round_trip() -> None:
    value = format_server_timing([("features", 0.012), ("inference", 0.030)], overhead=0.003, total=0.045)
    parsed = parse_server_timing(value)
    assert parsed == pytest.approx({"features": 0.012, "inference": 0.030, "overhead": 0.003, "total": 0.045})


def test_other_servers_entries() -> None:
    parsed = parse_server_timing('cache;desc="Cache Read";dur=23.2, db;dur=53, app;dur=47.2, miss')
    assert parsed == pytest.approx({"cache": 0.0232, "db": 0.053, "app": 0.0472})
    assert server_total("db;dur=53") is None


@pytest.mark.parametrize("bad", ["total;dur=abc", "total;dur=-1", "bad name;dur=1", "total;dur=nan", "total;dur",
                                 "total;dur=1e400", 'total;dur="5', "total;dur=5 x", "total;=5", ";dur=5"])
def test_malformed_values_raise_naming_the_entry(bad: str) -> None:
    with pytest.raises(ValueError, match="malformed Server-Timing"):
        parse_server_timing(bad)


@pytest.mark.parametrize("bad", ["db;dur=abc", "db;dur=-1", "db;dur=nan", "db;dur=1e400", "db;desc=x;dur=5ms"])
def test_a_bad_duration_is_refused_naming_its_entry(bad: str) -> None:
    with pytest.raises(ValueError, match=r"^malformed Server-Timing entry 'db': dur"):
        parse_server_timing(bad)


def test_a_quoted_desc_may_hold_commas_and_semicolons() -> None:
    assert parse_server_timing('db;desc="a, b";dur=5, total;dur=10') == pytest.approx({"db": 0.005, "total": 0.010})
    assert parse('db;desc="x;y=1, z"').entries == (Entry("db", None, "x;y=1, z"),)


def test_a_desc_cannot_forge_the_total() -> None:
    assert server_total('db;desc="x, total;dur=900000";dur=1, total;dur=10') == pytest.approx(0.010)
    assert server_total('db;desc="x, total;dur=900000"') is None


def test_the_first_dur_and_the_first_entry_of_a_name_win_but_the_last_total() -> None:
    assert parse_server_timing("db;dur=5;dur=7, db;dur=9") == pytest.approx({"db": 0.005})
    # the total aiwatch's server appends comes after any the app forwarded
    assert server_total("total;dur=10, total;dur=20;dur=30") == pytest.approx(0.020)
    timing = parse('total;dur=10;desc="upstream";attempt=2, total;dur=20;desc="gateway"')
    assert (timing.service, timing.retried) == ("gateway", False)
    assert parse('total;dur=10;desc="gateway", total;dur=20').service is None  # the last total names no one


def test_the_total_carries_the_service_name() -> None:
    value = format_server_timing([], overhead=0.001, total=0.002, service='we"ird\\name')
    assert parse(value).service == 'we"ird\\name'
    assert parse("total;dur=2").service is None


# --- property tests against a reference built from the spec's ABNF -------------------------------------------
TCHAR = "!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits
tokens = st.text(alphabet=TCHAR, min_size=1, max_size=8)
ows = st.text(alphabet=" \t", max_size=2)
QDTEXT = "\t " + "".join(chr(c) for c in [0x21, *range(0x23, 0x5C), *range(0x5D, 0x7F), *range(0x80, 0x100)])
quoted_content = st.text(alphabet=QDTEXT + '"\\', max_size=12)
durations = st.floats(0, 1e9, allow_nan=False).map(lambda v: f"{v:.3f}")


# aiwatch's extension parameter of the total entry: a whole number from 1 to 9999999999, or refused; its text as the
# other parameters', as a token or quoted
attempts = st.one_of(st.integers(0, 10**11).map(str), st.sampled_from(["-2", "2.0", "01", "0000000001", "two"]))


@st.composite
def params(draw: st.DrawFn) -> tuple[str, str, str]:
    """(name, decoded value, wire form) of one server-timing-param."""
    name = draw(st.one_of(st.sampled_from(["dur", "DUR", "desc", "Desc", "attempt", "Attempt"]), tokens))
    if name.lower() == "dur":
        value = draw(durations)
        wire = draw(st.sampled_from([value, f'"{value}"']))
    elif name.lower() == "attempt" and draw(st.booleans()):
        value = draw(attempts)
        wire = draw(st.sampled_from([value, f'"{value}"']))
    else:
        value = draw(st.one_of(tokens, quoted_content))
        wire = value if value and all(c in TCHAR for c in value) and draw(st.booleans()) else quote(value)
    return name, value, f"{name}{draw(ows)}={draw(ows)}{wire}"


@st.composite
def headers(draw: st.DrawFn) -> tuple[str, list[Entry] | None]:
    """A Server-Timing value and its entries, or None where aiwatch refuses it: a ``total`` entry whose first
    ``attempt`` is no whole number from 1 to 9999999999 (on another entry, ``attempt`` is any server's parameter)."""
    entries: list[Entry] = []
    wires: list[str] = []
    refused = False
    for _ in range(draw(st.integers(0, 5))):
        name = draw(st.one_of(tokens, st.sampled_from(["total", "Total"])))
        wire = name
        dur: float | None = None
        desc: str | None = None
        attempt: int | None = None
        seen: set[str] = set()
        for pname, value, pwire in draw(st.lists(params(), max_size=4)):
            wire += f"{draw(ows)};{draw(ows)}{pwire}"
            key = pname.lower()
            if key == "dur" and key not in seen:
                dur = float(value) / 1000.0
            if key == "desc" and key not in seen:
                desc = value
            if key == "attempt" and key not in seen and name == "total":
                if value.isascii() and value.isdigit() and len(value) <= 10 and int(value) >= 1:
                    attempt = int(value)
                else:
                    refused = True
            seen.add(key)
        entries.append(Entry(name, dur, desc, attempt))
        wires.append(wire)
    separators = [draw(st.sampled_from([",", ", ", " ,", ",\t", ",,"])) for _ in wires]
    text = draw(ows) + "".join(w + (sep if i < len(wires) - 1 else "") for i, (w, sep) in
                               enumerate(zip(wires, separators, strict=True))) + draw(ows)
    return text, None if refused else entries


@settings(max_examples=400, deadline=None)
@given(headers())
def test_every_value_the_grammar_allows_parses_to_its_entries(case: tuple[str, list[Entry] | None]) -> None:
    text, expected = case
    if expected is None:
        with pytest.raises(ValueError, match=r"^malformed Server-Timing entry 'total': attempt="):
            parse(text)
        return
    got = parse(text).entries
    assert [(e.name, e.desc, e.attempt) for e in got] == [(e.name, e.desc, e.attempt) for e in expected]
    for g, e in zip(got, expected, strict=True):
        assert (g.seconds is None) == (e.seconds is None)
        if g.seconds is not None and e.seconds is not None:
            assert g.seconds == pytest.approx(e.seconds, rel=1e-12, abs=1e-12)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=60))
def test_any_text_parses_or_raises_value_error(text: str) -> None:
    try:
        parse(text)
    except ValueError as exc:
        assert "malformed Server-Timing" in str(exc)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(tokens.filter(lambda name: name not in RESERVED_PHASES), st.floats(0, 1e4)), max_size=4),
       st.floats(0, 1e4), st.text(max_size=20))
def test_format_then_parse_round_trips(phases: list[tuple[str, float]], total: float, service: str) -> None:
    timing = parse(format_server_timing(phases, overhead=None, total=total, service=service))
    assert timing.total == pytest.approx(total, abs=1e-6)
    kept = "".join(c for c in service if c == "\t" or " " <= c <= "~" or "\x80" <= c <= "\xff")
    assert timing.service == (kept or None)


@pytest.mark.parametrize(("value", "position", "char"), [("db;dur=1 x", 10, "x"), ("db;=1", 4, "=")])
def test_a_parse_error_points_at_the_offending_character_counted_from_one(value: str, position: int,
                                                                          char: str) -> None:
    assert value[position - 1] == char
    with pytest.raises(ValueError, match=f"at character {position} of "):
        parse(value)


def test_quote_keeps_tabs_and_drops_other_control_characters() -> None:
    assert quote("a\tb\x01c\x7f") == '"a\tbc"'


def test_quote_keeps_latin_1_from_its_first_to_its_last_character_and_drops_what_follows() -> None:
    assert quote("\x7f\x80\xff\u0100\u20ac") == '"\x80\xff"'


def test_the_total_of_a_retried_attempt_carries_its_number() -> None:
    value = format_server_timing([], overhead=0.001, total=0.002, service="infer", attempt=3)
    assert value == 'overhead;dur=1.000, total;dur=2.000;desc="infer";attempt=3'
    timing = parse(value)
    assert timing.get("total") == Entry("total", 0.002, "infer", 3)
    assert timing.retried
    assert not parse("total;dur=2;attempt=1").retried
    assert not parse("total;dur=2").retried
    assert not parse("db;dur=1;attempt=2, total;dur=2").retried  # only the total's attempt speaks for the call


@pytest.mark.parametrize("bad", ["total;dur=2;attempt=0", "total;dur=2;attempt=two", "total;dur=2;attempt=-2",
                                 "total;dur=2;attempt=2.0", "total;dur=2;attempt=12345678901"])
def test_an_attempt_that_is_no_count_is_refused_naming_its_entry(bad: str) -> None:
    with pytest.raises(ValueError, match=r"^malformed Server-Timing entry 'total': attempt=.* is not a whole number "
                                         r"from 1 to 9999999999$"):
        parse(bad)


def test_attempt_on_another_entry_is_any_servers_parameter_and_is_ignored() -> None:
    timing = parse("db;dur=1;attempt=two, cache;attempt=2, total;dur=2")
    assert timing.entries == (Entry("db", 0.001, None), Entry("cache", None, None), Entry("total", 0.002, None))
    assert not timing.retried


def test_the_first_attempt_of_an_entry_wins_and_a_later_one_is_not_read() -> None:
    assert parse("total;dur=2;attempt=2;attempt=0").retried
    assert not parse("total;dur=2;attempt=1;attempt=two").retried


@pytest.mark.parametrize(("name", "escaped"), [
    ("ranker", "ranker"), ("café-ranker", "caf%C3%A9-ranker"), ("推論", "%E6%8E%A8%E8%AB%96"),
    ("a%b", "a%b"), ("\U0001f600", "%F0%9F%98%80"), ("\ud800", "%ED%A0%80"),
    ("tab\there", "tab%09here"), ("a\x7fb\nc\x00", "a%7Fb%0Ac%00"), ("a b~", "a b~"),
    ("a b\t", "a b%09"),  # a space is kept on the escaping path too
])
def test_printable_ascii_escapes_what_is_not_ascii(name: str, escaped: str) -> None:
    assert printable_ascii(name) == escaped
    assert printable_ascii(name).isascii()


@pytest.mark.parametrize(("name", "limit", "cut"), [
    ("x" * 200, 128, "x" * 128),
    ("x" * 126 + "é", 128, "x" * 126),  # "%C3%A9" would pass 128: left out whole, never split
    ("x" * 122 + "é", 128, "x" * 122 + "%C3%A9"),
    ("x" * 126 + "\t", 128, "x" * 126),
    ("x" * 125 + "\t", 128, "x" * 125 + "%09"),
    ("ab", 128, "ab"),
])
def test_printable_ascii_cuts_at_its_limit_between_escapes(name: str, limit: int, cut: str) -> None:
    assert printable_ascii(name, limit) == cut


@settings(max_examples=300, deadline=None)
@given(st.text(), st.one_of(st.none(), st.integers(0, 200)))
def test_printable_ascii_gives_only_what_grpc_metadata_accepts_within_its_limit(text: str, limit: int | None) -> None:
    # any service name an operator sets (OTEL_SERVICE_NAME): the trailer's desc must never fail a call
    out = printable_ascii(text, limit)
    assert all(" " <= c <= "~" for c in out)
    assert limit is None or len(out) <= limit
    # it is a prefix of the whole escaping, cut between characters: no escape is ever split
    whole = printable_ascii(text, None) if limit is not None else out
    assert whole.startswith(out)
    assert limit is None or out == whole or len(out) + len(printable_ascii(text[len(_kept(text, out))], None)) > limit


def _kept(text: str, out: str) -> str:
    """The characters of ``text`` whose escapes make up ``out``."""
    kept = ""
    for c in text:
        if len(printable_ascii(kept + c, None)) > len(out):
            break
        kept += c
    return kept


END = "overhead;dur=0.000, total;dur=1.000"


@pytest.mark.parametrize("extra", [0, 1, 40])
def test_fit_keeps_a_value_at_or_under_its_limit_whole(extra: int) -> None:
    entries = "a;dur=1.000, bb;dur=2.000, "
    limit = len(entries) + len(END) + extra  # extra 0: exactly at the limit
    assert fit(entries, END, limit) == (entries + END, 0)


def test_fit_leaves_out_each_entry_that_would_pass_the_limit_and_keeps_later_shorter_ones() -> None:
    a, long, b, c = "a;dur=1.000", "long_phase_name;dur=2.000", "b;dur=3.000", "c;dur=4.000"
    entries = f"{a}, {long}, {b}, {c}, "
    # room for exactly two short entries (each with its ", "): the long one is left out, b fills the room, c is out
    limit = len(END) + 2 * (len(a) + 2)
    assert fit(entries, END, limit) == (f"{a}, {b}, " + END, 2)
    # one character less: a only, the room then one short of b
    assert fit(entries, END, limit - 1) == (f"{a}, " + END, 3)
    # one character more than the whole value needs to fall back: the whole value
    assert fit(entries, END, len(entries) + len(END)) == (entries + END, 0)


def test_fit_keeps_the_end_alone_when_no_entry_fits_or_there_is_none() -> None:
    assert fit("abc;dur=1.000, ", END, len(END)) == (END, 1)
    assert fit("", END, len(END) - 5) == (END, 0)  # an end past the limit on its own is returned as it is
    assert fit("a;dur=1.000, b;dur=2.000, ", END, len(END) - 5) == (END, 2)


@settings(max_examples=300, deadline=None)
@given(names=st.lists(st.text(string.ascii_letters + "_", min_size=1, max_size=30), max_size=40),
       limit=st.integers(len(END), 800))
def test_fit_keeps_the_entries_in_order_within_the_limit_and_counts_the_others(names: list[str], limit: int) -> None:
    phases = [f"{name};dur={i}.000" for i, name in enumerate(names)]
    entries = "".join(entry + ", " for entry in phases)
    value, left_out = fit(entries, END, limit)
    assert len(value) <= limit and value.endswith(END)
    kept = value[:-len(END)]
    assert kept == "".join(entry + ", " for entry in phases if entry + ", " in kept)  # in order, whole
    assert left_out == len(phases) - kept.count(", ")
    # greedy: each left-out entry would not have fitted in the room left when it came
    room = limit - len(END)
    for entry in phases:
        if entry + ", " in kept:
            room -= len(entry) + 2
        else:
            assert len(entry) + 2 > room
    assert (left_out == 0) == (len(entries) + len(END) <= limit)


def test_the_timing_tail_carries_the_service_name_as_latin1_on_http_and_escaped_on_grpc() -> None:
    assert timing_tail("café") % (1, 2) == 'overhead;dur=1.000, total;dur=2.000;desc="café"'
    assert timing_tail("café", ascii_only=True) % (1, 2) == 'overhead;dur=1.000, total;dur=2.000;desc="caf%C3%A9"'


def test_the_timing_tail_carries_at_most_128_characters_of_the_service_name() -> None:
    assert timing_tail("x" * 200) % (1, 2) == f'overhead;dur=1.000, total;dur=2.000;desc="{"x" * 128}"'
    # on gRPC cut between escapes: 21 escaped characters of 6 each
    assert timing_tail("é" * 100, ascii_only=True) % (1, 2) == (
        f'overhead;dur=1.000, total;dur=2.000;desc="{"%C3%A9" * 21}"')
