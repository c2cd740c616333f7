"""The operator's per-LLMDeployment series: conditions and replica counts as the last watch
event showed them, gone with the object, a changed reason replacing the old series; the
autoscaler's live signals as its last period read them; GPU-seconds held, integrated between
watch events."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from llmfleet_contract.exposition import parse
from llmfleet_operator.handlers import GpuSeconds, Metrics
from llmfleet_operator.reconcile import reconcile
from tests.test_autoscaler import T0
from tests.test_reconcile_autoscaling import world


def series(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    page = parse(generate_latest(metrics.registry).decode())
    found = {}
    for name in (
        "llmfleet_operator_llmdeployment_condition",
        "llmfleet_operator_llmdeployment_replicas",
    ):
        for one in page.named(name):
            found[name, tuple(sorted(one.labels.items()))] = one.value
    return found


def condition(kind: str, status: str, reason: str) -> dict[str, str]:
    return {"type": kind, "status": status, "reason": reason, "message": "..."}


def test_conditions_and_replicas_follow_the_last_status() -> None:
    metrics = Metrics()
    status = {
        "conditions": [
            condition("Ready", "True", "AllReplicasReady"),
            condition("ScalingLimited", "True", "AtMaxReplicas"),
            condition("MetricsAvailable", "False", "ScrapeFailed"),
        ],
        "desiredReplicas": 3,
        "replicas": 3,
        "readyReplicas": 2,
    }
    metrics.statuses.status["team", "llama"] = status
    found = series(metrics)
    labels = (("llmdeployment", "llama"), ("namespace", "team"))

    def one(kind: str, status: str, reason: str) -> float:
        key = (*labels, ("reason", reason), ("status", status), ("type", kind))
        return found["llmfleet_operator_llmdeployment_condition", tuple(sorted(key))]

    assert one("Ready", "True", "AllReplicasReady") == 1
    assert one("ScalingLimited", "True", "AtMaxReplicas") == 1
    assert one("MetricsAvailable", "False", "ScrapeFailed") == 0
    replicas = {
        dict(k[1])["state"]: v
        for k, v in found.items()
        if k[0] == "llmfleet_operator_llmdeployment_replicas"
    }
    assert replicas == {"desired": 3, "current": 3, "ready": 2}

    status["conditions"][1] = condition("ScalingLimited", "False", "WithinRange")
    after = series(metrics)
    limited = [k for k in after if ("type", "ScalingLimited") in k[1]]
    assert len(limited) == 1
    assert ("reason", "WithinRange") in limited[0][1]

    del metrics.statuses.status["team", "llama"]
    assert series(metrics) == {}


def test_an_object_without_status_has_zero_replicas_and_no_conditions() -> None:
    metrics = Metrics()
    metrics.statuses.status["team", "fresh"] = {}
    found = series(metrics)
    assert set(found.values()) == {0.0}
    assert len(found) == 3


def test_the_live_signals_of_the_last_period_at_every_scrape() -> None:
    """The status shows signals only when one moves by its step; the metrics show each
    period's reading, its target and the replicas it asks for, and go with the object."""
    kube, source, scaler, name = world()  # 3 replicas, slots used 3, 0 and 2 of 8
    metrics = Metrics()
    metrics.show_signals(scaler.live)
    reconcile(kube, "serving", name, T0, scaler)
    page = parse(generate_latest(metrics.registry).decode())
    slots = {("llmdeployment", name), ("namespace", "serving"), ("signal", "slots_used")}

    def one(metric: str) -> float:
        [found] = [s.value for s in page.named(metric) if set(s.labels.items()) == slots]
        return found

    running = [running for _, running in source.load.values()]
    slots_per_replica = int(kube.objects[("LLMDeployment", name)]["spec"]["engine"]["maxNumSeqs"])
    assert one("llmfleet_operator_signal") == pytest.approx(sum(running) / 3 / slots_per_replica)
    target = one("llmfleet_operator_signal_target")
    assert one("llmfleet_operator_signal_replicas") == pytest.approx(
        sum(running) / slots_per_replica / target
    )
    scaler.forget("serving", name)
    assert parse(generate_latest(metrics.registry).decode()).named("llmfleet_operator_signal") == []


def test_gpu_seconds_integrate_the_groups_held_between_events() -> None:
    now = [0.0]
    held = GpuSeconds(clock=lambda: now[0])
    registry = CollectorRegistry()
    registry.register(held)
    labels = {"namespace": "team", "llmdeployment": "llama"}

    def total() -> float | None:
        return registry.get_sample_value("llmfleet_operator_gpu_seconds_total", labels)

    tp4 = {"spec": {"parallelism": {"tensorParallelSize": 4}}}
    held.observe(("team", "llama"), {**tp4, "status": {"replicas": 2}})  # 8 GPUs from t=0
    now[0] = 10.0
    assert total() == 80.0
    held.observe(("team", "llama"), {**tp4, "status": {"replicas": 1}})  # 4 GPUs from t=10
    now[0] = 15.0
    assert total() == 100.0
    held.observe(("team", "llama"), {"spec": {}, "status": {}})  # scaled to zero at t=15
    now[0] = 60.0
    assert total() == 100.0
    held.observe(("team", "llama"), None)  # deleted
    assert total() is None


def test_gpu_seconds_on_spot_and_the_spot_price_are_their_own_series() -> None:
    now = [0.0]
    held = GpuSeconds(clock=lambda: now[0])
    registry = CollectorRegistry()
    registry.register(held)
    labels = {"namespace": "team", "llmdeployment": "llama"}
    placement = {
        "gpuHourPrice": "4.00",
        "spot": {"nodeSelector": {"s": "1"}, "gpuHourPrice": "1.60"},
    }
    spec = {"parallelism": {"tensorParallelSize": 2}, "placement": placement}
    held.observe(("team", "llama"), {"spec": spec, "status": {"replicas": 3, "spotReplicas": 2}})
    now[0] = 10.0

    def sample(name: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert sample("llmfleet_operator_gpu_seconds_total") == 60.0  # 3 groups of 2 GPUs
    assert sample("llmfleet_operator_spot_gpu_seconds_total") == 40.0  # 2 of them on spot
    assert sample("llmfleet_operator_gpu_hour_price") == 4.0
    assert sample("llmfleet_operator_spot_gpu_hour_price") == 1.6
    held.observe(("team", "llama"), {"spec": {}, "status": {"replicas": 1}})
    assert sample("llmfleet_operator_spot_gpu_hour_price") is None


def test_the_gpu_hour_price_from_the_spec_else_the_operators_default() -> None:
    held = GpuSeconds()
    registry = CollectorRegistry()
    registry.register(held)

    def price(name: str) -> float | None:
        labels = {"namespace": "team", "llmdeployment": name}
        return registry.get_sample_value("llmfleet_operator_gpu_hour_price", labels)

    priced = {"spec": {"placement": {"gpuHourPrice": "3.25"}}}
    held.observe(("team", "h100"), priced)
    held.observe(("team", "any"), {"spec": {}})
    assert (price("h100"), price("any")) == (3.25, None)
    held.default_price = 2.0
    held.observe(("team", "any"), {"spec": {}})
    assert (price("h100"), price("any")) == (3.25, 2.0)
