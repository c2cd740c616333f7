"""The operator on the local control plane: speed against direct creates, memory, writes.

Run: `.venv/bin/python bench/operator/throughput.py [--count 1000]` (brings up the
operator with its service account; the control plane must be up).

Measures, in one run:
- latency: `kubectl apply`-equivalent create of one LLMDeployment until all three of
  its children (Deployment, Service, PodDisruptionBudget) exist, over several
  objects; baseline: creating those same three children directly, one after another;
- throughput: creating `--count` LLMDeployments at once until every one has its
  children and a status (Ready); baseline: creating the same 3 x count children
  directly. The ratio says what the operator costs over the API server's own speed.
  Reconcile latency p50/p99 over that phase come from the operator's own histogram;
  the mutating requests it set off, per object, from the API server's /metrics;
- quiet writes: after a short settle, `--quiet-seconds` with nothing changing, the API
  server's mutating requests per minute by resource (every client's: leases include
  the operator's leader lease and kwok's node leases), per object per ten minutes;
- the operator's resident memory: idle, peak (VmHWM) and after the run.
Those LLMDeployments use `replicas: 0`, so no pods run: they measure the operator, not
the scheduler or the pod runner. Then, unless `--autoscaled 0`:
- `--autoscaled` simulated models under the built-in autoscaler (1 to 1 replicas, so
  nothing scales; engine-simulator pods run by the pod runner, one client asking each in
  turn): the same quiet-window count of mutating requests. The cluster needs a GPU per
  model (LLMFLEET_GPU_NODES=7 holds 50).
Results: bench/results/operator-throughput.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "e2e"))

import localop  # noqa: E402
import scrapes  # noqa: E402
from kubernetes import client, config  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402

from llmfleet_contract.api import LLMDeployment  # noqa: E402
from llmfleet_operator.children import children  # noqa: E402

GROUP, VERSION, PLURAL = "llmfleet.io", "v1alpha1", "llmdeployments"
# What the operator writes (the API server's metrics do not say who made a request, so
# leases, pods and Events are reported beside these, not in them: the operator creates an
# Event per change, but so do the Deployment and disruption controllers, in the same
# namespaces, for the very same objects).
OPERATOR_RESOURCES = frozenset({"deployments", "services", "poddisruptionbudgets"})
# Of the LLMDeployments themselves, the bench creates them: only the status (and any
# change to the object after its creation) is the operator's.
OPERATOR_WRITES = frozenset(
    {
        *(f"{resource} " for resource in OPERATOR_RESOURCES),
        "llmdeployments/status ",
        *(f"llmdeployments {verb}" for verb in ("PATCH", "APPLY", "PUT")),
    }
)


def operator_write(key: str) -> bool:
    """Whether a `resource VERB` key of :func:`scrapes.request_delta` is the operator's."""
    return key.startswith(tuple(OPERATOR_WRITES))


# After the last object turns Ready, the time given to the writes it set off (the
# Deployments' own status, the operator's last status patch) before the quiet window.
SETTLE_S = 10.0
# After all are Ready, the time the Deployment controller may take to observe them all.
ROLLOUTS_TIMEOUT_S = 300.0
# Autoscaled models start engine processes: the first scrapes and status settle longer.
AUTOSCALED_SETTLE_S = 30.0
AUTOSCALED_READY_TIMEOUT_S = 300.0


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

    def ready_count(self, namespace: str, condition: str = "Ready", status: str = "True") -> int:
        """LLMDeployments in ``namespace`` whose ``condition`` has ``status``."""
        items = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)[
            "items"
        ]
        return sum(
            any(
                c["type"] == condition and c["status"] == status
                for c in (o.get("status") or {}).get("conditions", [])
            )
            for o in items
        )


def proc_status_mib(pid: int | None, field: str = "VmRSS") -> float | None:
    """A memory figure of /proc/PID/status in MiB (VmRSS: now; VmHWM: the peak so far)."""
    if pid is None:
        return None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return None


