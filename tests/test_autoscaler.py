"""The operator's autoscaler shell: pods and readings in, status and deletion costs out.

Cases: serving pods become replicas (engines and leaders; workers and terminating pods
left out; ready ones get a metrics target); MetricsAvailable says fresh, stale, missing
or source unreachable with the details, and a target whose series no replica exports; a
loaded fleet scales up with the decision, signals and conditions in the status; a
readiness flap does not teach a slow start (the learned startup is in the status), nor
does a pod already ready when a restarted operator first sees it (the status keeps the
startup across restarts); a period is due once per periodSeconds and a new object under
an old name starts afresh; a source that stops answering holds the count; a scale-down
gives the idle replica the lowest deletion cost; the gateway's pending requests bring a
model back from zero, and without a gateway to wake it an idle model keeps a replica
(ScalingLimited says why); the kept decisions are capped; an object that leaves Builtin
mode loses its scaling conditions; too few GPUs mark ScalingLimited once (not a new
transition each period) until the pods find their GPUs; a Prometheus source is shared per
URL and closed once no object reads it.

The metrics source is an in-memory fake (the seam the real sources implement; they are
tested against real engines and a real Prometheus in test_metrics_sources.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from llmfleet_contract.api import (
    MAX_DECISIONS,
    ConditionStatus,
    ConditionType,
    LLMDeployment,
    LLMDeploymentStatus,
    Reason,
    Signals,
)
from llmfleet_operator.autoscale import Sample
from llmfleet_operator.autoscaler import (
    Autoscaler,
    metrics_verdict,
    serving_replicas,
    without_scaling,
)
from llmfleet_operator.metrics import Miss, MissReason, Readings, Target
from llmfleet_operator.observe import Observed, compute_status
from tests.corpus import ROOT

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def deployment(uid_generation: int = 1, **scaling: Any) -> LLMDeployment:
    manifest = yaml.safe_load((ROOT / "examples/llama-8b.yaml").read_text())
    manifest["metadata"].update({"namespace": "serving", "generation": uid_generation})
    manifest["spec"].pop("replicas", None)
    manifest["spec"]["autoscaling"] = {
        "minReplicas": 1,
        "maxReplicas": 6,
        "periodSeconds": 15,
        "scaleDown": {"stabilizationWindowSeconds": 0, "maxStep": 1},
        **scaling,
    }
    return LLMDeployment.model_validate(manifest)


def pod(
    name: str,
    ready_since: datetime | None = T0 - timedelta(minutes=10),
    role: str = "engine",
    ip: str = "10.0.0.1",
    terminating: bool = False,
    created: datetime = T0 - timedelta(minutes=20),
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": "serving",
        "labels": {"llmfleet.io/role": role},
        "creationTimestamp": created.isoformat().replace("+00:00", "Z"),
    }
    if terminating:
        meta["deletionTimestamp"] = T0.isoformat()
    conditions = []
    if ready_since is not None:
        since = ready_since.isoformat().replace("+00:00", "Z")
        conditions.append({"type": "Ready", "status": "True", "lastTransitionTime": since})
    return {"metadata": meta, "status": {"podIP": ip, "conditions": conditions}}


@dataclass
class FakeSource:
    """Answers each replica with its configured load, or a miss."""

    load: dict[str, tuple[int, int]] = field(default_factory=dict)  # replica -> (waiting, running)
    misses: dict[str, Miss] = field(default_factory=dict)
    pending: int | None = None
    asked: list[list[str]] = field(default_factory=list)
    started_per_second: float = 0.0
    """Each replica's requests-started counter grows this fast (0: not exported)."""

    def samples(self, targets: Sequence[Target], now: float) -> Readings:
        self.asked.append([t.replica for t in targets])
        found, missing = [], []
        for target in targets:
            if target.replica in self.misses:
                missing.append(self.misses[target.replica])
            else:
                waiting, running = self.load.get(target.replica, (0, 0))
                started = self.started_per_second * now if self.started_per_second else None
                found.append(Sample(now, target.replica, waiting, None, 0.1, running, started))
        return Readings(tuple(found), tuple(missing))

    def gateway_pending(self, namespace: str, name: str, now: float) -> int | None:
        return self.pending


def with_status(obj: LLMDeployment, status: LLMDeploymentStatus) -> LLMDeployment:
    return obj.model_copy(update={"status": status})


