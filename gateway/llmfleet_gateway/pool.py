"""The replicas behind each model: where they are, what the gateway sent them, what they report.

Who uses it: :mod:`.server` asks a :class:`Pool` for a model's replicas as the router's
:class:`~llmfleet_gateway.routing.ReplicaLoad` views and accounts each request it sends
(:meth:`Replica.sent`, :meth:`Replica.first_token`, :meth:`Replica.finished`); the scrape loop
(:func:`scrape_forever`) reads each replica's engine metrics every ``interval`` seconds with
the shared contract's names. Replicas come from static flags (``--model NAME=URL,...``) now,
from the cluster's pods later; either way :meth:`Pool.set_replicas` replaces a model's set, and
a replica that leaves stops getting requests at once (its requests in flight finish).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import aiohttp

from llmfleet_contract.exposition import ExpositionError, parse
from llmfleet_contract.metrics import ENGINE_LOAD, engine_load
from llmfleet_gateway.routing import ReplicaLoad

log = logging.getLogger("llmfleet.gateway.pool")

DOWN_FIRST_S = 1.0
DOWN_MOST_S = 30.0
"""How long a replica that refused a connection is left out: 1 s, doubling to 30 s."""
_PREFIXES = tuple(name.encode() for name in ENGINE_LOAD)


@dataclass(frozen=True)
class Model:
    """A model the gateway serves: the name clients use and the LLMDeployment behind it."""

    name: str
    """The ``model`` field of requests."""
    deployment: str
    """The LLMDeployment's name (metric label ``llmdeployment``)."""
    namespace: str
    """The LLMDeployment's namespace (metric label ``llmdeployment_namespace``)."""
    max_num_seqs: int = 256
    """Slots per replica (the engine does not export it)."""
    tenants: frozenset[str] | None = None
    """The LLMDeployment's ``spec.serving.tenants``: the only tenants it admits (None: any
    tenant that lists it)."""
    ttft_objective_s: float | None = None
    """``spec.serving.ttftObjectiveSeconds``: above it, new requests spill to peer regions."""
    region: str | None = None
    """``spec.serving.region`` (None: every region's)."""
    startup_s: float | None = None
    """The startup time its autoscaler learned (``status.signals.learnedStartupSeconds``):
    a request with no local replica goes to a peer only if the peer answers sooner."""

    @property
    def key(self) -> tuple[str, str]:
        """The LLMDeployment's (namespace, name): its replicas are this model's."""
        return (self.namespace, self.deployment)


@dataclass
class Replica:
    """One serving replica (an engine pod, or a group's leader) and the gateway's view of it."""

    name: str
    """The serving pod's name (metric label ``replica``); its ``host:port`` without a cluster."""
    url: str
    """``http://HOST:PORT``."""
    in_flight: int = 0
    pending_prefill_tokens: int = 0
    waiting: int | None = None
    running: int | None = None
    kv_cache_usage: float | None = None
    scraped_at: float | None = None
    down_until: float = 0.0
    """Unreachable until then: refused connections back off (doubling, up to a limit)."""
    refusals: int = 0

    def sent(self, prompt_tokens: int) -> None:
        self.in_flight += 1
        self.pending_prefill_tokens += prompt_tokens

    def first_token(self, prompt_tokens: int) -> None:
        self.pending_prefill_tokens = max(0, self.pending_prefill_tokens - prompt_tokens)

    def finished(self) -> None:
        self.in_flight = max(0, self.in_flight - 1)

    def unreachable(self, now: float) -> None:
        """It refused a connection: leave it out for a while, longer each time in a row."""
        self.refusals += 1
        self.down_until = now + min(DOWN_MOST_S, DOWN_FIRST_S * 2 ** (self.refusals - 1))

    def reached(self) -> None:
        self.refusals, self.down_until = 0, 0.0

    def load(self, max_num_seqs: int, now: float) -> ReplicaLoad:
        age = None if self.scraped_at is None else max(0.0, now - self.scraped_at)
        return ReplicaLoad(
            name=self.name,
            waiting=self.waiting,
            running=self.running,
            kv_cache_usage=self.kv_cache_usage,
            metrics_age_s=age,
            max_num_seqs=max_num_seqs,
            in_flight=self.in_flight,
            pending_prefill_tokens=self.pending_prefill_tokens,
        )

    def read_page(self, text: str, now: float) -> None:
        """Take an engine's ``/metrics`` page (only the series the router reads are parsed)."""
        lines = [line for line in text.split("\n") if line.encode().startswith(_PREFIXES)]
        load = engine_load(parse("\n".join(lines)).values())
        if isinstance(load, str):
            raise ExpositionError(f"{self.url}/metrics: {load}")
        self.waiting, self.running = load.waiting, load.running
        self.kv_cache_usage = load.kv_cache_usage
        self.scraped_at = now


