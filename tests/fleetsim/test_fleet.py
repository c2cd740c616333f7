"""The simulated fleet: the gateway's router among ready replicas (pending prefill tokens
first, then requests; the gateway's own accounting, the engine metrics of the last scrape
and their age; the profile's speeds), the gateway queue (no replica ready, or every one
saturated until a request finishes), startup (serving only once Ready), GPU time of
starting and draining replicas, victims on scale-down, the metrics pipeline's scrape
interval and lag (the requests-started counter and the router's pending prefill tokens
each sample carries), and scale-up timing."""

from __future__ import annotations

import dataclasses

import pytest

from llmfleet_contract.api import LLMDeploymentSpec
from llmfleet_fleetsim import Change, FleetView, LlmfleetPolicy, Slo, run, trace_from_rows
from llmfleet_fleetsim.fleet import Fleet, routing_settings
from llmfleet_gateway.routing import ReplicaLoad, RoutingSettings
from llmfleet_operator.autoscale import Replica, ReplicaPhase, Sample, deletion_order
from llmfleet_runtime.simulator import CALIBRATED, FAST
from llmfleet_runtime.simulator.perf import decode_ms, prefill_ms
from tests.fleetsim.conftest import Scripted, steady


def fleet_with(loads: list[int], prompt: int = 64) -> Fleet:
    """A fleet of warm replicas sent ``loads`` long requests each at 0 (``prompt`` tokens)."""
    trace = trace_from_rows("t", [(0.0, prompt, 1000)] * (sum(loads) + 2))
    fleet = Fleet(trace, FAST, startup_s=30.0, lag_s=0.0)
    replicas = [fleet.create(0.0, warm=True) for _ in loads]
    index = 0
    for replica, load in zip(replicas, loads, strict=True):
        for _ in range(load):
            replica.send(index, prompt, 1000, 0.0)
            index += 1
    return fleet


def test_router_picks_the_fewest_pending_prefill_tokens_then_requests() -> None:
    fleet = fleet_with([2, 0, 1])
    assert fleet.route(3, 0.0)
    assert [r.in_flight() for r in fleet.alive] == [2, 1, 1]
    assert fleet.route(4, 0.0)  # a tie (64 tokens, 1 request each): the smaller name
    assert [r.in_flight() for r in fleet.alive] == [2, 2, 1]


def test_router_prefers_a_busy_replica_past_its_prefills_to_one_prefilling() -> None:
    # replica-1 decodes three requests (first tokens out); replica-2 has one long prompt
    # waiting for its first token: the least-in-flight router sent the next to replica-2.
    trace = trace_from_rows("t", [(0.0, 64, 1000)] * 3 + [(0.0, 1500, 10), (0.0, 64, 10)])
    fleet = Fleet(trace, FAST, startup_s=30.0, lag_s=0.0)
    busy, prefilling = fleet.create(0.0, warm=True), fleet.create(0.0, warm=True)
    for index in range(3):
        busy.send(index, 64, 1000, 0.0)
    fleet.advance(0.1)
    assert busy.pending_prefill_tokens() == 0
    prefilling.send(3, 1500, 10, 0.1)
    assert prefilling.pending_prefill_tokens() == 1500
    assert fleet.route(4, 0.1)
    assert [r.in_flight() for r in fleet.alive] == [4, 1]


def test_router_reads_the_last_scrape_and_its_age() -> None:
    fleet = fleet_with([3, 0])
    replica = fleet.alive[0]
    assert replica.load(1.0) == ReplicaLoad("replica-1", FAST.max_num_seqs, in_flight=3,
                                            pending_prefill_tokens=192)  # fmt: skip
    fleet.advance(2.0)
    fleet.scrape(2.0)
    load = replica.load(2.5)
    assert (load.waiting, load.running, load.metrics_age_s) == (0, 3, 0.5)
    assert load.kv_cache_usage == replica.engine.kv_usage() > 0


