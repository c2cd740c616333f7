"""Signals: from per-replica engine samples to how many replicas each signal asks for.

Called by :mod:`llmfleet_operator.autoscale.policy` once per window (stable and short).
A signal's total is the sum over ready replicas of each replica's average within the
window; it asks for ``total / target`` replicas. A replica with no sample inside a short
window is read from its newest sample, so a window shorter than the scrape interval still
sees the latest scrape. The request rate is a counter's rate instead: from a replica's
newest sample back to the last one at least a window older (or its oldest), so a short
window reads the last scrape interval; the total is the sum over the replicas with two
readings (one just ready has served next to nothing yet).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from itertools import pairwise

from llmfleet_contract.api import Reason, ScalingTargets
from llmfleet_operator.autoscale.inputs import Sample

# Float noise must not turn "exactly 3 replicas' worth" into 4.
_EPSILON = 1e-9


class Signal(StrEnum):
    """The load signals, named as they appear in messages."""

    PREFILL_QUEUE = "prefill queue"
    PENDING_PREFILL_TOKENS = "pending prefill tokens"
    KV_CACHE_USAGE = "KV cache usage"
    SLOTS_USED = "slots used"
    REQUEST_RATE = "requests/s"


ABOVE_TARGET = {
    Signal.PREFILL_QUEUE: Reason.PREFILL_QUEUE_ABOVE_TARGET,
    Signal.PENDING_PREFILL_TOKENS: Reason.PENDING_TOKENS_ABOVE_TARGET,
    Signal.KV_CACHE_USAGE: Reason.KV_CACHE_ABOVE_TARGET,
    Signal.SLOTS_USED: Reason.SLOTS_ABOVE_TARGET,
    Signal.REQUEST_RATE: Reason.REQUEST_RATE_ABOVE_TARGET,
}
"""The decision reason when a signal is the one that scales up."""

_FRACTIONS = frozenset({Signal.KV_CACHE_USAGE, Signal.SLOTS_USED})


@dataclass(frozen=True)
class SignalReading:
    """One signal at one control period."""

    signal: Signal
    per_replica: float
    """Average per ready replica."""
    target: float
    """The spec's per-replica target."""
    needed: float
    """Replicas that would bring it to target: the total over ready replicas / target."""
    headroom: float = 0.0
    """Replicas added for the signal's rising trend over the learned startup time."""
    startup_seconds: float | None = None
    """The learned startup time."""
    ahead_seconds: float | None = None
    """How far ahead the trend was extrapolated: the startup, or less when the levels it
    was fitted over cover less (:meth:`~llmfleet_operator.autoscale.headroom.Trend.ahead`)."""

    @property
    def projected(self) -> float:
        """Replicas it asks for: what it needs now plus headroom for the trend."""
        return self.needed + self.headroom

    @property
    def wants(self) -> int:
        """Whole replicas this signal asks for."""
        return max(0, math.ceil(self.projected - _EPSILON))

    def describe(self) -> str:
        """``prefill queue 14.0 per replica > target 4.0``."""
        digits = 2 if self.signal in _FRACTIONS else 1
        if self.per_replica > self.target:
            sign = ">"
        elif self.per_replica < self.target:
            sign = "<"
        else:
            sign = "="
        text = (
            f"{self.signal} {self.per_replica:.{digits}f} per replica {sign} "
            f"target {self.target:.{digits}f}"
        )
        if self.headroom > 0:
            startup, ahead = self.startup_seconds or 0, self.ahead_seconds or 0
            over = f"a {startup:.0f}s startup"
            if ahead < startup:
                over = f"{ahead:.0f}s of {over}, as far as it was read"
            text += f" (+{self.headroom:.1f} replicas for its trend over {over})"
        return text


@dataclass(frozen=True)
class _Totals:
    waiting: float
    pending_prefill_tokens: float | None
    kv_cache_usage: float
    slots_used: float
    request_rate: float | None


def missing_replicas(
    ready: Iterable[str], samples: Iterable[Sample], now: float, staleness_seconds: float
) -> tuple[str, ...]:
    """Ready replicas whose newest sample is absent or older than ``staleness_seconds``."""
    newest: dict[str, float] = {}
    for sample in samples:
        if sample.time <= now:
            newest[sample.replica] = max(sample.time, newest.get(sample.replica, sample.time))
    return tuple(
        sorted(
            name for name in ready if name not in newest or now - newest[name] > staleness_seconds
        )
    )


