"""Which pods serve a model, since when, and where: one predicate for every reader.

The operator's status (ready endpoints), its autoscaler (replicas and their metrics) and the
gateway (where to send requests) all read serving pods from the Pods themselves (labels,
the Ready condition, the deletion timestamp, the pod IP), never from Endpoints: a
LeaderWorkerSet group serves from its leader only, and a terminating pod serves no new work.
Pods are plain manifests (``dict`` as the API server returns them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmfleet_contract.labels import ENGINE_PORT, ROLE, SERVING_ROLES, PodRole

Pod = Mapping[str, Any]


def role(pod: Pod) -> PodRole | None:
    """The pod's role in its serving group; None for a pod without a known one."""
    value = ((pod.get("metadata") or {}).get("labels") or {}).get(ROLE)
    return PodRole(value) if value in set(PodRole) else None


def terminating(pod: Pod) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def is_serving(pod: Pod) -> bool:
    """One replica's serving pod (an engine or a group's leader) that is not terminating,
    ready or not."""
    return role(pod) in SERVING_ROLES and not terminating(pod)


def condition(pod: Pod, kind: str) -> Mapping[str, Any]:
    """The pod's condition of type ``kind`` (e.g. ``Ready``, ``PodScheduled``), or ``{}``."""
    for found in (pod.get("status") or {}).get("conditions") or []:
        if found.get("type") == kind:
            return dict(found)
    return {}


def ready_since(pod: Pod) -> str | None:
    """When the pod turned Ready (RFC 3339), or None while it is not ready."""
    ready = condition(pod, "Ready")
    if ready.get("status") != "True":
        return None
    since = ready.get("lastTransitionTime") or (pod.get("metadata") or {}).get("creationTimestamp")
    return str(since)


def ready_url(pod: Pod, port: int) -> str | None:
    """``http://IP:PORT`` of a pod that is ready, not terminating and has an address."""
    ip = (pod.get("status") or {}).get("podIP")
    if not ip or terminating(pod) or ready_since(pod) is None:
        return None
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{port}"


def serving_url(pod: Pod) -> str | None:
    """The engine's URL of a serving pod that is ready and has an address, else None."""
    return ready_url(pod, ENGINE_PORT) if is_serving(pod) else None
