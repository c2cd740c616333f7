"""The simulated fleet: replicas, a least-loaded router, a gateway queue, metrics, startup, drain.

Called by :func:`llmfleet_fleetsim.simulate` (through :func:`run`); everything
else in the package reads what it returns. No clock: the replay is a loop over the next
event (an arrival, a replica becoming ready, a scrape, a control period), and every
replica's :class:`~llmfleet_runtime.simulator.Engine` is advanced to that instant.

The rules, as a real cluster would apply them:

* A replica is created when the policy asks for more; it costs GPU time from then on and
  serves only ``startup_s`` later (Ready).
* The router sends each request to the ready, non-draining replica with the fewest
  in-flight requests (running + waiting; ties: the oldest replica). With none, the
  request waits in the gateway queue, flushed in order when a replica becomes ready.
* Scale-down picks its victims as the workload controller would. By default Kubernetes'
  ReplicaSet order: not ready (starting) first, then the most recently ready, then the
  newest. A policy with a ``victim_order(view, now)`` method that returns names (ours:
  :func:`llmfleet_operator.autoscale.deletion_order`, which the operator turns into
  pod-deletion-cost) sets the order instead. Ready victims drain: no new requests,
  in-flight ones finish, and they cost GPU time until the last one has finished.
* Every ``scrape_s`` each ready replica is sampled (``vllm:num_requests_waiting``,
  ``num_requests_running``, ``kv_cache_usage_perc``, and the gateway's pending prefill
  tokens), and so is the gateway queue; a policy sees a sample ``lag_s`` after it was taken.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

from llmfleet_fleetsim.outcome import Change, Outcome, Point
from llmfleet_fleetsim.trace import Trace
from llmfleet_fleetsim.view import FleetView, Policy
from llmfleet_operator.autoscale import Replica, ReplicaPhase, Sample
from llmfleet_runtime.simulator import Engine, Profile, Request


class _Replica:
    __slots__ = (
        "created_at", "draining", "engine", "last_end", "name", "ready", "ready_at", "routed",
        "serial",
    )  # fmt: skip

    def __init__(self, serial: int, engine: Engine, created_at: float, ready_at: float) -> None:
        self.serial = serial
        self.routed = 0
        self.name = f"replica-{serial}"
        self.engine = engine
        self.created_at = created_at
        self.ready_at = ready_at
        self.ready = False
        self.draining = False
        self.last_end = created_at

    def in_flight(self) -> int:
        return len(self.engine.running) + len(self.engine.waiting)

    def state(self) -> Replica:
        phase = ReplicaPhase.READY if self.ready else ReplicaPhase.STARTING
        ready_at = self.ready_at if self.ready else None
        return Replica(self.name, phase, self.created_at, ready_at)


def replicaset_rank(replica: _Replica) -> tuple[bool, float, float, int]:
    """Kubernetes' ReplicaSet scale-down order (``controller.ActivePodsWithRanks``, with
    every pod on its own node and no deletion cost): not ready first, then ready for the
    least time, then the newest creation."""
    since = -replica.ready_at if replica.ready else 0.0
    return (replica.ready, since, -replica.created_at, -replica.serial)


class Fleet:
    """Mutable state of one replay; :func:`run` drives it."""

    def __init__(self, trace: Trace, profile: Profile, startup_s: float, lag_s: float) -> None:
        self.trace = trace
        self.profile = profile
        self.startup_s = startup_s
        self.lag_s = lag_s
        self.alive: list[_Replica] = []
        self.starting: deque[_Replica] = deque()
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

    # -- replicas ----------------------------------------------------------------------

    def create(self, now: float, warm: bool = False) -> _Replica:
        self.created += 1
        ready_at = now if warm else now + self.startup_s
        replica = _Replica(self.created, Engine(self.profile), now, ready_at)
        self.alive.append(replica)
        if warm:
            replica.ready = True
        else:
            self.starting.append(replica)
        return replica

    def remove(self, replica: _Replica, at: float) -> None:
        self.alive.remove(replica)
        if not replica.ready:
            self.starting.remove(replica)
        self.replica_seconds += at - replica.created_at

    def active(self) -> list[_Replica]:
        return [r for r in self.alive if not r.draining]

    def apply(self, desired: int, now: float, order: Sequence[str] | None = None) -> list[_Replica]:
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

    def become_ready(self, now: float) -> None:
        while self.starting and self.starting[0].ready_at <= now:
            self.starting.popleft().ready = True
        while self.gateway and self.route(self.gateway[0], now):
            self.gateway.popleft()

    # -- requests ----------------------------------------------------------------------

    def advance(self, now: float) -> None:
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
                replica.last_end = result.end
            self.last_finish = max(self.last_finish, replica.last_end)
        for replica in [r for r in self.alive if r.draining and not r.engine.has_work()]:
            self.remove(replica, replica.last_end)

    def arrive(self, index: int, now: float) -> None:
        request = self.trace.requests[index]
        if request.prompt_tokens + request.output_tokens > self.profile.max_model_len:
            self.rejected[index] = True
            return
        self.unfinished += 1
        if self.gateway or not self.route(index, now):
            self.gateway.append(index)

    def route(self, index: int, now: float) -> bool:
        best: _Replica | None = None
        best_load = 0
        for replica in self.alive:
            if replica.ready and not replica.draining:
                load = replica.in_flight()
                if best is None or load < best_load:
                    best, best_load = replica, load
        if best is None:
            return False
        request = self.trace.requests[index]
        best.engine.add(Request(str(index), request.prompt_tokens, request.output_tokens), now)
        best.routed += 1
        best.engine.advance(now)
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
            engine = replica.engine
            unanswered = [
                seq for seq in (*engine.waiting, *engine.running) if seq.first_token is None
            ]
            pending = sum(seq.request.prompt_tokens for seq in unanswered)
            sample = Sample(
                now, replica.name, len(engine.waiting), pending, engine.kv_usage(),
                len(engine.running), replica.routed - len(unanswered),
            )  # fmt: skip
            self.in_transit.append((visible, sample))
        self.in_transit.append((visible, len(self.gateway)))
        self.timeline.append(Point(now, in_flight, len(self.gateway), ready, len(self.alive)))

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
) -> Outcome:
    """Replay ``trace`` through a fleet scaled by ``policy`` (see the module docstring).

    The replay starts with ``initial_replicas`` (default ``policy.initial_replicas``)
    ready replicas and ends when the last request has finished, or ``max_drain_s`` after
    the last arrival (requests still unanswered then count as failed). A policy sees the
    samples of the last ``history_s`` seconds.
    """
    if startup_s < 0 or scrape_s <= 0 or lag_s < 0 or policy.period_s <= 0:
        raise ValueError("startup_s and lag_s must be >= 0; scrape_s and the period > 0")
    fleet = Fleet(trace, profile, startup_s, lag_s)
    warm = policy.initial_replicas if initial_replicas is None else initial_replicas
    for _ in range(warm):
        fleet.create(0.0, warm=True)
    arrivals = [r.arrival_s for r in trace.requests]
    deadline = trace.duration_s + max_drain_s
    next_arrival, scrapes, ticks = 0, 0, 1
    last_calm: float | None = None
    changes: list[Change] = []
    scale_ups: list[tuple[float, list[_Replica]]] = []
    victim_order = getattr(policy, "victim_order", None)
    inf = math.inf
    now = 0.0
    while True:
        done = next_arrival == len(arrivals)
        if done and fleet.unfinished == 0:
            break
        t_arrival = arrivals[next_arrival] if not done else inf
        t_ready = fleet.starting[0].ready_at if fleet.starting else inf
        t_scrape, t_tick = scrapes * scrape_s, ticks * policy.period_s
        now = min(t_arrival, t_ready, t_scrape, t_tick)
        if now > deadline:
            now = deadline
            fleet.advance(now)
            break
        fleet.advance(now)
        if now == t_ready:
            fleet.become_ready(now)
        elif now == t_arrival:
            while next_arrival < len(arrivals) and arrivals[next_arrival] == now:
                fleet.arrive(next_arrival, now)
                next_arrival += 1
        elif now == t_scrape:
            fleet.scrape(now)
            scrapes += 1
        else:
            ticks += 1
            view = fleet.view(now, history_s)
            desired = max(0, policy.decide(view, now))
            order = None
            if desired < view.current and victim_order is not None:
                order = victim_order(view, now)
            if desired > view.current:
                # The first sample the last calm decision had not seen started the burst.
                seen = -inf if last_calm is None else last_calm - lag_s
                first = 0 if seen < 0 else math.floor(seen / scrape_s) + 1
                scale_ups.append((min(first * scrape_s, now), fleet.apply(desired, now)))
            else:
                last_calm = now
                fleet.apply(desired, now, order)
            if desired != view.current:
                changes.append(Change(now, view.current, desired))
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
    )


__all__ = ["Change", "Outcome", "Point", "run"]
