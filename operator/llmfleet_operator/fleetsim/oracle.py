"""The oracle: a lower-bound estimate of the GPU-hours a trace needs at an SLO.

Called by :func:`llmfleet_operator.fleetsim.simulate` (and by the bench, which may
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
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llmfleet_operator.fleetsim.slo import Slo, meets
from llmfleet_operator.fleetsim.trace import Trace, TraceRequest
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
