"""The Helm chart renders objects the API server would accept, and says what the values say.

Cases: over a matrix of values (defaults, namespace-scoped RBAC, monitoring by ServiceMonitor
and by PodMonitor, network policies on, the gateway, the operator, the CRDs, tenants or
autoscaling off, every optional value at once) `helm lint --strict` passes and every rendered
object is valid: built-in kinds for Kubernetes 1.33 (kubernetes-validate, strict: `helm lint`
misses schema errors), the prometheus-operator kinds against their own CRDs' schemas (fetched
by tests/chart/fetch-monitoring-crds.sh), unknown fields refused. The values schema refuses a
misspelt value. The chart's CRDs are the generated ones, kept by default; `crds.enabled=false`
and `crds.keep=false` do what they say. The operator's RBAC grants no write on nodes, only patch
on pods (the deletion-cost annotation) and no secrets; with `rbac.scope=Namespace` both
workloads get Roles in their watched namespaces only, the flags that keep them there, and the
operator keeps only read-only cluster-scoped rules. The operator reads every ready pod of the
chart's gateway by default, or the gateway URLs given, or none without a gateway; the gateway's
RBAC reads LLMDeployments and pods and writes nothing; its Deployment (sized by a
HorizontalPodAutoscaler unless that is off), Service, PodDisruptionBudget and namespace switch
render as the values say, and none with it off. The gateway's model tiers (aliases) render into a
ConfigMap mounted read-only and named by --aliases, in a file the gateway's loader takes, with a
checksum that rolls the pods when they change (no ConfigMap, no flag without aliases); the
response cache's size is always passed, guardrails become flags in order, the gateway's parser and
settings take what the chart renders, and the schema refuses a bad tier, failure mode or size
and keeps the gateway's field names. Both workloads pass the restricted Pod Security
Standard's rules and take scheduling, env, images and pull secrets from the values. The
PrometheusRule's expressions parse and its alerts fire on the series they are about (promtool);
the dashboard's queries parse, and both name only metrics the code exports. Network policies
confine the engines to the gateway, the operator, monitoring and their own group.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from llmfleet_contract import metrics as contract_metrics
from llmfleet_contract.labels import ENGINE_PORT, ENGINE_PORT_NAME, common_labels
from llmfleet_gateway import tiers
from llmfleet_gateway.admission import WaitingRoom
from llmfleet_gateway.cli import build_parser, settings_from_args
from llmfleet_gateway.guardrails import Failure
from llmfleet_gateway.metrics import GatewayMetrics
from llmfleet_gateway.pool import Pool
from llmfleet_operator.handlers import Metrics as OperatorMetrics
from tests.corpus import ROOT

CHART = ROOT / "charts" / "llmfleet"
FIXTURES = Path(__file__).parent / "chart"
SYSTEM = "llmfleet-system"
READ = ["get", "list", "watch"]
WRITES = {"create", "update", "patch", "delete", "deletecollection", "*"}
Doc = dict[str, Any]


@cache
def helm() -> str:
    result = subprocess.run(
        ["bash", str(ROOT / "e2e" / "install-helm.sh"), "--check"],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip().splitlines()[-1]


def _value_args(values: tuple[str, ...]) -> list[str]:
    argv: list[str] = []
    for value in values:
        argv += ["-f", value] if value.endswith(".yaml") else ["--set", value]
    return argv


@cache
def _template(*values: str) -> str:
    argv = [helm(), "template", "release", str(CHART), "-n", SYSTEM, *_value_args(values)]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def render(*values: str) -> list[Doc]:
    """The chart's objects with ``values``: `--set` expressions, or values files (a fresh
    copy each call: tests may change what they get)."""
    return [doc for doc in yaml.safe_load_all(_template(*values)) if doc]


FULL = str(FIXTURES / "values-full.yaml")
ALIASES = (
    "gateway.aliases[0].name=chat",
    "gateway.aliases[0].tiers={chat-small,chat-large}",
    "gateway.aliases[0].escalate.promptTokensAbove=6000",
    "gateway.aliases[0].escalate.tenants={team-a/research}",
    "gateway.aliases[0].escalate.onFailure=false",
    "gateway.aliases[1].name=code",
    "gateway.aliases[1].tiers={code-7b,code-34b,code-70b}",
)
ECONOMICS = (
    *ALIASES,
    "gateway.responseCacheMiB=256",
    "gateway.guardrails[0].name=pii",
    "gateway.guardrails[1].name=acme.filter",
    "gateway.guardrails[1].failure=open",
)
MATRIX: dict[str, tuple[str, ...]] = {
    "defaults": (),
    "namespace-scope": ("rbac.scope=Namespace",),
    "namespace-scope-teams": (
        "rbac.scope=Namespace",
        "operator.watchNamespaces={team-a,team-b}",
        "gateway.watchNamespaces={team-a,team-b}",
        "gateway.tenants.namespaces={team-a}",
        "rbac.readNodes=false",
    ),
    "service-monitors": (
        "monitoring.serviceMonitor.enabled=true",
        "monitoring.prometheusRule.enabled=true",
        "monitoring.dashboard.enabled=true",
    ),
    "pod-monitors": ("monitoring.podMonitor.enabled=true", "rbac.scope=Namespace"),
    "network-policies": (
        "networkPolicy.enabled=true",
        "operator.watchNamespaces={team-a}",
        "gateway.watchNamespaces={team-a}",
    ),
    "network-policies-cluster-wide": ("networkPolicy.enabled=true",),
    "gateway-off": ("gateway.enabled=false", "networkPolicy.enabled=true"),
    "operator-off": ("operator.enabled=false", "monitoring.podMonitor.enabled=true"),
    "crds-off": ("crds.enabled=false",),
    "tenants-off": ("gateway.tenants.enabled=false", "rbac.scope=Namespace"),
    "autoscaling-off": ("gateway.autoscaling.enabled=false", "gateway.replicas=3"),
    "everything": (FULL,),
    "economics": ECONOMICS,
}


# ---- validity over the matrix ----------------------------------------------------------


@cache
def monitoring_schemas() -> dict[str, Doc]:
    """The prometheus-operator kinds' schemas by kind, from their CRDs (fetched, cached)."""
    folder = subprocess.run(
        ["bash", str(FIXTURES / "fetch-monitoring-crds.sh")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    found: dict[str, Doc] = {}
    for path in Path(folder).glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        found[crd["spec"]["names"]["kind"]] = closed(version["schema"]["openAPIV3Schema"])
    return found


def closed(schema: Doc) -> Doc:
    """The schema with unknown fields refused, as the API server's strict field validation
    refuses them (a structural schema prunes them, silently, otherwise)."""
    out = {key: value for key, value in schema.items() if not key.startswith("x-kubernetes")}
    if "(?i)" in schema.get("pattern", ""):  # Go's inline flag; Python takes it first only
        out["pattern"] = "(?i)" + schema["pattern"].replace("(?i)", "")
    open_ = "additionalProperties" in schema or schema.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in schema and not open_:
        out["additionalProperties"] = False
    for key in ("properties", "patternProperties"):
        if key in schema:
            out[key] = {name: closed(sub) for name, sub in schema[key].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            out[key] = closed(schema[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in schema:
            out[key] = [closed(sub) for sub in schema[key]]
    return out


def validate(doc: Doc) -> None:
    if doc["apiVersion"] == "monitoring.coreos.com/v1":
        jsonschema.Draft7Validator(monitoring_schemas()[doc["kind"]]).validate(doc)
    else:
        kubernetes_validate.validate(doc, "1.33", strict=True)


@pytest.mark.parametrize("case", MATRIX)
def test_lint_strict(case: str) -> None:
    argv = [helm(), "lint", "--strict", str(CHART), "-n", SYSTEM, *_value_args(MATRIX[case])]
    result = subprocess.run(argv, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("case", MATRIX)
def test_rendered_objects_are_valid(case: str) -> None:
    docs = render(*MATRIX[case])
    assert docs
    for doc in docs:
        try:
            validate(doc)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as error:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {error}")


def test_custom_kinds_are_checked_against_their_schemas() -> None:
    """The check above would catch a misspelt monitor field: it is not a no-op."""
    [monitor] = [
        d
        for d in render("monitoring.podMonitor.enabled=true")
        if "engines" in d["metadata"]["name"]
    ]
    monitor["spec"]["podMetricsEndpoints"][0]["intervall"] = "15s"
    with pytest.raises(jsonschema.ValidationError, match="intervall"):
        validate(monitor)


def test_the_schema_refuses_a_misspelt_value() -> None:
    for bad, says in [
        ("operator.replicsa=2", "replicsa"),
        ("gateway.nodeSelectors.disk=ssd", "nodeSelectors"),
        ("rbac.scope=Namespaced", "/rbac/scope"),
        ("monitoring.prometheusRule.ttft.thresholdSeconds=2", "thresholdSeconds"),
    ]:
        argv = [helm(), "template", "release", str(CHART), "--set", bad]
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        assert result.returncode != 0, bad
        assert "schema" in result.stderr, result.stderr
        assert says in result.stderr, result.stderr
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(yaml.safe_load((CHART / "values.yaml").read_text()), schema)
    jsonschema.validate(yaml.safe_load(Path(FULL).read_text()), schema)


# ---- CRDs --------------------------------------------------------------------------------


def test_chart_crds_are_the_generated_ones() -> None:
    generated = {
        crd["metadata"]["name"]: crd
        for crd in (yaml.safe_load(path.read_text()) for path in (ROOT / "crds").iterdir())
    }
    crds = [d for d in render() if d["kind"] == "CustomResourceDefinition"]
    assert {crd["metadata"]["name"]: crd["spec"] for crd in crds} == {
        name: crd["spec"] for name, crd in generated.items()
    }
    assert {crd["spec"]["names"]["kind"] for crd in crds} == {"LLMDeployment", "LLMTenant"}
    for crd in crds:
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    unkept = [d for d in render("crds.keep=false") if d["kind"] == "CustomResourceDefinition"]
    assert len(unkept) == len(generated)
    assert not any(crd["metadata"].get("annotations") for crd in unkept)
    assert not [d for d in render("crds.enabled=false") if d["kind"] == "CustomResourceDefinition"]


# ---- RBAC, both scopes ---------------------------------------------------------------------


def component(docs: list[Doc], kind: str, name: str, namespace: str | None = None) -> Doc:
    (found,) = [
        d
        for d in docs
        if d["kind"] == kind
        and d["metadata"]["name"] == name
        and (namespace is None or d["metadata"].get("namespace") == namespace)
    ]
    return found


def assert_least_privilege(rules: list[Doc]) -> None:
    for rule in rules:
        assert "*" not in rule["resources"], rule
        assert "*" not in rule["verbs"], rule
        assert "secrets" not in rule["resources"], rule
        if {"nodes", "customresourcedefinitions"} & set(rule["resources"]):
            assert not WRITES & set(rule["verbs"]), rule
        if "pods" in rule["resources"]:  # the pod-deletion-cost annotation; spot pods' drain
            assert not (WRITES - {"patch", "delete"}) & set(rule["verbs"]), rule


def test_operator_rbac_is_least_privilege() -> None:
    role = component(render(), "ClusterRole", "release-operator")
    assert_least_privilege(role["rules"])
    resources = {r for rule in role["rules"] for r in rule["resources"]}
    assert {"llmdeployments", "deployments", "nodes"} <= resources
    no_nodes = component(render("rbac.readNodes=false"), "ClusterRole", "release-operator")
    assert "nodes" not in {r for rule in no_nodes["rules"] for r in rule["resources"]}


def namespaced_rules(docs: list[Doc], kind: str) -> dict[str, set[str]]:
    """Each namespace's (or "" for cluster-wide) resources granted by ``kind`` objects."""
    found: dict[str, set[str]] = {}
    for doc in docs:
        if doc["kind"] == kind:
            place = doc["metadata"].get("namespace", "")
            found.setdefault(place, set()).update(
                r for rule in doc["rules"] for r in rule["resources"]
            )
    return found


def test_namespace_scope_grants_only_the_watched_namespaces() -> None:
    docs = render(*MATRIX["namespace-scope-teams"])
    # Cluster-scoped, read-only: the CRDs (kopf notices upgrades); nodes were turned off.
    [cluster_role] = [d for d in docs if d["kind"] == "ClusterRole"]
    assert cluster_role["metadata"]["name"] == "release-operator"
    assert cluster_role["rules"] == [
        {
            "apiGroups": ["apiextensions.k8s.io"],
            "resources": ["customresourcedefinitions"],
            "verbs": READ,
        }
    ]
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "ClusterRoleBinding"] == [
        "release-operator"
    ]
    operator = {
        d["metadata"]["namespace"]
        for d in docs
        if d["kind"] == "Role" and d["metadata"]["name"] == "release-operator"
    }
    assert operator == {"team-a", "team-b"}
    for place in operator:
        role = component(docs, "Role", "release-operator", place)
        assert_least_privilege(role["rules"])
        binding = component(docs, "RoleBinding", "release-operator", place)
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "release-operator", "namespace": SYSTEM}
        ]
    # Its own namespace: the Lease, and the gateway pods it reads pending requests from.
    own = component(docs, "Role", "release-operator-leader", SYSTEM)
    assert {"leases", "pods"} == {r for rule in own["rules"] for r in rule["resources"]}
    for place in ("team-a", "team-b"):
        gateway = component(docs, "Role", "release-gateway", place)
        assert gateway["rules"] == [
            {"apiGroups": ["llmfleet.io"], "resources": ["llmdeployments"], "verbs": READ},
            {"apiGroups": [""], "resources": ["pods"], "verbs": READ},
        ]
        binding = component(docs, "RoleBinding", "release-gateway", place)
        assert binding["subjects"][0]["name"] == "release-gateway"
    keys = component(docs, "Role", "release-gateway-tenant-keys", "team-a")
    assert {r for rule in keys["rules"] for r in rule["resources"]} == {"secrets", "llmtenants"}
    assert all(rule["verbs"] == READ for rule in keys["rules"])
    # The binaries are held to the same namespaces.
    assert {"--namespace=team-a", "--namespace=team-b"} <= set(
        operator_args(*MATRIX["namespace-scope-teams"])
    )
    gateway_args = container(docs, "release-gateway")["args"]
    assert {"--watch-namespace=team-a", "--watch-namespace=team-b"} <= set(gateway_args)
    assert "--tenant-namespace=team-a" in gateway_args

    default = render("rbac.scope=Namespace")
    assert namespaced_rules(default, "Role").keys() == {SYSTEM}
    assert "--namespace=llmfleet-system" in operator_args("rbac.scope=Namespace")
    assert "--watch-namespace=llmfleet-system" in container(default, "release-gateway")["args"]
    assert not [
        d for d in default if d["kind"] == "ClusterRole" and "gateway" in d["metadata"]["name"]
    ]


def test_cluster_scope_flags_only_filter() -> None:
    args = operator_args()
    assert not [a for a in args if a.startswith("--namespace")]
    assert "--namespace=team-a" in operator_args("operator.watchNamespaces={team-a}")
    assert "--log-level=INFO" in args


def operator_args(*sets: str) -> list[str]:
    args: list[str] = container(render(*sets), "release-operator")["args"]
    return args


def container(docs: list[Doc], deployment: str) -> Doc:
    found: Doc = component(docs, "Deployment", deployment)["spec"]["template"]["spec"][
        "containers"
    ][0]
    return found


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


def test_preemption_taints_become_flags_and_no_node_reading_means_no_node_watch() -> None:
    given = operator_args("operator.preemptionTaints[0]=example.com/going")
    assert "--preemption-taint=example.com/going" in given
    assert "--no-watch-nodes" not in given
    assert not [a for a in operator_args() if a.startswith("--preemption-taint")]
    assert "--no-watch-nodes" in operator_args("rbac.readNodes=false")


def test_the_operator_gets_the_gpu_hour_price_when_one_is_set() -> None:
    assert "--gpu-hour-price=2.50" in operator_args("operator.gpuHourPrice=2.50")
    assert not [a for a in operator_args() if a.startswith("--gpu-hour-price")]
    refused = subprocess.run(
        [helm(), "template", "release", str(CHART), "--set-string", "operator.gpuHourPrice=2 USD"],
        capture_output=True,
        text=True,
    )
    assert refused.returncode != 0
    assert "gpuHourPrice" in refused.stderr


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
    given = container(docs, "release-gateway")["args"]
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
    assert "--no-tenants" in container(open_, "release-gateway")["args"]
    fixed = render("gateway.autoscaling.enabled=false", "gateway.replicas=4")
    assert "--limit-share=0.25" in container(fixed, "release-gateway")["args"]


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
    args = pod["containers"][0]["args"]
    assert args[0] == "gateway"
    assert not [a for a in args if a.startswith("--watch-namespace")]
    fixed = render("gateway.autoscaling.enabled=false", "gateway.watchNamespaces={team-a}")
    assert component(fixed, "Deployment", "release-gateway")["spec"]["replicas"] == 2
    assert not [d for d in fixed if d["kind"] == "HorizontalPodAutoscaler"]
    assert "--watch-namespace=team-a" in container(fixed, "release-gateway")["args"]
    assert not [d for d in render("gateway.enabled=false") if "gateway" in d["metadata"]["name"]]
    assert not [d for d in render("operator.enabled=false") if "operator" in d["metadata"]["name"]]


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
    [volume] = [v for v in pod["volumes"] if v["name"] == "peer-key"]
    assert volume["secret"] == {
        "secretName": "peers",
        "items": [{"key": "peer-key", "path": "key"}],
    }
    lonely = subprocess.run(
        [
            helm(),
            "template",
            "release",
            str(CHART),
            "--set",
            "gateway.peers[0].region=us",
            "--set",
            "gateway.peers[0].url=http://gateway.us:8080",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "gateway.peers needs gateway.region and gateway.peerKey.secretName" in lonely.stderr


# ---- the gateway's economics: model tiers, response cache, guardrails -----------------------


def refusal(*sets: str) -> str:
    """What `helm template` says refusing ``sets`` (it must refuse them)."""
    argv = [helm(), "template", "release", str(CHART)]
    for value in sets:
        argv += ["--set", value]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert result.returncode != 0, sets
    return result.stderr


def checksum(docs: list[Doc]) -> str | None:
    deployment = component(docs, "Deployment", "release-gateway")
    found: str | None = deployment["spec"]["template"]["metadata"]["annotations"].get(
        "checksum/aliases"
    )
    return found


def test_aliases_render_into_a_mounted_config_map(tmp_path: Path) -> None:
    docs = render(*ALIASES)
    config = component(docs, "ConfigMap", "release-gateway-aliases")
    assert config["metadata"]["namespace"] == SYSTEM
    text = config["data"]["aliases.yaml"]
    assert yaml.safe_load(text) == {
        "aliases": [
            {
                "name": "chat",
                "tiers": ["chat-small", "chat-large"],
                "escalate": {
                    "promptTokensAbove": 6000,
                    "tenants": ["team-a/research"],
                    "onFailure": False,
                },
            },
            {"name": "code", "tiers": ["code-7b", "code-34b", "code-70b"]},
        ]
    }
    # The gateway's own loader takes the file as rendered.
    (tmp_path / "aliases.yaml").write_text(text)
    loaded = tiers.load_file(tmp_path / "aliases.yaml")
    assert loaded["chat"].tiers == ["chat-small", "chat-large"]
    assert loaded["chat"].escalate.prompt_tokens_above == 6000
    assert loaded["chat"].escalate.tenants == {"team-a/research"}
    assert (loaded["chat"].escalate.on_failure, loaded["chat"].escalate.header) == (False, True)
    assert loaded["code"].tiers == ["code-7b", "code-34b", "code-70b"]
    # Mounted read-only where the flag points.
    pod = component(docs, "Deployment", "release-gateway")["spec"]["template"]["spec"]
    [volume] = [v for v in pod["volumes"] if v["name"] == "aliases"]
    assert volume["configMap"] == {"name": "release-gateway-aliases"}
    [mount] = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "aliases"]
    assert mount["readOnly"] is True
    [flag] = [a for a in pod["containers"][0]["args"] if a.startswith("--aliases")]
    assert flag == f"--aliases={mount['mountPath']}/aliases.yaml"
    # The pods carry the file's checksum: a change of tiers rolls them, nothing else does.
    assert checksum(docs) == hashlib.sha256(text.removesuffix("\n").encode()).hexdigest()
    assert checksum(render(*ALIASES, "gateway.logLevel=DEBUG")) == checksum(docs)
    changed = render(*ALIASES, "gateway.aliases[1].tiers={code-7b,code-70b}")
    assert checksum(changed) not in {None, checksum(docs)}


def test_no_aliases_no_config_map_and_no_flag() -> None:
    docs = render()
    assert not [d for d in docs if d["kind"] == "ConfigMap"]
    args = container(docs, "release-gateway")["args"]
    assert not [a for a in args if a.startswith(("--aliases", "--guardrail"))]
    assert "--response-cache-mib=64" in args
    assert checksum(docs) is None
    pod = component(docs, "Deployment", "release-gateway")["spec"]["template"]["spec"]
    assert [v["name"] for v in pod["volumes"]] == ["tmp"]
    # The chart's default is the gateway's.
    assert build_parser().get_default("response_cache_mib") == 64


def test_guardrails_become_flags_in_order() -> None:
    args = container(render(*ECONOMICS), "release-gateway")["args"]
    assert [a for a in args if a.startswith("--guardrail")] == [
        "--guardrail=pii:closed",
        "--guardrail=acme.filter:open",
    ]
    assert "--response-cache-mib=256" in args
    swapped = render("gateway.guardrails[0].name=acme.filter", "gateway.guardrails[1].name=pii")
    assert [a for a in container(swapped, "release-gateway")["args"] if "guardrail" in a] == [
        "--guardrail=acme.filter:closed",
        "--guardrail=pii:closed",
    ]
    assert 'gateway.guardrails names "pii" twice' in refusal(
        "gateway.guardrails[0].name=pii",
        "gateway.guardrails[1].name=pii",
        "gateway.guardrails[1].failure=open",
    )


def test_the_gateway_takes_the_rendered_flags_and_file(tmp_path: Path) -> None:
    """The args, parsed by the gateway's own parser and turned into its settings (the
    ConfigMap's file standing in for the mount; pii is installed here, acme.filter is not).
    From a values file, where Helm reads every number as a float: still whole numbers."""
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "gateway": {
                    "aliases": [
                        {
                            "name": "chat",
                            "tiers": ["chat-small", "chat-large"],
                            "escalate": {"promptTokensAbove": 1_000_000, "header": False},
                        }
                    ],
                    "responseCacheMiB": 1_048_576,
                    "guardrails": [{"name": "pii"}],
                }
            }
        )
    )
    docs = render(str(values))
    given = container(docs, "release-gateway")["args"]
    assert "--response-cache-mib=1048576" in given
    args = build_parser().parse_args(given[1:])
    assert args.guardrail == [("pii", Failure.CLOSED)]
    path = tmp_path / "aliases.yaml"
    path.write_text(component(docs, "ConfigMap", "release-gateway-aliases")["data"]["aliases.yaml"])
    args.aliases = path
    settings = settings_from_args(args)
    assert settings.aliases["chat"].escalate.prompt_tokens_above == 1_000_000
    assert settings.aliases["chat"].escalate.header is False
    assert settings.response_cache_bytes == 1 << 40
    assert [(g.name, g.failure) for g in settings.guardrails] == [("pii", Failure.CLOSED)]
    ordered = build_parser().parse_args(
        container(render(*ECONOMICS), "release-gateway")["args"][1:]
    )
    assert ordered.guardrail == [("pii", Failure.CLOSED), ("acme.filter", Failure.OPEN)]


def test_the_schema_refuses_bad_tiers_guardrails_and_cache_sizes() -> None:
    chat = ("gateway.aliases[0].name=chat",)
    for sets, says in [
        ((*chat, "gateway.aliases[0].tiers={chat-small}"), "minItems: got 1, want 2"),
        ((*chat, "gateway.aliases[0].tiers={a,a}"), "are equal"),
        ((*chat, "gateway.aliases[0].tiers={a,b,c,d,e,f,g,h,i}"), "maxItems: got 9, want 8"),
        (("gateway.aliases[0].tiers={a,b}",), "missing property 'name'"),
        (
            (
                *chat,
                "gateway.aliases[0].tiers={a,b}",
                "gateway.aliases[0].escalate.onSaturaton=true",
            ),
            "additional properties 'onSaturaton' not allowed",
        ),
        (
            (
                *chat,
                "gateway.aliases[0].tiers={a,b}",
                "gateway.aliases[0].escalate.tenants={research}",
            ),
            "does not match pattern",
        ),
        (
            ("gateway.guardrails[0].name=pii", "gateway.guardrails[0].failure=maybe"),
            "value must be one of 'open', 'closed'",
        ),
        (("gateway.guardrails[0].name=pii:open",), "does not match pattern"),
        (("gateway.responseCacheMiB=0",), "minimum: got 0, want 1"),
    ]:
        stderr = refusal(*sets)
        assert "schema" in stderr, stderr
        assert says in stderr, (sets, stderr)
    assert 'gateway.aliases names "chat" twice' in refusal(
        *chat,
        "gateway.aliases[0].tiers={a,b}",
        "gateway.aliases[1].name=chat",
        "gateway.aliases[1].tiers={c,d}",
    )


def test_the_schema_spells_the_gateway_fields() -> None:
    """Its aliases' keys are the tiers file's, as the gateway reads them (camelCase)."""
    gateway = json.loads((CHART / "values.schema.json").read_text())["properties"]["gateway"]
    alias = gateway["properties"]["aliases"]["items"]
    assert set(alias["properties"]) == {f.alias for f in tiers.Alias.model_fields.values()}
    escalate = alias["properties"]["escalate"]
    assert set(escalate["properties"]) == {f.alias for f in tiers.Escalate.model_fields.values()}
    assert set(alias["required"]) == {
        f.alias for f in tiers.Alias.model_fields.values() if f.is_required()
    }


# ---- the binaries' flags -------------------------------------------------------------------


def parser_flags(module: str) -> set[str]:
    """Every long flag the subcommand's argparse parser takes."""
    if module == "operator":
        from llmfleet_operator.operator_main import _parser

        parser = _parser()
    else:
        from llmfleet_gateway.cli import build_parser

        parser = build_parser()
    return {flag for action in parser._actions for flag in action.option_strings}


@pytest.mark.parametrize("case", MATRIX)
def test_every_flag_is_one_the_binary_takes(case: str) -> None:
    docs = render(*MATRIX[case])
    for name, command in (("release-operator", "operator"), ("release-gateway", "gateway")):
        if not [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name]:
            continue
        found = container(docs, name)
        assert found["command"] == ["llmfleet"]
        assert found["args"][0] == command
        flags = {arg.split("=", 1)[0] for arg in found["args"][1:]}
        assert flags <= parser_flags(command), flags - parser_flags(command)


# ---- pods: security, scheduling, images ----------------------------------------------------


@pytest.mark.parametrize("case", ["defaults", "everything", "economics"])
def test_pods_meet_the_restricted_pod_security_standard(case: str) -> None:
    docs = render(*MATRIX[case])
    for name in ("release-operator", "release-gateway"):
        pod = component(docs, "Deployment", name)["spec"]["template"]["spec"]
        assert pod["securityContext"] == {
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        assert not {"hostNetwork", "hostPID", "hostIPC"} & pod.keys()
        allowed = {"name", "emptyDir", "secret", "configMap"}
        assert all(set(v) <= allowed for v in pod["volumes"])
        for box in pod["containers"]:
            assert box["securityContext"] == {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            }
            assert {"name": "tmp", "mountPath": "/tmp"} in box["volumeMounts"]


def test_scheduling_env_and_images_come_from_the_values() -> None:
    defaults = render()
    assert container(defaults, "release-operator")["image"] == "ghcr.io/llmfleet/operator:0.1.0"
    assert container(defaults, "release-gateway")["image"] == "ghcr.io/llmfleet/gateway:0.1.0"
    docs = render(FULL)
    operator = component(docs, "Deployment", "release-operator")["spec"]["template"]
    assert container(docs, "release-operator")["image"] == (
        "mirror.example:5000/llmfleet/operator@sha256:" + "0" * 64
    )
    assert (
        container(docs, "release-gateway")["image"]
        == "mirror.example:5000/llmfleet/gateway:0.1.0-rc1"
    )
    env = container(docs, "release-operator")["env"]
    assert {"name": "KUBERNETES_SERVICE_HOST", "value": "10.0.0.1"} in env
    assert {
        "name": "POD_NAMESPACE",
        "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
    } in env
    assert container(docs, "release-gateway")["env"] == [
        {"name": "KUBERNETES_SERVICE_HOST", "value": "10.0.0.1"}
    ]
    spec = operator["spec"]
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert spec["tolerations"][0]["key"] == "dedicated"
    assert "podAntiAffinity" in spec["affinity"]
    assert spec["priorityClassName"] == "system-cluster-critical"
    assert spec["imagePullSecrets"] == [{"name": "regcred"}, {"name": "operator-pull"}]
    assert operator["metadata"]["labels"]["team"] == "platform"
    assert operator["metadata"]["annotations"]["example.com/owner"] == "platform"
    # The selector's labels are the chart's, whatever podLabels say.
    clash = render("operator.podLabels.app\\.kubernetes\\.io/component=mine")
    template = component(clash, "Deployment", "release-operator")["spec"]["template"]
    assert template["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"


# ---- monitoring ----------------------------------------------------------------------------


def monitors(docs: list[Doc]) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs if d["apiVersion"] == "monitoring.coreos.com/v1"}


def test_monitors_select_the_engines_the_operator_labels() -> None:
    engine_labels = common_labels("llama")
    for flag, endpoints in (
        ("monitoring.serviceMonitor.enabled=true", "endpoints"),
        ("monitoring.podMonitor.enabled=true", "podMetricsEndpoints"),
    ):
        found = monitors(render(flag))
        assert set(found) == {"release-engines", "release-operator", "release-gateway"}
        engines = found["release-engines"]["spec"]
        assert engines["selector"]["matchLabels"].items() <= engine_labels.items()
        assert engines["namespaceSelector"] == {"any": True}
        [endpoint] = engines[endpoints]
        assert endpoint["port"] == ENGINE_PORT_NAME
        jobs = {
            name: m["spec"][endpoints][0]["relabelings"][0]["replacement"]
            for name, m in found.items()
        }
        assert jobs == {
            "release-engines": "llmfleet-engine",
            "release-operator": "llmfleet-operator",
            "release-gateway": "llmfleet-gateway",
        }
    docs = render("monitoring.serviceMonitor.enabled=true")
    service = component(docs, "Service", "release-operator-metrics")
    selector = component(docs, "ServiceMonitor", "release-operator")["spec"]["selector"][
        "matchLabels"
    ]
    assert selector.items() <= service["metadata"]["labels"].items()
    gateway = component(docs, "Service", "release-gateway")
    selector = component(docs, "ServiceMonitor", "release-gateway")["spec"]["selector"][
        "matchLabels"
    ]
    assert selector.items() <= gateway["metadata"]["labels"].items()
    scoped = monitors(render("monitoring.podMonitor.enabled=true", "rbac.scope=Namespace"))
    assert scoped["release-engines"]["spec"]["namespaceSelector"] == {"matchNames": [SYSTEM]}
    assert not monitors(render())
    both = subprocess.run(
        [
            helm(),
            "template",
            "release",
            str(CHART),
            "--set",
            "monitoring.podMonitor.enabled=true",
            "--set",
            "monitoring.serviceMonitor.enabled=true",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "enable one, not both" in both.stderr


def exported_names() -> set[str]:
    """Every series name the code exports: the gateway's and the operator's registries, and
    the engine families of the shared contract."""
    names = {"up"}
    registries = [GatewayMetrics(Pool(), WaitingRoom(1)).registry, OperatorMetrics().registry]
    for registry in registries:
        for family in registry.collect():
            suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}
            names.update(family.name + s for s in suffixes.get(family.type, [""]))
    engine = [contract_metrics.WAITING, contract_metrics.RUNNING, contract_metrics.KV_CACHE_USAGE]
    names.update(engine)
    names.update(contract_metrics.TIME_TO_FIRST_TOKEN + s for s in ("_bucket", "_count", "_sum"))
    return names


CLAUSES = re.compile(
    r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)|\{[^}]*\}|\[[^\]]*\]"
)
KEYWORDS = {"and", "or", "unless", "bool", "offset"}


