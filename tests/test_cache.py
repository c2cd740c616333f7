"""A reconcile's reads from the watches (:mod:`llmfleet_operator.cache`), on an in-memory API.

Cases: a reconcile of a world that has not changed makes no API call at all, reads
included; a child absent from the watch is read from the API server (a foreign object in
its place is still refused); a write stands in for the watch until the watch moves past the
version it replaced, so the reconcile that follows a write before its watch event neither
writes again nor posts the same Event twice; a write the watch never catches up with is
dropped after WRITTEN_SECONDS, and writes of objects never read again are swept; a deletion
forgets the write; the cache keeps no managed fields, and each read is a copy; a resync
reconciles only an object whose watched objects changed since its last reconcile, or one
not reconciled for FULL_RESYNC_SECONDS. kopf's own part (indices complete before any
handler runs) is e2e's.
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

from llmfleet_contract import labels
from llmfleet_contract.api import EventReason, EventType, Reason
from llmfleet_operator.cache import (
    WRITTEN_SECONDS,
    CachedKube,
    Index,
    Packed,
    Written,
    packed,
    snapshot,
)
from llmfleet_operator.children import child_name
from llmfleet_operator.handlers import FULL_RESYNC_SECONDS, Metrics, Runtime
from llmfleet_operator.reconcile import reconcile
from llmfleet_operator.resources import (
    CHILD_KINDS,
    DEPLOYMENT,
    LLMDEPLOYMENT,
    NODE,
    POD,
    SERVICE,
    Resource,
)
from tests.test_autoscaler import T0, deployment

Manifest = dict[str, Any]
NAMESPACE = "serving"


class Api:
    """An API server in a dict: each write gives the object a new resourceVersion; every
    call is counted by method."""

    def __init__(self) -> None:
        self.objects: dict[tuple[Resource, str], Manifest] = {}
        self.calls: Counter[str] = Counter()
        self.events: list[str] = []
        self.version = 0

    def store(self, kind: Resource, body: Manifest) -> Manifest:
        self.version += 1
        body = copy.deepcopy(body)
        body["metadata"].update(namespace=NAMESPACE, resourceVersion=str(self.version))
        self.objects[(kind, body["metadata"]["name"])] = body
        return copy.deepcopy(body)

    def get(self, kind: Resource, namespace: str, name: str) -> Manifest | None:
        self.calls["get"] += 1
        found = self.objects.get((kind, name))
        return copy.deepcopy(found) if found else None

    get_live = get

    def list(self, kind: Resource, namespace: str | None, selector: str) -> list[Manifest]:
        self.calls[f"list {kind.kind}"] += 1
        return [{"status": {"allocatable": {"nvidia.com/gpu": "8"}}}] if kind == NODE else []

    def apply(self, kind: Resource, manifest: Manifest) -> Manifest:
        self.calls["apply"] += 1
        old = self.objects.get((kind, manifest["metadata"]["name"]), {})
        return self.store(
            kind, {**manifest, **({"status": old["status"]} if "status" in old else {})}
        )

    def delete(self, kind: Resource, namespace: str, name: str) -> None:
        self.calls["delete"] += 1
        self.objects.pop((kind, name), None)

    def patch_status(self, namespace: str, name: str, status: Manifest) -> Manifest:
        self.calls["patch_status"] += 1
        stored = self.objects[(LLMDEPLOYMENT, name)]
        merged = merge_patched(stored.get("status") or {}, status)
        return self.store(LLMDEPLOYMENT, {**stored, "status": merged})

    def patch(self, kind: Resource, namespace: str, name: str, body: Manifest) -> Manifest:
        raise AssertionError("no pods here")

    def event(
        self, obj: Manifest, kind: EventType, reason: Reason | EventReason, message: str
    ) -> None:
        self.calls["event"] += 1
        self.events.append(f"{reason}: {message}")

    def served(self, kind: Resource) -> bool:
        return kind in (DEPLOYMENT, SERVICE, *CHILD_KINDS[2:])


def watch(api: Api) -> dict[Resource, Index]:
    """What the watches would hold once they have caught up with ``api``."""
    indices: dict[Resource, dict[Any, list[Packed]]] = {
        kind: {} for kind in (LLMDEPLOYMENT, *CHILD_KINDS, POD)
    }
    for (kind, name), body in api.objects.items():
        indices[kind][(NAMESPACE, name)] = [packed(body)]
    return dict(indices)


def world() -> tuple[Api, str]:
    api = Api()
    body = deployment().model_dump(mode="json", by_alias=True, exclude_none=True)
    body["spec"].pop("autoscaling")
    body["spec"]["replicas"] = 0
    body["apiVersion"], body["kind"] = LLMDEPLOYMENT.api_version, LLMDEPLOYMENT.kind
    body["metadata"]["uid"] = "uid-1"
    api.store(LLMDEPLOYMENT, body)
    return api, body["metadata"]["name"]


def run(api: Api, indices: dict[Resource, Index], written: Written, name: str) -> None:
    kube = CachedKube(api, snapshot(indices, written, NAMESPACE, name), written)
    reconcile(kube, NAMESPACE, name, T0)


def test_a_world_that_did_not_change_costs_no_api_call() -> None:
    api, name = world()
    written = Written()
    run(api, watch(api), written, name)
    assert (api.calls["apply"], api.calls["patch_status"]) == (3, 1)
    assert api.calls["get"] == 3  # the children, absent from the watch, asked for
    api.calls.clear()
    run(api, watch(api), written, name)
    assert api.calls == Counter({"list Node": 1})  # nodes: the client's own cache's
    assert len(written) == 0  # the watch caught up: every write forgotten


def test_a_write_stands_in_until_the_watch_moves_past_what_it_replaced() -> None:
    api, name = world()
    written = Written()
    before = watch(api)  # the watch has not seen the creation yet
    run(api, before, written, name)
    assert [e.split(":")[0] for e in api.events] == ["Created"]  # one Event for 3 children
    api.calls.clear()
    run(api, before, written, name)  # the child events have not arrived: same answer
    assert set(api.calls) == {"list Node"}
    assert len(api.events) == 1

    service = (SERVICE, child_name(SERVICE, name))
    moved = watch(api)
    edited = copy.deepcopy(api.objects[service])
    edited["spec"]["ports"][0]["port"] = 1234  # a hand edit the watch shows
    edited["metadata"]["resourceVersion"] = "999"
    moved[SERVICE] = {(NAMESPACE, service[1]): [packed(edited)]}
    api.calls.clear()
    run(api, moved, written, name)
    assert api.calls["apply"] == 1  # taken back
    assert api.objects[service]["spec"]["ports"][0]["port"] != 1234


def test_a_child_in_place_that_is_not_ours_is_read_from_the_api_server() -> None:
    api, name = world()
    foreign = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": {}}
    api.store(SERVICE, foreign)
    indices = watch(api)
    indices[SERVICE] = {}  # not labelled as ours: no watch of ours shows it
    run(api, indices, Written(), name)
    assert api.objects[(SERVICE, name)]["spec"] == {}
    status = api.objects[(LLMDEPLOYMENT, name)]["status"]
    [ready] = [c for c in status["conditions"] if c["type"] == "Ready"]
    assert ready["reason"] == "ChildConflict"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def body(name: str, version: str) -> Manifest:
    return {"metadata": {"name": name, "namespace": NAMESPACE, "resourceVersion": version}}


def watched(name: str, version: str) -> Packed:
    return packed(body(name, version))


def test_a_write_the_watch_never_shows_is_dropped_and_swept() -> None:
    clock = Clock()
    written = Written(clock)
    written.record(DEPLOYMENT, "1", body("a", "2"))
    assert written.newer(DEPLOYMENT, NAMESPACE, "a", watched("a", "1")) == watched("a", "2")
    clock.now = WRITTEN_SECONDS + 1
    assert written.newer(DEPLOYMENT, NAMESPACE, "a", watched("a", "1")) == watched("a", "1")
    assert len(written) == 0

    for index in range(100):  # objects that are never read again
        written.record(DEPLOYMENT, None, body(f"gone-{index}", "5"))
    clock.now += WRITTEN_SECONDS + 1
    written.record(DEPLOYMENT, None, body("new", "7"))
    assert len(written) == 1


def test_a_deletion_forgets_the_write() -> None:
    written = Written()
    written.record(POD, "1", body("p", "2"))
    written.forget(POD, NAMESPACE, "p")
    assert written.newer(POD, NAMESPACE, "p", watched("p", "1")) == watched("p", "1")


def test_pods_come_from_the_watch_of_their_owner() -> None:
    pod = body("p", "3")
    pod["metadata"]["managedFields"] = [{"manager": "kubelet"}]
    indices: dict[Resource, Index] = {POD: {(NAMESPACE, "m"): [packed(pod)]}}
    kube = CachedKube(Api(), snapshot(indices, Written(), NAMESPACE, "m"), Written())
    [found] = kube.list(POD, NAMESPACE, labels.selector_string("m"))
    assert found == body("p", "3")  # all but the managed fields
    found["metadata"]["name"] = "edited"  # each read is a copy of its own
    assert kube.list(POD, NAMESPACE, labels.selector_string("m")) == [body("p", "3")]
    assert kube.list(POD, NAMESPACE, labels.selector_string("other")) == []


def test_a_resync_reconciles_only_what_changed_or_is_long_unseen() -> None:
    api, name = world()
    indices = watch(api)
    runtime = Runtime(kube=api, credentials=lambda: NotImplemented, metrics=Metrics())
    runtime.indices, key = indices, (NAMESPACE, name)
    runtime.known[key] = 1
    assert runtime.due(0.0) == [key]  # never reconciled
    runtime.reconciled[key] = (snapshot(indices, runtime.written, *key).versions(), 0.0)
    assert runtime.due(10.0) == []
    assert runtime.due(FULL_RESYNC_SECONDS) == [key]

    api.store(DEPLOYMENT, {"metadata": {"name": child_name(DEPLOYMENT, name)}})
    runtime.indices = watch(api)  # an event the handlers missed: a new version watched
    assert runtime.due(10.0) == [key]


def merge_patched(target: Manifest, patch: Manifest) -> Manifest:
    """``target`` with a JSON merge patch applied, as the API server applies one."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_patched(out[key], value)
        else:
            out[key] = value
    return out
