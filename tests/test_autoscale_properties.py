"""Properties of the scaling policy over generated specs, fleets, loads and histories.

Cases: the decision never leaves [minReplicas, maxReplicas]; more of any signal never
gives fewer replicas, all else equal; a missing or stale sample never scales down (also
from a replica that just became ready); a constant load fed through many control periods
(the policy's own decisions and history fed back, new replicas starting for a while)
never changes direction; a step load scales up at the first control period that samples
it; headroom for a learned startup time never asks for fewer replicas than no headroom;
the specs drawn here equal the same specs validated whole. Histories carry learned
startup times and recent levels (a trend), and the fed-back runs let replicas report
when they became ready, so the startup is learned as it would be in a cluster.

Deterministic: every run tries the same examples (``derandomize``), with no wall-clock
deadline, and drawing stays cheap: the autoscaling block is drawn as plain values and
validated on its own (pydantic and its CEL rules, cached), then set into a spec
validated once. The spec's own rules look at ``autoscaling`` only beside ``replicas``,
which these specs leave unset; the last case above checks that the shortcut changes
nothing. Time is a parameter: nothing sleeps.
"""

from __future__ import annotations

import json
from dataclasses import replace
from functools import cache
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from llmfleet_contract.api import AutoscalingSpec, LLMDeploymentSpec
from llmfleet_operator.autoscale import (
    Decision,
    History,
    Level,
    Observation,
    Recommendation,
    Replica,
    ReplicaPhase,
    Sample,
    decide,
)

NOW = 100_000.0
SLOTS = 64
STALENESS = 60

DETERMINISTIC = settings(derandomize=True, deadline=None)
"""Every run tries the same examples; a loaded machine cannot fail a run by the clock."""

SHELL: dict[str, Any] = {"model": {"source": "hf://org/model"}, "engine": {"max_num_seqs": SLOTS}}
"""Everything of the spec but ``autoscaling``."""

step_limits = st.one_of(st.integers(0, 3), st.sampled_from(["10%", "50%", "100%", "300%"]))


@st.composite
def scalings(draw: st.DrawFn, scale_up_window: bool = True) -> dict[str, Any]:
    """An ``autoscaling`` block as plain values, valid by construction."""
    to_zero = draw(st.booleans())
    lowest = 0 if to_zero else draw(st.integers(1, 4))
    stable = draw(st.integers(30, 120))
    scaling: dict[str, Any] = {
        "min_replicas": lowest,
        "max_replicas": draw(st.integers(max(lowest, 1), 16)),
        "scale_to_zero": {"enabled": to_zero, "idle_timeout_seconds": draw(st.integers(30, 600))},
        "targets": {
            "prefill_queue_per_replica": draw(st.sampled_from([1.0, 4.0, 10.0])),
            "pending_prefill_tokens_per_replica": draw(st.sampled_from([None, 2000])),
            "kv_cache_usage": draw(st.sampled_from([0.5, 0.8, 0.95])),
            "slots_used": draw(st.sampled_from([0.5, 0.8])),
        },
        "tolerance": draw(st.sampled_from([0.0, 0.05, 0.1, 0.3])),
        "stable_window_seconds": stable,
        "panic_window_seconds": draw(st.integers(1, stable - 1)),
        "panic_threshold": draw(st.sampled_from([1.1, 2.0, 4.0])),
        "scale_up": {
            "stabilization_window_seconds": draw(st.sampled_from([0, 0, 30, 120]))
            if scale_up_window
            else 0,
            "max_step": draw(step_limits),
        },
        "scale_down": {
            "stabilization_window_seconds": draw(st.sampled_from([0, 60, 300])),
            "max_step": draw(step_limits),
        },
        "period_seconds": draw(st.sampled_from([5, 15, 30])),
        "metrics": {"staleness_seconds": STALENESS},
    }
    return scaling


@cache
def _shell() -> LLMDeploymentSpec:
    return LLMDeploymentSpec.model_validate(SHELL)


