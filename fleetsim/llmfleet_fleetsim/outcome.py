"""What one replay produced, raw: per-request times, replica-seconds, changes, a timeline.

Produced by :func:`.fleet.run`; turned into numbers by :mod:`.report` (and read directly
by benches that need more than the report). Plain frozen dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmfleet_fleetsim.preemption import Preempted


@dataclass(frozen=True)
class Change:
    """One applied change of the replica count."""

    time: float
    before: int
    after: int


@dataclass(frozen=True)
class Point:
    """The fleet at one scrape, for the plot."""

    time: float
    in_flight: int
    """Requests in the engines plus those queued at the gateway."""
    gateway_pending: int
    ready: int
    total: int
    """Every replica that costs GPU time: ready, starting and draining."""
    spot: int = 0
    """Of ``total``, those on spot (0 when the replay models no tiers)."""


@dataclass(frozen=True)
class Outcome:
    """What happened during one replay (raw; :mod:`.report` turns it into numbers)."""

    end_s: float
    """When the last request finished (or the replay gave up)."""
    first_token: tuple[float | None, ...]
    """Per trace request: when its first token came out (None: never)."""
    last_token: tuple[float | None, ...]
    rejected: tuple[bool, ...]
    """Per trace request: refused (longer than the engine's max model length)."""
    replica_seconds: float
    """Sum over replicas of the time from creation to removal (or the end)."""
    changes: tuple[Change, ...]
    capacity_delays: tuple[float, ...]
    """Per scale-up: seconds from the first sample asking for it to a new replica Ready."""
    timeline: tuple[Point, ...]
    lost: tuple[bool, ...] = ()
    """Per trace request: lost with a preempted replica (empty: no preemptions modelled)."""
    preempted: tuple[Preempted, ...] = ()