def test_routing_settings_come_from_the_profile() -> None:
    profile = CALIBRATED["h100-llama2-70b-tp4"].with_overrides(max_num_seqs=64)
    settings = routing_settings(profile)
    chunk = profile.max_num_batched_tokens
    assert settings.prefill_tokens_per_s == pytest.approx(chunk / prefill_ms(profile, chunk) * 1000)
    assert settings.decode_step_s == pytest.approx(decode_ms(profile, 64) / 1000)
    assert settings.max_in_flight == RoutingSettings().max_in_flight


def test_saturated_replicas_queue_at_the_gateway_until_a_request_finishes() -> None:
    # One replica taking 2 requests at most: the third waits for the first to finish.
    trace = trace_from_rows("t", [(0.0, 64, 4), (0.0, 64, 400), (0.0, 64, 4)])
    fleet = Fleet(trace, FAST, startup_s=1.0, lag_s=0.0, routing=RoutingSettings(max_in_flight=2))
    fleet.create(0.0, warm=True)
    for index in range(3):
        fleet.arrive(index, 0.0)
    assert list(fleet.gateway) == [2]
    assert fleet.saturated
    end = fleet.next_step_end()
    while fleet.gateway:
        fleet.advance(end)
        sent_at, end = end, fleet.next_step_end()
    assert fleet.alive[0].in_flight() == 2
    assert sent_at == fleet.last_token[0]  # sent the instant request 0 finished
    assert fleet.last_token[1] is None


def test_a_replay_sends_a_queued_request_when_a_slot_frees() -> None:
    # Nothing else happens for 100 s: the engine's step end wakes the queue.
    trace = trace_from_rows("t", [(0.0, 64, 4), (0.0, 64, 4)])
    policy = Scripted(plan=[], initial_replicas=1, period_s=100.0)
    one = RoutingSettings(max_in_flight=1)
    outcome = run(trace, policy, FAST, startup_s=1.0, scrape_s=100.0, lag_s=0.0, routing=one)
    first, last = outcome.first_token[1], outcome.last_token[0]
    assert first is not None
    assert last is not None
    assert last < first < last + 0.1


def test_router_skips_starting_and_draining_replicas() -> None:
    fleet = fleet_with([3, 0])
    fleet.alive[1].draining = True
    fleet.create(0.0)  # starting: not a candidate
    assert fleet.route(3, 0.0)
    assert [r.in_flight() for r in fleet.alive] == [4, 0, 0]
    assert fleet.route(4, 0.0) is True


def test_requests_wait_at_the_gateway_until_a_replica_is_ready() -> None:
    trace = trace_from_rows("t", [(0.5, 64, 4), (2.0, 64, 4)])
    policy = Scripted(plan=[(1.0, 1)], initial_replicas=0)
    outcome = run(trace, policy, FAST, startup_s=10.0, scrape_s=1.0, lag_s=0.0)
    first = outcome.first_token
    assert first[0] is not None
    assert first[0] > 11.0  # created at 1, Ready at 11
    assert first[1] is not None
    assert first[1] > 11.0
    assert outcome.timeline[5].gateway_pending == 2
    assert outcome.timeline[5].in_flight == 2


def test_a_replica_costs_from_creation_and_serves_after_startup() -> None:
    trace = trace_from_rows("t", [(0.0, 64, 4), (30.0, 64, 4)])
    policy = Scripted(plan=[(2.0, 2)], initial_replicas=1, period_s=2.0)
    outcome = run(trace, policy, FAST, startup_s=20.0, scrape_s=5.0, lag_s=0.0)
    # replica-1 lives 0..end, replica-2 from 2 (not 22) to the end.
    assert outcome.replica_seconds == pytest.approx(2 * outcome.end_s - 2.0)
    starting = [v for v in policy.seen if v.current == 2 and len(v.ready) == 1]
    assert starting
    assert all(any(r.phase is ReplicaPhase.STARTING for r in v.replicas) for v in starting)
    assert outcome.capacity_delays == (22.0,)  # burst first seen at the scrape at 0