def condition(status: LLMDeploymentStatus, kind: ConditionType) -> Any:
    return next(c for c in status.conditions or [] if c.type == kind)


def test_serving_pods_become_replicas_and_targets() -> None:
    pods = [
        pod("b-starting", ready_since=None),
        pod("a-ready", ip="10.0.0.7"),
        pod("w-worker", role="worker"),
        pod("c-leaving", terminating=True),
        pod("d-leader", role="leader", ip="10.0.0.9"),
    ]
    found = serving_replicas(pods)
    assert [replica.name for replica, _ in found] == ["a-ready", "b-starting", "d-leader"]
    ready, target = found[0]
    assert ready.phase == "Ready"
    assert ready.ready_at == (T0 - timedelta(minutes=10)).timestamp()
    assert ready.started_at == (T0 - timedelta(minutes=20)).timestamp()
    assert target == Target("a-ready", "http://10.0.0.7:8000", "a-ready", "serving")
    assert found[1][0].phase == "Starting"
    assert found[1][1] is None
    assert found[1][0].ready_at is None


@pytest.mark.parametrize(
    ("misses", "status", "reason", "words"),
    [
        ((), ConditionStatus.TRUE, Reason.METRICS_FRESH, "3 of 3 ready replicas read"),
        (
            (Miss("r1", MissReason.STALE, "newest sample is 90s old"),),
            ConditionStatus.FALSE,
            Reason.METRICS_STALE,
            "r1: newest sample is 90s old",
        ),
        (
            (
                Miss("r1", MissReason.STALE, "old"),
                Miss("r2", MissReason.UNREACHABLE, "GET http://x/metrics: refused"),
            ),
            ConditionStatus.FALSE,
            Reason.METRICS_MISSING,
            "2 of 3 ready replicas not read",
        ),
        (
            tuple(Miss(f"r{i}", MissReason.SOURCE_UNREACHABLE, "down") for i in range(5)),
            ConditionStatus.FALSE,
            Reason.METRICS_SOURCE_UNREACHABLE,
            "(and 2 more)",
        ),
    ],
)
def test_metrics_available_says_why(
    misses: tuple[Miss, ...], status: ConditionStatus, reason: Reason, words: str
) -> None:
    verdict = metrics_verdict(3, misses, "Prometheus at http://p:9090")
    assert (verdict.status, verdict.reason) == (status, reason)
    assert words in verdict.message
    nothing = metrics_verdict(0, (), "their /metrics")
    assert (nothing.status, nothing.reason) == (ConditionStatus.UNKNOWN, Reason.METRICS_MISSING)


@pytest.mark.parametrize(("per_second", "status"), [(0.0, "False"), (2.0, "True")])
def test_a_target_whose_series_no_replica_exports_says_so(per_second: float, status: str) -> None:
    obj = deployment(targets={"requestsPerSecond": 1.0})
    source = FakeSource(started_per_second=per_second)  # 0: the counter is not exported
    period = Autoscaler(source).run(obj, "uid", [pod("p0")], T0)
    metrics = condition(period.status, ConditionType.METRICS_AVAILABLE)
    assert metrics.status == status
    if status == "False":
        assert metrics.reason == Reason.METRICS_MISSING
        assert "none with vllm:time_to_first_token_seconds_count" in metrics.message
        assert "no scale-down" in metrics.message


def test_a_loaded_fleet_scales_up_and_says_why() -> None:
    obj = with_status(deployment(), LLMDeploymentStatus(observed_generation=1, desired_replicas=2))
    source = FakeSource(load={"p0": (12, 8), "p1": (12, 8)})
    scaler = Autoscaler(source)
    period = scaler.run(obj, "uid-1", [pod("p0"), pod("p1", ip="10.0.0.2")], T0)
    assert source.asked == [["p0", "p1"]]
    decision = period.decision
    assert (decision.current, decision.desired) == (2, 4)  # doubling at most per period
    status = period.status
    assert status.desired_replicas == 4
    [record] = status.decisions or []
    assert (record.from_replicas, record.to_replicas) == (2, 4)
    assert record.reason == decision.reason
    assert "prefill queue" in record.message
    assert status.signals is not None
    assert status.signals.prefill_queue == 12
    assert status.signals.sampled_at == T0
    metrics = condition(status, ConditionType.METRICS_AVAILABLE)
    assert (metrics.status, metrics.reason) == ("True", Reason.METRICS_FRESH)
    limited = condition(status, ConditionType.SCALING_LIMITED)
    assert (limited.status, limited.reason) == ("False", Reason.WITHIN_RANGE)
    assert period.deletion_costs == {}


