"""The Helm chart renders objects the API server would accept.

Cases: `helm lint --strict` passes; every rendered built-in object is valid for
Kubernetes 1.33 (kubernetes-validate, strict: `helm lint` misses schema errors); the
chart's CRD is the generated one, with `keep` by default; `crds.enabled=false` and
`crds.keep=false` do what they say; the operator's RBAC grants no write on nodes, only
patch on pods (the deletion-cost annotation) and no secrets at all; gateway metrics URLs
reach the operator's arguments.
"""

from __future__ import annotations

import subprocess
from functools import cache
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.corpus import ROOT

CHART = ROOT / "charts" / "llmfleet"


@cache
def helm() -> str:
    result = subprocess.run(
        ["bash", str(ROOT / "e2e" / "install-helm.sh"), "--check"],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip().splitlines()[-1]


def render(*sets: str) -> list[dict[str, Any]]:
    argv = [helm(), "template", "release", str(CHART), "-n", "llmfleet-system"]
    for value in sets:
        argv += ["--set", value]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def test_lint_strict() -> None:
    result = subprocess.run(
        [helm(), "lint", "--strict", str(CHART)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("doc", render(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_rendered_objects_are_valid(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, "1.33", strict=True)


def test_chart_crd_is_the_generated_one() -> None:
    generated = yaml.safe_load((ROOT / "crds/llmfleet.io_llmdeployments.yaml").read_text())
    (crd,) = [d for d in render() if d["kind"] == "CustomResourceDefinition"]
    assert crd["spec"] == generated["spec"]
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    (unkept,) = [d for d in render("crds.keep=false") if d["kind"] == "CustomResourceDefinition"]
    assert not unkept["metadata"].get("annotations")
    assert not [d for d in render("crds.enabled=false") if d["kind"] == "CustomResourceDefinition"]


def test_operator_rbac_is_least_privilege() -> None:
    (role,) = [d for d in render() if d["kind"] == "ClusterRole"]
    writes = {"create", "update", "patch", "delete", "deletecollection", "*"}
    for rule in role["rules"]:
        assert "*" not in rule["resources"], rule
        assert "*" not in rule["verbs"], rule
        assert "secrets" not in rule["resources"], rule
        if "nodes" in rule["resources"]:
            assert not writes & set(rule["verbs"]), rule
        if "pods" in rule["resources"]:  # patch only: the pod-deletion-cost annotation
            assert not (writes - {"patch"}) & set(rule["verbs"]), rule


def test_gateway_metrics_urls_reach_the_operator() -> None:
    (plain,) = [d for d in render() if d["kind"] == "Deployment"]
    assert not [
        a for a in plain["spec"]["template"]["spec"]["containers"][0]["args"] if "gateway" in a
    ]
    url = "http://gw.llmfleet:9090"
    (deployment,) = [
        d for d in render(f"operator.gatewayMetricsUrls[0]={url}") if d["kind"] == "Deployment"
    ]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--gateway-metrics-url={url}" in args
