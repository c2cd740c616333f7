"""The oracle: a lower-bound estimate of the GPU-hours a trace needs at an SLO.

Called by :func:`llmfleet_fleetsim.simulate` (and by the bench, which may
measure a capacity once and pass it to every run). Two steps:

1. :func:`capacity`: the request rate one replica sustains at the SLO. A probe of
   requests picked evenly through the trace (its own prompt and output sizes; cycled
   for ``probe_s`` seconds of arrivals, at least ``probe_requests``) arrives at one
   replica evenly spaced at a rate ``r``; the capacity is the largest ``r`` (bisection,
   1% precision) at which the share of probe requests meeting the SLO is at least
   ``goal`` (0.99) times the share that meets it when each request is served alone (some
   requests cannot meet a tight TTFT even alone). A queue that grows by ``e`` requests a
   second needs ``TTFT x r / e`` seconds to break the SLO, so a longer probe sees closer
   to the true capacity (120 s: within about TTFT / 120 s).
2. :func:`oracle`: per ``bucket_s`` (60 s) of the trace, the fewest replicas whose
   capacity covers that bucket's arrivals, ``ceil(arrivals / (capacity x bucket_s))``,
   held for exactly that bucket; GPU-hours sum those replica-buckets. It knows the future,
   starts replicas in zero time, and lets no work spill into the next bucket, so no
   real policy should beat it except by accepting SLO misses.
3. :func:`oracle_at`, the oracle fitted to an attainment goal. Step 1 probes with evenly
   spaced arrivals, which a replica handles better than bursty ones through a router, so
   step 2's schedule, replayed through the fleet (:func:`replay_schedule`: the same router,
   instant starts, the counts changed at each bucket's start), misses the SLO more often
   than the goal allows. The fitted oracle scales the capacity by a factor ``k <= 1``
   (halving, then bisection: about six replays) until the replayed schedule reaches the
   goal, and keeps the cheapest schedule that did. Still perfect foresight, instant
   starts and per-bucket sizing: a tighter lower bound that a fleet is known to reach.
   Where even ``k = min_scale`` misses the goal, it says so (``fitted`` None) with the
   best attainment it saw.
4. :func:`starting_seconds`: what a schedule's starts cost when a replica takes
   ``startup_s`` to start (GPU-hours count starting replicas). The fleet still knows the
   future and starts each replica exactly ``startup_s`` before its bucket; across a gap
   shorter than a startup it keeps the replica instead (cheaper than a restart). Per
   layer (the ``j``-th replica, needed while a bucket needs ``j`` or more), each run of
   buckets costs ``min(gap, startup_s)`` before it, or ``startup_s`` if it is the layer's
   first and no replica was warm for it at the start (as many as the fleet it is compared
   with starts with: the first bucket's need in the bench). Added to an oracle, the least
   a clairvoyant fleet that follows its schedule pays at that startup time. Not a lower
   bound on every fleet: one that does not follow the schedule may pay less (on the
   bench's code trace, whose fitted schedule swings by tens of replicas a minute, a
   static fleet reaches the goal for less).
5. :func:`fewest_flips`: how often a schedule must turn. The cheapest schedule that holds
   at least each bucket's need and changes direction (up to down, or down to up) at most
   ``f`` times, for each ``f``: a dynamic programme over (bucket, replicas, last
   direction, flips). With no limit it is the oracle's own schedule; allowed no turn, it
   only rises, to each bucket's running peak. Held against a policy's GPU-hours it gives
   the fewest flips a clairvoyant fleet (instant starts) needs at that cost: a reference
   for the policy's flips, not a floor (a policy that does not hold every bucket's need
   may turn less).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from llmfleet_fleetsim.fleet import run
from llmfleet_fleetsim.slo import Slo, meets
from llmfleet_fleetsim.trace import Trace, TraceRequest
from llmfleet_fleetsim.view import FleetView
from llmfleet_runtime.simulator import Engine, FinishedRequest, Profile, Request


@dataclass(frozen=True)
class Oracle:
    """The oracle's replicas per bucket and what they cost."""

    capacity_rps: float
    """Requests per second one replica sustains at the SLO (see :func:`capacity`)."""
    bucket_s: float
    needs: tuple[int, ...]
    """Replicas needed in each bucket, from the first arrival."""
    gpu_hours: float

    @property
    def peak(self) -> int:
        """The most replicas any bucket needs."""
        return max(self.needs, default=0)


