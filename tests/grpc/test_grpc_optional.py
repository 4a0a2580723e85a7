"""grpc is optional: ``import aiwatch`` does not import it, and without grpcio using a gRPC name raises an
ImportError that says which extra to install."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.servers import python_env

pytestmark = pytest.mark.slow  # subprocesses


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], env=python_env(), capture_output=True, text=True,
                          timeout=60, check=False)


def test_import_aiwatch_does_not_import_grpc() -> None:
    result = _run("import sys, aiwatch\n"
                  "assert 'grpc' not in sys.modules and 'aiwatch.grpc' not in sys.modules, 'imported grpc'\n"
                  "aiwatch.grpc_server_interceptor\n"
                  "assert 'grpc' in sys.modules\n")
    assert result.returncode == 0, result.stderr


def test_missing_grpcio_names_the_extra() -> None:
    result = _run("import sys\n"
                  "sys.modules['grpc'] = None  # as if grpcio were not installed\n"
                  "from aiwatch import AiwatchGrpcInstrumentorServer  # a placeholder: only using it raises\n"
                  "try:\n"
                  "    AiwatchGrpcInstrumentorServer()\n"
                  "except ImportError as exc:\n"
                  "    print(exc)\n"
                  "del sys.modules['grpc']  # installed after all: the next access imports it\n"
                  "import aiwatch\n"
                  "print(aiwatch.AiwatchGrpcInstrumentorServer.__module__)\n")
    assert result.returncode == 0, result.stderr
    unavailable, module = result.stdout.splitlines()
    assert unavailable.startswith("aiwatch.AiwatchGrpcInstrumentorServer cannot be used: ")
    assert unavailable.endswith('pip install "aiwatch[grpc]"')
    assert module == "aiwatch.grpc.instrumentor"
