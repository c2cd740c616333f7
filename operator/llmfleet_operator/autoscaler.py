"""The built-in autoscaler in the operator: one control period of one LLMDeployment.

Called by :func:`llmfleet_operator.reconcile.reconcile` for LLMDeployments in
``autoscaling.mode: Builtin``, at most once per ``periodSeconds``: the reconcile asks
the work queue to come back when the next period is due, so there is no kopf timer and
no finalizer. A period turns the serving pods into the policy's replicas and the metrics
source's targets (the leader stands for a multi-node group), reads the source, runs
:func:`llmfleet_operator.autoscale.decide`, and gives the reconcile a :class:`Period`:
the new status (desired replicas, signals, the decision, ``MetricsAvailable`` and
``ScalingLimited``) and, on a scale-down, the pods' deletion costs, so the ReplicaSet
removes the replicas with the fewest requests in flight.

Recent samples and the policy's history live in this process's memory, per object.
After a restart or a change of leader the windows start empty and the idle clock
restarts; the policy handles that safely (it holds until it has samples, and waits a
whole idle timeout before scaling to zero).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from llmfleet_contract.api import (
    MAX_DECISIONS,
    AutoscalingMode,
    ConditionType,
    LLMDeployment,
    LLMDeploymentStatus,
    MetricsSourceKind,
    Reason,
    ScalingDecision,
    ScalingTargets,
    Signals,
)
from llmfleet_contract.metrics import PENDING_PREFILL_TOKENS, STARTED
from llmfleet_contract.pods import is_serving, ready_since, serving_url
from llmfleet_operator.autoscale import (
    Decision,
    History,
    Observation,
    Replica,
    ReplicaPhase,
    Sample,
    Signal,
    SignalReading,
    decide,
    deletion_order,
)
from llmfleet_operator.children import desired_replicas
from llmfleet_operator.metrics import (
    MetricsSource,
    Miss,
    MissReason,
    PrometheusSource,
    Target,
    redacted,
)
from llmfleet_operator.observe import (
    FALSE,
    TRUE,
    UNKNOWN,
    Verdict,
    blocked_by_gpus,
    set_condition,
)
from llmfleet_operator.placement import Room

Manifest = dict[str, Any]
SCALING_CONDITIONS = (ConditionType.METRICS_AVAILABLE, ConditionType.SCALING_LIMITED)
_SIGNAL_FIELDS = {
    Signal.PREFILL_QUEUE: "prefill_queue",
    Signal.PENDING_PREFILL_TOKENS: "pending_prefill_tokens",
    Signal.KV_CACHE_USAGE: "kv_cache_usage",
    Signal.SLOTS_USED: "slots_used",
    Signal.REQUEST_RATE: "requests_per_second",
}
SIGNALS_REFRESH_SECONDS = 600.0
"""How long the signals in the status may stand while no signal moves by its step: every
refresh is a write to the API server and etcd, which every controller shares. Live values are
in the operator's log and its metrics."""
SIGNAL_STEPS = {"prefill_queue": 1.0, "kv_cache_usage": 0.1, "slots_used": 0.1}
"""A move of one request waiting, or a tenth of the KV cache or of the slots, is news."""
RELATIVE_STEP = 0.25
"""For the other signals (pending tokens, request rate): a quarter of the shown value."""
_LIMITS = {
    Reason.AT_MAX_REPLICAS: "the policy asks for more than maxReplicas",
    Reason.AT_MIN_REPLICAS: "the policy asks for fewer than minReplicas",
    Reason.NO_WAKE_SOURCE: "scale to zero is on, but nothing would wake the model from zero",
    Reason.UNPLACEABLE: "the nodes have no room for the replicas the policy asks for",
}


def builtin(obj: LLMDeployment) -> bool:
    """Whether the built-in autoscaler sizes this LLMDeployment."""
    scaling = obj.spec.autoscaling
    return scaling is not None and scaling.mode is AutoscalingMode.BUILTIN


