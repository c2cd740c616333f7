"""Regions on one clock (llmfleet_fleetsim.regions): a burst in one region spills to its idle
peers through the gateway's Peers.pick (behind bench/multiregion/gateways.py; its forwarded
requests pay the round trip),
none without spill; one region alone replays exactly as the single-fleet replay does; a
rotated trace keeps its requests, wrapped around its duration."""

from __future__ import annotations

import sys
from pathlib import Path

from llmfleet_fleetsim import StaticPolicy, run, trace_from_rows
from llmfleet_fleetsim.regions import Region, RegionsOutcome, Spill, rotated, run_regions
from llmfleet_fleetsim.replica import routing_settings
from llmfleet_fleetsim.slo import Slo, meets
from llmfleet_fleetsim.trace import Trace
from llmfleet_runtime.simulator import FAST
from tests.fleetsim.conftest import steady

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench" / "multiregion"))
from gateways import gateways  # the gateway's Peers behind the seam (bench/multiregion)

RTT = {frozenset("ab"): 0.03, frozenset("ac"): 0.05, frozenset("bc"): 0.04}
SLO = Slo(ttft_s=0.2, tpot_s=0.05)


def burst() -> Trace:
    """Light load, then 120 prompts of 1500 tokens at once at 3 s: about 0.6 s of prefill
    for one replica of the fast profile."""
    calm = [(0.5 * i, 64, 8) for i in range(12)]
    return trace_from_rows("burst", calm + [(3.0, 1500, 8)] * 120)


def replay(spill: Spill | None) -> RegionsOutcome:
    regions = [
        Region("a", burst(), StaticPolicy(1)),
        Region("b", steady(1.0, 6.0), StaticPolicy(1)),
        Region("c", steady(1.0, 6.0), StaticPolicy(1)),
    ]
    return run_regions(regions, FAST, startup_s=10.0, scrape_s=1.0, lag_s=0.0, spill=spill)


def attained(trace: Trace, outcome: RegionsOutcome, region: str) -> list[bool]:
    found = outcome.regions[region]
    return [
        meets(SLO, r.arrival_s, found.first_token[i], found.last_token[i], r.output_tokens)
        for i, r in enumerate(trace.requests)
    ]


def ttfts(trace: Trace, outcome: RegionsOutcome, region: str) -> list[float]:
    first = outcome.regions[region].first_token
    found = [(t, r.arrival_s) for t, r in zip(first, trace.requests, strict=True)]
    assert all(t is not None for t, _ in found)  # every request answered, wherever served
    return [t - arrival for t, arrival in found if t is not None]


def test_a_burst_spills_to_idle_peers_and_pays_the_round_trip() -> None:
    alone = replay(None)
    spilled = replay(Spill(RTT, gateways(0.1, FAST.max_num_seqs, routing_settings(FAST), 1.0)))

    assert alone.forwarded == {}
    assert set(alone.served_in["a"]) == {"a"}
    # The peer with the lowest estimate plus round trip (b, 30 ms away) takes the burst's
    # overflow; the calm regions never spill, and before the burst nothing does.
    assert spilled.reasons.keys() == {"Spill"}
    assert set(spilled.forwarded) == {("a", "b")}
    where = spilled.served_in["a"]
    assert set(where[:12]) == {"a"}
    assert 10 < where.count("b") < 120  # local first: what the objective cannot hold
    assert set(spilled.served_in["b"]) == {"b"}
    # Counted at the region it entered: its SLO improves; a forward pays the round trip.
    trace = burst()
    assert sum(attained(trace, spilled, "a")) > sum(attained(trace, alone, "a"))
    assert max(ttfts(trace, spilled, "a")) < max(ttfts(trace, alone, "a"))
    forwarded = [t for t, w in zip(ttfts(trace, spilled, "a"), where, strict=True) if w == "b"]
    assert min(forwarded) >= RTT[frozenset("ab")]
    # Each region pays for its own fleet only (one replica each, the same time).
    assert len({o.replica_seconds for o in spilled.regions.values()}) == 1


def test_one_region_replays_as_the_single_fleet_does() -> None:
    trace = burst()
    alone = run(trace, StaticPolicy(2), FAST, startup_s=10.0, scrape_s=1.0, lag_s=0.0)
    region = run_regions(
        [Region("a", trace, StaticPolicy(2))],
        FAST,
        startup_s=10.0,
        scrape_s=1.0,
        lag_s=0.0,
        spill=None,
    ).regions["a"]
    assert region.first_token == alone.first_token
    assert region.last_token == alone.last_token
    assert region.replica_seconds == alone.replica_seconds
    assert region.end_s == alone.end_s


def test_rotated_wraps_the_trace_around_its_duration() -> None:
    trace = trace_from_rows("t", [(0.0, 10, 1), (4.0, 20, 1), (6.0, 30, 1), (10.0, 40, 1)])
    moved = rotated(trace, 5.0)
    assert [(r.arrival_s, r.prompt_tokens) for r in moved.requests] == [
        (1.0, 30), (5.0, 10), (5.0, 40), (9.0, 20),
    ]  # fmt: skip
    assert rotated(trace, 10.0) is trace