def test_the_request_rate_is_read_across_periods_and_shown() -> None:
    obj = with_status(
        deployment(targets={"requestsPerSecond": 1.0}),
        LLMDeploymentStatus(observed_generation=1, desired_replicas=2),
    )
    scaler = Autoscaler(FakeSource(started_per_second=1.5))
    pods = [pod("p0"), pod("p1", ip="10.0.0.2")]
    first = scaler.run(obj, "uid-1", pods, T0)
    # One reading per replica: no rate yet, so the idle other signals cannot scale down.
    assert (first.decision.desired, first.decision.reason) == (
        2,
        Reason.HOLDING_ON_MISSING_METRICS,
    )
    assert "request rate is unknown" in first.decision.message
    assert first.status.signals is not None
    assert first.status.signals.requests_per_second is None
    second = scaler.run(obj, "uid-1", pods, T0 + timedelta(seconds=15))
    assert second.status.signals is not None
    assert second.status.signals.requests_per_second == 1.5
    assert (second.decision.desired, second.decision.reason) == (
        3,
        Reason.REQUEST_RATE_ABOVE_TARGET,
    )


def test_a_readiness_flap_does_not_read_as_a_slow_start() -> None:
    obj = with_status(deployment(), LLMDeploymentStatus(observed_generation=1, desired_replicas=1))
    scaler = Autoscaler(FakeSource())
    first = T0 - timedelta(minutes=19)  # created at T0 - 20 min: a 60 s start
    scaler.run(obj, "uid", [pod("p0", ready_since=None)], first - timedelta(seconds=15))
    scaler.run(obj, "uid", [pod("p0", ready_since=first)], T0)
    flapped = T0 + timedelta(seconds=10)  # unready a moment, ready again
    period = scaler.run(obj, "uid", [pod("p0", ready_since=flapped)], T0 + timedelta(seconds=15))
    assert period.decision.history.startup_seconds == 60
    assert period.status.signals is not None
    assert period.status.signals.learned_startup_seconds == 60


@pytest.mark.parametrize(("before", "after"), [(90.0, 82.5), (None, 60.0)])
def test_after_a_restart_the_startup_comes_from_the_status_not_from_ready_pods(
    before: float | None, after: float
) -> None:
    # A new process sees p0 ready since a flap a minute ago, 19 minutes after its creation.
    status = LLMDeploymentStatus(observed_generation=1, desired_replicas=1)
    if before is not None:
        status = status.model_copy(update={"signals": Signals(learned_startup_seconds=before)})
    scaler = Autoscaler(FakeSource())
    flapped = pod("p0", ready_since=T0 - timedelta(minutes=1))
    period = scaler.run(with_status(deployment(), status), "uid", [flapped], T0)
    assert period.decision.history.startup_seconds == before
    learned = period.status.signals.learned_startup_seconds if period.status.signals else None
    assert learned == before
    # A start that ends after this process's first period is learned: p1 took 60 s.
    started = pod("p1", ready_since=T0 + timedelta(seconds=10), created=T0 - timedelta(seconds=50))
    later = scaler.run(
        with_status(deployment(), period.status),
        "uid",
        [flapped, started],
        T0 + timedelta(seconds=15),
    )
    assert later.decision.history.startup_seconds == after  # a faster start: a quarter


def test_one_period_per_period_seconds_and_a_new_object_starts_afresh() -> None:
    obj = deployment()
    scaler = Autoscaler(FakeSource())
    assert scaler.due_in(obj, "uid-1", T0.timestamp()) == 0
    scaler.run(obj, "uid-1", [pod("p0")], T0)
    assert scaler.due_in(obj, "uid-1", T0.timestamp() + 5) == 10
    assert scaler.due_in(obj, "uid-2", T0.timestamp() + 5) == 0  # deleted and made again
    scaler.forget("serving", obj.metadata.name)
    assert scaler.due_in(obj, "uid-1", T0.timestamp() + 5) == 0


