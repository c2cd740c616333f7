"""The scaling policy: one control period's decision, as a pure function.

Called by the operator's autoscaler (:mod:`llmfleet_operator.autoscaler`) and by the fleet
simulator, each period:
``decide(spec, observation, history, now)``; the returned :class:`Decision` carries the
history to pass to the next call, so the function itself keeps no state.

The order of the rules:

1. From zero: one replica (or ``minReplicas``) as soon as the gateway queues a request or
   any replica reports one waiting; at zero with no gateway reporting the model, say that
   nothing would wake it (``NoWakeSource``).
2. No ready replica yet (all starting): hold, awaiting startup. Missing or stale
   samples from a ready replica: hold, never scale down, say which. A replica ready for
   less than the staleness and not scraped yet is not missing: it may scale up, never
   down. Neither may a fleet whose request rate has a target but no two readings yet.
3. Idle for ``scaleToZero.idleTimeoutSeconds`` (when enabled): zero, if a gateway
   reports the model's queued requests (``Observation.gateway_pending`` is not None),
   which is what wakes it; else one replica (or ``minReplicas``), saying why. A request
   is seen as a busy sample or as a rise of a replica's requests-started counter since
   its previous sample (short requests start and finish between scrapes).
4. Each signal asks for ``total over ready replicas / target`` replicas (the prefill
   queue adds what the gateway queues for the model), over the stable
   window and over the short (panic) window; the larger counts, so a step in load is seen
   at the next period while a fall must last a whole stable window. The strongest signal
   decides; no change while it is within ``tolerance`` of the current replicas (which
   include those still starting: capacity to come).
   Headroom: each signal also asks for its rising trend over the model's learned
   startup time, no further ahead than the levels it is fitted over cover (see
   :mod:`llmfleet_operator.autoscale.headroom`), so capacity is ordered before the load
   arrives; none while ordered replicas are not ready yet, nor with ``trendHeadroom:
   false``, and fitted only to levels read a stable window after the last scale-down.
5. Panic (the short window asks for ``panicThreshold`` x the ready replicas): scale up
   without waiting for the scale-up window, and no scale-down for a stable window after.
6. Bounds, stabilization windows, then step limits; bounds win over steps.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from llmfleet_contract.api import AutoscalingSpec, LLMDeploymentSpec, Reason
from llmfleet_operator.autoscale.headroom import fit_window, headroom, learn_startup, trends
from llmfleet_operator.autoscale.inputs import (
    History,
    Level,
    Observation,
    Recommendation,
    ReplicaPhase,
    Sample,
)
from llmfleet_operator.autoscale.limits import clamp, max_step, stabilize
from llmfleet_operator.autoscale.signals import (
    ABOVE_TARGET,
    Signal,
    SignalReading,
    larger,
    missing_replicas,
    read,
    strongest,
)


@dataclass(frozen=True)
class Decision:
    """How many replicas, and why."""

    desired: int
    """Replicas the child workload should ask for."""
    reason: Reason
    """The signal or rule that decided."""
    message: str
    """The numbers behind it, e.g. ``prefill queue 14.0 per replica > target 4.0``."""
    current: int
    """Replicas the workload asked for before this decision."""
    signals: tuple[SignalReading, ...]
    """Every signal read this period (empty when holding or at zero)."""
    panic: bool
    """Whether the policy is in panic mode."""
    history: History
    """Pass to the next call of :func:`decide`."""

    @property
    def changed(self) -> bool:
        return self.desired != self.current


@dataclass(frozen=True)
class _Step:
    replicas: int
    reason: Reason
    message: str


def decide(
    spec: LLMDeploymentSpec, observed: Observation, history: History, now: float
) -> Decision:
    """The replicas for the next control period (see the module docstring for the rules)."""
    scaling = spec.autoscaling
    if scaling is None:
        raise ValueError("the LLMDeployment has no spec.autoscaling: nothing to decide")
    current = observed.current
    seen = demand_times(observed.samples, now)
    if observed.gateway_pending:
        seen.append(now)
    previous = history.last_demand_at if history.last_demand_at is not None else now
    startup, learned_until = learn_startup(
        observed.replicas, history.startup_seconds, history.learned_until, now
    )
    history = replace(
        history,
        watching_since=now if history.watching_since is None else history.watching_since,
        last_demand_at=max([previous, *seen]),
        startup_seconds=startup,
        learned_until=learned_until,
    )
    decision = _Decider(scaling, spec.engine.max_num_seqs, observed, history, now)
    return decision.from_zero() if current == 0 else decision.decide()


def demand_times(samples: tuple[Sample, ...], now: float) -> list[float]:
    """When a request was seen: a busy sample, or a sample whose requests-started counter
    moved since its replica's previous sample (a request started between the scrapes)."""
    seen: list[float] = []
    before: dict[str, float | None] = {}
    for sample in sorted(samples, key=lambda s: s.time):
        if sample.time > now:
            continue
        last = before.get(sample.replica)
        moved = sample.started is not None and last is not None and sample.started != last
        if sample.busy or moved:
            seen.append(sample.time)
        before[sample.replica] = sample.started
    return seen


