"""The reconcile with the autoscaler in it, on an in-memory Kube (the ``Kube`` seam).

Cases: a due period scales the Deployment down, sets the pods' deletion costs (the idle
pod cheapest) before the apply, posts one Scaled Event with the reason, writes the
status and asks to come back after the period; an event before the next period runs no
period and asks for the rest of it; metrics lost post one Warning Event, not one per
period; a world that did not change costs no write at all (children as last applied,
signals within their steps); pods the API server refuses to create make Degraded
FailedCreate with one Warning Event in its words. The API server's own behaviour (apply,
the ReplicaSet honouring the costs) is e2e's (e2e/test_autoscaling.py).
"""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

from llmfleet_contract.api import EventReason, EventType, Reason
from llmfleet_operator.autoscaler import Autoscaler
from llmfleet_operator.children import child_name, children
from llmfleet_operator.metrics import Miss, MissReason
from llmfleet_operator.reconcile import CONFLICT_RECHECK_SECONDS, merge_patch, reconcile
from llmfleet_operator.resources import DEPLOYMENT, LLMDEPLOYMENT, NODE, POD, Resource
from tests.test_autoscaler import T0, FakeSource, deployment, pod
from tests.test_cache import merge_patched

Manifest = dict[str, Any]


class MemoryKube:
    """Objects in a dict; records annotations, Events and status writes."""

    def __init__(self, body: Manifest, pods: list[Manifest]) -> None:
        self.objects: dict[tuple[str, str], Manifest] = {
            ("LLMDeployment", body["metadata"]["name"]): body
        }
        self.pods = pods
        self.annotated: list[tuple[str, dict[str, str]]] = []
        self.events: list[tuple[str, str, str]] = []
        self.order: list[str] = []

    def get(self, kind: Resource, namespace: str, name: str) -> Manifest | None:
        found = self.objects.get((kind.kind, name))
        return copy.deepcopy(found) if found else None

    get_live = get

    def list(self, kind: Resource, namespace: str | None, selector: str) -> list[Manifest]:
        if kind == NODE:
            return [{"status": {"allocatable": {"nvidia.com/gpu": "8"}}}]
        return copy.deepcopy(self.pods) if kind == POD else []

    def apply(self, kind: Resource, manifest: Manifest) -> Manifest:
        self.order.append(f"apply {kind.kind}")
        stored = copy.deepcopy(manifest)
        key = (kind.kind, manifest["metadata"]["name"])
        if "status" in self.objects.get(key, {}):  # an apply leaves the status alone
            stored["status"] = self.objects[key]["status"]
        self.objects[key] = stored
        return copy.deepcopy(stored)

    def delete(self, kind: Resource, namespace: str, name: str) -> None:
        self.objects.pop((kind.kind, name), None)

    def patch_status(self, namespace: str, name: str, status: Manifest) -> Manifest:
        self.order.append("status")
        stored = self.objects[("LLMDeployment", name)]
        stored["status"] = merge_patched(stored.get("status") or {}, status)
        return copy.deepcopy(self.objects[("LLMDeployment", name)])

    def patch(self, kind: Resource, namespace: str, name: str, body: Manifest) -> Manifest:
        self.order.append(f"annotate {name}")
        self.annotated.append((name, body["metadata"]["annotations"]))
        return body

    def event(
        self, obj: Manifest, kind: EventType, reason: Reason | EventReason, message: str
    ) -> None:
        self.events.append((kind, reason, message))

    def served(self, kind: Resource) -> bool:
        return kind != NODE


def world() -> tuple[MemoryKube, FakeSource, Autoscaler, str]:
    obj = deployment()
    body = obj.model_dump(mode="json", by_alias=True, exclude_none=True)
    body["apiVersion"], body["kind"] = LLMDEPLOYMENT.api_version, LLMDEPLOYMENT.kind
    body["metadata"]["uid"] = "uid-1"
    body["status"] = {"observedGeneration": 1, "desiredReplicas": 3}
    pods = [pod(f"p{i}", ip=f"10.0.0.{i}") for i in range(3)]
    for item in pods:
        item["metadata"]["labels"]["llmfleet.io/deployment"] = obj.metadata.name
    kube = MemoryKube(body, pods)
    name = obj.metadata.name
    [workload] = [child for kind, child in children(obj, "uid-1") if kind == DEPLOYMENT]
    workload["spec"]["replicas"] = 3  # what the last period asked for
    kube.objects[("Deployment", child_name(DEPLOYMENT, name))] = workload
    source = FakeSource(load={"p0": (0, 3), "p1": (0, 0), "p2": (0, 2)})
    return kube, source, Autoscaler(source), name


