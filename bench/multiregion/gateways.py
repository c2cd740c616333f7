"""The gateway's own peer logic behind the fleet simulator's seam between regions.

Used by :mod:`run` and tests/fleetsim/test_regions.py: :func:`gateways` makes, for
:class:`llmfleet_fleetsim.regions.Spill`, each region's
:class:`~llmfleet_fleetsim.regions.Gateway` from :class:`llmfleet_gateway.peers.Peers` (its
``pick``, the very method the gateway's server calls, and its peers' state) and
:func:`llmfleet_gateway.peers.summary` (over a gateway :class:`~llmfleet_gateway.pool.Pool`
holding the region's ready replicas as its router sees them). It lives here, not in the
fleet simulator, because the gateway's peers and pool modules import aiohttp (for their
polls and scrapes) and the fleet simulator is offline by contract (pyproject.toml).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llmfleet_fleetsim.regions import Gateway
from llmfleet_gateway.peers import ModelSummary, Peer, Peers, summary
from llmfleet_gateway.pool import Model, Pool, Replica
from llmfleet_gateway.routing import Choice, ReplicaLoad, RoutingSettings

MODEL = "model"
"""The one model every region serves (the name the summaries carry)."""


@dataclass
class PeersGateway:
    """One region's gateway: its :class:`Peers` and what it tells its peers."""

    peers: Peers
    objective_s: float | None
    """The model's ``ttftObjectiveSeconds``."""
    max_num_seqs: int
    routing: RoutingSettings

    def _peer(self, region: str) -> Peer:
        return next(peer for peer in self.peers.peers if peer.region == region)

    def pick(self, local: Choice, prompt_tokens: int, now: float) -> tuple[str, str] | None:
        own_s = prompt_tokens / self.routing.prefill_tokens_per_s
        found = self.peers.pick(MODEL, local, self.objective_s, None, now, set(), None, own_s)
        return None if found is None else (found.peer.region, found.why)

    def done(self, peer: str) -> None:
        self._peer(peer).done(MODEL)

    def summary(self, loads: Sequence[ReplicaLoad], now: float) -> object:
        model = Model(MODEL, MODEL, "default", max_num_seqs=self.max_num_seqs)
        pool = Pool(models={MODEL: model})
        pool.groups[model.key] = {
            load.name: Replica(
                load.name,
                "",
                in_flight=load.in_flight,
                pending_prefill_tokens=load.pending_prefill_tokens,
                waiting=load.waiting,
                running=load.running,
                kv_cache_usage=load.kv_cache_usage,
                scraped_at=None if load.metrics_age_s is None else now - load.metrics_age_s,
            )
            for load in loads
        }
        return summary(pool, self.routing, now)

    def took(self, peer: str, answer: object, now: float, round_trip_s: float) -> None:
        """What :meth:`Peers.poll_once` does with a peer's answer."""
        assert isinstance(answer, dict)
        models: dict[str, ModelSummary] = answer
        self._peer(peer).took(models, now, round_trip_s)


def gateways(
    objective_s: float | None, max_num_seqs: int, routing: RoutingSettings, poll_s: float
) -> Callable[[str, Sequence[str]], Gateway]:
    """A factory of every region's gateway (:attr:`llmfleet_fleetsim.regions.Spill.gateway`)."""

    def make(region: str, others: Sequence[str]) -> Gateway:
        peers = [Peer(name, Replica(f"region/{name}", "")) for name in others]
        typical_s = routing.typical_prompt_tokens / routing.prefill_tokens_per_s
        found = Peers(region, peers, "", poll_s, typical_s)
        return PeersGateway(found, objective_s, max_num_seqs, routing)

    return make
