"""DynamicKube reuses a node list for NODE_CACHE_SECONDS (a fake dynamic client counts
the API calls; the real client is exercised by every e2e test).

Cases: a second list within the window makes no call; after it, one; other kinds are
never cached; callers get copies, so one caller's edit cannot leak into the next.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kubernetes.client import ApiClient

from llmfleet_operator.kube_client import NODE_CACHE_SECONDS, DynamicKube
from llmfleet_operator.resources import NODE, POD


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
        return type("Result", (), {"items": [Item({"metadata": {"name": f"{self.kind}-0"}})]})


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
    kube = DynamicKube(dynamic, clock=lambda: now[0])  # type: ignore[arg-type]
    first = kube.list(NODE, None, "")
    first.clear()  # a caller's edit
    now[0] = NODE_CACHE_SECONDS - 1
    assert [n["metadata"]["name"] for n in kube.list(NODE, None, "")] == ["Node-0"]
    assert dynamic.resources.calls == ["Node"]
    now[0] = NODE_CACHE_SECONDS + 1
    kube.list(NODE, None, "")
    assert dynamic.resources.calls == ["Node", "Node"]
    kube.list(POD, "ns", "a=b")
    kube.list(POD, "ns", "a=b")
    assert dynamic.resources.calls == ["Node", "Node", "Pod", "Pod"]
