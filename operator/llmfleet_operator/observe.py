"""Pure status: what the observed workload and pods say about an LLMDeployment.

Called by :mod:`reconcile` after the children are applied. Inputs are plain manifests as
the API server returns them; the output is the new ``status``. Conditions keep their
``lastTransitionTime`` unless their status flips, and signals and scaling decisions
(written by the autoscaler) are carried over, so an unchanged world gives an equal
status and no write.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from llmfleet_contract import labels
from llmfleet_contract.api import (
    AutoscalingMode,
    Condition,
    ConditionStatus,
    ConditionType,
    LLMDeployment,
    LLMDeploymentStatus,
    Reason,
)
from llmfleet_contract.pods import condition, serving_url, terminating
from llmfleet_operator.children import desired_replicas
from llmfleet_operator.placement import is_spot

Manifest = dict[str, Any]
TRUE, FALSE, UNKNOWN = ConditionStatus.TRUE, ConditionStatus.FALSE, ConditionStatus.UNKNOWN


@dataclass(frozen=True)
class Observed:
    """What the reconcile saw of one LLMDeployment's world."""

    workloads: list[Manifest]
    """The workloads that exist: one, or an on-demand and a spot one."""
    pods: list[Manifest]
    largest_node_gpus: int | None = None
    """Most allocatable GPUs (of the spec's resource) on any node; None if unknown."""


@dataclass(frozen=True)
class Verdict:
    """A condition's content before it is timestamped."""

    status: ConditionStatus
    reason: Reason
    message: str = ""


def find_condition(conditions: list[Condition] | None, kind: ConditionType) -> Condition | None:
    """The condition of type ``kind``, if there is one."""
    return next((c for c in conditions or [] if c.type == kind), None)


def blocked_by_gpus(conditions: list[Condition] | None) -> bool:
    """Whether ScalingLimited says the scheduler found no GPUs for new replicas."""
    limited = find_condition(conditions, ConditionType.SCALING_LIMITED)
    return limited is not None and limited.reason is Reason.BLOCKED_BY_GPUS


def set_condition(
    old: list[Condition],
    kind: ConditionType,
    verdict: Verdict,
    now: datetime,
    generation: int | None,
) -> Condition:
    """The condition with ``lastTransitionTime`` kept unless its status flipped."""
    previous = find_condition(old, kind)
    since = previous.last_transition_time if previous and previous.status == verdict.status else now
    return Condition(
        type=kind,
        status=verdict.status,
        reason=verdict.reason,
        message=verdict.message,
        last_transition_time=since,
        observed_generation=generation,
    )


def unschedulable(pods: list[Manifest]) -> list[Manifest]:
    return [
        pod
        for pod in pods
        if condition(pod, "PodScheduled").get("reason") == "Unschedulable" and not terminating(pod)
    ]


def replica_failure(workload: Manifest | None) -> str | None:
    """The API server's words when the workload's controller cannot create pods (quota,
    admission, a missing PriorityClass or ServiceAccount): its ReplicaFailure condition."""
    if workload is None:
        return None
    for found in (workload.get("status") or {}).get("conditions") or []:
        if found.get("type") == "ReplicaFailure" and found.get("status") == "True":
            name = f"{workload.get('kind', 'Deployment')} {workload['metadata']['name']}"
            return f"{name} cannot create pods: {found.get('message', '')}"
    return None


WAITING = {
    "CrashLoopBackOff": Reason.CRASH_LOOP,
    "ErrImagePull": Reason.IMAGE_UNAVAILABLE,
    "ImagePullBackOff": Reason.IMAGE_UNAVAILABLE,
    "ErrImageNeverPull": Reason.IMAGE_UNAVAILABLE,
    "InvalidImageName": Reason.IMAGE_UNAVAILABLE,
    "CreateContainerConfigError": Reason.CONTAINER_CONFIG_ERROR,
    "CreateContainerError": Reason.CONTAINER_CONFIG_ERROR,
}
"""Why a container waits, as the kubelet says it, for the reasons that do not pass alone."""


def stuck_containers(pods: list[Manifest]) -> dict[Reason, list[tuple[str, str]]]:
    """Pods whose containers wait for a reason of WAITING: (pod, the kubelet's words) by
    our reason."""
    found: dict[Reason, list[tuple[str, str]]] = {}
    for pod in pods:
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            waiting = (status.get("state") or {}).get("waiting") or {}
            reason = WAITING.get(waiting.get("reason", ""))
            if reason is not None and not terminating(pod):
                words = f"{waiting['reason']}: {waiting.get('message', '')}".rstrip(": ")
                found.setdefault(reason, []).append((pod["metadata"]["name"], words))
    return found


