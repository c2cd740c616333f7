"""Whole replays through :func:`simulate`: a static fleet with room to spare meets the SLO
and costs no less than the oracle; GPU-hours follow the GPUs per replica; speed-up; each
autoscaler reacts to a step load within its period and HPA holds for 300 s after it;
direction flips; the oracle's starts charged at the startup time; the report's JSON."""

from __future__ import annotations

import json

import pytest

from llmfleet_contract.api import LLMDeploymentSpec
from llmfleet_fleetsim import (
    Change,
    Outcome,
    Slo,
    Trace,
    capacity,
    fleet_profile,
    make_policy,
    oracle,
    simulate,
    trace_from_rows,
)
from llmfleet_fleetsim.report import flips
from tests.fleetsim.conftest import steady

SLO = Slo(ttft_s=0.5, tpot_s=0.05)


def step_load(before: float = 1, after: float = 10, at: float = 60, end: float = 105) -> Trace:
    """``before`` requests/s until ``at``, then ``after`` until ``end`` (300-token answers:
    one ``fast`` replica with 4 slots serves about 6 a second)."""
    rows = [(i / before, 64, 300) for i in range(int(before * at))]
    rows += [(at + i / after, 64, 300) for i in range(int(after * (end - at)))]
    return trace_from_rows("step", rows)


def test_static_with_room_meets_the_slo_and_the_oracle_costs_no_more(
    spec: LLMDeploymentSpec,
) -> None:
    trace = steady(rate=5, seconds=120)
    rps = capacity(trace, fleet_profile("fast", spec), SLO, probe_s=10)
    static = make_policy("static", spec, replicas=3)
    report = simulate(trace, spec, static, "fast", 30, SLO, capacity_rps=rps)
    assert report.attainment == 1.0
    assert report.unanswered == report.refused == 0
    assert report.capacity_rps is not None
    assert report.capacity_rps > 5
    assert report.oracle_gpu_hours is not None
    assert report.oracle_gpu_hours <= report.gpu_hours
    # 3 replicas x 2 GPUs (tensor parallel 2) for the whole replay
    assert report.gpu_hours == pytest.approx(3 * 2 * report.duration_s / 3600)
    assert report.mean_replicas == pytest.approx(3)
    assert report.scale_ups == report.scale_downs == report.direction_flips == 0


def test_static_defaults_to_the_oracle_peak(spec: LLMDeploymentSpec) -> None:
    trace = steady(rate=5, seconds=120)
    report = simulate(trace, spec, "static", "fast", 30, SLO, capacity_rps=2.0)
    best = oracle(trace, 2.0, 2)
    assert best is not None
    assert best.peak == 3
    assert report.peak_replicas == 3
    assert report.oracle_gpu_hours == pytest.approx(best.gpu_hours)


def test_the_oracles_starts_are_charged_at_the_replays_startup(spec: LLMDeploymentSpec) -> None:
    # Capacity 2 a second: the first minute's 60 arrivals need 1 replica, the next 45
    # seconds' 450 need 4. From one warm replica, three start a startup (90 s) ahead; from
    # four warm, keeping three idle for the first minute (60 s) is cheaper. 2 GPUs each.
    best = oracle(step_load(), 2.0, 2)
    assert best is not None
    assert best.needs == (1, 4)
    one = simulate(step_load(), spec, "llmfleet", "fast", 90, SLO, capacity_rps=2.0)
    assert one.oracle_gpu_hours == pytest.approx(best.gpu_hours)
    assert one.oracle_started_gpu_hours == pytest.approx(best.gpu_hours + 3 * 90 * 2 / 3600)
    four = simulate(
        step_load(), spec, "static", "fast", 90, SLO, capacity_rps=2.0, initial_replicas=4
    )
    assert four.oracle_started_gpu_hours == pytest.approx(best.gpu_hours + 3 * 60 * 2 / 3600)


def test_capacity_is_where_one_replica_still_meets_the_slo(spec: LLMDeploymentSpec) -> None:
    trace = steady(10, 30, 64, 32)
    profile = fleet_profile("fast", four_slots(spec))
    rps = capacity(trace, profile, SLO, probe_requests=100, probe_s=10)
    spec, one = four_slots(spec), make_policy("static", spec, replicas=1)
    heavy = simulate(steady(rps * 1.3, 30, 64, 32), spec, one, profile, 0, SLO, capacity_rps=rps)
    assert heavy.attainment < 0.9
    one = make_policy("static", spec, replicas=1)
    light = simulate(steady(rps * 0.8, 30, 64, 32), spec, one, profile, 0, SLO, capacity_rps=rps)
    assert light.peak_replicas == 1
    assert light.attainment >= 0.99


