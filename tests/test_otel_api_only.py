"""The core needs opentelemetry-api only: with opentelemetry-sdk made unimportable (a meta-path blocker installed
by a sitecustomize), ``import aiwatch``, every module, the middleware with tracing off and the CLI work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.servers import python_env

pytestmark = pytest.mark.slow  # subprocesses

BLOCKER = '''\
import sys


class _NoOpenTelemetrySdk:
    """As if opentelemetry-sdk were not installed (tests/test_otel_api_only.py)."""

    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry.sdk" or name.startswith("opentelemetry.sdk."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NoOpenTelemetrySdk())
'''


@pytest.fixture
def no_sdk_env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    env = python_env()
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    return env


def _python(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=120, check=False)


def _probe(env: dict[str, str], mode: str) -> dict[str, Any]:
    result = _python(env, "-m", "tests.api_only_probe", mode)
    assert result.returncode == 0, result.stderr
    out: dict[str, Any] = json.loads(result.stdout)
    return out


def test_the_blocker_makes_the_sdk_unimportable(no_sdk_env: dict[str, str]) -> None:
    result = _python(no_sdk_env, "-c", "import opentelemetry.sdk.trace")
    assert result.returncode == 1
    assert "ModuleNotFoundError: No module named 'opentelemetry.sdk'" in result.stderr
    assert _python(no_sdk_env, "-c", "import opentelemetry.trace").returncode == 0  # the API is still there


def test_every_aiwatch_module_imports_without_the_sdk(no_sdk_env: dict[str, str]) -> None:
    out = _probe(no_sdk_env, "modules")
    assert out["failed"] == {}
    # opentelemetry-instrumentation (the otel extra) may be absent too, where only the core is installed
    assert not [why for why in out["missing_extra"].values() if "opentelemetry.sdk" in why or "-sdk" in why]
    for core in ("aiwatch", "aiwatch.tracing", "aiwatch.timing", "aiwatch.middleware.asgi",
                 "aiwatch.middleware.wsgi", "aiwatch.cli", "aiwatch.drift.monitor", "aiwatch.rules.render"):
        assert core in out["imported"]
    assert out["sdk_loaded"] == []


def test_middleware_records_requests_with_tracing_off_without_the_sdk(no_sdk_env: dict[str, str]) -> None:
    out = _probe(no_sdk_env, "middleware")
    assert out.pop("tracing_off") is True
    assert out.pop("sdk_loaded") == []
    assert sorted(out) == ["asgi/api-noop", "asgi/none", "wsgi/api-noop", "wsgi/none"]
    for case, seen in out.items():
        assert seen["status"] == 200, case
        assert seen["requests"] == 1 and seen["inference"] == 1, case
        assert "inference;dur=" in seen["server_timing"], case
        assert seen["errors"] == 0, case


def test_cli_help_without_the_sdk(no_sdk_env: dict[str, str]) -> None:
    result = _python(no_sdk_env, "-m", "aiwatch", "--help")
    assert result.returncode == 0, result.stderr
    assert "rules" in result.stdout and "drift" in result.stdout
    for command in ("rules", "drift", "metrics", "console"):
        sub = _python(no_sdk_env, "-m", "aiwatch", command, "--help")
        assert sub.returncode == 0, (command, sub.stderr)