def cpu_seconds(pid: int | None) -> float:
    """User plus system CPU time of a process so far."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Snapshot:
    """What the API server and the operator have counted so far."""

    apiserver: str
    histogram: dict[float, float]
    cpu_s: float
    at: float

    @classmethod
    def take(cls, admin: Path, operator_metrics: str, pid: int | None) -> Snapshot:
        return cls(
            scrapes.apiserver_text(admin),
            scrapes.buckets(scrapes.http_text(operator_metrics)),
            cpu_seconds(pid),
            time.perf_counter(),
        )


def reconciles(before: Snapshot, after: Snapshot) -> dict[str, float | None]:
    """Reconcile count and p50/p99 between two snapshots (from the operator's histogram)."""
    p50 = scrapes.quantile(0.5, before.histogram, after.histogram)
    p99 = scrapes.quantile(0.99, before.histogram, after.histogram)
    return {
        "reconciles": scrapes.observations(before.histogram, after.histogram),
        "p50_ms": None if p50 is None else p50 * 1000,
        "p99_ms": None if p99 is None else p99 * 1000,
    }


def rates(requests: dict[str, int], seconds: float, count: int) -> dict[str, Any]:
    """Mutating requests (by `resource VERB`) over ``seconds``: per minute, and per object
    per ten minutes for the operator's own resources, for leases and for Events."""
    minutes = seconds / 60

    def per_object_10min(mine: Callable[[str], bool]) -> float:
        return sum(n for key, n in requests.items() if mine(key)) / minutes * 10 / count

    return {
        "seconds": seconds,
        "requests": requests,
        "per_minute": {key: n / minutes for key, n in requests.items()},
        "operator_resources_per_object_per_10min": per_object_10min(operator_write),
        "leases_per_object_per_10min": per_object_10min(lambda key: key.startswith("leases ")),
        "events_per_object_per_10min": per_object_10min(lambda key: key.startswith("events ")),
    }


def writes(before: Snapshot, after: Snapshot, count: int) -> dict[str, Any]:
    """:func:`rates` between two snapshots, with the operator's CPU time per minute."""
    requests = scrapes.request_delta(before.apiserver, after.apiserver)
    minutes = (after.at - before.at) / 60
    return {
        **rates(requests, after.at - before.at, count),
        "operator_cpu_s_per_min": (after.cpu_s - before.cpu_s) / minutes,
    }


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


def throughput(
    cluster: Cluster, count: int, admin: Path, operator: localop.LocalOperator, quiet_s: float
) -> dict[str, Any]:
    """`count` LLMDeployments to Ready against their children created directly; then the
    writes while nothing changes (the direct namespace stays, its objects idle too)."""
    ns_direct = cluster.namespace(f"bench-tp-direct-{int(time.time())}")
    started = time.perf_counter()
    for i in range(count):
        cluster.create_children_directly(ns_direct, f"m{i}")
    direct_s = time.perf_counter() - started

    metrics_url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
    ns_op = cluster.namespace(f"bench-tp-op-{int(time.time())}")
    before = Snapshot.take(admin, metrics_url, operator.pid())
    started = time.perf_counter()
    for i in range(count):
        cluster.create_llmd(ns_op, f"m{i}")
    created_s = time.perf_counter() - started
    while cluster.ready_count(ns_op) < count:
        time.sleep(0.5)
    operator_s = time.perf_counter() - started
    ready = Snapshot.take(admin, metrics_url, operator.pid())
    rss_ready = proc_status_mib(operator.pid())
    to_ready = scrapes.request_delta(before.apiserver, ready.apiserver)

    # Ready comes first; the Deployment controller (on the same 2 cores) observes each new
    # Deployment later, and then Progressing turns False: a status change the operator must
    # write. Quiet starts once every rollout is complete.
    while cluster.ready_count(ns_op, "Progressing", "False") < count:
        if time.perf_counter() - started > operator_s + ROLLOUTS_TIMEOUT_S:
            raise TimeoutError("the Deployment controller did not observe every Deployment")
        time.sleep(1.0)
    complete_s = time.perf_counter() - started
    time.sleep(SETTLE_S)
    quiet_from = Snapshot.take(admin, metrics_url, operator.pid())
    time.sleep(quiet_s)
    quiet_to = Snapshot.take(admin, metrics_url, operator.pid())
    for ns in (ns_op, ns_direct):
        cluster.core.delete_namespace(ns)
    return {
        "count": count,
        "create_llmdeployments_s": created_s,
        "operator_all_ready_s": operator_s,
        "rollouts_complete_s": complete_s,
        "direct_children_s": direct_s,
        "operator_llmdeployments_per_s": count / operator_s,
        "operator_child_objects_per_s": 3 * count / operator_s,
        "direct_child_objects_per_s": 3 * count / direct_s,
        "ratio_objects_per_s": (3 * count / operator_s) / (3 * count / direct_s),
        "rss_mib_at_ready": rss_ready,
        "reconcile_to_ready": reconciles(before, ready),
        "writes_to_ready": {
            **writes(before, ready, count),
            "per_object": {key: n / count for key, n in to_ready.items()},
            "operator_per_object": {
                key: n / count for key, n in to_ready.items() if operator_write(key)
            },
        },
        "quiet": {
            "settle_s": SETTLE_S,
            "reconcile": reconciles(quiet_from, quiet_to),
            **writes(quiet_from, quiet_to, count),
        },
    }


def autoscaled_manifest(name: str) -> dict[str, Any]:
    """A simulated model under the built-in autoscaler that cannot scale (1 to 1): its
    pods are scraped every period, and nothing a user reads changes."""
    body = manifest(name)
    body["spec"] = {
        "model": {**body["spec"]["model"], "servedNames": [name]},
        "engine": {"maxNumSeqs": 2, "simulator": {"profile": "fast"}},
        "autoscaling": {"minReplicas": 1, "maxReplicas": 1},
    }
    return body


def light_load(cluster: Cluster, namespace: str, stop: threading.Event) -> None:
    """One client asking each model in turn for 8 tokens, until ``stop``."""
    while not stop.is_set():
        items = cluster.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        for item in items["items"]:
            endpoints = (item.get("status") or {}).get("endpoints") or []
            if stop.is_set() or not endpoints:
                continue
            with contextlib.suppress(OSError):  # a pod still starting: asked next round
                localop.complete(endpoints[0], 8)
        stop.wait(1.0)


def autoscaled(
    cluster: Cluster, count: int, admin: Path, operator: localop.LocalOperator, quiet_s: float
) -> dict[str, Any]:
    """`count` autoscaled simulated models at light steady load: the writes per object
    while nothing a user reads changes."""
    namespace = cluster.namespace(f"bench-autoscaled-{int(time.time())}")
    started = time.perf_counter()
    for i in range(count):
        cluster.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, autoscaled_manifest(f"a{i}")
        )
    while cluster.ready_count(namespace) < count:
        if time.perf_counter() - started > AUTOSCALED_READY_TIMEOUT_S:
            raise TimeoutError(
                f"{cluster.ready_count(namespace)} of {count} autoscaled models Ready"
            )
        time.sleep(1.0)
    ready_s = time.perf_counter() - started
    stop = threading.Event()
    load = threading.Thread(target=light_load, args=(cluster, namespace, stop), daemon=True)
    load.start()
    metrics_url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
    time.sleep(AUTOSCALED_SETTLE_S)
    quiet_from = Snapshot.take(admin, metrics_url, operator.pid())
    time.sleep(quiet_s)
    quiet_to = Snapshot.take(admin, metrics_url, operator.pid())
    stop.set()
    load.join(timeout=60)
    cluster.core.delete_namespace(namespace)
    return {
        "count": count,
        "all_ready_s": ready_s,
        "settle_s": AUTOSCALED_SETTLE_S,
        "reconcile": reconciles(quiet_from, quiet_to),
        **writes(quiet_from, quiet_to, count),
    }


