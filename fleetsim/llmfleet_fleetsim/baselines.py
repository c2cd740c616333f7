"""The baseline autoscalers, each as its project documents it: HPA, KEDA, Knative KPA, llm-d.

Called through :func:`llmfleet_fleetsim.make_policy`. Each sees the same
metrics pipeline as ours (scrape interval, lag) through a :class:`~.view.FleetView`, and
keeps its own controller memory. A metric older than ``fresh_s`` (60 s) counts as missing.

* **HPA** (kubernetes.io, "Horizontal Pod Autoscaling", and the replica calculator in
  ``pkg/controller/podautoscaler``): every 15 s, on the Pods metric
  ``vllm:num_requests_running`` (average per pod), ``desired = ceil(ratio x pods with
  metrics)`` with ``ratio = average / target``; no change within the 10% tolerance.
  Starting pods have no metric yet: counted as 0 when the ratio asks to scale up and as
  exactly the target when it asks to scale down (and the result may not reverse the
  direction); draining pods are ignored. Then the default behavior: scale-down to the
  highest recommendation of the last 300 s (the controller seeds that window with the
  current replica count on its first pass, so a fresh HPA cannot drop at once),
  scale-up by at most max(4 pods, 100%) per 15 s, scale-down by up to 100%;
  ``minReplicas >= 1``.
* **KEDA** with the vLLM production-stack chart's default trigger
  (``helm/templates/scaledobject-vllm.yaml``: Prometheus, ``vllm:num_requests_waiting``,
  threshold 5, KEDA's defaults ``pollingInterval: 30``, ``cooldownPeriod: 300``): KEDA
  feeds an HPA an AverageValue external metric, so every 15 s ``desired = ceil(sum of
  waiting / 5)`` unless within 10% of ``sum / (5 x current)`` = 1, then the same HPA
  behavior as above. KEDA itself only moves 0 <-> 1: every 30 s it checks the trigger is
  active, scales to zero after 300 s inactive when ``minReplicas`` is 0, and from zero
  when traffic appears (the chart's documented keepalive trigger on the router's
  incoming requests: here the gateway queue).
* **Knative KPA** (knative.dev autoscaling docs, ``pkg/autoscaler/scaling``): every 2 s,
  concurrency (requests in flight: running + waiting, plus those buffered at the
  activator: the gateway queue) averaged over a 60 s stable and a 6 s panic window,
  ``desired = ceil(concurrency / target)``. Panic starts when the panic window asks for
  ``>= 2x`` the ready pods and lasts until a stable window without that; in panic the
  count only rises (the highest panic recommendation). At most 1000x up and /2 down per
  tick; scale-down delay 0; zero after a 30 s grace once the stable window was idle.
* **llm-d** workload-variant-autoscaler, saturation analyzer V1
  (``docs/saturation-analyzer.md``, defaults of ``deploy/configmap-saturation-scaling.yaml``):
  every 60 s, from each ready replica's peak KV usage and queue over the last minute, a
  replica is saturated at ``KV >= 0.8`` or ``queue >= 5``. Over the non-saturated ones,
  spare KV = ``0.8 - KV`` and spare queue = ``5 - queue`` are averaged; scale up by one
  when average spare KV < 0.1 or spare queue < 3 (or none is unsaturated), holding while a
  replica is still starting. Scale down by one when, after spreading the total load of the
  non-saturated replicas over one fewer (at least two), the spares would still meet both
  triggers.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from llmfleet_fleetsim.view import FleetView, mean

TOLERANCE = 0.1
HPA_SYNC_S = 15.0
HPA_DOWN_WINDOW_S = 300.0


@dataclass
class _HpaBehavior:
    """HPA's default behavior: stabilization, rate limits, bounds (memory of past periods)."""

    lowest: int
    highest: int
    down_window_s: float = HPA_DOWN_WINDOW_S
    recommendations: deque[tuple[float, int]] = field(default_factory=deque)
    seeded: bool = False

    def normalize(self, current: int, desired: int, now: float) -> int:
        if not self.seeded:
            # reconcileAutoscaler: a new HPA's recommendations start as [current replicas].
            self.seeded = True
            self.recommendations.append((now, current))
        while self.recommendations and self.recommendations[0][0] <= now - self.down_window_s:
            self.recommendations.popleft()
        self.recommendations.append((now, desired))
        down = max(r for _, r in self.recommendations)
        stabilized = min(max(current, desired), down)
        up_limit = max(current + 4, current * 2)
        return max(max(1, self.lowest), min(stabilized, up_limit, self.highest))


