"""The week-shaped load and its policies: the curve's shape (plateau, trough, weekend,
smooth ramps); the thinning is deterministic per seed, stable per tile whatever the
days, and follows the curve and the peak; a later week on its own clock; the forecast
never goes below ours, recalls a day ago then a week ago, looks a lead ahead and keeps
within maxReplicas; the clock-only schedule holds its floors."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from llmfleet_contract.api import LLMDeploymentSpec
from llmfleet_contract.api.scaling import ScheduleSpec
from llmfleet_fleetsim import FleetView
from llmfleet_fleetsim.forecast import ForecastPolicy, ScheduledPolicy
from llmfleet_fleetsim.policies import LlmfleetPolicy
from llmfleet_fleetsim.week import DAY_S, OFFICE_WEEK, WEEK_S, WeekCurve, week_load, window
from tests.fleetsim.conftest import steady

HOUR = 3600.0
MONDAY = datetime(2024, 1, 1, tzinfo=UTC)
EMPTY = FleetView(0, (), (), None)


def test_the_curve_has_a_plateau_a_trough_and_a_lower_weekend() -> None:
    curve = OFFICE_WEEK
    wednesday, saturday = 2 * DAY_S, 5 * DAY_S
    assert curve.at(wednesday + 12 * HOUR) == 1.0
    assert curve.at(wednesday + 3 * HOUR) == curve.trough
    assert curve.at(saturday + 12 * HOUR) == pytest.approx(curve.weekend_peak)
    assert curve.at(WEEK_S + wednesday + 12 * HOUR) == 1.0  # wraps weekly
    morning = [curve.at(wednesday + h * 60) for h in range(6 * 60, 9 * 60 + 1)]
    assert morning == sorted(morning)
    assert morning[0] == curve.trough
    assert curve.trough < curve.mean() < 1


def test_a_bad_curve_is_refused() -> None:
    with pytest.raises(ValueError, match="trough"):
        WeekCurve(trough=0.5, weekend_peak=0.3, ramp_up=(6, 9), ramp_down=(17, 21))
    with pytest.raises(ValueError, match="ramp_up"):
        WeekCurve(trough=0.1, weekend_peak=0.3, ramp_up=(9, 6), ramp_down=(17, 21))


def test_thinning_is_deterministic_and_stable_per_tile() -> None:
    trace = steady(2, 600)
    one = week_load(trace, OFFICE_WEEK, peak=1.0, days=7, week_speed=24, seed=3)
    again = week_load(trace, OFFICE_WEEK, peak=1.0, days=7, week_speed=24, seed=3)
    other = week_load(trace, OFFICE_WEEK, peak=1.0, days=7, week_speed=24, seed=4)
    longer = week_load(trace, OFFICE_WEEK, peak=1.0, days=14, week_speed=24, seed=3)
    assert one == again
    assert one.requests != other.requests
    assert longer.requests[: len(one.requests)] == one.requests


def test_thinning_follows_the_curve_and_the_peak() -> None:
    rate, speed = 2.0, 24.0
    load = week_load(steady(rate, 600), OFFICE_WEEK, peak=1.5, days=7, week_speed=speed)
    hour = HOUR / speed  # one hour of the week clock, in replay seconds

    def per_second(week_s: float) -> float:
        start = week_s / speed
        return sum(1 for r in load.requests if start <= r.arrival_s < start + hour) / hour

    assert per_second(2 * DAY_S + 12 * HOUR) == pytest.approx(1.5 * rate, rel=0.1)
    assert per_second(2 * DAY_S + 2 * HOUR) == pytest.approx(1.5 * rate * 0.1, rel=0.3)
    assert per_second(5 * DAY_S + 12 * HOUR) == pytest.approx(1.5 * rate * 0.3, rel=0.15)
    assert load.duration_s < 7 * DAY_S / speed


def test_a_later_week_on_its_own_clock() -> None:
    load = week_load(steady(2, 600), OFFICE_WEEK, peak=1.0, days=14, week_speed=24)
    week = WEEK_S / 24
    second = window(load, week, 2 * week)
    assert second.requests
    assert all(0 <= r.arrival_s < week for r in second.requests)
    assert len(second.requests) == sum(1 for r in load.requests if week <= r.arrival_s)


@dataclass
class Scripted(LlmfleetPolicy):
    """Ours with decisions read from ``script`` by time (no signals: its need is its decision)."""

    script: dict[float, int] | None = None

    def decide(self, view: FleetView, now: float) -> int:
        assert self.script is not None
        return self.script[now]


def forecast(spec: LLMDeploymentSpec, script: dict[float, int], lead_s: float) -> ForecastPolicy:
    return ForecastPolicy(Scripted(spec, script=script), lead_s, clock_speed=1.0, slot_s=HOUR)


def test_the_forecast_never_goes_below_ours_and_keeps_within_max(
    spec: LLMDeploymentSpec,
) -> None:
    times = [i * 900.0 for i in range(int(3 * DAY_S / 900))]
    script = {t: 1 + (int(t // HOUR) * 7) % 9 for t in times}  # 1..9, maxReplicas is 4
    policy = forecast(spec, script, lead_s=600)
    decided = [policy.decide(EMPTY, t) for t in times]
    assert all(d >= script[t] for d, t in zip(decided, times, strict=True))
    assert all(d <= max(4, script[t]) for d, t in zip(decided, times, strict=True))
    assert any(d > script[t] for d, t in zip(decided, times, strict=True))


def test_the_forecast_recalls_a_day_ago_then_a_week_ago_one_lead_ahead(
    spec: LLMDeploymentSpec,
) -> None:
    times = [i * 900.0 for i in range(int(8 * DAY_S / 900) + 1)]
    busy = 9 * HOUR  # the same hour each day needed 3, and 4 on day 0
    script = {t: (3 + (t < DAY_S) if t % DAY_S // HOUR == busy // HOUR else 1) for t in times}
    policy = forecast(spec, script, lead_s=1800)
    decided = {t: policy.decide(EMPTY, t) for t in times}
    day1 = DAY_S + busy
    assert decided[day1 - 1800] == 4
    assert decided[day1 - 2700] == 1  # more than a lead before: nothing recalled yet
    week = 7 * DAY_S + busy
    assert decided[week - 900] == 4  # day 0's 4 a week ago, not yesterday's 3
    policy.decide(EMPTY, week - 900)
    assert "a week ago" in policy.reason
    assert decided[2 * DAY_S + busy - 900] == 3


def test_the_schedule_holds_its_floors(spec: LLMDeploymentSpec) -> None:
    assert spec.autoscaling is not None
    business = ScheduleSpec(name="office", days=["Mon"], start="09:00", end="17:00",
                            min_replicas=3)  # fmt: skip
    scaling = spec.autoscaling.model_copy(update={"min_replicas": 2, "schedules": [business]})
    policy = ScheduledPolicy(scaling, MONDAY, clock_speed=2.0)
    assert policy.initial_replicas == 2
    assert policy.decide(EMPTY, 5 * HOUR) == 3  # Monday 10:00 on the week clock
    assert policy.decide(EMPTY, 9 * HOUR) == 2  # Monday 18:00
