"""The gateway's ``/metrics``: the autoscaler's signals and the gateway's own counters.

Who uses it: :mod:`.server` counts into :class:`GatewayMetrics` and serves its registry. The
two gauges the operator's autoscaler reads are rendered at scrape time from the live state
(the waiting room and the pool), with the names and labels of the shared contract
(:mod:`llmfleet_contract.metrics`): nothing per request pays for them. One registry per app,
so several gateways can share a process in tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from llmfleet_contract.metrics import (
    LLMDEPLOYMENT,
    LLMDEPLOYMENT_NAMESPACE,
    PENDING_PREFILL_TOKENS,
    PENDING_REQUESTS,
    REPLICA,
)

if TYPE_CHECKING:
    from llmfleet_gateway.admission import WaitingRoom
    from llmfleet_gateway.pool import Pool
    from llmfleet_gateway.quota import Store
    from llmfleet_gateway.responses import ResponseCache

TENANT = "tenant"
"""The label of per-tenant series: the tenant's ``namespace/name`` (empty: an open gateway)."""
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class _Live(Collector):
    """Gauges read off the live state at each scrape."""

    def __init__(self, pool: Pool, room: WaitingRoom, store: Store | None) -> None:
        self._pool, self._room, self._store = pool, room, store

    def collect(self) -> Iterator[Metric]:
        pending = GaugeMetricFamily(
            PENDING_REQUESTS,
            "Requests the gateway holds or queues because no replica can take them, and those"
            " it sent to a peer region for that reason.",
            labels=[LLMDEPLOYMENT, LLMDEPLOYMENT_NAMESPACE],
        )
        waiting: dict[tuple[str, str], int] = {}
        for model in self._pool.models.values():
            waiting[model.key] = waiting.get(model.key, 0) + self._room.count(model.name)
        for key, count in self._pool.forwarded.items():
            waiting[key] = waiting.get(key, 0) + count
        for (namespace, deployment), count in waiting.items():
            pending.add_metric([deployment, namespace], count)
        tokens = GaugeMetricFamily(
            PENDING_PREFILL_TOKENS,
            "Prompt tokens this gateway sent to the replica that have no first token yet.",
            labels=[REPLICA, LLMDEPLOYMENT_NAMESPACE],
        )
        in_flight = GaugeMetricFamily(
            "llmfleet_gateway_in_flight_requests",
            "Requests this gateway sent to the replica that have not finished.",
            labels=[REPLICA, LLMDEPLOYMENT, LLMDEPLOYMENT_NAMESPACE],
        )
        for (namespace, deployment), replica in self._pool.every_replica():
            tokens.add_metric([replica.name, namespace], replica.pending_prefill_tokens)
            in_flight.add_metric([replica.name, deployment, namespace], replica.in_flight)
        yield from (pending, tokens, in_flight)
        if self._store is not None:
            yield GaugeMetricFamily(
                "llmfleet_gateway_quota_store_up",
                "1 while the quota store (Redis) answers; 0: tenant limits on local shares.",
                value=1 if self._store.up else 0,
            )


class GatewayMetrics:
    """The counters and histograms, and the registry that renders them with the live gauges."""

    def __init__(
        self,
        pool: Pool,
        room: WaitingRoom,
        store: Store | None = None,
        responses: ResponseCache | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_Live(pool, room, store))
        reg = self.registry
        self.escalations = Counter(
            "llmfleet_gateway_escalations",
            "Requests for a model alias served past its first tier, by alias, the tier it"
            " left, the tier it went to, why (Header, Tenant, PromptLength, Saturation,"
            " Failure) and tenant.",
            ["alias", "from_model", "to_model", "reason", TENANT],
            registry=reg,
        )
        self.cache_lookups = Counter(
            "llmfleet_gateway_response_cache_lookups",
            "Deterministic requests of tenants with a response cache, by model (as asked),"
            " result (hit, miss) and tenant.",
            ["model", "result", TENANT],
            registry=reg,
        )
        self.cache_saved_tokens = Counter(
            "llmfleet_gateway_response_cache_saved_tokens",
            "Tokens the engines did not process because the cache answered, by model, kind"
            " and tenant.",
            ["model", "kind", TENANT],
            registry=reg,
        )
        if responses is not None:
            size = Gauge(
                "llmfleet_gateway_response_cache_bytes",
                "Bytes the response cache holds (its bound: --response-cache-mib).",
                registry=reg,
            )
            size.set_function(lambda: responses.bytes)
            entries = Gauge(
                "llmfleet_gateway_response_cache_entries",
                "Answers the response cache holds.",
                registry=reg,
            )
            entries.set_function(lambda: len(responses))
        self.requests = Counter(
            "llmfleet_gateway_requests",
            "Requests answered, by model, replica (empty: none), HTTP status and tenant.",
            ["model", REPLICA, "code", TENANT],
            registry=reg,
        )
        self.rejected = Counter(
            "llmfleet_gateway_rejected_requests",
            "Requests refused (a full waiting room, a tenant over its limits) or expired while"
            " waiting, by model, reason and tenant.",
            ["model", "reason", TENANT],
            registry=reg,
        )
        self.tokens = Counter(
            "llmfleet_gateway_tokens",
            "Tokens of answered requests, as the engines counted them, by model, kind and tenant.",
            ["model", "kind", TENANT],
            registry=reg,
        )
        self.busy = Counter(
            "llmfleet_gateway_busy_seconds",
            "Seconds requests held a replica, from the gateway's send to the answer's last byte"
            " (every attempt), by LLMDeployment, model and tenant: what each LLMDeployment's"
            " GPU-seconds are split by (llmfleet usage).",
            [LLMDEPLOYMENT, LLMDEPLOYMENT_NAMESPACE, "model", TENANT],
            registry=reg,
        )
        self.forwarded = Counter(
            "llmfleet_gateway_forwarded_requests",
            "Requests sent to a peer region's gateways, by model, tenant, region and why"
            " (Failover: no local replica; Spill: local replicas saturated or too slow).",
            ["model", TENANT, "region", "reason"],
            registry=reg,
        )
        self.residency = Counter(
            "llmfleet_gateway_residency_refusals",
            "Requests refused because the tenant's residency excludes this region, by model,"
            " tenant and whether a peer forwarded them.",
            ["model", TENANT, "forwarded"],
            registry=reg,
        )
        self.peer_up = Gauge(
            "llmfleet_gateway_peer_up",
            "1 while a peer region's gateways answer their summary polls.",
            ["region"],
            registry=reg,
        )
        self.retries = Counter(
            "llmfleet_gateway_retries",
            "Requests sent again to another replica before their first byte.",
            ["model"],
            registry=reg,
        )
        self.ttft = Histogram(
            "llmfleet_gateway_time_to_first_token_seconds",
            "From the request's arrival at the gateway to its first streamed token.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.tpot = Histogram(
            "llmfleet_gateway_time_per_output_token_seconds",
            "Mean time between streamed tokens after the first, per request.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.waited = Histogram(
            "llmfleet_gateway_wait_seconds",
            "Time a request waited for a replica (held or queued), by model, why and tenant.",
            ["model", "reason", TENANT],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
