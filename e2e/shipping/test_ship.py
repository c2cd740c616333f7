"""The chart as users install it: images built here, pods run by a real kubelet.

Cases, in order, on one release (`conftest.py`'s ``release``):
- the operator (two replicas, one holding the leader Lease) and the gateway run as pods of
  the chart's images, with their service accounts' tokens, and become Ready;
- an LLMDeployment of engine-simulator containers becomes Ready and answers a tenant's key
  through the gateway, with the official ``openai`` client;
- scaling it from 3 replicas to 1, then rolling it to a new revision, under streaming load,
  loses no stream: the kubelet runs each removed pod's preStop sleep, then SIGTERM, within the
  grace period the operator set, and each removed pod still had streams in flight at SIGTERM
  (its log, followed while it ran, says so);
- `helm uninstall` keeps the CRDs and every LLMDeployment.
"""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from kit import EXAMPLES, apply, get, pods, ready, wait_for
from kubernetes.client import ApiClient, CoordinationV1Api, CoreV1Api
from localop import CRDS, RELEASE, SYSTEM
from ship import Images, kubectl, placement, port_forward, uninstall
from traffic import MODEL, Streams, drained

from llmfleet_contract.api import key_hash
from llmfleet_contract.labels import API_KEYS
from llmfleet_operator.metrics.parse import parse_engine
from llmfleet_operator.metrics.readings import Miss

NAME = "llama"
SLOTS = 4
TOKENS = 300
STREAM_SECONDS = 12  # one 40 ms decode step per token


def chart_pods(api: ApiClient, component: str) -> list[Any]:
    """The release's pods of ``component``, not those of an earlier revision still going."""
    selector = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component={component}"
    found = CoreV1Api(api).list_namespaced_pod(SYSTEM, label_selector=selector).items
    return [p for p in found if not p.metadata.deletion_timestamp]


def is_ready(pod: Any) -> bool:
    conditions = pod.status.conditions or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def test_the_operator_and_the_gateway_run_as_pods(api: ApiClient, release: str) -> None:
    for component, replicas in (("operator", 2), ("gateway", 2)):
        running = wait_for(
            f"{replicas} ready {component} pods",
            lambda c=component, n=replicas: (
                len([p for p in chart_pods(api, c) if is_ready(p)]) == n and chart_pods(api, c)
            ),
        )
        for pod in running:
            assert pod.spec.service_account_name == f"{RELEASE}-{component}"
            assert pod.spec.node_name
            assert pod.status.pod_ip
            [status] = pod.status.container_statuses
            assert status.image_id, status  # a container the runtime really ran
    operators = chart_pods(api, "operator")
    leases = CoordinationV1Api(api)
    wait_for(
        "one of the operator pods leading",
        lambda: (
            leases.read_namespaced_lease(f"{RELEASE}-operator", SYSTEM).spec.holder_identity
            in {p.metadata.name for p in operators}
        ),
        timeout=30,
    )
    core = CoreV1Api(api)
    for pod in operators:  # the standby too: its liveness probe must not restart it
        health = core.connect_get_namespaced_pod_proxy_with_path(
            f"{pod.metadata.name}:8081", SYSTEM, "healthz"
        )
        assert health == "ok"
        assert pod.status.container_statuses[0].restart_count == 0


def model(images: Images, replicas: int, revision: str | None = None) -> dict[str, Any]:
    """The slowed simulator example in the engine-simulator image, on the real node."""
    manifest: dict[str, Any] = yaml.safe_load(
        (EXAMPLES / "llama-8b-simulated-autoscaled.yaml").read_text()
    )
    spec = manifest["spec"]
    manifest["metadata"]["name"] = NAME
    del spec["autoscaling"]
    spec["replicas"] = replicas
    spec["engine"] |= {
        "maxNumSeqs": SLOTS,
        "image": images.refs["engine-sim"],
        "imagePullPolicy": "IfNotPresent",
    }
    spec["placement"] = placement()
    if revision:
        spec["model"]["revision"] = revision
    return manifest


