"""The seam between the simulated fleet and a scaling policy: what a policy sees, and the Protocol.

Built by :mod:`.fleet` at each control period; read by the policies in :mod:`.policies`
and :mod:`.baselines`. A policy sees only what a real autoscaler would: the replica count
it asked for, which replicas exist and whether they are ready, and the samples its
metrics pipeline has delivered by ``now`` (scraped every scrape interval, visible after
the lag). It never sees the engines themselves.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from llmfleet_operator.autoscale import Replica, ReplicaPhase, Sample


@dataclass(frozen=True)
class FleetView:
    """One control period's view of the fleet."""

    current: int
    """Replicas asked for now: ready plus starting (draining ones are gone for the policy)."""
    replicas: tuple[Replica, ...]
    """Replicas that exist and are not draining."""
    samples: tuple[Sample, ...]
    """Engine samples delivered by now, oldest first (a window of recent history)."""
    gateway_pending: int | None
    """Requests queued at the gateway in the newest delivered scrape (None before any)."""

    @property
    def ready(self) -> tuple[str, ...]:
        """Names of the ready replicas."""
        return tuple(r.name for r in self.replicas if r.phase is ReplicaPhase.READY)

    def latest(self, since: float) -> dict[str, Sample]:
        """The newest sample of each ready replica taken at or after ``since``."""
        ready = set(self.ready)
        newest: dict[str, Sample] = {}
        for sample in self.samples:
            if sample.replica in ready and sample.time >= since:
                newest[sample.replica] = sample
        return newest

    def window(self, since: float) -> dict[str, list[Sample]]:
        """Every sample of each ready replica taken at or after ``since``, oldest first, or
        its newest sample when none is that recent (a window shorter than the scrape
        interval still sees the last scrape); a replica never sampled is absent."""
        ready = set(self.ready)
        grouped: dict[str, list[Sample]] = {}
        for sample in self.samples:
            if sample.replica in ready and sample.time >= since:
                grouped.setdefault(sample.replica, []).append(sample)
        for name, sample in self.latest(-math.inf).items():
            grouped.setdefault(name, [sample])
        return grouped


class Policy(Protocol):
    """A scaling policy under simulation: one decision per control period.

    Optionally ``victim_order(view, now) -> tuple[str, ...] | None``: the replicas to
    remove first on scale-down (ours sets it, as the operator does through
    pod-deletion-cost); without it, or on None, the fleet uses the ReplicaSet's order.
    """

    @property
    def name(self) -> str:
        """Short name, as given to ``--policy``."""
        ...

    @property
    def period_s(self) -> float:
        """Seconds between two decisions (the policy's documented control period)."""
        ...

    @property
    def initial_replicas(self) -> int:
        """Replicas ready when the replay starts (warm)."""
        ...

    def decide(self, view: FleetView, now: float) -> int:
        """Replicas wanted from now on."""
        ...


def mean(values: Iterable[float]) -> float:
    """The average of ``values`` (0 for none)."""
    total = count = 0.0
    for value in values:
        total += value
        count += 1
    return total / count if count else 0.0
