"""Peer regions: what each one's gateways say about their models, and where to send a request
the local region should not serve.

Who uses it: :mod:`.server`. A gateway started with ``--region`` and ``--peer NAME=URL``
asks each peer for its summary (:func:`summary`, served at ``SUMMARY_PATH``) every
``interval`` seconds (:meth:`Peers.poll_forever`), and the server asks :meth:`Peers.pick`
where a request goes when the local replicas are missing, saturated or too slow.

The rules of :meth:`Peers.pick`:

- Only a request that entered here (never one a peer forwarded: ``HOP``) and only to a peer
  region the tenant's residency allows.
- A peer is usable while its last summary is fresh (three intervals), it has ready
  replicas of the model and spare room, it answered its last poll (a failed poll opens its
  circuit until one succeeds), and it took its last forward's connection. Its estimate for
  a request is its wait (what its replicas have ahead of a new request), the request's own
  prefill and the round trip of its last poll: the same prompt on both sides, so a long
  prompt, which no region prefills faster, is never a reason to leave.
- **Failover**: no local replica: the usable peer with the lowest estimate, if it is below
  the model's learned startup time (scale from zero: a warm peer answers while the local
  model wakes; the request counts in the gateway's pending requests, which wake it).
- **Spill**: every local replica saturated: the usable peer with the lowest estimate. Or,
  with ``ttftObjectiveSeconds``, while the region is over it: the peer whose estimate is
  below the local one. The region is over it once a typical request's local estimate
  (the local wait plus a typical prompt's prefill) is above the objective, and until it
  falls under ``EXIT_SHARE`` of it (hysteresis, so it does not flap).
- A peer gets at most its spare room (the requests its replicas take before saturating, as
  its summary said) in forwards beyond those in flight when the summary came: a peer coming
  back from a partition sees no burst larger than that.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import aiohttp

from llmfleet_gateway.pool import Pool, Replica
from llmfleet_gateway.routing import (
    Choice,
    ReplicaLoad,
    RouteReason,
    RouteRequest,
    RoutingSettings,
    choose,
)

log = logging.getLogger("llmfleet.gateway.peers")

SUMMARY_PATH = "/llmfleet/v1/summary"
HOP = "x-llmfleet-hop"
"""On a forwarded request: the region it entered (a forwarded request is never forwarded
again)."""
PEER_KEY = "x-llmfleet-peer-key"
"""The peers' shared credential, on every request between regions."""
REGION = "x-llmfleet-region"
"""On every answer: the region that served it."""
EXIT_SHARE = 0.8
"""Spill by estimate stops once the local estimate is below this share of the objective."""
FRESH_INTERVALS = 3


@dataclass(frozen=True)
class ModelSummary:
    """One model in one region, as that region's gateway sees it."""

    ready: int
    """Replicas that can take requests."""
    wait_s: float | None
    """What its best replica has ahead of a new request, in seconds (a typical request's
    estimated time to first token less its own prefill); None: saturated or none."""
    spare: int
    """Requests its replicas take before saturating."""

    def to_json(self) -> dict[str, object]:
        return {"ready": self.ready, "wait_s": self.wait_s, "spare": self.spare}


def summary(pool: Pool, routing: RoutingSettings, now: float) -> dict[str, ModelSummary]:
    """Every local model's summary (what :data:`SUMMARY_PATH` answers)."""
    typical = RouteRequest(routing.typical_prompt_tokens, {}, block_tokens=1)
    own = routing.typical_prompt_tokens / routing.prefill_tokens_per_s
    found = {}
    for name, model in pool.models.items():
        loads = pool.loads(name, now)
        choice = choose(loads, typical, routing)
        limit = model.max_num_seqs + routing.engine_queue
        spare = sum(max(0, min(limit, routing.max_in_flight) - _load(load)) for load in loads)
        estimate = choice.estimated_ttft_s
        wait = None if estimate is None else max(0.0, estimate - own)
        found[name] = ModelSummary(len(loads), wait, spare)
    return found


def _load(load: ReplicaLoad) -> int:
    return max(load.in_flight, (load.waiting or 0) + (load.running or 0))


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


@dataclass
class Peer:
    """One peer region: its gateways' address and what it said last."""

    region: str
    target: Replica
    """Its gateways as a forwarding target (``region/NAME``): connection failures back it
    off like a replica's."""
    models: dict[str, ModelSummary] = field(default_factory=dict)
    fetched_at: float | None = None
    round_trip_s: float = 0.0
    up: bool = False
    """Its last poll succeeded (else its circuit is open)."""
    forwarding: dict[str, int] = field(default_factory=dict)
    """Requests per model this gateway has in flight there now."""
    at_summary: dict[str, int] = field(default_factory=dict)
    """The same when its last summary came (its spare room had them in already)."""

    def usable(self, model: str, now: float, interval: float) -> ModelSummary | None:
        found = self.models.get(model)
        if not self.up or found is None or self.fetched_at is None:
            return None
        if now - self.fetched_at > FRESH_INTERVALS * interval or self.target.down_until > now:
            return None
        added = self.forwarding.get(model, 0) - self.at_summary.get(model, 0)
        if found.ready == 0 or added >= found.spare:
            return None
        return found

    def took(self, models: dict[str, ModelSummary], now: float, round_trip_s: float) -> None:
        """Its summary came (at ``now``, a poll of ``round_trip_s``): it is up, and what is
        in flight there now is in the spare room it reports."""
        self.models, self.at_summary, self.up = models, dict(self.forwarding), True
        self.fetched_at, self.round_trip_s = now, round_trip_s

    def done(self, model: str) -> None:
        """A forward of ``model`` ended."""
        self.forwarding[model] = max(0, self.forwarding.get(model, 0) - 1)


