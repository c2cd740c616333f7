"""The pure builders: what each example's spec turns into.

Cases: GPU requests, shm, probes, grace period and launcher config per example; the
multi-node example becomes a LeaderWorkerSet whose Service targets leaders only; the
GPU product selection is ANDed into every user node-affinity term; a revision change
changes the pod template hash while a max-replicas change does not; desired replicas
follow spec.replicas, the external scaler (clamped) or the autoscaler's status.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from llmfleet_contract import labels
from llmfleet_contract.api import LLMDeployment
from llmfleet_operator.children import (
    children,
    desired_replicas,
    service,
    workload,
)
from llmfleet_operator.podspec import model_path, node_affinity
from llmfleet_operator.resources import DEPLOYMENT, LEADER_WORKER_SET
from tests.corpus import ROOT

UID = "0a0b0c0d-0000-0000-0000-000000000000"


def load(name: str, **spec_changes: Any) -> LLMDeployment:
    manifest = yaml.safe_load((ROOT / "examples" / name).read_text())
    manifest["metadata"]["namespace"] = "serving"
    manifest["spec"].update(spec_changes)
    return LLMDeployment.model_validate(manifest)


def engine(template: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = template["spec"]["containers"][0]
    return container


def launcher_config(template: dict[str, Any]) -> dict[str, Any]:
    env = {e["name"]: e.get("value") for e in engine(template)["env"]}
    config: dict[str, Any] = json.loads(env["LLMFLEET_ENGINE_CONFIG"])
    return config


@pytest.mark.parametrize(
    ("example", "kind", "gpus", "shm", "tp", "nodes"),
    [
        ("llama-8b.yaml", DEPLOYMENT, "1", "2Gi", 1, 1),
        ("llama-70b-tp4.yaml", DEPLOYMENT, "4", "16Gi", 4, 1),
        ("llama-405b-tp8-pp2.yaml", LEADER_WORKER_SET, "8", "64Gi", 8, 2),
        ("qwen-7b-scale-to-zero.yaml", DEPLOYMENT, "1", "2Gi", 1, 1),
    ],
)
def test_example_pods(example: str, kind: Any, gpus: str, shm: str, tp: int, nodes: int) -> None:
    obj = load(example)
    child_kind, manifest = workload(obj, UID, replicas=2)
    assert child_kind == kind
    template = (
        manifest["spec"]["template"]
        if kind == DEPLOYMENT
        else manifest["spec"]["leaderWorkerTemplate"]["leaderTemplate"]
    )
    container = engine(template)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == gpus
    assert container["resources"]["requests"]["nvidia.com/gpu"] == gpus
    shm_volume = next(v for v in template["spec"]["volumes"] if v["name"] == "dshm")
    assert shm_volume["emptyDir"] == {"medium": "Memory", "sizeLimit": shm}
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 3600
    drain = obj.spec.serving.drain_deadline_seconds
    assert template["spec"]["terminationGracePeriodSeconds"] > drain
    assert container["lifecycle"]["preStop"]["sleep"]["seconds"] > 0
    config = launcher_config(template)
    assert config["tensorParallelSize"] == tp
    assert config["nodes"] == nodes
    assert config["servedModelNames"] == obj.served_names
    assert config["drainTimeoutSeconds"] == drain
    assert template["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert manifest["metadata"]["ownerReferences"][0]["uid"] == UID


def test_multi_node_group_is_a_leader_worker_set() -> None:
    obj = load("llama-405b-tp8-pp2.yaml")
    _, lws = workload(obj, UID, replicas=1)
    # LWS makes a headless Service named after itself; ours, named after obj, routes.
    assert lws["metadata"]["name"] == "llama-405b-group"
    assert service(obj, UID)["metadata"]["name"] == "llama-405b"
    group = lws["spec"]["leaderWorkerTemplate"]
    assert group["size"] == 2
    assert group["restartPolicy"] == "RecreateGroupOnPodRestart"
    worker = engine(group["workerTemplate"])
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert "readinessProbe" not in worker
    assert "ports" not in worker
    assert group["workerTemplate"]["metadata"]["labels"][labels.ROLE] == "worker"
    assert service(obj, UID)["spec"]["selector"][labels.LWS_WORKER_INDEX] == "0"
    assert labels.LWS_WORKER_INDEX not in service(load("llama-8b.yaml"), UID)["spec"]["selector"]


def test_gpu_products_are_required_in_every_user_term() -> None:
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]},
                ]
            }
        }
    }
    obj = load("llama-70b-tp4.yaml")
    obj = obj.model_copy(
        update={
            "spec": obj.spec.model_copy(
                update={"placement": obj.spec.placement.model_copy(update={"affinity": affinity})}
            )
        }
    )
    terms = node_affinity(obj)["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][  # type: ignore[index]
        "nodeSelectorTerms"
    ]
    assert len(terms) == 2
    for term in terms:
        assert {
            "key": "nvidia.com/gpu.product",
            "operator": "In",
            "values": ["NVIDIA-H100-80GB-HBM3"],
        } in term["matchExpressions"]
    assert (
        len(
            affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
                "nodeSelectorTerms"
            ][0]["matchExpressions"]
        )
        == 1
    )  # type: ignore[index]


def _hash(obj: LLMDeployment) -> str:
    _, manifest = workload(obj, UID, replicas=1)
    value: str = manifest["spec"]["template"]["metadata"]["labels"][labels.SPEC_HASH]
    return value


def test_revision_rolls_pods_and_max_replicas_does_not() -> None:
    base = yaml.safe_load((ROOT / "examples/llama-70b-tp4.yaml").read_text())
    original = _hash(LLMDeployment.model_validate(base))
    base["spec"]["autoscaling"]["maxReplicas"] = 9
    assert _hash(LLMDeployment.model_validate(base)) == original
    base["spec"]["model"]["revision"] = "main"
    assert _hash(LLMDeployment.model_validate(base)) != original


def test_desired_replicas() -> None:
    assert desired_replicas(load("llama-405b-tp8-pp2.yaml")) == 1
    assert desired_replicas(load("llama-405b-tp8-pp2.yaml", replicas=3)) == 3
    builtin = load("llama-70b-tp4.yaml")
    assert desired_replicas(builtin) == 2  # no status yet: minReplicas
    manifest = builtin.model_dump(by_alias=True, exclude_none=True)
    manifest["metadata"]["generation"] = 1
    manifest["status"] = {"observedGeneration": 1, "desiredReplicas": 5}
    assert desired_replicas(LLMDeployment.model_validate(manifest)) == 5
    manifest["status"]["desiredReplicas"] = 50
    assert desired_replicas(LLMDeployment.model_validate(manifest)) == 6  # maxReplicas
    external = yaml.safe_load((ROOT / "examples/llama-70b-tp4.yaml").read_text())
    external["spec"]["autoscaling"]["mode"] = "External"
    external["spec"]["replicas"] = 6
    assert desired_replicas(LLMDeployment.model_validate(external)) == 6
    # Switched from Builtin to External before the scaler wrote spec.replicas: it holds.
    manifest["spec"]["autoscaling"]["mode"] = "External"
    manifest["status"]["desiredReplicas"] = 4
    assert desired_replicas(LLMDeployment.model_validate(manifest)) == 4


@pytest.mark.parametrize(
    ("source", "path"),
    [
        ("hf://meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-8B"),
        ("pvc://weights/llama/8b", "/mnt/model-source/llama/8b"),
        ("s3://bucket/llama", "s3://bucket/llama"),
        ("/opt/models/llama", "/opt/models/llama"),
    ],
)
def test_model_path(source: str, path: str) -> None:
    assert model_path(source) == path


def test_pvc_source_is_mounted_read_only() -> None:
    obj = load("llama-8b.yaml", model={"source": "pvc://weights/llama"})
    _, deployment = workload(obj, UID, 1)
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert {
        "name": "model-source",
        "persistentVolumeClaim": {"claimName": "weights", "readOnly": True},
    } in volumes


def test_children_are_workload_service_and_budget() -> None:
    kinds = [kind.kind for kind, _ in children(load("llama-8b.yaml"), UID)]
    assert kinds == ["Deployment", "Service", "PodDisruptionBudget"]
