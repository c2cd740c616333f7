"""Spot tiers: an on-demand floor, burst on spot nodes, a preemption notice drains.

Cases: with ``spec.placement.spot`` the replicas run in two workloads, the on-demand one kept
off the spot nodes (one affinity term per spot label, each term keeping the GPU products)
and the spot one on them (their labels and taints added, its pods labelled); the shares
(:func:`split`): the floor first, spot as far as its nodes hold, the rest on demand, and a
move back to spot only as spot replicas become ready; the on-demand view of the nodes
leaves the spot ones out; through the reconcile, a spot pod on a node with a preemption
notice is put first in line, the replicas move to on demand when no spot node is left, the
pod is deleted after the workloads are applied and an Event says so, and the status counts
the ready replicas of each tier; with a node provisioner's time (``nodeProvisioningSeconds``)
a Pending spot pod stays asked for that long, then falls back; a node's notice reconciles
the owners of its pods once.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmfleet_contract.api import ConditionType, LLMDeployment
from llmfleet_operator.children import children
from llmfleet_operator.handlers import Metrics, Runtime
from llmfleet_operator.kube import ForbiddenError
from llmfleet_operator.observe import Observed, compute_status
from llmfleet_operator.placement import Split, eligible, split
from llmfleet_operator.podspec import spot_tier
from llmfleet_operator.reconcile import DOOMED_COST, _room, reconcile
from llmfleet_operator.resources import DEPLOYMENT, LLMDEPLOYMENT, NODE, POD, Resource
from tests.test_autoscaler import T0, condition, deployment, pod
from tests.test_placement import node
from tests.test_reconcile_autoscaling import MemoryKube

SPOT = {"nodeSelector": {"capacity-type": "spot"}, "onDemandReplicas": 1}
SPOT_TAINT = {"key": "spot", "value": "true", "effect": "NoSchedule"}
PRODUCT = {"nvidia.com/gpu.product": "NVIDIA-L4"}


def spotted(replicas: int = 2, **spot: Any) -> LLMDeployment:
    """The example at a fixed ``replicas``, its spot nodes labelled ``capacity-type: spot``
    and tainted ``spot=true``, one replica kept on demand."""
    obj = deployment()
    given = {**SPOT, "tolerations": [{"key": "spot", "operator": "Exists"}], **spot}
    placement = obj.spec.placement.model_validate(
        obj.spec.placement.model_dump(by_alias=True, exclude_none=True) | {"spot": given}
    )
    spec = obj.spec.model_copy(
        update={"placement": placement, "autoscaling": None, "replicas": replicas}
    )
    return obj.model_copy(update={"spec": spec})


def test_two_workloads_one_off_the_spot_nodes_one_on_them() -> None:
    obj = spotted(3)
    found = {
        m["metadata"]["name"]: m
        for kind, m in children(obj, "u", Split(1, 2))
        if kind == DEPLOYMENT
    }
    on_demand, spot = found["llama-8b"], found["llama-8b-spot"]
    assert (on_demand["spec"]["replicas"], spot["spec"]["replicas"]) == (1, 2)
    terms = on_demand["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    assert [t["matchExpressions"][-1] for t in terms] == [
        {"key": "capacity-type", "operator": "NotIn", "values": ["spot"]}
    ]
    assert terms[0]["matchExpressions"][0]["values"] == ["NVIDIA-L4", "NVIDIA-A10G"]
    pods = spot["spec"]["template"]
    assert pods["spec"]["nodeSelector"] == {"capacity-type": "spot"}
    assert pods["spec"]["tolerations"] == [{"key": "spot", "operator": "Exists"}]
    assert pods["metadata"]["labels"]["llmfleet.io/capacity"] == "spot"
    assert spot["spec"]["selector"]["matchLabels"]["llmfleet.io/capacity"] == "spot"
    assert "llmfleet.io/capacity" not in on_demand["spec"]["template"]["metadata"]["labels"]
    # Without shares given (nothing known of the nodes yet): everything on demand.
    unknown = {
        m["metadata"]["name"]: m["spec"]["replicas"]
        for k, m in children(obj, "u")
        if k == DEPLOYMENT
    }
    assert (unknown["llama-8b"], unknown["llama-8b-spot"]) == (3, 0)


def test_a_spot_node_differs_from_on_demand_in_any_one_of_its_labels() -> None:
    obj = spotted(2, nodeSelector={"capacity-type": "spot", "pool": "cheap"})
    on_demand = children(obj, "u")[0][1]
    terms = on_demand["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    assert [t["matchExpressions"][-1]["key"] for t in terms] == ["capacity-type", "pool"]
    placement = obj.spec.placement
    assert eligible(node("od", 8, pool="cheap", **PRODUCT), placement)  # not every label
    assert not eligible(
        node("s", 8, pool="cheap", **{"capacity-type": "spot"}, **PRODUCT), placement
    )


def test_the_spot_tier_sees_only_the_spot_nodes() -> None:
    tier = spot_tier(spotted()).spec.placement
    spot_node = node("s", 8, [SPOT_TAINT], **{"capacity-type": "spot"}, **PRODUCT)
    assert eligible(spot_node, tier)
    assert not eligible(node("od", 8, **PRODUCT), tier)
    assert not eligible(spot_node, spotted().spec.placement)


def test_the_shares_floor_first_then_spot_as_far_as_it_holds() -> None:
    assert split(5, 2, spot_fits=8, on_demand_now=2, spot_ready=3) == Split(2, 3)
    assert split(5, 2, spot_fits=1, on_demand_now=2, spot_ready=1) == Split(4, 1)
    assert split(1, 2, spot_fits=8, on_demand_now=None, spot_ready=0) == Split(1, 0)
    # Spot is back: the two on-demand replicas above the floor go as spot ones get ready.
    assert split(3, 1, spot_fits=8, on_demand_now=3, spot_ready=0) == Split(3, 2)
    assert split(3, 1, spot_fits=8, on_demand_now=3, spot_ready=1) == Split(2, 2)
    assert split(3, 1, spot_fits=8, on_demand_now=2, spot_ready=2) == Split(1, 2)


@given(
    total=st.integers(0, 50),
    floor=st.integers(0, 50),
    fits=st.integers(0, 50),
    now=st.none() | st.integers(0, 50),
    ready=st.integers(0, 50),
)
def test_the_shares_serve_the_total_and_never_put_on_spot_what_it_cannot_hold(
    total: int, floor: int, fits: int, now: int | None, ready: int
) -> None:
    shares = split(total, floor, fits, now, ready)
    assert shares.on_demand + shares.spot >= total
    assert shares.spot <= fits
    assert shares.spot <= total
    assert shares.on_demand >= min(total, floor)
    # No on-demand replica is added but for what spot cannot hold: a surge only keeps
    # those that run while spot ones get ready.
    assert shares.on_demand <= max(total - shares.spot, now or 0)


class Cluster(MemoryKube):
    """Nodes and pods as given; deletions of pods are recorded."""

    def __init__(self, body: dict[str, Any], pods: list[Any], nodes: list[Any]) -> None:
        super().__init__(body, pods)
        self.nodes = nodes
        self.deleted: list[str] = []

    def list(self, kind: Resource, namespace: str | None, selector: str) -> list[Any]:
        return self.nodes if kind == NODE else super().list(kind, namespace, selector)

    def patch(self, kind: Resource, namespace: str, name: str, body: Any) -> Any:
        if kind == POD:
            return super().patch(kind, namespace, name, body)
        self.order.append(f"patch {kind.kind} {name}")
        self.objects[(kind.kind, name)]["spec"] |= body["spec"]
        return self.objects[(kind.kind, name)]

    def delete(self, kind: Resource, namespace: str, name: str) -> None:
        self.order.append(f"delete {kind.kind} {name}")
        if kind == POD:
            self.deleted.append(name)
        super().delete(kind, namespace, name)


def engine(name: str, on: str, spot: bool, ip: str) -> Any:
    found = pod(name, ip=ip)
    found["metadata"]["labels"]["llmfleet.io/deployment"] = "llama-8b"
    if spot:
        found["metadata"]["labels"]["llmfleet.io/capacity"] = "spot"
    found["spec"] = {
        "nodeName": on,
        "containers": [{"resources": {"limits": {"nvidia.com/gpu": "1"}}}],
    }
    return found


def cluster(notice: bool) -> Cluster:
    obj = spotted(2)
    body = obj.model_dump(mode="json", by_alias=True, exclude_none=True)
    body["apiVersion"], body["kind"] = LLMDEPLOYMENT.api_version, LLMDEPLOYMENT.kind
    body["metadata"]["uid"] = "uid-1"
    taints = [SPOT_TAINT] + (
        [{"key": "karpenter.sh/disrupted", "effect": "NoSchedule"}] if notice else []
    )
    nodes = [
        node("od", 8, **PRODUCT),
        node("spot-1", 8, taints, **{"capacity-type": "spot"}, **PRODUCT),
    ]
    pods = [engine("a", "od", False, "10.0.0.1"), engine("b", "spot-1", True, "10.0.0.2")]
    kube = Cluster(body, pods, nodes)
    for kind, manifest in children(obj, "uid-1", Split(1, 1)):
        kube.objects[(kind.kind, manifest["metadata"]["name"])] = manifest
    return kube


def test_a_preemption_notice_drains_the_spot_pod_and_moves_its_replica_on_demand() -> None:
    kube = cluster(notice=True)
    reconcile(kube, "serving", "llama-8b", T0)
    assert kube.objects[("Deployment", "llama-8b")]["spec"]["replicas"] == 2
    assert kube.objects[("Deployment", "llama-8b-spot")]["spec"]["replicas"] == 0
    assert kube.deleted == ["b"]
    # The drain before the workloads: the ReplicaSet's replacement, Pending for want of a
    # spot node, is then the pod the lower spot count removes.
    assert kube.order.index("delete Pod b") < kube.order.index("apply Deployment")
    [drained] = [e for e in kube.events if e[1] == "Drained"]
    assert drained[2] == (
        "Drained pod b on node spot-1: preemption notice (karpenter.sh/disrupted); replaced"
    )
    status = kube.objects[("LLMDeployment", "llama-8b")]["status"]
    assert (status["spotReplicas"], status["onDemandReplicas"]) == (1, 1)  # as seen before


def test_without_a_notice_nothing_is_drained_and_the_shares_hold() -> None:
    kube = cluster(notice=False)
    reconcile(kube, "serving", "llama-8b", T0)
    assert kube.deleted == []
    assert kube.objects[("Deployment", "llama-8b-spot")]["spec"]["replicas"] == 1
    assert kube.objects[("Deployment", "llama-8b")]["spec"]["replicas"] == 1


def test_only_the_configured_taints_are_notices() -> None:
    kube = cluster(notice=True)
    reconcile(kube, "serving", "llama-8b", T0, notices=("example.com/going",))
    assert kube.deleted == []


def test_removing_spot_winds_the_spot_workload_down_as_on_demand_gets_ready() -> None:
    kube = cluster(notice=False)
    body = kube.objects[("LLMDeployment", "llama-8b")]
    del body["spec"]["placement"]["spot"]
    reconcile(kube, "serving", "llama-8b", T0)  # one on-demand replica ready of two
    assert kube.objects[("Deployment", "llama-8b")]["spec"]["replicas"] == 2
    assert kube.objects[("Deployment", "llama-8b-spot")]["spec"]["replicas"] == 1
    kube.pods.append(engine("c", "od", False, "10.0.0.3"))  # the second one is ready
    reconcile(kube, "serving", "llama-8b", T0)
    assert ("Deployment", "llama-8b-spot") not in kube.objects


def test_the_spot_workload_shrinks_by_what_on_demand_covers() -> None:
    kube = cluster(notice=False)
    body = kube.objects[("LLMDeployment", "llama-8b")]
    del body["spec"]["placement"]["spot"]
    body["spec"]["replicas"] = 3
    kube.objects[("Deployment", "llama-8b-spot")]["spec"]["replicas"] = 2
    kube.pods.append(engine("c", "od", False, "10.0.0.3"))  # two on demand ready of three
    reconcile(kube, "serving", "llama-8b", T0)
    assert kube.objects[("Deployment", "llama-8b-spot")]["spec"]["replicas"] == 1
    [scaled] = [e for e in kube.events if e[1] == "Scaled" and "spot removed" in e[2]]
    assert scaled[2] == (
        "Scaled Deployment llama-8b-spot from 2 to 1: spot removed from the spec,"
        " 2 on-demand replica(s) ready"
    )


@pytest.mark.parametrize(
    ("provisioning", "waited", "shares"),
    [(0, 60, (2, 0)), (120, 60, (1, 1)), (120, 300, (2, 0))],
)
def test_with_a_node_provisioner_a_pending_spot_pod_gets_its_time(
    provisioning: int, waited: int, shares: tuple[int, int]
) -> None:
    """No spot node exists; one spot pod waits Pending. Without a provisioner's time it
    falls back at once; with 120 s it stays asked for 120 s, then falls back."""
    kube = cluster(notice=False)
    kube.nodes = kube.nodes[:1]  # no spot node
    body = kube.objects[("LLMDeployment", "llama-8b")]
    body["spec"]["placement"]["spot"]["nodeProvisioningSeconds"] = provisioning
    pending = pod("b", ready_since=None, created=T0 - timedelta(seconds=waited))
    pending["metadata"]["labels"] |= {
        "llmfleet.io/deployment": "llama-8b",
        "llmfleet.io/capacity": "spot",
    }
    pending["spec"] = {"containers": []}
    kube.pods[1] = pending
    reconcile(kube, "serving", "llama-8b", T0)
    found = tuple(
        kube.objects[("Deployment", name)]["spec"]["replicas"]
        for name in ("llama-8b", "llama-8b-spot")
    )
    assert found == shares


def test_a_spot_pod_waiting_for_a_node_provisioner_is_not_degraded() -> None:
    waiting = engine("b", "", True, "")
    waiting["spec"].pop("nodeName")
    waiting["status"] = {
        "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]
    }
    for provisioning, expected in ((120, "False"), (0, "True")):
        obj = spotted(2, nodeProvisioningSeconds=provisioning)
        status = compute_status(obj, Observed([], [waiting]), T0)
        assert condition(status, ConditionType.DEGRADED).status == expected


def test_a_spot_pod_pending_past_its_time_is_the_one_removed() -> None:
    kube = cluster(notice=False)
    kube.nodes = kube.nodes[:1]  # no spot node
    body = kube.objects[("LLMDeployment", "llama-8b")]
    body["spec"]["placement"]["spot"]["nodeProvisioningSeconds"] = 120
    body["spec"]["replicas"] = 3
    for name, waited in (("old", 300), ("new", 10)):
        pending = pod(name, ready_since=None, created=T0 - timedelta(seconds=waited))
        pending["metadata"]["labels"] |= {
            "llmfleet.io/deployment": "llama-8b",
            "llmfleet.io/capacity": "spot",
        }
        pending["spec"] = {"containers": []}
        kube.pods.append(pending)
    kube.pods.pop(1)  # the spot pod of cluster(): only the two Pending ones
    reconcile(kube, "serving", "llama-8b", T0)
    assert kube.objects[("Deployment", "llama-8b-spot")]["spec"]["replicas"] == 1
    cost = {"controller.kubernetes.io/pod-deletion-cost": str(DOOMED_COST)}
    assert [name for name, annotations in kube.annotated if annotations == cost] == ["old"]


class Unreadable(Cluster):
    """The nodes cannot be listed (RBAC, an API error); pods cannot be deleted."""

    def list(self, kind: Resource, namespace: str | None, selector: str) -> list[Any]:
        if kind == NODE:
            raise ForbiddenError(403, "nodes is forbidden")
        return super().list(kind, namespace, selector)


def test_without_the_nodes_the_shares_stay_as_they_are() -> None:
    kube = cluster(notice=False)
    kube.__class__ = Unreadable
    kube.objects[("Deployment", "llama-8b")]["spec"]["replicas"] = 2  # spot had gone
    kube.objects[("Deployment", "llama-8b-spot")]["spec"]["replicas"] = 0
    reconcile(kube, "serving", "llama-8b", T0)
    assert kube.objects[("Deployment", "llama-8b")]["spec"]["replicas"] == 2
    assert kube.objects[("Deployment", "llama-8b-spot")]["spec"]["replicas"] == 0


def test_no_spot_node_no_cluster_wide_listing_of_pods() -> None:
    kube = cluster(notice=False)
    kube.nodes = kube.nodes[:1]
    listed: list[str] = []
    plain = kube.list

    def recording(kind: Resource, namespace: str | None, selector: str) -> list[Any]:
        listed.append(f"{kind.kind} {namespace}")
        return plain(kind, namespace, selector)

    kube.list = recording  # type: ignore[method-assign]
    reconcile(kube, "serving", "llama-8b", T0)
    assert "Pod None" not in listed
    assert kube.objects[("Deployment", "llama-8b-spot")]["spec"]["replicas"] == 0


def test_a_refused_drain_is_a_warning_and_the_status_is_still_written() -> None:
    kube = cluster(notice=True)

    def refused(kind: Resource, namespace: str, name: str) -> None:
        raise ForbiddenError(
            403, "the llmfleet operator may delete only the pods of its spot workloads"
        )

    kube.delete = refused  # type: ignore[method-assign]
    reconcile(kube, "serving", "llama-8b", T0)
    [warning] = [e for e in kube.events if e[1] == "Drained"]
    assert warning[0] == "Warning"
    assert warning[2].startswith("Could not drain pod b on node spot-1 (karpenter.sh/disrupted)")
    assert "spotReplicas" in kube.objects[("LLMDeployment", "llama-8b")]["status"]


def test_with_a_node_provisioner_the_room_is_not_capped() -> None:
    kube = cluster(notice=False)
    kube.objects[("LLMDeployment", "llama-8b")]["spec"]["placement"]["spot"][
        "nodeProvisioningSeconds"
    ] = 120
    obj = spotted(2, nodeProvisioningSeconds=120)
    assert _room(kube, obj, []) is None
    assert _room(kube, spotted(2), []) is not None


@pytest.mark.parametrize("tainted", [True, False])
def test_a_nodes_notice_reconciles_its_pods_owners_once(tainted: bool) -> None:
    forgotten: list[int] = []
    runtime = Runtime(
        kube=None,  # type: ignore[arg-type]
        credentials=lambda: NotImplemented,
        metrics=Metrics(),
        forget_nodes=lambda: forgotten.append(1),
    )
    enqueued: list[tuple[str, str]] = []
    runtime.enqueue = lambda namespace, name: enqueued.append((namespace, name))  # type: ignore[method-assign, assignment]
    taints = [{"key": "cloud.google.com/impending-node-termination"}] if tainted else []
    going = {"spec": {"taints": taints}}
    owners = [("serving", "llama-8b"), ("serving", "llama-8b"), ("other", "m")]
    runtime.node_changed("n1", going, owners)
    runtime.node_changed("n1", going, owners)  # a heartbeat of the same node: once is enough
    expected = sorted({("serving", "llama-8b"), ("other", "m")}) if tainted else []
    assert sorted(enqueued) == expected
    assert forgotten == ([1] if tainted else [])


def test_a_multi_node_groups_spot_workload_is_a_leaderworkerset_of_its_own() -> None:
    obj = spotted(2)
    parallelism = obj.spec.parallelism.model_copy(
        update={"tensor_parallel_size": 16, "gpus_per_node": 8}
    )
    obj = obj.model_copy(update={"spec": obj.spec.model_copy(update={"parallelism": parallelism})})
    groups = {
        m["metadata"]["name"]: m for k, m in children(obj, "u", Split(1, 1)) if k != DEPLOYMENT
    }
    spot = groups["llama-8b-spot-group"]["spec"]["leaderWorkerTemplate"]
    for template in (spot["leaderTemplate"], spot["workerTemplate"]):
        assert template["metadata"]["labels"]["llmfleet.io/capacity"] == "spot"
        assert template["spec"]["nodeSelector"] == {"capacity-type": "spot"}
    on_demand = groups["llama-8b-group"]["spec"]["leaderWorkerTemplate"]["workerTemplate"]
    assert "llmfleet.io/capacity" not in on_demand["metadata"]["labels"]


def test_a_deployment_without_spot_has_one_workload() -> None:
    kinds = [kind for kind, _ in children(deployment(), "u")]
    assert kinds.count(DEPLOYMENT) == 1
