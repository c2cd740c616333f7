"""The real node (`node.py`): a kubelet running the images built here in containerd.

Cases:
- the node registers Ready on its bridge address, with its labels, its taint and GPUs
  the scheduler can allocate;
- a pod becomes Ready by its httpGet probe, `kubectl logs` reaches it through the API
  server, and deleting it runs the preStop sleep, then SIGTERM, within the grace period;
- GPU requests are counted: one GPU fits, more than the node has stays Pending;
- a pod reaches the API server at the node's address with its service-account token
  and verifies the server's certificate (the in-cluster config of the official client);
- pods reach each other by pod IP in their own network namespaces.
"""

from __future__ import annotations

import ipaddress
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
from manifests import NODE_IP, POD_SUBNET, REAL_NODE_GPUS, REAL_NODE_TAINT
from node_fixtures import RealNode, real_node  # noqa: F401  (the fixture)
from waiting import wait_until

# The first test's setup builds the images when they are cold.
pytestmark = pytest.mark.timeout(1800)

SERVER = """
import http.server, os, signal, sys, time
def on_term(*_):
    print(f"SIGTERM at {time.time():.3f}", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(os.environ["POD_NAME"].encode())
    def log_message(self, *args):
        pass
print("serving on", os.environ["POD_IP"], flush=True)
http.server.HTTPServer(("", 8080), Handler).serve_forever()
"""

WHOAMI = """
import kubernetes
kubernetes.config.load_incluster_config()
review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
answer = kubernetes.client.AuthenticationV1Api().create_self_subject_review(review)
print("authenticated as", answer.status.user_info.username)
"""


@pytest.fixture
def core(api_client: kubernetes.client.ApiClient) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(api_client)


@pytest.fixture
def pods_namespace(core: kubernetes.client.CoreV1Api, namespace: str) -> str:
    """The test's namespace once its default ServiceAccount exists (pods need it)."""
    wait_until(lambda: core.list_namespaced_service_account(namespace).items, "default SA")
    return namespace


def _python_pod(node: RealNode, name: str, image: str, code: str, **spec: Any) -> dict[str, Any]:
    field = [("POD_NAME", "metadata.name"), ("POD_IP", "status.podIP")]
    env = [{"name": n, "valueFrom": {"fieldRef": {"fieldPath": p}}} for n, p in field]
    container = {
        "name": "main",
        "image": image,
        "imagePullPolicy": "Never",
        "command": ["python3", "-u", "-c", code],
        "env": env + spec.pop("env", []),
        **spec.pop("container", {}),
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {**node.placement, "containers": [container], **spec},
    }


def _server_pod(node: RealNode, name: str, **container: Any) -> dict[str, Any]:
    probe = {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}
    extra = {"ports": [{"containerPort": 8080}], "readinessProbe": probe, **container}
    return _python_pod(node, name, node.images["engine-sim"], SERVER, container=extra)


def _create(core: kubernetes.client.CoreV1Api, namespace: str, pod: dict[str, Any]) -> None:
    core.create_namespaced_pod(namespace, pod)  # type: ignore[arg-type]


def _pod(core: kubernetes.client.CoreV1Api, namespace: str, name: str) -> Any:
    return core.read_namespaced_pod(name, namespace)


def _ready(core: kubernetes.client.CoreV1Api, namespace: str, name: str) -> Any:
    pod = _pod(core, namespace, name)
    conditions = pod.status.conditions or []
    return pod if any(c.type == "Ready" and c.status == "True" for c in conditions) else None


def _phase(core: kubernetes.client.CoreV1Api, namespace: str, name: str, phase: str) -> bool:
    return bool(_pod(core, namespace, name).status.phase == phase)


def _gone(core: kubernetes.client.CoreV1Api, namespace: str, name: str) -> bool:
    try:
        _pod(core, namespace, name)
    except kubernetes.client.ApiException as error:
        return bool(error.status == 404)
    return False


def test_node_registers_ready_with_labels_taint_and_gpus(
    real_node: RealNode,  # noqa: F811
    core: kubernetes.client.CoreV1Api,
) -> None:
    node: Any = core.read_node(real_node.name)
    assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)
    addresses = {a.type: a.address for a in node.status.addresses}
    assert addresses["InternalIP"] == NODE_IP
    assert node.status.node_info.container_runtime_version.startswith("containerd://")
    assert node.metadata.labels["llmfleet.io/node"] == "real"
    assert node.metadata.labels["nvidia.com/gpu.count"] == str(REAL_NODE_GPUS)
    # The node lifecycle controller's own taints (node.kubernetes.io/not-ready, briefly,
    # after registration) come and go on its schedule: only ours is asserted.
    ours = [
        (t.key, t.effect) for t in node.spec.taints if not t.key.startswith("node.kubernetes.io/")
    ]
    assert ours == [(REAL_NODE_TAINT["key"], REAL_NODE_TAINT["effect"])]
    assert node.status.allocatable["nvidia.com/gpu"] == str(REAL_NODE_GPUS)


