"""The policies under simulation: ours, a static fleet, and :func:`make_policy` for all six.

Called by :func:`llmfleet_fleetsim.simulate`, the CLI and the autoscaling bench.
Each policy is a small class with the :class:`~.view.Policy` shape; the four baselines
(HPA, KEDA, Knative KPA, llm-d) live in :mod:`.baselines`. A policy object keeps the
memory a real controller would keep between periods, so use a fresh one per replay.

Every autoscaler starts the replay with ``max(1, minReplicas)`` warm replicas and keeps
within the spec's ``minReplicas``/``maxReplicas`` (HPA-driven ones never go below one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from llmfleet_contract.api import LLMDeploymentSpec
from llmfleet_fleetsim.baselines import HpaPolicy, KedaPolicy, KpaPolicy, LlmdPolicy
from llmfleet_fleetsim.view import FleetView, Policy
from llmfleet_operator.autoscale import Decision, History, Observation, decide, deletion_order

POLICY_NAMES = ("llmfleet", "static", "hpa", "keda", "kpa", "llm-d")
"""Names accepted by :func:`make_policy` and ``--policy``."""

MAIN_TARGET = {
    "llmfleet": "prefill queue per replica (spec.autoscaling.targets.prefillQueuePerReplica)",
    "static": "replicas",
    "hpa": "vllm:num_requests_running per pod (default: slotsUsed x maxNumSeqs)",
    "keda": "vllm:num_requests_waiting per replica, the trigger threshold (default 5)",
    "kpa": "requests in flight per pod (default: slotsUsed x maxNumSeqs)",
    "llm-d": "kvCacheThreshold, KV usage at which a replica is saturated (default 0.8)",
}
"""What ``target`` overrides for each policy (for sweeps)."""


@dataclass
class LlmfleetPolicy:
    """Ours: :func:`llmfleet_operator.autoscale.decide` with the deployment's spec.

    Decides every ``spec.autoscaling.periodSeconds``, passes back the decision's history,
    keeps the last decision (with its reason) for inspection, and orders scale-down
    victims as the operator does (:meth:`victim_order`); every other policy gets the
    ReplicaSet's default order.
    """

    spec: LLMDeploymentSpec
    name: str = "llmfleet"
    history: History = field(default_factory=History)
    last: Decision | None = None
    start: datetime | None = None
    """The wall-clock time of the replay's second 0: ``spec.autoscaling.schedules`` set
    the bounds by it, as in the operator."""
    clock_speed: float = 1.0
    """Seconds of that wall clock per second of the replay: above 1, a compressed week
    (:func:`llmfleet_fleetsim.week.week_load`) whose schedules open and close faster."""

    def __post_init__(self) -> None:
        if self.spec.autoscaling is None:
            raise ValueError("the llmfleet policy needs spec.autoscaling")

    @property
    def period_s(self) -> float:
        assert self.spec.autoscaling is not None
        return float(self.spec.autoscaling.period_seconds)

    @property
    def initial_replicas(self) -> int:
        assert self.spec.autoscaling is not None
        return max(1, self.spec.autoscaling.min_replicas)

    def decide(self, view: FleetView, now: float) -> int:
        observed = Observation(
            current=view.current,
            replicas=view.replicas,
            samples=view.samples,
            gateway_pending=view.gateway_pending,
        )
        spec = self.spec
        if self.start is not None and spec.autoscaling is not None:
            wall = self.start + timedelta(seconds=now * self.clock_speed)
            bounded, _ = spec.autoscaling.at(wall)
            spec = spec.model_copy(update={"autoscaling": bounded})
        self.last = decide(spec, observed, self.history, now)
        self.history = self.last.history
        return self.last.desired

    def victim_order(self, view: FleetView, now: float) -> tuple[str, ...]:
        """Scale-down victims, first to go first: what the operator sets through
        pod-deletion-cost (:func:`llmfleet_operator.autoscale.deletion_order`, replicas
        ready for less than the stable window go last)."""
        assert self.spec.autoscaling is not None
        settle = float(self.spec.autoscaling.stable_window_seconds)
        return deletion_order(view.replicas, view.samples, now, settle)


@dataclass
class StaticPolicy:
    """A fixed fleet of ``replicas``, warm from the start (the "provision for the peak" baseline).

    ``replicas=None`` asks :func:`~llmfleet_fleetsim.simulate` to use the
    oracle's peak need.
    """

    replicas: int | None
    name: str = "static"
    period_s: float = 60.0

    @property
    def initial_replicas(self) -> int:
        return self.replicas or 0

    def decide(self, view: FleetView, now: float) -> int:
        return self.replicas or 0


def make_policy(
    name: str,
    spec: LLMDeploymentSpec,
    target: float | None = None,
    *,
    replicas: int | None = None,
    start: datetime | None = None,
) -> Policy:
    """A fresh policy called ``name`` (one of :data:`POLICY_NAMES`) for ``spec``.

    ``target`` overrides the policy's main target (see :data:`MAIN_TARGET`), for sweeps;
    ``replicas`` sets the static fleet's size (``target`` also does, rounded).
    ``spec.autoscaling`` must be set for every policy but ``static``; it gives the bounds
    and, for ours, everything else. ``start``: the wall-clock time of the replay's second
    0, by which ours keeps ``spec.autoscaling.schedules`` (refused without it, and for the
    other autoscalers, which have no schedules).
    """
    if name == "static":
        count = replicas if replicas is not None else None if target is None else round(target)
        if count is not None and count < 1:
            raise ValueError(f"a static fleet needs at least one replica, got {count}")
        return StaticPolicy(count)
    if name not in POLICY_NAMES:
        raise ValueError(f"unknown policy {name!r}; known: {', '.join(POLICY_NAMES)}")
    if spec.autoscaling is None:
        raise ValueError(f"the {name} policy needs spec.autoscaling (min and max replicas)")
    if target is not None and target <= 0:
        raise ValueError(f"the target must be positive, got {target}")
    if spec.autoscaling.schedules and (start is None or name != "llmfleet"):
        raise ValueError(
            "spec.autoscaling.schedules: the llmfleet policy keeps them when the replay has"
            " a wall clock (--start-time, the time of the trace's first second)"
        )
    scaling = spec.autoscaling
    slots = spec.engine.max_num_seqs
    if name == "llmfleet":
        if target is not None:
            targets = scaling.targets.model_copy(update={"prefill_queue_per_replica": target})
            scaling = scaling.model_copy(update={"targets": targets})
            spec = spec.model_copy(update={"autoscaling": scaling})
        return LlmfleetPolicy(spec, start=start)
    lowest, highest = scaling.min_replicas, scaling.max_replicas
    if name == "hpa":
        per_pod = target if target is not None else scaling.targets.slots_used * slots
        return HpaPolicy(per_pod, lowest, highest)
    if name == "keda":
        return KedaPolicy(target if target is not None else 5.0, lowest, highest)
    if name == "kpa":
        per_pod = target if target is not None else scaling.targets.slots_used * slots
        return KpaPolicy(per_pod, lowest, highest)
    if target is not None and target > 1:
        raise ValueError(f"llm-d's kvCacheThreshold is a fraction in (0, 1], got {target}")
    return LlmdPolicy(target if target is not None else 0.8, lowest, highest)