@dataclass(frozen=True)
class Waiter:
    """A waiting request's place: its priority (0 first), tenant and wake-up event."""

    rank: int
    tenant: str
    event: asyncio.Event


@dataclass
class Pool:
    """Every model and every LLMDeployment's replicas. One per gateway process, on its app."""

    models: dict[str, Model] = field(default_factory=dict)
    """By the name clients use (an LLMDeployment may serve several)."""
    groups: dict[tuple[str, str], dict[str, Replica]] = field(default_factory=dict)
    """Replicas by LLMDeployment (namespace, name), then by replica name: one account each,
    whichever name a request used."""
    synced: bool = True
    """False until cluster discovery has listed everything once (the gateway is not ready)."""
    queues: dict[tuple[str, str], dict[int, Waiter]] = field(default_factory=dict)
    """Per LLMDeployment, its waiting requests in arrival order, each with the event that
    wakes it: a freed slot wakes the next in line (:meth:`pass_on`), new capacity every one
    (:meth:`wake`)."""
    tickets: int = 0
    forwarded: dict[tuple[str, str], int] = field(default_factory=dict)
    """Per LLMDeployment, its requests in flight at peer regions (sent there because no
    local replica could take them, or would have been too slow)."""
    turns: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    """Per LLMDeployment, when each tenant's waiting request was last woken for a slot."""

    def set_models(self, models: Iterable[Model]) -> None:
        """Serve exactly ``models``; an LLMDeployment no model names any more loses its
        replicas (their requests in flight finish)."""
        self.models = {model.name: model for model in models}
        keys = {model.key for model in self.models.values()}
        for key in [key for key in self.groups if key not in keys]:
            self.set_replicas(key, ())
            del self.groups[key]
            self.turns.pop(key, None)
        for key in keys:
            self.groups.setdefault(key, {})
        self.wake()

    def set_replicas(self, key: tuple[str, str], found: Iterable[tuple[str, str]]) -> None:
        """Make the LLMDeployment ``key``'s replicas exactly ``found`` (name, url)."""
        current = self.groups.setdefault(key, {})
        wanted = dict(found)
        for name in [name for name in current if name not in wanted]:
            del current[name]  # its requests in flight finish: they hold the object
        for name, url in wanted.items():
            if name not in current or current[name].url != url:
                current[name] = Replica(name, url)
        self.wake(key)

    def replicas_of(self, model: str) -> dict[str, Replica]:
        """``model``'s replicas; none once the model is gone (its LLMDeployment deleted)."""
        found = self.models.get(model)
        return self.groups.get(found.key, {}) if found else {}

    def loads(self, model: str, now: float) -> list[ReplicaLoad]:
        """The router's view of ``model``'s reachable replicas."""
        slots = self.models[model].max_num_seqs
        return [
            replica.load(slots, now)
            for replica in self.replicas_of(model).values()
            if replica.down_until <= now
        ]

    def get(self, model: str, name: str) -> Replica:
        return self.replicas_of(model)[name]

    def every_replica(self) -> list[tuple[tuple[str, str], Replica]]:
        """Each replica once, with its LLMDeployment's (namespace, name)."""
        return [(key, replica) for key, group in self.groups.items() for replica in group.values()]

    def queued(self, key: tuple[str, str]) -> int:
        return len(self.queues.get(key, ()))

    def join(self, key: tuple[str, str], rank: int = 0, tenant: str = "") -> int:
        """A place in ``key``'s queue for a request of ``tenant`` with priority ``rank``
        (0 first)."""
        self.tickets += 1
        self.queues.setdefault(key, {})[self.tickets] = Waiter(rank, tenant, asyncio.Event())
        return self.tickets

    def waiter(self, key: tuple[str, str], ticket: int) -> asyncio.Event:
        """A fresh event for the ticket, keeping its place (take it before looking, so no
        wake-up is lost)."""
        queue = self.queues.setdefault(key, {})
        found = queue.get(ticket) or Waiter(0, "", asyncio.Event())
        queue[ticket] = Waiter(found.rank, found.tenant, asyncio.Event())
        return queue[ticket].event

    def leave(self, key: tuple[str, str], ticket: int) -> None:
        queue = self.queues.get(key, {})
        queue.pop(ticket, None)
        if not queue:
            self.queues.pop(key, None)

    def pass_on(self, key: tuple[str, str]) -> None:
        """A slot of ``key`` freed: wake the next waiting request (it leaves the queue only
        when it has a replica, so a wake-up it cannot use goes to it again next time).

        Next means: the first priority; within it, the tenant whose request was woken
        longest ago (so a tenant's flood waits behind its own requests, not in front of
        another tenant's); within the tenant, the oldest."""
        turns = self.turns.setdefault(key, {})
        best: tuple[int, int, int] | None = None
        chosen: Waiter | None = None
        for ticket, waiter in self.queues.get(key, {}).items():
            if waiter.event.is_set():
                continue
            order = (waiter.rank, turns.get(waiter.tenant, -1), ticket)
            if best is None or order < best:
                best, chosen = order, waiter
        if chosen is not None:
            self.tickets += 1
            turns[chosen.tenant] = self.tickets
            chosen.event.set()

    def look_again(self) -> None:
        """Fresh metrics may show room another gateway's requests left: the next waiter of
        each queue looks (one served passes on to the next, :func:`server._replica`)."""
        for key in list(self.queues):
            self.pass_on(key)

    def wake(self, key: tuple[str, str] | None = None) -> None:
        """Capacity appeared for ``key`` (None: every LLMDeployment): wake every waiter."""
        for found in [key] if key is not None else list(self.queues):
            for waiter in self.queues.get(found, {}).values():
                waiter.event.set()


