"""The simulated fleet: replicas, the gateway's router and queue, metrics, startup, drain.

Called by :func:`llmfleet_fleetsim.simulate` (through :func:`run`); everything
else in the package reads what it returns. No clock: the replay is a loop over the next
event (an arrival, a replica becoming ready, a scrape, a control period, and, while a
request waits for a saturated replica, the end of an engine step), and every replica's
:class:`~llmfleet_runtime.simulator.Engine` is advanced to that instant.

The rules, as a real cluster would apply them:

* A replica is created when the policy asks for more; it costs GPU time from then on and
  serves only ``startup_s`` later (Ready).
* The router is the gateway's: :func:`llmfleet_gateway.routing.choose`, the very function
  the gateway calls, over the ready, non-draining replicas, each seen as the gateway sees
  it (:class:`~llmfleet_gateway.routing.ReplicaLoad`): the engine metrics as last scraped
  (at the fleet's scrape instants, aged ``now - scrape``; the router reads its own scrape,
  without ``lag_s``), and the gateway's own accounting, exact and live: requests in flight
  and pending prefill tokens (prompt tokens sent with no first token yet). Slots come from
  the profile, the prefill speed and the decode step from :func:`routing_settings`. The
  Azure traces carry no prompt contents, so no prefix is known: no cached blocks, no prefix
  affinity, and the engines' prefix caches stay cold. With no ready replica, or every one
  saturated (``max_in_flight`` requests), a request waits in the gateway queue, flushed in
  order when a replica becomes ready or a request finishes; a newcomer queues behind the
  waiting. The queue has no time to live (the real gateway answers 429 after
  ``queue_seconds``): a request waits until served or the replay gives up.
* Scale-down picks its victims as the workload controller would. By default Kubernetes'
  ReplicaSet order: not ready (starting) first, then the most recently ready, then the
  newest. A policy with a ``victim_order(view, now)`` method that returns names (ours:
  :func:`llmfleet_operator.autoscale.deletion_order`, which the operator turns into
  pod-deletion-cost) sets the order instead. Ready victims drain: no new requests,
  in-flight ones finish, and they cost GPU time until the last one has finished.
* Every ``scrape_s`` each ready replica is sampled (``vllm:num_requests_waiting``,
  ``num_requests_running``, ``kv_cache_usage_perc``, and the gateway's pending prefill
  tokens: the router's number), and so is the gateway queue; a policy sees a sample
  ``lag_s`` after it was taken.
* With ``preemptions`` (:mod:`.preemption`), the replicas above an on-demand floor run on
  spot and get preemption notices: a replica under notice takes no new request, what is
  still in its engine at the end of the notice is lost, and a replacement starts at once.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Sequence

from llmfleet_fleetsim.outcome import Change, Outcome, Point
from llmfleet_fleetsim.preemption import Preempted, Preemptions, SpotMarket, spot_count
from llmfleet_fleetsim.replica import FleetReplica, routing_settings
from llmfleet_fleetsim.trace import Trace
from llmfleet_fleetsim.view import FleetView, Policy
from llmfleet_gateway.routing import RouteReason, RouteRequest, RoutingSettings, choose
from llmfleet_operator.autoscale import Sample
from llmfleet_runtime.simulator import Engine, Profile


def replicaset_rank(replica: FleetReplica) -> tuple[bool, float, float, int]:
    """Kubernetes' ReplicaSet scale-down order (``controller.ActivePodsWithRanks``, with
    every pod on its own node and no deletion cost): not ready first, then ready for the
    least time, then the newest creation."""
    since = -replica.ready_at if replica.ready else 0.0
    return (replica.ready, since, -replica.created_at, -replica.serial)


class Fleet:
    """Mutable state of one replay; :func:`run` drives it."""

    def __init__(
        self,
        trace: Trace,
        profile: Profile,
        startup_s: float,
        lag_s: float,
        routing: RoutingSettings | None = None,
        preemptions: Preemptions | None = None,
    ) -> None:
        self.trace = trace
        self.profile = profile
        self.routing = routing_settings(profile) if routing is None else routing
        self.saturated = False
        """Whether the gateway queue's head waits for a slot (every replica saturated)."""
        self.startup_s = startup_s
        self.lag_s = lag_s
        self.alive: list[FleetReplica] = []
        self.starting: deque[FleetReplica] = deque()
        self.gateway: deque[int] = deque()
        self.replica_seconds = 0.0
        self.created = 0
        n = len(trace.requests)
        self.first_token: list[float | None] = [None] * n
        self.last_token: list[float | None] = [None] * n
        self.rejected = [False] * n
        self.unfinished = 0
        self.last_finish = 0.0
        self.in_transit: deque[tuple[float, Sample | int]] = deque()
        self.delivered: deque[Sample] = deque()
        self.gateway_seen: int | None = None
        self.timeline: list[Point] = []
        self.preemptions = preemptions
        self.market: SpotMarket | None = None
        self.floor = 0
        """The on-demand floor, read at each scrape (with ``preemptions``)."""
        self.lost = [False] * n
        self.preempted: dict[str, Preempted] = {}
        """Every notice so far, by replica."""
        if preemptions is not None:
            self.market = SpotMarket(preemptions.rate_per_hour, preemptions.seed)
            self.floor = preemptions.on_demand(0.0)

    # -- replicas ----------------------------------------------------------------------

    def create(self, now: float, warm: bool = False) -> FleetReplica:
        self.created += 1
        ready_at = now if warm else now + self.startup_s
        replica = FleetReplica(self.created, Engine(self.profile), now, ready_at)
        self.alive.append(replica)
        if warm:
            replica.ready = True
        else:
            self.starting.append(replica)
        return replica

    def remove(self, replica: FleetReplica, at: float) -> None:
        self.alive.remove(replica)
        if not replica.ready:
            self.starting.remove(replica)
        self.replica_seconds += at - replica.created_at

    def active(self) -> list[FleetReplica]:
        return [r for r in self.alive if not r.draining]

    def apply(
        self, desired: int, now: float, order: Sequence[str] | None = None
    ) -> list[FleetReplica]:
        """Scale to ``desired`` non-draining replicas; returns the ones created.

        Victims in ``order`` (names, first to go first; replicas it omits go last), else
        in the ReplicaSet's default order (module docstring).
        """
        active = self.active()
        if desired > len(active):
            return [self.create(now) for _ in range(desired - len(active))]
        if order is None:
            victims = sorted(active, key=replicaset_rank)
        else:
            rank = {name: index for index, name in enumerate(order)}
            victims = sorted(active, key=lambda r: (rank.get(r.name, len(rank)), r.serial))
        for victim in victims[: len(active) - desired]:
            if victim.ready and victim.engine.has_work():
                victim.draining = True
            else:
                self.remove(victim, now)
        return []

    def control(
        self, policy: Policy, now: float, history_s: float
    ) -> tuple[int, int, list[FleetReplica]]:
        """One control period of ``policy``: it sees the last ``history_s`` seconds and the
        fleet scales to what it decides (scale-down victims in its ``victim_order``, if it
        has one). Returns the replicas it asked for before, those it decided, and the ones
        created."""
        view = self.view(now, history_s)
        desired = max(0, policy.decide(view, now))
        order = None
        victim_order = getattr(policy, "victim_order", None)
        if desired < view.current and victim_order is not None:
            order = victim_order(view, now)
        return view.current, desired, self.apply(desired, now, order)

    def become_ready(self, now: float) -> None:
        while self.starting and self.starting[0].ready_at <= now:
            self.starting.popleft().ready = True
        self.flush(now)

    def flush(self, now: float) -> None:
        """Route the gateway queue's requests, oldest first, while the router finds room."""
        while self.gateway and self.route(self.gateway[0], now):
            self.gateway.popleft()

    def next_step_end(self) -> float:
        """When the first engine step in progress ends (a request may finish, freeing a
        slot the gateway queue waits for); infinity when every engine is idle."""
        ends = [end for r in self.alive if (end := r.engine.next_event_time()) is not None]
        return min(ends, default=math.inf)

    # -- preemptions (only with ``preemptions``) ----------------------------------------

    def spot_replicas(self) -> list[FleetReplica]:
        """The replicas on spot and not under notice: all but the oldest ``floor``."""
        return [r for r in self.alive if r.cut_at is None][self.floor :]

    def next_notice(self) -> float:
        """When the next preemption notice falls if the fleet stays as it is."""
        if self.market is None:
            return math.inf
        return self.market.next_notice(len(self.spot_replicas()))

    def next_cut(self) -> float:
        """When the first notice in progress ends."""
        return min((r.cut_at for r in self.alive if r.cut_at is not None), default=math.inf)

    def preempt(self, now: float, notice_at: float) -> None:
        """Spend the spot exposure up to ``now``; give the notice due then, and end the
        notices that end then (their engines advanced to ``now`` already)."""
        assert self.market is not None
        assert self.preemptions is not None
        self.market.elapse(now)
        if now >= notice_at:
            victim = self.market.pick(self.spot_replicas())
            if victim is not None:
                self.notice(victim, now, self.preemptions.notice_s)
        for replica in [r for r in self.alive if r.cut_at is not None and r.cut_at <= now]:
            self.cut(replica, now)

    def notice(self, replica: FleetReplica, now: float, notice_s: float) -> None:
        """``replica``'s node is going: no new request, a replacement at once (unless the
        replica was already going: a scale-down victim)."""
        replaced = not replica.draining
        replica.cut_at = now + notice_s
        self.preempted[replica.name] = Preempted(now, replica.name, 0)
        replica.draining = True
        if not (replica.ready and replica.engine.has_work()):
            self.cut(replica, now)
        if replaced:
            self.create(now)

    def cut(self, replica: FleetReplica, now: float) -> None:
        """The end of ``replica``'s notice: what its engine still holds is lost."""
        engine = replica.engine
        lost = [int(seq.request.request_id) for seq in (*engine.running, *engine.waiting)]
        for index in lost:
            self.lost[index] = True
        self.unfinished -= len(lost)
        self.preempted[replica.name] = dataclasses.replace(
            self.preempted[replica.name], lost=len(lost)
        )
        self.remove(replica, now)

    # -- requests ----------------------------------------------------------------------

    def advance(self, now: float) -> None:
        """Run every engine to ``now``; requests that finished free slots for the queue."""
        freed = False
        for replica in self.alive:
            engine = replica.engine
            step_end = engine.next_event_time()
            if step_end is None or step_end > now:
                continue
            for result in engine.advance(now):
                for done in result.finished:
                    index = int(done.request_id)
                    self.first_token[index] = done.first_token
                    self.last_token[index] = done.last_token
                    self.unfinished -= 1
                    freed = True
                replica.last_end = result.end
            self.last_finish = max(self.last_finish, replica.last_end)
        for replica in [r for r in self.alive if r.draining and not r.engine.has_work()]:
            self.remove(replica, replica.last_end)
        if freed and self.gateway:
            self.flush(now)

    def arrive(self, index: int, now: float) -> None:
        request = self.trace.requests[index]
        if request.prompt_tokens + request.output_tokens > self.profile.max_model_len:
            self.rejected[index] = True
            return
        self.unfinished += 1
        if self.gateway or not self.route(index, now):
            self.gateway.append(index)

    def route(self, index: int, now: float) -> bool:
        """Send request ``index`` where the gateway's :func:`choose` says; False when it
        chooses none (no replica ready, or every one saturated)."""
        candidates = {r.name: r for r in self.alive if r.ready and not r.draining}
        loads = [replica.load(now) for replica in candidates.values()]
        request = self.trace.requests[index]
        choice = choose(loads, RouteRequest(request.prompt_tokens), self.routing)
        if choice.replica is None:
            self.saturated = choice.reason is RouteReason.SATURATED
            return False
        self.saturated = False
        candidates[choice.replica].send(index, request.prompt_tokens, request.output_tokens, now)
        return True

    # -- metrics -----------------------------------------------------------------------

    def scrape(self, now: float) -> None:
        visible = now + self.lag_s
        in_flight = len(self.gateway)
        ready = 0
        for replica in self.alive:
            in_flight += replica.in_flight()
            if not replica.ready or replica.draining:
                continue
            ready += 1
            replica.read_metrics(now)
            engine = replica.engine
            unanswered = sum(
                1 for seq in (*engine.waiting, *engine.running) if seq.first_token is None
            )
            sample = Sample(
                now, replica.name, len(engine.waiting), replica.pending_prefill_tokens(),
                engine.kv_usage(), len(engine.running), replica.routed - unanswered,
            )  # fmt: skip
            self.in_transit.append((visible, sample))
        self.in_transit.append((visible, len(self.gateway)))
        spot = 0
        if self.preemptions is not None:
            self.floor = self.preemptions.on_demand(now)
            noticed = sum(1 for r in self.alive if r.cut_at is not None)
            spot = spot_count(len(self.alive) - noticed, noticed, self.floor)
        point = Point(now, in_flight, len(self.gateway), ready, len(self.alive), spot)
        self.timeline.append(point)

    def view(self, now: float, history_s: float) -> FleetView:
        while self.in_transit and self.in_transit[0][0] <= now:
            item = self.in_transit.popleft()[1]
            if isinstance(item, Sample):
                self.delivered.append(item)
            else:
                self.gateway_seen = item
        while self.delivered and self.delivered[0].time < now - history_s:
            self.delivered.popleft()
        states = tuple(r.state() for r in self.alive if not r.draining)
        return FleetView(len(states), states, tuple(self.delivered), self.gateway_seen)


