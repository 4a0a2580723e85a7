"""diagnose's text report with names from traffic: control characters escaped, and the table still a table."""

from __future__ import annotations

from aiwatch.diagnose import diagnose_windows, format_diagnosis
from aiwatch.diagnose.report import ms
from aiwatch.diagnose.window import WindowTotals
from tests.diagnose.simulate import Service, World


def report(gateway: str, peer: str) -> str:
    def world(network: float) -> World:
        return World({
            gateway: Service(gateway, {"features": 0.004, "call": 0.0005, "overhead": 0.001},
                             {"call": [(peer, network, 1)]}),
            peer: Service(peer, {"queue": 0.002, "inference": 0.03}),
        })

    before: WindowTotals = world(0.005).window(gateway, 500, seed=1)
    after = world(0.1).window(gateway, 500, seed=2, start=60)
    return format_diagnosis(diagnose_windows(before, after, gateway))


def table_rows(text: str) -> list[str]:
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("  part "))
    rows = []
    for line in lines[first:]:
        if not line.startswith("  ") or line.startswith("  ..."):
            break
        rows.append(line)
    return rows


def test_control_characters_are_escaped_and_the_columns_stay_aligned() -> None:
    text = report("gw\x1b[2J", "inf\nerence\x07")
    assert "\x1b" not in text and "\x07" not in text
    assert "gw\\x1b[2J" in text and "inf\\nerence\\x07" in text
    rows = table_rows(text)
    assert len(rows) > 3
    # the header's 'baseline' column ends where every row's baseline value ends
    end = rows[0].index("baseline") + len("baseline")
    for row in rows[1:]:
        assert row[end - 1] != " " and row[end] == " ", row


def test_a_very_long_name_does_not_widen_every_row() -> None:
    text = report("gw", "inference-" + "x" * 5000)
    rows = table_rows(text)
    short = [row for row in rows if "x" * 100 not in row]
    assert short and all(len(row) < 200 for row in short)
    assert "inference-" + "x" * 5000 in text  # the name itself is shown whole


def test_a_part_that_did_not_move_is_never_shown_as_minus_zero() -> None:
    # the unaccounted time is 0 up to rounding (-1e-17 s): shown "0.0", not "-0.0", in both windows' columns
    text = report("gw", "inference")
    assert " -0.0 " not in text and "(-0.0 ms)" not in text
    assert ms(-1e-17) == ms(1e-17) == ms(0.0) == "0.0"
    assert ms(-0.004) == "-4.0"


def test_a_name_holding_an_escape_sequence_as_text_reads_apart_from_the_escaped_character() -> None:
    # "gw\\x1b" (a backslash, then "x1b") and "gw\x1b" (ESC) must not print alike; a backslash is shown doubled
    as_text, as_control = report("gw\\x1b", "inference"), report("gw\x1b", "inference")
    assert "gw\\\\x1b" in as_text and "gw\\x1b" in as_control and "gw\\\\x1b" not in as_control
    assert as_text != as_control
    rows = table_rows(as_text)
    end = rows[0].index("baseline") + len("baseline")
    for row in rows[1:]:
        assert row[end - 1] != " " and row[end] == " ", row


def test_no_share_is_shown_of_an_added_time_within_the_noise() -> None:
    """The same service in both windows: every part moves by noise only, and the sum of the rises (a share's
    denominator) is noise too; a share of it read "-456% (within noise)" and "100% (within noise)"."""
    def world() -> World:
        return World({"gw": Service("gw", {"features": 0.004, "inference": 0.03, "overhead": 0.001})})

    before, after = world().window("gw", 2000, seed=1), world().window("gw", 2000, seed=2, start=60)
    text = format_diagnosis(diagnose_windows(before, after, "gw"))
    rows = table_rows(text)[1:]
    assert rows and all(row.split()[-3:] == ["-", "(within", "noise)"] for row in rows), rows
    moved = report("gw", "inference")  # the network to inference rose by 95 ms: its share is said
    assert any(row.split()[-1].endswith("%") for row in table_rows(moved)[1:])
