"""What the operator reports: ``status``, its condition types and the one reason enum.

Conventions (Kubernetes API conventions, read by kstatus for Flux and by Argo CD):
``observedGeneration`` says which spec the status describes; conditions are
metav1.Condition-shaped and change ``lastTransitionTime`` only when their status flips;
``Reconciling`` and ``Stalled`` follow kstatus' abnormal-true convention beside the
human-facing ``Ready``, ``Progressing`` and ``Degraded``. The status is written only
when it changed.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field

from llmfleet_contract.api.base import ApiModel

MAX_DECISIONS = 10
"""Scaling decisions kept in ``status.decisions`` (newest last)."""


class ConditionType(StrEnum):
    """Condition types an LLMDeployment reports."""

    READY = "Ready"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    SCALING_LIMITED = "ScalingLimited"
    METRICS_AVAILABLE = "MetricsAvailable"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"


class ConditionStatus(StrEnum):
    """A condition's truth value."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Reason(StrEnum):
    """Every condition and scaling-decision reason, in one place."""

    # Ready
    ALL_REPLICAS_READY = "AllReplicasReady"
    REPLICAS_NOT_READY = "ReplicasNotReady"
    SCALED_TO_ZERO = "ScaledToZero"
    INVALID_SPEC = "InvalidSpec"
    # Progressing / Reconciling
    ROLLING_OUT = "RollingOut"
    ROLLOUT_COMPLETE = "RolloutComplete"
    # Degraded / Stalled
    INSUFFICIENT_GPUS = "InsufficientGPUs"
    UNSCHEDULABLE = "Unschedulable"
    CRASH_LOOP = "CrashLoop"
    IMAGE_UNAVAILABLE = "ImageUnavailable"
    CONTAINER_CONFIG_ERROR = "ContainerConfigError"
    FAILED_CREATE = "FailedCreate"
    APPLY_FAILED = "ApplyFailed"
    CHILD_CONFLICT = "ChildConflict"
    AS_EXPECTED = "AsExpected"
    # MetricsAvailable
    METRICS_FRESH = "MetricsFresh"
    METRICS_STALE = "MetricsStale"
    METRICS_MISSING = "MetricsMissing"
    METRICS_SOURCE_UNREACHABLE = "MetricsSourceUnreachable"
    # ScalingLimited
    AT_MAX_REPLICAS = "AtMaxReplicas"
    AT_MIN_REPLICAS = "AtMinReplicas"
    BLOCKED_BY_GPUS = "BlockedByGPUs"
    NO_WAKE_SOURCE = "NoWakeSource"
    UNPLACEABLE = "Unplaceable"
    WITHIN_RANGE = "WithinRange"
    # Scaling decisions
    PREFILL_QUEUE_ABOVE_TARGET = "PrefillQueueAboveTarget"
    PENDING_TOKENS_ABOVE_TARGET = "PendingTokensAboveTarget"
    KV_CACHE_ABOVE_TARGET = "KVCacheAboveTarget"
    SLOTS_ABOVE_TARGET = "SlotsAboveTarget"
    REQUEST_RATE_ABOVE_TARGET = "RequestRateAboveTarget"
    BELOW_TARGETS = "BelowTargets"
    WITHIN_TOLERANCE = "WithinTolerance"
    PANIC = "Panic"
    IDLE = "Idle"
    DEMAND_FROM_ZERO = "DemandFromZero"
    HOLDING_ON_MISSING_METRICS = "HoldingOnMissingMetrics"
    AWAITING_STARTUP = "AwaitingStartup"
    STABILIZING = "Stabilizing"
    STEP_LIMITED = "StepLimited"


class EventType(StrEnum):
    """The type of an Event the operator posts on an LLMDeployment."""

    NORMAL = "Normal"
    WARNING = "Warning"


class EventReason(StrEnum):
    """Reasons of the Normal Events the operator posts on an LLMDeployment when it changes a
    child; other Events carry a :class:`Reason` (``RollingOut``, or the condition's reason
    that a Warning reports)."""

    CREATED = "Created"
    SCALED = "Scaled"
    DELETED = "Deleted"
    DRAINED = "Drained"
    """A spot replica's pod deleted (drained) because its node got a preemption notice."""


