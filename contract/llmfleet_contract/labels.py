"""Label and annotation keys, defined once, the pod roles, and the engine's port.

The operator writes them on children and pods; the gateway and the autoscaler select and
read pods by them (:mod:`llmfleet_contract.pods`).
"""

from __future__ import annotations

from enum import StrEnum

OWNER = "llmfleet.io/deployment"
"""On every child and pod: the owning LLMDeployment's name (the selector)."""
SPEC_HASH = "llmfleet.io/spec-hash"
"""On pod templates: hash of what shapes the pods; a new value means a rollout."""
APPLIED_HASH = "llmfleet.io/applied-hash"
"""On children: hash of the manifest the operator last applied; unchanged and untouched,
a child is not applied again."""
ROLE = "llmfleet.io/role"
"""On pods: their :class:`PodRole`."""
CAPACITY = "llmfleet.io/capacity"
"""On the pods of a ``spec.placement.spot`` deployment's spot workload: ``spot``."""
SPOT = "spot"
API_KEYS = "llmfleet.io/api-keys"
"""On Secrets of tenants' key hashes, set to ``"true"``: the only Secrets the gateway reads."""


class PodRole(StrEnum):
    """What a pod is in its serving group (the value of :data:`ROLE`)."""

    ENGINE = "engine"
    """The one pod of a group that fits on one node: it serves."""
    LEADER = "leader"
    """Rank 0 of a LeaderWorkerSet group: it serves for the whole group."""
    WORKER = "worker"
    """Another rank of a LeaderWorkerSet group: it runs shards and serves nothing."""


SERVING_ROLES = frozenset({PodRole.ENGINE, PodRole.LEADER})
"""The roles whose pod answers the OpenAI API and ``/metrics``: one per replica."""

NAME = "app.kubernetes.io/name"
INSTANCE = "app.kubernetes.io/instance"
COMPONENT = "app.kubernetes.io/component"
MANAGED_BY = "app.kubernetes.io/managed-by"

LWS_WORKER_INDEX = "leaderworkerset.sigs.k8s.io/worker-index"
"""Set by the LeaderWorkerSet controller; ``"0"`` is the group's leader."""

POD_DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
PROMETHEUS_SCRAPE = "prometheus.io/scrape"
PROMETHEUS_PORT = "prometheus.io/port"
PROMETHEUS_PATH = "prometheus.io/path"

FIELD_MANAGER = "llmfleet-operator"
ENGINE_PORT = 8000
ENGINE_PORT_NAME = "http"


def selector_labels(name: str) -> dict[str, str]:
    """Labels that select every pod of the LLMDeployment ``name``."""
    return {OWNER: name}


def common_labels(name: str) -> dict[str, str]:
    return {
        NAME: "llmfleet-engine",
        INSTANCE: name,
        COMPONENT: "engine",
        MANAGED_BY: FIELD_MANAGER,
        OWNER: name,
    }


def selector_string(name: str) -> str:
    """The selector in the string form of ``status.selector`` (scale subresource)."""
    return ",".join(f"{key}={value}" for key, value in selector_labels(name).items())