def test_a_silent_source_holds_the_count_and_says_so() -> None:
    obj = with_status(deployment(), LLMDeploymentStatus(observed_generation=1, desired_replicas=3))
    source = FakeSource(load={"p0": (0, 1)})
    scaler = Autoscaler(source)
    scaler.run(obj, "uid", [pod("p0"), pod("p1"), pod("p2")], T0 - timedelta(seconds=2))
    down = Miss("p0", MissReason.SOURCE_UNREACHABLE, "Prometheus at http://p:9090 did not answer")
    source.misses = {"p0": down, "p1": down, "p2": down}
    # The samples of 2 s ago are fresh by stalenessSeconds, but the source is down now.
    period = scaler.run(obj, "uid", [pod("p0"), pod("p1"), pod("p2")], T0)
    assert (period.decision.desired, period.decision.reason) == (
        3,
        Reason.HOLDING_ON_MISSING_METRICS,
    )
    assert period.status.decisions is None
    metrics = condition(period.status, ConditionType.METRICS_AVAILABLE)
    assert (metrics.status, metrics.reason) == ("False", Reason.METRICS_SOURCE_UNREACHABLE)
    assert "did not answer" in metrics.message


@pytest.mark.parametrize("nodes", [1, 2])
def test_scale_down_makes_the_least_busy_replica_the_cheapest_to_delete(nodes: int) -> None:
    obj = with_status(deployment(), LLMDeploymentStatus(observed_generation=1, desired_replicas=3))
    if nodes > 1:  # a LeaderWorkerSet removes its highest-numbered groups: no cost to set
        parallelism = {"tensorParallelSize": 8, "pipelineParallelSize": nodes, "gpusPerNode": 8}
        spec = obj.spec.model_dump(by_alias=True, exclude_none=True)
        spec["parallelism"] = parallelism
        obj = obj.model_copy(update={"spec": type(obj.spec).model_validate(spec)})
    source = FakeSource(load={"p0": (0, 2), "p1": (0, 0), "p2": (0, 1)})
    pods = [pod("p0"), pod("p1"), pod("p2")]
    period = Autoscaler(source).run(obj, "uid", pods, T0)
    assert period.decision.desired == 2
    assert period.deletion_costs == ({"p1": 0, "p2": 1, "p0": 2} if nodes == 1 else {})


def test_pending_requests_at_the_gateway_scale_from_zero() -> None:
    obj = with_status(
        deployment(minReplicas=0, scaleToZero={"enabled": True, "idleTimeoutSeconds": 60}),
        LLMDeploymentStatus(observed_generation=1, desired_replicas=0),
    )
    source = FakeSource()
    scaler = Autoscaler(source)
    unreachable = scaler.run(obj, "uid", [], T0)  # no gateway reports the model
    assert (unreachable.decision.desired, unreachable.decision.reason) == (
        0,
        Reason.NO_WAKE_SOURCE,
    )
    limited = condition(unreachable.status, ConditionType.SCALING_LIMITED)
    assert (limited.status, limited.reason) == ("True", Reason.NO_WAKE_SOURCE)
    source.pending = 0
    idle = scaler.run(obj, "uid", [], T0 + timedelta(seconds=15))
    assert (idle.decision.desired, idle.decision.reason) == (0, Reason.IDLE)
    source.pending = 2
    woken = scaler.run(obj, "uid", [], T0 + timedelta(seconds=30))
    assert (woken.decision.desired, woken.decision.reason) == (1, Reason.DEMAND_FROM_ZERO)


def test_idle_with_no_gateway_to_wake_it_keeps_a_replica_and_says_why() -> None:
    obj = with_status(
        deployment(minReplicas=0, scaleToZero={"enabled": True, "idleTimeoutSeconds": 30}),
        LLMDeploymentStatus(observed_generation=1, desired_replicas=1),
    )
    scaler = Autoscaler(FakeSource())  # no gateway reports the model's queue: pending None
    for seconds in (0, 15, 30, 45):
        period = scaler.run(obj, "uid", [pod("p0")], T0 + timedelta(seconds=seconds))
    assert (period.decision.desired, period.decision.reason) == (1, Reason.NO_WAKE_SOURCE)
    limited = condition(period.status, ConditionType.SCALING_LIMITED)
    assert (limited.status, limited.reason) == ("True", Reason.NO_WAKE_SOURCE)
    assert "nothing would wake the model from zero" in limited.message