def _hpa_pods_metric(per_pod: dict[str, float], current: int, target: float) -> int:
    """HPA's replica calculator for a Pods metric (see the module docstring)."""
    ready = len(per_pod)
    if ready == 0:
        return current
    ratio = sum(per_pod.values()) / (target * ready)
    missing = max(0, current - ready)
    if missing == 0:
        return current if abs(1 - ratio) <= TOLERANCE else math.ceil(ratio * ready)
    fill = target if ratio < 1 else 0.0
    new_ratio = (sum(per_pod.values()) + fill * missing) / (target * current)
    if abs(1 - new_ratio) <= TOLERANCE or (ratio < 1) != (new_ratio < 1):
        return current
    wanted = math.ceil(new_ratio * current)
    if (new_ratio < 1 and wanted > current) or (new_ratio > 1 and wanted < current):
        return current
    return wanted


@dataclass
class HpaPolicy:
    """Kubernetes HPA on ``vllm:num_requests_running`` per pod (module docstring)."""

    target: float
    lowest: int
    highest: int
    fresh_s: float = 60.0
    name: str = "hpa"
    period_s: float = HPA_SYNC_S
    behavior: _HpaBehavior = field(init=False)

    def __post_init__(self) -> None:
        self.behavior = _HpaBehavior(self.lowest, self.highest)

    @property
    def initial_replicas(self) -> int:
        return max(1, self.lowest)

    def decide(self, view: FleetView, now: float) -> int:
        latest = view.latest(now - self.fresh_s)
        per_pod = {name: float(s.running) for name, s in latest.items()}
        desired = _hpa_pods_metric(per_pod, view.current, self.target)
        return self.behavior.normalize(view.current, desired, now)


@dataclass
class KedaPolicy:
    """KEDA's Prometheus trigger on the sum of ``vllm:num_requests_waiting`` (docstring)."""

    threshold: float
    lowest: int
    highest: int
    fresh_s: float = 60.0
    polling_s: float = 30.0
    cooldown_s: float = 300.0
    name: str = "keda"
    period_s: float = HPA_SYNC_S
    behavior: _HpaBehavior = field(init=False)
    last_active: float = 0.0
    last_poll: float | None = None

    def __post_init__(self) -> None:
        self.behavior = _HpaBehavior(self.lowest, self.highest)

    @property
    def initial_replicas(self) -> int:
        return max(1, self.lowest)

    def decide(self, view: FleetView, now: float) -> int:
        latest = view.latest(now - self.fresh_s)
        waiting = sum(s.waiting for s in latest.values())
        current = view.current
        if self.last_poll is None or now - self.last_poll >= self.polling_s:
            self.last_poll = now
            busy = any(s.busy for s in latest.values()) or bool(view.gateway_pending)
            if busy:
                self.last_active = now
            if current == 0:
                return 1 if busy else 0
            if self.lowest == 0 and now - self.last_active >= self.cooldown_s:
                return 0
        if current == 0:
            return 0
        usage = waiting / (self.threshold * current)
        desired = current if abs(1 - usage) <= TOLERANCE else math.ceil(waiting / self.threshold)
        return self.behavior.normalize(current, desired, now)