def run(
    trace: Trace,
    policy: Policy,
    profile: Profile,
    *,
    startup_s: float,
    scrape_s: float,
    lag_s: float,
    history_s: float = 600.0,
    max_drain_s: float = 3600.0,
    initial_replicas: int | None = None,
    routing: RoutingSettings | None = None,
    preemptions: Preemptions | None = None,
) -> Outcome:
    """Replay ``trace`` through a fleet scaled by ``policy`` (see the module docstring).

    The replay starts with ``initial_replicas`` (default ``policy.initial_replicas``)
    ready replicas and ends when the last request has finished, or ``max_drain_s`` after
    the last arrival (requests still unanswered then count as failed). A policy sees the
    samples of the last ``history_s`` seconds. The router uses ``routing`` (default:
    :func:`routing_settings` of ``profile``). With ``preemptions``, the replicas above its
    on-demand floor are on spot and preempted (:mod:`.preemption`); without it, none is.
    """
    if startup_s < 0 or scrape_s <= 0 or lag_s < 0 or policy.period_s <= 0:
        raise ValueError("startup_s and lag_s must be >= 0; scrape_s and the period > 0")
    fleet = Fleet(trace, profile, startup_s, lag_s, routing, preemptions)
    warm = policy.initial_replicas if initial_replicas is None else initial_replicas
    for _ in range(warm):
        fleet.create(0.0, warm=True)
    arrivals = [r.arrival_s for r in trace.requests]
    deadline = trace.duration_s + max_drain_s
    next_arrival, scrapes, ticks = 0, 0, 1
    last_calm: float | None = None
    changes: list[Change] = []
    scale_ups: list[tuple[float, list[FleetReplica]]] = []
    inf = math.inf
    now = 0.0
    while True:
        done = next_arrival == len(arrivals)
        if done and fleet.unfinished == 0:
            break
        t_arrival = arrivals[next_arrival] if not done else inf
        t_ready = fleet.starting[0].ready_at if fleet.starting else inf
        t_scrape, t_tick = scrapes * scrape_s, ticks * policy.period_s
        t_free = fleet.next_step_end() if fleet.gateway and fleet.saturated else inf
        t_notice = t_cut = inf
        if preemptions is not None:
            t_notice, t_cut = fleet.next_notice(), fleet.next_cut()
        now = min(t_arrival, t_ready, t_scrape, t_tick, t_free, t_notice, t_cut)
        if now > deadline:
            now = deadline
            fleet.advance(now)
            break
        fleet.advance(now)  # a slot freed at t_free went to the gateway queue there
        if preemptions is not None:
            fleet.preempt(now, t_notice)
        if now == t_ready:
            fleet.become_ready(now)
        elif now == t_arrival:
            while next_arrival < len(arrivals) and arrivals[next_arrival] == now:
                fleet.arrive(next_arrival, now)
                next_arrival += 1
        elif now == t_scrape:
            fleet.scrape(now)
            scrapes += 1
        elif now == t_tick:
            ticks += 1
            current, desired, created = fleet.control(policy, now, history_s)
            if desired > current:
                # The first sample the last calm decision had not seen started the burst.
                seen = -inf if last_calm is None else last_calm - lag_s
                first = 0 if seen < 0 else math.floor(seen / scrape_s) + 1
                scale_ups.append((min(first * scrape_s, now), created))
            else:
                last_calm = now
            if desired != current:
                changes.append(Change(now, current, desired))
    end = max(fleet.last_finish, trace.duration_s) if fleet.unfinished == 0 else now
    for replica in list(fleet.alive):
        fleet.remove(replica, max(end, replica.created_at))
    # A replica removed before it was ready (a cancelled scale-up) never served.
    delays = tuple(
        min(r.ready_at for r in created if r.ready) - start
        for start, created in scale_ups
        if any(r.ready for r in created)
    )
    return Outcome(
        end_s=end,
        first_token=tuple(fleet.first_token),
        last_token=tuple(fleet.last_token),
        rejected=tuple(fleet.rejected),
        replica_seconds=fleet.replica_seconds,
        changes=tuple(changes),
        capacity_delays=delays,
        timeline=tuple(fleet.timeline),
        lost=tuple(fleet.lost) if preemptions is not None else (),
        preempted=tuple(fleet.preempted.values()),
    )


__all__ = ["Change", "Outcome", "Point", "routing_settings", "run"]
