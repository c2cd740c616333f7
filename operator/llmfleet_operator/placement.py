"""Whether more replicas fit on the nodes that exist, before the autoscaler asks for them.

Who calls it: :mod:`.reconcile`, when a control period wants more replicas than the child
workload has. A replica is a pod of ``gpusPerPod`` GPUs on one node, or a group of
``nodesPerGroup`` such pods on as many distinct nodes (a LeaderWorkerSet). Asking for one
that cannot be placed only piles up Pending pods (and, with a cluster autoscaler, orders
nodes for a group that may never fit), so the autoscaler asks for what fits and says what
is short (``ScalingLimited: Unplaceable``).

What is free on a node is its allocatable GPUs minus the requests of the pods bound to it
that llmfleet manages (every LLMDeployment's, from the operator's own view). Other
workloads' GPU pods are not seen: the scheduler still decides, and its refusal is reported
as before (``BlockedByGPUs``).

With ``spec.placement.spot`` the replicas are shared between an on-demand and a spot
workload (:func:`split`): the on-demand floor first, then spot as far as the spot nodes
hold, the rest on demand; replicas move back to spot only as spot ones become ready. A
node carrying a preemption taint (:data:`PREEMPTION_TAINTS`, or the operator's
``--preemption-taint``) is not eligible, and the spot pods on it are drained at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from llmfleet_contract import labels
from llmfleet_contract.api import LLMDeployment
from llmfleet_contract.api.placement import PlacementSpec, Toleration, TolerationOperator
from llmfleet_operator.kube import Manifest

FINISHED = frozenset({"Succeeded", "Failed"})
PREEMPTION_TAINTS = (
    "karpenter.sh/disrupted",  # Karpenter v1 drains the node: spot interruption among others
    "aws-node-termination-handler/spot-itn",  # AWS Node Termination Handler: spot notice
    "cloud.google.com/impending-node-termination",  # GKE: the node is shutting down
)
"""Taint keys that say a node is about to go (the operator's default ``--preemption-taint``)."""


@dataclass(frozen=True)
class Split:
    """How many replicas run on demand and how many on spot nodes."""

    on_demand: int
    spot: int


def split(
    total: int, floor: int, spot_fits: int, on_demand_now: int | None, spot_ready: int
) -> Split:
    """Share ``total`` replicas: ``floor`` on demand, the rest on spot as far as
    ``spot_fits`` (what the spot nodes hold), the remainder on demand. On-demand replicas
    above that go only as the ``spot_ready`` ones cover them (from ``on_demand_now``), so a
    move back to spot never drops below ``total`` ready."""
    spot = min(max(0, total - floor), spot_fits)
    on_demand = total - spot
    if on_demand_now is not None:
        on_demand = max(on_demand, min(on_demand_now, total - spot_ready))
    return Split(on_demand, spot)


def notice(node: Manifest, taints: Iterable[str]) -> str | None:
    """The preemption taint ``node`` carries (its key), if any."""
    keys = {taint.get("key") for taint in (node.get("spec") or {}).get("taints") or []}
    return next((key for key in taints if key in keys), None)


def is_spot(pod: Manifest) -> bool:
    return ((pod.get("metadata") or {}).get("labels") or {}).get(labels.CAPACITY) == labels.SPOT


@dataclass(frozen=True)
class Room:
    """How many more replicas fit now, and the numbers behind it."""

    replicas: int
    gpus_per_pod: int
    pods_per_replica: int
    free: dict[str, int]
    """Free GPUs per eligible node."""

    def __add__(self, other: Room) -> Room:
        """Room on two sets of nodes (the on-demand and the spot ones)."""
        free = {**self.free, **other.free}
        return Room(self.replicas + other.replicas, self.gpus_per_pod, self.pods_per_replica, free)

    def shortfall(self, wanted: int, resource: str) -> str:
        """Why ``wanted`` more replicas do not fit (for the status and the decision)."""
        shape = f"{self.gpus_per_pod} {resource} on one node"
        if self.pods_per_replica > 1:
            shape = f"{self.pods_per_replica} nodes with {self.gpus_per_pod} {resource} each"
        nodes = ", ".join(f"{node} {gpus}" for node, gpus in sorted(self.free.items()))
        where = f"free on the eligible nodes: {nodes}"
        if not self.free:
            where = (
                "no node is eligible: none matches the node selector and GPU products, tolerated"
                " and not cordoned"
            )
        return f"{wanted} more replica(s) wanted, {self.replicas} fit: each needs {shape}; {where}"


def room(
    obj: LLMDeployment, nodes: Iterable[Manifest], managed: Iterable[Manifest], unbound: int
) -> Room:
    """The replicas of ``obj`` that fit on ``nodes`` beside the ``managed`` pods bound there,
    less the ``unbound`` pods of ``obj`` already asked for and not placed yet."""
    placement, parallelism = obj.spec.placement, obj.spec.parallelism
    resource = placement.gpu_resource_name
    per_pod, per_replica = parallelism.gpus_per_pod, parallelism.nodes_per_group
    used: dict[str, int] = {}
    for pod in managed:
        node = (pod.get("spec") or {}).get("nodeName")
        if node and (pod.get("status") or {}).get("phase") not in FINISHED:
            used[node] = used.get(node, 0) + _requested(pod, resource)
    free = {
        name: allocatable(node, resource) - used.get(name, 0)
        for node in nodes
        if eligible(node, placement) and (name := (node.get("metadata") or {}).get("name"))
    }
    pods = [max(0, gpus) // per_pod for gpus in free.values()]
    fits = _groups(pods, per_replica) - (unbound + per_replica - 1) // per_replica
    return Room(max(0, fits), per_pod, per_replica, {k: max(0, v) for k, v in free.items()})


def _groups(pods_per_node: list[int], size: int) -> int:
    """Most groups of ``size`` pods on distinct nodes: ``g`` fit when the nodes together
    hold ``g x size`` pods, each node giving at most one pod to each group."""
    if size == 1:
        return sum(pods_per_node)
    groups = 0
    while sum(min(pods, groups + 1) for pods in pods_per_node) >= (groups + 1) * size:
        groups += 1
    return groups


def eligible(node: Manifest, placement: PlacementSpec) -> bool:
    """Whether the pods may land on ``node``: schedulable, its labels matching the node
    selector and the GPU products (and not the spot nodes' when these run apart), and every
    NoSchedule or NoExecute taint tolerated."""
    spec, found = node.get("spec") or {}, (node.get("metadata") or {}).get("labels") or {}
    if spec.get("unschedulable"):
        return False
    wanted = dict(placement.node_selector or {})
    if any(found.get(key) != value for key, value in wanted.items()):
        return False
    spot = placement.spot
    if spot and all(found.get(key) == value for key, value in spot.node_selector.items()):
        return False
    if placement.gpu_products and found.get(placement.gpu_product_label) not in set(
        placement.gpu_products
    ):
        return False
    tolerations = placement.tolerations or []
    return all(
        taint.get("effect") == "PreferNoSchedule"
        or any(_tolerates(toleration, taint) for toleration in tolerations)
        for taint in spec.get("taints") or []
    )


def _tolerates(toleration: Toleration, taint: Manifest) -> bool:
    if toleration.effect is not None and toleration.effect != taint.get("effect"):
        return False
    if toleration.key is None:  # with Exists: every taint
        return toleration.operator is TolerationOperator.EXISTS
    if toleration.key != taint.get("key"):
        return False
    return toleration.operator is TolerationOperator.EXISTS or (toleration.value or "") == (
        taint.get("value") or ""
    )


def allocatable(node: Manifest, resource: str) -> int:
    """A node's allocatable ``resource`` (0: none, or not a count)."""
    return _count((node.get("status") or {}).get("allocatable", {}).get(resource))


def _requested(pod: Manifest, resource: str) -> int:
    total = 0
    for container in (pod.get("spec") or {}).get("containers") or []:
        resources = container.get("resources") or {}
        found = (resources.get("limits") or {}).get(
            resource, (resources.get("requests") or {}).get(resource)
        )
        total += _count(found)
    return total


def _count(value: object) -> int:
    try:
        return int(str(value or 0))
    except ValueError:
        return 0
