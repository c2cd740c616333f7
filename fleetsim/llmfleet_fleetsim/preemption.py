"""Spot preemptions in the simulated fleet: which replicas run on spot, and when a notice comes.

Called by :mod:`.fleet` when :func:`.fleet.run` is given ``preemptions=`` (without it the
fleet has no tiers and nothing here runs). The model:

* **Tiers by count**: at every instant the oldest ``on_demand(now)`` replicas not under
  notice run on demand and the rest on spot, as the operator's
  :func:`llmfleet_operator.placement.split` shares a fleet between its two workloads (the
  on-demand floor first). A replica changes tier, for free and at once, when the floor
  moves or an older one goes: the operator's moves between the workloads (a new replica
  on the other tier, the old one removed once it is ready) are not modelled.
* **Notices**: each spot replica gets preemption notices as a Poisson process of
  ``rate_per_hour`` per replica-hour of the replay's clock. The fleet's spot replicas
  together are one Poisson process of ``rate x spot replicas``: :class:`SpotMarket` draws
  the spot replica-seconds until the next notice (exponential, seeded) and spends them as
  the replay runs; the replica hit is drawn uniformly among the spot ones.
* **A notice** (the operator drains the pod at once): the replica takes no new request,
  its engine finishes what it can within ``notice_s``, and whatever is still in it then is
  lost (never answered: an SLO miss). A replacement is created at once, on spot (spot
  capacity is assumed back at once, on another node), and serves a startup later. A
  replica under notice is priced at spot until it goes.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Preemptions:
    """How spot replicas are preempted in a replay (module docstring)."""

    rate_per_hour: float
    """Notices per spot replica-hour of the replay's clock (0: tiers priced, none preempted)."""
    notice_s: float
    """From a notice to the node's end (GKE gives 30 s, AWS 120 s)."""
    on_demand: Callable[[float], int]
    """The on-demand floor at a replay second: that many replicas (the oldest) run on demand."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rate_per_hour < 0 or self.notice_s < 0:
            raise ValueError("need rate_per_hour >= 0 and notice_s >= 0")


@dataclass(frozen=True)
class Preempted:
    """One notice and what it cost."""

    time: float
    replica: str
    lost: int
    """Requests still in its engine at the end of the notice."""


class SpotMarket:
    """The seeded Poisson process of notices over the fleet's spot replicas.

    :meth:`next_notice` says when the next notice falls if ``exposed`` spot replicas stay
    as they are; :meth:`elapse` spends the spot replica-seconds up to ``now`` at that
    count; :meth:`pick` draws the replica hit and the exposure until the next notice."""

    def __init__(self, rate_per_hour: float, seed: int) -> None:
        self.rate_per_s = rate_per_hour / 3600.0
        self.rng = random.Random(seed)
        self.left = self._draw()
        """Spot replica-seconds until the next notice."""
        self.at = 0.0
        self.exposed = 0

    def _draw(self) -> float:
        return self.rng.expovariate(self.rate_per_s) if self.rate_per_s > 0 else math.inf

    def next_notice(self, exposed: int) -> float:
        self.exposed = exposed
        if exposed == 0 or math.isinf(self.left):
            return math.inf
        return self.at + self.left / exposed

    def elapse(self, now: float) -> None:
        if self.exposed and not math.isinf(self.left):
            self.left = max(0.0, self.left - self.exposed * (now - self.at))
        self.at = now

    def pick(self, spot: list[T]) -> T | None:
        """The replica a notice hits (None when no replica is on spot), and a new draw."""
        self.left = self._draw()
        return self.rng.choice(spot) if spot else None


def spot_count(uncut: int, noticed: int, floor: int) -> int:
    """Replicas priced at spot: those above the floor, and every one under notice."""
    return noticed + max(0, uncut - floor)
