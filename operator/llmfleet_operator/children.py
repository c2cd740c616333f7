"""Pure builders of an LLMDeployment's children: workload, Service, PodDisruptionBudget.

Called by :mod:`.reconcile`. A serving group that fits on one node is a pod of a Deployment;
a larger one is a LeaderWorkerSet group (leader plus workers, recreated as a whole when
one pod restarts). The pod template carries a hash of itself, so a rollout happens
exactly when what shapes the pods changed, and ``updatedReplicas`` can be read off pods.
With ``spec.placement.spot`` a second workload of the same kind (``<name>-spot``) runs the
replicas above the on-demand floor on the spot nodes; :func:`.placement.split` says how
many each gets.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from llmfleet_contract import labels
from llmfleet_contract.api import GROUP, KIND, VERSION, AutoscalingMode, LLMDeployment
from llmfleet_contract.api.resource import RolloutStrategy
from llmfleet_contract.labels import PodRole
from llmfleet_operator.placement import Split
from llmfleet_operator.podspec import pod_template, spot_tier
from llmfleet_operator.resources import (
    CHILD_KINDS,
    DEPLOYMENT,
    LEADER_WORKER_SET,
    PDB,
    SERVICE,
    WORKLOADS,
    Resource,
)

Manifest = dict[str, Any]


def spec_hash(template: Manifest) -> str:
    """A short, stable hash of a pod template."""
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def desired_replicas(obj: LLMDeployment) -> int:
    """The replica count the workload should have now.

    Without autoscaling it is ``spec.replicas`` (default 1); an external scaler writes
    ``spec.replicas`` too, clamped here to the bounds (until it has, the last desired count
    holds); the built-in autoscaler writes ``status.desiredReplicas`` (never the spec, so
    GitOps never fights it).
    """
    scaling = obj.spec.autoscaling
    if scaling is None:
        return 1 if obj.spec.replicas is None else obj.spec.replicas
    status = obj.status
    # What the operator drove last: where a switch to External starts before the external
    # scaler has written spec.replicas (no sudden drop to minReplicas).
    last = status.desired_replicas if status and status.observed_generation else None
    if scaling.mode == AutoscalingMode.EXTERNAL and obj.spec.replicas is not None:
        wanted = obj.spec.replicas
    else:
        wanted = scaling.min_replicas if last is None else last
    decided = status is not None and status.observed_generation == obj.metadata.generation
    if scaling.mode == AutoscalingMode.BUILTIN and last is not None and decided:
        # The autoscaler's, for this spec, within the bounds it kept: a schedule's ceiling,
        # or what fits the nodes, may be below minReplicas. After a change of the spec its
        # bounds hold until the next period.
        return min(scaling.max_replicas, last)
    return max(scaling.min_replicas, min(scaling.max_replicas, wanted))


def workload_kind(obj: LLMDeployment) -> Resource:
    """A Deployment when a serving group fits on one node, else a LeaderWorkerSet."""
    return DEPLOYMENT if obj.spec.parallelism.nodes_per_group == 1 else LEADER_WORKER_SET


def child_name(kind: Resource, name: str, spot: bool = False) -> str:
    """The name of ``name``'s child of ``kind`` (its spot workload's with ``spot``).

    A LeaderWorkerSet creates a headless Service named after itself (group DNS), so it
    is ``<name>-group``, leaving ``<name>`` to the Service that routes to the leaders.
    """
    base = f"{name}-{labels.SPOT}" if spot else name
    return f"{base}-group" if kind == LEADER_WORKER_SET else base


def child_keys(name: str) -> list[tuple[Resource, str]]:
    """Every child an LLMDeployment named ``name`` may have, by kind and name."""
    keys = [(kind, child_name(kind, name)) for kind in CHILD_KINDS]
    return keys + [(kind, child_name(kind, name, spot=True)) for kind in WORKLOADS]


def _metadata(obj: LLMDeployment, uid: str, kind: Resource, spot: bool = False) -> Manifest:
    return {
        "name": child_name(kind, obj.metadata.name, spot),
        "namespace": obj.metadata.namespace,
        "labels": labels.common_labels(obj.metadata.name),
        "ownerReferences": [
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": KIND,
                "name": obj.metadata.name,
                "uid": uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }


def _labelled(template: Manifest, spot: bool) -> Manifest:
    if spot:
        template["metadata"]["labels"][labels.CAPACITY] = labels.SPOT
    return template


def _stamp(template: Manifest) -> Manifest:
    template["metadata"]["labels"][labels.SPEC_HASH] = spec_hash(template)
    return template


def workload(
    obj: LLMDeployment, uid: str, replicas: int, spot: bool = False
) -> tuple[Resource, Manifest]:
    """The Deployment or LeaderWorkerSet that runs ``replicas`` serving groups (on the spot
    nodes with ``spot``; its pods are labelled so)."""
    tier = spot_tier(obj) if spot else obj
    selector = labels.selector_labels(obj.metadata.name)
    if spot:
        selector[labels.CAPACITY] = labels.SPOT
    rollout = obj.spec.serving.rollout
    if workload_kind(obj) == DEPLOYMENT:
        strategy: Manifest = {"type": rollout.strategy.value}
        if rollout.strategy == RolloutStrategy.ROLLING_UPDATE:
            strategy["rollingUpdate"] = {
                "maxSurge": rollout.max_surge,
                "maxUnavailable": rollout.max_unavailable,
            }
        return DEPLOYMENT, {
            "apiVersion": DEPLOYMENT.api_version,
            "kind": DEPLOYMENT.kind,
            "metadata": _metadata(obj, uid, DEPLOYMENT, spot),
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": selector},
                "strategy": strategy,
                "template": _stamp(_labelled(pod_template(tier, role=PodRole.ENGINE), spot)),
            },
        }
    leader = _stamp(_labelled(pod_template(tier, role=PodRole.LEADER), spot))
    worker = _labelled(pod_template(tier, role=PodRole.WORKER, serves_http=False), spot)
    worker["metadata"]["labels"][labels.SPEC_HASH] = leader["metadata"]["labels"][labels.SPEC_HASH]
    return LEADER_WORKER_SET, {
        "apiVersion": LEADER_WORKER_SET.api_version,
        "kind": LEADER_WORKER_SET.kind,
        "metadata": _metadata(obj, uid, LEADER_WORKER_SET, spot),
        "spec": {
            "replicas": replicas,
            "startupPolicy": "LeaderCreated",
            "leaderWorkerTemplate": {
                "size": obj.spec.parallelism.nodes_per_group,
                "restartPolicy": "RecreateGroupOnPodRestart",
                "leaderTemplate": leader,
                "workerTemplate": worker,
            },
            "rolloutStrategy": {
                "type": "RollingUpdate",
                "rollingUpdateConfiguration": {
                    "maxSurge": rollout.max_surge,
                    "maxUnavailable": rollout.max_unavailable,
                },
            },
        },
    }


def service(obj: LLMDeployment, uid: str) -> Manifest:
    """Routes to ready serving pods: every engine pod, or only the leaders of groups."""
    selector = labels.selector_labels(obj.metadata.name)
    if obj.spec.parallelism.nodes_per_group > 1:
        selector[labels.LWS_WORKER_INDEX] = "0"
    return {
        "apiVersion": SERVICE.api_version,
        "kind": SERVICE.kind,
        "metadata": _metadata(obj, uid, SERVICE),
        "spec": {
            "selector": selector,
            "ports": [
                {
                    "name": labels.ENGINE_PORT_NAME,
                    "port": labels.ENGINE_PORT,
                    "targetPort": labels.ENGINE_PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }


def disruption_budget(obj: LLMDeployment, uid: str) -> Manifest:
    """Voluntary disruptions (node drains) take one serving pod at a time."""
    return {
        "apiVersion": PDB.api_version,
        "kind": PDB.kind,
        "metadata": _metadata(obj, uid, PDB),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": labels.selector_labels(obj.metadata.name)},
        },
    }


def children(
    obj: LLMDeployment, uid: str, split: Split | None = None
) -> list[tuple[Resource, Manifest]]:
    """Every child ``obj`` should have, in the order they are applied: with
    ``spec.placement.spot``, the replicas as ``split`` shares them (all on demand
    without one)."""
    replicas = desired_replicas(obj)
    if obj.spec.placement.spot is None:
        workloads = [workload(obj, uid, replicas)]
    else:
        split = split or Split(replicas, 0)
        workloads = [workload(obj, uid, split.on_demand), workload(obj, uid, split.spot, True)]
    return [*workloads, (SERVICE, service(obj, uid)), (PDB, disruption_budget(obj, uid))]