def _window(samples: Sequence[Sample], window_seconds: float, now: float) -> list[Sample]:
    past = [sample for sample in samples if sample.time <= now]
    inside = [sample for sample in past if now - sample.time < window_seconds]
    if inside or not past:
        return inside
    return [max(past, key=lambda sample: sample.time)]


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _rate(samples: Sequence[Sample], window_seconds: float, now: float) -> float | None:
    """Requests started per second by one replica, or None without two counter readings."""
    points = sorted((s.time, s.started) for s in samples if s.time <= now and s.started is not None)
    if len(points) < 2:
        return None
    end = points[-1][0]
    begin = max((i for i, (t, _) in enumerate(points[:-1]) if t <= end - window_seconds), default=0)
    used = points[begin:]
    if end == used[0][0]:
        return None
    # A counter that went down restarted from zero (as Prometheus' rate() reads it), at
    # each step: a restart inside the window loses only what was counted before it.
    increase = sum(b - a if b >= a else b for (_, a), (_, b) in pairwise(used))
    return increase / (end - used[0][0])


def _totals(
    ready: Sequence[str], samples: Sequence[Sample], slots: int, window_seconds: float, now: float
) -> _Totals:
    by_replica: dict[str, list[Sample]] = {name: [] for name in ready}
    for sample in samples:
        if sample.replica in by_replica:
            by_replica[sample.replica].append(sample)
    waiting = kv = used = 0.0
    pending: float | None = 0.0
    rates = []
    for name in ready:
        rate = _rate(by_replica[name], window_seconds, now)
        if rate is not None:
            rates.append(rate)
        chosen = _window(by_replica[name], window_seconds, now)
        if not chosen:
            continue
        waiting += _mean([s.waiting for s in chosen])
        kv += _mean([s.kv_cache_usage for s in chosen])
        used += _mean([s.running / slots for s in chosen])
        tokens = [s.pending_prefill_tokens for s in chosen]
        if pending is None or any(value is None for value in tokens):
            pending = None
        else:
            pending += _mean([value for value in tokens if value is not None])
    return _Totals(waiting, pending, kv, used, sum(rates) if rates else None)


def read(
    targets: ScalingTargets,
    ready: Sequence[str],
    samples: Sequence[Sample],
    slots: int,
    window_seconds: float,
    now: float,
    queued: int = 0,
) -> tuple[SignalReading, ...]:
    """Every signal that has a target and a value, over one window, for the ready replicas.

    The prefill queue counts ``queued`` too, the requests the gateway queues for the model
    now: a saturated replica gets few beyond its slots (the gateway keeps the rest, to
    order them by priority and fairness), so they are the rest of its waiting line; and
    those the gateway sent to a peer region for want of room here, so a region whose bursts
    its peers absorb still grows to serve them itself.

    Pending prefill tokens count only when the spec sets a target and every ready
    replica's samples carry them; the request rate when the spec sets a target and some
    ready replica has two counter readings.
    """
    if not ready:
        return ()
    totals = _totals(ready, samples, slots, window_seconds, now)
    pairs: list[tuple[Signal, float | None, float | None]] = [
        (Signal.PREFILL_QUEUE, totals.waiting + queued, targets.prefill_queue_per_replica),
        (
            Signal.PENDING_PREFILL_TOKENS,
            totals.pending_prefill_tokens,
            targets.pending_prefill_tokens_per_replica,
        ),
        (Signal.KV_CACHE_USAGE, totals.kv_cache_usage, targets.kv_cache_usage),
        (Signal.SLOTS_USED, totals.slots_used, targets.slots_used),
        (Signal.REQUEST_RATE, totals.request_rate, targets.requests_per_second),
    ]
    return tuple(
        SignalReading(signal, total / len(ready), float(target), total / target)
        for signal, total, target in pairs
        if total is not None and target is not None
    )


def larger(
    first: Sequence[SignalReading], second: Sequence[SignalReading]
) -> tuple[SignalReading, ...]:
    """Per signal, the reading that asks for more (readings of the same signals)."""
    by_signal = {reading.signal: reading for reading in second}
    return tuple(
        max(reading, by_signal.get(reading.signal, reading), key=lambda r: r.needed)
        for reading in first
    )


def strongest(readings: Sequence[SignalReading]) -> SignalReading | None:
    """The reading that asks for the most replicas (first in signal order on a tie)."""
    return max(readings, key=lambda reading: reading.projected, default=None)