def _attainment(
    profile: Profile,
    slo: Slo,
    requests: list[TraceRequest],
    rate: float | None,
    probe_s: float = 0.0,
) -> float:
    """Share of ``requests`` meeting ``slo`` on one replica (``rate`` None: each alone)."""
    engine = Engine(profile)
    finished: list[FinishedRequest] = []
    now = 0.0
    count = len(requests) if rate is None else max(len(requests), math.ceil(rate * probe_s))
    for index in range(count):
        request = requests[index % len(requests)]
        if rate is None:
            results = engine.advance(math.inf)  # the previous request leaves first
            now = results[-1].end if results else now
        else:
            now = index / rate
            results = engine.advance(now)
        for result in results:
            finished.extend(result.finished)
        engine.add(Request(str(index), request.prompt_tokens, request.output_tokens), now)
        engine.advance(now)
    for result in engine.advance(math.inf):
        finished.extend(result.finished)
    met = sum(
        meets(slo, done.arrival, done.first_token, done.last_token, done.output_tokens)
        for done in finished
    )
    return met / count


def ceiling(trace: Trace, profile: Profile, slo: Slo) -> float:
    """The share of ``trace``'s requests that meet ``slo`` each alone on an idle replica: no
    fleet does better (a long prompt's prefill alone can miss a tight TTFT, and a request
    longer than the engine's max model length is refused)."""
    if not trace.requests:
        return 1.0
    fitting = [
        r for r in trace.requests if r.prompt_tokens + r.output_tokens <= profile.max_model_len
    ]
    if not fitting:
        return 0.0
    return _attainment(profile, slo, fitting, None) * len(fitting) / len(trace.requests)


def warm_start(needs: Sequence[int], bucket_s: float, startup_s: float) -> int:
    """Replicas to start a replay with: the most ``needs`` holds in the buckets that begin
    within the first ``startup_s``. No fleet can add a replica that serves sooner, so a
    smaller warm fleet judges a policy on minutes no policy can act in."""
    return max(needs[: max(1, math.ceil(startup_s / bucket_s))], default=0)