class _Decider:
    """One call's inputs, so the rules read as short methods."""

    def __init__(
        self,
        scaling: AutoscalingSpec,
        slots: int,
        observed: Observation,
        history: History,
        now: float,
    ) -> None:
        self.scaling = scaling
        self.slots = slots
        self.observed = observed
        self.history = history
        self.now = now
        self.current = observed.current
        self.lowest = max(1, scaling.min_replicas)
        self.ready = [r.name for r in observed.replicas if r.phase is ReplicaPhase.READY]
        self.unmeasured: tuple[str, ...] = ()

    def _done(
        self,
        step: _Step,
        signals: tuple[SignalReading, ...] = (),
        panic: bool = False,
        history: History | None = None,
    ) -> Decision:
        history = history or self.history
        if step.replicas < self.current:
            history = replace(history, scaled_down_at=self.now)
        return Decision(
            step.replicas, step.reason, step.message, self.current, signals, panic, history
        )

    def from_zero(self) -> Decision:
        fresh = [
            s
            for s in self.observed.samples
            if 0 <= self.now - s.time <= self.scaling.metrics.staleness_seconds
        ]
        waiting = sum(s.waiting for s in fresh)
        pending = self.observed.gateway_pending or 0
        if pending or waiting:
            to = clamp(1, self.lowest, self.scaling.max_replicas)
            return self._done(
                _Step(
                    to,
                    Reason.DEMAND_FROM_ZERO,
                    f"{pending} requests pending at the gateway, {waiting} waiting at"
                    f" replicas: scaling from zero to {to}",
                )
            )
        if self.scaling.min_replicas > 0:
            return self._done(
                _Step(
                    self.scaling.min_replicas,
                    Reason.AT_MIN_REPLICAS,
                    f"minReplicas is {self.scaling.min_replicas}",
                )
            )
        if self.observed.gateway_pending is None:  # created at zero, or its gateway went
            return self._done(
                _Step(
                    0,
                    Reason.NO_WAKE_SOURCE,
                    "at zero, and no gateway reports llmfleet_gateway_pending_requests for this"
                    " model: nothing would wake it (the chart's gateway, gatewayMetricsUrls or a"
                    " Prometheus metrics source tells the operator)",
                )
            )
        return self._done(_Step(0, Reason.IDLE, "no requests: staying at zero"))

    def decide(self) -> Decision:
        hold = self._hold()
        if hold is not None:
            return self._finish(hold, (), False, self.history)
        # A replica not measured yet may have demand: not idle (the scale rules hold it).
        idle = None if self.unmeasured else self._idle()
        if idle is not None:
            return self._done(idle)
        return self._scale()

    def _hold(self) -> _Step | None:
        staleness = self.scaling.metrics.staleness_seconds
        starting = len(self.observed.replicas) - len(self.ready)
        if not self.ready:
            return _Step(
                self.current,
                Reason.AWAITING_STARTUP,
                f"every replica is still starting ({starting} starting, none ready to"
                f" measure): holding {self.current} replicas",
            )
        missing = missing_replicas(self.ready, self.observed.samples, self.now, staleness)
        # Ready for less than the staleness and not scraped yet: not yet measured, not
        # missing. It counts as capacity (it serves) but forbids scale-down this period.
        self.unmeasured = tuple(
            r.name
            for r in self.observed.replicas
            if r.name in missing
            and r.ready_at is not None
            and 0 <= self.now - r.ready_at <= staleness
        )
        missing = tuple(name for name in missing if name not in self.unmeasured)
        if not missing:
            return None
        return self._hold_on(f"no sample within {staleness}s from {', '.join(missing)}")

    def _hold_on(self, message: str) -> _Step:
        return _Step(
            self.current,
            Reason.HOLDING_ON_MISSING_METRICS,
            f"{message}: holding {self.current} replicas",
        )

    def _idle(self) -> _Step | None:
        timeout = self.scaling.scale_to_zero.idle_timeout_seconds
        last = self.history.last_demand_at
        if not self.scaling.scale_to_zero.enabled or last is None:
            return None
        idle_for = self.now - last
        if idle_for < timeout:
            return None
        idle = f"no request for {idle_for:.0f}s (idle timeout {timeout}s)"
        if self.observed.gateway_pending is None:
            return _Step(
                self.lowest,
                Reason.NO_WAKE_SOURCE,
                f"{idle}, but no gateway reports llmfleet_gateway_pending_requests for this"
                f" model, and nothing else would wake it from zero: keeping {self.lowest}",
            )
        return _Step(0, Reason.IDLE, f"{idle}: scaling to zero")

    def _scale(self) -> Decision:
        scaling = self.scaling
        args = (scaling.targets, self.ready, self.observed.samples, self.slots)
        queued = self.observed.gateway_pending or 0
        short = read(*args, scaling.panic_window_seconds, self.now, queued)
        stable = read(*args, scaling.stable_window_seconds, self.now, queued)
        readings, levels = self._with_headroom(larger(stable, short), stable)
        top, short_top = strongest(readings), strongest(short)
        if top is None or short_top is None:  # not reached: ready replicas give readings
            return self._finish(self._hold_on("no signal read"), (), False, self.history)
        panic_now = short_top.needed >= scaling.panic_threshold * len(self.ready)
        last_panic = self.now if panic_now else self.history.last_panic_at
        panicking = last_panic is not None and self.now - last_panic < scaling.stable_window_seconds
        history = replace(self.history, last_panic_at=last_panic, levels=levels)
        step = self._recommend(top, readings)
        rateless = scaling.targets.requests_per_second is not None and all(
            reading.signal is not Signal.REQUEST_RATE for reading in stable
        )
        if rateless and step.replicas < self.current:
            step = _Step(
                self.current,
                Reason.HOLDING_ON_MISSING_METRICS,
                f"{step.message}; no replica has two readings of the requests-started counter"
                " yet, so the request rate is unknown: no scale-down",
            )
        elif self.unmeasured and step.replicas < self.current:
            step = _Step(
                self.current,
                Reason.AWAITING_STARTUP,
                f"{step.message}; {', '.join(self.unmeasured)} just became ready and has no"
                " sample yet: no scale-down",
            )
        elif panicking and step.replicas <= self.current:
            if step.replicas < self.current:
                step = _Step(
                    self.current,
                    Reason.PANIC,
                    f"{top.describe()}; no scale-down within {scaling.stable_window_seconds}s"
                    " of a panic",
                )
        elif panic_now:
            step = _Step(step.replicas, Reason.PANIC, f"panic: {step.message}")
        return self._finish(step, readings, panicking, history, skip_up=panic_now)

    def _with_headroom(
        self, readings: tuple[SignalReading, ...], stable: tuple[SignalReading, ...]
    ) -> tuple[tuple[SignalReading, ...], tuple[Level, ...]]:
        """The readings with headroom for their trend, and the levels to remember (this
        period's stable-window readings added, those older than the fit window gone)."""
        startup, now = self.history.startup_seconds, self.now
        window = fit_window(self.scaling.stable_window_seconds, startup)
        level = Level(now, tuple((r.signal.value, r.needed) for r in stable))
        levels = (*(old for old in self.history.levels if now - window < old.time < now), level)
        # While ordered replicas are not ready (starting, or not even created yet), the
        # trend holds the overload their order answers: extrapolating it would order
        # the same capacity twice.
        ordered = self.current > len(self.ready)
        wanted = self.scaling.trend_headroom and not ordered
        # A scale-down raises the signals of the replicas left (bigger batches decode
        # slower, so each holds more requests at once): the fleet's own doing, not the
        # load's trend. Levels are fitted from a stable window after it, when the
        # stable-window readings no longer span it.
        down = self.history.scaled_down_at
        settled = -float("inf") if down is None else down + self.scaling.stable_window_seconds
        fitted = [level for level in levels if level.time > settled]
        fitted_trends = trends(fitted, window, now) if wanted else {}

        def with_trend(reading: SignalReading) -> SignalReading:
            trend = fitted_trends.get(reading.signal.value)
            return replace(
                reading,
                headroom=headroom(trend, startup, reading.needed),
                startup_seconds=startup,
                ahead_seconds=None if trend is None or startup is None else trend.ahead(startup),
            )

        with_headroom = tuple(with_trend(reading) for reading in readings)
        return with_headroom, levels

    def _recommend(self, top: SignalReading, readings: tuple[SignalReading, ...]) -> _Step:
        tolerance = self.scaling.tolerance
        if abs(top.projected / self.current - 1) <= tolerance:
            return _Step(
                self.current,
                Reason.WITHIN_TOLERANCE,
                f"{top.describe()}: within {tolerance:.0%} of {self.current} replicas",
            )
        if top.wants > self.current:
            return _Step(
                top.wants, ABOVE_TARGET[top.signal], f"{top.describe()}; asks for {top.wants}"
            )
        if top.wants < self.current:
            described = "; ".join(reading.describe() for reading in readings)
            return _Step(top.wants, Reason.BELOW_TARGETS, f"{described}; asks for {top.wants}")
        return _Step(self.current, Reason.WITHIN_TOLERANCE, f"{top.describe()}; no change")

    def _finish(
        self,
        step: _Step,
        readings: tuple[SignalReading, ...],
        panic: bool,
        history: History,
        *,
        skip_up: bool = False,
    ) -> Decision:
        scaling, current, now = self.scaling, self.current, self.now
        bounded = clamp(step.replicas, self.lowest, scaling.max_replicas)
        asked = step.replicas
        up_window = 0 if skip_up else scaling.scale_up.stabilization_window_seconds
        down_window = scaling.scale_down.stabilization_window_seconds
        kept = history.recommendations
        # A history younger than the scale-down window (a restart) has not seen the
        # window's peak: it counts as having recommended what runs now.
        watched = now - (history.watching_since if history.watching_since is not None else now)
        young = watched < down_window
        unseen = (Recommendation(now, min(current, scaling.max_replicas)),) if young else ()
        stable = stabilize(bounded, current, (*kept, *unseen), up_window, down_window, now)
        if stable != bounded:
            verb = "up" if bounded > current else "down"
            window = up_window if verb == "up" else down_window
            since = f" (watched for {watched:.0f}s)" if young and verb == "down" else ""
            step = _Step(
                stable,
                Reason.STABILIZING,
                f"{step.message}; scale-{verb} to {bounded} held at {stable} by the"
                f" {window}s stabilization window{since}",
            )
        step = self._limit_step(step)
        if step.replicas == bounded != asked:
            reason, bound = (
                (Reason.AT_MAX_REPLICAS, "maxReplicas")
                if asked > bounded
                else (Reason.AT_MIN_REPLICAS, "minReplicas")
            )
            step = _Step(bounded, reason, f"{step.message}; {bound} is {bounded}")
        keep_for = max(scaling.scale_up.stabilization_window_seconds, down_window)
        recent = (*(r for r in kept if now - r.time < keep_for), Recommendation(now, bounded))
        return self._done(step, readings, panic, replace(history, recommendations=recent))

    def _limit_step(self, step: _Step) -> _Step:
        current, rules = self.current, self.scaling
        up = max_step(rules.scale_up.max_step, current)
        down = max_step(rules.scale_down.max_step, current)
        limited = clamp(step.replicas, current - down, current + up)
        # Bounds win over step limits: a lowered maxReplicas applies at once.
        limited = clamp(limited, self.lowest, rules.max_replicas)
        if limited == step.replicas:
            return step
        sign = f"+{up}" if limited > current else f"-{down}"
        return _Step(limited, Reason.STEP_LIMITED, f"{step.message}; at most {sign} per period")