@cache
def _autoscaling(wire: str) -> AutoscalingSpec:
    return AutoscalingSpec.model_validate_json(wire)


def spec_with(scaling: dict[str, Any]) -> LLMDeploymentSpec:
    """The shell with ``scaling`` validated on its own and set in place."""
    autoscaling = _autoscaling(json.dumps(scaling, sort_keys=True))
    return _shell().model_copy(update={"autoscaling": autoscaling})


def specs(scale_up_window: bool = True) -> st.SearchStrategy[LLMDeploymentSpec]:
    return scalings(scale_up_window).map(spec_with)


@settings(DETERMINISTIC, max_examples=50)
@given(scalings())
def test_drawn_specs_are_what_validating_the_whole_spec_gives(scaling: dict[str, Any]) -> None:
    assert spec_with(scaling) == LLMDeploymentSpec.model_validate({**SHELL, "autoscaling": scaling})


@st.composite
def samples_of(draw: st.DrawFn, name: str, tokens: bool) -> list[Sample]:
    ages = draw(st.lists(st.floats(0, STALENESS - 1), min_size=1, max_size=4))
    return [
        Sample(
            time=NOW - age,
            replica=name,
            waiting=draw(st.integers(0, 60)),
            pending_prefill_tokens=draw(st.integers(0, 20_000)) if tokens else None,
            kv_cache_usage=draw(st.floats(0, 1)),
            running=draw(st.integers(0, SLOTS)),
        )
        for age in ages
    ]


@st.composite
def observations(draw: st.DrawFn) -> Observation:
    ready = draw(st.integers(0, 12))
    starting = draw(st.integers(0, 3))
    tokens = draw(st.booleans())
    replicas = [Replica(f"r{i}", ReplicaPhase.READY, NOW - 900) for i in range(ready)]
    replicas += [Replica(f"s{i}", ReplicaPhase.STARTING, NOW - 30) for i in range(starting)]
    samples = [s for i in range(ready) for s in draw(samples_of(f"r{i}", tokens))]
    return Observation(
        current=draw(st.integers(max(0, ready + starting - 1), ready + starting + 2)),
        replicas=tuple(replicas),
        samples=tuple(samples),
        gateway_pending=draw(st.one_of(st.none(), st.integers(0, 20))),
    )


@st.composite
def histories(draw: st.DrawFn) -> History:
    recommendations = draw(st.lists(st.tuples(st.floats(1, 600), st.integers(0, 16)), max_size=6))
    return History(
        recommendations=tuple(
            Recommendation(NOW - age, replicas) for age, replicas in sorted(recommendations)[::-1]
        ),
        last_panic_at=draw(st.one_of(st.none(), st.floats(NOW - 300, NOW))),
        last_demand_at=draw(st.one_of(st.none(), st.floats(NOW - 1200, NOW))),
        startup_seconds=draw(st.one_of(st.none(), st.floats(0, 600))),
        levels=tuple(draw(levels())),
        watching_since=draw(st.one_of(st.none(), st.floats(NOW - 1200, NOW))),
    )


@st.composite
def levels(draw: st.DrawFn) -> list[Level]:
    """Recent short-window levels of every signal, oldest first, before NOW."""
    ages = sorted(draw(st.lists(st.floats(1, 120), max_size=6, unique=True)), reverse=True)
    names = ["prefill queue", "pending prefill tokens", "KV cache usage", "slots used"]
    return [
        Level(NOW - age, tuple((name, draw(st.floats(0, 20))) for name in names)) for age in ages
    ]


def bounds(spec: LLMDeploymentSpec) -> tuple[int, int]:
    assert spec.autoscaling is not None
    return spec.autoscaling.min_replicas, spec.autoscaling.max_replicas


