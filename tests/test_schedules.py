"""Scheduled replica bounds (``spec.autoscaling.schedules``) and the autoscaler keeping them.

Cases: a weekday window opens and closes at its local times, in summer and in winter (the
same local hours, a different UTC offset); a window past midnight belongs to the day it
opened; the open windows' highest floor and lowest ceiling apply, a ceiling below a floor
wins, and closed windows change nothing; an unknown time zone is refused by the model (the
operator then reports InvalidSpec: the schema cannot know IANA names); the autoscaler
raises an idle fleet to an open window's floor, from zero too, names the window in the
decision and in ``status.schedule``, still scales above the floor on load, and comes back
to ``minReplicas`` once the window closes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pydantic
import pytest

from llmfleet_contract.api import LLMDeploymentStatus, Reason
from llmfleet_contract.api.scaling import AutoscalingSpec, ScheduleSpec
from llmfleet_operator.autoscaler import Autoscaler
from llmfleet_operator.children import desired_replicas
from tests.test_autoscaler import T0, FakeSource, deployment, pod, with_status

WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri"]
OFFICE = {"name": "office", "timeZone": "Europe/Berlin", "days": WEEKDAYS}


def schedule(**fields: Any) -> ScheduleSpec:
    return ScheduleSpec.model_validate({**OFFICE, "start": "08:00", "end": "18:00"} | fields)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_a_weekday_window_follows_local_time_summer_and_winter() -> None:
    office = schedule()
    # Monday 6 July 2026, CEST (UTC+2): 08:00 local is 06:00 UTC.
    assert not office.open_at(utc("2026-07-06T05:59"))
    assert office.open_at(utc("2026-07-06T06:00"))
    assert office.open_at(utc("2026-07-06T15:59"))
    assert not office.open_at(utc("2026-07-06T16:00"))
    # Monday 5 January 2026, CET (UTC+1): 06:30 UTC is 07:30 local, still closed.
    assert not office.open_at(utc("2026-01-05T06:30"))
    assert office.open_at(utc("2026-01-05T07:00"))
    assert not office.open_at(utc("2026-07-04T10:00"))  # a Saturday


def test_a_window_past_midnight_belongs_to_the_day_it_opened() -> None:
    night = schedule(timeZone="UTC", days=["Fri"], start="22:00", end="06:00")
    assert night.open_at(utc("2026-07-10T23:00"))  # Friday night
    assert night.open_at(utc("2026-07-11T05:59"))  # Saturday morning: opened on Friday
    assert not night.open_at(utc("2026-07-11T06:00"))
    assert not night.open_at(utc("2026-07-11T23:00"))  # Saturday night: not a Friday
    assert not night.open_at(utc("2026-07-10T05:00"))  # Friday morning: opened on Thursday


def test_open_windows_set_the_bounds_and_a_ceiling_wins_over_a_floor() -> None:
    scaling = AutoscalingSpec.model_validate(
        {
            "minReplicas": 1,
            "maxReplicas": 10,
            "schedules": [
                {**OFFICE, "start": "08:00", "end": "18:00", "minReplicas": 4},
                {**OFFICE, "name": "lunch", "start": "12:00", "end": "14:00", "minReplicas": 6},
                {**OFFICE, "name": "budget", "start": "13:00", "end": "14:00", "maxReplicas": 5},
            ],
        }
    )
    monday = "2026-07-06T"
    assert scaling.bounds_at(utc(monday + "03:00")) == (1, 10, ())
    assert scaling.bounds_at(utc(monday + "09:00")) == (4, 10, ("office",))
    assert scaling.bounds_at(utc(monday + "10:30")) == (6, 10, ("office", "lunch"))
    assert scaling.bounds_at(utc(monday + "11:30")) == (5, 5, ("office", "lunch", "budget"))


def test_an_unknown_time_zone_is_refused_by_name() -> None:
    with pytest.raises(pydantic.ValidationError, match="unknown time zone 'Mars/Olympus'"):
        schedule(timeZone="Mars/Olympus")


def scheduled(open_now: bool, **scaling: Any) -> Any:
    """The test deployment with a window of floor 3 that is open at T0 (a Sunday) or not."""
    days = ["Sun"] if open_now else WEEKDAYS
    window = {"name": "peak", "timeZone": "UTC", "days": days, "start": "11:00", "end": "13:00"}
    return deployment(schedules=[window | {"minReplicas": 3}], **scaling)


def status(desired: int) -> LLMDeploymentStatus:
    return LLMDeploymentStatus(observed_generation=1, desired_replicas=desired)


def test_an_open_window_raises_an_idle_fleet_to_its_floor_and_says_so() -> None:
    obj = with_status(scheduled(open_now=True), status(1))
    period = Autoscaler(FakeSource()).run(obj, "uid", [pod("p0")], T0)
    assert (period.decision.current, period.decision.desired) == (1, 3)  # bounds win over steps
    assert period.decision.reason is Reason.AT_MIN_REPLICAS
    assert period.decision.message.endswith("; minReplicas is 3 (schedule peak)")
    assert period.status.schedule == "peak"
    [record] = period.status.decisions or []
    assert record.message.endswith("(schedule peak)")

    closed = with_status(scheduled(open_now=False), status(1))
    period = Autoscaler(FakeSource()).run(closed, "uid", [pod("p0")], T0)
    assert period.decision.desired == 1
    assert period.status.schedule is None


def test_a_floor_brings_a_fleet_back_from_zero_at_its_time() -> None:
    zero = {"minReplicas": 0, "scaleToZero": {"enabled": True, "idleTimeoutSeconds": 60}}
    obj = with_status(scheduled(open_now=True, **zero), status(0))
    period = Autoscaler(FakeSource()).run(obj, "uid", [], T0)
    assert (period.decision.current, period.decision.desired) == (0, 3)


def test_load_still_scales_above_the_floor_and_the_closed_window_lets_it_down() -> None:
    busy = FakeSource(load={f"p{i}": (12, 8) for i in range(3)})
    obj = with_status(scheduled(open_now=True), status(3))
    pods = [pod(f"p{i}", ip=f"10.0.0.{i + 1}") for i in range(3)]
    period = Autoscaler(busy).run(obj, "uid", pods, T0)
    assert period.decision.desired == 6  # maxReplicas: the load asks for more
    # After the window (13:00), idle, the same three replicas come down to minReplicas.
    scaler, later = Autoscaler(FakeSource()), T0 + timedelta(hours=1, minutes=1)
    for minute in range(4):
        period = scaler.run(obj, "uid", pods, later + timedelta(minutes=minute))
        obj = with_status(obj, period.status)
    assert period.status.desired_replicas == 1
    assert period.status.schedule is None


def test_a_ceiling_below_min_replicas_reaches_the_workload() -> None:
    """A night cap of 1 under minReplicas 2: the autoscaler decides 1, and the workload asks
    for 1 (the spec's minReplicas does not lift the autoscaler's answer back up)."""
    night = {"name": "night", "timeZone": "UTC", "start": "11:00", "end": "13:00"}
    obj = with_status(deployment(minReplicas=2, schedules=[night | {"maxReplicas": 1}]), status(2))
    pods = [pod("p0"), pod("p1", ip="10.0.0.2")]
    period = Autoscaler(FakeSource()).run(obj, "uid", pods, T0)
    assert period.decision.desired == 1
    assert desired_replicas(with_status(obj, period.status)) == 1
    # A spec changed since the decision: its own bounds hold until the next period.
    changed = with_status(obj, period.status).model_copy(
        update={"metadata": obj.metadata.model_copy(update={"generation": 2})}
    )
    assert desired_replicas(changed) == 2