def test_pod_probe_logs_prestop_and_sigterm(
    real_node: RealNode,  # noqa: F811
    core: kubernetes.client.CoreV1Api,
    pods_namespace: str,
) -> None:
    ns, name = pods_namespace, "web"
    prestop = 2
    lifecycle = {"preStop": {"sleep": {"seconds": prestop}}}
    pod = _server_pod(real_node, name, lifecycle=lifecycle)
    pod["spec"]["terminationGracePeriodSeconds"] = 20
    _create(core, ns, pod)
    ready = wait_until(lambda: _ready(core, ns, name), "pod Ready by its httpGet probe", 90)
    assert ipaddress.ip_address(ready.status.pod_ip) in ipaddress.ip_network(POD_SUBNET)
    assert ready.spec.node_name == real_node.name
    logs = core.read_namespaced_pod_log(name, ns)
    assert f"serving on {ready.status.pod_ip}" in logs

    lines = _follow_logs(core, ns, name)
    deleted_at = time.time()
    core.delete_namespaced_pod(name, ns)
    wait_until(lambda: _gone(core, ns, name), "pod deleted after its container exited", 60)
    term = [line for line in lines if line.startswith("SIGTERM at ")]
    assert term, f"no SIGTERM reached the container; its log: {lines}"
    delay = float(term[0].split()[-1]) - deleted_at
    # The preStop sleep runs first, SIGTERM follows well within the grace period.
    assert prestop <= delay < prestop + 5, delay


def _follow_logs(core: kubernetes.client.CoreV1Api, namespace: str, name: str) -> list[str]:
    """Lines of the pod's log as they come (a thread reading `kubectl logs -f`)."""
    lines: list[str] = []
    stream = core.read_namespaced_pod_log(name, namespace, follow=True, _preload_content=False)

    def read() -> None:
        for line in _lines(stream):
            lines.append(line)

    threading.Thread(target=read, daemon=True).start()
    wait_until(lambda: lines, "the log stream to start")
    return lines


def _lines(stream: Any) -> Iterator[str]:
    buffer = b""
    for chunk in stream.stream(64):
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            yield line.decode()


def test_gpu_requests_are_counted(
    real_node: RealNode,  # noqa: F811
    core: kubernetes.client.CoreV1Api,
    pods_namespace: str,
) -> None:
    ns = pods_namespace
    for name, gpus in (("one-gpu", 1), ("too-many", REAL_NODE_GPUS + 1)):
        limits = {"resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}
        _create(core, ns, _server_pod(real_node, name, **limits))
    wait_until(lambda: _ready(core, ns, "one-gpu"), "the one-GPU pod Ready", 90)

    def unschedulable() -> str:
        conditions = _pod(core, ns, "too-many").status.conditions or []
        return next((c.message for c in conditions if c.reason == "Unschedulable"), "")

    message = wait_until(unschedulable, "the pod asking too many GPUs reported Unschedulable")
    assert "Insufficient nvidia.com/gpu" in message


def test_pod_reaches_api_server_with_its_token(
    real_node: RealNode,  # noqa: F811
    core: kubernetes.client.CoreV1Api,
    pods_namespace: str,
) -> None:
    ns, name = pods_namespace, "whoami"
    pod = _python_pod(
        real_node,
        name,
        real_node.images["operator"],  # has the official client
        WHOAMI,
        env=real_node.api_env,
        restartPolicy="Never",
    )
    _create(core, ns, pod)
    finished = lambda: _pod(core, ns, name).status.phase in ("Succeeded", "Failed")  # noqa: E731
    wait_until(finished, "the pod to finish", 90)
    logs = core.read_namespaced_pod_log(name, ns)
    assert _phase(core, ns, name, "Succeeded"), logs
    assert f"authenticated as system:serviceaccount:{ns}:default" in logs


def test_pods_reach_each_other(
    real_node: RealNode,  # noqa: F811
    core: kubernetes.client.CoreV1Api,
    pods_namespace: str,
) -> None:
    ns = pods_namespace
    _create(core, ns, _server_pod(real_node, "server"))
    server = wait_until(lambda: _ready(core, ns, "server"), "the server pod Ready", 90)
    url = f"http://{server.status.pod_ip}:8080/"
    fetch = f"import urllib.request; print(urllib.request.urlopen({json.dumps(url)}).read())"
    client = _python_pod(
        real_node, "client", real_node.images["engine-sim"], fetch, restartPolicy="Never"
    )
    _create(core, ns, client)
    finished = lambda: _pod(core, ns, "client").status.phase in ("Succeeded", "Failed")  # noqa: E731
    wait_until(finished, "the client pod to finish", 90)
    assert core.read_namespaced_pod_log("client", ns).strip() == "b'server'"
