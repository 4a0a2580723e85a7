"""The package as a user meets it: the CLI's --version/--help, a light `import aiwatch`, and a public API that
resolves."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import aiwatch
from tests.servers import REPO, python_env

OPTIONAL = ("grpc", "pynvml", "streamlit", "evidently", "pandas", "redis", "fastapi", "starlette", "flask", "httpx",
            "requests", "yaml", "pyarrow", "scipy", "google.protobuf")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aiwatch", *args], capture_output=True, text=True, timeout=60,
                          env=python_env())


def test_version_and_help() -> None:
    version = _run("--version")
    assert version.returncode == 0
    assert version.stdout.strip() == f"aiwatch {aiwatch.__version__}"
    help_ = _run("--help")
    assert help_.returncode == 0
    for command in ("console", "demo", "diagnose", "drift", "gpu", "metrics", "profile", "rules"):
        assert command in help_.stdout, f"`aiwatch --help` does not list {command}"


def test_import_aiwatch_imports_no_optional_dependency() -> None:
    code = ("import sys, aiwatch\n"
            f"print(sorted(m for m in {OPTIONAL!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=python_env()).stdout
    assert out.strip() == "[]"


def test_every_public_name_is_the_object_its_module_defines_and_is_documented() -> None:
    lazy: dict[str, str] = aiwatch._LAZY  # type: ignore[attr-defined]
    assert set(lazy) <= set(aiwatch.__all__), "a lazy name missing from __all__"
    assert len(set(aiwatch.__all__)) == len(aiwatch.__all__)
    undocumented = []
    for name in aiwatch.__all__:
        value = getattr(aiwatch, name)
        if name in lazy:  # imported on first use: the very object of the module named in _LAZY
            assert value is getattr(importlib.import_module(lazy[name]), name), name
        else:
            assert name in vars(aiwatch), f"{name} is in __all__ but neither imported nor lazy"
        if (callable(value) or isinstance(value, type)) and not (getattr(value, "__doc__", "") or "").strip():
            undocumented.append(name)
    assert undocumented == [], f"public names without a docstring: {undocumented}"


BARE_INSTALL = '''\
import sys


class _BareInstall:
    """As if only aiwatch's core were installed: every module that aiwatch's require() calls ask for is missing
    (tests/test_package.py)."""

    def find_spec(self, name, path=None, target=None):
        if any(name == m or name.startswith(m + ".") for m in {modules!r}):
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, _BareInstall())
'''


@pytest.mark.slow  # a subprocess
def test_star_import_and_getmembers_work_on_a_bare_install(tmp_path: Path) -> None:
    """``from aiwatch import *`` raised MissingExtraError on an install without the extras (``__all__`` lists names
    whose modules need them); each such name is now a placeholder that raises it when used."""
    from tests.test_extras import require_calls

    (tmp_path / "sitecustomize.py").write_text(BARE_INSTALL.format(modules=sorted({m for _, m, _ in require_calls()})))
    env = python_env()
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    code = ("import inspect, sys, types, aiwatch\n"
            "from aiwatch import *\n"
            "from aiwatch.client import *\n"
            "members = dict(inspect.getmembers(aiwatch))\n"
            "print(sorted(set(aiwatch.__all__) - set(members)))\n"
            "print('grpc' in sys.modules, 'starlette' in sys.modules)\n"
            "print(instrument.__module__, make_wsgi_app.__module__)  # names the core serves are the real ones\n"
            "for use in (lambda: grpc_server_interceptor(), lambda: AiwatchGrpcInstrumentorServer.instrument,\n"
            "            lambda: types.new_class('Mine', (TimedJSONResponse,)),\n"
            "            lambda: isinstance(1, instrument_httpx)):\n"
            "    try:\n"
            "        use()\n"
            "    except ImportError as exc:\n"
            "        print(type(exc).__name__, exc)\n")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    missing, loaded, core, *used = result.stdout.splitlines()
    assert missing == "[]"
    assert loaded == "False False"
    assert core == "aiwatch.instrument_app aiwatch.exposition"
    assert used == [
        'MissingExtraError aiwatch.grpc_server_interceptor cannot be used: grpc is not installed; this aiwatch '
        'feature needs it: pip install "aiwatch[grpc]"',
        'MissingExtraError aiwatch.AiwatchGrpcInstrumentorServer cannot be used: grpc is not installed; this aiwatch '
        'feature needs it: pip install "aiwatch[grpc]"',
        'MissingExtraError aiwatch.TimedJSONResponse cannot be used: starlette is not installed; this aiwatch '
        'feature needs it: pip install "aiwatch[demo]"',
        'MissingExtraError aiwatch.client.instrument_httpx cannot be used: httpx is not installed; this aiwatch '
        'feature needs it: pip install "aiwatch[http]"',
    ]


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        aiwatch.nope  # noqa: B018


@pytest.mark.slow
def test_the_built_wheel_ships_every_runbook(tmp_path: Path) -> None:
    """``pip install aiwatch`` users get the runbooks: build the wheel from a copy of the sources (so no stale
    build/ of the checkout can leak into it) and read every alert's page from the wheel itself."""
    from aiwatch.rules import alerts, config_from_dict

    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "aiwatch", source / "aiwatch", ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                            "-q", "-w", str(tmp_path / "dist")], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (tmp_path / "dist").glob("aiwatch-*.whl")
    every_alert = sorted({a.name for a in alerts(config_from_dict({}))})
    with zipfile.ZipFile(wheel) as zf:
        shipped = sorted(n.removeprefix("aiwatch/runbooks/").removesuffix(".md") for n in zf.namelist()
                         if n.startswith("aiwatch/runbooks/") and n.endswith(".md"))
    assert shipped == every_alert
    # imported from the wheel (not from this checkout), aiwatch.runbooks finds and reads every page
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import aiwatch.runbooks as r; "
            "assert r.__file__.startswith(sys.argv[1]), r.__file__; "
            "print('\\n'.join(n + ' ' + r.page(n).splitlines()[0] for n in r.names()))")
    read = subprocess.run([sys.executable, "-I", "-c", code, str(wheel)], capture_output=True, text=True,
                          timeout=60)
    assert read.returncode == 0, read.stderr
    assert read.stdout.splitlines() == [f"{name} # {name}" for name in every_alert]


