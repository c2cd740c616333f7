"""The placement check: more replicas are asked for only where their GPUs fit.

Cases: free GPUs are a node's allocatable less what llmfleet's bound pods request (finished
pods free theirs); a pod fits on one node, a multi-node group on as many distinct nodes;
pods already asked for and not placed take their share first; nodes the pods may not use
(cordoned, another selector or GPU product, an untolerated taint) offer nothing; the
autoscaler asks for what fits, new objects' first size included, says what is short
(``ScalingLimited: Unplaceable``), and never asks the nodes when it does not scale up.
"""

from __future__ import annotations

from typing import Any

import yaml

from llmfleet_contract.api import ConditionType, LLMDeploymentStatus, Reason
from llmfleet_contract.api.placement import PlacementSpec
from llmfleet_operator.autoscaler import Autoscaler
from llmfleet_operator.observe import Observed, compute_status
from llmfleet_operator.placement import Room, _groups, eligible, room
from llmfleet_operator.reconcile import reconcile
from llmfleet_operator.resources import NODE, Resource
from tests.corpus import ROOT
from tests.test_autoscaler import T0, FakeSource, condition, deployment, pod, with_status
from tests.test_reconcile_autoscaling import MemoryKube

GPU = "nvidia.com/gpu"


def node(name: str, gpus: int, taints: list[dict[str, str]] | None = None, **labels: str) -> Any:
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": taints or []},
        "status": {"allocatable": {GPU: str(gpus)}},
    }


def bound(on: str, gpus: int, phase: str = "Running") -> Any:
    resources = {"limits": {GPU: str(gpus)}}
    return {
        "spec": {"nodeName": on, "containers": [{"name": "engine", "resources": resources}]},
        "status": {"phase": phase},
    }


def tp(size: int, **placement: Any) -> Any:
    """The test deployment at tensor parallel ``size`` on any GPU product."""
    obj = deployment()
    placement = {"gpu_products": None} | placement
    spec = obj.spec.model_copy(
        update={
            "parallelism": obj.spec.parallelism.model_copy(
                update={"tensor_parallel_size": size, "gpus_per_node": 8}
            ),
            "placement": obj.spec.placement.model_copy(update=placement),
        }
    )
    return obj.model_copy(update={"spec": spec})


def test_free_gpus_are_allocatable_less_what_bound_pods_request() -> None:
    nodes = [node("a", 8), node("b", 8)]
    managed = [bound("a", 4), bound("b", 8, phase="Succeeded")]
    found = room(tp(4), nodes, managed, unbound=0)
    assert found.free == {"a": 4, "b": 8}
    assert found.replicas == 3  # one on a, two on b
    assert room(tp(4), nodes, managed, unbound=1).replicas == 2  # one asked for already


def test_a_group_needs_distinct_nodes() -> None:
    assert _groups([1, 1, 1], 2) == 1
    assert _groups([1, 1, 1, 1], 2) == 2
    assert _groups([3, 0, 0], 2) == 0  # one node's pods cannot make a two-node group
    assert _groups([2, 2, 1], 2) == 2
    sixteen = room(tp(16), [node(n, 8) for n in "abc"], [], unbound=0)
    assert (sixteen.replicas, sixteen.pods_per_replica, sixteen.gpus_per_pod) == (1, 2, 8)


def test_nodes_the_pods_may_not_use_offer_nothing() -> None:
    gpu_taint = {"key": GPU, "value": "present", "effect": "NoSchedule"}
    tolerated = PlacementSpec.model_validate(
        {"tolerations": [{"key": GPU, "operator": "Exists"}], "nodeSelector": {"pool": "a"}}
    )
    assert eligible(node("n", 8, [gpu_taint], pool="a"), tolerated)
    assert not eligible(node("n", 8, [gpu_taint], pool="b"), tolerated)
    assert not eligible(node("n", 8, [gpu_taint]), PlacementSpec())
    soft = {"key": "x", "effect": "PreferNoSchedule"}
    assert eligible(node("n", 8, [soft]), PlacementSpec())
    cordoned = node("n", 8) | {"spec": {"unschedulable": True}}
    assert not eligible(cordoned, PlacementSpec())
    products = PlacementSpec.model_validate({"gpuProducts": ["H100"]})
    assert eligible(node("n", 8, **{"nvidia.com/gpu.product": "H100"}), products)
    assert not eligible(node("n", 8, **{"nvidia.com/gpu.product": "A10"}), products)
    nowhere = room(tp(1, gpu_products=["H100"]), [node("n", 8)], [], unbound=0)
    said = nowhere.shortfall(1, GPU)
    assert said.endswith(
        "no node is eligible: none matches the node selector and GPU products,"
        " tolerated and not cordoned"
    )


