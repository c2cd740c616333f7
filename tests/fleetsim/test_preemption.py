"""Spot preemptions in the simulated fleet (:mod:`llmfleet_fleetsim.preemption`).

Cases:
- the notices are a Poisson process over the spot replica-seconds: the exposure until the
  next one is spent at the number of spot replicas, and a seed gives the same draws;
- tiers by count: the oldest ``floor`` replicas not under notice are on demand, the rest on
  spot, and the timeline prices the replicas above the floor and those under notice at spot;
- a replica under notice takes no new request; what finishes within the notice is
  answered; what is still in its engine at the end is lost (never answered, counted); a
  replacement starts at once; a starting or idle replica goes at once;
- a replay with a seed is deterministic, a different seed preempts otherwise; lost requests
  are misses, and the count of lost requests is what the notices report;
- at rate 0 the replay is the replay without preemptions, request for request.
"""

from __future__ import annotations

import math

import pytest

from llmfleet_fleetsim import StaticPolicy, run, trace_from_rows
from llmfleet_fleetsim.fleet import Fleet
from llmfleet_fleetsim.outcome import Outcome
from llmfleet_fleetsim.preemption import Preempted, Preemptions, SpotMarket, spot_count
from llmfleet_runtime.simulator import FAST
from tests.fleetsim.conftest import steady


def floor_of(n: int) -> Preemptions:
    return Preemptions(rate_per_hour=0.0, notice_s=0.5, on_demand=lambda _: n)


def test_the_exposure_until_a_notice_is_spent_at_the_spot_count() -> None:
    market = SpotMarket(rate_per_hour=1.0, seed=1)  # one a replica-hour on average
    left = market.left
    assert left > 1.0
    assert market.next_notice(2) == pytest.approx(left / 2)
    market.elapse(0.1)
    assert market.left == pytest.approx(left - 0.2)
    assert market.next_notice(4) == pytest.approx(0.1 + (left - 0.2) / 4)
    assert market.next_notice(0) == math.inf


def test_notices_come_at_the_rate_and_a_seed_repeats_them() -> None:
    draws = [SpotMarket(rate_per_hour=2.0, seed=seed).left for seed in range(2000)]
    assert sum(draws) / len(draws) == pytest.approx(1800.0, rel=0.1)  # replica-seconds
    assert SpotMarket(2.0, seed=7).left == SpotMarket(2.0, seed=7).left
    assert SpotMarket(0.0, seed=7).next_notice(5) == math.inf


def test_the_oldest_replicas_up_to_the_floor_are_on_demand() -> None:
    fleet = Fleet(steady(1.0, 10), FAST, startup_s=5.0, lag_s=0.0, preemptions=floor_of(2))
    replicas = [fleet.create(0.0, warm=True) for _ in range(4)]
    assert fleet.spot_replicas() == replicas[2:]
    fleet.notice(replicas[3], 1.0, 0.5)  # idle: gone at once, replaced
    assert [r.name for r in fleet.spot_replicas()] == ["replica-3", "replica-5"]
    fleet.scrape(1.0)
    assert fleet.timeline[-1].spot == 2  # replica-3 and the replacement, starting
    assert spot_count(uncut=3, noticed=1, floor=2) == 2
    assert spot_count(uncut=1, noticed=0, floor=2) == 0


def test_a_replica_under_notice_takes_no_request_and_loses_what_outlives_it() -> None:
    # Two long requests (1000 tokens at 2 ms a step: 2 s) and a short one on replica-2.
    trace = trace_from_rows("t", [(0.0, 64, 1000), (0.0, 64, 1000), (0.0, 64, 10),
                                  (0.2, 64, 10), (0.3, 64, 10)])  # fmt: skip
    fleet = Fleet(trace, FAST, startup_s=5.0, lag_s=0.0, preemptions=floor_of(1))
    steady_replica, spot = fleet.create(0.0, warm=True), fleet.create(0.0, warm=True)
    for index in range(3):
        fleet.arrive(index, 0.0)
    spot_requests = spot.routed
    fleet.notice(spot, 0.1, 0.5)
    assert spot.draining
    assert len(fleet.alive) == 3  # the replacement, starting
    fleet.arrive(3, 0.2)
    fleet.arrive(4, 0.3)
    assert spot.routed == spot_requests  # both went to replica-1
    assert steady_replica.routed == 5 - spot_requests
    fleet.advance(0.6)
    fleet.preempt(0.6, math.inf)
    assert spot not in fleet.alive
    lost = [i for i, flag in enumerate(fleet.lost) if flag]
    assert lost  # a 2-second answer outlives a notice of 0.5 s
    assert all(fleet.first_token[i] is None for i in lost)
    assert fleet.preempted == {spot.name: Preempted(0.1, spot.name, len(lost))}
    assert fleet.replica_seconds == pytest.approx(0.6)


def test_a_starting_replica_under_notice_goes_at_once() -> None:
    fleet = Fleet(steady(1.0, 10), FAST, startup_s=5.0, lag_s=0.0, preemptions=floor_of(0))
    starting = fleet.create(0.0)
    fleet.notice(starting, 1.0, 30.0)
    assert starting not in fleet.alive
    assert len(fleet.starting) == 1
    assert fleet.preempted["replica-1"] == Preempted(1.0, "replica-1", 0)


def replay(rate: float | None, seed: int = 0, notice_s: float = 0.5) -> Outcome:
    """Answers of 0.4-1.8 s (200-900 tokens) for 15 s on a static fleet of 4, 1 on demand."""
    trace = trace_from_rows("t", [(i * 0.05, 64, 200 + 37 * (i % 20)) for i in range(300)])
    preemptions = None
    if rate is not None:
        preemptions = Preemptions(rate, notice_s, on_demand=lambda _: 1, seed=seed)
    return run(trace, StaticPolicy(4), FAST, startup_s=5.0, scrape_s=1.0, lag_s=0.0,
               preemptions=preemptions)  # fmt: skip


def test_a_replay_with_a_seed_is_deterministic_and_counts_its_losses() -> None:
    rate = 3600.0 / 5  # one notice every 5 s per spot replica
    first, again, other = replay(rate), replay(rate), replay(rate, seed=1)
    assert first.preempted == again.preempted
    assert first.first_token == again.first_token
    assert first.preempted != other.preempted
    assert len(first.preempted) >= 3
    lost = sum(first.lost)
    assert lost == sum(p.lost for p in first.preempted) > 0
    assert all(first.first_token[i] is None for i, flag in enumerate(first.lost) if flag)
    answered = sum(1 for t in first.first_token if t is not None)
    assert answered + lost == 300
    assert all(p.spot == p.total - 1 for p in first.timeline if p.total >= 1)


def test_at_rate_zero_nothing_changes() -> None:
    without, at_zero = replay(None), replay(0.0)
    assert at_zero.first_token == without.first_token
    assert at_zero.last_token == without.last_token
    assert at_zero.replica_seconds == without.replica_seconds
    assert at_zero.end_s == without.end_s
    assert at_zero.preempted == ()
    assert not any(at_zero.lost)
    assert without.lost == ()
    assert [p.total for p in at_zero.timeline] == [p.total for p in without.timeline]
    assert all(p.spot == max(0, p.total - 1) for p in at_zero.timeline)
    assert all(p.spot == 0 for p in without.timeline)
