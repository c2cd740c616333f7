"""Spot tiers on the local control plane: a preemption notice drains a spot replica with no
stream lost, the fleet falls back to on demand, and moves back when spot returns.

The test adds a fake spot node (kwok, 8 GPUs, labelled ``karpenter.sh/capacity-type: spot``
and tainted ``spot=true:NoSchedule``) beside the cluster's on-demand GPU nodes. Two replicas
of the simulator example, one kept on demand: one runs on each tier. Two streams run on
the spot replica when the node gets Karpenter's notice (the taint
``karpenter.sh/disrupted:NoSchedule``, as its interruption controller sets it): the operator
drains that pod at once (an Event says so), both streams end with every token, the replica
comes back on demand, and the status counts 2 on demand. When the notice is lifted the
replica moves back to spot, and the fleet never has fewer than two ready replicas while it
does. Meanwhile two clients of the official ``openai`` client stream through the real
gateway, one completion after another: none is lost through either move. Last, spot is
removed from the spec: the spot replica goes only once a second on-demand one is ready.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kit import apply, apply_ready, pods, wait_for
from kubernetes.client import ApiClient, AppsV1Api, CoreV1Api
from localop import LocalOperator, kubectl
from manifests import gpu_node
from openai import OpenAI
from test_autoscaling import autoscaled, events, status
from traffic import Streams, gateway, lost

from llmfleet_operator.metrics import DirectScrape, Target

SPOT_NODE = 20  # gpu-node-20, pod IPs 127.20.0.0/24: clear of the cluster's own nodes
CAPACITY = "karpenter.sh/capacity-type"
NOTICE = {"key": "karpenter.sh/disrupted", "effect": "NoSchedule"}
SPOT_TAINT = {"key": "spot", "value": "true", "effect": "NoSchedule"}


@pytest.fixture
def spot_node(api_client: ApiClient) -> Iterator[str]:
    node: dict[str, Any] = gpu_node(SPOT_NODE)
    node["metadata"]["labels"][CAPACITY] = "spot"
    node["spec"]["taints"] = [SPOT_TAINT]
    core = CoreV1Api(api_client)
    core.create_node(node)
    name: str = node["metadata"]["name"]
    try:
        wait_for(f"{name} Ready", lambda: _ready(core, name))
        yield name
    finally:
        core.delete_node(name)


def _ready(core: CoreV1Api, name: str) -> bool:
    found = core.read_node(name).status.conditions or []
    return any(c.type == "Ready" and c.status == "True" for c in found)


def _pod_ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def _taint(core: CoreV1Api, name: str, taints: list[dict[str, str]]) -> None:
    core.patch_node(name, {"spec": {"taints": taints}})


def _tiers(api: ApiClient, namespace: str, name: str) -> tuple[int, int] | None:
    now = status(api, namespace, name)
    if "spotReplicas" not in now:
        return None
    return now["onDemandReplicas"], now["spotReplicas"]


@pytest.mark.timeout(420)
def test_a_spot_nodes_preemption_drains_its_replica_with_no_stream_lost(
    operator: LocalOperator,
    api_client: ApiClient,
    kubeconfig: Path,
    namespace: str,
    spot_node: str,
    tmp_path: Path,
) -> None:
    manifest = autoscaled("burst", minReplicas=2, maxReplicas=2)
    manifest["spec"]["placement"] = {
        "spot": {
            "nodeSelector": {CAPACITY: "spot"},
            "tolerations": [{"key": "spot", "operator": "Exists"}],
            "onDemandReplicas": 1,
        }
    }
    name = apply_ready(api_client, kubeconfig, namespace, manifest)
    wait_for("one replica on each tier", lambda: _tiers(api_client, namespace, name) == (1, 1))
    shown = kubectl(kubeconfig, "get", "llmd", name, "-n", namespace, "-o", "wide")
    header, row = shown.stdout.splitlines()
    assert row[header.index("SPOT") :].split()[0] == "1"  # kubectl aligns values to headers
    [doomed] = [p for p in pods(api_client, namespace, name) if p.spec.node_name == spot_node]
    assert doomed.metadata.labels["llmfleet.io/capacity"] == "spot"
    assert all(
        p.spec.node_name != spot_node for p in pods(api_client, namespace, name) if p != doomed
    )

    address = f"{doomed.status.pod_ip}:8000"
    client = OpenAI(base_url=f"http://{address}/v1", api_key="unused", max_retries=0)
    outcomes: list[str | None] = []
    streams = [
        threading.Thread(target=lambda: outcomes.append(lost(client, "count", 300)))
        for _ in range(2)
    ]
    for stream in streams:
        stream.start()
    busy = Target("busy", f"http://{address}", doomed.metadata.name, namespace)
    wait_for(
        "both streams running on the spot replica",
        lambda: any(s.running == 2 for s in DirectScrape().samples([busy], time.time()).samples),
        timeout=20,
    )
    core = CoreV1Api(api_client)
    with (
        gateway(kubeconfig, namespace, tmp_path / "gateway.log") as entry,
        Streams(entry, clients=2, max_tokens=100, spread=2.0) as load,
    ):
        try:
            wait_for("the gateway's clients sending", lambda: load.all_sending)
            _taint(core, spot_node, [SPOT_TAINT, NOTICE])
            drained = wait_for(
                "the Drained Event", lambda: events(api_client, namespace, "Drained")
            )
            assert drained[0].message.startswith(f"Drained pod {doomed.metadata.name} on node")
            assert "preemption notice (karpenter.sh/disrupted)" in drained[0].message
            wait_for(
                "both replicas on demand",
                lambda: _tiers(api_client, namespace, name) == (2, 0),
                timeout=120,
            )
            assert all(p.spec.node_name != spot_node for p in pods(api_client, namespace, name))
        finally:
            for stream in streams:
                stream.join(timeout=120)
        assert outcomes == [None, None]  # every token of both streams on the drained pod

        _taint(core, spot_node, [SPOT_TAINT])  # spot is back
        lowest: list[int] = []

        def moved_back() -> bool:
            serving = pods(api_client, namespace, name)
            lowest.append(sum(1 for p in serving if _pod_ready(p)))
            return _tiers(api_client, namespace, name) == (1, 1) and len(serving) == 2

        wait_for("one replica back on spot", moved_back, timeout=150)
        done = load.done
        wait_for("streams through the gateway on the fleet as it is now", lambda: load.done > done)
    # Ready pods not being deleted: the on-demand one went only once the spot one was ready.
    assert min(lowest) >= 2
    assert load.errors == []  # the gateway's clients lost nothing through both moves

    # Spot removed from the spec: the spot replica goes once on demand covers it.
    del manifest["spec"]["placement"]
    apply(kubeconfig, namespace, manifest)
    lowest.clear()

    def on_demand_only() -> bool:
        serving = pods(api_client, namespace, name)
        lowest.append(sum(1 for p in serving if _pod_ready(p)))
        spot = AppsV1Api(api_client).list_namespaced_deployment(
            namespace, field_selector=f"metadata.name={name}-spot"
        )
        return not spot.items and len(serving) == 2 and lowest[-1] == 2

    wait_for("two replicas on demand, no spot workload", on_demand_only, timeout=150)
    assert min(lowest) >= 2
    assert all(p.spec.node_name != spot_node for p in pods(api_client, namespace, name))