@dataclass
class KpaPolicy:
    """Knative's KPA on requests in flight per pod (module docstring)."""

    target: float
    lowest: int
    highest: int
    stable_s: float = 60.0
    panic_s: float = 6.0
    panic_threshold: float = 2.0
    grace_s: float = 30.0
    name: str = "kpa"
    period_s: float = 2.0
    panic_since: float | None = None
    max_panic: int = 0
    busy_at: float = 0.0

    @property
    def initial_replicas(self) -> int:
        return max(1, self.lowest)

    def _concurrency(self, view: FleetView, window_s: float, now: float) -> float:
        grouped = view.window(now - window_s)
        total = 0.0
        for name in view.ready:
            total += mean(s.running + s.waiting for s in grouped.get(name, []))
        return total + (view.gateway_pending or 0)

    def decide(self, view: FleetView, now: float) -> int:
        ready = len(view.ready)
        stable = self._concurrency(view, self.stable_s, now)
        panic = self._concurrency(view, self.panic_s, now)
        if stable > 0 or panic > 0:
            self.busy_at = now
        if ready == 0:
            return max(view.current, 1) if panic > 0 else view.current
        up, down = math.ceil(1000 * ready), math.floor(ready / 2)
        want_stable = min(max(math.ceil(stable / self.target), down), up)
        want_panic = min(max(math.ceil(panic / self.target), down), up)
        over = panic / self.target / ready >= self.panic_threshold
        if over:
            self.panic_since = now
        elif self.panic_since is not None and now - self.panic_since > self.stable_s:
            self.panic_since, self.max_panic = None, 0
        desired = want_stable
        if self.panic_since is not None:
            self.max_panic = max(self.max_panic, want_panic, want_stable, view.current)
            desired = self.max_panic
        if desired == 0 and (self.lowest > 0 or now - self.busy_at < self.stable_s + self.grace_s):
            desired = 1
        return max(self.lowest, min(desired, self.highest))


@dataclass
class LlmdPolicy:
    """llm-d's saturation analyzer (module docstring)."""

    kv_threshold: float
    lowest: int
    highest: int
    queue_threshold: float = 5.0
    kv_spare_trigger: float = 0.1
    queue_spare_trigger: float = 3.0
    peak_window_s: float = 60.0
    name: str = "llm-d"
    period_s: float = 60.0

    @property
    def initial_replicas(self) -> int:
        return max(1, self.lowest)

    def decide(self, view: FleetView, now: float) -> int:
        current, ready = view.current, view.ready
        if not ready:
            return current
        grouped = view.window(now - self.peak_window_s)
        calm: list[tuple[float, float]] = []
        for name in ready:
            samples = grouped.get(name)
            if not samples:
                return current  # no metric from a ready replica: hold
            kv = max(s.kv_cache_usage for s in samples)
            queue = max(s.waiting for s in samples)
            if kv < self.kv_threshold and queue < self.queue_threshold:
                calm.append((kv, float(queue)))
        lowest = max(1, self.lowest)
        if self._needs_more(calm):
            if current > len(ready):
                return current  # capacity is already coming
            return min(current + 1, self.highest)
        if current == len(ready) and self._can_remove_one(calm):
            return max(current - 1, lowest)
        return max(lowest, min(current, self.highest))

    def _needs_more(self, calm: list[tuple[float, float]]) -> bool:
        if not calm:
            return True
        spare_kv = mean(self.kv_threshold - kv for kv, _ in calm)
        spare_queue = mean(self.queue_threshold - queue for _, queue in calm)
        return spare_kv < self.kv_spare_trigger or spare_queue < self.queue_spare_trigger

    def _can_remove_one(self, calm: list[tuple[float, float]]) -> bool:
        if len(calm) < 2:
            return False
        kv = sum(k for k, _ in calm) / (len(calm) - 1)
        queue = sum(q for _, q in calm) / (len(calm) - 1)
        return (
            self.kv_threshold - kv >= self.kv_spare_trigger
            and self.queue_threshold - queue >= self.queue_spare_trigger
        )
