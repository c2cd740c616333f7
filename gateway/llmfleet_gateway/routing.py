"""The replica choice for one request, as a pure function.

The gateway's server calls :func:`choose` for every request with a snapshot of its replicas
(:class:`ReplicaLoad`: the engine's last scraped metrics and the gateway's own accounting),
the request (:class:`RouteRequest`: its prompt estimate, the blocks each replica holds from
:meth:`llmfleet_gateway.prefix.PrefixIndex.matched`, a session's replica) and the
:class:`RoutingSettings`; the fleet simulator's router calls the very same function. It
reads no clock and keeps no state; the :class:`Choice` carries its reason and the numbers
behind it for the access log.

The rules, in order:

1. No replica: ``NO_REPLICA``. A replica is saturated, and never chosen, once it has
   ``max_in_flight`` requests from this gateway, or its queue would pass ``engine_queue``:
   its load (below) reaches ``max_num_seqs + engine_queue``, or (fresh metrics) its engine
   reports ``engine_queue`` requests waiting (a full KV cache queues before the slots
   fill; at least one). All saturated: ``SATURATED``: the caller queues the request, where
   priority and fairness among tenants order it (an engine's queue is first come, first
   served), or answers 429.
2. Each other replica gets an estimated time to first token::

       ahead    = pending_prefill_tokens                        (metrics stale or missing)
                = max(pending_prefill_tokens,
                      waiting * typical_prompt_tokens)          (metrics fresh)
       uncached = max(0, prompt_tokens - cached_blocks * block_tokens)
       ttft     = (ahead + uncached) / prefill_tokens_per_s
                + decode_step_s   if max(in_flight, running) >= max_num_seqs
                + kv_penalty_s * (kv_cache_usage - kv_pressure) / (1 - kv_pressure)
                                  if kv_cache_usage > kv_pressure (fresh metrics only)

   The engine's waiting queue counts every gateway's requests, this one's included, so
   only what exceeds this gateway's own pending tokens is added. Metrics older than
   ``stale_after_s`` (or never scraped) are ignored, never a reason to refuse
   (llm-d-router#2408 stopped traffic on stale metrics).
3. Bounded load: a replica's load is its requests (``max(in_flight, waiting + running)``
   with fresh metrics, else ``in_flight``); a replica is chosen only while that load is at
   most ``affinity_load_factor x (mean load + 1)`` (the cap), so a hot prefix or session
   spills over instead of melting one replica (KubeAI#447, vllm-router#179). The cap binds
   the estimate too: a cached prefix discounts the estimate, and would otherwise pull every
   request sharing it onto one replica until its queue outgrew everyone's prefill. The
   least loaded replica is always within the cap; should every replica within it be
   saturated, the estimate alone decides.
4. ``SESSION``: the session's replica, when in the pool, not saturated and within the cap.
5. ``PREFIX``: of the replicas within the cap whose cached blocks cover at least
   ``prefix_min_share`` of the prompt, the one holding the most (then the lowest estimate,
   then the name). A small share is left to the estimate, which already discounts it.
6. ``LEAST_TTFT``: the lowest estimate within the cap; on a tie the fewer requests
   (requests past their first token cost no prefill in the estimate, yet share the
   engine), then the smaller name, so every gateway replica and every run chooses alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum


class RouteReason(StrEnum):
    """Why a replica was (or none was) chosen."""

    SESSION = "Session"
    PREFIX = "Prefix"
    LEAST_TTFT = "LeastTTFT"
    SATURATED = "Saturated"
    NO_REPLICA = "NoReplica"


@dataclass(frozen=True, slots=True)
class ReplicaLoad:
    """One replica as the router sees it at the moment of the choice."""

    name: str
    max_num_seqs: int
    """The engine's slots (from the spec: vLLM does not export it)."""
    waiting: int | None = None
    """``vllm:num_requests_waiting`` at the last scrape; None when never scraped."""
    running: int | None = None
    """``vllm:num_requests_running`` at the last scrape; None when never scraped."""
    kv_cache_usage: float | None = None
    """``vllm:kv_cache_usage_perc`` (0..1) at the last scrape; None when never scraped."""
    metrics_age_s: float | None = None
    """Seconds since the last successful scrape; None when never scraped."""
    in_flight: int = 0
    """Requests this gateway sent that have not finished."""
    pending_prefill_tokens: int = 0
    """Prompt tokens this gateway sent that have no first token yet."""


