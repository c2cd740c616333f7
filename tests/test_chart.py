"""The Helm chart renders objects the API server would accept.

Cases: `helm lint --strict` passes; every rendered built-in object is valid for
Kubernetes 1.33 (kubernetes-validate, strict: `helm lint` misses schema errors); the
chart's CRD is the generated one, with `keep` by default; `crds.enabled=false` and
`crds.keep=false` do what they say; the operator's RBAC grants no write on nodes, only
patch on pods (the deletion-cost annotation) and no secrets at all; the operator reads every
ready pod of the chart's gateway by default, or the gateway URLs given, or none without a
gateway; the gateway's RBAC reads LLMDeployments and pods and writes
nothing; its Deployment (sized by a HorizontalPodAutoscaler unless that is off), Service,
PodDisruptionBudget and namespace switch render as the values say, and none with it off.
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


def test_chart_crds_are_the_generated_ones() -> None:
    generated = {
        crd["metadata"]["name"]: crd
        for crd in (yaml.safe_load(path.read_text()) for path in (ROOT / "crds").iterdir())
    }
    crds = [d for d in render() if d["kind"] == "CustomResourceDefinition"]
    assert {crd["metadata"]["name"]: crd["spec"] for crd in crds} == {
        name: crd["spec"] for name, crd in generated.items()
    }
    for crd in crds:
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    unkept = [d for d in render("crds.keep=false") if d["kind"] == "CustomResourceDefinition"]
    assert len(unkept) == len(generated)
    assert not any(crd["metadata"].get("annotations") for crd in unkept)
    assert not [d for d in render("crds.enabled=false") if d["kind"] == "CustomResourceDefinition"]


def component(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def test_operator_rbac_is_least_privilege() -> None:
    role = component(render(), "ClusterRole", "release-operator")
    writes = {"create", "update", "patch", "delete", "deletecollection", "*"}
    for rule in role["rules"]:
        assert "*" not in rule["resources"], rule
        assert "*" not in rule["verbs"], rule
        assert "secrets" not in rule["resources"], rule
        if "nodes" in rule["resources"]:
            assert not writes & set(rule["verbs"]), rule
        if "pods" in rule["resources"]:  # patch only: the pod-deletion-cost annotation
            assert not (writes - {"patch"}) & set(rule["verbs"]), rule


def operator_args(*sets: str) -> list[str]:
    deployment = component(render(*sets), "Deployment", "release-operator")
    args: list[str] = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


def test_the_operator_reads_every_gateway_replica_by_default() -> None:
    selector = (
        "--gateway-selector=llmfleet-system/app.kubernetes.io/component=gateway,"
        "app.kubernetes.io/instance=release,app.kubernetes.io/name=llmfleet"
    )
    assert selector in operator_args()
    assert "--gateway-port=8080" in operator_args()
    url = "http://gw.llmfleet:9090"
    given = operator_args(f"operator.gatewayMetricsUrls[0]={url}")
    assert f"--gateway-metrics-url={url}" in given
    assert not [a for a in given if a.startswith("--gateway-selector")]
    assert not [a for a in operator_args("gateway.enabled=false") if "gateway" in a]


def test_gateway_reads_llmdeployments_pods_and_tenants_and_writes_nothing() -> None:
    docs = render()
    role = component(docs, "ClusterRole", "release-gateway")
    assert role["rules"] == [
        {"apiGroups": ["llmfleet.io"], "resources": ["llmdeployments"], "verbs": READ},
        {"apiGroups": [""], "resources": ["pods"], "verbs": READ},
        {"apiGroups": ["llmfleet.io"], "resources": ["llmtenants"], "verbs": READ},
    ]
    # Secrets: only in the tenants' namespaces (default: the release's), never cluster-wide.
    [keys] = [d for d in docs if d["kind"] == "Role" and "tenant-keys" in d["metadata"]["name"]]
    assert keys["metadata"]["namespace"] == "llmfleet-system"
    assert keys["rules"] == [{"apiGroups": [""], "resources": ["secrets"], "verbs": READ}]
    binding = component(docs, "RoleBinding", "release-gateway-tenant-keys")
    assert binding["subjects"][0]["name"] == "release-gateway"
    args = component(docs, "Deployment", "release-gateway")["spec"]["template"]["spec"]
    given = args["containers"][0]["args"]
    assert "--tenant-namespace=llmfleet-system" in given
    assert "--limit-share=0.1" in given  # 1/maxReplicas: the replicas never exceed a limit

    teams = render("gateway.tenants.namespaces={team-a,team-b}")
    places = sorted(
        d["metadata"]["namespace"] for d in teams if "tenant-keys" in d["metadata"]["name"]
    )
    assert places == ["team-a", "team-a", "team-b", "team-b"]
    open_ = render("gateway.tenants.enabled=false")
    assert not [d for d in open_ if "tenant-keys" in d["metadata"]["name"]]
    assert len(component(open_, "ClusterRole", "release-gateway")["rules"]) == 2
    open_args = component(open_, "Deployment", "release-gateway")["spec"]["template"]["spec"]
    assert "--no-tenants" in open_args["containers"][0]["args"]
    fixed = render("gateway.autoscaling.enabled=false", "gateway.replicas=4")
    fixed_args = component(fixed, "Deployment", "release-gateway")["spec"]["template"]["spec"]
    assert "--limit-share=0.25" in fixed_args["containers"][0]["args"]


def test_gateway_objects_and_their_switches() -> None:
    docs = render()
    deployment = component(docs, "Deployment", "release-gateway")
    assert "replicas" not in deployment["spec"]  # the HorizontalPodAutoscaler sizes it
    pod = deployment["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 330  # held requests finish
    assert pod["containers"][0]["lifecycle"]["preStop"] == {"sleep": {"seconds": 10}}
    labels = deployment["spec"]["selector"]["matchLabels"]
    selector = next(a for a in operator_args() if a.startswith("--gateway-selector="))
    assert selector.split("/", 1)[1] == ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    hpa = component(docs, "HorizontalPodAutoscaler", "release-gateway")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)
    assert component(docs, "PodDisruptionBudget", "release-gateway")["spec"]["maxUnavailable"] == 1
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "gateway"
    assert not [a for a in args if a.startswith("--watch-namespace")]
    fixed = render("gateway.autoscaling.enabled=false", "gateway.watchNamespace=team-a")
    assert component(fixed, "Deployment", "release-gateway")["spec"]["replicas"] == 2
    assert not [d for d in fixed if d["kind"] == "HorizontalPodAutoscaler"]
    fixed_args = component(fixed, "Deployment", "release-gateway")["spec"]["template"]["spec"]
    assert "--watch-namespace=team-a" in fixed_args["containers"][0]["args"]
    assert not [d for d in render("gateway.enabled=false") if "gateway" in d["metadata"]["name"]]


READ = ["get", "list", "watch"]


def test_gateway_peer_regions() -> None:
    peers = render(
        "gateway.region=eu",
        "gateway.peers[0].region=us",
        "gateway.peers[0].url=http://gateway.us:8080",
        "gateway.peerKey.secretName=peers",
    )
    pod = component(peers, "Deployment", "release-gateway")["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert {"--region=eu", "--peer=us=http://gateway.us:8080"} <= set(args)
    assert "--peer-key-file=/etc/llmfleet/peer/key" in args
    assert pod["volumes"][0]["secret"] == {
        "secretName": "peers",
        "items": [{"key": "peer-key", "path": "key"}],
    }
    lonely = subprocess.run(
        [helm(), "template", "release", str(CHART), "--set", "gateway.peers[0].region=us"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "gateway.peers needs gateway.region and gateway.peerKey.secretName" in lonely.stderr
