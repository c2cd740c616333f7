"""The reconcile plan (pure): which children to apply and delete, and the Event each earns.

Cases: a missing child is Created; a changed pod template is RollingOut; changed replicas
is Scaled with the numbers; a child as last applied, with what the API server adds to it,
is not applied again; a hand edit of a field the operator sets, or a field it no longer
sets, is applied without an Event; a workload of the other kind (the group now spans nodes)
is deleted.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from llmfleet_contract.api import LLMDeployment
from llmfleet_operator.children import children
from llmfleet_operator.reconcile import plan
from llmfleet_operator.resources import DEPLOYMENT, LEADER_WORKER_SET, PDB, SERVICE, Resource
from tests.corpus import ROOT

UID = "uid-1"


def obj(**spec: object) -> LLMDeployment:
    manifest = yaml.safe_load((ROOT / "examples/llama-8b.yaml").read_text())
    manifest["metadata"]["namespace"] = "serving"
    manifest["spec"].update(spec)
    return LLMDeployment.model_validate(manifest)


def test_nothing_exists_everything_created() -> None:
    todo = plan(children(obj(), UID), {})
    assert [(c.kind, c.reason) for c in todo.apply] == [
        (DEPLOYMENT, "Created"),
        (SERVICE, "Created"),
        (PDB, "Created"),
    ]
    assert todo.apply[0].message == "Created Deployment llama-8b"
    assert todo.delete == []


Key = tuple[Resource, str]
NAME = "llama-8b"


def keyed(desired: list[tuple[Resource, dict[str, Any]]]) -> dict[Key, dict[str, Any]]:
    return {(kind, manifest["metadata"]["name"]): manifest for kind, manifest in desired}


def live(desired: list[tuple[Resource, dict[str, Any]]]) -> dict[Key, dict[str, Any]]:
    """The children as the API server keeps them once applied: with its bookkeeping,
    defaults (inside lists too) and status."""
    applied = [(change.kind, copy.deepcopy(change.manifest)) for change in plan(desired, {}).apply]
    found = keyed(applied)
    for child in found.values():
        child["metadata"] |= {"resourceVersion": "7", "uid": "u", "managedFields": []}
        child["status"] = {"observedGeneration": 1}
    pod = found[(DEPLOYMENT, NAME)]["spec"]["template"]["spec"]
    pod["containers"][0] |= {"terminationMessagePath": "/dev/termination-log"}
    pod["dnsPolicy"] = "ClusterFirst"
    found[(SERVICE, NAME)]["spec"]["ports"][0]["protocol"] = "TCP"
    return found


def test_children_as_last_applied_are_not_applied_again() -> None:
    desired = children(obj(), UID)
    assert plan(desired, live(desired)).apply == []


def test_a_hand_edit_or_a_field_no_longer_set_is_applied_without_an_event() -> None:
    desired = children(obj(), UID)
    edited = live(desired)
    edited[(SERVICE, NAME)]["spec"]["ports"][0]["port"] = 9999
    [change] = plan(desired, edited).apply
    assert (change.kind, change.reason) == (SERVICE, None)
    trimmed = [(kind, copy.deepcopy(manifest)) for kind, manifest in desired]
    del dict(trimmed)[PDB]["spec"]["maxUnavailable"]
    [change] = plan(trimmed, live(desired)).apply
    assert (change.kind, change.reason) == (PDB, None)


def test_template_change_rolls_out_and_replica_change_scales() -> None:
    old = keyed(children(obj(), UID))
    new_model = {"source": "hf://meta-llama/Llama-3.1-8B-Instruct", "revision": "main"}
    assert plan(children(obj(model=new_model), UID), old).apply[0].reason == "RollingOut"
    scaled = copy.deepcopy(old)
    scaled[(DEPLOYMENT, NAME)]["spec"]["replicas"] = 3
    change = plan(children(obj(), UID), scaled).apply[0]
    assert change.reason == "Scaled"
    assert change.message == "Scaled Deployment llama-8b from 3 to 1"


def test_workload_of_the_other_kind_is_deleted() -> None:
    single = keyed(children(obj(), UID))
    multi = obj(
        parallelism={"tensorParallelSize": 8, "pipelineParallelSize": 2, "gpusPerNode": 8},
        autoscaling=None,
    )
    todo = plan(children(multi, UID), single)
    assert todo.delete == [(DEPLOYMENT, "llama-8b")]
    assert todo.apply[0].kind == LEADER_WORKER_SET
