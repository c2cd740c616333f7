"""A week-shaped load: a trace tiled end to end and thinned by a diurnal x weekly curve.

Called by the autoscaling bench's week run (``bench/autoscale/week.py``) and by the
forecast policy's tests. The curve is a fraction of the load's peak for each instant of
the week (local time of the schedules' time zone, the week starting on Monday 00:00);
:func:`week_load` keeps each request of the tiled trace with a probability proportional
to ``curve(t)``, drawn from a generator seeded per tile, so the same seed gives the same
requests, and a tile keeps its draws whatever the number of days. The week's clock may
run faster than the replay's (``week_speed``): a compressed week, for a fleet large
enough to be worth scaling at a simulation cost that stays in minutes.

The shape (:class:`WeekCurve`, defaults in :data:`OFFICE_WEEK`): on a weekday a night
trough, a ramp in the morning, a business-hours plateau at the peak, a ramp down in the
evening; on Saturday and Sunday the same shape with a lower plateau. Ramps are
half-cosines (smooth, no step for an autoscaler to jump on).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from llmfleet_fleetsim.trace import Trace, TraceRequest

DAY_S = 86_400.0
WEEK_S = 7 * DAY_S


@dataclass(frozen=True)
class WeekCurve:
    """The load's share of its peak through the week (hours are local, 0-24)."""

    trough: float
    """The night's share of the peak (every day)."""
    weekend_peak: float
    """Saturday's and Sunday's plateau, as a share of the weekdays' peak."""
    ramp_up: tuple[float, float]
    """From the trough to the plateau between these hours (a half-cosine)."""
    ramp_down: tuple[float, float]
    """From the plateau back to the trough between these hours."""

    def __post_init__(self) -> None:
        if not 0 <= self.trough <= self.weekend_peak <= 1:
            raise ValueError("need 0 <= trough <= weekend_peak <= 1")
        (a, b), (c, d) = self.ramp_up, self.ramp_down
        if not 0 <= a < b <= c < d <= 24:
            raise ValueError("need 0 <= ramp_up start < end <= ramp_down start < end <= 24")

    def at(self, seconds: float) -> float:
        """The share of the peak ``seconds`` after Monday 00:00 (wraps weekly)."""
        day, rest = divmod(seconds % WEEK_S, DAY_S)
        hour = rest / 3600.0
        plateau = 1.0 if day < 5 else self.weekend_peak
        return self.trough + (plateau - self.trough) * self._shape(hour)

    def _shape(self, hour: float) -> float:
        """0 at night, 1 on the plateau, half-cosine ramps between."""
        (a, b), (c, d) = self.ramp_up, self.ramp_down
        if hour < a or hour >= d:
            return 0.0
        if hour < b:
            return (1 - math.cos(math.pi * (hour - a) / (b - a))) / 2
        if hour < c:
            return 1.0
        return (1 + math.cos(math.pi * (hour - c) / (d - c))) / 2

    def mean(self, step_s: float = 60.0) -> float:
        """The week's average share of the peak."""
        steps = int(WEEK_S / step_s)
        return sum(self.at((i + 0.5) * step_s) for i in range(steps)) / steps


OFFICE_WEEK = WeekCurve(trough=0.1, weekend_peak=0.3, ramp_up=(6.0, 9.0), ramp_down=(17.0, 21.0))
"""An office's chat assistant (assumed, not measured): business hours 09:00-17:00 at the
peak, ramps of 3 h in and 4 h out, a night at a tenth of the peak, weekends at 30%."""


def week_load(
    trace: Trace,
    curve: WeekCurve,
    *,
    peak: float,
    days: float = 7.0,
    week_speed: float = 1.0,
    seed: int = 0,
) -> Trace:
    """``trace`` tiled end to end and thinned by ``curve`` over ``days`` days of the week
    clock, which runs ``week_speed`` times faster than the replay's (1: a real week).

    At the curve's peak the load is ``peak`` times the trace's own rate: the trace is
    overlaid on itself ``ceil(peak)`` times (:meth:`.Trace.denser`) and each request of a
    tile kept with probability ``peak / ceil(peak) x curve.at(week_speed x arrival)``
    (second 0 is Monday 00:00). A tile lasts the trace's duration plus one mean gap
    between its arrivals, so the seams keep the rate. Second 0 stays second 0 (no shift
    to the first kept request), so the week clock and the replay's stay aligned."""
    if peak <= 0 or days <= 0 or week_speed <= 0 or not trace.requests:
        raise ValueError("need a positive peak, days and week_speed, and a trace with requests")
    copies = math.ceil(peak)
    base = trace.denser(copies)
    share = peak / copies
    period = trace.duration_s + trace.duration_s / max(1, len(trace.requests) - 1)
    end = days * DAY_S / week_speed
    kept: list[TraceRequest] = []
    for tile in range(math.ceil(end / period)):
        draw = random.Random(f"{seed}:{tile}").random
        start = tile * period
        for request in base.requests:
            arrival = start + request.arrival_s
            if arrival >= end:
                break
            if draw() < share * curve.at(week_speed * arrival):
                kept.append(TraceRequest(arrival, request.prompt_tokens, request.output_tokens))
    name = f"{trace.name}-week-x{peak:g}-speed{week_speed:g}-seed{seed}"
    return Trace(name, tuple(kept))


def window(trace: Trace, start_s: float, end_s: float) -> Trace:
    """The requests arriving in ``[start_s, end_s)``, moved ``start_s`` earlier (a later
    week of a longer load, on its own clock)."""
    kept = tuple(
        TraceRequest(r.arrival_s - start_s, r.prompt_tokens, r.output_tokens)
        for r in trace.requests
        if start_s <= r.arrival_s < end_s
    )
    return Trace(trace.name, kept)
