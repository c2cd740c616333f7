"""The real gateway under streaming load while the pods behind it change (local control plane).

Cases: clients of the official ``openai`` client stream completions one after another through
the gateway (run with the chart's gateway service account) while (1) ``kubectl scale`` takes
the LLMDeployment from 3 replicas to 1, and (2) a new model revision rolls every pod; no
stream is lost: each one ends with all its tokens, its finish reason and its usage chunk.
Each removed pod's log shows streams still in flight on it when SIGTERM came, after its
preStop sleep: the test covers the engine's drain, not only the gateway's routing away.

Why nothing is lost: the gateway drops a pod from its pool as soon as it starts terminating
(discovery watches pods) while the streams already on it go on; the pod serves through its
preStop sleep, then the engine drains its in-flight requests on SIGTERM (shutdown timeout:
``spec.serving.drainDeadlineSeconds``, within the pod's grace period) and exits.

The engines are simulator pods (profile ``fast`` slowed 20x, four slots each); a stream of
300 tokens lasts about 12 s, longer than the 5 s preStop sleep, and the clients start one by
one over that time, so each pod always has a stream that began less than 7 s ago.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kit import EXAMPLES, apply, apply_ready, pods, ready, wait_for
from kubernetes.client import ApiClient, CoreV1Api
from localop import LocalOperator, kubectl
from traffic import Streams, drained, gateway

from llmfleet_operator.metrics import DirectScrape, Target

SLOTS = 4
TOKENS = 300
STREAM_SECONDS = 12  # one 40 ms decode step per token


def streaming(name: str, replicas: int) -> dict[str, Any]:
    """The slowed simulator example with ``replicas`` fixed (no autoscaler) and four slots."""
    manifest: dict[str, Any] = yaml.safe_load(
        (EXAMPLES / "llama-8b-simulated-autoscaled.yaml").read_text()
    )
    manifest["metadata"]["name"] = name
    del manifest["spec"]["autoscaling"]
    manifest["spec"]["replicas"] = replicas
    manifest["spec"]["engine"]["maxNumSeqs"] = SLOTS
    return manifest


def every_pod(api: ApiClient, namespace: str, name: str) -> set[str]:
    """The names of the LLMDeployment's pods, terminating ones included."""
    found = CoreV1Api(api).list_namespaced_pod(
        namespace, label_selector=f"llmfleet.io/deployment={name}"
    )
    return {p.metadata.name for p in found.items}


def all_busy(api: ApiClient, namespace: str, name: str, replicas: int) -> bool:
    """``replicas`` serving pods, each decoding streams (read from its own /metrics)."""
    serving = pods(api, namespace, name)
    targets = [
        Target(p.metadata.name, f"http://{p.status.pod_ip}:8000", p.metadata.name, namespace)
        for p in serving
        if p.status.pod_ip
    ]
    samples = DirectScrape().samples(targets, time.time()).samples
    return len(serving) == replicas and len(samples) == replicas and all(s.running for s in samples)


def drains(state: Path, namespace: str, removed: set[str]) -> dict[str, int | None]:
    """Requests in flight on each removed pod when SIGTERM reached it (from the pod logs in
    the control plane's ``state`` folder)."""
    folder = state / "pods" / namespace
    return {pod: drained(folder / pod / "engine.log") for pod in sorted(removed)}


@pytest.mark.timeout(180)
def test_a_scale_down_under_streaming_load_loses_no_stream(
    operator: LocalOperator,
    api_client: ApiClient,
    kubeconfig: Path,
    namespace: str,
    tmp_path: Path,
) -> None:
    name = apply_ready(api_client, kubeconfig, namespace, streaming("shrink", 3))
    wait_for("3 serving pods", lambda: len(pods(api_client, namespace, name)) == 3)
    before = every_pod(api_client, namespace, name)
    with (
        gateway(kubeconfig, namespace, tmp_path / "gateway.log") as address,
        Streams(address, 2 * SLOTS, TOKENS, spread=STREAM_SECONDS) as load,
    ):
        wait_for(
            "every client sending, streams on every pod",
            lambda: load.all_sending and all_busy(api_client, namespace, name, 3),
        )
        scaled = kubectl(
            kubeconfig, "scale", "-n", namespace, f"llmdeployment/{name}", "--replicas=1"
        )
        assert scaled.returncode == 0, scaled.stderr
        wait_for(
            "the 2 removed pods drained and gone",
            lambda: len(every_pod(api_client, namespace, name)) == 1,
            timeout=60,
        )
        [kept] = every_pod(api_client, namespace, name)
        done_at_scale = load.done
        wait_for("streams served by the one left", lambda: load.done >= done_at_scale + SLOTS)
    assert load.errors == []
    removed = before - {kept}
    assert len(removed) == 2
    draining = drains(operator.state, namespace, removed)
    assert all(count for count in draining.values()), draining
    assert ready(api_client, namespace, name)


@pytest.mark.timeout(180)
def test_a_rollout_under_streaming_load_loses_no_stream(
    operator: LocalOperator,
    api_client: ApiClient,
    kubeconfig: Path,
    namespace: str,
    tmp_path: Path,
) -> None:
    manifest = streaming("roll", 2)
    name = apply_ready(api_client, kubeconfig, namespace, manifest)
    wait_for("2 serving pods", lambda: len(pods(api_client, namespace, name)) == 2)
    before = every_pod(api_client, namespace, name)
    with (
        gateway(kubeconfig, namespace, tmp_path / "gateway.log") as address,
        Streams(address, 2 * SLOTS - 1, TOKENS, spread=STREAM_SECONDS) as load,
    ):
        wait_for(
            "every client sending, streams on every pod",
            lambda: load.all_sending and all_busy(api_client, namespace, name, 2),
        )
        manifest["spec"]["model"]["revision"] = "main"  # a new pod template: new pods
        apply(kubeconfig, namespace, manifest)
        wait_for(
            "every old pod drained and gone, the new ones ready",
            lambda: (
                not every_pod(api_client, namespace, name) & before
                and ready(api_client, namespace, name)
                and len(pods(api_client, namespace, name)) == 2
            ),
            timeout=90,
        )
        done_at_rollout = load.done
        wait_for("streams served by the new pods", lambda: load.done >= done_at_rollout + SLOTS)
    assert load.errors == []
    draining = drains(operator.state, namespace, before)
    assert all(count for count in draining.values()), draining
