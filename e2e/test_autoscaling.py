"""The built-in autoscaler on the local control plane, with simulator engines under load.

Cases: through a real Prometheus that discovers the pods via the API server, a load ramp sent
through the real gateway scales a deployment up to maxReplicas (ScalingLimited says so; the
status shows the startup time it learned) and, once the load ends, down to minReplicas no
sooner than the scale-down stabilization window, each change an Event and a decision with
its reason; on a scale-down the replica with a request in flight stays (pod-deletion-cost)
and its stream finishes (read by direct scrapes, the default source); a stopped Prometheus
holds the replicas with MetricsAvailable=False and a Warning Event, and its return resumes
scaling; a model scales to zero when idle, and a request sent through the real gateway
(discovering the namespace's LLMDeployments and pods) is held while the model has no
replica, wakes it (the gateway's pending-requests gauge, read through Prometheus) and is
answered.

The engines are simulator pods (examples/llama-8b-simulated-autoscaled.yaml: profile
``fast`` slowed 20x, two slots each, a 2 s control period), loaded by clients of the
official ``openai`` client in this process through the real gateway (``traffic.py``), except
in the scale-down case, which sends its one stream straight to the pod it means to keep busy.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from kit import (
    EXAMPLES,
    LocalPrometheus,
    apply,
    apply_ready,
    condition,
    get,
    pods,
    wait_for,
)
from kubernetes.client import ApiClient, CoreV1Api
from localop import LocalOperator, kubectl
from traffic import Streams, complete, gateway

from llmfleet_operator.metrics import DirectScrape, Target

AUTOSCALED = EXAMPLES / "llama-8b-simulated-autoscaled.yaml"


def autoscaled(name: str, **scaling: Any) -> dict[str, Any]:
    """The autoscaled simulator example (2 s period, two slots per engine), renamed, with
    ``scaling`` merged into its ``spec.autoscaling``."""
    manifest: dict[str, Any] = yaml.safe_load(AUTOSCALED.read_text())
    manifest["metadata"]["name"] = name
    manifest["spec"]["autoscaling"].update(scaling)
    return manifest


def status(api: ApiClient, namespace: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = get(api, namespace, name).get("status") or {}
    return found


def patch_scaling(kubeconfig: Path, namespace: str, name: str, **fields: Any) -> None:
    manifest = get_manifest(kubeconfig, namespace, name)
    manifest["spec"]["autoscaling"].update(fields)
    apply(kubeconfig, namespace, manifest)


def get_manifest(kubeconfig: Path, namespace: str, name: str) -> dict[str, Any]:
    shown = kubectl(kubeconfig, "get", "-n", namespace, f"llmdeployment/{name}", "-o", "yaml")
    found: dict[str, Any] = yaml.safe_load(shown.stdout)
    return {
        "apiVersion": found["apiVersion"],
        "kind": found["kind"],
        "metadata": {"name": name},
        "spec": found["spec"],
    }


def decisions(api: ApiClient, namespace: str, name: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = status(api, namespace, name).get("decisions") or []
    return found


def events(api: ApiClient, namespace: str, reason: str) -> list[Any]:
    return [e for e in CoreV1Api(api).list_namespaced_event(namespace).items if e.reason == reason]


def settled(api: ApiClient, namespace: str, name: str, replicas: int) -> bool:
    now = status(api, namespace, name)
    return (
        now.get("desiredReplicas") == replicas
        and now.get("readyReplicas", 0) == replicas
        and len(pods(api, namespace, name)) == replicas
    )


def through(prometheus: LocalPrometheus) -> dict[str, Any]:
    return {"source": "Prometheus", "prometheusUrl": prometheus.url, "stalenessSeconds": 5}


def test_a_load_ramp_scales_up_and_the_end_of_load_scales_down_after_the_window(
    operator: LocalOperator,
    prometheus: LocalPrometheus,
    api_client: ApiClient,
    kubeconfig: Path,
    namespace: str,
    tmp_path: Path,
) -> None:
    manifest = autoscaled("ramp", metrics=through(prometheus))
    window = manifest["spec"]["autoscaling"]["scaleDown"]["stabilizationWindowSeconds"]
    assert window > 6  # the stable window alone would scale down after 6 s
    name = apply_ready(api_client, kubeconfig, namespace, manifest)
    with (
        gateway(kubeconfig, namespace, tmp_path / "gateway.log") as address,
        Streams(address, clients=10, max_tokens=50) as load,
    ):
        wait_for("3 ready replicas under load", lambda: settled(api_client, namespace, name, 3))
        limited = wait_for(
            "ScalingLimited at maxReplicas",
            lambda: (
                condition(get(api_client, namespace, name), "ScalingLimited").get("reason")
                == "AtMaxReplicas"
            ),
            timeout=30,
        )
        assert limited
        # Its replicas were seen created and Ready: the startup time it learned is shown.
        learned = (status(api_client, namespace, name).get("signals") or {}).get(
            "learnedStartupSeconds"
        )
        assert learned is not None
        ended = time.time()  # the clients stop; their last requests finish within ~2 s
    assert load.errors == []
    assert load.done > 0
    ups = decisions(api_client, namespace, name)
    assert [(d["fromReplicas"], d["toReplicas"]) for d in ups][:2] == [(1, 2), (2, 3)]
    assert {d["reason"] for d in ups} <= {
        "PrefillQueueAboveTarget",
        "Panic",
        "StepLimited",
        "AtMaxReplicas",
    }
    scaled = [e.message for e in events(api_client, namespace, "Scaled")]
    assert any(f"Scaled Deployment {name} from 1 to 2: " in m for m in scaled), scaled

    wait_for("back to 1 replica", lambda: settled(api_client, namespace, name, 1), timeout=120)
    downs = [
        d for d in decisions(api_client, namespace, name) if d["toReplicas"] < d["fromReplicas"]
    ]
    assert [(d["fromReplicas"], d["toReplicas"]) for d in downs] == [(3, 2), (2, 1)]
    first_down = datetime.fromisoformat(downs[0]["time"]).timestamp()
    # The window counts from the last high recommendation: up to a period plus the last
    # requests' 2 s after the clients stopped; decision times are whole seconds.
    assert first_down >= ended + window - 2 - 1
    metrics = condition(get(api_client, namespace, name), "MetricsAvailable")
    assert (metrics["status"], metrics["reason"]) == ("True", "MetricsFresh")


def test_scale_down_keeps_the_busy_replica_and_its_stream_finishes(
    operator: LocalOperator, api_client: ApiClient, kubeconfig: Path, namespace: str
) -> None:
    manifest = autoscaled(
        "drain", minReplicas=2, maxReplicas=2, scaleDown={"stabilizationWindowSeconds": 4}
    )
    name = apply_ready(api_client, kubeconfig, namespace, manifest)
    wait_for("2 ready replicas", lambda: settled(api_client, namespace, name, 2))
    running = pods(api_client, namespace, name)
    # A replica ready for less than the stable window goes last whatever its load (it is
    # new, not idle): let both settle so that only the requests in flight decide.
    ready_at = max(
        c.last_transition_time.timestamp()
        for p in running
        for c in p.status.conditions
        if c.type == "Ready"
    )
    time.sleep(max(0.0, ready_at + 7 - time.time()))
    by_ip = {f"{p.status.pod_ip}:8000": p.metadata.name for p in running}
    # The first name: were the costs a tie, the ReplicaSet would remove it.
    busy_endpoint = min(by_ip, key=lambda endpoint: by_ip[endpoint])
    result: list[str] = []
    stream = threading.Thread(target=lambda: result.append(complete(busy_endpoint, 400)))
    stream.start()
    busy = Target("busy", f"http://{busy_endpoint}", by_ip[busy_endpoint], namespace)
    wait_for(
        "the stream running on its engine",
        lambda: any(s.running for s in DirectScrape().samples([busy], time.time()).samples),
        timeout=20,
    )
    try:
        patch_scaling(kubeconfig, namespace, name, minReplicas=1)
        wait_for("1 replica", lambda: settled(api_client, namespace, name, 1), timeout=60)
        [kept] = pods(api_client, namespace, name)
        assert kept.metadata.name == by_ip[busy_endpoint]
        assert kept.metadata.annotations["controller.kubernetes.io/pod-deletion-cost"] == "1"
        [down] = decisions(api_client, namespace, name)
        assert (down["fromReplicas"], down["toReplicas"]) == (2, 1)
    finally:
        stream.join(timeout=60)
    assert result == ["length"]  # every token arrived: nothing lost to the scale-down


def test_a_stopped_prometheus_holds_replicas_and_its_return_resumes_scaling(
    operator: LocalOperator,
    prometheus: LocalPrometheus,
    api_client: ApiClient,
    kubeconfig: Path,
    namespace: str,
) -> None:
    manifest = autoscaled(
        "hold",
        minReplicas=2,
        scaleDown={"stabilizationWindowSeconds": 0},  # nothing but the hold keeps replicas
        metrics=through(prometheus),
    )
    name = apply_ready(api_client, kubeconfig, namespace, manifest)

    def metrics(reason: str) -> bool:
        return condition(get(api_client, namespace, name), "MetricsAvailable").get("reason") == (
            reason
        )

    wait_for("metrics through Prometheus", lambda: metrics("MetricsFresh"), timeout=60)
    prometheus.stop()
    wait_for("MetricsSourceUnreachable", lambda: metrics("MetricsSourceUnreachable"), timeout=30)
    found = condition(get(api_client, namespace, name), "MetricsAvailable")
    assert found["status"] == "False"
    assert prometheus.url in found["message"]
    assert any(
        e.type == "Warning" for e in events(api_client, namespace, "MetricsSourceUnreachable")
    )

    patch_scaling(kubeconfig, namespace, name, minReplicas=1)  # idle: it would scale down
    held_until = time.monotonic() + 15  # without the hold: down within two periods
    while time.monotonic() < held_until:
        assert status(api_client, namespace, name)["desiredReplicas"] == 2
        assert len(pods(api_client, namespace, name)) == 2
        time.sleep(1)

    prometheus.start()
    wait_for("metrics back", lambda: metrics("MetricsFresh"), timeout=60)
    wait_for("scaled down once metrics returned", lambda: settled(api_client, namespace, name, 1))


@pytest.mark.timeout(300)
def test_scale_to_zero_when_idle_and_back_on_a_held_request(
    operator: LocalOperator, api_client: ApiClient, kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    name = "zero"
    with gateway(kubeconfig, namespace, tmp_path / "gateway.log") as address:
        prometheus = LocalPrometheus(kubeconfig, namespace, tmp_path / "prom", [address])
        prometheus.configure()
        prometheus.start()
        try:
            manifest = autoscaled(
                name,
                minReplicas=0,
                maxReplicas=2,
                scaleToZero={"enabled": True, "idleTimeoutSeconds": 30},
                metrics=through(prometheus),
            )
            apply_ready(api_client, kubeconfig, namespace, manifest)
            ready = condition(get(api_client, namespace, name), "Ready")
            assert ready["reason"] == "ScaledToZero"
            assert pods(api_client, namespace, name) == []

            for round_ in range(2):
                # Held by the gateway while the model has no replica, answered once one is up.
                assert complete(address, 5) == "length"
                woke = decisions(api_client, namespace, name)[-1]
                assert (woke["fromReplicas"], woke["toReplicas"], woke["reason"]) == (
                    0,
                    1,
                    "DemandFromZero",
                )
                if round_ == 0:
                    wait_for(
                        "scaled to zero after the idle timeout",
                        lambda: settled(api_client, namespace, name, 0),
                        timeout=120,
                    )
                    idle = decisions(api_client, namespace, name)[-1]
                    assert (idle["toReplicas"], idle["reason"]) == (0, "Idle")
                    ready = condition(get(api_client, namespace, name), "Ready")
                    assert (ready["status"], ready["reason"]) == ("True", "ScaledToZero")
        finally:
            prometheus.stop()


def window(start: datetime, minutes: int) -> dict[str, Any]:
    """A schedule of every day, open from ``start`` (UTC, to the minute) for ``minutes``."""
    end = start + timedelta(minutes=minutes)
    return {"timeZone": "UTC", "start": f"{start:%H:%M}", "end": f"{end:%H:%M}"}


@pytest.mark.timeout(300)
def test_a_schedule_raises_the_floor_while_open_and_lets_it_down_after(
    operator: LocalOperator, api_client: ApiClient, kubeconfig: Path, namespace: str
) -> None:
    """Time is the test's parameter: the window is written around the clock now (open for
    the next hour, then moved two hours ahead), so nothing waits for a time of day."""
    now = datetime.now(UTC)
    peak = {"name": "peak", "minReplicas": 3} | window(now - timedelta(minutes=1), 60)
    name = apply_ready(api_client, kubeconfig, namespace, autoscaled("office", schedules=[peak]))
    wait_for("the floor's 3 replicas", lambda: settled(api_client, namespace, name, 3))
    assert status(api_client, namespace, name)["schedule"] == "peak"
    raised = decisions(api_client, namespace, name)[-1]
    # From 1, or from 0 while a previous test's pods, going, still filled the nodes.
    assert raised["toReplicas"] == 3
    assert raised["message"].endswith("minReplicas is 3 (schedule peak)")
    shown = kubectl(kubeconfig, "get", "llmd", name, "-n", namespace, "-o", "wide")
    header, row = shown.stdout.splitlines()
    column = header.index("SCHEDULE")  # kubectl aligns each value under its header
    assert row[column:].split()[0] == "peak"

    later = peak | window(now + timedelta(hours=2), 60)
    patch_scaling(kubeconfig, namespace, name, schedules=[later])
    wait_for(
        "back to minReplicas after the window",
        lambda: settled(api_client, namespace, name, 1),
        timeout=120,
    )
    assert "schedule" not in status(api_client, namespace, name)


@pytest.mark.timeout(300)
def test_replicas_that_do_not_fit_are_not_asked_for_and_scaling_limited_says_why(
    operator: LocalOperator, api_client: ApiClient, kubeconfig: Path, namespace: str
) -> None:
    """Six replicas of a whole node each (tensor parallel 8) on four 8-GPU nodes: the
    workload asks for what fits, no pod waits Pending, and ScalingLimited names the
    shortfall."""
    manifest = autoscaled("wide", minReplicas=6, maxReplicas=6)
    manifest["spec"]["parallelism"] = {"tensorParallelSize": 8, "gpusPerNode": 8}
    name = apply_ready(api_client, kubeconfig, namespace, manifest)
    limited = wait_for(
        "ScalingLimited Unplaceable",
        lambda: (
            (found := condition(get(api_client, namespace, name), "ScalingLimited"))
            and found.get("reason") == "Unplaceable"
            and found
        ),
    )
    assert limited["status"] == "True"
    assert "more replica(s) wanted" in limited["message"]
    assert "each needs 8 nvidia.com/gpu on one node" in limited["message"]
    desired = status(api_client, namespace, name)["desiredReplicas"]
    assert 1 <= desired < 6
    wait_for("the replicas that fit", lambda: settled(api_client, namespace, name, desired))
    placed = pods(api_client, namespace, name)
    assert all(p.spec.node_name for p in placed)  # none Pending for want of a node
    assert [p for p in placed if p.status.phase == "Pending"] == []
