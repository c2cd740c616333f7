"""Pure builders of an LLMDeployment's children: workload, Service, PodDisruptionBudget.

Called by :mod:`.reconcile`. A serving group that fits on one node is a pod of a Deployment;
a larger one is a LeaderWorkerSet group (leader plus workers, recreated as a whole when
one pod restarts). The pod template carries a hash of itself, so a rollout happens
exactly when what shapes the pods changed, and ``updatedReplicas`` can be read off pods.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from llmfleet_contract import labels
from llmfleet_contract.api import GROUP, KIND, VERSION, AutoscalingMode, LLMDeployment
from llmfleet_contract.api.resource import RolloutStrategy
from llmfleet_contract.labels import PodRole
from llmfleet_operator.podspec import pod_template
from llmfleet_operator.resources import DEPLOYMENT, LEADER_WORKER_SET, PDB, SERVICE, Resource

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


def child_name(kind: Resource, name: str) -> str:
    """The name of ``name``'s child of ``kind``.

    A LeaderWorkerSet creates a headless Service named after itself (group DNS), so it
    is ``<name>-group``, leaving ``<name>`` to the Service that routes to the leaders.
    """
    return f"{name}-group" if kind == LEADER_WORKER_SET else name


def _metadata(obj: LLMDeployment, uid: str, kind: Resource) -> Manifest:
    return {
        "name": child_name(kind, obj.metadata.name),
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


def _stamp(template: Manifest) -> Manifest:
    template["metadata"]["labels"][labels.SPEC_HASH] = spec_hash(template)
    return template


def workload(obj: LLMDeployment, uid: str, replicas: int) -> tuple[Resource, Manifest]:
    """The Deployment or LeaderWorkerSet that runs ``replicas`` serving groups."""
    rollout = obj.spec.serving.rollout
    if obj.spec.parallelism.nodes_per_group == 1:
        strategy: Manifest = {"type": rollout.strategy.value}
        if rollout.strategy == RolloutStrategy.ROLLING_UPDATE:
            strategy["rollingUpdate"] = {
                "maxSurge": rollout.max_surge,
                "maxUnavailable": rollout.max_unavailable,
            }
        return DEPLOYMENT, {
            "apiVersion": DEPLOYMENT.api_version,
            "kind": DEPLOYMENT.kind,
            "metadata": _metadata(obj, uid, DEPLOYMENT),
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels.selector_labels(obj.metadata.name)},
                "strategy": strategy,
                "template": _stamp(pod_template(obj, role=PodRole.ENGINE)),
            },
        }
    leader = _stamp(pod_template(obj, role=PodRole.LEADER))
    worker = pod_template(obj, role=PodRole.WORKER, serves_http=False)
    worker["metadata"]["labels"][labels.SPEC_HASH] = leader["metadata"]["labels"][labels.SPEC_HASH]
    return LEADER_WORKER_SET, {
        "apiVersion": LEADER_WORKER_SET.api_version,
        "kind": LEADER_WORKER_SET.kind,
        "metadata": _metadata(obj, uid, LEADER_WORKER_SET),
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


def children(obj: LLMDeployment, uid: str) -> list[tuple[Resource, Manifest]]:
    """Every child ``obj`` should have, in the order they are applied."""
    return [
        workload(obj, uid, desired_replicas(obj)),
        (SERVICE, service(obj, uid)),
        (PDB, disruption_budget(obj, uid)),
    ]
