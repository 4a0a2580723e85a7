#!/usr/bin/env bash
# The lowest allowed versions: uv (from the dev extra) resolves aiwatch with the extras below, with every direct dependency
# at its floor (--resolution lowest-direct), installs exactly that into .venv-lowest (or $AIWATCH_LOWEST_VENV),
# prints each floor next to what was installed, and runs the tests that exercise those floors: the core's unit
# tests, drift, the rules and the console's AppTest views. docs/dependencies.md lists the floors and what set them.
# Called by scripts/test.sh; extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${AIWATCH_LOWEST_VENV:-.venv-lowest}"
uv="${AIWATCH_VENV:-.venv}/bin/uv"
python="${PYTHON:-python3}"
# grpc and demo stay out: the grpc extra's protobuf 7.35 lifts streamlit and the demo's fastapi lifts starlette past
# their floors, which this environment is for (their own floors are checked by resolving and importing, below)
extras=(console data rules otel evidently http gpu dask redis test)

[ -x "$venv/bin/python" ] || "$uv" venv -q --python "$python" "$venv"
pinned="$venv/lowest-requirements.txt"
"$uv" pip compile -q --python "$venv/bin/python" --resolution lowest-direct --no-header \
    $(printf -- "--extra %s " "${extras[@]}") pyproject.toml -o "$pinned"
"$uv" pip sync -q --python "$venv/bin/python" "$pinned"
"$uv" pip install -q --python "$venv/bin/python" --no-deps -e .

echo "== floors (extras: ${extras[*]}; lowest-direct)"
"$venv/bin/python" scripts/floors.py "${extras[@]}"

echo "== aiwatch[grpc,demo] at its floors: the interceptors, the demo and its generated gRPC code import"
grpc_venv="$venv-grpc"
[ -x "$grpc_venv/bin/python" ] || "$uv" venv -q --python "$python" "$grpc_venv"
"$uv" pip compile -q --python "$grpc_venv/bin/python" --resolution lowest-direct --no-header --extra grpc \
    --extra demo pyproject.toml -o "$grpc_venv/lowest-requirements.txt"
"$uv" pip sync -q --python "$grpc_venv/bin/python" "$grpc_venv/lowest-requirements.txt"
"$uv" pip install -q --python "$grpc_venv/bin/python" --no-deps -e .
grep -E '^(grpcio|protobuf|opentelemetry-instrumentation-grpc|fastapi|starlette|uvicorn|httpx|pydantic)==' \
    "$grpc_venv/lowest-requirements.txt" | tr '\n' ' '; echo
"$grpc_venv/bin/python" -c "import aiwatch.grpc, aiwatch.demo.recommender_pb2_grpc, aiwatch.demo.runner, aiwatch.middleware.rendering, fastapi"

echo "== the core at its floors (the otel extra's opentelemetry-instrumentation lifts the API above, so alone)"
core_venv="$venv-core"
[ -x "$core_venv/bin/python" ] || "$uv" venv -q --python "$python" "$core_venv"
"$uv" pip compile -q --python "$core_venv/bin/python" --resolution lowest-direct --no-header --extra test \
    pyproject.toml -o "$core_venv/lowest-requirements.txt"
"$uv" pip sync -q --python "$core_venv/bin/python" "$core_venv/lowest-requirements.txt"
"$uv" pip install -q --python "$core_venv/bin/python" --no-deps -e .
"$core_venv/bin/python" scripts/floors.py test
# semantic-conventions 0.46b0 has no rpc.system.name constant yet: aiwatch.semconv spells it itself, and the test
# comparing the two needs a newer package
"$core_venv/bin/python" -m pytest -q -p no:cacheprovider tests/test_otel_api_only.py tests/test_semconv.py \
    tests/test_cardinality.py tests/test_fastpath.py \
    --deselect tests/test_semconv.py::test_stable_rpc_names_are_the_packages

echo "== pytest on the lowest versions"
exec timeout -k 30 1200 "$venv/bin/python" -m pytest -q -ra -p no:cacheprovider -n auto --dist loadgroup -W ignore::DeprecationWarning:altair.utils.schemapi \
    tests/test_cardinality.py tests/test_env.py tests/test_fastpath.py tests/test_promql.py \
    tests/test_scrape.py tests/test_timing.py tests/test_otel_api_only.py tests/otel/test_missing_libraries.py \
    tests/drift tests/feedback tests/alerts/test_rules.py \
    tests/console/test_console_views.py tests/console/test_console_failures.py tests/console/test_console_math.py "$@"
