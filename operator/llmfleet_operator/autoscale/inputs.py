"""What the scaling policy reads: engine samples, replica states and its own history.

Plain frozen dataclasses, built by the autoscaler's metrics sources and the operator's
timer (or by the fleet simulator), and read by :func:`llmfleet_operator.autoscale.decide`.
All times are seconds on one clock shared by the samples and ``now`` (the caller picks
the clock: wall time in the operator, simulated time in the simulator).

One replica is one serving group: in a multi-node group only the leader reports, so a
sample and a replica state each stand for a whole group, and the policy scales by groups.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


@dataclass(frozen=True)
class Sample:
    """One scrape of one replica's engine (and the gateway's view of it)."""

    time: float
    """When the sample was taken."""
    replica: str
    """The replica (serving group) it describes."""
    waiting: int
    """Requests waiting for prefill (``vllm:num_requests_waiting``)."""
    pending_prefill_tokens: int | None
    """Prompt tokens the gateway sent with no first token yet; None: not exported."""
    kv_cache_usage: float
    """KV-cache (HBM) usage, 0..1 (``vllm:kv_cache_usage_perc``)."""
    running: int
    """Requests being decoded (``vllm:num_requests_running``)."""
    started: float | None = None
    """Requests that got their first token since the engine started (the counter
    ``vllm:time_to_first_token_seconds_count``: the policy reads its rate); None: not
    exported."""

    @property
    def busy(self) -> bool:
        """Whether the replica had any request at all."""
        return self.waiting > 0 or self.running > 0 or bool(self.pending_prefill_tokens)


class ReplicaPhase(StrEnum):
    """Where a replica is in its life."""

    READY = "Ready"
    STARTING = "Starting"


@dataclass(frozen=True)
class Replica:
    """A replica (serving group) that exists."""

    name: str
    """Same as :attr:`Sample.replica`."""
    phase: ReplicaPhase
    """Ready replicas are measured; starting ones count as capacity to come."""
    started_at: float
    """When its pod (the leader's, for a group) was created."""
    ready_at: float | None = None
    """When it became Ready; None while starting or when unknown. With ``started_at`` it
    teaches the policy the model's startup time."""


@dataclass(frozen=True)
class Observation:
    """What the autoscaler sees at one control period."""

    current: int
    """Replicas the child workload asks for now (ready, starting and not yet created)."""
    replicas: tuple[Replica, ...] = ()
    """Replicas that exist."""
    samples: tuple[Sample, ...] = ()
    """Recent samples, at least a stable window's worth; older ones are ignored."""
    gateway_pending: int | None = None
    """Requests queued at the gateway for this model (``llmfleet_gateway_pending_requests``);
    None: no gateway reports it."""


@dataclass(frozen=True)
class Recommendation:
    """What one control period asked for, before stabilization and step limits."""

    time: float
    replicas: int


@dataclass(frozen=True)
class History:
    """The policy's memory, handed back in each :class:`Decision` and passed to the next call.

    An empty history (after an operator restart) is safe: the idle clock restarts, and
    no scale-down happens until the policy has watched a whole scale-down window (the
    peak it would have kept is unknown).
    """

    recommendations: tuple[Recommendation, ...] = field(default=())
    """Recommendations within the longer stabilization window, oldest first."""
    last_panic_at: float | None = None
    """When the short window last asked for ``panicThreshold`` x the ready replicas."""
    last_demand_at: float | None = None
    """When any request was last seen (for the idle timeout)."""
    startup_seconds: float | None = None
    """The model's learned startup time (creation to Ready); None until a replica was
    seen both started and ready."""
    learned_until: float | None = None
    """The latest ``ready_at`` already learned from, so each start counts once."""
    levels: tuple[Level, ...] = field(default=())
    """Replicas each signal asked for at recent periods, oldest first: the load's trend."""
    watching_since: float | None = None
    """When this history's first decision was made."""
    scaled_down_at: float | None = None
    """When the policy last asked for fewer replicas: the trend is fitted only to levels
    read a stable window after it."""


@dataclass(frozen=True)
class Level:
    """Replicas each signal asked for at one control period (its stable-window reading)."""

    time: float
    needed: tuple[tuple[str, float], ...]
    """(signal name, replicas) pairs."""
