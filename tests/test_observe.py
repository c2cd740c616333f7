"""Status computed from observed children and pods (pure, no API server).

Cases: all ready -> Ready True; a rollout in flight -> Progressing/Reconciling True;
scaled to zero is Ready; pods unschedulable for GPUs -> Degraded/Stalled with the number
of missing GPUs; a pod bigger than any node names the per-pod shortfall; pods the API
server refuses to create (a missing PriorityClass) are named in its words; crash loops,
images that cannot be pulled and containers that cannot be configured (a missing Secret)
are named in the kubelet's words; an invalid spec is Ready False InvalidSpec;
lastTransitionTime is kept while a condition's status holds, so an unchanged world yields an
equal status (no write).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from llmfleet_contract.api import ConditionType, LLMDeployment, Reason
from llmfleet_operator.observe import Observed, blocked_status, compute_status
from tests.corpus import ROOT

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def deployment(name: str = "llama-70b", replicas: int = 2, generation: int = 1) -> LLMDeployment:
    manifest = yaml.safe_load((ROOT / "examples/llama-70b-tp4.yaml").read_text())
    manifest["metadata"].update({"name": name, "namespace": "serving", "generation": generation})
    manifest["spec"]["autoscaling"]["minReplicas"] = replicas
    return LLMDeployment.model_validate(manifest)


def workload(replicas: int, ready: int, updated: int, observed: int = 1) -> dict[str, Any]:
    return {
        "metadata": {"generation": 1},
        "status": {
            "observedGeneration": observed,
            "replicas": replicas,
            "readyReplicas": ready,
            "updatedReplicas": updated,
        },
    }


def pending_pod(name: str, message: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": message,
                }
            ],
        },
    }


def condition(status: Any, kind: ConditionType) -> Any:
    return next(c for c in status.conditions if c.type == kind)


def test_all_ready() -> None:
    status = compute_status(deployment(), Observed([workload(2, 2, 2)], []), NOW)
    assert condition(status, ConditionType.READY).status == "True"
    assert condition(status, ConditionType.READY).reason == Reason.ALL_REPLICAS_READY
    assert condition(status, ConditionType.PROGRESSING).status == "False"
    assert condition(status, ConditionType.DEGRADED).status == "False"
    assert (status.replicas, status.ready_replicas, status.desired_replicas) == (2, 2, 2)
    assert status.selector == "llmfleet.io/deployment=llama-70b"
    assert status.observed_generation == 1


def test_endpoints_are_ready_serving_pods() -> None:
    def pod(ip: str, role: str, ready: str) -> dict[str, Any]:
        return {
            "metadata": {"name": ip, "labels": {"llmfleet.io/role": role}},
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": ready}]},
        }

    pods = [
        pod("127.2.0.1", "engine", "True"),
        pod("127.1.0.1", "leader", "True"),
        pod("127.1.0.2", "worker", "True"),
        pod("127.3.0.1", "engine", "False"),
    ]
    status = compute_status(deployment(), Observed([workload(2, 2, 2)], pods), NOW)
    assert status.endpoints == ["127.1.0.1:8000", "127.2.0.1:8000"]


def test_rollout_in_flight() -> None:
    status = compute_status(deployment(), Observed([workload(3, 2, 1)], []), NOW)
    assert condition(status, ConditionType.READY).status == "False"
    assert condition(status, ConditionType.PROGRESSING).reason == Reason.ROLLING_OUT
    assert condition(status, ConditionType.RECONCILING).status == "True"
    assert "1 of 2 replicas updated" in condition(status, ConditionType.PROGRESSING).message


def test_workload_controller_behind_is_progressing() -> None:
    status = compute_status(deployment(), Observed([workload(2, 2, 2, observed=0)], []), NOW)
    assert condition(status, ConditionType.PROGRESSING).status == "True"


def test_leader_worker_set_progress_comes_from_its_condition() -> None:
    def lws(progressing: str) -> dict[str, Any]:
        return {
            "metadata": {"generation": 1},
            "status": {
                "replicas": 2,
                "readyReplicas": 2,
                "updatedReplicas": 2,
                "conditions": [{"type": "Progressing", "status": progressing}],
            },
        }

    done = compute_status(deployment(), Observed([lws("False")], []), NOW)
    assert condition(done, ConditionType.READY).status == "True"
    busy = compute_status(deployment(), Observed([lws("True")], []), NOW)
    assert condition(busy, ConditionType.PROGRESSING).status == "True"


def test_scaled_to_zero_is_ready() -> None:
    manifest = yaml.safe_load((ROOT / "examples/qwen-7b-scale-to-zero.yaml").read_text())
    manifest["metadata"]["generation"] = 1
    status = compute_status(
        LLMDeployment.model_validate(manifest), Observed([workload(0, 0, 0)], []), NOW
    )
    assert condition(status, ConditionType.READY).reason == Reason.SCALED_TO_ZERO


def test_missing_gpus_in_the_cluster() -> None:
    pods = [
        pending_pod(f"p{i}", "0/2 nodes are available: 2 Insufficient nvidia.com/gpu.")
        for i in range(2)
    ]
    status = compute_status(
        deployment(), Observed([workload(2, 0, 2)], pods, largest_node_gpus=8), NOW
    )
    degraded = condition(status, ConditionType.DEGRADED)
    assert degraded.status == "True"
    assert degraded.reason == Reason.INSUFFICIENT_GPUS
    assert degraded.message == (
        "2 pod(s) cannot be scheduled: each needs 4 nvidia.com/gpu, 8 GPUs missing in the cluster"
    )
    assert condition(status, ConditionType.STALLED).status == "True"
    assert condition(status, ConditionType.READY).status == "False"


def test_pod_larger_than_any_node() -> None:
    manifest = yaml.safe_load((ROOT / "examples/llama-70b-tp4.yaml").read_text())
    manifest["spec"]["parallelism"] = {"tensorParallelSize": 16, "gpusPerNode": 16}
    manifest["metadata"]["generation"] = 1
    obj = LLMDeployment.model_validate(manifest)
    status = compute_status(obj, Observed([workload(2, 0, 2)], [], largest_node_gpus=8), NOW)
    degraded = condition(status, ConditionType.DEGRADED)
    assert degraded.reason == Reason.INSUFFICIENT_GPUS
    assert (
        "each pod requests 16 nvidia.com/gpu but the largest node offers 8: 8 GPUs short"
        in degraded.message
    )


def test_other_scheduling_failures_are_named() -> None:
    pods = [
        pending_pod(
            "p0", "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."
        )
    ]
    status = compute_status(
        deployment(), Observed([workload(2, 1, 2)], pods, largest_node_gpus=8), NOW
    )
    degraded = condition(status, ConditionType.DEGRADED)
    assert degraded.reason == Reason.UNSCHEDULABLE
    assert "node affinity" in degraded.message


def test_pods_the_api_server_refuses_to_create_are_named() -> None:
    refused = workload(2, 0, 0)
    refused |= {"kind": "Deployment", "metadata": {"name": "llama-70b", "generation": 1}}
    words = 'pods "llama-70b-5d9c" is forbidden: no PriorityClass with name llm-serving was found'
    refused["status"]["conditions"] = [
        {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": words}
    ]
    status = compute_status(deployment(), Observed([refused], [], largest_node_gpus=8), NOW)
    degraded = condition(status, ConditionType.DEGRADED)
    assert (degraded.status, degraded.reason) == ("True", Reason.FAILED_CREATE)
    assert degraded.message == f"Deployment llama-70b cannot create pods: {words}"
    assert condition(status, ConditionType.STALLED).status == "True"


def test_crash_loop() -> None:
    pod = {
        "metadata": {"name": "p0"},
        "status": {"containerStatuses": [{"state": {"waiting": {"reason": "CrashLoopBackOff"}}}]},
    }
    status = compute_status(deployment(), Observed([workload(2, 1, 2)], [pod]), NOW)
    assert condition(status, ConditionType.DEGRADED).reason == Reason.CRASH_LOOP
    assert "p0" in condition(status, ConditionType.DEGRADED).message


@pytest.mark.parametrize(
    ("waiting", "message", "reason"),
    [
        (
            "CreateContainerConfigError",
            'secret "hf-token" not found',
            Reason.CONTAINER_CONFIG_ERROR,
        ),
        (
            "ErrImageNeverPull",
            'Container image "engine:v1" is not present',
            Reason.IMAGE_UNAVAILABLE,
        ),
        ("ImagePullBackOff", 'Back-off pulling image "engine:v1"', Reason.IMAGE_UNAVAILABLE),
    ],
)
def test_containers_that_cannot_start_are_named_in_the_kubelets_words(
    waiting: str, message: str, reason: Reason
) -> None:
    pod = {
        "metadata": {"name": "p0"},
        "status": {
            "containerStatuses": [{"state": {"waiting": {"reason": waiting, "message": message}}}]
        },
    }
    status = compute_status(deployment(), Observed([workload(2, 1, 2)], [pod]), NOW)
    degraded = condition(status, ConditionType.DEGRADED)
    assert (degraded.status, degraded.reason) == ("True", reason)
    assert degraded.message == f"1 pod(s) waiting: p0; {waiting}: {message}"


def test_invalid_spec() -> None:
    ok = compute_status(deployment(), Observed([workload(2, 2, 2)], []), NOW)
    message = "LeaderWorkerSet is not installed"
    status = blocked_status(ok, 2, Reason.INVALID_SPEC, message, NOW + timedelta(seconds=1))
    assert status.observed_generation == 2
    assert status.ready_replicas == 2  # what exists is still reported
    assert condition(status, ConditionType.DEGRADED) == condition(ok, ConditionType.DEGRADED)
    ready = condition(status, ConditionType.READY)
    assert (ready.status, ready.reason) == ("False", Reason.INVALID_SPEC)
    assert ready.message == "LeaderWorkerSet is not installed"
    assert condition(status, ConditionType.STALLED).status == "True"


def test_unchanged_world_gives_an_equal_status() -> None:
    obj = deployment()
    observed = Observed([workload(2, 2, 2)], [])
    first = compute_status(obj, observed, NOW)
    again = compute_status(
        obj.model_copy(update={"status": first}), observed, NOW + timedelta(minutes=5)
    )
    assert again == first


def test_transition_time_moves_only_on_flip() -> None:
    obj = deployment()
    ready = compute_status(obj, Observed([workload(2, 2, 2)], []), NOW)
    later = NOW + timedelta(minutes=1)
    degraded = compute_status(
        obj.model_copy(update={"status": ready}), Observed([workload(2, 1, 2)], []), later
    )
    assert condition(degraded, ConditionType.READY).last_transition_time == later
    assert condition(degraded, ConditionType.DEGRADED).last_transition_time == NOW