def test_a_cancelled_start_costs_until_it_is_removed() -> None:
    trace = trace_from_rows("t", [(0.0, 64, 4), (20.0, 64, 4)])
    policy = Scripted(plan=[(2.0, 2), (6.0, 1)], initial_replicas=1, period_s=2.0)
    outcome = run(trace, policy, FAST, startup_s=100.0, scrape_s=5.0, lag_s=0.0)
    assert outcome.replica_seconds == pytest.approx(outcome.end_s + 4.0)
    assert outcome.capacity_delays == ()  # it never served


def test_a_draining_replica_finishes_its_requests_and_costs_until_empty() -> None:
    # Two long requests at 0 land on both replicas; at 1 s one replica must go.
    trace = trace_from_rows("t", [(0.0, 64, 1500), (0.0, 64, 1500), (0.5, 64, 4)])
    policy = Scripted(plan=[(1.0, 1)], initial_replicas=2)
    outcome = run(trace, policy, FAST, startup_s=5.0, scrape_s=1.0, lag_s=0.0)
    assert all(t is not None for t in outcome.last_token)
    drained_at = outcome.last_token[1]
    assert drained_at is not None
    assert drained_at > 1.0
    assert outcome.replica_seconds == pytest.approx(outcome.end_s + drained_at)
    # the victim was the newer of the two equally loaded; the third request avoided it
    assert outcome.changes[0] == Change(1.0, 2, 1)


def test_scale_down_removes_starting_replicas_first() -> None:
    trace = trace_from_rows("t", [(0.0, 64, 4), (10.0, 64, 4)])
    policy = Scripted(plan=[(1.0, 3), (2.0, 2)], initial_replicas=1)
    run(trace, policy, FAST, startup_s=50.0, scrape_s=1.0, lag_s=0.0)
    after = policy.seen[2]  # at t=3
    assert [r.name for r in after.replicas] == ["replica-1", "replica-2"]


def test_samples_arrive_after_the_lag() -> None:
    policy = Scripted(plan=[], initial_replicas=2, period_s=1.0)
    run(steady(20, 12), policy, FAST, startup_s=5.0, scrape_s=5.0, lag_s=2.0)
    by_time = {float(i + 1): view for i, view in enumerate(policy.seen)}  # a tick a second
    assert by_time[1.0].samples == ()
    assert {s.time for s in by_time[2.0].samples} == {0.0}
    assert {s.time for s in by_time[6.0].samples} == {0.0}
    assert {s.time for s in by_time[7.0].samples} == {0.0, 5.0}
    assert {s.replica for s in by_time[7.0].samples} == {"replica-1", "replica-2"}
    assert by_time[7.0].gateway_pending == 0


def test_samples_carry_the_routers_pending_prefill_tokens() -> None:
    fleet = fleet_with([2, 1], prompt=512)
    fleet.scrape(0.0)
    samples = [item for _, item in fleet.in_transit if isinstance(item, Sample)]
    pending = [r.pending_prefill_tokens() for r in fleet.alive]
    assert [s.pending_prefill_tokens for s in samples] == pending == [1024, 512]
    assert [r.load(0.0).pending_prefill_tokens for r in fleet.alive] == pending


def test_samples_count_the_requests_each_replica_started() -> None:
    # Every request gets its first token long before the next scrape, so each counter
    # reads what its replica was given: together, every arrival before the scrape.
    trace = steady(20, 12)
    policy = Scripted(plan=[], initial_replicas=2, period_s=1.0)
    outcome = run(trace, policy, FAST, startup_s=5.0, scrape_s=5.0, lag_s=0.0)
    last = policy.seen[-1].samples
    totals = []
    for at in sorted({s.time for s in last}):
        scraped = [s.started for s in last if s.time == at]
        arrived = sum(1 for r in trace.requests if r.arrival_s < at)
        answered = sum(1 for t in outcome.first_token if t is not None and t < at)
        assert len(scraped) == 2
        totals.append(sum(s or 0 for s in scraped))
        assert totals[-1] == answered <= arrived
    assert totals[-1] > 0