@dataclass(frozen=True)
class Pick:
    """Where a request goes instead of the local replicas, and why."""

    peer: Peer
    why: str
    """``Failover`` or ``Spill``."""


@dataclass
class Peers:
    """This gateway's region and its peer regions."""

    region: str
    peers: list[Peer]
    key: str
    interval: float = 1.0
    typical_s: float = 0.0
    """A typical prompt's own prefill, seconds (for the objective's hysteresis)."""
    spilling: set[str] = field(default_factory=set)
    """Models spilling by estimate (above the objective, not yet back under its exit)."""

    @classmethod
    def of(
        cls, region: str, urls: Mapping[str, str], key: str, interval: float, typical_s: float
    ) -> Peers:
        peers = [Peer(name, Replica(f"region/{name}", url)) for name, url in urls.items()]
        return cls(region, peers, key, interval, typical_s)

    def headers(self) -> dict[str, str]:
        return {PEER_KEY: self.key, HOP: self.region}

    def is_peer(self, presented: str | None) -> bool:
        """Whether a request's peer credential is ours (constant-time)."""
        if presented is None:
            return False
        return hmac.compare_digest(key_digest(presented), key_digest(self.key))

    def serving(self, model: str) -> list[str]:
        """The peer regions with ready replicas of ``model`` (last summaries)."""
        return [p.region for p in self.peers if p.up and p.models.get(model, _NONE).ready > 0]

    def _allowed(self, allowed: frozenset[str] | None, tried: set[str]) -> list[Peer]:
        return [
            peer
            for peer in self.peers
            if peer.target.name not in tried and (allowed is None or peer.region in allowed)
        ]

    def pick(
        self,
        model: str,
        local: Choice,
        objective_s: float | None,
        allowed: frozenset[str] | None,
        now: float,
        tried: set[str],
        startup_s: float | None = None,
        own_s: float = 0.0,
    ) -> Pick | None:
        """Where a request for ``model`` goes instead (None: the local replicas), given the
        local choice; ``allowed``: the tenant's regions (None: any); ``startup_s``: the
        local model's learned startup time (a failover must answer sooner; None: any);
        ``own_s``: the request's own prefill, seconds (in every estimate alike)."""
        if local.reason is RouteReason.NO_REPLICA:
            why = "Failover"
            bar = float("inf") if startup_s is None else startup_s
        elif local.replica is None:
            why, bar = "Spill", float("inf")
        elif objective_s is not None and local.estimated_ttft_s is not None:
            estimate = local.estimated_ttft_s
            typical = max(0.0, estimate - own_s) + self.typical_s
            if typical > objective_s:
                self.spilling.add(model)
            elif typical < EXIT_SHARE * objective_s:
                self.spilling.discard(model)
            if model not in self.spilling:
                return None
            why, bar = "Spill", estimate
        else:
            return None
        best: tuple[float, Peer] | None = None
        for peer in self._allowed(allowed, tried):
            found = peer.usable(model, now, self.interval)
            if found is None:
                continue
            wait = found.wait_s if found.wait_s is not None else 0.0
            estimate = wait + own_s + peer.round_trip_s
            if estimate < bar and (best is None or estimate < best[0]):
                best = (estimate, peer)
        if best is None:
            return None
        peer = best[1]
        peer.forwarding[model] = peer.forwarding.get(model, 0) + 1
        return Pick(peer, why)

    async def poll_once(self, session: aiohttp.ClientSession, clock: Callable[[], float]) -> None:
        async def one(peer: Peer) -> None:
            started = time.monotonic()
            try:
                timeout = aiohttp.ClientTimeout(total=max(self.interval, 1.0))
                async with session.get(
                    peer.target.url + SUMMARY_PATH, headers=self.headers(), timeout=timeout
                ) as answer:
                    answer.raise_for_status()
                    body = await answer.json()
                models = {
                    name: ModelSummary(int(m["ready"]), m["wait_s"], int(m["spare"]))
                    for name, m in body["models"].items()
                }
            except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError) as error:
                if peer.up:
                    log.warning("Peer region %s is unreachable: %s", peer.region, error)
                peer.up = False
                return
            if not peer.up:
                log.info("Peer region %s is reachable", peer.region)
            peer.took(models, clock(), time.monotonic() - started)

        await asyncio.gather(*(one(peer) for peer in self.peers))

    async def poll_forever(
        self,
        session: aiohttp.ClientSession,
        clock: Callable[[], float],
        after_round: Callable[[], None],
    ) -> None:
        """Poll every peer each interval until cancelled, calling ``after_round`` after
        each round."""
        while True:
            try:
                await self.poll_once(session, clock)
                after_round()
            except Exception:  # a bug in one round must not stop the loop; say it
                log.exception("A round of peer polls failed")
            await asyncio.sleep(self.interval)


_NONE = ModelSummary(0, None, 0)
