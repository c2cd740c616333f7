"""DynamicKube reuses a node list for NODE_CACHE_SECONDS, and discovery's no for
ABSENT_CACHE_SECONDS (a fake dynamic client counts the API calls; the real client is
exercised by every e2e test).

Cases: a node is kept as its name, labels, taints and capacity; a second list within the
window makes no call (nor counts as one in the operator's metrics); after it, one; other kinds are
never cached; callers get deep copies, whether the list was fetched or came from the
cache, so one caller's edit (of the list, a node, or a node's nested status) cannot
leak into the next. A kind not served is looked up again only after its window (each
lookup rereads all of discovery); a served kind is looked up each time (cheap, cached by
the client); a kind installed meanwhile is seen after the window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kubernetes.client import ApiClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from llmfleet_operator.handlers import Metrics
from llmfleet_operator.kube_client import ABSENT_CACHE_SECONDS, NODE_CACHE_SECONDS, DynamicKube
from llmfleet_operator.resources import DEPLOYMENT, LEADER_WORKER_SET, NODE, POD


def node(name: str) -> dict[str, Any]:
    """A fresh body, nested as the API server's is."""
    return {
        "metadata": {
            "name": name,
            "labels": {"nvidia.com/gpu.product": "H100"},
            "managedFields": [{"manager": "kubelet"}],
        },
        "spec": {"podCIDR": "10.244.0.0/24", "taints": [{"key": "k", "effect": "NoSchedule"}]},
        "status": {
            "allocatable": {"cpu": "96", "nvidia.com/gpu": "8"},
            "images": [{"names": ["vllm"], "sizeBytes": 1}],
        },
    }


def kept(name: str) -> dict[str, Any]:
    """What the cache keeps of ``node(name)``: name, labels, taints, capacity."""
    return {
        "metadata": {"name": name, "labels": {"nvidia.com/gpu.product": "H100"}},
        "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]},
        "status": {"allocatable": {"cpu": "96", "nvidia.com/gpu": "8"}},
    }


@dataclass
class Item:
    body: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.body)


@dataclass
class Resource:
    kind: str
    calls: list[str]

    def get(self, namespace: str | None, label_selector: str) -> Any:
        self.calls.append(self.kind)
        return type("Result", (), {"items": [Item(node(f"{self.kind}-0"))]})


@dataclass
class Resources:
    calls: list[str] = field(default_factory=list)

    def get(self, api_version: str, kind: str) -> Resource:
        return Resource(kind, self.calls)


@dataclass
class Dynamic:
    client: ApiClient = field(default_factory=ApiClient)
    resources: Resources = field(default_factory=Resources)


def test_node_lists_are_reused_for_a_while_and_nothing_else_is() -> None:
    now = [0.0]
    dynamic = Dynamic()
    metrics = Metrics()
    kube = DynamicKube(dynamic, clock=lambda: now[0], requests=metrics.api_requests)  # type: ignore[arg-type]
    kube.list(NODE, None, "")
    now[0] = NODE_CACHE_SECONDS - 1
    assert [n["metadata"]["name"] for n in kube.list(NODE, None, "")] == ["Node-0"]
    assert dynamic.resources.calls == ["Node"]
    now[0] = NODE_CACHE_SECONDS + 1
    kube.list(NODE, None, "")
    assert dynamic.resources.calls == ["Node", "Node"]
    kube.list(POD, "ns", "a=b")
    kube.list(POD, "ns", "a=b")
    assert dynamic.resources.calls == ["Node", "Node", "Pod", "Pod"]
    counted = metrics.registry.get_sample_value
    assert (
        counted("llmfleet_operator_api_requests_total", {"verb": "LIST", "resource": "nodes"}) == 2
    )
    assert (
        counted("llmfleet_operator_api_requests_total", {"verb": "LIST", "resource": "pods"}) == 2
    )


def edit(nodes: list[dict[str, Any]]) -> None:
    """What a careless caller might do to the list it was given."""
    nodes[0]["status"]["allocatable"]["nvidia.com/gpu"] = "0"
    nodes[0]["metadata"]["labels"].clear()
    nodes[0]["metadata"]["name"] = "edited"
    nodes.append(node("extra"))


def test_callers_get_deep_copies_fetched_or_cached() -> None:
    dynamic = Dynamic()
    kube = DynamicKube(dynamic, clock=lambda: 0.0)  # type: ignore[arg-type]
    fetched = kube.list(NODE, None, "")
    edit(fetched)
    cached = kube.list(NODE, None, "")
    assert cached == [kept("Node-0")]
    edit(cached)
    assert kube.list(NODE, None, "") == [kept("Node-0")]
    assert dynamic.resources.calls == ["Node"]  # the later lists came from the cache


@dataclass
class Discovery(Resources):
    """Serves every kind but those in ``absent``, counting the lookups."""

    absent: set[str] = field(default_factory=set)

    def get(self, api_version: str, kind: str) -> Resource:
        self.calls.append(kind)
        if kind in self.absent:
            raise ResourceNotFoundError(f"No matches found for {kind}")
        return Resource(kind, [])


def test_a_kind_not_served_is_asked_about_again_only_after_a_while() -> None:
    now = [0.0]
    dynamic = Dynamic(resources=Discovery(absent={"LeaderWorkerSet"}))
    kube = DynamicKube(dynamic, clock=lambda: now[0])  # type: ignore[arg-type]
    assert not kube.served(LEADER_WORKER_SET)
    now[0] = ABSENT_CACHE_SECONDS - 1
    assert not kube.served(LEADER_WORKER_SET)
    assert dynamic.resources.calls == ["LeaderWorkerSet"]  # each miss rereads discovery
    assert kube.served(DEPLOYMENT)
    assert kube.served(DEPLOYMENT)
    assert dynamic.resources.calls == ["LeaderWorkerSet", "Deployment", "Deployment"]
    dynamic.resources.absent.clear()  # LeaderWorkerSet installed meanwhile
    now[0] = ABSENT_CACHE_SECONDS + 1
    assert kube.served(LEADER_WORKER_SET)
