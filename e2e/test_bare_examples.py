"""Every example applied as it is to a bare cluster (no PriorityClass, no PVC, no Secret, no
node with the GPU product it asks, no gateway reporting it): each one ends Ready, or says
why not in a condition a user reads, never `Progressing` with no reason for as long as one
waits.

Cases (issue 23's list): llama-70b (and llama-70b-spot) names a PriorityClass the cluster
lacks, so its Deployment cannot create pods: Degraded FailedCreate in the API server's words, with a
Warning Event; qwen-7b is created at zero and no gateway reports it: ScalingLimited
NoWakeSource; llama-8b asks for GPU products no node has: ScalingLimited Unplaceable, no
pod asked for; the others are Ready or Degraded with their cause (a missing PVC leaves pods
unschedulable).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from kit import EXAMPLES, apply, condition, get, wait_for
from kubernetes.client import ApiClient, CoreV1Api, SchedulingV1Api
from kubernetes.client.exceptions import ApiException
from localop import LocalOperator

EXPECTED = {
    "llama-70b-tp4.yaml": ("Degraded", "FailedCreate", "no PriorityClass with name llm-serving"),
    # The same on its on-demand workload (the spot one has no replica yet).
    "llama-70b-spot.yaml": ("Degraded", "FailedCreate", "no PriorityClass with name llm-serving"),
    "qwen-7b-scale-to-zero.yaml": ("ScalingLimited", "NoWakeSource", "nothing would wake it"),
    # No node has its GPU products: no pod is asked for, and the placement check says so.
    "llama-8b.yaml": ("ScalingLimited", "Unplaceable", "no node is eligible"),
}
EXAMPLE_FILES = sorted(path.name for path in EXAMPLES.glob("*.yaml"))


def verdict(obj: dict[str, Any]) -> tuple[str, str, str] | None:
    """The first condition that names a problem, else Ready: (type, reason, message)."""
    if (obj.get("status") or {}).get("observedGeneration") != obj["metadata"]["generation"]:
        return None
    for kind in ("Degraded", "Stalled", "ScalingLimited"):
        found = condition(obj, kind)
        if found.get("status") == "True" and found.get("message"):
            return (kind, found["reason"], found["message"])
    ready = condition(obj, "Ready")
    return ("Ready", ready["reason"], "") if ready.get("status") == "True" else None


@pytest.fixture(autouse=True)
def bare(api_client: ApiClient) -> None:
    """No PriorityClass llm-serving: e2e/test_operator.py creates it (cluster-wide) for the
    examples' own prerequisites."""
    with contextlib.suppress(ApiException):  # 404: the cluster never had it
        SchedulingV1Api(api_client).delete_priority_class("llm-serving")


@pytest.mark.parametrize("example", EXAMPLE_FILES)
def test_an_example_on_a_bare_cluster_is_ready_or_says_why(
    operator: LocalOperator,
    api_client: ApiClient,
    kubeconfig: Path,
    namespace: str,
    example: str,
) -> None:
    manifest = yaml.safe_load((EXAMPLES / example).read_text())
    name = manifest["metadata"]["name"]
    apply(kubeconfig, namespace, manifest)
    kind, reason, message = wait_for(
        f"{name} Ready or saying why not", lambda: verdict(get(api_client, namespace, name))
    )
    if example in EXPECTED:
        want_kind, want_reason, words = EXPECTED[example]
        assert (kind, reason) == (want_kind, want_reason), message
        assert words in message
    else:
        assert kind in ("Ready", "Degraded"), (kind, reason, message)
    if kind == "Degraded":
        events = CoreV1Api(api_client).list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={name},type=Warning"
        )
        assert reason in {e.reason for e in events.items}