def test_the_autoscaler_asks_for_what_fits_and_says_what_is_short() -> None:
    obj = with_status(deployment(), LLMDeploymentStatus(observed_generation=1, desired_replicas=2))
    pods = [pod("p0"), pod("p1", ip="10.0.0.2")]
    asked: list[int] = []

    def one_more() -> Room:
        asked.append(1)
        return Room(1, 1, 1, {"gpu-node-1": 1})

    busy = FakeSource(load={"p0": (12, 8), "p1": (12, 8)})
    period = Autoscaler(busy).run(obj, "uid", pods, T0, one_more)
    assert (period.decision.current, period.decision.desired) == (2, 3)  # 4 wanted
    assert period.decision.reason is Reason.UNPLACEABLE
    limited = condition(period.status, ConditionType.SCALING_LIMITED)
    assert (limited.status, limited.reason) == ("True", Reason.UNPLACEABLE)
    assert "2 more replica(s) wanted, 1 fit: each needs 1 nvidia.com/gpu on one node" in (
        limited.message
    )
    assert "free on the eligible nodes: gpu-node-1 1" in limited.message
    idle = Autoscaler(FakeSource()).run(obj, "uid", pods, T0, one_more)
    assert idle.decision.desired == 1  # a scale-down
    assert asked == [1]  # no scale-up: the nodes were not asked


def test_a_new_objects_first_size_is_what_fits() -> None:
    """minReplicas 4 on nodes with room for 2: the workload is created with 2, not with
    two more Pending pods."""
    obj = deployment(minReplicas=4)
    period = Autoscaler(FakeSource()).run(obj, "uid", [], T0, lambda: Room(2, 8, 1, {}))
    assert period.decision.desired == 2
    assert period.decision.reason is Reason.UNPLACEABLE
    assert period.status.desired_replicas == 2


def test_a_new_object_is_created_with_the_replicas_that_fit() -> None:
    """Through the reconcile: six replicas of a whole node each, four nodes: the child
    Deployment is created with four, and the status says so."""
    manifest = yaml.safe_load((ROOT / "examples/llama-8b-simulated-autoscaled.yaml").read_text())
    manifest["metadata"] |= {"namespace": "serving", "uid": "u1", "generation": 1}
    manifest["spec"]["autoscaling"] |= {"minReplicas": 6, "maxReplicas": 6}
    manifest["spec"]["parallelism"] = {"tensorParallelSize": 8, "gpusPerNode": 8}
    nodes = [node(f"gpu-node-{i}", 8, **{"nvidia.com/gpu.product": "any"}) for i in range(4)]

    class Nodes(MemoryKube):
        def list(self, kind: Resource, namespace: str | None, selector: str) -> list[Any]:
            return nodes if kind == NODE else super().list(kind, namespace, selector)

    kube = Nodes(manifest, [])
    reconcile(kube, "serving", manifest["metadata"]["name"], T0, Autoscaler(FakeSource()))
    name = manifest["metadata"]["name"]
    assert kube.objects[("Deployment", name)]["spec"]["replicas"] == 4
    status = kube.objects[("LLMDeployment", name)]["status"]
    assert status["desiredReplicas"] == 4
    limited = next(c for c in status["conditions"] if c["type"] == "ScalingLimited")
    assert (limited["status"], limited["reason"]) == ("True", "Unplaceable")


def test_a_model_none_of_whose_replicas_fit_is_not_ready() -> None:
    """Full nodes: no replica asked for, and Ready False Unplaceable (not ScaledToZero)."""
    period = Autoscaler(FakeSource()).run(deployment(), "uid", [], T0, lambda: Room(0, 1, 1, {}))
    assert period.decision.desired == 0
    obj = with_status(deployment(), period.status)
    status = compute_status(obj, Observed([], [], 8), T0)
    ready = condition(status, ConditionType.READY)
    assert (ready.status, ready.reason) == ("False", Reason.UNPLACEABLE)
    assert ready.message.startswith("no replica fits: the nodes have no room")
