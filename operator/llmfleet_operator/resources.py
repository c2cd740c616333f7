"""The kinds of object the operator reads and writes, and where each lives in the API.

Pure data, shared by the builders (:mod:`.children`), the reconcile and the Kube seam
(:mod:`.kube`); :mod:`.kube_client` turns a :class:`Resource` into the client's calls.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmfleet_contract.api import API_VERSION, KIND, PLURAL


@dataclass(frozen=True)
class Resource:
    """A kind of object: its API version, kind and plural name."""

    api_version: str
    kind: str
    plural: str


LLMDEPLOYMENT = Resource(API_VERSION, KIND, PLURAL)
DEPLOYMENT = Resource("apps/v1", "Deployment", "deployments")
LEADER_WORKER_SET = Resource("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet", "leaderworkersets")
SERVICE = Resource("v1", "Service", "services")
PDB = Resource("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets")
POD = Resource("v1", "Pod", "pods")
NODE = Resource("v1", "Node", "nodes")
LEASE = Resource("coordination.k8s.io/v1", "Lease", "leases")
EVENT = Resource("v1", "Event", "events")

CHILD_KINDS = (DEPLOYMENT, LEADER_WORKER_SET, SERVICE, PDB)
"""What an LLMDeployment owns (its children), in the order they are applied."""
WORKLOADS = (DEPLOYMENT, LEADER_WORKER_SET)
"""The children that run the pods: one or the other, by the size of a serving group."""
