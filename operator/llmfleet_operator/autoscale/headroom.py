"""Headroom for startup: the model's learned startup time and each signal's trend.

Called by :mod:`llmfleet_operator.autoscale.policy` each period. A replica ordered now
serves only after the model's startup time, so a rising load is met with what it will
be then: each signal's recent trend (a least-squares line through the replicas it asked
for at recent periods) is extrapolated over the learned startup time, upward only and
capped, and added to what the signal asks for now. It is extrapolated no further ahead
than the levels it was fitted over cover (n levels a period apart: n periods): a few
levels, as just after a scale-down, say little about minutes ahead, and reading them that
far turns wiggles into orders. A constant load has no trend and so no headroom; a falling
one is left to the scale-down rules. While ordered replicas are not ready yet the policy
adds none: the trend then measures the overload their order answers (saturated replicas
read high), and extrapolating it would order the capacity twice. Nor is the trend fitted
across a scale-down: the replicas left decode bigger batches more slowly and hold more
requests at once, a rise the fleet caused, which would order back what was just removed.
The bench (bench/autoscale) measures each of these choices.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from llmfleet_operator.autoscale.inputs import Level, Replica

UNLEARN_WEIGHT = 0.25
"""How far one faster start pulls the startup estimate down (a slower one sets it)."""

MAX_HEADROOM = 1.0
"""Headroom is at most this fraction of what the signal asks for now: a noisy trend
can at most double the ask, never run to maxReplicas on its own."""

MAX_FIT_SECONDS = 600.0
"""The longest window the trend is fitted over."""

MIN_LEVELS = 3
"""Points needed before a trend counts: two points are a difference, not a trend."""


def learn_startup(
    replicas: Iterable[Replica],
    estimate: float | None,
    learned_until: float | None,
    now: float,
) -> tuple[float | None, float | None]:
    """The startup estimate after the replicas that became ready since ``learned_until``.

    Biased up on purpose: a slower start replaces the estimate at once, a faster one
    moves it a quarter of the way. Ordering too early costs a few GPU-minutes; ordering
    too late misses the SLO for a whole startup. Returns (estimate, learned_until).
    """
    fresh = sorted(
        (r.ready_at, r.ready_at - r.started_at)
        for r in replicas
        if r.ready_at is not None
        and r.ready_at <= now
        and r.ready_at >= r.started_at
        and (learned_until is None or r.ready_at > learned_until)
    )
    for ready_at, seconds in fresh:
        if estimate is None or seconds >= estimate:
            estimate = seconds
        else:
            estimate += UNLEARN_WEIGHT * (seconds - estimate)
        learned_until = ready_at
    return estimate, learned_until


def fit_window(stable_window_seconds: float, startup_seconds: float | None) -> float:
    """Seconds of levels the trend is fitted over: at least the stable window, and as
    long as the startup it is extrapolated over (up to :data:`MAX_FIT_SECONDS`), so a
    long extrapolation rests on as long a history, not on a minute of noise."""
    return max(stable_window_seconds, min(startup_seconds or 0.0, MAX_FIT_SECONDS))


@dataclass(frozen=True)
class Trend:
    """One signal's trend: a least-squares line through its recent levels."""

    slope: float
    """Replicas per second."""
    covers: float
    """Seconds the levels fitted cover: n levels read one period apart cover n periods
    (from the first to the last, and one period more)."""

    def ahead(self, startup_seconds: float) -> float:
        """Seconds it is extrapolated: the startup, but no further than its levels cover."""
        return min(startup_seconds, self.covers)


def trends(levels: Sequence[Level], window_seconds: float, now: float) -> dict[str, Trend]:
    """Per signal, the trend of its levels within the window; a signal with fewer than
    :data:`MIN_LEVELS` points has none."""
    inside = [level for level in levels if now - window_seconds < level.time <= now]
    series: dict[str, list[tuple[float, float]]] = {}
    for level in inside:
        for signal, needed in level.needed:
            series.setdefault(signal, []).append((level.time, needed))
    return {
        signal: Trend(_slope(points), _covered(points))
        for signal, points in series.items()
        if len(points) >= MIN_LEVELS
    }


def _covered(points: Sequence[tuple[float, float]]) -> float:
    first, last = min(t for t, _ in points), max(t for t, _ in points)
    return (last - first) * len(points) / (len(points) - 1)


def _slope(points: Sequence[tuple[float, float]]) -> float:
    mean_t = sum(t for t, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread == 0:
        return 0.0
    return sum((t - mean_t) * (y - mean_y) for t, y in points) / spread


def headroom(trend: Trend | None, startup_seconds: float | None, needed: float) -> float:
    """Replicas to add now for the load one startup ahead (:meth:`Trend.ahead`): upward
    only, capped."""
    if trend is None or startup_seconds is None or trend.slope <= 0:
        return 0.0
    return min(trend.slope * trend.ahead(startup_seconds), MAX_HEADROOM * needed)