def _provisioning(obj: LLMDeployment, pod: Manifest) -> bool:
    """Whether ``pod`` is a spot pod waiting for a node provisioner
    (``spec.placement.spot.nodeProvisioningSeconds``): Pending is expected there, and one
    Pending past that time falls back on demand (:func:`.reconcile._spot`)."""
    spot = obj.spec.placement.spot
    return spot is not None and bool(spot.node_provisioning_seconds) and is_spot(pod)


def degraded(obj: LLMDeployment, observed: Observed) -> Verdict:
    """Degraded when pods cannot be placed or keep crashing; the message has the numbers."""
    placement, parallelism = obj.spec.placement, obj.spec.parallelism
    resource, per_pod = placement.gpu_resource_name, parallelism.gpus_per_pod
    if observed.largest_node_gpus is not None and per_pod > observed.largest_node_gpus:
        return Verdict(
            TRUE,
            Reason.INSUFFICIENT_GPUS,
            f"each pod requests {per_pod} {resource} but the largest node offers "
            f"{observed.largest_node_gpus}: {per_pod - observed.largest_node_gpus} GPUs short per"
            " pod; lower tensorParallelSize x pipelineParallelSize or set gpusPerNode to spread"
            " the group over nodes",
        )
    refused = next(filter(None, map(replica_failure, observed.workloads)), None)
    if refused:
        return Verdict(TRUE, Reason.FAILED_CREATE, refused)
    stuck = [p for p in unschedulable(observed.pods) if not _provisioning(obj, p)]
    short_of_gpus = [
        p
        for p in stuck
        if re.search(
            rf"Insufficient {re.escape(resource)}\b",
            condition(p, "PodScheduled").get("message", ""),
        )
    ]
    if short_of_gpus:
        missing = len(short_of_gpus) * per_pod
        return Verdict(
            TRUE,
            Reason.INSUFFICIENT_GPUS,
            f"{len(short_of_gpus)} pod(s) cannot be scheduled: each needs {per_pod} {resource},"
            f" {missing} GPUs missing in the cluster",
        )
    if stuck:
        message = condition(stuck[0], "PodScheduled").get("message", "")
        return Verdict(
            TRUE, Reason.UNSCHEDULABLE, f"{len(stuck)} pod(s) cannot be scheduled: {message}"
        )
    failing = stuck_containers(observed.pods)
    if failing:
        reason, waiting = next(iter(failing.items()))  # in the pods' order
        names = ", ".join(sorted(name for name, _ in waiting))
        return Verdict(TRUE, reason, f"{len(waiting)} pod(s) waiting: {names}; {waiting[0][1]}")
    return Verdict(FALSE, Reason.AS_EXPECTED)


def ready_endpoints(found: list[Manifest]) -> list[str]:
    """``ip:port`` of the ready serving pods (engines and group leaders), sorted."""
    urls = (serving_url(pod) for pod in found)
    return sorted(url.removeprefix("http://") for url in urls if url)


def _tiers(obj: LLMDeployment, pods: list[Manifest]) -> dict[str, int | None]:
    """With spot replicas: how many ready ones run on spot and on demand."""
    if obj.spec.placement.spot is None:
        return {"spot_replicas": None, "on_demand_replicas": None}
    spot = [is_spot(pod) for pod in pods if serving_url(pod)]
    return {"spot_replicas": sum(spot), "on_demand_replicas": len(spot) - sum(spot)}


def _counts(workloads: list[Manifest]) -> tuple[int, int, int, bool]:
    """(replicas, ready, updated, caught up) of the workloads together."""
    if not workloads:
        return 0, 0, 0, False
    found = [_workload_counts(workload) for workload in workloads]
    return (
        sum(replicas for replicas, *_ in found),
        sum(ready for _, ready, *_ in found),
        sum(updated for *_, updated, _ in found),
        all(caught_up for *_, caught_up in found),
    )


