#!/usr/bin/env python3
"""Cut the schemas the Kubernetes examples are checked against (tests/test_kubernetes_manifests.py) down to what
the examples use, into tests/fixtures/kubernetes-schemas/<Kind>.json: CRDs (their openAPIV3Schema), and
Kubernetes' own objects from the JSON schemas kubernetes-validate ships (yannh/kubernetes-json-schema's form,
``$ref``s into ``_definitions.json`` resolved).

Each object a manifest reaches keeps its whole list of property names (so a misspelt or unknown field is still
refused, as the API server's pruning would drop it), its ``required`` list and, for the properties a manifest sets,
their schemas (type, enum, pattern, items...), recursively; the properties no example sets are kept as ``{}``.
The sources are Apache-2.0 (prometheus-operator, KEDA, kubernetes-validate), as aiwatch is. Re-run it when the
examples use a field the cut lacks (the test says which):

    python scripts/vendor_kubernetes_schemas.py CRD.yaml... --source 'prometheus-operator v0.93.0 (6adcebc)'
    python scripts/vendor_kubernetes_schemas.py .../v1.36.0-local-strict/deployment-apps-v1.json... --source '...'
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "tests" / "fixtures" / "kubernetes-schemas"
#: the manifests (and the rendered rules, wrapped as a PrometheusRule) that decide which parts of a schema to keep
EXAMPLES = [*sorted((REPO / "examples").glob("*/*.yaml"))]
KEEP = ("type", "enum", "pattern", "format", "minimum", "maximum", "minLength", "minItems", "maxItems", "required",
        "x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields", "nullable")


def prometheus_rules() -> list[dict[str, Any]]:
    return [{"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule", "metadata": {"name": path.stem},
             "spec": yaml.safe_load(path.read_text())} for path in sorted((REPO / "alerts").glob("*.rules.yml"))]


def _types(schema: dict[str, Any]) -> list[str]:
    types = schema.get("type", [])
    return [types] if isinstance(types, str) else list(types)


def cut(schema: dict[str, Any], values: list[Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        schema = {**defs[schema["$ref"].rsplit("/", 1)[1]], **{k: v for k, v in schema.items() if k != "$ref"}}
    if "format" in schema and schema["format"] == "int-or-string":
        schema = {**schema, "x-kubernetes-int-or-string": True}
        schema.pop("type", None)
    if "oneOf" in schema and {"string", "integer"} <= {t for o in schema["oneOf"] for t in _types(o)}:
        schema = {**{k: v for k, v in schema.items() if k != "oneOf"}, "x-kubernetes-int-or-string": True}
    if "oneOf" in schema and all(set(o) == {"type"} for o in schema["oneOf"]):  # Quantity: a string or a number
        schema = {**schema, "type": sorted({t for o in schema["oneOf"] for t in _types(o)})}
    out = {k: v for k, v in schema.items() if k in KEEP}
    if "properties" in schema:
        out["properties"] = {}
        for name, sub in schema["properties"].items():
            used = [v[name] for v in values if isinstance(v, dict) and name in v]
            out["properties"][name] = cut(sub, used, defs) if used else {}
    if isinstance(schema.get("additionalProperties"), dict):
        out["additionalProperties"] = cut(schema["additionalProperties"],
                                          [x for v in values if isinstance(v, dict) for x in v.values()], defs)
    if "items" in schema:
        out["items"] = cut(schema["items"], [x for v in values if isinstance(v, list) for x in v], defs)
    return out


def load(path: Path) -> tuple[str, str, dict[str, Any], dict[str, Any]]:
    """(kind, apiVersion, schema, definitions its $refs point into) of a CRD or a kubernetes-json-schema file."""
    if path.suffix == ".json":
        schema = json.loads(path.read_text())
        defs = json.loads((path.parent / "_definitions.json").read_text())
        (gvk,) = schema["x-kubernetes-group-version-kind"]
        api = f"{gvk['group']}/{gvk['version']}" if gvk["group"] else gvk["version"]
        return gvk["kind"], api, schema, defs.get("$defs") or defs["definitions"]
    crd = yaml.safe_load(path.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
    api = f"{crd['spec']['group']}/{version['name']}"
    return crd["spec"]["names"]["kind"], api, version["schema"]["openAPIV3Schema"], {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("crds", nargs="+", type=Path, help="CRD YAML files, or kubernetes-json-schema files")
    parser.add_argument("--source", required=True, help="the project, version and commit the CRDs come from")
    args = parser.parse_args()
    manifests = [d for path in EXAMPLES for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
    manifests += prometheus_rules()
    for path in args.crds:
        kind, api, full, defs = load(path)
        docs = [d for d in manifests if d.get("kind") == kind]
        if not docs:
            continue
        schema = cut(full, docs, defs)
        schema["$comment"] = f"{api} {kind}, cut from {path.name} of {args.source} (Apache-2.0)"
        schema["apiVersion"] = api
        (OUT / f"{kind}.json").write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
        print(OUT / f"{kind}.json")


if __name__ == "__main__":
    main()
