"""The status snapshots of tests/fixtures/status and what each should read as.

Used by the Argo CD health and kstatus tests. Each snapshot is an LLMDeployment as the real
operator left it on the local control plane (``capture.py`` beside them says how); ``VERDICTS``
is the table of what Argo CD (our Lua health check) and kstatus (Flux) should make of it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SNAPSHOTS = REPO / "tests" / "fixtures" / "status"
HEALTH_LUA = REPO / "gitops" / "argocd" / "health-llmdeployment.lua"


@dataclass(frozen=True)
class Verdict:
    argocd: str
    """Argo CD health status."""
    message: str
    """Argo CD health message."""
    kstatus: str
    """kstatus' Status: Current, InProgress, Failed."""


VERDICTS = {
    "ready": Verdict("Healthy", "AllReplicasReady: 1 of 1 replicas ready", "Current"),
    "scaling-ready": Verdict("Healthy", "AllReplicasReady: 1 of 1 replicas ready", "Current"),
    "rolling-out": Verdict(
        "Progressing", "RollingOut: 1 of 1 replicas updated, 1 ready", "InProgress"
    ),
    "scaling-up": Verdict("Progressing", "ReplicasNotReady: 1 of 3 replicas ready", "InProgress"),
    "not-observed": Verdict(
        "Progressing", "Waiting for the llmfleet operator to observe generation 3", "InProgress"
    ),
    "fresh": Verdict(
        "Progressing", "Waiting for the llmfleet operator to report a status", "InProgress"
    ),
    "unschedulable-gpu-product": Verdict(
        "Degraded",
        "Unschedulable: 1 pod(s) cannot be scheduled: 0/4 nodes are available: 4 node(s)"
        " didn't match Pod's node affinity/selector.",
        "Failed",
    ),
    "missing-pvc": Verdict(
        "Degraded",
        "Unschedulable: 1 pod(s) cannot be scheduled: 0/4 nodes are available:"
        ' persistentvolumeclaim "weights" not found.',
        "Failed",
    ),
    "insufficient-gpus": Verdict(
        "Degraded",
        "InsufficientGPUs: each pod requests 16 nvidia.com/gpu but the largest node offers 8",
        "Failed",
    ),
    "child-conflict": Verdict(
        "Degraded",
        "ChildConflict: Deployment conflict exists and is not owned by this LLMDeployment",
        "Failed",
    ),
    "scaled-to-zero": Verdict("Suspended", "Scaled to zero by spec.replicas: 0", "Current"),
    "idle-at-zero": Verdict(
        "Healthy", "Scaled to zero while idle: the first request wakes it", "Current"
    ),
}
"""Messages are prefixes: the scheduler's wording goes on after them."""


def load(case: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads((SNAPSHOTS / f"{case}.json").read_text())
    return found