def _workload_counts(workload: Manifest) -> tuple[int, int, int, bool]:
    """(replicas, ready, updated, caught up) from a Deployment's or LeaderWorkerSet's status."""
    status = workload.get("status") or {}
    if "observedGeneration" in status:
        caught_up = status["observedGeneration"] >= workload["metadata"].get("generation", 0)
    else:  # a LeaderWorkerSet reports no observedGeneration, only a Progressing condition
        caught_up = bool(status) and not any(
            c.get("type") == "Progressing" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
    return (
        int(status.get("replicas", 0)),
        int(status.get("readyReplicas", 0)),
        int(status.get("updatedReplicas", 0)),
        caught_up,
    )


def _with(
    old: LLMDeploymentStatus,
    verdicts: dict[ConditionType, Verdict],
    now: datetime,
    generation: int | None,
) -> list[Condition]:
    previous = old.conditions or []
    kept = [c for c in previous if c.type not in verdicts]
    fresh = [set_condition(previous, k, v, now, generation) for k, v in verdicts.items()]
    return sorted(kept + fresh, key=lambda c: list(ConditionType).index(c.type))


def blocked_status(
    old: LLMDeploymentStatus, generation: int | None, reason: Reason, message: str, now: datetime
) -> LLMDeploymentStatus:
    """The status of an object the operator cannot bring to its spec (invalid spec, a
    child the API server refuses); what exists is still reported."""
    verdicts = {
        ConditionType.READY: Verdict(FALSE, reason, message),
        ConditionType.RECONCILING: Verdict(FALSE, reason, message),
        ConditionType.STALLED: Verdict(TRUE, reason, message),
    }
    return old.model_copy(
        update={
            "observed_generation": generation,
            "conditions": _with(old, verdicts, now, generation),
        }
    )


def compute_status(obj: LLMDeployment, observed: Observed, now: datetime) -> LLMDeploymentStatus:
    """The status ``obj`` should have given what was observed."""
    old = obj.status or LLMDeploymentStatus()
    desired = desired_replicas(obj)
    replicas, ready, updated, caught_up = _counts(observed.workloads)
    rolling = not caught_up or updated < desired or replicas != desired
    limited = find_condition(old.conditions, ConditionType.SCALING_LIMITED)
    if desired == 0 and limited is not None and limited.reason is Reason.UNPLACEABLE:
        ready_verdict = Verdict(FALSE, Reason.UNPLACEABLE, f"no replica fits: {limited.message}")
    elif desired == 0:
        ready_verdict = Verdict(TRUE, Reason.SCALED_TO_ZERO, "no replicas: scaled to zero")
    elif ready >= desired and not rolling:
        ready_verdict = Verdict(
            TRUE, Reason.ALL_REPLICAS_READY, f"{ready} of {desired} replicas ready"
        )
    else:
        ready_verdict = Verdict(
            FALSE, Reason.REPLICAS_NOT_READY, f"{ready} of {desired} replicas ready"
        )
    progress = (
        Verdict(TRUE, Reason.ROLLING_OUT, f"{updated} of {desired} replicas updated, {ready} ready")
        if rolling
        else Verdict(FALSE, Reason.ROLLOUT_COMPLETE)
    )
    trouble = degraded(obj, observed)
    verdicts = {
        ConditionType.READY: ready_verdict,
        ConditionType.PROGRESSING: progress,
        ConditionType.RECONCILING: progress,
        ConditionType.DEGRADED: trouble,
        ConditionType.STALLED: trouble,
    }
    scaling = obj.spec.autoscaling
    autoscaled = scaling is not None and scaling.mode is AutoscalingMode.BUILTIN
    if autoscaled and trouble.reason is Reason.INSUFFICIENT_GPUS and ready < desired:
        verdicts[ConditionType.SCALING_LIMITED] = Verdict(
            TRUE, Reason.BLOCKED_BY_GPUS, f"{ready} of {desired} replicas ready: {trouble.message}"
        )
    elif autoscaled and blocked_by_gpus(old.conditions):
        verdicts[ConditionType.SCALING_LIMITED] = Verdict(
            FALSE, Reason.WITHIN_RANGE, "the new replicas found their GPUs"
        )
    generation = obj.metadata.generation
    return old.model_copy(
        update={
            "observed_generation": generation,
            "conditions": _with(old, verdicts, now, generation),
            "replicas": replicas,
            "ready_replicas": ready,
            "updated_replicas": updated,
            "desired_replicas": desired,
            "selector": labels.selector_string(obj.metadata.name),
            "service_name": obj.metadata.name,
            "endpoints": ready_endpoints(observed.pods) or None,
            **_tiers(obj, observed.pods),
        }
    )