def capacity(
    trace: Trace,
    profile: Profile,
    slo: Slo,
    *,
    probe_requests: int = 300,
    probe_s: float = 120.0,
    goal: float = 0.99,
) -> float:
    """Requests per second one replica sustains at ``slo`` (module docstring, step 1)."""
    fitting = [
        r for r in trace.requests if r.prompt_tokens + r.output_tokens <= profile.max_model_len
    ]
    if not fitting:
        return 0.0
    count = min(probe_requests, len(fitting))
    probe = [fitting[i * len(fitting) // count] for i in range(count)]
    alone = _attainment(profile, slo, probe, None)
    if alone == 0:
        return 0.0
    needed = goal * alone
    low, high = 0.0, 1.0
    while _attainment(profile, slo, probe, high, probe_s) >= needed:
        low, high = high, high * 2
        if high > 1e6:
            return low
    while high - low > 0.01 * high:
        middle = (low + high) / 2
        if _attainment(profile, slo, probe, middle, probe_s) >= needed:
            low = middle
        else:
            high = middle
    return low


def oracle(
    trace: Trace, capacity_rps: float, gpus_per_replica: int, *, bucket_s: float = 60.0
) -> Oracle | None:
    """Replicas per bucket and GPU-hours (module docstring, step 2); None if nothing fits."""
    if capacity_rps <= 0:
        return None
    buckets = [0] * (int(trace.duration_s // bucket_s) + 1)
    for request in trace.requests:
        buckets[int(request.arrival_s // bucket_s)] += 1
    per_bucket = capacity_rps * bucket_s
    needs = tuple(math.ceil(count / per_bucket) for count in buckets)
    gpu_hours = sum(needs) * bucket_s * gpus_per_replica / 3600
    return Oracle(capacity_rps, bucket_s, needs, gpu_hours)


def starting_seconds(
    needs: Sequence[int], bucket_s: float, startup_s: float, warm: int | None = None
) -> float:
    """Replica-seconds a fleet following ``needs`` spends starting replicas, or keeping
    them across gaps shorter than ``startup_s`` (module docstring, step 4), with ``warm``
    replicas ready at the start (default: the first bucket's need)."""
    if warm is None:
        warm = needs[0] if needs else 0
    total = 0.0
    for layer in range(1, max(needs, default=0) + 1):
        served_until = 0.0 if layer <= warm else None
        for index, need in enumerate(needs):
            if need < layer:
                continue
            start = index * bucket_s
            total += startup_s if served_until is None else min(start - served_until, startup_s)
            served_until = start + bucket_s
    return total


@dataclass
class Schedule:
    """A policy replaying fixed replica counts per bucket (the oracle's), deciding at each
    bucket's start."""

    needs: tuple[int, ...]
    bucket_s: float
    name: str = "oracle"
    period_s: float = field(init=False)

    def __post_init__(self) -> None:
        self.period_s = self.bucket_s

    @property
    def initial_replicas(self) -> int:
        return max(1, self.needs[0] if self.needs else 1)

    def decide(self, view: FleetView, now: float) -> int:
        index = min(int(now // self.bucket_s), len(self.needs) - 1)
        return max(1, self.needs[index])


def replay_schedule(
    trace: Trace,
    best: Oracle,
    profile: Profile,
    slo: Slo,
    gpus_per_replica: int,
    *,
    scrape_s: float = 60.0,
) -> tuple[float, float]:
    """``best``'s replica counts run through the fleet with instant starts:
    (attainment, GPU-hours). The metrics pipeline plays no part (a schedule reads none)."""
    outcome = run(
        trace, Schedule(best.needs, best.bucket_s), profile, startup_s=0.0, scrape_s=scrape_s,
        lag_s=0.0,
    )  # fmt: skip
    met = sum(
        meets(slo, r.arrival_s, outcome.first_token[i], outcome.last_token[i], r.output_tokens)
        for i, r in enumerate(trace.requests)
    )
    attainment = met / len(trace.requests) if trace.requests else 1.0
    return attainment, outcome.replica_seconds * gpus_per_replica / 3600


@dataclass(frozen=True)
class FittedOracle:
    """The oracle as measured (``raw``) and fitted to an attainment goal (module docstring)."""

    goal: float
    raw: Oracle
    raw_attainment: float
    """The raw schedule's attainment when replayed (instant starts)."""
    fitted: Oracle | None
    """The cheapest schedule whose replay reached ``goal``; None if none did."""
    scale: float | None
    """``fitted``'s capacity over ``raw``'s (the ``k`` found)."""
    attainment: float
    """``fitted``'s replayed attainment, or the best seen if the goal is unreachable."""
    best_gpu_hours: float
    """GPU-hours of the schedule with that attainment."""
    replays: int


def oracle_at(
    trace: Trace,
    profile: Profile,
    slo: Slo,
    gpus_per_replica: int,
    goal: float,
    *,
    capacity_rps: float | None = None,
    bucket_s: float = 60.0,
    min_scale: float = 0.125,
    steps: int = 4,
) -> FittedOracle | None:
    """The oracle fitted to ``goal`` (module docstring, step 3); None if nothing fits.

    ``capacity_rps`` as measured by :func:`capacity` (None: measured here). Halves ``k``
    from 1 down to ``min_scale`` until a replay reaches the goal, then bisects ``steps``
    times between the last miss and the first hit.
    """
    rps = capacity(trace, profile, slo) if capacity_rps is None else capacity_rps
    raw = oracle(trace, rps, gpus_per_replica, bucket_s=bucket_s)
    if raw is None:
        return None
    tried: list[tuple[float, Oracle, float, float]] = []

    def attempt(k: float) -> bool:
        schedule = oracle(trace, rps * k, gpus_per_replica, bucket_s=bucket_s)
        assert schedule is not None
        attained, _ = replay_schedule(trace, schedule, profile, slo, gpus_per_replica)
        tried.append((k, schedule, attained, schedule.gpu_hours))
        return attained >= goal

    miss, hit = 1.0, None
    k = 1.0
    while True:
        if attempt(k):
            hit = k
            break
        miss = k
        if k <= min_scale:
            break
        k = max(k / 2, min_scale)
    if hit is not None and hit < 1.0:
        for _ in range(steps):
            middle = (miss + hit) / 2
            if attempt(middle):
                hit = middle
            else:
                miss = middle
    raw_attainment = tried[0][2]
    reached = [t for t in tried if t[2] >= goal]
    if reached:
        k, fitted, attained, gpu_hours = min(reached, key=lambda t: t[3])
        return FittedOracle(goal, raw, raw_attainment, fitted, k, attained, gpu_hours, len(tried))
    _, _, attained, gpu_hours = max(tried, key=lambda t: (t[2], -t[3]))
    return FittedOracle(goal, raw, raw_attainment, None, None, attained, gpu_hours, len(tried))


_STILL, _UP, _DOWN = 0, 1, 2
"""Last move of a schedule so far: none yet, up, down."""


def fewest_flips(needs: Sequence[int], most: int) -> tuple[int, ...]:
    """Per ``f`` in 0..``most``: the fewest replica-buckets of a schedule that holds at
    least ``needs[i]`` in each bucket ``i`` and changes direction at most ``f`` times
    (module docstring, step 5); GPU-hours are these x bucket_s x GPUs / 3600."""
    if not needs:
        return (0,) * (most + 1)
    levels = range(max(needs) + 1)
    never = math.inf
    # cost[f][move][n]: the cheapest schedule so far ending at n replicas after ``move``,
    # with f flips.
    cost = [[[never for _ in levels] for _ in range(3)] for _ in range(most + 1)]
    for n in levels[needs[0] :]:
        cost[0][_STILL][n] = n
    for need in needs[1:]:
        after = [[[never for _ in levels] for _ in range(3)] for _ in range(most + 1)]
        for f in range(most + 1):
            # Rising into n: from below, turning (a flip) if the last move was down.
            rising = _from(cost, f, keep=_UP, turn=_DOWN, order=levels)
            falling = _from(cost, f, keep=_DOWN, turn=_UP, order=levels[::-1])
            for n in levels[need:]:
                after[f][_STILL][n] = cost[f][_STILL][n] + n
                after[f][_UP][n] = min(cost[f][_UP][n], rising[n]) + n
                after[f][_DOWN][n] = min(cost[f][_DOWN][n], falling[n]) + n
        cost = after
    exactly = [min(min(by_move) for by_move in by_flips) for by_flips in cost]
    return tuple(int(min(exactly[: f + 1])) for f in range(most + 1))


def _from(cost: list[list[list[float]]], f: int, keep: int, turn: int, order: range) -> list[float]:
    """Per level n: the cheapest schedule that can move to n from a level before it in
    ``order`` with ``f`` flips after the move (a move in direction ``keep``)."""
    reach = [math.inf] * len(order)
    best = math.inf
    for n in order:
        reach[n] = best
        turned = cost[f - 1][turn][n] if f else math.inf
        best = min(best, cost[f][_STILL][n], cost[f][keep][n], turned)
    return reach