def _time(value: str | datetime | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    return datetime.fromisoformat(value).timestamp()


def serving_replicas(found: list[Manifest]) -> list[tuple[Replica, Target | None]]:
    """The replicas (serving pods, ready or starting) and, for the ready ones with an
    address, where to read their metrics."""
    replicas = []
    for pod in filter(is_serving, found):
        meta = pod["metadata"]
        since = ready_since(pod)
        replica = Replica(
            name=meta["name"],
            phase=ReplicaPhase.STARTING if since is None else ReplicaPhase.READY,
            started_at=_time(meta.get("creationTimestamp")) or 0.0,
            ready_at=_time(since),
        )
        url = serving_url(pod)
        target = Target(meta["name"], url, meta["name"], meta["namespace"]) if url else None
        replicas.append((replica, target))
    return sorted(replicas, key=lambda pair: pair[0].name)


def unexported(targets: ScalingTargets, samples: tuple[Sample, ...]) -> tuple[str, ...]:
    """The series a set target reads that no sample read now carries, and what that does."""
    if not samples:
        return ()
    absent = []
    if targets.requests_per_second is not None and all(s.started is None for s in samples):
        absent.append(f"{STARTED} (targets.requestsPerSecond; without it no scale-down)")
    if targets.pending_prefill_tokens_per_replica is not None and all(
        s.pending_prefill_tokens is None for s in samples
    ):
        absent.append(
            f"{PENDING_PREFILL_TOKENS} (targets.pendingPrefillTokensPerReplica; the other"
            " signals decide)"
        )
    return tuple(absent)


def metrics_verdict(
    ready: int, missing: tuple[Miss, ...], source: str, absent: tuple[str, ...] = ()
) -> Verdict:
    """``MetricsAvailable``: every ready replica read, or why not (the policy then holds),
    or the ``absent`` series a target needs."""
    if not missing:
        if ready == 0:
            return Verdict(UNKNOWN, Reason.METRICS_MISSING, "no ready replica to read")
        if absent:
            message = f"{ready} of {ready} ready replicas read, none with " + "; ".join(absent)
            return Verdict(FALSE, Reason.METRICS_MISSING, message)
        return Verdict(TRUE, Reason.METRICS_FRESH, f"{ready} of {ready} ready replicas read")
    reasons = {miss.reason for miss in missing}
    if MissReason.SOURCE_UNREACHABLE in reasons:
        reason = Reason.METRICS_SOURCE_UNREACHABLE
    elif reasons == {MissReason.STALE}:
        reason = Reason.METRICS_STALE
    else:
        reason = Reason.METRICS_MISSING
    details = "; ".join(f"{m.replica}: {m.detail}" for m in missing[:3])
    more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
    message = f"{len(missing)} of {ready} ready replicas not read from {source}: {details}{more}"
    return Verdict(FALSE, reason, message)


def limited_verdict(decision: Decision) -> Verdict:
    """``ScalingLimited``: True when a bound stopped the policy (GPUs: see observe)."""
    if decision.reason in _LIMITS:
        return Verdict(TRUE, decision.reason, f"{_LIMITS[decision.reason]}: {decision.message}")
    return Verdict(FALSE, Reason.WITHIN_RANGE, f"{decision.desired} replicas: within bounds")


def deletion_costs(order: tuple[str, ...]) -> dict[str, int]:
    """``pod-deletion-cost`` per pod: the first to go costs least."""
    return {name: rank for rank, name in enumerate(order)}


def scaled_status(
    old: LLMDeploymentStatus,
    decision: Decision,
    metrics: Verdict,
    sampled_at: float | None,
    now: datetime,
    generation: int | None,
    schedule: str | None = None,
) -> LLMDeploymentStatus:
    """The status after one period: desired replicas, signals, decisions, conditions, and
    the ``schedule`` open."""
    values: dict[str, Any] = {
        _SIGNAL_FIELDS[reading.signal]: round(reading.per_replica, 4)
        for reading in decision.signals
    }
    if sampled_at is not None:
        values["sampled_at"] = datetime.fromtimestamp(round(sampled_at), UTC)
    if decision.history.startup_seconds is not None:
        values["learned_startup_seconds"] = round(decision.history.startup_seconds, 1)
    decisions = list(old.decisions or [])
    if decision.changed:
        record = ScalingDecision(
            time=now.replace(microsecond=0),
            from_replicas=decision.current,
            to_replicas=decision.desired,
            reason=decision.reason,
            message=decision.message[:1024],
        )
        decisions = [*decisions, record][-MAX_DECISIONS:]
    previous = old.conditions or []
    verdicts = {ConditionType.METRICS_AVAILABLE: metrics}
    limited = limited_verdict(decision)
    if limited.status is TRUE or not blocked_by_gpus(previous):  # observe's to clear
        verdicts[ConditionType.SCALING_LIMITED] = limited
    fresh = [set_condition(previous, kind, v, now, generation) for kind, v in verdicts.items()]
    return old.model_copy(
        update={
            "observed_generation": generation,
            "desired_replicas": decision.desired,
            "schedule": schedule,
            "signals": settled(old.signals, Signals(**values) if values else None, now),
            "decisions": decisions or None,
            "conditions": [c for c in previous if c.type not in verdicts] + fresh,
        }
    )


def settled(old: Signals | None, new: Signals | None, now: datetime) -> Signals | None:
    """The signals to show: ``new`` when one moved by its step since ``old`` was shown (or
    appeared, or went), when the startup time learned changed, or when ``old`` is older than
    SIGNALS_REFRESH_SECONDS; else ``old``, and the status needs no write for them."""
    if old is None or new is None or old.sampled_at is None:
        return new
    if (now - old.sampled_at).total_seconds() >= SIGNALS_REFRESH_SECONDS:
        return new
    if old.learned_startup_seconds != new.learned_startup_seconds:
        return new
    for name in _SIGNAL_FIELDS.values():
        shown, fresh = getattr(old, name), getattr(new, name)
        if shown is None or fresh is None:
            if shown is not fresh:
                return new
            continue
        step = SIGNAL_STEPS.get(name, RELATIVE_STEP * max(abs(shown), 1.0))
        if round(abs(fresh - shown), 9) >= step:  # 0.5 - 0.4 is 0.0999...
            return new
    return old


def resumed(status: LLMDeploymentStatus | None, now: float) -> History:
    """The policy's memory at this process's first period of an object (after a restart
    or a change of leader): the startup time learned before, from the status, and no
    lesson from replicas already ready, whose Ready time may be a later flap of readiness
    rather than the end of their start."""
    signals = status.signals if status is not None else None
    learned = signals.learned_startup_seconds if signals is not None else None
    return History(startup_seconds=learned, learned_until=now)


def without_scaling(status: LLMDeploymentStatus) -> LLMDeploymentStatus:
    """The status of an object the built-in autoscaler no longer sizes (decisions kept)."""
    conditions = [c for c in status.conditions or [] if c.type not in SCALING_CONDITIONS]
    return status.model_copy(update={"signals": None, "conditions": conditions or None})


@dataclass(frozen=True)
class Period:
    """What one control period decided, for the reconcile to write."""

    decision: Decision
    status: LLMDeploymentStatus
    """The object's status with the period's results in it."""
    deletion_costs: dict[str, int]
    """Pod name -> ``pod-deletion-cost``; set before a Deployment's scale-down, else empty
    (a LeaderWorkerSet removes its highest-numbered groups)."""
    metrics: Verdict


@dataclass
class _State:
    uid: str
    history: History = field(default_factory=History)
    samples: list[Sample] = field(default_factory=list)
    last_run: float | None = None
    source: tuple[str, float] | None = None
    """The Prometheus (URL, staleness) this object reads; None: its pods' /metrics."""
    readings: dict[str, SignalReading] = field(default_factory=dict)
    """The signals the last period read, by their name in the status."""
    first_ready: dict[tuple[str, float], float] = field(default_factory=dict)
    """When each pod (name and creation: a LeaderWorkerSet's recreated leader keeps its
    name) was first seen Ready: a later flap of readiness moves the pod's Ready
    transition, which must not read as a slow start."""

    def remember_first_ready(self, replicas: tuple[Replica, ...]) -> tuple[Replica, ...]:
        for replica in replicas:
            if replica.ready_at is not None:
                self.first_ready.setdefault((replica.name, replica.started_at), replica.ready_at)
        present = {(replica.name, replica.started_at) for replica in replicas}
        self.first_ready = {k: t for k, t in self.first_ready.items() if k in present}
        return tuple(
            replace(r, ready_at=self.first_ready[r.name, r.started_at])
            if r.ready_at is not None
            else r
            for r in replicas
        )


class Autoscaler:
    """Per-object memory and metrics sources; :meth:`run` is one control period.

    ``prometheus`` makes a source for a Prometheus URL and staleness (a seam for tests);
    sources are kept per URL while an object reads it, then closed. Reconciles of
    different objects may call in parallel.
    """

    def __init__(
        self,
        direct: MetricsSource,
        prometheus: Callable[[str, float], MetricsSource] = PrometheusSource,
    ) -> None:
        self._direct = direct
        self._make_prometheus = prometheus
        self._sources: dict[tuple[str, float], MetricsSource] = {}
        self._states: dict[tuple[str, str], _State] = {}
        self._lock = threading.Lock()

    def _state(self, obj: LLMDeployment, uid: str) -> _State:
        key = (obj.metadata.namespace or "", obj.metadata.name)
        with self._lock:
            state = self._states.get(key)
            if state is None or state.uid != uid:  # a new object under an old name
                state = self._states[key] = _State(uid)
            return state

    def _source(self, obj: LLMDeployment, state: _State) -> tuple[MetricsSource, str]:
        metrics = obj.spec.autoscaling.metrics  # type: ignore[union-attr]
        key = None
        if metrics.source is MetricsSourceKind.PROMETHEUS and metrics.prometheus_url:
            key = (metrics.prometheus_url, float(metrics.staleness_seconds))
        with self._lock:
            if state.source != key:
                state.source = key
                self._prune()
            if key is None:
                return self._direct, "their /metrics"
            if key not in self._sources:
                self._sources[key] = self._make_prometheus(*key)
            return self._sources[key], f"Prometheus at {redacted(key[0])}"

    def _prune(self) -> None:
        """Close the Prometheus sources no object reads any more (under the lock)."""
        used = {state.source for state in self._states.values()}
        for key in [key for key in self._sources if key not in used]:
            _close(self._sources.pop(key))

    def forget(self, namespace: str, name: str) -> None:
        """Drop the memory of an object deleted or no longer autoscaled, and the source
        only it read."""
        with self._lock:
            if self._states.pop((namespace, name), None) is not None:
                self._prune()

    def live(self) -> list[tuple[str, str, dict[str, SignalReading]]]:
        """Each autoscaled object's signals as its last period read them, by their name in
        the status: in full for the operator's metrics (the status shows them only when one
        moves by its step)."""
        with self._lock:
            return [(*key, dict(state.readings)) for key, state in self._states.items()]

    def due_in(self, obj: LLMDeployment, uid: str, now: float) -> float:
        """Seconds until the next period (0 or less: due now)."""
        period = obj.spec.autoscaling.period_seconds  # type: ignore[union-attr]
        last = self._state(obj, uid).last_run
        return 0.0 if last is None else last + period - now

    def run(
        self,
        obj: LLMDeployment,
        uid: str,
        pods: list[Manifest],
        now: datetime,
        room: Callable[[], Room | None] | None = None,
    ) -> Period:
        """One control period: read the metrics, decide, and say what to write. ``room``
        says how many more replicas fit on the nodes (None: unknown), asked only when the
        policy wants more than exist (a new object: its first size too): it asks for the
        replicas that exist and what fits, and says what is short."""
        scaling = obj.spec.autoscaling
        if scaling is None:
            raise ValueError("the LLMDeployment has no spec.autoscaling")
        namespace, name = obj.metadata.namespace or "", obj.metadata.name
        state, clock = self._state(obj, uid), now.timestamp()
        if state.last_run is None:
            state.history = resumed(obj.status, clock)
        source, where = self._source(obj, state)
        pairs = serving_replicas(pods)
        targets = [target for _, target in pairs if target is not None]
        readings = source.samples(targets, clock)
        seen = {(s.replica, s.time) for s in state.samples}
        keep = max(scaling.stable_window_seconds, scaling.metrics.staleness_seconds)
        state.samples = [
            s
            for s in (
                *state.samples,
                *(s for s in readings.samples if (s.replica, s.time) not in seen),
            )
            if clock - s.time <= keep + scaling.period_seconds
        ]
        replicas = state.remember_first_ready(tuple(replica for replica, _ in pairs))
        # A replica the source could not read now is missing now, however fresh its last
        # sample: the policy holds, as MetricsAvailable says.
        unread = {miss.replica for miss in readings.missing}
        observation = Observation(
            current=desired_replicas(obj),
            replicas=replicas,
            samples=tuple(s for s in state.samples if s.replica not in unread),
            gateway_pending=source.gateway_pending(namespace, name, clock),
        )
        bounded, open_ = scaling.at(now)
        spec = obj.spec.model_copy(update={"autoscaling": bounded})
        decision = decide(spec, observation, state.history, clock)
        if open_ and decision.reason in _LIMITS:
            decision = replace(
                decision, message=f"{decision.message} (schedule {', '.join(open_)})"
            )
        more = decision.desired - len(replicas)  # a new object has none yet
        if more > 0 and room is not None and (fits := room()) is not None and fits.replicas < more:
            resource = obj.spec.placement.gpu_resource_name
            decision = replace(
                decision,
                desired=len(replicas) + fits.replicas,
                reason=Reason.UNPLACEABLE,
                message=f"{decision.message}; {fits.shortfall(more, resource)}",
            )
        state.history, state.last_run = decision.history, clock
        state.readings = {_SIGNAL_FIELDS[reading.signal]: reading for reading in decision.signals}
        absent = unexported(scaling.targets, readings.samples)
        metrics = metrics_verdict(len(targets), readings.missing, where, absent)
        newest = max((s.time for s in state.samples), default=None)
        status = scaled_status(
            obj.status or LLMDeploymentStatus(),
            decision,
            metrics,
            newest,
            now,
            obj.metadata.generation,
            ",".join(open_) or None,
        )
        costs: dict[str, int] = {}
        if decision.desired < decision.current and obj.spec.parallelism.nodes_per_group == 1:
            order = deletion_order(
                replicas, tuple(state.samples), clock, scaling.stable_window_seconds
            )
            costs = deletion_costs(order)
        return Period(decision, status, costs, metrics)

    def close(self) -> None:
        """Close the Prometheus sources' connections."""
        with self._lock:
            for source in self._sources.values():
                _close(source)
            self._sources.clear()


def _close(source: MetricsSource) -> None:
    close = getattr(source, "close", None)
    if close is not None:
        close()
