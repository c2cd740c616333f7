"""The baselines react as their projects document, on hand-made views (no engine):
HPA (15 s sync, ceil(current x ratio), 10% tolerance, missing pods, 300 s scale-down
stabilization, max(4, 100%) up), KEDA (sum of waiting / 5, 0 <-> 1 with a 300 s
cooldown), Knative KPA (stable and panic windows, no scale-down in panic), llm-d
(saturation, spare-capacity triggers, one at a time, hold while starting)."""

from __future__ import annotations

import pytest

from llmfleet_fleetsim import FleetView, HpaPolicy, KedaPolicy, KpaPolicy, LlmdPolicy
from llmfleet_operator.autoscale import Replica, ReplicaPhase, Sample

READY, STARTING = ReplicaPhase.READY, ReplicaPhase.STARTING


def view(
    now: float,
    loads: list[tuple[int, int, float]],
    *,
    starting: int = 0,
    history: list[tuple[float, list[tuple[int, int, float]]]] = (),  # type: ignore[assignment]
    pending: int | None = 0,
) -> FleetView:
    """Ready replicas with ``(running, waiting, kv)`` sampled at ``now`` (and ``history``)."""
    names = [f"r{i}" for i in range(len(loads))]
    replicas = [Replica(n, READY, 0.0, 0.0) for n in names]
    replicas += [Replica(f"s{i}", STARTING, now, None) for i in range(starting)]
    samples = [
        Sample(t, names[i], waiting, None, kv, running)
        for t, rows in [*history, (now, loads)]
        for i, (running, waiting, kv) in enumerate(rows)
    ]
    return FleetView(len(replicas), tuple(replicas), tuple(samples), pending)


def test_hpa_scales_up_at_the_first_sync_by_the_ratio() -> None:
    hpa = HpaPolicy(target=10, lowest=1, highest=20)
    assert hpa.period_s == 15
    assert hpa.decide(view(15, [(30, 0, 0.5), (20, 0, 0.5)]), 15) == 5  # ceil(2 x 2.5)


def test_hpa_limits_scale_up_to_max_of_four_pods_and_double() -> None:
    hpa = HpaPolicy(target=1, lowest=1, highest=100)
    assert hpa.decide(view(15, [(50, 0, 0.5)]), 15) == 5  # max(1 + 4, 2 x 1)
    hpa = HpaPolicy(target=1, lowest=1, highest=100)
    assert hpa.decide(view(15, [(50, 0, 0.5)] * 6), 15) == 12  # max(6 + 4, 2 x 6)


def test_hpa_keeps_within_tolerance() -> None:
    hpa = HpaPolicy(target=10, lowest=1, highest=20)
    assert hpa.decide(view(15, [(11, 0, 0.5), (10, 0, 0.5)]), 15) == 2


def test_hpa_does_not_scale_down_within_300_s() -> None:
    hpa = HpaPolicy(target=10, lowest=1, highest=20)
    assert hpa.decide(view(0, [(20, 0, 0.5)] * 4), 0) == 8
    for now in range(15, 300, 15):
        assert hpa.decide(view(now, [(0, 0, 0.0)] * 8), now) == 8
    assert hpa.decide(view(300, [(0, 0, 0.0)] * 8), 300) == 1


def test_hpa_counts_starting_pods_as_zero_on_the_way_up() -> None:
    hpa = HpaPolicy(target=10, lowest=1, highest=20)
    # 2 ready at 20 (ratio 2), 2 starting count 0: (40 + 0) / (10 x 4) = 1, no change
    assert hpa.decide(view(15, [(20, 0, 0.5)] * 2, starting=2), 15) == 4
    # 2 ready at 30: 60 / 40 = 1.5 -> 6
    assert hpa.decide(view(30, [(30, 0, 0.5)] * 2, starting=2), 30) == 6


def test_hpa_counts_starting_pods_at_target_on_the_way_down() -> None:
    hpa = HpaPolicy(target=10, lowest=1, highest=20)
    assert hpa.decide(view(0, [(10, 0, 0.5)] * 4), 0) == 4
    # ready ones idle; starting ones at target: (0 + 20) / 40 = 0.5 -> 2, held at 4
    assert hpa.decide(view(15, [(0, 0, 0.0)] * 2, starting=2), 15) == 4
    assert hpa.behavior.recommendations[-1] == (15, 2)


def test_keda_scales_on_the_sum_of_waiting_over_the_threshold() -> None:
    keda = KedaPolicy(threshold=5, lowest=1, highest=20)
    assert keda.decide(view(15, [(10, 12, 0.5), (10, 9, 0.5)]), 15) == 5  # ceil(21 / 5)
    for now in range(30, 315, 15):
        assert keda.decide(view(now, [(10, 0, 0.5)] * 5), now) == 5
    assert keda.decide(view(315, [(10, 0, 0.5)] * 5), 315) == 1