@pytest.fixture(scope="module")
def key(kubeconfig: Path, release: str) -> str:
    """A tenant's key; the tenant may call NAME."""
    key = f"sk-{secrets.token_urlsafe(24)}"
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "team-keys", "labels": {API_KEYS: "true"}},
        "stringData": {"ci": key_hash(key)},
    }
    tenant = {
        "apiVersion": "llmfleet.io/v1alpha1",
        "kind": "LLMTenant",
        "metadata": {"name": "team"},
        "spec": {"apiKeys": {"name": "team-keys"}, "models": [NAME]},
    }
    for manifest in (secret, tenant):
        apply(kubeconfig, release, manifest)
    return key


@pytest.fixture(scope="module")
def gateway(kubeconfig: Path, release: str) -> Iterator[str]:
    with port_forward(kubeconfig, SYSTEM, f"svc/{RELEASE}-gateway", 8080) as address:
        yield address


def serving(api: ApiClient, namespace: str, replicas: int) -> bool:
    found = pods(api, namespace, NAME)
    return ready(api, namespace, NAME) and len(found) == replicas and all(map(is_ready, found))


@pytest.mark.timeout(600)
def test_a_model_answers_through_the_gateway(
    api: ApiClient, kubeconfig: Path, release: str, images: Images, key: str, gateway: str
) -> None:
    apply(kubeconfig, release, model(images, 1))
    wait_for(f"{NAME} Ready", lambda: serving(api, release, 1), timeout=300)
    client = openai.OpenAI(base_url=f"http://{gateway}/v1", api_key=key, max_retries=0)
    wait_for("the gateway lists the model", lambda: MODEL in {m.id for m in client.models.list()})
    answer = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hello"}], max_tokens=8
    )
    assert answer.usage is not None
    assert answer.usage.completion_tokens == 8
    [pod] = pods(api, release, NAME)
    assert pod.spec.containers[0].image == images.refs["engine-sim"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(
            base_url=f"http://{gateway}/v1", api_key="sk-wrong", max_retries=0
        ).models.list()


def all_busy(api: ApiClient, namespace: str, replicas: int) -> bool:
    """``replicas`` serving pods, each decoding streams (its /metrics read through the API
    server's pod proxy, as reachable on kind as here)."""
    found = pods(api, namespace, NAME)
    core = CoreV1Api(api)
    samples = [
        parse_engine(
            core.connect_get_namespaced_pod_proxy_with_path(
                f"{p.metadata.name}:8000", namespace, "metrics"
            ),
            p.metadata.name,
            time.time(),
        )
        for p in found
        if is_ready(p)
    ]
    busy = [s for s in samples if not isinstance(s, Miss) and s.running]
    return len(found) == replicas and len(busy) == replicas


class PodLogs:
    """`kubectl logs -f` of each pod of NAME, each into a file, until its container exits."""

    def __init__(self, kubeconfig: Path, namespace: str, folder: Path) -> None:
        self.kubeconfig, self.namespace, self.folder = kubeconfig, namespace, folder
        self.followed: dict[str, subprocess.Popen[bytes]] = {}

    def follow(self, names: set[str]) -> None:
        for name in names - self.followed.keys():
            with (self.folder / f"{name}.log").open("wb") as out:
                self.followed[name] = subprocess.Popen(
                    [
                        "kubectl",
                        f"--kubeconfig={self.kubeconfig}",
                        "logs",
                        "-f",
                        "-n",
                        self.namespace,
                        name,
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )

    def drained(self, names: set[str]) -> dict[str, int | None]:
        """Requests in flight on each pod when SIGTERM reached it."""
        for name in names:
            self.followed[name].wait(timeout=60)  # the log ends when its container does
        return {name: drained(self.folder / f"{name}.log") for name in sorted(names)}

    def stop(self) -> None:
        for process in self.followed.values():
            process.kill()
            process.wait()


def every_pod(api: ApiClient, namespace: str) -> set[str]:
    """The pods of NAME, terminating ones included."""
    selector = f"llmfleet.io/deployment={NAME}"
    found = CoreV1Api(api).list_namespaced_pod(namespace, label_selector=selector).items
    return {p.metadata.name for p in found}


@pytest.fixture
def logs(kubeconfig: Path, release: str, tmp_path: Path) -> Iterator[PodLogs]:
    followed = PodLogs(kubeconfig, release, tmp_path)
    yield followed
    followed.stop()


def under_load(
    api: ApiClient,
    release: str,
    gateway: str,
    key: str,
    logs: PodLogs,
    clients: int,
    change: Callable[[], object],
    settled: tuple[str, Callable[[set[str]], bool]],
) -> set[str]:
    """Streams through the gateway until every pod of NAME decodes some, then ``change``, wait
    until ``settled`` (given the pods before) and until the pods after served SLOTS more
    streams; asserts none was lost. The pods before."""
    before = every_pod(api, release)
    replicas = len(before)
    logs.follow(before)
    with Streams(gateway, clients, TOKENS, spread=STREAM_SECONDS, key=key) as load:
        wait_for(
            "every client sending, streams on every pod",
            lambda: load.all_sending and all_busy(api, release, replicas),
        )
        change()
        what, check = settled
        wait_for(what, lambda: check(before), timeout=300)
        done_at_change = load.done
        wait_for("streams served after it", lambda: load.done >= done_at_change + SLOTS)
    assert load.errors == []
    return before


@pytest.mark.timeout(600)
def test_a_scale_down_under_streaming_load_loses_no_stream(
    api: ApiClient,
    kubeconfig: Path,
    release: str,
    images: Images,
    key: str,
    gateway: str,
    logs: PodLogs,
) -> None:
    apply(kubeconfig, release, model(images, 3))
    wait_for("3 serving pods", lambda: serving(api, release, 3), timeout=300)
    scale = ("scale", "-n", release, f"llmdeployment/{NAME}", "--replicas=1")
    before = under_load(
        api,
        release,
        gateway,
        key,
        logs,
        2 * SLOTS,
        lambda: kubectl(kubeconfig, *scale),
        ("the 2 removed pods drained and gone", lambda _: len(every_pod(api, release)) == 1),
    )
    removed = before - every_pod(api, release)
    assert len(removed) == 2
    draining = logs.drained(removed)
    assert all(draining.values()), draining


@pytest.mark.timeout(600)
def test_a_rollout_under_streaming_load_loses_no_stream(
    api: ApiClient,
    kubeconfig: Path,
    release: str,
    images: Images,
    key: str,
    gateway: str,
    logs: PodLogs,
) -> None:
    apply(kubeconfig, release, model(images, 2))
    wait_for("2 serving pods", lambda: serving(api, release, 2), timeout=300)
    before = under_load(
        api,
        release,
        gateway,
        key,
        logs,
        2 * SLOTS - 1,
        lambda: apply(kubeconfig, release, model(images, 2, revision="main")),  # new pods
        (
            "every old pod drained and gone, the new ones ready",
            lambda old: not every_pod(api, release) & old and serving(api, release, 2),
        ),
    )
    draining = logs.drained(before)
    assert all(draining.values()), draining


def test_helm_uninstall_keeps_the_crds_and_every_llmdeployment(
    api: ApiClient, kubeconfig: Path, release: str
) -> None:
    generation = get(api, release, NAME)["metadata"]["generation"]
    uninstall(kubeconfig)
    wait_for("the chart's pods gone", lambda: not chart_pods(api, "operator"))
    for crd in CRDS:
        kubectl(kubeconfig, "get", crd)
    assert get(api, release, NAME)["metadata"]["generation"] == generation
    kubectl(kubeconfig, "get", "llmtenant/team", "-n", release)