@dataclass(frozen=True)
class RouteRequest:
    """What the router knows of the request."""

    prompt_tokens: int
    """An estimate (from the prompt's length: tokenizing costs too much on the hot path)."""
    cached_blocks: Mapping[str, int] = field(default_factory=dict)
    """Per replica, the leading blocks it is believed to hold (``PrefixIndex.matched``)."""
    block_tokens: int = 64
    """Tokens per block of :mod:`llmfleet_gateway.prefix`."""
    session_replica: str | None = None
    """The replica session affinity names, if any."""


@dataclass(frozen=True)
class RoutingSettings:
    """The router's knobs; one per model (speeds differ by model and hardware)."""

    max_in_flight: int = 256
    """Requests this gateway keeps at one replica; at it, the replica is saturated."""
    prefill_tokens_per_s: float = 8000.0
    """A replica's prefill speed, for the estimate."""
    engine_queue: int = 4
    """Requests a replica may be sent beyond its slots (its engine queues them, ready for
    the next free slot); more wait in the gateway, in the order of priority and fairness."""
    decode_step_s: float = 0.03
    """A request's wait for a slot when all of a replica's slots are busy."""
    stale_after_s: float = 2.0
    """Engine metrics older than this are ignored: the gateway's own accounting decides."""
    affinity_load_factor: float = 1.25
    """A replica (session and prefix affinity included) is chosen only while its load is at
    most this factor x (mean load + 1)."""
    kv_pressure: float = 0.9
    """KV-cache usage above which a replica is penalised (preemption risk)."""
    kv_penalty_s: float = 1.0
    """The penalty at a full KV cache, growing linearly from nothing at ``kv_pressure``."""
    typical_prompt_tokens: int = 1024
    """Prompt tokens assumed for each request in an engine's waiting queue."""
    prefix_min_share: float = 0.3
    """The share of the prompt a replica must hold for prefix affinity to override the
    estimate (vllm-router's cache threshold)."""

    def __post_init__(self) -> None:
        if self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {self.max_in_flight}")
        if self.engine_queue < 0:
            raise ValueError(f"engine_queue must be at least 0, got {self.engine_queue}")
        if self.prefill_tokens_per_s <= 0:
            raise ValueError(
                f"prefill_tokens_per_s must be positive, got {self.prefill_tokens_per_s}"
            )
        if self.affinity_load_factor < 1:
            raise ValueError(
                f"affinity_load_factor must be at least 1, got {self.affinity_load_factor}"
            )
        if not 0 <= self.kv_pressure < 1:
            raise ValueError(f"kv_pressure must be in [0, 1), got {self.kv_pressure}")


@dataclass(frozen=True)
class Choice:
    """The replica chosen, why, and the numbers for the access log."""

    replica: str | None
    """None: no replica, or every one saturated."""
    reason: RouteReason
    estimated_ttft_s: float | None = None
    """The chosen replica's estimate."""
    cached_blocks: int = 0
    """Leading blocks the chosen replica is believed to hold."""
    load: int = 0
    """The chosen replica's requests (see the module docstring)."""
    load_cap: float = 0
    """The bounded-load cap the choice had to stay within."""
    fresh_metrics: bool = False
    """Whether the chosen replica's engine metrics entered the estimate."""
    candidates: int = 0
    """Replicas not saturated."""
    over_cap: str | None = None
    """A replica passed over for bounded load: the session's, else the deepest prefix's,
    else the one with the lowest estimate."""

    def describe(self) -> str:
        """One line, e.g. ``Routed to r1 (Prefix): 12 blocks cached, ...``."""
        if self.replica is None:
            return f"No replica chosen ({self.reason}): {self.candidates} not saturated"
        text = (
            f"Routed to {self.replica} ({self.reason}): {self.cached_blocks} blocks cached,"
            f" estimated TTFT {self.estimated_ttft_s or 0.0:.3f}s, load {self.load:g}"
            f" (cap {self.load_cap:.2f}), {self.candidates} candidates"
        )
        if not self.fresh_metrics:
            text += ", engine metrics stale or missing"
        if self.over_cap is not None:
            text += f"; {self.over_cap} over the load cap"
        return text


