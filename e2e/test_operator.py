"""The operator on the local control plane, with the chart's RBAC and its own token.

Cases: every example reaches Ready with Running pods whose GPUs, shm, probes and
launcher args are what its spec implies (on simulator engines that answer on their pod
IPs); the two-node example is a LeaderWorkerSet with a leader and a worker and a
Service that selects leaders; a revision change rolls the pods while a maxReplicas
change does not; a group larger than any node is Degraded with the shortfall and
recovers when fixed; a hand-deleted child comes back; killing the operator mid-rollout
and restarting it ends with the same children and no duplicates; deleting the
LLMDeployment removes every child; the operator serves its metrics; a restarted operator
reconciles what exists from its watches alone (no GET, no write).
"""

from __future__ import annotations

import dataclasses
import json
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

import localop
import pytest
import yaml
from kit import (
    EXAMPLES,
    GROUP,
    PLURAL,
    SIMULATED,
    VERSION,
    LocalPrometheus,
    apply,
    apply_ready,
    condition,
    get,
    pods,
    ready,
    wait_for,
)
from kubernetes.client import ApiClient, AppsV1Api, CoreV1Api, CustomObjectsApi
from localop import LocalOperator, kubectl
from prometheus_client.parser import text_string_to_metric_families

from llmfleet_operator.metrics import DirectScrape, PrometheusSource, Readings, Target

GPU_PRODUCT = "NVIDIA-H100-80GB-HBM3"


# ---- example prerequisites, as a user would create them ----------------------------


def prerequisites(kubeconfig: Path, namespace: str) -> None:
    objects = [
        {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": "llm-serving"},
            "value": 1000,
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "hf-token", "namespace": namespace},
            "stringData": {"HF_TOKEN": "hf_not_a_real_token"},
        },
    ]
    for claim in ("model-cache", "model-cache-rwx"):
        objects += [
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": f"{namespace}-{claim}"},
                "spec": {
                    "capacity": {"storage": "1Ti"},
                    "accessModes": ["ReadWriteMany"],
                    "storageClassName": "manual",
                    "hostPath": {"path": f"/tmp/{namespace}-{claim}"},
                    "claimRef": {"namespace": namespace, "name": claim},
                },
            },
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": claim, "namespace": namespace},
                "spec": {
                    "accessModes": ["ReadWriteMany"],
                    "storageClassName": "manual",
                    "resources": {"requests": {"storage": "1Ti"}},
                },
            },
        ]
    stream = yaml.safe_dump_all(objects)
    result = kubectl(
        kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", "-", stdin=stream
    )
    assert result.returncode == 0, result.stderr


def on_this_cluster(path: Path, **spec: Any) -> dict[str, Any]:
    """An example, run on the simulator and this cluster's GPU product."""
    manifest: dict[str, Any] = yaml.safe_load(path.read_text())
    # A profile whose KV cache holds every example's maxModelLen (fast holds 8k tokens).
    manifest["spec"].setdefault("engine", {})["simulator"] = {"profile": "h100-llama2-70b-tp8"}
    manifest["spec"].setdefault("placement", {})["gpuProducts"] = [GPU_PRODUCT]
    manifest["spec"].update(spec)
    return manifest


