"""The scaling policy's named behaviours, one table row or test each (no cluster, no sleep).

Cases: each signal above its target scales up and names itself with its numbers; the
largest signal wins; the short window sees a step at the next period; panic scales at
once and forbids scale-down for a stable window; the tolerance band holds; starting
replicas count as capacity to come; below targets scales down one step after the
scale-down stabilization window; the scale-up window holds a spike; step limits (count
and percent); min and max bounds (and a lowered max applies at once); missing and stale
samples hold; the request rate is a counter's rate (over the window or the last scrape
interval, across restarts of the counter, from the replicas that served), scales up and
names itself, and counts only with a target; idle scales to zero only when enabled,
after the timeout and with a gateway to wake it (else it keeps one replica and says
why), and a request that started between scrapes is not idle; demand scales from zero;
history keeps only the window; a young history (a restart) does not scale down until it
has watched a scale-down window, yet scales up and obeys a lowered max; a spec without
autoscaling is refused.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from llmfleet_contract.api import LLMDeploymentSpec, Reason
from llmfleet_operator.autoscale import (
    Decision,
    History,
    Observation,
    Recommendation,
    Replica,
    ReplicaPhase,
    Sample,
    decide,
)
from llmfleet_operator.autoscale.signals import Signal, read

NOW = 10_000.0
SLOTS = 100
WATCHED = NOW - 3_600
"""A history that has watched longer than any window (no restart in the way)."""


def spec(**scaling: Any) -> LLMDeploymentSpec:
    autoscaling = {"min_replicas": 1, "max_replicas": 10, **scaling}
    return LLMDeploymentSpec.model_validate(
        {
            "model": {"source": "hf://org/model"},
            "engine": {"max_num_seqs": SLOTS},
            "autoscaling": autoscaling,
        }
    )


def sample(name: str, age: float = 5.0, at: float = NOW, **load: Any) -> Sample:
    values: dict[str, Any] = {
        "waiting": 0,
        "pending_prefill_tokens": None,
        "kv_cache_usage": 0.0,
        "running": 0,
    }
    return Sample(time=at - age, replica=name, **{**values, **load})


def fleet(
    ready: int,
    starting: int = 0,
    current: int | None = None,
    gateway: int | None = None,
    at: float = NOW,
    **load: Any,
) -> Observation:
    """``ready`` replicas that all report ``load`` five seconds ago, plus ``starting``."""
    replicas = [Replica(f"r{i}", ReplicaPhase.READY, NOW - 600) for i in range(ready)]
    replicas += [Replica(f"s{i}", ReplicaPhase.STARTING, NOW - 10) for i in range(starting)]
    return Observation(
        current=ready + starting if current is None else current,
        replicas=tuple(replicas),
        samples=tuple(sample(f"r{i}", at=at, **load) for i in range(ready)),
        gateway_pending=gateway,
    )


def run(observed: Observation, history: History | None = None, **scaling: Any) -> Decision:
    return decide(
        spec(**scaling),
        observed,
        history or History(last_demand_at=NOW, watching_since=WATCHED),
        NOW,
    )


@pytest.mark.parametrize(
    ("load", "scaling", "reason", "words"),
    [
        (
            {"waiting": 6},
            {},
            Reason.PREFILL_QUEUE_ABOVE_TARGET,
            "prefill queue 6.0 per replica > target 4.0",
        ),
        (
            {"kv_cache_usage": 0.95},
            {},
            Reason.KV_CACHE_ABOVE_TARGET,
            "KV cache usage 0.95 per replica > target 0.80",
        ),
        (
            {"running": 90},
            {},
            Reason.SLOTS_ABOVE_TARGET,
            "slots used 0.90 per replica > target 0.80",
        ),
        (
            {"pending_prefill_tokens": 1300},
            {"targets": {"pending_prefill_tokens_per_replica": 1000}},
            Reason.PENDING_TOKENS_ABOVE_TARGET,
            "pending prefill tokens 1300.0 per replica > target 1000.0",
        ),
    ],
)
def test_each_signal_scales_up_and_says_so(
    load: dict[str, Any], scaling: dict[str, Any], reason: Reason, words: str
) -> None:
    decision = run(fleet(2, **load), **scaling)
    assert (decision.desired, decision.reason) == (3, reason)
    assert words in decision.message
    assert decision.changed


def test_requests_queued_at_the_gateway_join_the_prefill_queue() -> None:
    """A saturated replica gets few requests beyond its slots; the rest wait in the gateway."""
    decision = run(fleet(2, waiting=2, gateway=8))
    assert (decision.desired, decision.reason) == (3, Reason.PREFILL_QUEUE_ABOVE_TARGET)
    assert "prefill queue 6.0 per replica > target 4.0" in decision.message
    assert run(fleet(2, waiting=2, gateway=0)).desired == 1  # without them: below target


def counted(name: str, *counts: float, every: float = 15.0) -> tuple[Sample, ...]:
    """Scrapes of one replica ``every`` seconds apart, the last 5 s ago, whose
    requests-started counter reads ``counts``."""
    last = len(counts) - 1
    return tuple(
        sample(name, age=5.0 + (last - i) * every, started=count) for i, count in enumerate(counts)
    )


def rate_of(samples: tuple[Sample, ...], window: float, ready: tuple[str, ...] = ("r0",)) -> Any:
    targets = spec(targets={"requests_per_second": 2.0}).autoscaling.targets  # type: ignore[union-attr]
    by_signal = {r.signal: r for r in read(targets, ready, samples, SLOTS, window, NOW)}
    return by_signal.get(Signal.REQUEST_RATE)


@pytest.mark.parametrize(
    ("counts", "window", "per_second"),
    [
        ((0, 45, 90, 135, 180), 60, 3.0),  # steady: over the window
        ((0, 30, 60, 150), 6, 6.0),  # a short window reads the last scrape interval
        ((0, 30, 60, 150), 60, 150 / 45),  # a window longer than the samples: the oldest
        ((100, 200, 30), 6, 2.0),  # the counter restarted from zero
        ((100, 200, 30, 250), 60, 350 / 45),  # restarted, then passed its old count
    ],
)
def test_the_request_rate_is_a_counters_rate(
    counts: tuple[float, ...], window: float, per_second: float
) -> None:
    reading = rate_of(counted("r0", *counts), window)
    assert reading.per_replica == pytest.approx(per_second)
    assert reading.needed == pytest.approx(per_second / 2.0)


def test_the_request_rate_sums_the_replicas_that_served() -> None:
    # r1 just became ready: one reading, no rate yet. The total is r0's alone, spread
    # over both ready replicas; counting r1 as r0's twin would double the load.
    samples = (*counted("r0", 0, 45, 90), *counted("r1", 7))
    reading = rate_of(samples, 60, ready=("r0", "r1"))
    assert (reading.per_replica, reading.needed) == (pytest.approx(1.5), pytest.approx(1.5))
    assert rate_of(counted("r1", 7), 60) is None  # no replica with two readings: no signal


def test_the_request_rate_scales_up_and_says_so() -> None:
    replicas = tuple(Replica(f"r{i}", ReplicaPhase.READY, NOW - 600) for i in range(2))
    samples = (*counted("r0", 0, 45, 90, 135, 180), *counted("r1", 0, 45, 90, 135, 180))
    decision = run(Observation(2, replicas, samples), targets={"requests_per_second": 2.0})
    assert (decision.desired, decision.reason) == (3, Reason.REQUEST_RATE_ABOVE_TARGET)
    assert "requests/s 3.0 per replica > target 2.0" in decision.message
    untargeted = run(Observation(2, replicas, samples))
    assert untargeted.desired < 3  # the idle signals ask for less
    assert all(r.signal != Signal.REQUEST_RATE for r in untargeted.signals)


def test_pending_tokens_are_ignored_without_a_target() -> None:
    decision = run(fleet(2, waiting=4, pending_prefill_tokens=10**6))
    assert decision.desired == 2
    assert all(r.signal != "pending prefill tokens" for r in decision.signals)


@pytest.mark.parametrize(
    ("load", "desired", "reason"),
    [
        ({"waiting": 22, "kv_cache_usage": 0.7}, 6, Reason.PREFILL_QUEUE_ABOVE_TARGET),
        ({"waiting": 18, "kv_cache_usage": 1.0}, 5, Reason.KV_CACHE_ABOVE_TARGET),
    ],
)
def test_the_largest_signal_wins(load: dict[str, Any], desired: int, reason: Reason) -> None:
    # Four replicas: 22 waiting asks for 5.5 -> 6; KV 4 x 1.0 / 0.8 asks for 5.
    observed = fleet(4)
    per_replica = {"waiting": load["waiting"] // 4, "kv_cache_usage": load["kv_cache_usage"]}
    samples = [sample(r.name, **per_replica) for r in observed.replicas]
    samples[0] = sample(
        "r0", **{**per_replica, "waiting": load["waiting"] - 3 * (load["waiting"] // 4)}
    )
    decision = run(Observation(4, observed.replicas, tuple(samples)))
    assert (decision.desired, decision.reason) == (desired, reason)


def test_short_window_sees_a_step_at_the_next_period() -> None:
    observed = fleet(2)
    old = [sample(r.name, age=55, waiting=0) for r in observed.replicas]
    new = [sample(r.name, age=2, waiting=7) for r in observed.replicas]
    decision = run(Observation(2, observed.replicas, (*old, *new)))
    # The stable window's average asks for 1.75 replicas; the short one for 3.5.
    assert decision.desired == 4
    assert decision.reason == Reason.PREFILL_QUEUE_ABOVE_TARGET


def test_panic_scales_at_once_and_then_forbids_scale_down() -> None:
    scaling = {
        "scale_up": {"stabilization_window_seconds": 120},
        "scale_down": {"stabilization_window_seconds": 0},
    }
    first = run(fleet(2, waiting=14), **scaling)
    # Panic asks for 7; the default step limit (double) lets 4 through.
    assert (first.desired, first.reason, first.panic) == (4, Reason.STEP_LIMITED, True)
    assert "panic: prefill queue 14.0 per replica > target 4.0" in first.message
    assert "at most +2 per period" in first.message
    calm = decide(spec(**scaling), fleet(4, waiting=0, at=NOW + 15), first.history, NOW + 15)
    assert first.history.watching_since == WATCHED
    assert (calm.desired, calm.reason, calm.panic) == (4, Reason.PANIC, True)
    after = decide(spec(**scaling), fleet(4, waiting=0, at=NOW + 61), calm.history, NOW + 61)
    assert after.panic is False
    assert after.desired == 3


@pytest.mark.parametrize("waiting", [4, 3, 5])
def test_within_tolerance_no_change(waiting: int) -> None:
    # 10 replicas at 3.6..4.4 per replica: within 10% of the target.
    observed = fleet(10, waiting=4)
    samples = list(observed.samples)
    samples[0] = sample("r0", waiting=waiting)
    decision = run(Observation(10, observed.replicas, tuple(samples)), max_replicas=20)
    assert (decision.desired, decision.reason) == (10, Reason.WITHIN_TOLERANCE)


def test_starting_replicas_count_as_capacity_to_come() -> None:
    # Two ready replicas with 6 waiting each ask for 3; the third is starting.
    decision = run(fleet(2, starting=1, waiting=6))
    assert decision.desired == 3
    assert not decision.changed


def test_below_targets_scales_down_one_step() -> None:
    decision = run(fleet(4, waiting=0, kv_cache_usage=0.1, running=1))
    assert (decision.desired, decision.reason) == (3, Reason.STEP_LIMITED)
    assert "asks for 1; at most -1 per period" in decision.message


@pytest.mark.parametrize(
    ("age", "desired", "reason"), [(100, 4, Reason.STABILIZING), (400, 3, Reason.STEP_LIMITED)]
)
def test_scale_down_waits_for_its_stabilization_window(
    age: float, desired: int, reason: Reason
) -> None:
    history = History((Recommendation(NOW - age, 4),), last_demand_at=NOW, watching_since=WATCHED)
    decision = run(fleet(4, waiting=0), history)
    assert (decision.desired, decision.reason) == (desired, reason)


def test_scale_up_window_holds_a_spike() -> None:
    history = History((Recommendation(NOW - 30, 2),), last_demand_at=NOW, watching_since=WATCHED)
    decision = run(fleet(2, waiting=6), history, scale_up={"stabilization_window_seconds": 60})
    assert (decision.desired, decision.reason) == (2, Reason.STABILIZING)
    assert "scale-up to 3 held at 2 by the 60s stabilization window" in decision.message


@pytest.mark.parametrize(
    ("ready", "step", "desired"), [(3, 1, 4), (4, "50%", 6), (4, "10%", 5), (4, 0, 5)]
)
def test_step_limits_up(ready: int, step: int | str, desired: int) -> None:
    # Each replica asks for 1.75 x its share: below the panic threshold.
    decision = run(fleet(ready, waiting=7), max_replicas=20, scale_up={"max_step": step})
    assert decision.desired == desired
    assert f"at most +{desired - ready} per period" in decision.message


def test_step_limit_down_in_percent() -> None:
    decision = run(fleet(10, waiting=0), scale_down={"max_step": "30%"})
    assert decision.desired == 7


def test_at_max_replicas() -> None:
    decision = run(fleet(3, waiting=6), max_replicas=3)
    assert (decision.desired, decision.reason) == (3, Reason.AT_MAX_REPLICAS)
    assert "maxReplicas is 3" in decision.message


def test_at_min_replicas() -> None:
    decision = run(fleet(2, waiting=0), min_replicas=2)
    assert (decision.desired, decision.reason) == (2, Reason.AT_MIN_REPLICAS)


def test_a_lowered_max_applies_at_once() -> None:
    assert run(fleet(12, waiting=4), max_replicas=10).desired == 10


@pytest.mark.parametrize(
    ("observed", "names"),
    [
        (Observation(2, fleet(2).replicas, (sample("r0"),)), "r1"),
        (Observation(2, fleet(2).replicas, (sample("r0"), sample("r1", age=61))), "r1"),
        (Observation(2, fleet(2).replicas, ()), "r0, r1"),
    ],
)
def test_missing_or_stale_samples_hold(observed: Observation, names: str) -> None:
    decision = run(observed)
    assert (decision.desired, decision.reason) == (2, Reason.HOLDING_ON_MISSING_METRICS)
    assert f"no sample within 60s from {names}: holding 2 replicas" in decision.message


def test_every_replica_starting_awaits_startup() -> None:
    decision = run(fleet(0, starting=2, gateway=50))
    assert (decision.desired, decision.reason) == (2, Reason.AWAITING_STARTUP)
    assert "every replica is still starting (2 starting" in decision.message


ZERO = {"min_replicas": 0, "scale_to_zero": {"enabled": True, "idle_timeout_seconds": 600}}


@pytest.mark.parametrize(
    ("last_demand", "scaling", "desired"),
    [
        (NOW - 700, ZERO, 0),
        (NOW - 500, ZERO, 1),
        (None, ZERO, 1),
        (NOW - 700, {}, 1),
    ],
)
def test_idle_scales_to_zero_only_when_enabled_and_timed_out(
    last_demand: float | None, scaling: dict[str, Any], desired: int
) -> None:
    observed = fleet(1, gateway=0)
    decision = decide(spec(**scaling), observed, History(last_demand_at=last_demand), NOW)
    assert decision.desired == desired
    if desired == 0:
        assert decision.reason == Reason.IDLE
        assert "no request for 700s (idle timeout 600s)" in decision.message


def test_idle_without_a_gateway_to_wake_it_keeps_one_replica_and_says_why() -> None:
    decision = decide(spec(**ZERO), fleet(3), History(last_demand_at=NOW - 700), NOW)
    assert (decision.desired, decision.reason) == (1, Reason.NO_WAKE_SOURCE)
    assert "no gateway reports llmfleet_gateway_pending_requests" in decision.message


@pytest.mark.parametrize(("counts", "idle"), [((10, 11), False), ((10, 10), True)])
def test_a_request_that_started_between_scrapes_is_not_idle(
    counts: tuple[int, int], idle: bool
) -> None:
    # Nothing waits or runs at either scrape; only the requests-started counter tells.
    replica = Replica("r0", ReplicaPhase.READY, NOW - 900)
    samples = tuple(
        sample("r0", age=age, started=count) for age, count in zip((20, 5), counts, strict=True)
    )
    observed = Observation(1, (replica,), samples, gateway_pending=0)
    decision = decide(spec(**ZERO), observed, History(last_demand_at=NOW - 700), NOW)
    assert decision.desired == (0 if idle else 1)
    assert decision.history.last_demand_at == (NOW - 700 if idle else NOW - 5)


def test_a_running_request_is_not_idle() -> None:
    decision = decide(spec(**ZERO), fleet(1, running=1), History(last_demand_at=NOW - 700), NOW)
    assert decision.desired == 1
    assert decision.history.last_demand_at == NOW - 5


@pytest.mark.parametrize(
    ("observed", "desired", "reason"),
    [
        (Observation(0, gateway_pending=3), 1, Reason.DEMAND_FROM_ZERO),
        (Observation(0, samples=(sample("old", waiting=1),)), 1, Reason.DEMAND_FROM_ZERO),
        (Observation(0, gateway_pending=0), 0, Reason.IDLE),
        (
            Observation(0, samples=(sample("old", age=120, waiting=1),), gateway_pending=0),
            0,
            Reason.IDLE,
        ),
        (Observation(0), 0, Reason.NO_WAKE_SOURCE),  # created at zero, no gateway reports it
    ],
)
def test_from_zero_on_demand(observed: Observation, desired: int, reason: Reason) -> None:
    decision = decide(spec(**ZERO), observed, History(), NOW)
    assert (decision.desired, decision.reason) == (desired, reason)


def test_history_keeps_only_the_longest_window() -> None:
    history = History((Recommendation(NOW - 400, 9), Recommendation(NOW - 100, 4)))
    decision = run(fleet(4, waiting=4), history)
    assert decision.history.recommendations == (
        Recommendation(NOW - 100, 4),
        Recommendation(NOW, 4),
    )


def test_a_spec_without_autoscaling_is_refused() -> None:
    plain = LLMDeploymentSpec.model_validate({"model": {"source": "hf://org/model"}})
    with pytest.raises(ValueError, match=r"no spec\.autoscaling"):
        decide(plain, fleet(1), History(), NOW)


@pytest.mark.parametrize(
    ("watching_since", "desired", "reason"),
    [
        (None, 4, Reason.STABILIZING),  # a restart: nothing watched yet
        (NOW - 200, 4, Reason.STABILIZING),
        (NOW - 300, 3, Reason.STEP_LIMITED),
    ],
)
def test_a_young_history_does_not_scale_down(
    watching_since: float | None, desired: int, reason: Reason
) -> None:
    history = History(last_demand_at=NOW, watching_since=watching_since)
    decision = run(fleet(4, waiting=0), history)
    assert (decision.desired, decision.reason) == (desired, reason)
    if reason == Reason.STABILIZING:
        watched = 0 if watching_since is None else NOW - watching_since
        assert f"held at 4 by the 300s stabilization window (watched for {watched:.0f}s)" in (
            decision.message
        )
    assert decision.history.watching_since == (watching_since or NOW)


def test_a_young_history_still_scales_up_and_obeys_a_lowered_max() -> None:
    assert run(fleet(2, waiting=6), History(last_demand_at=NOW)).desired == 3
    assert run(fleet(12, waiting=0), History(last_demand_at=NOW), max_replicas=10).desired == 10


def _just_ready(load: dict[str, Any], ready_for: float) -> Observation:
    """Two measured replicas with ``load`` and a third ready ``ready_for`` seconds ago,
    not scraped yet."""
    observed = fleet(2, current=3, **load)
    fresh = Replica("new", ReplicaPhase.READY, NOW - ready_for - 60, NOW - ready_for)
    return replace(observed, replicas=(*observed.replicas, fresh))


def test_a_replica_just_ready_without_a_sample_does_not_hold_a_scale_up() -> None:
    decision = run(_just_ready({"waiting": 7}, ready_for=10))
    assert (decision.desired, decision.reason) == (4, Reason.PREFILL_QUEUE_ABOVE_TARGET)


def test_a_replica_just_ready_without_a_sample_forbids_scale_down() -> None:
    decision = run(_just_ready({"waiting": 0}, ready_for=10))
    assert (decision.desired, decision.reason) == (3, Reason.AWAITING_STARTUP)
    assert "new just became ready and has no sample yet: no scale-down" in decision.message


def test_a_replica_just_ready_without_a_sample_is_not_idle() -> None:
    # Idle for longer than the timeout, as far as the measured replicas tell: the new one
    # may already serve, so no scale to zero before it is scraped.
    observed = _just_ready({"waiting": 0}, ready_for=10)
    decision = decide(spec(**ZERO), observed, History(last_demand_at=NOW - 700), NOW)
    assert (decision.desired, decision.reason) == (3, Reason.AWAITING_STARTUP)


def test_a_replica_ready_for_longer_than_the_staleness_without_a_sample_holds() -> None:
    decision = run(_just_ready({"waiting": 7}, ready_for=61))
    assert (decision.desired, decision.reason) == (3, Reason.HOLDING_ON_MISSING_METRICS)
