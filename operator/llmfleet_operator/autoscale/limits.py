"""Limits on a recommendation: bounds, stabilization windows and step limits.

Called by :mod:`llmfleet_operator.autoscale.policy` after it has a recommendation.
Stabilization follows the HPA's behaviour: scale up only to the lowest recommendation
of the scale-up window, down only to the highest of the scale-down window. Each limit is
monotone in the recommendation, so more load never yields fewer replicas.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from llmfleet_operator.autoscale.inputs import Recommendation


def clamp(value: int, lowest: int, highest: int) -> int:
    """``value`` moved into [lowest, highest]."""
    return max(lowest, min(highest, value))


def max_step(limit: int | str, current: int) -> int:
    """Replicas one period may add or remove: a count, or a percentage of ``current``
    rounded up; at least one, so a limit never freezes the fleet."""
    if isinstance(limit, str):
        return max(1, math.ceil(current * int(limit.rstrip("%")) / 100))
    return max(1, limit)


def within_window(
    recommendations: Sequence[Recommendation], window_seconds: float, now: float
) -> list[int]:
    """Replica counts recommended within the last ``window_seconds`` (the window's start
    excluded)."""
    return [r.replicas for r in recommendations if now - window_seconds < r.time <= now]


def stabilize(
    recommendation: int,
    current: int,
    history: Sequence[Recommendation],
    up_window_seconds: float,
    down_window_seconds: float,
    now: float,
) -> int:
    """The replicas to move to: up to the lowest recommendation of the scale-up window,
    down to the highest of the scale-down window, else stay."""
    up_to = min([recommendation, *within_window(history, up_window_seconds, now)])
    down_to = max([recommendation, *within_window(history, down_window_seconds, now)])
    if current < up_to:
        return up_to
    if current > down_to:
        return down_to
    return current