# ---- the tests -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("example", "gpus", "shm", "pods_per_replica"),
    [
        ("llama-8b.yaml", "1", "2Gi", 1),
        ("llama-70b-tp4.yaml", "4", "16Gi", 1),
        ("llama-405b-tp8-pp2.yaml", "8", "64Gi", 2),
        ("qwen-7b-scale-to-zero.yaml", "1", "2Gi", 1),
    ],
)
def test_example_becomes_ready(
    operator: LocalOperator,
    api_client: ApiClient,
    kubeconfig: Path,
    namespace: str,
    example: str,
    gpus: str,
    shm: str,
    pods_per_replica: int,
) -> None:
    prerequisites(kubeconfig, namespace)
    manifest = on_this_cluster(EXAMPLES / example)
    name = manifest["metadata"]["name"]
    apply(kubeconfig, namespace, manifest)

    def ready_and_running() -> tuple[list[Any]] | None:
        # One snapshot: the status says Ready and every pod it counts is Running.
        if not ready(api_client, namespace, name):
            return None
        desired = get(api_client, namespace, name)["status"]["desiredReplicas"]
        found = pods(api_client, namespace, name)
        complete = len(found) == desired * pods_per_replica
        serving = sorted(
            f"{p.status.pod_ip}:8000"
            for p in found
            if p.metadata.labels["llmfleet.io/role"] != "worker"
        )
        listed = get(api_client, namespace, name)["status"].get("endpoints", [])
        running = all(p.status.phase == "Running" for p in found)
        return (found,) if complete and running and listed == serving else None

    (running,) = wait_for(f"{name} Ready with every pod Running", ready_and_running, timeout=150)
    obj = get(api_client, namespace, name)
    for pod in running:
        assert pod.status.pod_ip.startswith("127.")
        engine = pod.spec.containers[0]
        assert engine.resources.limits["nvidia.com/gpu"] == gpus
        shm_volume = next(v for v in pod.spec.volumes if v.name == "dshm")
        assert (shm_volume.empty_dir.medium, shm_volume.empty_dir.size_limit) == ("Memory", shm)
        config = json.loads(next(e.value for e in engine.env if e.name == "LLMFLEET_ENGINE_CONFIG"))
        assert config["tensorParallelSize"] == manifest["spec"].get("parallelism", {}).get(
            "tensorParallelSize", 1
        )
        if pod.metadata.labels["llmfleet.io/role"] != "worker":
            assert engine.readiness_probe.http_get.path == "/health"
            with urllib.request.urlopen(
                f"http://{pod.status.pod_ip}:8000/v1/models", timeout=5
            ) as reply:
                served = [m["id"] for m in json.load(reply)["data"]]
            assert served[0] == (manifest["spec"]["model"].get("servedNames") or [name])[0]
    assert obj["status"]["selector"] == f"llmfleet.io/deployment={name}"


def test_two_node_group_has_leader_worker_and_a_leader_service(
    operator: LocalOperator, api_client: ApiClient, kubeconfig: Path, namespace: str
) -> None:
    prerequisites(kubeconfig, namespace)
    apply_ready(
        api_client, kubeconfig, namespace, on_this_cluster(EXAMPLES / "llama-405b-tp8-pp2.yaml")
    )
    roles = sorted(
        p.metadata.labels["llmfleet.io/role"] for p in pods(api_client, namespace, "llama-405b")
    )
    assert roles == ["leader", "worker"]
    service = CoreV1Api(api_client).read_namespaced_service("llama-405b", namespace)
    selector = ",".join(f"{k}={v}" for k, v in service.spec.selector.items())
    selected = CoreV1Api(api_client).list_namespaced_pod(namespace, label_selector=selector).items
    assert [p.metadata.labels["llmfleet.io/role"] for p in selected] == ["leader"]
    assert AppsV1Api(api_client).list_namespaced_deployment(namespace).items == []


def _pod_names(api: ApiClient, namespace: str, name: str) -> set[str]:
    return {p.metadata.name for p in pods(api, namespace, name)}


def test_revision_rolls_pods_but_max_replicas_does_not(
    operator: LocalOperator, api_client: ApiClient, kubeconfig: Path, namespace: str
) -> None:
    manifest = on_this_cluster(EXAMPLES / "llama-8b.yaml")
    apply_ready(api_client, kubeconfig, namespace, manifest)
    before = _pod_names(api_client, namespace, "llama-8b")
    manifest["spec"]["autoscaling"]["maxReplicas"] = 6
    apply(kubeconfig, namespace, manifest)
    wait_for("the new generation observed", lambda: ready(api_client, namespace, "llama-8b"))
    assert _pod_names(api_client, namespace, "llama-8b") == before
    manifest["spec"]["model"]["revision"] = "main"
    apply(kubeconfig, namespace, manifest)
    wait_for(
        "new pods after the revision change",
        lambda: (
            ready(api_client, namespace, "llama-8b")
            and not (_pod_names(api_client, namespace, "llama-8b") & before)
        ),
        timeout=120,
    )


