"""Hypothesis strategies for what an app puts into a Server-Timing value: phase names (RFC 9110 tokens, the only
names aiwatch.phase takes, of any length) and their durations, and service names (any text: quotes and backslashes
are escaped into two characters each in the total's desc, other control characters dropped)."""

from __future__ import annotations

from hypothesis import strategies as st

_tokens = st.from_regex(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,20}", fullmatch=True).filter(
    lambda name: name not in ("overhead", "total"))
#: a token, padded up to past the cap: left to itself Hypothesis draws short names and short lists
_names = st.builds(lambda token, pad: token + "y" * pad, _tokens, st.sampled_from([0, 0, 5, 40, 300, 1100]))
_seconds = st.floats(0.0, 1e9)
#: a service name: any text, or text of the characters that escaping doubles or drops; without blanks around it
#: (a recorder drops them, and refuses a name of blanks alone: tests/test_env.py)
SERVICES = (st.text(min_size=1, max_size=400) | st.text(alphabet='"\\\t\x01 aé\u2603', min_size=1, max_size=400)
            ).map(str.strip).filter(bool)
#: a request's phases, (name, seconds): a few of distinct names, or up to 300 of one shape
PHASES = st.lists(st.tuples(_names, _seconds), max_size=60, unique_by=lambda p: p[0]) | st.builds(
    lambda count, pad, seconds: [(f"p{i}" + "z" * pad, seconds) for i in range(count)],
    st.integers(0, 300), st.integers(0, 60), _seconds)