async def scrape_once(
    pool: Pool, session: aiohttp.ClientSession, now: Callable[[], float], timeout_s: float
) -> None:
    """Read every replica's engine metrics once, in parallel; a failure keeps the last values
    (the router judges their age) and never raises."""

    async def one(replica: Replica) -> None:
        try:
            timeout = aiohttp.ClientTimeout(total=timeout_s)
            async with session.get(f"{replica.url}/metrics", timeout=timeout) as response:
                response.raise_for_status()
                text = await response.text()
            replica.read_page(text, now())
        except (aiohttp.ClientError, TimeoutError, ExpositionError, UnicodeDecodeError) as error:
            log.debug("Could not read the metrics of replica %s: %s", replica.name, error)

    await asyncio.gather(*(one(replica) for _, replica in pool.every_replica()))


async def scrape_forever(
    pool: Pool,
    session: aiohttp.ClientSession,
    now: Callable[[], float],
    interval_s: float,
) -> None:
    """The scrape loop, until cancelled."""
    while True:
        try:
            await scrape_once(pool, session, now, timeout_s=max(interval_s, 0.5))
            pool.look_again()
        except Exception:  # a bug in one round must not stop the loop; say it
            log.exception("A round of metrics scrapes failed")
        await asyncio.sleep(interval_s)
