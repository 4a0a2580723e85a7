"""tests/conftest.py's groups reach pytest-xdist: under ``--dist loadgroup`` (scripts/test.sh) a module's tests, and
the console's and diagnose's shared stacks, run on one worker, so each module- or session-scoped stack starts once."""

from __future__ import annotations

import pytest


def test_this_test_is_scheduled_with_its_modules_group(request: pytest.FixtureRequest) -> None:
    if not getattr(request.config.option, "loadgroup", False):  # set in each worker of --dist loadgroup
        pytest.skip("only pytest-xdist's --dist loadgroup schedules by group (scripts/test.sh runs it so)")
    # xdist's worker appends the group to the id it schedules by; with no mark it schedules each test on its own
    assert request.node.nodeid.endswith("@test_xdist_groups.py"), request.node.nodeid
