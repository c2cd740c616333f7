"""The pod runner backs pods with local processes the way a kubelet would run containers.

Cases without a cluster (pure `launch_for`): the command annotation with `{ip}` and
`{port}`; an llmfleet image running `llmfleet` with `--host` rewritten, env from
values and fieldRefs, `$(VAR)` expansion, a named readiness port; pods nothing backs.
Cases on the cluster: a pod is Ready only once its process answers; deleting a pod
whose process ignores SIGTERM keeps it Terminating for its grace period, then the
process is killed and the pod removed; a preStop sleep delays SIGTERM; a process
that dies is restarted and the pod is not Ready meanwhile; a pod of an llmfleet
image runs the repo's `llmfleet engine-sim`, which answers on the pod IP.
"""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

from kubernetes.client import ApiClient, CoreV1Api
from podrunner import Launch, Probe, launch_for
from waiting import wait_until

LLMFLEET = "/repo/.venv/bin/llmfleet"


def bound_pod(
    containers: list[dict[str, Any]], annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "p",
            "namespace": "ns",
            "uid": "u1",
            "annotations": annotations or {},
            "labels": {"role": "leader"},
        },
        "spec": {"nodeName": "gpu-node-1", "containers": containers},
        "status": {"podIP": "127.1.0.7", "hostIP": "127.1.255.1"},
    }


# ---- pure ----------------------------------------------------------------------------


def test_command_annotation_gets_the_pod_ip_and_first_port() -> None:
    pod = bound_pod(
        [{"name": "c", "image": "x", "ports": [{"containerPort": 9000}]}],
        {"e2e.llmfleet.io/command": '["serve", "--bind={ip}", "{port}"]'},
    )
    launch = launch_for(pod, LLMFLEET)
    env = {"HOSTNAME": "p", "LLMFLEET_BIND_HOST": "127.1.0.7"}
    assert launch == Launch("c", ["serve", "--bind=127.1.0.7", "9000"], env, Probe(9000))


def test_llmfleet_image_runs_the_repo_llmfleet_bound_to_the_pod_ip() -> None:
    container = {
        "name": "engine",
        "image": "ghcr.io/example/llmfleet:0.1.0",
        "command": ["llmfleet"],
        "args": ["engine-sim", "--host", "0.0.0.0", "--port", "8000", "--model", "$(MODEL)"],
        "env": [
            {"name": "MODEL", "value": "tiny"},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "ROLE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['role']"}}},
            {"name": "URL", "value": "http://$(POD_IP):8000"},
        ],
        "ports": [{"name": "http", "containerPort": 8000}],
        "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}},
        "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
    }
    launch = launch_for(bound_pod([{"name": "sidecar", "image": "busybox"}, container]), LLMFLEET)
    assert launch is not None
    assert launch.container == "engine"
    assert launch.argv == [
        LLMFLEET, "engine-sim", "--host", "127.1.0.7", "--port", "8000", "--model", "tiny",
    ]  # fmt: skip
    path = launch.env.pop("PATH")
    assert path.startswith("/repo/.venv/bin:")  # the image has llmfleet on PATH
    assert launch.env == {
        "HOSTNAME": "p",
        "MODEL": "tiny",
        "POD_IP": "127.1.0.7",
        "ROLE": "leader",
        "URL": "http://127.1.0.7:8000",
        "LLMFLEET_BIND_HOST": "127.1.0.7",
    }
    assert launch.probe == Probe(8000, "/health")
    assert launch.prestop_sleep == 5


def test_host_flag_with_equals_sign_is_rewritten_too() -> None:
    container = {"name": "e", "image": "llmfleet", "command": ["llmfleet"], "args": ["--host=::"]}
    launch = launch_for(bound_pod([container]), LLMFLEET)
    assert launch is not None
    assert launch.argv == [LLMFLEET, "--host=127.1.0.7"]
    assert launch.probe is None  # no port: Ready as soon as it runs


def test_pods_nothing_backs_get_no_process() -> None:
    other_command = {"name": "e", "image": "llmfleet", "command": ["python"], "args": []}
    assert launch_for(bound_pod([{"name": "c", "image": "vllm/vllm-openai"}]), LLMFLEET) is None
    assert launch_for(bound_pod([other_command]), LLMFLEET) is None


# ---- on the cluster ----------------------------------------------------------------------

# Serves HTTP on the pod IP once `delay` seconds have passed; ignores SIGTERM if asked.
SERVER = """
import http.server, signal, sys, time
if sys.argv[1] == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
time.sleep(float(sys.argv[2]))
http.server.HTTPServer(("{ip}", {port}), http.server.SimpleHTTPRequestHandler).serve_forever()
"""


def server_pod(name: str, term: str, delay: float, grace: int = 30) -> dict[str, Any]:
    command = ["python3", "-c", SERVER, term, str(delay)]
    return {
        "metadata": {"name": name, "annotations": {"e2e.llmfleet.io/command": json_list(command)}},
        "spec": {
            "terminationGracePeriodSeconds": grace,
            "containers": [
                {"name": "s", "image": "python:3.11", "ports": [{"containerPort": 8080}]}
            ],
        },
    }