def test_speed_and_copies_multiply_the_load(spec: LLMDeploymentSpec) -> None:
    trace = steady(rate=2, seconds=60)
    slow = simulate(trace, spec, "static", "fast", 0, SLO, capacity_rps=5.0)
    fast = simulate(trace, spec, "static", "fast", 0, SLO, capacity_rps=5.0, speed=2)
    assert fast.duration_s == pytest.approx(slow.duration_s / 2, abs=1.0)
    assert fast.settings.speed == 2
    roomy = make_policy("static", spec, replicas=4)  # twice the load, no queue
    dense = simulate(trace, spec, roomy, "fast", 0, SLO, capacity_rps=5.0, copies=2)
    assert dense.requests == 2 * slow.requests
    assert dense.duration_s == pytest.approx(slow.duration_s, abs=1.0)
    assert dense.settings.copies == 2


def four_slots(spec: LLMDeploymentSpec) -> LLMDeploymentSpec:
    engine = spec.engine.model_copy(update={"max_num_seqs": 4})
    return spec.model_copy(update={"engine": engine})


@pytest.mark.parametrize("name", ["llmfleet", "hpa", "keda", "kpa", "llm-d"])
def test_each_autoscaler_adds_capacity_after_a_step(spec: LLMDeploymentSpec, name: str) -> None:
    spec = four_slots(spec)
    targets = {"hpa": 2.0, "kpa": 3.0}
    policy = make_policy(name, spec, targets.get(name))
    report = simulate(step_load(), spec, policy, "fast", 20, SLO, capacity_rps=20.0)
    assert report.scale_ups >= 1
    assert report.peak_replicas > 1
    # the first scale-up comes within one scrape, the lag and one period of the step
    first_up = min(c.time for c in report.changes if c.after > c.before)
    assert 60 < first_up <= 60 + 15 + 2 + policy.period_s


def test_hpa_holds_replicas_for_300_s_after_the_load_ends(spec: LLMDeploymentSpec) -> None:
    spec = four_slots(spec)
    rows = [(i / 10, 64, 300) for i in range(10 * 30)]  # 30 s of heavy load
    rows.append((600.0, 64, 4))  # one late request keeps the replay going
    report = simulate(
        trace_from_rows("burst", rows),
        spec,
        make_policy("hpa", spec, 2.0),
        "fast",
        10,
        SLO,
        capacity_rps=20.0,
    )
    peak_at = min(p.time for p in report.timeline if p.total == report.peak_replicas)
    down_at = min(p.time for p in report.timeline if p.time > peak_at and p.total == 1)
    last_busy = max(p.time for p in report.timeline if p.time < 500 and p.in_flight > 0)
    assert down_at - last_busy >= 300 - 15


def test_flips_count_changes_of_direction() -> None:
    changes = [Change(0, 1, 2), Change(1, 2, 3), Change(2, 3, 2), Change(3, 2, 4), Change(4, 4, 5)]
    outcome = Outcome(0.0, (), (), (), 0.0, tuple(changes), (), ())
    assert flips(outcome.changes) == 2


def test_report_json_has_the_numbers(spec: LLMDeploymentSpec) -> None:
    report = simulate(steady(5, 30), spec, "llmfleet", "fast", 30, SLO, capacity_rps=20.0)
    data = json.loads(report.to_json())
    for key in (
        "attainment",
        "goodput_rps",
        "goodput_tokens_per_s",
        "gpu_hours",
        "oracle_gpu_hours",
        "gpu_hours_vs_oracle",
        "oracle_started_gpu_hours",
        "direction_flips",
        "time_to_capacity_median_s",
        "time_to_capacity_max_s",
        "settings",
    ):
        assert key in data
    assert data["settings"]["policy"] == "llmfleet"
    assert data["settings"]["period_s"] == 15
    assert "timeline" not in data
    assert "attainment" in report.table()


def test_make_policy_refuses_what_it_cannot_build(spec: LLMDeploymentSpec) -> None:
    with pytest.raises(ValueError, match="unknown policy"):
        make_policy("vpa", spec)
    with pytest.raises(ValueError, match="kvCacheThreshold"):
        make_policy("llm-d", spec, 5.0)
    with pytest.raises(ValueError, match=r"needs spec\.autoscaling"):
        make_policy("hpa", spec.model_copy(update={"autoscaling": None}))


def test_initial_replicas_override(spec: LLMDeploymentSpec) -> None:
    report = simulate(
        steady(5, 30), spec, "hpa", "fast", 30, SLO, capacity_rps=20.0, initial_replicas=3
    )
    assert report.timeline[0].total == 3