def test_keda_scales_to_zero_after_the_cooldown_and_back_on_traffic() -> None:
    keda = KedaPolicy(threshold=5, lowest=0, highest=4)
    assert keda.decide(view(0, [(1, 0, 0.1)]), 0) == 1
    assert keda.decide(view(30, [(0, 0, 0.0)]), 30) == 1
    assert keda.decide(view(270, [(0, 0, 0.0)]), 270) == 1  # last active at 0
    assert keda.decide(view(300, [(0, 0, 0.0)]), 300) == 0
    empty = FleetView(0, (), (), 0)
    assert keda.decide(empty, 315) == 0
    assert keda.decide(FleetView(0, (), (), 3), 320) == 0  # polls every 30 s
    assert keda.decide(FleetView(0, (), (), 3), 330) == 1


def test_kpa_stable_window_averages_and_panic_scales_at_once() -> None:
    kpa = KpaPolicy(target=10, lowest=1, highest=50)
    assert kpa.period_s == 2
    calm = [(t, [(10, 0, 0.5)] * 2) for t in (0.0, 15.0, 30.0, 45.0)]
    assert kpa.decide(view(60, [(10, 0, 0.5)] * 2, history=calm), 60) == 2
    # a burst in the newest sample: panic window asks 10 >= 2 x 2 ready
    burst = view(62, [(50, 0, 0.5)] * 2, history=calm)
    assert kpa.decide(burst, 62) == 10
    # load gone, but still in panic: never below the panic maximum for a stable window
    quiet = [(t, [(0, 0, 0.0)] * 2) for t in (64.0, 70.0)]
    assert kpa.decide(view(80, [(0, 0, 0.0)] * 2, history=quiet), 80) == 10
    assert kpa.decide(view(123, [(0, 0, 0.0)] * 2), 123) == 1


def test_kpa_counts_the_gateway_queue_like_the_activator() -> None:
    kpa = KpaPolicy(target=10, lowest=0, highest=5)
    assert kpa.decide(FleetView(0, (), (), 4), 2) == 1


@pytest.mark.parametrize(
    ("loads", "starting", "expected"),
    [
        ([(10, 0, 0.3), (10, 0, 0.3)], 0, 1),  # 0.6 on one leaves 0.2 spare: one fewer
        ([(10, 0, 0.75), (10, 0, 0.75)], 0, 3),  # spare KV 0.05 < 0.1: one more
        ([(10, 5, 0.5), (10, 5, 0.5)], 0, 3),  # all saturated by queue: one more
        ([(10, 5, 0.5), (10, 5, 0.5)], 1, 3),  # ...but one is starting: hold
        ([(10, 0, 0.1), (10, 0, 0.1), (1, 0, 0.1)], 0, 2),  # 0.3 over 2 leaves 0.65 spare
        ([(10, 0, 0.4), (10, 0, 0.4)], 0, 2),  # 0.8 over 1: none spare, hold
    ],
)
def test_llmd_saturation(loads: list[tuple[int, int, float]], starting: int, expected: int) -> None:
    llmd = LlmdPolicy(kv_threshold=0.8, lowest=1, highest=10)
    assert llmd.period_s == 60
    assert llmd.decide(view(60, loads, starting=starting), 60) == expected


def test_llmd_reads_the_peak_of_the_last_minute() -> None:
    llmd = LlmdPolicy(kv_threshold=0.8, lowest=1, highest=10)
    history = [(20.0, [(10, 0, 0.75), (10, 0, 0.75)])]
    assert llmd.decide(view(60, [(10, 0, 0.1)] * 2, history=history), 60) == 3


def test_hpa_first_pass_seeds_the_window_with_the_current_count() -> None:
    # A fresh HPA on 13 idle pods: the controller seeds its recommendations with the
    # current count, so the first pass holds 13 and the drop waits for the window.
    hpa = HpaPolicy(target=10, lowest=1, highest=20)
    for now in range(15, 315, 15):
        assert hpa.decide(view(now, [(0, 0, 0.0)] * 13), now) == 13
    assert hpa.decide(view(315, [(0, 0, 0.0)] * 13), 315) == 1


def test_keda_first_pass_seeds_the_hpa_window_too() -> None:
    keda = KedaPolicy(threshold=5, lowest=1, highest=20)
    for now in range(15, 315, 15):
        assert keda.decide(view(now, [(1, 0, 0.1)] * 13), now) == 13
    assert keda.decide(view(315, [(1, 0, 0.1)] * 13), 315) == 1
