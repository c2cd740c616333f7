"""Learned startup time and trend headroom, as table tests (no cluster, no sleep).

Cases: the startup estimate learns from replicas seen both started and ready, jumps up
to a slower start, moves a quarter of the way to a faster one, counts each start once,
ignores replicas not yet ready or ready in the future; the trend is a least-squares
slope over the stable window, with the seconds its levels cover, and needs three
points; headroom is upward only, zero without a learned startup, extrapolated no
further than those seconds and capped at what the signal asks for now; through
:func:`decide`: a rising load orders its headroom and says so, a flat or falling one
adds none, nor does a rising one while ordered replicas are not ready yet or with
trendHeadroom off, or whose levels were read within a stable window after the last
scale-down (which the decision records), an empty history learns the startup from the
replicas it sees; the trend is fitted over the stable window or the learned startup, the
longer (capped), and the levels kept stay within it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from llmfleet_contract.api import LLMDeploymentSpec, Reason
from llmfleet_operator.autoscale import (
    History,
    Level,
    Observation,
    Replica,
    ReplicaPhase,
    Sample,
    decide,
)
from llmfleet_operator.autoscale.headroom import (
    Trend,
    fit_window,
    headroom,
    learn_startup,
    trends,
)

NOW = 10_000.0
QUEUE = "prefill queue"


def ready(name: str, started: float, became_ready: float | None) -> Replica:
    phase = ReplicaPhase.READY if became_ready is not None else ReplicaPhase.STARTING
    return Replica(name, phase, started, became_ready)


@pytest.mark.parametrize(
    ("starts", "estimate", "learned_until", "expected"),
    [
        ([], None, None, (None, None)),
        ([(NOW - 200, NOW - 100)], None, None, (100.0, NOW - 100)),
        ([(NOW - 200, NOW - 100)], 60.0, None, (100.0, NOW - 100)),  # slower: at once
        ([(NOW - 100, NOW - 60)], 100.0, None, (85.0, NOW - 60)),  # faster: a quarter
        ([(NOW - 200, NOW - 100)], 60.0, NOW - 100, (60.0, NOW - 100)),  # counted already
        ([(NOW - 200, None)], 60.0, None, (60.0, None)),  # still starting
        ([(NOW - 200, NOW + 5)], None, None, (None, None)),  # ready in the future
        # Oldest first: 120 sets it, 80 pulls a quarter of the way (110).
        ([(NOW - 100, NOW - 20), (NOW - 400, NOW - 280)], None, None, (110.0, NOW - 20)),
    ],
)
def test_learn_startup(
    starts: list[tuple[float, float | None]],
    estimate: float | None,
    learned_until: float | None,
    expected: tuple[float | None, float | None],
) -> None:
    replicas = [ready(f"r{i}", s, r) for i, (s, r) in enumerate(starts)]
    assert learn_startup(replicas, estimate, learned_until, NOW) == expected


def levels(*values: float, every: float = 15.0) -> tuple[Level, ...]:
    """Levels of the prefill queue, the last one at NOW."""
    count = len(values)
    return tuple(
        Level(NOW - (count - 1 - i) * every, ((QUEUE, value),)) for i, value in enumerate(values)
    )


@pytest.mark.parametrize(
    ("series", "window", "expected"),
    [
        (levels(1, 2, 3, 4), 60, {QUEUE: Trend(pytest.approx(1 / 15), 60)}),
        (levels(4, 3, 2), 60, {QUEUE: Trend(pytest.approx(-1 / 15), 45)}),
        (levels(2, 2, 2, 2), 60, {QUEUE: Trend(pytest.approx(0.0), 60)}),
        (levels(1, 2), 60, {}),  # two points are not a trend
        # The first is outside the window.
        (levels(100, 1, 2, 3), 45, {QUEUE: Trend(pytest.approx(1 / 15), 45)}),
    ],
)
def test_trends(series: tuple[Level, ...], window: float, expected: dict[str, Trend]) -> None:
    assert trends(series, window, NOW) == expected


@pytest.mark.parametrize(
    ("trend", "startup", "needed", "expected"),
    [
        (Trend(0.1, 60), 60.0, 10.0, 6.0),
        (Trend(0.1, 120), 60.0, 10.0, 6.0),  # read further back than the startup
        (Trend(0.1, 30), 60.0, 10.0, 3.0),  # levels cover 30 s: extrapolated 30 s, not 60
        (Trend(0.1, 60), None, 10.0, 0.0),  # no startup learned
        (None, 60.0, 10.0, 0.0),  # no trend
        (Trend(-0.1, 60), 60.0, 10.0, 0.0),  # upward only
        (Trend(1.0, 60), 60.0, 10.0, 10.0),  # capped at what it asks for now
    ],
)
def test_headroom(
    trend: Trend | None, startup: float | None, needed: float, expected: float
) -> None:
    assert headroom(trend, startup, needed) == pytest.approx(expected)


def spec(**scaling: Any) -> LLMDeploymentSpec:
    return LLMDeploymentSpec.model_validate(
        {
            "model": {"source": "hf://org/model"},
            "engine": {"max_num_seqs": 100},
            "autoscaling": {"min_replicas": 1, "max_replicas": 20, **scaling},
        }
    )


def two_ready(waiting: int) -> Observation:
    """Two settled replicas that each report ``waiting`` five seconds ago."""
    replicas = tuple(ready(f"r{i}", NOW - 900, NOW - 800) for i in range(2))
    samples = tuple(Sample(NOW - 5, f"r{i}", waiting, None, 0.0, 0) for i in range(2))
    return Observation(2, replicas, samples)


UNLIMITED = {"scale_up": {"max_step": 10}}


def trend(earlier: tuple[float, ...], startup: float | None) -> History:
    """A settled history whose queue levels were ``earlier`` at the periods before NOW."""
    return History(
        last_demand_at=NOW,
        watching_since=NOW - 3600,
        startup_seconds=startup,
        learned_until=NOW - 800,
        levels=levels(*earlier, 0.0)[:-1],
    )


@pytest.mark.parametrize(
    ("earlier", "startup", "desired", "headroom_words"),
    [
        # 2 x 6 waiting / target 4 asks for 3.0 now; rising 0.5 a period of 15 s. Four
        # levels (three earlier, one now) cover 60 s: a longer startup is read 60 s ahead.
        ((1.5, 2.0, 2.5), 60.0, 5, "(+2.0 replicas for its trend over a 60s startup)"),
        ((1.5, 2.0, 2.5), 180.0, 5, "(+2.0 replicas for its trend over 60s of a 180s startup"),
        # Rising 0.1 a period over twelve levels, 180 s: read a whole 180 s startup ahead.
        (
            tuple(round(1.9 + 0.1 * i, 1) for i in range(11)),
            180.0,
            5,
            "(+1.2 replicas for its trend over a 180s startup)",
        ),
        ((1.5, 2.0, 2.5), None, 3, None),  # nothing learned yet
        ((3.0, 3.0, 3.0), 60.0, 3, None),  # flat
        ((4.5, 4.0, 3.5), 60.0, 3, None),  # falling
    ],
)
def test_a_rising_load_orders_headroom(
    earlier: tuple[float, ...], startup: float | None, desired: int, headroom_words: str | None
) -> None:
    decision = decide(spec(**UNLIMITED), two_ready(6), trend(earlier, startup), NOW)
    assert decision.desired == desired
    assert decision.reason == Reason.PREFILL_QUEUE_ABOVE_TARGET
    queue = next(r for r in decision.signals if r.signal == QUEUE)
    assert queue.needed == pytest.approx(3.0)
    if headroom_words is None:
        assert queue.headroom == 0
        assert "trend" not in decision.message
    else:
        assert headroom_words in decision.message


def test_no_headroom_when_switched_off() -> None:
    # The first rising case above (+2.0 for the trend) with trendHeadroom: false.
    history = trend((1.5, 2.0, 2.5), 60.0)
    decision = decide(spec(**UNLIMITED, trend_headroom=False), two_ready(6), history, NOW)
    assert decision.desired == 3
    assert all(reading.headroom == 0 for reading in decision.signals)


@pytest.mark.parametrize("third_created", [True, False])
def test_no_headroom_while_replicas_start(third_created: bool) -> None:
    # The rising case above (asks 3.0 now, +2.0 for the trend) with a third replica
    # ordered and still starting, or not even created yet: the order answers the trend,
    # nothing is added.
    history = trend((1.5, 2.0, 2.5), 60.0)
    settled = two_ready(6)
    third = (ready("r2", NOW - 30, None),) if third_created else ()
    ordered = Observation(3, (*settled.replicas, *third), settled.samples)
    decision = decide(spec(**UNLIMITED), ordered, history, NOW)
    assert decision.desired == 3
    assert all(reading.headroom == 0 for reading in decision.signals)
    assert "trend" not in decision.message


@pytest.mark.parametrize(
    ("scaled_down", "desired"),
    [
        (None, 5),
        (110, 5),  # settled 50 s ago: the four levels of the rise are fitted
        (80, 3),  # settled 20 s ago: two levels, not a trend
        (30, 3),  # still settling: no level fitted
    ],
)
def test_a_scale_down_is_not_a_trend(scaled_down: float | None, desired: int) -> None:
    # The first rising case above (+2.0 for the trend); a scale-down that many seconds
    # ago, with the default 60 s stable window.
    history = trend((1.5, 2.0, 2.5), 60.0)
    if scaled_down is not None:
        history = replace(history, scaled_down_at=NOW - scaled_down)
    assert decide(spec(**UNLIMITED), two_ready(6), history, NOW).desired == desired


@pytest.mark.parametrize(("waiting", "scaled_down_at"), [(0, NOW), (6, NOW - 500)])
def test_a_decision_records_its_scale_down(waiting: int, scaled_down_at: float) -> None:
    history = replace(trend((), 60.0), scaled_down_at=NOW - 500)
    now_down = spec(scale_down={"stabilization_window_seconds": 0})
    decision = decide(now_down, two_ready(waiting), history, NOW)
    assert decision.desired == (1 if waiting == 0 else 3)
    assert decision.history.scaled_down_at == scaled_down_at


def test_an_empty_history_learns_the_startup_from_the_replicas() -> None:
    decision = decide(spec(), two_ready(4), History(last_demand_at=NOW), NOW)
    assert decision.history.startup_seconds == 100.0
    assert decision.history.learned_until == NOW - 800


@pytest.mark.parametrize(
    ("stable", "startup", "window"),
    [(60, None, 60), (60, 30.0, 60), (60, 100.0, 100), (60, 3600.0, 600), (900, 100.0, 900)],
)
def test_fit_window(stable: float, startup: float | None, window: float) -> None:
    assert fit_window(stable, startup) == window


def test_levels_stay_within_the_fit_window() -> None:
    # The replicas teach a 100 s startup: the fit window is 100 s, longer than 60 s.
    history = History(last_demand_at=NOW, levels=levels(1, 1, 1, 1, 1, 1, 1, every=20)[:-1])
    decision = decide(spec(stable_window_seconds=60), two_ready(4), history, NOW)
    assert [level.time for level in decision.history.levels] == [
        NOW - 80,
        NOW - 60,
        NOW - 40,
        NOW - 20,
        NOW,
    ]
    assert decision.history.levels[-1].needed[0] == (QUEUE, 2.0)