_Row = tuple[float, str, int, int, bool]
"""A replica not saturated: estimate, name, load, cached blocks, fresh metrics."""


def choose(
    replicas: Sequence[ReplicaLoad], request: RouteRequest, settings: RoutingSettings
) -> Choice:
    """The replica for ``request`` (see the module docstring for the rules)."""
    if not replicas:
        return Choice(None, RouteReason.NO_REPLICA)
    cached = request.cached_blocks
    block_tokens = request.block_tokens
    prompt = request.prompt_tokens
    speed = settings.prefill_tokens_per_s
    stale_after = settings.stale_after_s
    typical = settings.typical_prompt_tokens
    pressure = settings.kv_pressure
    kv_scale = settings.kv_penalty_s / (1 - pressure)
    limit = settings.max_in_flight
    beyond_slots = settings.engine_queue
    queue_limit = max(1, beyond_slots)

    decode_step = settings.decode_step_s
    rows: list[_Row] = []
    total_load = 0
    # The hot path: plain comparisons rather than max(), one tuple per replica.
    for replica in replicas:
        in_flight = replica.in_flight
        ahead = replica.pending_prefill_tokens
        busy = load = in_flight
        penalty = 0.0
        age = replica.metrics_age_s
        if age is not None and age <= stale_after:
            fresh = True
            waiting = replica.waiting or 0
            running = replica.running or 0
            queued = waiting * typical
            if queued > ahead:
                ahead = queued
            if running > busy:
                busy = running
            if waiting + running > load:
                load = waiting + running
            usage = replica.kv_cache_usage
            if usage is not None and usage > pressure:
                penalty = (usage - pressure) * kv_scale
        else:
            fresh = False
            waiting = 0
        total_load += load
        if in_flight >= limit or load >= replica.max_num_seqs + beyond_slots:
            continue
        if waiting >= queue_limit:
            continue
        name = replica.name
        blocks = cached.get(name, 0) if cached else 0
        uncached = prompt - blocks * block_tokens
        ttft = ((ahead + uncached) if uncached > 0 else ahead) / speed + penalty
        if busy >= replica.max_num_seqs:
            ttft += decode_step
        rows.append((ttft, name, load, blocks, fresh))
    if not rows:
        return Choice(None, RouteReason.SATURATED)

    cap = settings.affinity_load_factor * (total_load / len(replicas) + 1)
    over_cap: str | None = None
    session = request.session_replica
    if session is not None:
        for row in rows:
            if row[1] == session:
                if row[2] <= cap:
                    return _choice(row, RouteReason.SESSION, cap, len(rows), None)
                over_cap = session
                break
    if cached and prompt > 0:
        least_blocks = max(1.0, settings.prefix_min_share * prompt / block_tokens)
        deep = [row for row in rows if row[3] >= least_blocks]
        if deep:
            top = min(deep, key=_deepest)
            if top[2] > cap:
                over_cap = over_cap or top[1]
            deep = [row for row in deep if row[2] <= cap]
            if deep:
                return _choice(
                    min(deep, key=_deepest), RouteReason.PREFIX, cap, len(rows), over_cap
                )
    fastest = min(rows, key=_fastest)
    if fastest[2] > cap:
        within = [row for row in rows if row[2] <= cap]
        if within:
            over_cap = over_cap or fastest[1]
            fastest = min(within, key=_fastest)
    return _choice(fastest, RouteReason.LEAST_TTFT, cap, len(rows), over_cap)


def _fastest(row: _Row) -> tuple[float, int, str]:
    """The lowest estimate, then the fewest requests, then the name."""
    return row[0], row[2], row[1]


def _deepest(row: _Row) -> tuple[int, float, str]:
    """Most blocks first, then the lowest estimate, then the name."""
    return -row[3], row[0], row[1]


def _choice(
    row: _Row,
    reason: RouteReason,
    cap: float,
    candidates: int,
    over_cap: str | None,
) -> Choice:
    ttft, name, load, blocks, fresh = row
    return Choice(name, reason, ttft, blocks, load, cap, fresh, candidates, over_cap)