def series_in(expr: str) -> set[str]:
    """The series names a PromQL expression reads (recorded llmfleet: series left out)."""
    bare = CLAUSES.sub(" ", re.sub(r'"[^"]*"', " ", expr))  # label_replace's strings too
    names = re.findall(r"(?<![\w.])([a-zA-Z_:][\w:]*)(?!\w|:|\s*\()", bare)
    return {n for n in names if n not in KEYWORDS and not n.startswith("llmfleet:")}


def rules(*values: str) -> list[Doc]:
    [rule] = [d for d in render(*values) if d["kind"] == "PrometheusRule"]
    groups: list[Doc] = rule["spec"]["groups"]
    return groups


def dashboard_exprs() -> list[str]:
    [config] = [d for d in render("monitoring.dashboard.enabled=true") if d["kind"] == "ConfigMap"]
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    board = json.loads(config["data"]["llmfleet.json"])
    return [target["expr"] for panel in board["panels"] for target in panel["targets"]]


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: `make tools` installs Debian's prometheus"
    return found


def test_rules_and_dashboard_parse_and_name_only_exported_metrics(
    promtool: str, tmp_path: Path
) -> None:
    groups = rules("monitoring.prometheusRule.enabled=true")
    exprs = [rule["expr"] for group in groups for rule in group["rules"]]
    board = dashboard_exprs()
    assert len(board) >= 7
    # The dashboard's queries, as recording rules, so that promtool parses them too.
    as_rules = [
        {
            "record": f"dashboard:query_{i}",
            "expr": expr.replace("$__rate_interval", "5m").replace("$llmdeployment", ".*"),
        }
        for i, expr in enumerate(board)
    ]
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [*groups, {"name": "dashboard", "rules": as_rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    known = exported_names()
    for expr in exprs + board:
        assert series_in(expr) <= known, (expr, series_in(expr) - known)
    alerts = {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}
    assert alerts == {
        "LLMFleetEngineMetricsUnavailable",
        "LLMFleetGatewayMetricsUnavailable",
        "LLMFleetOperatorDown",
        "LLMFleetReconcileErrors",
        "LLMFleetMetricsUnavailable",
        "LLMFleetScalingLimited",
        "LLMFleetGatewayServerErrors",
        "LLMFleetGatewayRateLimited",
        "LLMFleetTTFTBudgetBurnFast",
        "LLMFleetTTFTBudgetBurnSlow",
    }


def test_alerts_fire_on_the_series_they_are_about(promtool: str, tmp_path: Path) -> None:
    groups = rules(
        "monitoring.prometheusRule.enabled=true",
        "monitoring.prometheusRule.ttft.thresholdSeconds=1",
    )
    for group in groups:  # promtool compares annotations too; the labels are the point here
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    shutil.copy(FIXTURES / "rule-tests.yaml", tmp_path / "tests.yaml")
    result = subprocess.run(
        [promtool, "test", "rules", "tests.yaml"], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ---- network policies ----------------------------------------------------------------------


def test_network_policies_confine_the_engines() -> None:
    assert not [d for d in render() if d["kind"] == "NetworkPolicy"]
    docs = render(*MATRIX["network-policies"])
    policies = {
        (d["metadata"]["namespace"], d["metadata"]["name"]): d
        for d in docs
        if d["kind"] == "NetworkPolicy"
    }
    assert set(policies) == {
        (SYSTEM, "release-gateway"),
        (SYSTEM, "release-operator"),
        ("team-a", "release-engines"),
    }
    engines = policies[("team-a", "release-engines")]["spec"]
    assert engines["podSelector"]["matchLabels"].items() <= common_labels("llama").items()
    served, group = engines["ingress"]
    assert served["ports"] == [{"protocol": "TCP", "port": ENGINE_PORT}]
    components = [
        peer["podSelector"]["matchLabels"].get("app.kubernetes.io/component")
        for peer in served["from"]
    ]
    assert components == ["gateway", "operator", None]  # the last: monitoring
    assert group == {"from": [{"podSelector": engines["podSelector"]}]}
    gateway = policies[(SYSTEM, "release-gateway")]["spec"]
    assert gateway["ingress"] == [{"ports": [{"protocol": "TCP", "port": 8080}]}]
    to_engines = [
        rule
        for rule in gateway["egress"]
        if rule.get("ports") == [{"protocol": "TCP", "port": ENGINE_PORT}]
    ]
    assert to_engines[0]["to"][0]["namespaceSelector"]["matchExpressions"][0]["values"] == [
        "team-a"
    ]
    # Cluster-wide, the engines' namespaces are unknown: no engine policy, egress to any.
    wide = [d for d in render("networkPolicy.enabled=true") if d["kind"] == "NetworkPolicy"]
    assert {d["metadata"]["name"] for d in wide} == {"release-gateway", "release-operator"}
