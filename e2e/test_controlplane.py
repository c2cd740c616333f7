"""The local control plane behaves like a real cluster where the operator relies on it.

Cases: a Deployment on the fake GPU nodes gets Running, Ready pods with loopback
IPs whose processes answer HTTP; deleting an owner garbage-collects its children
(and their processes); a LeaderWorkerSet of size 2 creates a leader and a worker
through LWS's controller and webhooks; RBAC is on (a token without rights is
refused, a binding grants them); the fake nodes advertise 8 GPUs each; the
generated LLMDeployment CRD is accepted; the API server refuses loopback
addresses in EndpointSlices (why Services have no endpoints here).
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from kubernetes.client import ApiClient, ApiException, AppsV1Api, CoreV1Api, CustomObjectsApi
from waiting import wait_until

REPO = Path(__file__).resolve().parents[1]
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
HTTP_SERVER = '["python3", "-m", "http.server", "--bind", "{ip}", "{port}"]'


def http_deployment(name: str, replicas: int) -> dict[str, Any]:
    """A Deployment whose pods the pod runner backs with `python3 -m http.server`."""
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {"e2e.llmfleet.io/command": HTTP_SERVER},
                },
                "spec": {
                    "containers": [
                        {
                            "name": "web",
                            "image": "python:3.11-slim",
                            "ports": [{"containerPort": 8080}],
                            "readinessProbe": {"httpGet": {"path": "/", "port": 8080}},
                        }
                    ]
                },
            },
        },
    }


def is_ready(pod: Any) -> bool:
    conditions = pod.status.conditions or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def ready_pods(core: CoreV1Api, namespace: str, selector: str, count: int) -> list[Any]:
    """The pods matching `selector` once exactly `count` exist and all are Ready."""

    def check() -> list[Any]:
        pods = core.list_namespaced_pod(namespace, label_selector=selector).items
        live = [p for p in pods if p.metadata.deletion_timestamp is None]
        return live if len(live) == count and all(map(is_ready, live)) else []

    return wait_until(check, f"{count} Ready pods matching {selector}")


def answers_http(ip: str, port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{ip}:{port}/", timeout=2) as response:
            return int(response.status) == 200
    except OSError:
        return False


def test_gpu_nodes_are_ready_with_eight_gpus(api_client: ApiClient) -> None:
    nodes = CoreV1Api(api_client).list_node().items
    assert len(nodes) >= 2
    for node in nodes:
        assert node.status.allocatable["nvidia.com/gpu"] == "8"
        assert node.metadata.labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
        assert ipaddress.ip_network(node.spec.pod_cidr).subnet_of(LOOPBACK)
        assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)


def test_deployment_pods_run_local_processes_on_loopback_ips(
    api_client: ApiClient, namespace: str
) -> None:
    core = CoreV1Api(api_client)
    AppsV1Api(api_client).create_namespaced_deployment(namespace, http_deployment("web", 2))

    pods = ready_pods(core, namespace, "app=web", 2)

    nodes = {n.metadata.name: n for n in core.list_node().items}
    for pod in pods:
        assert pod.status.phase == "Running"
        ip = ipaddress.ip_address(pod.status.pod_ip)
        assert ip in ipaddress.ip_network(nodes[pod.spec.node_name].spec.pod_cidr)
        assert ip in LOOPBACK
        assert answers_http(pod.status.pod_ip, 8080)


def test_deleting_an_owner_garbage_collects_its_children(
    api_client: ApiClient, namespace: str
) -> None:
    core, apps = CoreV1Api(api_client), AppsV1Api(api_client)
    apps.create_namespaced_deployment(namespace, http_deployment("owned", 2))
    pods = ready_pods(core, namespace, "app=owned", 2)
    replica_set = apps.list_namespaced_replica_set(namespace, label_selector="app=owned").items[0]
    assert replica_set.metadata.owner_references[0].kind == "Deployment"
    assert pods[0].metadata.owner_references[0].name == replica_set.metadata.name

    apps.delete_namespaced_deployment("owned", namespace, propagation_policy="Background")

    wait_until(
        lambda: not apps.list_namespaced_replica_set(namespace, label_selector="app=owned").items,
        "the ReplicaSet to be garbage-collected",
    )
    wait_until(
        lambda: not core.list_namespaced_pod(namespace, label_selector="app=owned").items,
        "the pods to be garbage-collected",
    )
    for pod in pods:
        assert not answers_http(pod.status.pod_ip, 8080), "the pod's process still runs"


def test_leaderworkerset_of_size_two_creates_a_leader_and_a_worker(
    api_client: ApiClient, namespace: str
) -> None:
    lws = {
        "apiVersion": "leaderworkerset.x-k8s.io/v1",
        "kind": "LeaderWorkerSet",
        "metadata": {"name": "group"},
        "spec": {
            "replicas": 1,
            "leaderWorkerTemplate": {
                "size": 2,
                "workerTemplate": {
                    "spec": {
                        "containers": [
                            {
                                "name": "engine",
                                "image": "vllm/vllm-openai:latest",
                                "resources": {"limits": {"nvidia.com/gpu": "8"}},
                            }
                        ]
                    }
                },
            },
        },
    }
    CustomObjectsApi(api_client).create_namespaced_custom_object(
        "leaderworkerset.x-k8s.io", "v1", namespace, "leaderworkersets", lws
    )

    pods = ready_pods(CoreV1Api(api_client), namespace, "leaderworkerset.sigs.k8s.io/name=group", 2)

    by_index = {p.metadata.labels["leaderworkerset.sigs.k8s.io/worker-index"]: p for p in pods}
    assert sorted(by_index) == ["0", "1"]
    assert by_index["0"].metadata.name == "group-0"  # the leader
    assert by_index["1"].metadata.name == "group-0-1"  # its worker
    for index, pod in by_index.items():
        env = {e.name: e.value for e in pod.spec.containers[0].env}  # injected by LWS's webhook
        assert env["LWS_GROUP_SIZE"] == "2"
        assert env["LWS_WORKER_INDEX"] == index
        assert env["LWS_LEADER_ADDRESS"].startswith(f"group-0.group.{namespace}")
    # 8 GPUs each: the two pods of a group land on two different nodes.
    assert by_index["0"].spec.node_name != by_index["1"].spec.node_name


def client_with_token(admin: ApiClient, token: str) -> ApiClient:
    config = kubernetes.client.Configuration()
    config.host = admin.configuration.host
    config.ssl_ca_cert = admin.configuration.ssl_ca_cert
    config.api_key = {"authorization": f"Bearer {token}"}
    return ApiClient(config)


def test_rbac_refuses_a_token_without_rights_until_a_binding_grants_them(
    api_client: ApiClient, namespace: str
) -> None:
    core = CoreV1Api(api_client)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "nobody"}})
    request = {"spec": {"audiences": [], "expirationSeconds": 600}}
    token = core.create_namespaced_service_account_token("nobody", namespace, request).status.token

    with client_with_token(api_client, token) as nobody:
        list_pods = lambda: CoreV1Api(nobody).list_namespaced_pod(namespace)  # noqa: E731
        # A brand-new ServiceAccount's token can be unknown (401) for a moment.
        refused = wait_until(lambda: (e := api_error(list_pods)) and e.status != 401 and e, "a 403")
        assert refused.status == 403
        assert "cannot list resource" in json.loads(refused.body)["message"]

        binding = {
            "metadata": {"name": "nobody-view"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "view",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "nobody", "namespace": namespace}],
        }
        kubernetes.client.RbacAuthorizationV1Api(api_client).create_namespaced_role_binding(
            namespace, binding
        )
        wait_until(lambda: api_error(list_pods) is None, "the RoleBinding to grant access")

    with client_with_token(api_client, "not-a-token") as stranger:
        unauthenticated = api_error(lambda: CoreV1Api(stranger).list_namespaced_pod(namespace))
        assert unauthenticated is not None
        assert unauthenticated.status == 401


def api_error(call: Callable[[], object]) -> ApiException | None:
    """The ApiException `call` raises, or None if it succeeds."""
    try:
        call()
    except ApiException as error:
        return error
    return None


def test_endpointslices_refuse_loopback_addresses(api_client: ApiClient, namespace: str) -> None:
    """Kubernetes forbids 127.0.0.0/8 in EndpointSlices, so the EndpointSlice controller
    cannot publish these pods: code that needs pod addresses here reads them from Pods."""
    endpoint_slice = {
        "metadata": {"name": "loopback"},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["127.1.0.9"]}],
        "ports": [{"port": 8080, "protocol": "TCP"}],
    }
    with pytest.raises(ApiException) as refused:
        kubernetes.client.DiscoveryV1Api(api_client).create_namespaced_endpoint_slice(
            namespace, endpoint_slice
        )
    assert refused.value.status == 422
    assert "may not be in the loopback range" in refused.value.body


def kubectl(kubeconfig: Path, *args: str) -> str:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    argv = ["kubectl", *args]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=90, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_generated_llmdeployment_crd_is_established(kubeconfig: Path) -> None:
    crd = str(REPO / "crds" / "llmfleet.io_llmdeployments.yaml")
    kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", crd)
    waited = kubectl(kubeconfig, "wait", "--for=condition=Established", "--timeout=60s", "-f", crd)
    assert "condition met" in waited