class Condition(ApiModel):
    """A metav1.Condition."""

    type: ConditionType
    """Condition type."""
    status: ConditionStatus
    """True, False or Unknown."""
    reason: Reason
    """One-word CamelCase reason for the last transition."""
    message: Annotated[str, Field(max_length=32_768)] = ""
    """What a person needs to know, e.g. how many GPUs are missing."""
    last_transition_time: datetime
    """When the status last changed."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The ``metadata.generation`` this condition was computed for."""


class Signals(ApiModel):
    """Latest per-replica averages of the autoscaling signals over ready replicas."""

    prefill_queue: float | None = None
    """Requests waiting for prefill per ready replica."""
    pending_prefill_tokens: float | None = None
    """Prompt tokens without a first token yet per ready replica (from the gateway)."""
    kv_cache_usage: float | None = None
    """KV-cache (HBM) usage, 0..1, averaged over ready replicas."""
    slots_used: float | None = None
    """Running requests over maxNumSeqs, 0..1, averaged over ready replicas."""
    requests_per_second: float | None = None
    """Requests started per second per ready replica (when its target is set)."""
    sampled_at: datetime | None = None
    """When the newest sample was taken."""
    learned_startup_seconds: Annotated[float, Field(ge=0)] | None = None
    """The model's startup time (pod created to Ready) the autoscaler has learned from
    its replicas: how far ahead its trend headroom looks. Absent until a replica was
    seen both starting and ready."""


class ScalingDecision(ApiModel):
    """One change of the desired replica count, with its reason."""

    time: datetime
    """When the decision was made."""
    from_replicas: Annotated[int, Field(ge=0)]
    """Desired replicas before."""
    to_replicas: Annotated[int, Field(ge=0)]
    """Desired replicas after."""
    reason: Reason
    """The signal or rule that decided."""
    message: Annotated[str, Field(max_length=1_024)] = ""
    """The numbers behind it, e.g. ``prefill queue 14 > target 4``."""


class LLMDeploymentStatus(ApiModel):
    """Observed state, written by the operator."""

    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The ``metadata.generation`` this status describes."""
    conditions: (
        Annotated[
            list[Condition],
            Field(
                max_length=16,
                json_schema_extra={
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["type"],
                },
            ),
        ]
        | None
    ) = None
    """Ready, Progressing, Degraded, ScalingLimited, MetricsAvailable, Reconciling,
    Stalled."""
    replicas: Annotated[int, Field(ge=0)] = 0
    """Serving groups that exist (the scale subresource's current replicas)."""
    ready_replicas: Annotated[int, Field(ge=0)] = 0
    """Serving groups whose engine is ready."""
    updated_replicas: Annotated[int, Field(ge=0)] = 0
    """Serving groups running the current spec."""
    desired_replicas: Annotated[int, Field(ge=0)] = 0
    """Serving groups the operator is driving towards."""
    selector: Annotated[str, Field(max_length=1_024)] | None = None
    """Label selector of the serving pods (the scale subresource's selector)."""
    service_name: Annotated[str, Field(max_length=253)] | None = None
    """Service that routes to the ready serving pods."""
    endpoints: (
        Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=10_000)] | None
    ) = None
    """``ip:port`` of every ready serving pod (the leader of a multi-node group), sorted."""
    spot_replicas: Annotated[int, Field(ge=0)] | None = None
    """With ``spec.placement.spot``: the ready serving groups on spot nodes (the rest of
    ``readyReplicas`` run on demand)."""
    on_demand_replicas: Annotated[int, Field(ge=0)] | None = None
    """With ``spec.placement.spot``: the ready serving groups on on-demand nodes."""
    schedule: Annotated[str, Field(max_length=1_100)] | None = None
    """The ``spec.autoscaling.schedules`` open at the last control period, by name
    (comma-separated); unset: none."""
    signals: Signals | None = None
    """Latest autoscaling signal values."""
    decisions: Annotated[list[ScalingDecision], Field(max_length=MAX_DECISIONS)] | None = None
    """The last scaling decisions, newest last."""