@settings(DETERMINISTIC, max_examples=300)
@given(specs(), observations(), histories())
def test_never_leaves_min_max(
    spec: LLMDeploymentSpec, observed: Observation, history: History
) -> None:
    lowest, highest = bounds(spec)
    assert lowest <= decide(spec, observed, history, NOW).desired <= highest


@st.composite
def more_load(draw: st.DrawFn, observed: Observation) -> Observation:
    """The same observation with one signal of one sample raised."""
    samples = list(observed.samples)
    index = draw(st.integers(0, len(samples) - 1))
    old = samples[index]
    field = draw(st.sampled_from(["waiting", "pending", "kv", "running"]))
    if field == "waiting":
        new = replace(old, waiting=old.waiting + draw(st.integers(1, 100)))
    elif field == "pending" and old.pending_prefill_tokens is not None:
        extra = draw(st.integers(1, 10_000))
        new = replace(old, pending_prefill_tokens=old.pending_prefill_tokens + extra)
    elif field == "kv":
        new = replace(old, kv_cache_usage=draw(st.floats(old.kv_cache_usage, 1)))
    else:
        new = replace(old, running=draw(st.integers(old.running, SLOTS)))
    samples[index] = new
    return replace(observed, samples=tuple(samples))


@settings(DETERMINISTIC, max_examples=300)
@given(specs(), observations(), histories(), st.data())
def test_monotone_in_each_signal(
    spec: LLMDeploymentSpec, observed: Observation, history: History, data: st.DataObject
) -> None:
    if not observed.samples:
        return
    heavier = data.draw(more_load(observed))
    assert (
        decide(spec, heavier, history, NOW).desired >= decide(spec, observed, history, NOW).desired
    )


@settings(DETERMINISTIC, max_examples=300)
@given(specs(), observations(), histories(), st.data())
def test_never_scales_down_on_missing_or_stale_samples(
    spec: LLMDeploymentSpec, observed: Observation, history: History, data: st.DataObject
) -> None:
    lowest, highest = bounds(spec)
    ready = [r.name for r in observed.replicas if r.phase is ReplicaPhase.READY]
    if not ready:
        return
    victim = data.draw(st.sampled_from(ready))
    stale = data.draw(st.booleans())
    samples = tuple(
        replace(s, time=s.time - STALENESS - 1) if stale and s.replica == victim else s
        for s in observed.samples
        if stale or s.replica != victim
    )
    # The victim may have become ready just now (not scraped yet) or long ago.
    ready_at = data.draw(st.one_of(st.none(), st.floats(NOW - 3 * STALENESS, NOW)))
    replicas = tuple(
        replace(r, ready_at=ready_at) if r.name == victim else r for r in observed.replicas
    )
    current = data.draw(st.integers(max(lowest, 1), highest))
    decision = decide(
        spec, replace(observed, current=current, replicas=replicas, samples=samples), history, NOW
    )
    assert decision.desired >= current


def _spread(total: int, count: int) -> list[int]:
    share, extra = divmod(total, count)
    return [share + (1 if i < extra else 0) for i in range(count)]