def test_decisions_are_capped_newest_last() -> None:
    obj = with_status(deployment(), LLMDeploymentStatus(observed_generation=1, desired_replicas=1))
    scaler = Autoscaler(FakeSource(load={f"p{i}": (40, 8) for i in range(6)}))
    status = obj.status
    for step in range(MAX_DECISIONS + 3):
        count = status.desired_replicas if status else 1
        pods = [pod(f"p{i}") for i in range(count)]
        period = scaler.run(obj, "uid", pods, T0 + timedelta(seconds=15 * step))
        status = period.status
        obj = with_status(obj, status.model_copy(update={"desired_replicas": 1}))
    assert status is not None
    assert len(status.decisions or []) == MAX_DECISIONS


def test_leaving_builtin_mode_drops_the_scaling_conditions() -> None:
    obj = with_status(deployment(), LLMDeploymentStatus(observed_generation=1, desired_replicas=2))
    status = Autoscaler(FakeSource()).run(obj, "uid", [pod("p0"), pod("p1")], T0).status
    assert {c.type for c in status.conditions or []} >= {
        ConditionType.METRICS_AVAILABLE,
        ConditionType.SCALING_LIMITED,
    }
    plain = without_scaling(status)
    assert plain.conditions is None
    assert plain.signals is None
    assert plain.decisions == status.decisions


def test_missing_gpus_mark_scaling_limited_once_until_they_are_found() -> None:
    obj = with_status(deployment(), LLMDeploymentStatus(observed_generation=1, desired_replicas=3))
    stuck = pod("p2", ready_since=None)
    stuck["status"]["conditions"] = [
        {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/4 nodes are available: 4 Insufficient nvidia.com/gpu.",
        }
    ]
    workload = {
        "metadata": {"generation": 1},
        "status": {"observedGeneration": 1, "replicas": 3, "readyReplicas": 2},
    }
    scaler = Autoscaler(FakeSource(load={"p0": (12, 2), "p1": (12, 2)}))
    pods = [pod("p0"), pod("p1"), stuck]
    since = []
    for step in range(3):  # each period: the autoscaler, then the reconcile's status
        now = T0 + timedelta(seconds=15 * step)
        period = scaler.run(obj, "uid", pods, now)
        status = compute_status(with_status(obj, period.status), Observed([workload], pods), now)
        limited = condition(status, ConditionType.SCALING_LIMITED)
        assert (limited.status, limited.reason) == ("True", Reason.BLOCKED_BY_GPUS)
        assert "Insufficient" not in limited.message  # observe's words, not the scheduler's
        assert "2 of " in limited.message
        since.append(limited.last_transition_time)
        obj = with_status(obj, status)
    assert since == [T0, T0, T0]  # one transition, not one per period

    found = [pod("p0"), pod("p1"), pod("p2")]
    ready = {**workload, "status": {**workload["status"], "readyReplicas": 3}}
    now = T0 + timedelta(seconds=60)
    period = scaler.run(obj, "uid", found, now)
    status = compute_status(with_status(obj, period.status), Observed([ready], found), now)
    limited = condition(status, ConditionType.SCALING_LIMITED)
    assert (limited.status, limited.reason) == ("False", Reason.WITHIN_RANGE)


@dataclass
class ClosingSource(FakeSource):
    url: str = ""
    closed: bool = False

    def close(self) -> None:
        self.closed = True


def test_a_prometheus_source_lives_while_an_object_reads_it() -> None:
    made: list[ClosingSource] = []

    def prometheus(url: str, staleness: float) -> ClosingSource:
        made.append(ClosingSource(url=url))
        return made[-1]

    def reading(name: str, url: str) -> LLMDeployment:
        obj = deployment(metrics={"source": "Prometheus", "prometheusUrl": url})
        return obj.model_copy(update={"metadata": obj.metadata.model_copy(update={"name": name})})

    scaler = Autoscaler(FakeSource(), prometheus=prometheus)
    scaler.run(reading("a", "http://p1:9090"), "uid-a", [pod("p0")], T0)
    scaler.run(reading("b", "http://p1:9090"), "uid-b", [pod("p0")], T0)
    assert [s.url for s in made] == ["http://p1:9090"]  # one source per URL
    scaler.run(reading("a", "http://p2:9090"), "uid-a", [pod("p0")], T0)
    assert [(s.url, s.closed) for s in made] == [
        ("http://p1:9090", False),
        ("http://p2:9090", False),
    ]
    scaler.forget("serving", "b")  # nobody reads p1 any more
    assert [(s.url, s.closed) for s in made] == [
        ("http://p1:9090", True),
        ("http://p2:9090", False),
    ]
    scaler.forget("serving", "a")
    assert all(s.closed for s in made)