def test_group_larger_than_any_node_is_degraded_until_fixed(
    operator: LocalOperator, api_client: ApiClient, kubeconfig: Path, namespace: str
) -> None:
    manifest = on_this_cluster(
        EXAMPLES / "llama-8b.yaml", parallelism={"tensorParallelSize": 16, "gpusPerNode": 16}
    )
    apply(kubeconfig, namespace, manifest)

    def degraded() -> dict[str, Any]:
        found = condition(get(api_client, namespace, "llama-8b"), "Degraded")
        return found if found.get("reason") == "InsufficientGPUs" else {}

    found = wait_for("Degraded InsufficientGPUs", degraded)
    assert "each pod requests 16 nvidia.com/gpu but the largest node offers 8" in found["message"]
    assert condition(get(api_client, namespace, "llama-8b"), "Ready")["status"] == "False"
    events = CoreV1Api(api_client).list_namespaced_event(namespace).items
    assert any(e.reason == "Created" and "Deployment llama-8b" in e.message for e in events)
    manifest["spec"]["parallelism"] = {"tensorParallelSize": 8, "gpusPerNode": 8}
    apply(kubeconfig, namespace, manifest)
    wait_for(
        "recovery once the group fits",
        lambda: ready(api_client, namespace, "llama-8b"),
        timeout=120,
    )
    assert condition(get(api_client, namespace, "llama-8b"), "Degraded")["status"] == "False"


def test_hand_deleted_child_comes_back(
    operator: LocalOperator, api_client: ApiClient, kubeconfig: Path, namespace: str
) -> None:
    apply_ready(api_client, kubeconfig, namespace, on_this_cluster(EXAMPLES / "llama-8b.yaml"))
    core = CoreV1Api(api_client)
    uid = core.read_namespaced_service("llama-8b", namespace).metadata.uid
    core.delete_namespaced_service("llama-8b", namespace)
    wait_for(
        "the Service recreated",
        lambda: [s for s in core.list_namespaced_service(namespace).items if s.metadata.uid != uid],
    )


def test_operator_restart_mid_rollout_leaves_no_duplicates(
    operator: LocalOperator, api_client: ApiClient, kubeconfig: Path, namespace: str
) -> None:
    manifest = on_this_cluster(EXAMPLES / "llama-8b.yaml")
    apply_ready(api_client, kubeconfig, namespace, manifest)
    manifest["spec"]["model"]["revision"] = "main"
    apply(kubeconfig, namespace, manifest)
    operator.stop(signal.SIGKILL)
    operator.start()
    wait_for(
        "rollout finished after the restart",
        lambda: ready(api_client, namespace, "llama-8b"),
        timeout=120,
    )
    apps = AppsV1Api(api_client)
    assert [d.metadata.name for d in apps.list_namespaced_deployment(namespace).items] == [
        "llama-8b"
    ]
    assert [
        s.metadata.name for s in CoreV1Api(api_client).list_namespaced_service(namespace).items
    ] == ["llama-8b"]
    live = [rs for rs in apps.list_namespaced_replica_set(namespace).items if rs.spec.replicas]
    assert len(live) == 1


def test_deleting_the_llmdeployment_removes_every_child(
    operator: LocalOperator, api_client: ApiClient, kubeconfig: Path, namespace: str
) -> None:
    apply_ready(api_client, kubeconfig, namespace, on_this_cluster(EXAMPLES / "llama-8b.yaml"))
    CustomObjectsApi(api_client).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "llama-8b"
    )

    def gone() -> bool:
        apps, core = AppsV1Api(api_client), CoreV1Api(api_client)
        return not (
            apps.list_namespaced_deployment(namespace).items
            or core.list_namespaced_service(namespace).items
            or pods(api_client, namespace, "llama-8b")
        )

    wait_for("every child garbage-collected", gone, timeout=120)


def operator_page(operator: LocalOperator) -> str:
    """The operator's /metrics once it has reconciled (empty while it cannot be read)."""
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=5
        ) as reply:
            text: str = reply.read().decode()
            return text if "llmfleet_operator_reconcile_total" in text else ""
    except OSError:
        return ""


def test_operator_serves_its_metrics(operator: LocalOperator) -> None:
    text = wait_for("operator metrics", lambda: operator_page(operator))
    assert "llmfleet_operator_reconcile_duration_seconds_bucket" in text
    assert "llmfleet_operator_llmdeployments" in text