def test_unanswerable_requests_are_refused_and_the_replay_ends() -> None:
    trace = trace_from_rows("t", [(0.0, FAST.max_model_len, 10), (1.0, 64, 4)])
    outcome = run(trace, Scripted(plan=[]), FAST, startup_s=1.0, scrape_s=1.0, lag_s=0.0)
    assert outcome.rejected == (True, False)
    assert outcome.first_token[0] is None
    assert outcome.first_token[1] is not None


def test_gives_up_after_max_drain_when_nothing_serves() -> None:
    trace = trace_from_rows("t", [(0.0, 64, 4)])
    policy = Scripted(plan=[], initial_replicas=0, period_s=5.0)
    outcome = run(trace, policy, FAST, startup_s=1.0, scrape_s=5.0, lag_s=0.0, max_drain_s=60.0)
    assert outcome.first_token == (None,)
    assert outcome.end_s == 60.0
    assert outcome.replica_seconds == 0.0


def test_slo_needs_positive_bounds() -> None:
    with pytest.raises(ValueError, match="positive"):
        Slo(0.0, 0.05)


def test_default_victims_follow_the_replicaset_order() -> None:
    # Kubernetes' ReplicaSet: not ready first, then the newest; load does not count.
    fleet = fleet_with([0, 3, 1])
    fleet.create(5.0)  # replica-4, starting
    fleet.apply(2, 10.0)
    assert [r.name for r in fleet.alive] == ["replica-1", "replica-2", "replica-3"]
    assert [r.name for r in fleet.active()] == ["replica-1", "replica-2"]
    assert fleet.alive[2].draining  # the newest ready one drains, though replica-1 is idle


def test_a_policy_with_a_victim_order_picks_the_victims() -> None:
    fleet = fleet_with([0, 3, 1])
    fleet.apply(2, 10.0, order=("replica-2", "replica-3", "replica-1"))
    assert [r.name for r in fleet.active()] == ["replica-1", "replica-3"]


def test_ours_picks_victims_by_deletion_order_in_a_replay(spec: LLMDeploymentSpec) -> None:
    # Ours orders by fewest in flight (the operator's pod-deletion-cost); the fleet uses it.
    policy = LlmfleetPolicy(spec)
    replicas = (
        Replica("replica-1", ReplicaPhase.READY, 0.0, 0.0),
        Replica("replica-2", ReplicaPhase.READY, 0.0, 0.0),
        Replica("replica-3", ReplicaPhase.STARTING, 50.0, None),
    )
    samples = (
        Sample(90.0, "replica-1", 0, None, 0.5, 9),
        Sample(90.0, "replica-2", 0, None, 0.1, 1),
    )
    view = FleetView(3, replicas, samples, 0)
    assert policy.victim_order(view, 100.0) == deletion_order(replicas, samples, 100.0, 60.0)
    assert policy.victim_order(view, 100.0) == ("replica-3", "replica-2", "replica-1")
    # In a replay: two warm replicas; at 2 s the older one (replica-1) is idle (its
    # request took 0.2 s), the newer one busy until ~3.8 s.
    trace = trace_from_rows("t", [(0.0, 64, 100), (0.0, 64, 1900)])
    seen: list[tuple[str, ...]] = []

    @dataclasses.dataclass
    class Ordered(Scripted):
        def victim_order(self, view: FleetView, now: float) -> tuple[str, ...]:
            order = policy.victim_order(view, now)
            seen.append(order)
            return order

    scripted = Ordered(plan=[(2.0, 1)], initial_replicas=2, period_s=1.0)
    run(trace, scripted, FAST, startup_s=5.0, scrape_s=1.0, lag_s=0.0)
    assert seen[0] == ("replica-1", "replica-2")  # the idle one, though it is the older
    assert [r.name for r in scripted.seen[2].replicas] == ["replica-2"]
    # Without an order (a baseline), the ReplicaSet's: the newer, busy one drains.
    plain = Scripted(plan=[(2.0, 1)], initial_replicas=2, period_s=1.0)
    run(trace, plain, FAST, startup_s=5.0, scrape_s=1.0, lag_s=0.0)
    assert [r.name for r in plain.seen[2].replicas] == ["replica-1"]
