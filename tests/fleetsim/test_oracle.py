"""The oracle fitted to a goal: its capacity scaled down until its own per-bucket schedule,
replayed with instant starts, reaches the goal; never cheaper than the raw oracle; says
when the goal is out of reach. What a schedule's starts cost at a given startup time."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmfleet_contract.api import LLMDeploymentSpec
from llmfleet_fleetsim import (
    Slo,
    Trace,
    ceiling,
    fewest_flips,
    fleet_profile,
    oracle,
    oracle_at,
    replay_schedule,
    starting_seconds,
    trace_from_rows,
    warm_start,
)
from llmfleet_runtime.simulator import get_profile

SLO = Slo(ttft_s=0.5, tpot_s=0.05)


def poisson(rate: float, seconds: float, seed: int = 7) -> Trace:
    """Poisson arrivals at ``rate`` a second, with mixed prompt sizes."""
    rng = random.Random(seed)
    rows, now = [], 0.0
    while True:
        now += rng.expovariate(rate)
        if now >= seconds:
            return trace_from_rows("poisson", rows)
        rows.append((now, rng.choice((64, 512, 1500)), rng.choice((64, 300))))


def test_the_fitted_oracle_reaches_the_goal_and_costs_no_less(spec: LLMDeploymentSpec) -> None:
    trace = poisson(60, 30)
    profile = fleet_profile("fast", spec)
    gpus = spec.parallelism.gpus_per_group
    # An optimistic capacity (the probe measures ~21 a second): the raw schedule misses.
    raw = oracle(trace, 32.0, gpus)
    assert raw is not None
    raw_attainment, _ = replay_schedule(trace, raw, profile, SLO, gpus)
    assert raw_attainment < 0.99
    fitted = oracle_at(trace, profile, SLO, gpus, 0.99, capacity_rps=32.0)
    assert fitted is not None
    assert fitted.raw == raw
    assert fitted.raw_attainment == pytest.approx(raw_attainment)
    assert fitted.fitted is not None
    assert fitted.scale is not None
    assert fitted.scale < 1
    assert fitted.fitted.capacity_rps == pytest.approx(32.0 * fitted.scale)
    assert fitted.fitted.gpu_hours > raw.gpu_hours
    assert fitted.attainment >= 0.99
    assert replay_schedule(trace, fitted.fitted, profile, SLO, gpus)[0] == fitted.attainment
    assert fitted.replays <= 7


def test_an_unreachable_goal_is_reported_with_the_best_attainment(
    spec: LLMDeploymentSpec,
) -> None:
    trace = poisson(60, 15)
    profile = fleet_profile("fast", spec)
    fitted = oracle_at(trace, profile, SLO, 2, 1.01, capacity_rps=32.0)
    assert fitted is not None
    assert fitted.fitted is None
    assert fitted.scale is None
    assert 0.9 < fitted.attainment <= 1.0
    assert fitted.best_gpu_hours > fitted.raw.gpu_hours
    assert fitted.replays == 4  # k = 1, 1/2, 1/4, 1/8


@pytest.mark.parametrize(
    ("needs", "startup_s", "seconds"),
    [
        ((3, 3, 3), 180.0, 0.0),  # the first bucket's replicas are warm
        ((2, 4, 4), 90.0, 2 * 90.0),  # two replicas started a startup ahead
        ((2, 4, 4), 0.0, 0.0),  # instant starts: the fitted oracle as it is
        ((3, 1, 3), 180.0, 2 * 60.0),  # a gap shorter than a startup: kept, not restarted
        ((3, 1, 1, 1, 1, 3), 120.0, 2 * 120.0),  # a longer gap: stopped, then restarted
        ((1, 2, 1, 2), 30.0, 30.0 + 30.0),  # each of the second replica's runs starts anew
        ((), 60.0, 0.0),
    ],
)
def test_a_schedules_starts_cost_a_startup_or_the_gap_it_bridges(
    needs: tuple[int, ...], startup_s: float, seconds: float
) -> None:
    assert starting_seconds(needs, 60.0, startup_s) == seconds


def test_starts_are_charged_beyond_the_replicas_warm_at_the_start() -> None:
    assert starting_seconds((3, 3), 60.0, 90.0, warm=1) == 2 * 90.0  # a cold fleet starts two
    # A warm replica the first bucket does not need: kept for a gap shorter than a
    # startup, stopped and started again for a longer one.
    assert starting_seconds((1, 2), 60.0, 90.0, warm=2) == 60.0
    assert starting_seconds((1, 2), 60.0, 30.0, warm=2) == 30.0


@pytest.mark.parametrize(
    ("needs", "costs"),
    [
        ((1, 2, 3), (6, 6)),  # a rising load never turns
        ((3, 1, 3), (9, 7)),  # held through the dip, or down and up again (one flip)
        ((1, 3, 1, 3, 1), (13, 11, 11, 9)),  # three turns follow it exactly
        ((), (0, 0)),
    ],
)
def test_fewest_flips_prices_each_number_of_turns(
    needs: tuple[int, ...], costs: tuple[int, ...]
) -> None:
    assert fewest_flips(needs, len(costs) - 1) == costs


def _turns(schedule: tuple[int, ...]) -> int:
    moves = [1 if b > a else -1 for a, b in itertools.pairwise(schedule) if a != b]
    return sum(1 for a, b in itertools.pairwise(moves) if a != b)


@given(st.lists(st.integers(0, 3), min_size=1, max_size=6), st.integers(0, 3))
def test_fewest_flips_is_the_cheapest_schedule_within_its_turns(
    needs: list[int], most: int
) -> None:
    top = max(needs)
    cheapest = [
        min(
            sum(schedule)
            for schedule in itertools.product(*(range(need, top + 1) for need in needs))
            if _turns(schedule) <= flips
        )
        for flips in range(most + 1)
    ]
    assert fewest_flips(needs, most) == tuple(cheapest)


def test_the_ceiling_is_what_requests_alone_attain() -> None:
    """Requests longer than the engine's max model length are refused, and a prompt whose
    prefill alone outlasts the TTFT bound misses it: neither counts, whatever the fleet."""
    profile = get_profile("fast")
    too_long = profile.max_model_len + 1
    rows = [(i * 1.0, 64, 8) for i in range(6)] + [(6.0 + i, too_long, 8) for i in range(2)]
    trace = trace_from_rows("mixed", rows)
    assert ceiling(trace, profile, Slo(10.0, 1.0)) == 6 / 8
    assert ceiling(trace, profile, Slo(1e-9, 1.0)) == 0.0  # no prefill is that fast
    assert ceiling(trace_from_rows("empty", []), profile, Slo(1.0, 1.0)) == 1.0
    assert warm_start([2, 5, 1, 9], 60.0, 90.0) == 5  # the buckets starting within 90 s
    assert warm_start([2, 5, 1, 9], 60.0, 0.0) == 2