def test_a_due_period_scales_down_with_costs_first_then_waits_for_the_next() -> None:
    kube, source, scaler, name = world()
    assert reconcile(kube, "serving", name, T0, scaler) == 15
    applied = kube.objects[("Deployment", name)]
    assert applied["spec"]["replicas"] == 2
    assert dict(kube.annotated) == {
        "p1": {"controller.kubernetes.io/pod-deletion-cost": "0"},
        "p2": {"controller.kubernetes.io/pod-deletion-cost": "1"},
        "p0": {"controller.kubernetes.io/pod-deletion-cost": "2"},
    }
    assert kube.order.index("annotate p1") < kube.order.index("apply Deployment")
    [scaled] = [e for e in kube.events if e[1] == "Scaled"]
    assert scaled[2].startswith(f"Scaled Deployment {name} from 3 to 2: StepLimited: ")
    assert "slots used" in scaled[2]
    status = kube.objects[("LLMDeployment", name)]["status"]
    assert status["desiredReplicas"] == 2
    assert status["decisions"][-1]["toReplicas"] == 2

    asked = len(source.asked)
    assert reconcile(kube, "serving", name, T0 + timedelta(seconds=5), scaler) == 10
    assert len(source.asked) == asked  # no period before it is due


def test_lost_metrics_warn_once() -> None:
    kube, source, scaler, name = world()
    down = Miss("p0", MissReason.SOURCE_UNREACHABLE, "Prometheus at http://p:9090 did not answer")
    source.misses = {"p0": down, "p1": down, "p2": down}
    for step in range(3):
        reconcile(kube, "serving", name, T0 + timedelta(seconds=15 * step), scaler)
    warnings = [e for e in kube.events if e[0] == "Warning"]
    assert [reason for _, reason, _ in warnings] == ["MetricsSourceUnreachable"]
    assert kube.objects[("Deployment", name)]["spec"]["replicas"] == 3  # held


def test_an_object_it_does_not_own_in_a_childs_place_is_never_taken_over() -> None:
    kube, _, _, name = world()
    foreign = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": {}}
    kube.objects[("Service", name)] = foreign
    assert reconcile(kube, "serving", name, T0) == CONFLICT_RECHECK_SECONDS
    assert kube.objects[("Service", name)] == foreign
    assert "apply Service" not in kube.order
    status = kube.objects[("LLMDeployment", name)]["status"]
    [ready] = [c for c in status["conditions"] if c["type"] == "Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "ChildConflict")
    assert f"Service {name} exists and is not owned by this LLMDeployment" in ready["message"]
    assert [e[:2] for e in kube.events] == [("Warning", "ChildConflict")]

    del kube.objects[("Service", name)]
    assert reconcile(kube, "serving", name, T0) is None
    assert kube.objects[("Service", name)]["metadata"]["ownerReferences"][0]["uid"] == "uid-1"


def test_an_unchanged_world_costs_no_write() -> None:
    kube, source, scaler, name = world()
    source.load = {f"p{i}": (0, 3) for i in range(3)}
    writes = []
    for step in range(6):  # the same load each period: signals within their steps
        kube.order.clear()
        reconcile(kube, "serving", name, T0 + timedelta(seconds=15 * step), scaler)
        writes.append(list(kube.order))
    assert "apply Deployment" in writes[0]
    assert writes[-3:] == [[], [], []], writes


def test_pods_the_api_server_refuses_to_create_warn_once() -> None:
    kube, _, _, name = world()
    words = 'pods "x" is forbidden: no PriorityClass with name llm-serving was found'
    kube.objects[("Deployment", name)]["status"] = {
        "conditions": [
            {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": words}
        ]
    }
    for _ in range(2):
        reconcile(kube, "serving", name, T0)
    status = kube.objects[("LLMDeployment", name)]["status"]
    [degraded] = [c for c in status["conditions"] if c["type"] == "Degraded"]
    assert (degraded["status"], degraded["reason"]) == ("True", "FailedCreate")
    assert words in degraded["message"]
    assert [e[:2] for e in kube.events if e[0] == "Warning"] == [("Warning", "FailedCreate")]


def test_a_status_field_left_out_is_removed_by_the_patch() -> None:
    """A JSON merge patch keeps what it does not name: a field the new status drops (the
    schedule once its window closed, the endpoints of a model at zero) is sent as null."""
    old = {"schedule": "peak", "signals": {"prefillQueue": 1.0, "slotsUsed": 0.5}, "replicas": 3}
    new = {"signals": {"slotsUsed": 0.5}, "replicas": 1}
    assert merge_patch(old, new) == {
        "signals": {"slotsUsed": 0.5, "prefillQueue": None},
        "replicas": 1,
        "schedule": None,
    }
    assert merge_patched(old, merge_patch(old, new)) == new
