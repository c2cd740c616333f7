"""Several regions' fleets on one clock, with or without the gateways' spill between them.

Called by the multi-region bench (``bench/multiregion``) and its tests. Each region is a
:class:`~.fleet.Fleet` with its own autoscaler and its own requests; with ``spill`` its
gateway (a :class:`Gateway`: the bench puts :class:`llmfleet_gateway.peers.Peers` behind
it, the very object the gateway asks) says where each arriving request goes, and a request
sent to a peer is served by the peer's fleet. The rules, as the gateways apply them:

* Local first: the local choice is :func:`llmfleet_gateway.routing.choose` over the
  region's ready replicas (a newcomer behind a non-empty gateway queue sees them
  saturated, as the server's does), and ``Peers.pick`` turns it into a Failover or a Spill
  (module docstring of :mod:`llmfleet_gateway.peers`: the objective, hysteresis, the cap at
  a peer's spare room). One gateway per region: it keeps the region's spill state and
  forwards in flight.
* Each region polls every peer every ``poll_s`` (regions polling at staggered instants):
  the peer's summary of that instant (:meth:`Gateway.summary` over its ready replicas as
  its router sees them) reaches the asking region one round trip later.
* A forwarded request reaches the peer one round trip after it arrived (the way there
  and its first token's way back, counted before it is served): its TTFT, measured from
  its arrival at the region it entered, carries the round trip; its TPOT does not. The
  peer serves it as any request (never forwarded again: the hop marker), and its end
  frees the origin's count of forwards in flight there.
* Requests waiting in a region's gateway queue go to its own replicas when they free up
  (not offered to peers again, unlike the server's waiting room: the bench's routing
  settings queue only past hundreds of requests per replica).
* Every autoscaler sees its own fleet only: forwarded requests are load of the region
  that serves them, and demand a region spilled is not its own load.

Results per region, by origin (:class:`RegionsOutcome`): each region's requests, wherever
served, and its own fleet's replica-seconds.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from llmfleet_fleetsim.fleet import Fleet
from llmfleet_fleetsim.outcome import Change, Outcome
from llmfleet_fleetsim.trace import Trace
from llmfleet_fleetsim.view import Policy
from llmfleet_gateway.routing import Choice, ReplicaLoad, RouteReason, RouteRequest, choose
from llmfleet_runtime.simulator import Profile


class Gateway(Protocol):
    """One region's gateway as its peers see it: the seam to
    :class:`llmfleet_gateway.peers.Peers` (bench/multiregion/gateways.py puts it behind
    this; the gateway's module does I/O, which this package may not import)."""

    def pick(self, local: Choice, prompt_tokens: int, now: float) -> tuple[str, str] | None:
        """The peer region a new request of ``prompt_tokens`` goes to instead, and why
        (``Spill`` or ``Failover``), given the local choice; None: the local replicas."""
        ...

    def done(self, peer: str) -> None:
        """A request forwarded to ``peer`` ended."""
        ...

    def summary(self, loads: Sequence[ReplicaLoad], now: float) -> object:
        """What this gateway answers a peer's poll, given its ready replicas as its router
        sees them."""
        ...

    def took(self, peer: str, answer: object, now: float, round_trip_s: float) -> None:
        """``peer``'s answer to this gateway's poll arrived."""
        ...


@dataclass(frozen=True)
class Region:
    """One region: its name, its requests and its autoscaler (fresh: it keeps memory)."""

    name: str
    trace: Trace
    policy: Policy
    initial_replicas: int | None = None
    """Warm replicas at the start (default: the policy's)."""


@dataclass(frozen=True)
class Spill:
    """The gateways' multi-region settings."""

    round_trip_s: Mapping[frozenset[str], float]
    """Per pair of regions, the WAN round trip."""
    gateway: Callable[[str, Sequence[str]], Gateway]
    """A region's gateway, from its name and its peers' names."""
    poll_s: float = 1.0
    """Seconds between two polls of a peer's summary."""

    def between(self, one: str, other: str) -> float:
        return self.round_trip_s[frozenset((one, other))]


@dataclass(frozen=True)
class RegionsOutcome:
    """Per region (by name): its own requests' outcome, wherever they were served, with
    its own fleet's replica-seconds, changes and timeline; and the forwards."""

    regions: dict[str, Outcome]
    forwarded: dict[tuple[str, str], int]
    """Requests forwarded, per (origin, peer)."""
    reasons: dict[str, int] = field(default_factory=dict)
    """Forwards per reason (Spill, Failover)."""
    served_in: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Per region, per request of its own: the region that served it."""


def rotated(trace: Trace, offset_s: float) -> Trace:
    """``trace`` started ``offset_s`` seconds in, wrapped around its duration: the same
    requests, another time of day."""
    duration = trace.duration_s
    if duration == 0 or offset_s % duration == 0:
        return trace
    shift = offset_s % duration
    moved = [
        replace(r, arrival_s=r.arrival_s - shift + (duration if r.arrival_s < shift else 0.0))
        for r in trace.requests
    ]
    return replace(trace, requests=tuple(sorted(moved, key=lambda r: r.arrival_s)))


class _Run:
    """One region's replay state (the loop of :func:`.fleet.run`, per region)."""

    def __init__(
        self, region: Region, fleet: Fleet, start: int, gateway: Gateway | None, peers: list[str]
    ) -> None:
        self.region = region
        self.fleet = fleet
        self.start = start
        """Global index of its first request."""
        self.arrivals = [r.arrival_s for r in region.trace.requests]
        self.next = 0
        self.scrapes = 0
        self.ticks = 1
        self.polls = 0
        self.changes: list[Change] = []
        self.gateway = gateway
        self.peers = peers
        self.serving: dict[int, Gateway] = {}
        """Requests forwarded here that have not finished, with the origin's gateway."""

    def advance(self, now: float) -> None:
        before = self.fleet.unfinished
        self.fleet.advance(now)
        if self.fleet.unfinished < before and self.serving:
            for index in [i for i in self.serving if self.fleet.last_token[i] is not None]:
                self.serving.pop(index).done(self.region.name)


def _local_choice(fleet: Fleet, index: int, now: float) -> Choice:
    """What the region's gateway chooses locally for a newcomer (the server's rule)."""
    ready = [r for r in fleet.alive if r.ready and not r.draining]
    if fleet.gateway:
        return Choice(None, RouteReason.SATURATED if ready else RouteReason.NO_REPLICA)
    loads = [replica.load(now) for replica in ready]
    return choose(loads, RouteRequest(fleet.trace.requests[index].prompt_tokens), fleet.routing)


@dataclass(frozen=True)
class _Forward:
    """A forwarded request reaching the peer that serves it."""

    to: _Run
    index: int


@dataclass(frozen=True)
class _Answer:
    """A peer's summary reaching the gateway that polled it."""

    to: Gateway
    peer: str
    answer: object
    round_trip_s: float


def _ready_loads(fleet: Fleet, now: float) -> list[ReplicaLoad]:
    return [r.load(now) for r in fleet.alive if r.ready and not r.draining]


def run_regions(
    regions: Sequence[Region],
    profile: Profile,
    *,
    startup_s: float,
    scrape_s: float,
    lag_s: float,
    spill: Spill | None,
    history_s: float = 600.0,
    max_drain_s: float = 3600.0,
) -> RegionsOutcome:
    """Replay every region's requests through its own fleet on one clock, the gateways
    spilling between regions when ``spill`` is set (module docstring). Each fleet is
    :class:`~.fleet.Fleet`'s, with ``profile`` and the gateway's routing settings; the
    replay ends when every request has finished, or ``max_drain_s`` after the last
    arrival."""
    if startup_s < 0 or scrape_s <= 0 or lag_s < 0:
        raise ValueError("startup_s and lag_s must be >= 0; scrape_s > 0")
    replay = _Replay(regions, profile, startup_s, lag_s, spill)
    deadline = max(r.trace.duration_s for r in regions) + max_drain_s
    now = 0.0
    while replay.pending():
        now, rank, run = replay.next_event(scrape_s)
        if now > deadline:
            now = deadline
            for each in replay.runs:
                each.advance(now)
            break
        if rank == _MAIL:
            replay.deliver(now)
            continue
        assert run is not None
        if rank == _POLL:
            replay.poll(run, now)
            continue
        run.advance(now)  # a slot freed at t_free went to the gateway queue there
        if rank == _READY:
            run.fleet.become_ready(now)
        elif rank == _ARRIVAL:
            replay.arrive(run, now)
        elif rank == _SCRAPE:
            run.fleet.scrape(now)
            run.scrapes += 1
        elif rank == _TICK:
            run.ticks += 1
            _tick(run, now, history_s)
    unfinished = any(run.fleet.unfinished for run in replay.runs)
    last = max(run.fleet.last_finish for run in replay.runs)
    end = now if unfinished else max(last, max(r.trace.duration_s for r in regions))
    return _outcome(replay, end)


# Events at the same instant, first first (a replica Ready before an arrival, as in
# :func:`.fleet.run`).
_READY, _ARRIVAL, _SCRAPE, _TICK, _FREE, _POLL, _MAIL = range(7)


class _Replay:
    """The regions' fleets, their gateways' peers, and the messages between regions."""

    def __init__(
        self,
        regions: Sequence[Region],
        profile: Profile,
        startup_s: float,
        lag_s: float,
        spill: Spill | None,
    ) -> None:
        # One trace of every region's requests: a request keeps its index wherever served.
        self.combined = Trace("regions", tuple(r for reg in regions for r in reg.trace.requests))
        self.profile = profile
        self.spill = spill
        self.runs: list[_Run] = []
        names = [region.name for region in regions]
        start = 0
        for region in regions:
            fleet = Fleet(self.combined, profile, startup_s, lag_s)
            warm = region.initial_replicas
            for _ in range(region.policy.initial_replicas if warm is None else warm):
                fleet.create(0.0, warm=True)
            others = [n for n in names if n != region.name]
            gateway = None if spill is None else spill.gateway(region.name, others)
            self.runs.append(_Run(region, fleet, start, gateway, others))
            start += len(region.trace.requests)
        self.by_name = {run.region.name: run for run in self.runs}
        self.mail: list[tuple[float, int, _Forward | _Answer]] = []
        """(time, sequence, message): forwarded requests and peers' summaries on their way."""
        self.sent = 0
        self.forwarded: dict[tuple[str, str], int] = {}
        self.reasons: dict[str, int] = {}
        self.sent_to: dict[int, str] = {}
        """Forwarded requests (by index) and the region they went to."""

    def pending(self) -> bool:
        return bool(self.mail) or any(
            run.next < len(run.arrivals) or run.fleet.unfinished for run in self.runs
        )

    def next_event(self, scrape_s: float) -> tuple[float, int, _Run | None]:
        """The next event: its time, its kind and its region (None: a message)."""
        inf = math.inf
        best: tuple[float, int, int] = (inf, _MAIL, 0)
        count = len(self.runs)
        for k, run in enumerate(self.runs):
            fleet = run.fleet
            times = (
                fleet.starting[0].ready_at if fleet.starting else inf,
                run.arrivals[run.next] if run.next < len(run.arrivals) else inf,
                run.scrapes * scrape_s,
                run.ticks * run.region.policy.period_s,
                fleet.next_step_end() if fleet.gateway and fleet.saturated else inf,
                inf if self.spill is None else (run.polls + k / count) * self.spill.poll_s,
            )
            for rank, t in enumerate(times):
                if (t, rank, k) < best:
                    best = (t, rank, k)
        if self.mail and self.mail[0][0] <= best[0]:
            return self.mail[0][0], _MAIL, None
        return best[0], best[1], self.runs[best[2]]

    def send(self, at: float, message: _Forward | _Answer) -> None:
        self.sent += 1
        heapq.heappush(self.mail, (at, self.sent, message))

    def deliver(self, now: float) -> None:
        message = heapq.heappop(self.mail)[2]
        if isinstance(message, _Forward):
            message.to.advance(now)
            message.to.fleet.arrive(message.index, now)
        else:
            message.to.took(message.peer, message.answer, now, message.round_trip_s)

    def poll(self, run: _Run, now: float) -> None:
        """The region asks each peer for its summary; each answer comes a round trip later."""
        assert self.spill is not None
        assert run.gateway is not None
        run.polls += 1
        for peer in run.peers:
            other = self.by_name[peer]
            assert other.gateway is not None
            other.advance(now)
            answer = other.gateway.summary(_ready_loads(other.fleet, now), now)
            rtt = self.spill.between(run.region.name, peer)
            self.send(now + rtt, _Answer(run.gateway, peer, answer, rtt))

    def arrive(self, run: _Run, now: float) -> None:
        """The region's requests arriving now: each to the local fleet, or where its
        gateway sends it."""
        fleet = run.fleet
        while run.next < len(run.arrivals) and run.arrivals[run.next] == now:
            index = run.start + run.next
            run.next += 1
            request = self.combined.requests[index]
            fits = request.prompt_tokens + request.output_tokens <= self.profile.max_model_len
            pick = None
            if run.gateway is not None and fits:  # one too long is refused here (400)
                local = _local_choice(fleet, index, now)
                pick = run.gateway.pick(local, request.prompt_tokens, now)
            if pick is None:
                fleet.arrive(index, now)
                continue
            assert self.spill is not None
            assert run.gateway is not None
            peer, why = pick
            target = self.by_name[peer]
            target.serving[index] = run.gateway
            pair = (run.region.name, peer)
            self.forwarded[pair] = self.forwarded.get(pair, 0) + 1
            self.sent_to[index] = peer
            self.reasons[why] = self.reasons.get(why, 0) + 1
            self.send(now + self.spill.between(*pair), _Forward(target, index))


def _tick(run: _Run, now: float, history_s: float) -> None:
    """One control period of the region's autoscaler (:meth:`.fleet.Fleet.control`)."""
    current, desired, _ = run.fleet.control(run.region.policy, now, history_s)
    if desired != current:
        run.changes.append(Change(now, current, desired))


def _outcome(replay: _Replay, end: float) -> RegionsOutcome:
    runs = replay.runs
    for run in runs:
        for replica in list(run.fleet.alive):
            run.fleet.remove(replica, max(end, replica.created_at))
    total = len(runs[0].fleet.first_token)
    first: list[float | None] = [None] * total
    last: list[float | None] = [None] * total
    for run in runs:
        for index, (a, b) in enumerate(
            zip(run.fleet.first_token, run.fleet.last_token, strict=True)
        ):
            if a is not None:
                first[index], last[index] = a, b
    outcomes = {}
    served = {}
    for run in runs:
        here = run.region.name
        indices = range(run.start, run.start + len(run.arrivals))
        served[here] = tuple(replay.sent_to.get(index, here) for index in indices)
        span = slice(run.start, run.start + len(run.arrivals))
        outcomes[run.region.name] = Outcome(
            end_s=end,
            first_token=tuple(first[span]),
            last_token=tuple(last[span]),
            rejected=tuple(run.fleet.rejected[span]),
            replica_seconds=run.fleet.replica_seconds,
            changes=tuple(run.changes),
            capacity_delays=(),
            timeline=tuple(run.fleet.timeline),
        )
    return RegionsOutcome(outcomes, replay.forwarded, replay.reasons, served)
