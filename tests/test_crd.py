"""The generated CRDs: committed as generated, accepted by Kubernetes, structural, documented.

Cases, for every kind (LLMDeployment, LLMTenant):
- ``crds/`` and the chart's CRD templates are exactly what the models generate now;
- kubernetes-validate (the API server's own schemas) accepts the CRD object;
- the schema is structural: every node has a type (or is int-or-string / preserves
  unknown fields), no ``anyOf`` branch carries a type outside int-or-string,
  ``properties`` and ``additionalProperties`` never meet;
- every field has a description, since it is what ``kubectl explain`` prints;
- the scale subresource points at fields the schema has; every printer column's path exists;
- CEL rules with list or string operands have size bounds (the API server's cost budget).
"""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml

from llmfleet_contract.crd import (
    KINDS,
    LLMDEPLOYMENTS,
    CrdKind,
    build_crd,
    openapi_schema,
    render_chart_template,
    render_yaml,
)
from tests.corpus import ROOT

by_kind = pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.kind)


@by_kind
def test_committed_crd_is_generated(kind: CrdKind) -> None:
    committed = (ROOT / "crds" / kind.file_name).read_text()
    assert committed == render_yaml(build_crd(kind)), "run `make crds` and commit"


@by_kind
def test_chart_crd_is_generated(kind: CrdKind) -> None:
    committed = (ROOT / "charts/llmfleet/templates/crds" / kind.file_name).read_text()
    assert committed == render_chart_template(build_crd(kind)), "run `make crds`"


def test_no_other_crd_is_committed() -> None:
    files = {path.name for path in (ROOT / "crds").iterdir()}
    assert files == {kind.file_name for kind in KINDS}


@by_kind
def test_kubernetes_validate_accepts_the_crd(kind: CrdKind) -> None:
    crd = yaml.safe_load((ROOT / "crds" / kind.file_name).read_text())
    kubernetes_validate.validate(crd, "1.33", strict=True)


def _nodes(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, schema)]
    for name, prop in schema.get("properties", {}).items():
        found += _nodes(prop, f"{path}.{name}")
    if "items" in schema:
        found += _nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        found += _nodes(schema["additionalProperties"], f"{path}{{}}")
    return found


ALL_NODES = [
    (f"{kind.kind}{path}", node) for kind in KINDS for path, node in _nodes(openapi_schema(kind))
]


@pytest.mark.parametrize(("path", "node"), ALL_NODES, ids=lambda v: str(v)[:60])
def test_node_is_structural(path: str, node: dict[str, Any]) -> None:
    int_or_string = node.get("x-kubernetes-int-or-string") is True
    assert "type" in node or int_or_string, f"{path} has no type"
    assert not ("properties" in node and "additionalProperties" in node), path
    for branch in node.get("anyOf", []):
        assert int_or_string or "type" not in branch, f"{path}: typed anyOf branch"
    assert not {"$ref", "const", "title"} & node.keys(), path


@pytest.mark.parametrize(("path", "node"), ALL_NODES, ids=lambda v: str(v)[:60])
def test_field_is_documented(path: str, node: dict[str, Any]) -> None:
    documented_by_kubernetes = {".metadata", ".apiVersion", ".kind"}
    own = path.partition(".")[1] + path.partition(".")[2]
    if own and not own.endswith(("[]", "{}")) and own not in documented_by_kubernetes:
        assert node.get("description", "").strip(), f"{path} has no description"


def _resolve(schema: dict[str, Any], json_path: str) -> dict[str, Any]:
    node = schema
    for part in json_path.strip(".").split("."):
        name = part.split("[")[0]
        node = node["properties"][name]
        if "[" in part:
            node = node["items"]
    return node


def test_scale_subresource_points_at_fields() -> None:
    version = build_crd(LLMDEPLOYMENTS)["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    scale = version["subresources"]["scale"]
    assert _resolve(schema, scale["specReplicasPath"])["type"] == "integer"
    assert _resolve(schema, scale["statusReplicasPath"])["type"] == "integer"
    assert _resolve(schema, scale["labelSelectorPath"])["type"] == "string"


@by_kind
def test_printer_columns_point_at_fields(kind: CrdKind) -> None:
    version = build_crd(kind)["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    for column in version["additionalPrinterColumns"]:
        if column["jsonPath"].startswith(".metadata"):
            continue
        path = column["jsonPath"].split("[?")[0]
        assert _resolve(schema, path), column


@by_kind
def test_lists_and_strings_are_bounded(kind: CrdKind) -> None:
    unbounded = [
        path
        for path, node in _nodes(openapi_schema(kind))
        if (node.get("type") == "array" and "maxItems" not in node)
        or (
            node.get("type") == "string"
            and not {"enum", "format", "maxLength"} & node.keys()
            and path not in (".apiVersion", ".kind")
        )
    ]
    assert unbounded == [], "the API server's CEL cost estimate needs maxItems / maxLength"
