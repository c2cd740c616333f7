"""Policies of the week-shaped bench: a forecast around ours, and a schedule of fixed sizes.

Called by ``bench/autoscale/week.py`` (and tests). Both read a week clock: replay
second ``s`` is ``s x clock_speed`` seconds after Monday 00:00 (a compressed week when
``clock_speed > 1``, see :func:`.week.week_load`).

* :class:`ForecastPolicy` (``llmfleet-forecast``): ours
  (:class:`~.policies.LlmfleetPolicy`), plus proactive headroom from the load's daily and
  weekly shape. It remembers, per slot of the week clock, the most replicas ours' signals
  needed (the signals' ``needed`` plus trend headroom: load over target, whatever the
  fleet held). Each period it looks one ``lead_s`` ahead (a startup and a period) and
  asks for the most any of those slots needed a week ago, or a day ago where the week is
  not yet remembered; never less than ours decides, never more than ``maxReplicas``.
* :class:`ScheduledPolicy`: a fleet sized by the clock only, ``spec.autoscaling``'s
  ``minReplicas`` with its schedules' floors (the "serve business hours" plan): no
  metric is read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from llmfleet_contract.api import AutoscalingSpec
from llmfleet_fleetsim.policies import LlmfleetPolicy
from llmfleet_fleetsim.view import FleetView
from llmfleet_fleetsim.week import DAY_S, WEEK_S

FORECAST_NAME = "llmfleet-forecast"


@dataclass
class ForecastPolicy:
    """Ours with a forecast from the same time yesterday and last week (module docstring)."""

    inner: LlmfleetPolicy
    lead_s: float
    """Replay seconds to look ahead: a replica ordered now serves this much later."""
    clock_speed: float = 1.0
    """Week-clock seconds per replay second."""
    slot_s: float = 1800.0
    """Week-clock seconds per remembered slot."""
    name: str = FORECAST_NAME
    memory: dict[int, int] = field(default_factory=dict)
    """Slot index since second 0 -> the most replicas ours' signals needed in it."""
    reason: str = ""
    """Why the last decision went above ours' (empty when it did not)."""

    @property
    def period_s(self) -> float:
        return self.inner.period_s

    @property
    def initial_replicas(self) -> int:
        return self.inner.initial_replicas

    def decide(self, view: FleetView, now: float) -> int:
        reactive = self.inner.decide(view, now)
        week_now = now * self.clock_speed
        slot = int(week_now // self.slot_s)
        self.memory[slot] = max(self.memory.get(slot, 0), self._need(reactive))
        last = int((week_now + self.lead_s * self.clock_speed) // self.slot_s)
        recalled = [(n, j, ago) for j in range(slot, last + 1) for n, ago in self._recall(j)]
        self.reason = ""
        if not recalled:
            return reactive
        need, at, ago = max(recalled)
        scaling = self.inner.spec.autoscaling
        assert scaling is not None
        forecast = min(need, scaling.max_replicas)
        if forecast <= reactive:
            return reactive
        self.reason = (
            f"forecast {forecast} replicas (slot {at} needed {need} {ago} ago) > ours' {reactive}"
        )
        return forecast

    def _need(self, reactive: int) -> int:
        """What ours' signals needed this period (its decision when it read none)."""
        last = self.inner.last
        if last is None or not last.signals:
            return reactive
        return math.ceil(max(s.needed + s.headroom for s in last.signals))

    def _recall(self, slot: int) -> list[tuple[int, str]]:
        """The need remembered for ``slot`` a week ago, else a day ago (none: empty)."""
        for period, ago in ((WEEK_S, "a week"), (DAY_S, "a day")):
            earlier = self.memory.get(slot - round(period / self.slot_s))
            if earlier is not None:
                return [(earlier, ago)]
        return []

    def victim_order(self, view: FleetView, now: float) -> tuple[str, ...]:
        """Ours' scale-down order."""
        return self.inner.victim_order(view, now)


@dataclass
class ScheduledPolicy:
    """A fleet sized by the clock alone: ``scaling``'s floor at each instant (its
    ``minReplicas`` raised by the schedules open then), warm from the start."""

    scaling: AutoscalingSpec
    start: datetime
    """The week-clock time of the replay's second 0."""
    clock_speed: float = 1.0
    name: str = "scheduled"
    period_s: float = 60.0

    def at(self, now: float) -> int:
        """The replicas the schedule holds ``now`` replay seconds after the start."""
        wall = self.start + timedelta(seconds=now * self.clock_speed)
        floor, _, _ = self.scaling.bounds_at(wall)
        return max(1, floor)

    @property
    def initial_replicas(self) -> int:
        return self.at(0.0)

    def decide(self, view: FleetView, now: float) -> int:
        return self.at(now)