def test_a_restarted_operator_reads_its_watches_not_the_api_server(
    operator: LocalOperator, api_client: ApiClient, kubeconfig: Path, namespace: str
) -> None:
    manifest = on_this_cluster(EXAMPLES / "llama-8b.yaml", replicas=1)
    del manifest["spec"]["autoscaling"]  # its periods would write new signals
    apply_ready(api_client, kubeconfig, namespace, manifest)
    wait_for(  # the last status the operator had to write
        "the rollout complete",
        lambda: (
            condition(get(api_client, namespace, "llama-8b"), "Progressing").get("status")
            == "False"
        ),
    )
    operator.stop()
    # Scoped to this test's namespace: objects of other tests' namespaces going away would
    # be reconciled too, with reads of their own.
    scoped = dataclasses.replace(operator, identity="scoped", namespaces=(namespace,))
    try:
        scoped.start()
        wait_for(
            "the restarted operator's first reconcile",
            lambda: 'llmfleet_operator_reconcile_total{result="success"}' in operator_page(scoped),
        )
        time.sleep(3)  # its writes, if it made any
        page = operator_page(scoped)
    finally:
        scoped.stop()
        operator.start()
    made = {
        (sample.labels["verb"], sample.labels["resource"]): sample.value
        for family in text_string_to_metric_families(page)
        for sample in family.samples
        if sample.name == "llmfleet_operator_api_requests_total"
    }
    assert {key for key in made if key[1] not in ("leases", "nodes")} == set(), made
    assert ready(api_client, namespace, "llama-8b")


def test_operator_runs_without_admin_rights(operator: LocalOperator, kubeconfig: Path) -> None:
    account = f"system:serviceaccount:{localop.SYSTEM}:{localop.ACCOUNT}"
    for verb, resource, extra, allowed in [
        ("create", "deployments.apps", "", "yes"),
        ("patch", "llmdeployments.llmfleet.io", "--subresource=status", "yes"),
        ("patch", "llmdeployments.llmfleet.io", "", "no"),
        ("patch", "pods", "", "yes"),  # the pod-deletion-cost annotation before a scale-down
        ("delete", "pods", "", "yes"),  # a spot pod on a node about to be preempted
        ("create", "pods", "", "no"),
        ("get", "secrets", "", "no"),
    ]:
        flags = [f"--as={account}", "-A", *([extra] if extra else [])]
        answer = kubectl(kubeconfig, "auth", "can-i", verb, resource, *flags)
        assert answer.stdout.strip() == allowed, (verb, resource, answer.stdout)
    (user,) = yaml.safe_load(operator.kubeconfig.read_text())["users"]
    assert set(user["user"]) == {"token"}  # no admin client certificate


