"""Every Kubernetes manifest under examples/ (and aiwatch's rules rendered as a PrometheusRule, `aiwatch rules
render --format prometheusrule`) is valid against the schema the API server checks it with: Kubernetes v1.36's own
objects, prometheus-operator v0.93's ServiceMonitor and PrometheusRule, KEDA 2.20's ScaledObject and
TriggerAuthentication. The schemas are cut down to what the examples use (tests/fixtures/kubernetes-schemas/, by
scripts/vendor_kubernetes_schemas.py, which names each one's source): every object a manifest reaches keeps its
full list of fields, so an unknown or misspelt one (which the API server would drop: ``honorlabels``) is refused,
and every field a manifest sets keeps its type, enum and pattern."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from aiwatch.rules import ALERTING_FILE, PROMETHEUS_RULE_FILE, RECORDING_FILE, render, render_prometheus_rule
from tests.servers import REPO, require_module

yaml = require_module("yaml")

SCHEMAS = {path.stem: json.loads(path.read_text())
           for path in (REPO / "tests" / "fixtures" / "kubernetes-schemas").glob("*.json")}
MANIFESTS = sorted(p for p in (REPO / "examples").glob("*/*.yaml")
                   if any(isinstance(d, dict) and "apiVersion" in d and d.get("kind") in SCHEMAS
                          for d in yaml.safe_load_all(p.read_text())))
_TYPES: dict[str, tuple[type, ...]] = {"object": (dict,), "array": (list,), "string": (str,), "boolean": (bool,),
                                       "integer": (int,), "number": (int, float), "null": (type(None),)}


def errors(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """What the schema (the subset of OpenAPI v3 / JSON schema the cut keeps) refuses in ``value``."""
    if not schema:
        return [f"{path}: the schema cut has no entry for it; re-run scripts/vendor_kubernetes_schemas.py"]
    if schema.get("x-kubernetes-int-or-string"):
        ok = isinstance(value, (int, str)) and not isinstance(value, bool)
        return [] if ok else [f"{path}: {value!r} is not an int or a string"]
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else types
    if types and not any(isinstance(value, _TYPES[t]) and not (t in ("integer", "number") and
                                                                isinstance(value, bool)) for t in types):
        return [f"{path}: {value!r} is not {'/'.join(types)}"]
    found = []
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{path}: {value!r} is not one of {schema['enum']}")
    if "pattern" in schema and isinstance(value, str) and not re.search(schema["pattern"], value):
        found.append(f"{path}: {value!r} does not match {schema['pattern']}")
    if "minimum" in schema and isinstance(value, (int, float)) and value < schema["minimum"]:
        found.append(f"{path}: {value!r} is below {schema['minimum']}")
    if isinstance(value, dict):
        found += [f"{path}.{name}: required" for name in schema.get("required", []) if name not in value]
        props = schema.get("properties")
        for name, item in value.items():
            if props is not None and name in props:
                found += errors(props[name], item, f"{path}.{name}")
            elif isinstance(schema.get("additionalProperties"), dict):
                found += errors(schema["additionalProperties"], item, f"{path}.{name}")
            elif props is not None and not schema.get("x-kubernetes-preserve-unknown-fields"):
                found.append(f"{path}.{name}: unknown field")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            found += errors(schema["items"], item, f"{path}[{i}]")
    return found


def validate(doc: dict[str, Any]) -> list[str]:
    schema = SCHEMAS[doc["kind"]]
    if doc["apiVersion"] != schema["apiVersion"]:
        return [f"apiVersion {doc['apiVersion']}, the schema is {schema['apiVersion']}'s"]
    return errors(schema, doc, doc["kind"])


def test_the_examples_have_their_schemas() -> None:
    kinds = {d["kind"] for p in MANIFESTS for d in yaml.safe_load_all(p.read_text()) if d}
    assert kinds == {"Deployment", "Service", "ServiceMonitor", "HorizontalPodAutoscaler", "ScaledObject",
                     "TriggerAuthentication", "Secret", "PrometheusRule"}
    assert set(SCHEMAS) == kinds


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_example_manifest_is_valid(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs and all(validate(d) == [] for d in docs), [validate(d) for d in docs]


@pytest.mark.parametrize("options", [{}, {"name": "aiwatch.rules", "namespace": "monitoring",
                                      "labels": {"release": "kube-prometheus-stack", "app.kubernetes.io/part-of": ""}}])
def test_the_rendered_prometheus_rule_is_valid(options: dict[str, Any]) -> None:
    """``aiwatch rules render --format prometheusrule``: both rule files' groups in one PrometheusRule, as the
    operator loads it (docs showed the wrapping by hand, and no option wrote it)."""
    (text,) = render_prometheus_rule(**options).values()
    doc = yaml.safe_load(text)
    assert validate(doc) == [], validate(doc)
    files = {name: yaml.safe_load(t) for name, t in render().items()}
    assert doc["spec"]["groups"] == files[RECORDING_FILE]["groups"] + files[ALERTING_FILE]["groups"]
    assert doc["metadata"] == {"name": options.get("name", "aiwatch"),
                               **{k: options[k] for k in ("namespace", "labels") if k in options}}
    assert PROMETHEUS_RULE_FILE == "aiwatch.prometheusrule.yaml"


def test_the_check_refuses_what_the_api_server_would() -> None:
    """Not vacuous: a misspelt field, a wrong type, a bad duration, a missing required field are each refused."""
    (monitor,) = yaml.safe_load_all((REPO / "examples" / "kubernetes" / "servicemonitor.yaml").read_text())
    (scaled,) = yaml.safe_load_all((REPO / "examples" / "autoscaling" / "keda-scaledobject.yaml").read_text())
    (deployment,) = yaml.safe_load_all((REPO / "examples" / "kubernetes" / "deployment.yaml").read_text())
    broken = []
    doc = copy.deepcopy(monitor)
    doc["spec"]["endpoints"][0]["honorlabels"] = doc["spec"]["endpoints"][0].pop("honorLabels")
    broken.append(doc)
    doc = copy.deepcopy(monitor)
    doc["spec"]["endpoints"][0]["interval"] = "15 seconds"
    broken.append(doc)
    doc = copy.deepcopy(scaled)
    del doc["spec"]["scaleTargetRef"]["name"]
    broken.append(doc)
    doc = copy.deepcopy(scaled)
    doc["spec"]["minReplicaCount"] = "2"
    broken.append(doc)
    doc = copy.deepcopy(deployment)
    doc["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8000"
    broken.append(doc)
    assert all(validate(d) for d in broken), [validate(d) for d in broken]
