"""The serving-pod predicate every reader shares (status endpoints, the autoscaler's replicas,
the gateway's routing table).

Cases, one table: an engine and a group leader serve, ready or starting; a worker, a pod
without a role or with an unknown one, and a terminating pod do not. A serving pod has a URL
only when it is Ready and has an address (an IPv6 one in brackets); the Ready time is the
condition's transition, else the pod's creation.
"""

from __future__ import annotations

from typing import Any

import pytest

from llmfleet_contract.labels import ENGINE_PORT, ROLE
from llmfleet_contract.pods import is_serving, ready_since, role, serving_url

CREATED = "2026-12-01T10:00:00Z"
READY_AT = "2026-12-01T10:02:00Z"


def pod(
    role_label: str | None = "engine",
    ready: str | None = "True",
    ip: str | None = "127.0.0.5",
    deleting: bool = False,
    transition: str | None = READY_AT,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "p", "namespace": "ns", "creationTimestamp": CREATED}
    if role_label is not None:
        meta["labels"] = {ROLE: role_label}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-01T11:00:00Z"
    status: dict[str, Any] = {}
    if ready is not None:
        condition = {"type": "Ready", "status": ready}
        if transition:
            condition["lastTransitionTime"] = transition
        status["conditions"] = [{"type": "PodScheduled", "status": "True"}, condition]
    if ip:
        status["podIP"] = ip
    return {"metadata": meta, "status": status}


URL = f"http://127.0.0.5:{ENGINE_PORT}"


@pytest.mark.parametrize(
    ("case", "manifest", "serving", "url", "since"),
    [
        ("ready engine", pod(), True, URL, READY_AT),
        ("ready leader", pod("leader"), True, URL, READY_AT),
        ("worker", pod("worker"), False, None, READY_AT),
        ("no role", pod(None), False, None, READY_AT),
        ("unknown role", pod("gateway"), False, None, READY_AT),
        ("starting engine", pod(ready="False"), True, None, None),
        ("no Ready condition yet", pod(ready=None), True, None, None),
        ("ready, no address yet", pod(ip=None), True, None, READY_AT),
        ("terminating", pod(deleting=True), False, None, READY_AT),
        ("Ready without a transition time", pod(transition=None), True, URL, CREATED),
        ("IPv6", pod(ip="::1"), True, f"http://[::1]:{ENGINE_PORT}", READY_AT),
        ("empty manifest", {}, False, None, None),
    ],
)
def test_serving_pods(
    case: str, manifest: dict[str, Any], serving: bool, url: str | None, since: str | None
) -> None:
    assert is_serving(manifest) is serving, case
    assert serving_url(manifest) == url, case
    assert ready_since(manifest) == since, case


def test_role_reads_the_label() -> None:
    assert role(pod("leader")) == "leader"
    assert role(pod("gateway")) is None