def test_the_operator_may_change_only_a_pods_deletion_cost_and_delete_only_spot_pods(
    operator: LocalOperator, kubeconfig: Path, namespace: str
) -> None:
    """RBAC lets it patch and delete pods; the chart's ValidatingAdmissionPolicy narrows
    that."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "bystander", "namespace": namespace, "labels": {"app": "x"}},
        "spec": {
            "nodeSelector": {"no-such-node": "true"},  # stays Pending: nothing runs
            "containers": [{"name": "main", "image": "example.invalid/none"}],
        },
    }
    created = kubectl(kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump(pod))
    assert created.returncode == 0, created.stderr
    account = f"--as=system:serviceaccount:{localop.SYSTEM}:{localop.ACCOUNT}"

    def change(verb: str, value: str) -> Any:
        target = ["-n", namespace, "pod/bystander", account, value]
        return kubectl(kubeconfig, verb, "--overwrite", *target)

    tries = iter(range(1_000))

    def relabel() -> Any:  # a new value each try: a no-op patch would pass any policy
        return change("label", f"app=y{next(tries)}")

    refused = wait_for("the policy in force", lambda: (r := relabel()).returncode and r)
    assert "may change only a pod's controller.kubernetes.io/pod-deletion-cost" in refused.stderr
    assert change("annotate", "note=hello").returncode != 0
    allowed = change("annotate", "controller.kubernetes.io/pod-deletion-cost=7")
    assert allowed.returncode == 0, allowed.stderr

    def delete() -> Any:
        return kubectl(kubeconfig, "delete", "-n", namespace, "pod/bystander", account)

    kept = delete()
    assert kept.returncode != 0
    assert "may delete only the pods of its spot workloads" in kept.stderr
    spot = ["label", "-n", namespace, "pod/bystander", "llmfleet.io/capacity=spot"]
    assert kubectl(kubeconfig, *spot).returncode == 0
    gone = delete()
    assert gone.returncode == 0, gone.stderr


def test_a_refused_child_is_reported_and_blocks_no_one(
    operator: LocalOperator, api_client: ApiClient, kubeconfig: Path, namespace: str
) -> None:
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "no-services"},
        "spec": {"hard": {"services": "0"}},
    }
    assert (
        kubectl(
            kubeconfig, "apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(quota)
        ).returncode
        == 0
    )
    other = f"{namespace}-ok"
    assert kubectl(kubeconfig, "create", "namespace", other).returncode == 0
    try:
        manifest = yaml.safe_load(SIMULATED.read_text())
        apply(kubeconfig, namespace, manifest)
        apply(kubeconfig, other, manifest)
        name = manifest["metadata"]["name"]

        def refused() -> dict[str, Any]:
            found = condition(get(api_client, namespace, name), "Ready")
            return found if found.get("reason") == "ApplyFailed" else {}

        found = wait_for("Ready=False ApplyFailed", refused)
        assert f"Service {name}" in found["message"]
        assert "exceeded quota" in found["message"]
        events = CoreV1Api(api_client).list_namespaced_event(namespace).items
        assert any(e.reason == "ApplyFailed" and e.type == "Warning" for e in events)
        wait_for("the other namespace's twin Ready", lambda: ready(api_client, other, name))
    finally:
        kubectl(kubeconfig, "delete", "namespace", other, "--wait=false")


def test_kubectl_scale_drives_the_workload(
    operator: LocalOperator, api_client: ApiClient, kubeconfig: Path, namespace: str
) -> None:
    manifest = yaml.safe_load(SIMULATED.read_text())
    name = apply_ready(api_client, kubeconfig, namespace, manifest)
    scaled = kubectl(kubeconfig, "scale", "-n", namespace, f"llmdeployment/{name}", "--replicas=3")
    assert scaled.returncode == 0, scaled.stderr

    def three_ready() -> bool:
        status = get(api_client, namespace, name)["status"]
        deployment = AppsV1Api(api_client).read_namespaced_deployment(name, namespace)
        return (
            deployment.spec.replicas == 3
            and status["readyReplicas"] == 3
            and ready(api_client, namespace, name)
        )

    wait_for("3 ready replicas after kubectl scale", three_ready)


def test_a_second_operator_waits_for_the_lease_then_takes_over(
    operator: LocalOperator, api_client: ApiClient, kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    standby = LocalOperator(
        operator.kubeconfig, operator.state, metrics_port=18081, identity="standby"
    )
    standby.log.unlink(missing_ok=True)  # read only what this standby says
    standby.start()
    try:
        wait_for(
            "the standby waiting",
            lambda: "Waiting for Lease" in standby.log.read_text(),
            timeout=30,
        )
        operator.stop(signal.SIGKILL)  # the leader dies without releasing the Lease
        wait_for("the standby leading", lambda: "Leading" in standby.log.read_text(), timeout=45)
        manifest = yaml.safe_load(SIMULATED.read_text())
        apply(kubeconfig, namespace, manifest)
        wait_for(
            "reconciled by the new leader",
            lambda: ready(api_client, namespace, manifest["metadata"]["name"]),
        )
    finally:
        standby.stop()
        operator.start()  # later tests expect the fixture's operator


def test_prometheus_discovers_and_scrapes_engine_pods(
    operator: LocalOperator,
    prometheus: LocalPrometheus,
    api_client: ApiClient,
    kubeconfig: Path,
    namespace: str,
) -> None:
    """Prometheus finds the engines through the API server; the operator's source reads them."""
    name = apply_ready(api_client, kubeconfig, namespace, yaml.safe_load(SIMULATED.read_text()))
    targets = [
        Target(p.metadata.name, f"http://{p.status.pod_ip}:8000", p.metadata.name, namespace)
        for p in pods(api_client, namespace, name)
    ]
    with PrometheusSource(prometheus.url, staleness_seconds=30) as source:

        def every_pod() -> Readings | None:
            readings = source.samples(targets, time.time())
            return readings if len(readings.samples) == len(targets) else None

        readings = wait_for("a sample of every engine pod via Prometheus", every_pod, timeout=60)
    direct = DirectScrape().samples(targets, time.time())
    assert {s.replica for s in readings.samples} == {t.replica for t in targets}
    assert readings.missing == ()
    assert {(s.replica, s.running, s.waiting) for s in readings.samples} == {
        (s.replica, s.running, s.waiting) for s in direct.samples
    }
