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
from llmfleet_contract.metrics import KV_CACHE_USAGE, KV_CACHE_USAGE_V0, RUNNING, WAITING
from llmfleet_gateway.routing import ReplicaLoad

log = logging.getLogger("llmfleet.gateway.pool")

_WANTED = (WAITING, RUNNING, KV_CACHE_USAGE, KV_CACHE_USAGE_V0)
_PREFIXES = tuple(name.encode() for name in _WANTED)


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
    removed: bool = False

    def sent(self, prompt_tokens: int) -> None:
        self.in_flight += 1
        self.pending_prefill_tokens += prompt_tokens

    def first_token(self, prompt_tokens: int) -> None:
        self.pending_prefill_tokens = max(0, self.pending_prefill_tokens - prompt_tokens)

    def finished(self) -> None:
        self.in_flight = max(0, self.in_flight - 1)

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
        values: dict[str, list[float]] = {}
        for series in parse("\n".join(lines)).series:
            values.setdefault(series.name, []).append(series.value)
        kv = values.get(KV_CACHE_USAGE) or values.get(KV_CACHE_USAGE_V0)
        if WAITING not in values or RUNNING not in values or not kv:
            raise ExpositionError(f"{self.url}/metrics lacks {WAITING}, {RUNNING} or KV usage")
        self.waiting = round(sum(values[WAITING]))
        self.running = round(sum(values[RUNNING]))
        self.kv_cache_usage = min(1.0, max(0.0, sum(kv) / len(kv)))
        self.scraped_at = now


@dataclass
class Pool:
    """Every model's replicas. One per gateway process, on its app (no module state)."""

    models: dict[str, Model] = field(default_factory=dict)
    replicas: dict[str, dict[str, Replica]] = field(default_factory=dict)
    """By model name, then replica name."""
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set whenever capacity may have appeared (a replica joined, a request finished)."""

    def add_model(self, model: Model) -> None:
        self.models[model.name] = model
        self.replicas.setdefault(model.name, {})

    def set_replicas(self, model: str, found: Iterable[tuple[str, str]]) -> list[Replica]:
        """Make ``model``'s replicas exactly ``found`` (name, url); returns those removed."""
        current = self.replicas.setdefault(model, {})
        wanted = dict(found)
        gone = [current.pop(name) for name in list(current) if name not in wanted]
        for replica in gone:
            replica.removed = True
        for name, url in wanted.items():
            if name not in current or current[name].url != url:
                current[name] = Replica(name, url)
        self.wake()
        return gone

    def loads(self, model: str, now: float) -> list[ReplicaLoad]:
        slots = self.models[model].max_num_seqs
        return [replica.load(slots, now) for replica in self.replicas.get(model, {}).values()]

    def get(self, model: str, name: str) -> Replica:
        return self.replicas[model][name]

    def every_replica(self) -> list[tuple[Model, Replica]]:
        return [
            (self.models[model], replica)
            for model, replicas in self.replicas.items()
            for replica in replicas.values()
        ]

    def wake(self) -> None:
        """Tell waiting requests to look again."""
        self.changed.set()
        self.changed = asyncio.Event()


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
        except Exception:  # a bug in one round must not stop the loop; say it
            log.exception("A round of metrics scrapes failed")
        await asyncio.sleep(interval_s)