def json_list(items: list[str]) -> str:
    return json.dumps(items)


def ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def answers(ip: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{ip}:8080/", timeout=1):
            return True
    except OSError:
        return False


def test_pod_is_ready_only_once_its_process_answers(api_client: ApiClient, namespace: str) -> None:
    core = CoreV1Api(api_client)
    core.create_namespaced_pod(namespace, server_pod("slow", "default", delay=3))

    running = wait_until(
        lambda: (p := core.read_namespaced_pod("slow", namespace)).status.pod_ip and p,
        "the pod to get an IP",
    )
    assert not ready(running)
    assert not answers(running.status.pod_ip)
    pod = wait_until(lambda: ready(p := core.read_namespaced_pod("slow", namespace)) and p, "Ready")
    assert answers(pod.status.pod_ip)


def test_deletion_waits_for_the_process_up_to_the_grace_period(
    api_client: ApiClient, namespace: str
) -> None:
    core = CoreV1Api(api_client)
    core.create_namespaced_pod(namespace, server_pod("stubborn", "ignore-term", 0, grace=3))
    pod = wait_until(
        lambda: ready(p := core.read_namespaced_pod("stubborn", namespace)) and p, "Ready"
    )

    started = time.monotonic()
    core.delete_namespaced_pod("stubborn", namespace)
    terminating = core.read_namespaced_pod("stubborn", namespace)
    assert terminating.metadata.deletion_timestamp is not None
    assert answers(pod.status.pod_ip), "SIGTERM is ignored: it serves until SIGKILL"

    names = lambda: [p.metadata.name for p in core.list_namespaced_pod(namespace).items]  # noqa: E731
    wait_until(lambda: "stubborn" not in names(), "the pod to be removed", timeout=20)
    assert 2.5 <= time.monotonic() - started < 15
    assert not answers(pod.status.pod_ip)


def test_a_process_that_dies_is_restarted(api_client: ApiClient, namespace: str) -> None:
    core = CoreV1Api(api_client)
    command = ["python3", "-c", "import sys, time; time.sleep(0.5); sys.exit(3)"]
    pod = {
        "metadata": {
            "name": "crashy",
            "annotations": {"e2e.llmfleet.io/command": json_list(command)},
        },
        "spec": {"containers": [{"name": "c", "image": "python:3.11"}]},
    }
    core.create_namespaced_pod(namespace, pod)

    def restarted_twice() -> Any:
        status = core.read_namespaced_pod("crashy", namespace).status
        statuses = status.container_statuses or []
        return statuses and statuses[0].restart_count >= 2 and status

    status = wait_until(restarted_twice, "two restarts", timeout=30)
    ready_condition = next(c for c in status.conditions if c.type == "Ready")
    assert ready_condition.reason.startswith("ProcessExited")


def test_prestop_sleep_delays_sigterm(api_client: ApiClient, namespace: str) -> None:
    core = CoreV1Api(api_client)
    pod = server_pod("draining", "default", 0, grace=30)
    pod["spec"]["containers"][0]["lifecycle"] = {"preStop": {"sleep": {"seconds": 2}}}
    core.create_namespaced_pod(namespace, pod)
    ip = wait_until(
        lambda: ready(p := core.read_namespaced_pod("draining", namespace)) and p.status.pod_ip,
        "Ready",
    )

    started = time.monotonic()
    core.delete_namespaced_pod("draining", namespace)
    time.sleep(1)
    assert answers(ip), "still serving during the preStop sleep"
    names = lambda: [p.metadata.name for p in core.list_namespaced_pod(namespace).items]  # noqa: E731
    wait_until(lambda: "draining" not in names(), "the pod to be removed", timeout=20)
    assert 1.5 <= time.monotonic() - started < 10  # SIGTERM after 2 s, not the 30 s grace


SIMULATOR_ARGS = "engine-sim --host 0.0.0.0 --port 8000 --profile fast --served-model-name tiny"


def test_llmfleet_image_pod_runs_the_engine_simulator(
    api_client: ApiClient, namespace: str
) -> None:
    core = CoreV1Api(api_client)
    engine = {
        "name": "engine",
        "image": "ghcr.io/llmfleet/llmfleet:dev",
        "command": ["llmfleet"],
        "args": SIMULATOR_ARGS.split(),
        "ports": [{"name": "http", "containerPort": 8000}],
        "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}},
    }
    pod = {"metadata": {"name": "sim"}, "spec": {"containers": [engine]}}
    core.create_namespaced_pod(namespace, pod)

    ip = wait_until(
        lambda: ready(p := core.read_namespaced_pod("sim", namespace)) and p.status.pod_ip,
        "the simulator to answer /health",
    )
    with urllib.request.urlopen(f"http://{ip}:8000/v1/models", timeout=5) as response:
        models = json.load(response)
    assert [m["id"] for m in models["data"]] == ["tiny"]