def test_aiwatch_instrument_stays_the_function_whatever_is_imported_first() -> None:
    # the module that defines instrument() is not called aiwatch.instrument: importing it first (directly, or through
    # an integration) must not turn the package attribute into a module
    code = ("import aiwatch.instrument_app, aiwatch.middleware.instrumentor, aiwatch\n"
            "print(callable(aiwatch.instrument), aiwatch.instrument.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=python_env()).stdout
    assert out.split() == ["True", "aiwatch.instrument_app"]


@pytest.mark.parametrize("command", ["rules", "profile"])
def test_a_command_given_no_action_shows_its_help_and_exits_2(command: str, capsys: pytest.CaptureFixture[str]
                                                               ) -> None:
    """``aiwatch rules`` without ``render`` or ``defaults`` is a usage error, as ``aiwatch profile`` without
    ``build`` is: it exited 0, so a CI step that forgot the action passed having written and checked nothing."""
    from aiwatch.cli import main

    assert main([command]) == 2
    shown = capsys.readouterr()
    assert shown.out == ""
    assert shown.err.startswith(f"usage: aiwatch {command}")


def test_aiwatch_without_a_command_shows_its_help_on_stderr_and_exits_2() -> None:
    """Bare ``aiwatch`` printed its help on stdout and exited 0: a script that lost its subcommand passed."""
    done = _run()
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("usage: aiwatch [-h] [--version] COMMAND ...")
    assert "rules" in done.stderr


def test_output_to_a_reader_gone_ends_without_a_traceback() -> None:
    """``aiwatch metrics --markdown | head -1``: the reader leaves before the output is written. The command ended
    in a BrokenPipeError traceback (exit 1); it now ends quietly with the status a shell gives a SIGPIPE."""
    import os

    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first write
    try:
        done = subprocess.run([sys.executable, "-m", "aiwatch", "metrics", "--markdown"], stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=120, env=python_env())
    finally:
        os.close(write)
    assert done.stderr == ""
    assert done.returncode == 141
