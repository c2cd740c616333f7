"""One simulated replica as the gateway sees it, and the gateway's routing settings for it.

Who uses it: :mod:`.fleet`, which creates a :class:`FleetReplica` per replica, sends it
requests (:meth:`FleetReplica.send`), scrapes it (:meth:`FleetReplica.read_metrics`) and
routes with :func:`llmfleet_gateway.routing.choose` over :meth:`FleetReplica.load`, the
view :meth:`llmfleet_gateway.pool.Replica.load` gives the real gateway's router.
"""

from __future__ import annotations

from llmfleet_gateway.routing import ReplicaLoad, RoutingSettings
from llmfleet_operator.autoscale import Replica, ReplicaPhase
from llmfleet_runtime.simulator import Engine, Profile, Request
from llmfleet_runtime.simulator.perf import decode_ms, prefill_ms


def routing_settings(profile: Profile) -> RoutingSettings:
    """The gateway's routing settings for replicas of ``profile``: its prefill speed on a
    full chunk (``max_num_batched_tokens`` prompt tokens in one step) and one decode step
    of a full batch (``max_num_seqs``); every other knob at the gateway's default but one.
    Nothing waits in the gateway before a replica has ``max_in_flight`` requests: the
    baselines read the engines' queues as their own stacks fill them (their routers hold
    nothing back), and ours reads the same total either way (the prefill queue counts what
    the gateway queues)."""
    chunk = profile.max_num_batched_tokens
    defaults = RoutingSettings()
    return RoutingSettings(
        prefill_tokens_per_s=chunk * 1000.0 / prefill_ms(profile, chunk),
        decode_step_s=decode_ms(profile, profile.max_num_seqs) / 1000.0,
        engine_queue=defaults.max_in_flight,
    )


class FleetReplica:
    """One replica of the fleet: its engine, the gateway's accounting of what it sent there,
    the gateway's last scrape of its metrics, and its life (created, ready, draining, the end
    of a preemption notice)."""

    __slots__ = (
        "created_at", "cut_at", "draining", "engine", "kv_cache_usage", "last_end", "name",
        "prompt_tokens_sent", "ready", "ready_at", "routed", "running", "scraped_at", "serial",
        "waiting",
    )  # fmt: skip

    def __init__(self, serial: int, engine: Engine, created_at: float, ready_at: float) -> None:
        self.serial = serial
        self.routed = 0
        self.prompt_tokens_sent = 0
        self.name = f"replica-{serial}"
        self.engine = engine
        self.created_at = created_at
        self.ready_at = ready_at
        self.ready = False
        self.draining = False
        self.cut_at: float | None = None
        """The end of its preemption notice (None: no notice)."""
        self.last_end = created_at
        self.waiting: int | None = None
        self.running: int | None = None
        self.kv_cache_usage: float | None = None
        self.scraped_at: float | None = None

    def send(self, index: int, prompt_tokens: int, output_tokens: int, now: float) -> None:
        """Give the engine trace request ``index`` and account it as the gateway does."""
        self.engine.add(Request(str(index), prompt_tokens, output_tokens), now)
        self.engine.advance(now)
        self.routed += 1
        self.prompt_tokens_sent += prompt_tokens

    def in_flight(self) -> int:
        """The gateway's count of requests sent and not finished: each one is in the
        engine's queue or batch until it finishes."""
        return len(self.engine.running) + len(self.engine.waiting)

    def pending_prefill_tokens(self) -> int:
        """The gateway's prompt tokens sent with no first token yet. The engine counts a
        request's prompt tokens at its first token, the instant the gateway would see it."""
        return self.prompt_tokens_sent - self.engine.counters.prompt_tokens

    def read_metrics(self, now: float) -> None:
        """The gateway's scrape of the engine's ``/metrics``."""
        engine = self.engine
        self.waiting, self.running = len(engine.waiting), len(engine.running)
        self.kv_cache_usage = engine.kv_usage()
        self.scraped_at = now

    def load(self, now: float) -> ReplicaLoad:
        """The router's view, as :meth:`llmfleet_gateway.pool.Replica.load` builds it."""
        engine = self.engine  # on the replay's hot path: in_flight() and the rest inlined
        scraped_at = self.scraped_at
        return ReplicaLoad(
            self.name, engine.profile.max_num_seqs, self.waiting, self.running,
            self.kv_cache_usage, None if scraped_at is None else now - scraped_at,
            len(engine.running) + len(engine.waiting),
            self.prompt_tokens_sent - engine.counters.prompt_tokens,
        )  # fmt: skip

    def state(self) -> Replica:
        phase = ReplicaPhase.READY if self.ready else ReplicaPhase.STARTING
        ready_at = self.ready_at if self.ready else None
        return Replica(self.name, phase, self.created_at, ready_at)
