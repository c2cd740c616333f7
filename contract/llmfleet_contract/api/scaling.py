"""How many replicas: ``spec.autoscaling``.

The built-in autoscaler sizes the fleet from engine signals per ready replica: the
prefill queue, KV-cache (HBM) usage, slots used and, where their targets are set, the
request rate and the gateway's pending prefill tokens. It writes the child workload
and the status, never ``spec.replicas``, so it does not fight GitOps. In ``External``
mode an HPA or KEDA drives ``spec.replicas`` through the scale subresource instead.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pydantic
from pydantic import Field

from llmfleet_contract.api.base import ApiModel, DnsLabel, IntOrPercent, ListByName, SetOf
from llmfleet_contract.api.cel import CelRule


class AutoscalingMode(StrEnum):
    """Who decides the replica count."""

    BUILTIN = "Builtin"
    EXTERNAL = "External"


class MetricsSourceKind(StrEnum):
    """Where the autoscaler reads engine metrics."""

    DIRECT = "Direct"
    PROMETHEUS = "Prometheus"


class ScaleToZeroSpec(ApiModel):
    """Releasing every GPU while nobody sends requests."""

    enabled: bool = False
    """Scale to zero replicas after ``idleTimeoutSeconds`` without requests; the first
    request queued at the gateway scales back to one. Needs ``minReplicas: 0`` and a
    gateway that reports ``llmfleet_gateway_pending_requests`` for this model (the
    operator's ``--gateway-metrics-url``, or Prometheus): without one nothing would wake
    it, so it keeps one replica and ``ScalingLimited`` says ``NoWakeSource``."""
    idle_timeout_seconds: Annotated[int, Field(ge=30, le=86_400)] = 600
    """Seconds without any request before the last replica goes."""


class ScalingTargets(ApiModel):
    """Per-replica targets. The desired count is the largest any signal asks for."""

    prefill_queue_per_replica: Annotated[float, Field(gt=0, le=10_000)] = 4.0
    """Requests waiting for prefill per ready replica (``vllm:num_requests_waiting``)."""
    pending_prefill_tokens_per_replica: Annotated[int, Field(ge=1)] | None = None
    """Prompt tokens sent by the gateway and not yet answered with a first token, per
    replica. Unset: not used. Sharper than the queue when prompt sizes vary a lot. Read
    from the gateways' ``llmfleet_gateway_pending_prefill_tokens`` (the operator's
    ``--gateway-metrics-url``, or Prometheus); where no gateway exports it, this signal
    is not read and the others decide."""
    kv_cache_usage: Annotated[float, Field(gt=0, le=1)] = 0.8
    """KV-cache (HBM) usage per replica, 0..1 (``vllm:kv_cache_usage_perc``)."""
    slots_used: Annotated[float, Field(gt=0, le=1)] = 0.8
    """Running requests over ``engine.maxNumSeqs`` per replica, 0..1."""
    requests_per_second: Annotated[float, Field(gt=0, le=100_000)] | None = None
    """Requests started (first token sent) per second per replica: the rate of
    ``vllm:time_to_first_token_seconds_count`` over the window. Unset: not used. The
    load itself rather than its footprint: running requests fall when the requests get
    shorter, the request rate does not."""


class ScaleUpRules(ApiModel):
    """Limits on scaling up."""

    stabilization_window_seconds: Annotated[int, Field(ge=0, le=3_600)] = 0
    """Scale up to the lowest recommendation of this window, so a brief spike does not
    add GPUs. Default 0: react at once."""
    max_step: IntOrPercent = "100%"
    """Most replicas added in one control period: a count, or a percentage of the
    current replicas (at least one). Default: at most double."""


class ScaleDownRules(ApiModel):
    """Limits on scaling down."""

    stabilization_window_seconds: Annotated[int, Field(ge=0, le=3_600)] = 300
    """Scale down only to the highest recommendation of this window, so a brief dip
    does not drop capacity that is needed again a minute later."""
    max_step: IntOrPercent = 1
    """Most replicas removed in one control period: a count, or a percentage of the
    current replicas (at least one)."""


class MetricsSpec(ApiModel):
    """Where the engine metrics come from."""

    cel_rules = (
        CelRule(
            "self.source != 'Prometheus' || has(self.prometheusUrl)",
            "prometheusUrl is required when source is Prometheus",
            ".prometheusUrl",
        ),
        CelRule(
            "self.source != 'Direct' || !has(self.prometheusUrl)",
            "prometheusUrl is only used when source is Prometheus",
            ".prometheusUrl",
        ),
    )

    source: MetricsSourceKind = MetricsSourceKind.DIRECT
    """Direct: the operator scrapes each pod's ``/metrics``. Prometheus: it queries
    the Prometheus at ``prometheusUrl``, which must scrape the engine pods."""
    prometheus_url: Annotated[str, Field(max_length=1024, pattern=r"^https?://[^\s]+$")] | None = (
        None
    )
    """Base URL of the Prometheus HTTP API (e.g. ``http://prometheus.monitoring:9090``)."""
    staleness_seconds: Annotated[int, Field(ge=5, le=600)] = 60
    """Samples older than this count as missing: the autoscaler then holds the replica
    count and never scales down."""


class Weekday(StrEnum):
    MON = "Mon"
    TUE = "Tue"
    WED = "Wed"
    THU = "Thu"
    FRI = "Fri"
    SAT = "Sat"
    SUN = "Sun"


WEEK = tuple(Weekday)
"""Monday first, as :meth:`datetime.weekday` counts."""
HOUR_MINUTE = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"


class ScheduleSpec(ApiModel):
    """A time of the week with its own replica bounds: a floor the fleet keeps whatever the
    load (the autoscaler may always go above it), and optionally a ceiling."""

    cel_rules = (
        CelRule(
            "!has(self.maxReplicas) || self.minReplicas <= self.maxReplicas",
            "minReplicas must be less than or equal to maxReplicas",
            ".minReplicas",
        ),
        CelRule(
            "self.start != self.end",
            "start and end must differ (an end before the start runs past midnight)",
            ".end",
        ),
    )

    name: DnsLabel
    """Shown in ``status.schedule`` and in scaling decisions while the window is open."""
    time_zone: Annotated[str, Field(min_length=1, max_length=64)] = "UTC"
    """An IANA time zone (``Europe/Berlin``): the window follows its daylight saving time."""
    days: Annotated[SetOf[Weekday], Field(min_length=1, max_length=7)] | None = None
    """The days the window opens on (a window past midnight closes on the next day);
    unset: every day."""
    start: Annotated[str, Field(pattern=HOUR_MINUTE, max_length=5)]
    """``HH:MM``, local time: the window opens."""
    end: Annotated[str, Field(pattern=HOUR_MINUTE, max_length=5)]
    """``HH:MM``, local time: the window closes (before ``start``: the next day)."""
    min_replicas: Annotated[int, Field(ge=0, le=10_000)] = 0
    """The floor while the window is open (the higher of it and ``minReplicas``)."""
    max_replicas: Annotated[int, Field(ge=1, le=10_000)] | None = None
    """A ceiling while the window is open (the lower of it and ``maxReplicas``); unset:
    ``maxReplicas``."""

    @pydantic.field_validator("time_zone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name!r}: use an IANA name") from None
        return name

    def open_at(self, at: datetime) -> bool:
        """Whether the window is open at ``at`` (an aware time)."""
        local = at.astimezone(ZoneInfo(self.time_zone))
        minutes = local.hour * 60 + local.minute
        start, end = _minutes(self.start), _minutes(self.end)
        days = WEEK if self.days is None else self.days
        if start < end:
            return start <= minutes < end and WEEK[local.weekday()] in days
        if minutes >= start:  # past midnight: opened today
            return WEEK[local.weekday()] in days
        yesterday = (local - timedelta(days=1)).weekday()
        return minutes < end and WEEK[yesterday] in days


def _minutes(hour_minute: str) -> int:
    hours, minutes = hour_minute.split(":")
    return int(hours) * 60 + int(minutes)


class AutoscalingSpec(ApiModel):
    """Replica bounds and the autoscaler's behaviour."""

    cel_rules = (
        CelRule(
            "self.minReplicas <= self.maxReplicas",
            "minReplicas must be less than or equal to maxReplicas",
            ".minReplicas",
        ),
        CelRule(
            "!self.scaleToZero.enabled || self.minReplicas == 0",
            "scaleToZero.enabled requires minReplicas: 0",
            ".scaleToZero",
        ),
        CelRule(
            "self.minReplicas > 0 || self.scaleToZero.enabled",
            "minReplicas: 0 requires scaleToZero.enabled: true (and an idle timeout)",
            ".minReplicas",
        ),
        CelRule(
            "self.panicWindowSeconds < self.stableWindowSeconds",
            "panicWindowSeconds must be shorter than stableWindowSeconds",
            ".panicWindowSeconds",
        ),
        CelRule(
            "!has(self.schedules) || self.schedules.all(s, s.minReplicas <= self.maxReplicas)",
            "a schedule's minReplicas must be at most maxReplicas",
            ".schedules",
        ),
        CelRule(
            "self.mode == 'Builtin' || !has(self.schedules) || size(self.schedules) == 0",
            "schedules are kept by the built-in autoscaler: mode Builtin",
            ".schedules",
        ),
    )

    mode: AutoscalingMode = AutoscalingMode.BUILTIN
    """Builtin: llmfleet sizes the fleet from engine metrics (leave ``spec.replicas``
    unset). External: an HPA or KEDA ScaledObject targets this LLMDeployment's scale
    subresource; the operator clamps its choice to [minReplicas, maxReplicas]."""
    min_replicas: Annotated[int, Field(ge=0, le=10_000)] = 1
    """Fewest replicas (serving groups). 0 needs ``scaleToZero.enabled``."""
    max_replicas: Annotated[int, Field(ge=1, le=10_000)]
    """Most replicas (serving groups): the GPU budget of this model."""
    scale_to_zero: ScaleToZeroSpec = Field(default_factory=ScaleToZeroSpec)
    """Scale to zero when idle, and back on demand."""
    targets: ScalingTargets = Field(default_factory=ScalingTargets)
    """Per-replica targets of the signals."""
    tolerance: Annotated[float, Field(ge=0, lt=1)] = 0.1
    """No change while every signal is within this fraction of its target."""
    stable_window_seconds: Annotated[int, Field(ge=6, le=3_600)] = 60
    """Signals are averaged over this window for normal decisions."""
    panic_window_seconds: Annotated[int, Field(ge=1, le=600)] = 6
    """Short window used when load jumps (see ``panicThreshold``)."""
    panic_threshold: Annotated[float, Field(ge=1.1, le=100)] = 2.0
    """When the short window asks for this many times the ready replicas, scale on it
    at once and do not scale down until the panic passes."""
    trend_headroom: bool = True
    """Order capacity ahead of a rising load: each signal's recent trend, extrapolated
    over the model's learned startup time, but no further ahead than the history it was
    fitted over covers. Off: size for the load measured now, which
    suits a request-rate target (its trend overshoots at the top of every ramp)."""
    scale_up: ScaleUpRules = Field(default_factory=ScaleUpRules)
    """Limits on scaling up."""
    scale_down: ScaleDownRules = Field(default_factory=ScaleDownRules)
    """Limits on scaling down."""
    period_seconds: Annotated[int, Field(ge=1, le=300)] = 15
    """Control period: how often the autoscaler decides."""
    schedules: Annotated[ListByName[ScheduleSpec], Field(max_length=16)] | None = None
    """Times of the week with their own bounds, e.g. a floor over business hours: while
    any is open the fleet keeps the highest open floor and the lowest open ceiling; the
    autoscaler decides within them from the load, as always."""

    def at(self, when: datetime) -> tuple[AutoscalingSpec, tuple[str, ...]]:
        """This spec with the bounds the schedules set at ``when``, and the schedules open
        then: what the policy decides with."""
        floor, ceiling, open_ = self.bounds_at(when)
        bounds = {"min_replicas": floor, "max_replicas": ceiling}
        return self.model_copy(update=bounds), open_

    def bounds_at(self, at: datetime) -> tuple[int, int, tuple[str, ...]]:
        """``minReplicas`` and ``maxReplicas`` at ``at``, with the schedules open then (a
        ceiling below a floor wins: it is a GPU budget)."""
        open_ = [s for s in self.schedules or () if s.open_at(at)]
        ceiling = min(
            [self.max_replicas, *(s.max_replicas for s in open_ if s.max_replicas is not None)]
        )
        floor = max([self.min_replicas, *(s.min_replicas for s in open_)])
        return min(floor, ceiling), ceiling, tuple(s.name for s in open_)

    metrics: MetricsSpec = Field(default_factory=MetricsSpec)
    """Where the engine metrics come from."""