def _run(
    spec: LLMDeploymentSpec,
    load: dict[str, Any],
    current: int,
    startup_periods: int,
    periods: int,
    start: float = NOW,
    history: History | None = None,
) -> list[Decision]:
    """Feed the policy's decisions back: replicas start, become ready, and share ``load``
    (totals over the ready replicas) evenly; a scrape lands each period."""
    assert spec.autoscaling is not None
    period = spec.autoscaling.period_seconds
    fleet = [Replica(f"r{i}", ReplicaPhase.READY, start - 900) for i in range(current)]
    ready_at = {r.name: start - 900 + startup_periods * period for r in fleet}
    history = history or History(last_demand_at=start)
    decisions = []
    for n in range(periods):
        now = start + n * period
        ready = [r for r in fleet if r.started_at + startup_periods * period <= now]
        replicas = tuple(
            replace(r, phase=ReplicaPhase.READY, ready_at=ready_at.get(r.name)) if r in ready else r
            for r in fleet
        )
        count = max(1, len(ready))
        columns = zip(
            _spread(load["waiting"], count),
            _spread(load["running"], count),
            _spread(load["tokens"], count) if load["tokens"] is not None else [None] * count,
            strict=True,
        )
        samples = tuple(
            Sample(now - 1, r.name, waiting, tokens, load["kv"] / count, running)
            for r, (waiting, running, tokens) in zip(ready, columns, strict=False)
        )
        observed = Observation(current, replicas, samples, gateway_pending=load["waiting"])
        decision = decide(spec, observed, history, now)
        decisions.append(decision)
        history, current = decision.history, decision.desired
        while len(fleet) > current:
            fleet.pop()  # the newest replica goes first
        new = [
            Replica(f"n{n}-{i}", ReplicaPhase.STARTING, now) for i in range(current - len(fleet))
        ]
        ready_at.update({r.name: now + startup_periods * period for r in new})
        fleet += new
    return decisions


@st.composite
def constant_loads(draw: st.DrawFn, lowest: int) -> dict[str, Any]:
    return {
        "waiting": draw(st.integers(0, 200)),
        "running": draw(st.integers(0, SLOTS * 12)),
        "tokens": draw(st.one_of(st.none(), st.integers(0, 50_000))),
        "kv": draw(st.floats(0, max(lowest, 1))),
    }


@settings(DETERMINISTIC, max_examples=150)
@given(specs(), st.data())
def test_a_constant_load_never_flips_direction(
    spec: LLMDeploymentSpec, data: st.DataObject
) -> None:
    lowest, highest = bounds(spec)
    load = data.draw(constant_loads(lowest))
    current = data.draw(st.integers(max(lowest, 1), highest))
    startup = data.draw(st.integers(0, 4))
    decisions = _run(spec, load, current, startup, periods=80)
    directions = {(d.desired > d.current) - (d.desired < d.current) for d in decisions} - {0}
    event(f"directions: {sorted(directions)}")
    assert len(directions) <= 1, [(d.current, d.desired, d.reason.value) for d in decisions]


@settings(DETERMINISTIC, max_examples=150)
@given(specs(scale_up_window=False), st.data())
def test_a_step_load_scales_up_at_the_first_period_that_sees_it(
    spec: LLMDeploymentSpec, data: st.DataObject
) -> None:
    assert spec.autoscaling is not None
    lowest, highest = bounds(spec)
    quiet = {"waiting": 0, "running": 0, "tokens": None, "kv": 0.0}
    calm = _run(spec, quiet, data.draw(st.integers(max(lowest, 1), highest)), 0, periods=10)
    before = calm[-1]
    event(f"replicas before the step: {'0' if before.desired == 0 else 'some'}")
    if before.desired == highest:
        event("already at maxReplicas")
        return
    # Enough waiting requests that every replica's share is well beyond target and tolerance.
    scaling = spec.autoscaling
    factor = (1 + scaling.tolerance) * data.draw(st.floats(1.05, 10))
    per_replica = scaling.targets.prefill_queue_per_replica * factor
    waiting = max(1, int(per_replica * max(before.desired, 1)) + 1)
    load = {**quiet, "waiting": waiting}
    start = NOW + 10 * scaling.period_seconds
    first = _run(spec, load, before.desired, 0, periods=1, start=start, history=before.history)[0]
    assert first.desired > before.desired, (first.reason.value, first.message)


@settings(DETERMINISTIC, max_examples=300)
@given(specs(), observations(), histories(), st.floats(1, 600))
def test_headroom_never_asks_for_less(
    spec: LLMDeploymentSpec, observed: Observation, history: History, startup: float
) -> None:
    without = decide(spec, observed, replace(history, startup_seconds=None), NOW)
    learned = replace(history, startup_seconds=startup, learned_until=NOW)
    assert decide(spec, observed, learned, NOW).desired >= without.desired
