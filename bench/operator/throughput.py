"""Operator latency and throughput on the local control plane, against a direct baseline.

Run: `.venv/bin/python bench/operator/throughput.py [--count 200]` (brings up the
control plane and the operator with its service account if they are not up).

Measures, in one run:
- latency: `kubectl apply`-equivalent create of one LLMDeployment until all three of
  its children (Deployment, Service, PodDisruptionBudget) exist, over several
  objects; baseline: creating those same three children directly, one after another;
- throughput: creating `--count` LLMDeployments at once until every one has its
  children and a status (Ready); baseline: creating the same 3 x count children
  directly. The ratio says what the operator costs over the API server's own speed;
- the operator's resident memory before and after.
LLMDeployments use `replicas: 0`, so no pods run: this measures the operator, not the
scheduler or the pod runner. Results: bench/results/operator-throughput.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "e2e"))

import localop  # noqa: E402
from kubernetes import client, config  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402

from llmfleet_contract.api import LLMDeployment  # noqa: E402
from llmfleet_operator.children import children  # noqa: E402

GROUP, VERSION, PLURAL = "llmfleet.io", "v1alpha1", "llmdeployments"


def manifest(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "LLMDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"source": "hf://meta-llama/Llama-3.1-8B-Instruct"},
            "engine": {"simulator": {"profile": "fast"}},
            "replicas": 0,
        },
    }


class Cluster:
    def __init__(self, kubeconfig: Path) -> None:
        api = config.new_client_from_config(config_file=str(kubeconfig))
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.policy = client.PolicyV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    def namespace(self, name: str) -> str:
        self.core.create_namespace({"metadata": {"name": name}})
        return name

    def create_llmd(self, namespace: str, name: str) -> None:
        self.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, manifest(name)
        )

    def children_exist(self, namespace: str, name: str) -> bool:
        try:
            self.apps.read_namespaced_deployment(name, namespace)
            self.core.read_namespaced_service(name, namespace)
            self.policy.read_namespaced_pod_disruption_budget(name, namespace)
        except ApiException:
            return False
        return True

    def create_children_directly(self, namespace: str, name: str) -> None:
        obj = LLMDeployment.model_validate(
            {**manifest(name), "metadata": {"name": name, "namespace": namespace}}
        )
        for kind, child in children(obj, uid="00000000-0000-0000-0000-000000000000"):
            child["metadata"].pop("ownerReferences")
            if kind.kind == "Deployment":
                self.apps.create_namespaced_deployment(namespace, child)
            elif kind.kind == "Service":
                self.core.create_namespaced_service(namespace, child)
            else:
                self.policy.create_namespaced_pod_disruption_budget(namespace, child)

    def ready_count(self, namespace: str) -> int:
        items = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)[
            "items"
        ]
        return sum(
            any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in (o.get("status") or {}).get("conditions", [])
            )
            for o in items
        )


def rss_mib(pid: int | None) -> float | None:
    if pid is None:
        return None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


def latency(cluster: Cluster, samples: int) -> dict[str, float]:
    via_operator, direct = [], []
    ns_op, ns_direct = (
        cluster.namespace(f"bench-lat-op-{int(time.time())}"),
        cluster.namespace(f"bench-lat-direct-{int(time.time())}"),
    )
    for i in range(samples):
        started = time.perf_counter()
        cluster.create_children_directly(ns_direct, f"m{i}")
        direct.append(time.perf_counter() - started)
        started = time.perf_counter()
        cluster.create_llmd(ns_op, f"m{i}")
        while not cluster.children_exist(ns_op, f"m{i}"):
            time.sleep(0.005)
        via_operator.append(time.perf_counter() - started)
    for ns in (ns_op, ns_direct):
        cluster.core.delete_namespace(ns)
    return {
        "operator_p50_ms": statistics.median(via_operator) * 1000,
        "operator_max_ms": max(via_operator) * 1000,
        "direct_p50_ms": statistics.median(direct) * 1000,
        "ratio_p50": statistics.median(via_operator) / statistics.median(direct),
    }


def throughput(cluster: Cluster, count: int) -> dict[str, float]:
    ns_direct = cluster.namespace(f"bench-tp-direct-{int(time.time())}")
    started = time.perf_counter()
    for i in range(count):
        cluster.create_children_directly(ns_direct, f"m{i}")
    direct_s = time.perf_counter() - started

    ns_op = cluster.namespace(f"bench-tp-op-{int(time.time())}")
    started = time.perf_counter()
    for i in range(count):
        cluster.create_llmd(ns_op, f"m{i}")
    created_s = time.perf_counter() - started
    while cluster.ready_count(ns_op) < count:
        time.sleep(0.1)
    operator_s = time.perf_counter() - started
    for ns in (ns_op, ns_direct):
        cluster.core.delete_namespace(ns)
    return {
        "count": count,
        "create_llmdeployments_s": created_s,
        "operator_all_ready_s": operator_s,
        "operator_llmdeployments_per_s": count / operator_s,
        "operator_child_objects_per_s": 3 * count / operator_s,
        "direct_child_objects_per_s": 3 * count / direct_s,
        "ratio_objects_per_s": (3 * count / operator_s) / (3 * count / direct_s),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--latency-samples", type=int, default=20)
    args = parser.parse_args()
    state = localop.state_dir()
    if not (state / "kubeconfig").exists():
        print("the control plane is not up: run `make cluster-up` first", file=sys.stderr)
        return 2
    localop.down(state)
    operator = localop.up(state / "kubeconfig", state)
    cluster = Cluster(state / "kubeconfig")
    time.sleep(2)  # let kopf list and start watching
    memory_before = rss_mib(operator.pid())
    result = {
        "latency": latency(cluster, args.latency_samples),
        "throughput": throughput(cluster, args.count),
        "operator_rss_mib": {"idle": memory_before, "after_run": rss_mib(operator.pid())},
    }
    operator.stop()
    out = REPO / "bench" / "results" / "operator-throughput.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    lat, tp = result["latency"], result["throughput"]
    print(
        f"apply -> 3 children, p50: operator {lat['operator_p50_ms']:.0f} ms vs direct creates"
        f" {lat['direct_p50_ms']:.0f} ms (x{lat['ratio_p50']:.1f});"
        f" max {lat['operator_max_ms']:.0f} ms"
    )
    print(
        f"{tp['count']} LLMDeployments all Ready in {tp['operator_all_ready_s']:.1f} s: "
        f"{tp['operator_child_objects_per_s']:.0f} child objects/s"
        f" vs {tp['direct_child_objects_per_s']:.0f} direct (x{tp['ratio_objects_per_s']:.2f})"
    )
    print(
        f"operator RSS: {result['operator_rss_mib']['idle']:.0f} MiB idle, "
        f"{result['operator_rss_mib']['after_run']:.0f} MiB after {tp['count']} objects"
    )
    print(f"written to {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