def wait_gone(cluster: Cluster, prefix: str) -> None:
    """Until no namespace named ``prefix``... is left (their deletion writes are over)."""
    while any(ns.metadata.name.startswith(prefix) for ns in cluster.core.list_namespace().items):
        time.sleep(2.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--latency-samples", type=int, default=20)
    parser.add_argument("--quiet-seconds", type=float, default=60.0)
    parser.add_argument(
        "--autoscaled", type=int, default=50, help="autoscaled simulated models; 0 skips"
    )
    args = parser.parse_args()
    state = localop.state_dir()
    admin = state / "kubeconfig"
    if not admin.exists():
        print("the control plane is not up: run `make cluster-up` first", file=sys.stderr)
        return 2
    localop.down(state)
    cluster = Cluster(admin)
    wait_gone(cluster, "bench-")  # a last run's namespaces: their deletion loads the cluster
    operator = localop.up(admin, state)
    time.sleep(2)  # let kopf list and start watching
    memory_before = proc_status_mib(operator.pid())
    lat = latency(cluster, args.latency_samples)
    tp = throughput(cluster, args.count, admin, operator, args.quiet_seconds)
    out = REPO / "bench" / "results" / "operator-throughput.json"
    result: dict[str, Any] = {
        "latency": lat,
        "throughput": tp,
        "operator_rss_mib": {
            "idle": memory_before,
            "after_run": proc_status_mib(operator.pid()),
            "peak": proc_status_mib(operator.pid(), "VmHWM"),
        },
        "autoscaled": None,
        "cores": os.cpu_count(),
        "operator_writes": sorted(OPERATOR_WRITES),
        "reconcile_latency_source": f"the operator's {scrapes.RECONCILE_HISTOGRAM} histogram,"
        " interpolated inside its buckets as histogram_quantile does",
    }
    out.write_text(json.dumps(result, indent=2) + "\n")  # kept if the next phase fails
    print(json.dumps(result, indent=2), flush=True)
    scaled = None
    if args.autoscaled:
        wait_gone(cluster, "bench-")
        scaled = autoscaled(cluster, args.autoscaled, admin, operator, args.quiet_seconds)
        result["autoscaled"] = scaled
        out.write_text(json.dumps(result, indent=2) + "\n")
    operator.stop()
    rss, ready, quiet = result["operator_rss_mib"], tp["reconcile_to_ready"], tp["quiet"]
    print(
        f"apply -> 3 children, p50: operator {lat['operator_p50_ms']:.0f} ms vs direct creates"
        f" {lat['direct_p50_ms']:.0f} ms (x{lat['ratio_p50']:.1f});"
        f" max {lat['operator_max_ms']:.0f} ms"
    )
    print(
        f"{tp['count']} LLMDeployments all Ready in {tp['operator_all_ready_s']:.1f} s: "
        f"{tp['operator_child_objects_per_s']:.0f} child objects/s"
        f" vs {tp['direct_child_objects_per_s']:.0f} direct (x{tp['ratio_objects_per_s']:.2f});"
        f" reconcile p50 {ready['p50_ms']:.0f} ms, p99 {ready['p99_ms']:.0f} ms"
        f" over {ready['reconciles']} reconciles"
    )
    print(f"writes per object until Ready: {tp['writes_to_ready']['per_object']}")
    print(
        f"quiet {quiet['seconds']:.0f} s: per minute {quiet['per_minute']}; operator's"
        f" resources {quiet['operator_resources_per_object_per_10min']:.3f} per object per"
        f" 10 min; operator CPU {quiet['operator_cpu_s_per_min']:.1f} s/min"
    )
    print(
        f"operator RSS: {rss['idle']:.0f} MiB idle, peak {rss['peak']:.0f} MiB,"
        f" {rss['after_run']:.0f} MiB after {tp['count']} objects"
    )
    if scaled is not None:
        print(
            f"{scaled['count']} autoscaled models, {scaled['seconds']:.0f} s at light load:"
            f" per minute {scaled['per_minute']}; operator's resources"
            f" {scaled['operator_resources_per_object_per_10min']:.3f} per object per 10 min"
        )
    print(f"written to {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
