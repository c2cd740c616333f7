"""The gateway's OpenAI-compatible HTTP server (aiohttp.web, with an aiohttp client upstream).

Who calls it: :mod:`.cli` (``llmfleet gateway``) and tests, through :func:`create_app`, an app
factory taking its settings and clock (no globals). Routes: ``POST /v1/chat/completions`` and
``/v1/completions`` (routed to a replica, streams passed through as the engine writes them),
``GET /v1/models``, ``/health``, ``/metrics``, and the region summary its peers read
(``/llmfleet/v1/summary``). Every answer carries ``x-request-id`` (and, with ``--region``,
``x-llmfleet-region``).

A request goes: authenticate its tenant (:mod:`.tenants`: a 401 without a valid key, a 404 for
a model the tenant may not use, exactly as for one that does not exist), parse
(:mod:`.incoming`), resolve a model alias to its tier (:mod:`.tiers`), pass the guardrails
(:mod:`.guardrails`), admit it within the tenant's limits (:mod:`.limits`: 429 with OpenAI's
rate-limit headers), answer it from the tenant's response cache when it may
(:mod:`.responses`), pick a replica (:func:`.routing.choose` on the pool's
view), wait in the waiting room when none can take it (:mod:`.admission`: held while its model
has no ready replica, queued while every replica is saturated; bounded, with a time to live),
or, with peer regions, send it to one instead (:meth:`.peers.Peers.pick`: no local
replica, or saturated, or slower than the model's objective), forward (:mod:`.forward`),
account, and log one JSON line without the prompt or any header
(``llmfleet.gateway.access``). A connection error or a 503 before the first byte sends it
to another replica, once per replica. Waiting requests are woken by tenant priority, then in
turn among tenants, then in arrival order (:meth:`.pool.Pool.pass_on`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import aiohttp
import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from llmfleet_contract.api import TenantPriority
from llmfleet_contract.openai import ApiError
from llmfleet_gateway import forward
from llmfleet_gateway.admission import Wait, WaitingRoom
from llmfleet_gateway.discovery import Cluster, watch_cluster
from llmfleet_gateway.guardrails import Configured, Guardrails
from llmfleet_gateway.incoming import ClientRequest, parse
from llmfleet_gateway.limits import Limits, Reservation
from llmfleet_gateway.metrics import GatewayMetrics
from llmfleet_gateway.peers import HOP, PEER_KEY, REGION, SUMMARY_PATH, Peers, Pick, summary
from llmfleet_gateway.pool import Model, Pool, Replica, scrape_forever
from llmfleet_gateway.prefix import PrefixIndex, checkpoints
from llmfleet_gateway.quota import Store, sync_forever
from llmfleet_gateway.responses import Answer, ResponseCache, key_of
from llmfleet_gateway.routing import Choice, RouteReason, RouteRequest, RoutingSettings, choose
from llmfleet_gateway.tenants import Directory, Tenant, may_use
from llmfleet_gateway.tiers import (
    ESCALATED_HEADER,
    MODEL_HEADER,
    TIER_HEADER,
    Alias,
    Escalate,
    Reason,
)

CACHE_HEADER = "x-llmfleet-cache"
"""``hit`` or ``miss`` on the answers of a tenant with a response cache."""


@dataclass(frozen=True)
class GatewaySettings:
    """Everything one gateway needs; built by the CLI or a test."""

    models: tuple[Model, ...]
    replicas: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Static replicas by model name: their URLs (``--model NAME=URL,...``)."""
    routing: RoutingSettings = field(default_factory=RoutingSettings)
    wait_limit: int = 256
    """Requests that may wait per model (held and queued together); one more gets 429."""
    hold_seconds: float = 300.0
    """How long a request waits for its model's first ready replica (scale from zero)."""
    queue_seconds: float = 30.0
    """How long a request waits for a saturated model's replica."""
    heartbeat_seconds: float = 5.0
    """A held stream gets an SSE comment this often, so clients and proxies keep it open."""
    scrape_seconds: float = 0.25
    """How often each replica's engine metrics are read (0: never, in tests)."""
    max_body_bytes: int = 64 << 20
    """Largest request body (long contexts, images as base64); larger ones get 413."""
    prefix_capacity: int = 65_536
    prefix_ttl_seconds: float = 120.0
    cluster: Cluster | None = None
    """Discover models and replicas from the cluster's LLMDeployments and pods."""
    tenants: Directory = field(default_factory=lambda: Directory(open=True))
    """The tenants and their keys; open (no key asked) by default. In a cluster with
    ``Cluster.tenants``, discovery replaces it as LLMTenants and their Secrets change."""
    limit_share: float = 1.0
    """This replica's share of every tenant limit (1 / gateway replicas)."""
    redis_url: str | None = None
    """A Redis shared by the gateway replicas: tenant limits leased from it, exact across
    them (:mod:`.quota`); None: each replica enforces its share."""
    default_max_tokens: int = 4096
    """For a tenant with token limits, a request without ``max_tokens`` reserves this many
    completion tokens and is capped at them, so that no answer outgrows its reservation."""
    region: str | None = None
    """This gateway's region (``--region``): named on every answer (``x-llmfleet-region``)."""
    peers: Mapping[str, str] = field(default_factory=dict)
    """Peer regions' gateways by region name: their URLs (``--peer NAME=URL``)."""
    peer_key: str | None = None
    """The credential the regions' gateways share (required with peers)."""
    peer_interval_s: float = 1.0
    """How often each peer's summary is read."""
    aliases: Mapping[str, Alias] = field(default_factory=dict)
    """Model tiers by alias (``--aliases FILE``, :mod:`.tiers`)."""
    response_cache_bytes: int = 64 << 20
    """The response cache's memory bound (for tenants that opt in)."""
    guardrails: tuple[Configured, ...] = ()
    """The guardrail plugins, run in order (``--guardrail NAME[:open|closed]``)."""


@dataclass
class Gateway:
    """What the handlers share, stored on the app."""

    settings: GatewaySettings
    clock: Callable[[], float]
    wall: Callable[[], float] = time.time
    pool: Pool = field(default_factory=Pool)
    room: WaitingRoom = field(init=False)
    prefixes: PrefixIndex = field(init=False)
    metrics: GatewayMetrics = field(init=False)
    session: aiohttp.ClientSession | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    """The scrape and discovery loops; one that stops makes the gateway unready."""
    directory: Directory = field(init=False)
    """The tenants now (replaced whole by discovery)."""
    limits: Limits = field(init=False)
    peers: Peers | None = field(init=False)
    """The peer regions (None: none configured)."""
    responses: ResponseCache = field(init=False)
    guardrails: Guardrails | None = field(init=False)

    def __post_init__(self) -> None:
        settings = self.settings
        self.peers = None
        if settings.region is not None and settings.peer_key is not None:
            routing = settings.routing
            typical_s = routing.typical_prompt_tokens / routing.prefill_tokens_per_s
            self.peers = Peers.of(
                settings.region,
                settings.peers,
                settings.peer_key,
                settings.peer_interval_s,
                typical_s,
            )
        self.directory = self.settings.tenants
        store = None if self.settings.redis_url is None else Store(self.settings.redis_url)
        self.limits = Limits(self.settings.limit_share, self.wall, store)
        self.room = WaitingRoom(self.settings.wait_limit)
        self.prefixes = PrefixIndex(self.settings.prefix_capacity, self.settings.prefix_ttl_seconds)
        self.responses = ResponseCache(settings.response_cache_bytes, self.clock)
        self.metrics = GatewayMetrics(self.pool, self.room, store, self.responses)
        self.guardrails = None
        if settings.guardrails:
            self.guardrails = Guardrails(settings.guardrails, self.metrics.registry)
        for peer in self.peers.peers if self.peers else ():
            self.metrics.peer_up.labels(peer.region).set(0)

    def set_tenants(self, directory: Directory) -> None:
        self.directory = directory


GATEWAY = web.AppKey("llmfleet_gateway", Gateway)
QUOTA_SYNC_SECONDS = 0.1
"""How often what the replica counted beyond its leases goes to the quota store."""
log = logging.getLogger("llmfleet.gateway")
access = logging.getLogger("llmfleet.gateway.access")
"""One JSON line per request: routed (``request_id``, model, status, replica, tokens, waits,
time to first token) or refused before routing (status and error code); never a prompt, a
key or a header."""


def create_app(
    settings: GatewaySettings,
    *,
    clock: Callable[[], float] = time.monotonic,
    wall: Callable[[], float] = time.time,
) -> web.Application:
    """Build the aiohttp application of one gateway (``wall``: the clock of the tenants'
    limit windows)."""
    app = web.Application(middlewares=[_request_ids], client_max_size=settings.max_body_bytes)
    gateway = Gateway(settings, clock, wall)
    app[GATEWAY] = gateway
    gateway.pool.set_models(settings.models)
    app.cleanup_ctx.append(_run)
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_post("/v1/completions", _completions)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/health", _health)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get(SUMMARY_PATH, _summary)
    return app


async def _run(app: web.Application) -> AsyncIterator[None]:
    gateway = app[GATEWAY]
    for model, urls in gateway.settings.replicas.items():
        key = gateway.pool.models[model].key
        gateway.pool.set_replicas(key, ((url.removeprefix("http://"), url) for url in urls))
    gateway.session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
        auto_decompress=False,
    )
    tasks = []
    if gateway.settings.scrape_seconds > 0:
        tasks.append(
            scrape_forever(
                gateway.pool, gateway.session, gateway.clock, gateway.settings.scrape_seconds
            )
        )
    if (peers := gateway.peers) is not None:

        def after_round() -> None:
            for peer in peers.peers:
                gateway.metrics.peer_up.labels(peer.region).set(1 if peer.up else 0)
            gateway.pool.wake()  # requests held for want of a replica: a peer may take them

        tasks.append(peers.poll_forever(gateway.session, gateway.clock, after_round))
    if (store := gateway.limits.store) is not None:
        store.connect()
        tasks.append(sync_forever(store, QUOTA_SYNC_SECONDS))
    if (cluster := gateway.settings.cluster) is not None:
        gateway.pool.synced = False
        if cluster.tenants:
            gateway.directory = Directory()  # nobody until the tenants are listed
        tasks.append(watch_cluster(gateway.pool, cluster, gateway.set_tenants))
    gateway.tasks = [asyncio.create_task(task) for task in tasks]
    for task in gateway.tasks:
        task.add_done_callback(_stopped)
    yield
    for task in gateway.tasks:
        task.cancel()
    await asyncio.gather(*gateway.tasks, return_exceptions=True)
    await gateway.session.close()
    if gateway.limits.store is not None:
        await gateway.limits.store.close()


def _stopped(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("A gateway loop stopped", exc_info=task.exception())


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _request_ids(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every answer names its request: the client's ``x-request-id`` or a new one."""
    request_id = request.headers.get(forward.REQUEST_ID) or uuid.uuid4().hex
    request[forward.REQUEST_ID_KEY] = request_id
    try:
        response = await handler(request)
    except ApiError as error:
        response = forward.error_response(error)
    except web.HTTPException as error:
        response = forward.error_response(
            ApiError(error.status, error.reason, "invalid_request_error")
        )
    except Exception:  # a bug: the client still gets JSON and the request's id; the log, why
        log.exception("Request %s failed", request_id)
        response = forward.error_response(
            ApiError(500, "The gateway failed to handle the request.", "internal_error")
        )
    if not response.prepared:
        response.headers[forward.REQUEST_ID] = request_id
    return response


async def _health(request: web.Request) -> web.Response:
    """Ready once discovery has listed the cluster, and while its loops run."""
    gateway = request.app[GATEWAY]
    if not gateway.pool.synced:
        return web.Response(status=503, text="discovering the cluster's models")
    if any(task.done() for task in gateway.tasks):
        return web.Response(status=503, text="a background loop stopped: see the log")
    store = gateway.limits.store
    if store is not None and not store.up:
        return web.Response(text="ok; the quota store is unreachable: limits on local shares")
    return web.Response(text="ok")


async def _metrics(request: web.Request) -> web.Response:
    registry = request.app[GATEWAY].metrics.registry
    return web.Response(
        body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


async def _models(request: web.Request) -> web.Response:
    """The models the caller may use, and no other."""
    gateway = request.app[GATEWAY]
    tenant = _tenant(gateway, request)
    data = [
        {"id": model.name, "object": "model", "created": 0, "owned_by": "llmfleet"}
        | _regions(gateway, model.name)
        for model in gateway.pool.models.values()
        if may_use(tenant, model)
    ]
    data += [
        {"id": alias.name, "object": "model", "created": 0, "owned_by": "llmfleet"}
        | {"tiers": [model.name for model in tiers]}
        for alias in gateway.settings.aliases.values()
        if (tiers := _tiers(gateway, alias, tenant))
    ]
    return web.Response(
        body=orjson.dumps({"object": "list", "data": data}), content_type="application/json"
    )


def _regions(gateway: Gateway, model: str) -> dict[str, list[str]]:
    """Where ``model`` is served now: this region (with a replica) and its peers (ready)."""
    region = gateway.settings.region
    if region is None:
        return {}
    here = [region] if gateway.pool.replicas_of(model) else []
    return {"regions": here + (gateway.peers.serving(model) if gateway.peers else [])}


async def _summary(request: web.Request) -> web.Response:
    """This region's models for its peers (their credential only)."""
    gateway = request.app[GATEWAY]
    if gateway.peers is None or not gateway.peers.is_peer(request.headers.get(PEER_KEY)):
        raise _not_a_peer()
    found = summary(gateway.pool, gateway.settings.routing, gateway.clock())
    body = {
        "region": gateway.settings.region,
        "models": {name: model.to_json() for name, model in found.items()},
    }
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def _not_a_peer() -> ApiError:
    return ApiError(
        401, "Not a peer region's gateway.", "invalid_request_error", None, "invalid_peer_key"
    )


async def _chat(request: web.Request) -> web.StreamResponse:
    return await _generate(request, "/v1/chat/completions", chat=True)


async def _completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, "/v1/completions", chat=False)


def _tenant(gateway: Gateway, request: web.Request) -> Tenant | None:
    """The request's tenant (None: an open gateway); 401 without a valid key."""
    directory = gateway.directory
    if directory.open:
        return None
    return directory.authenticate(request.headers.get("Authorization"))


async def _generate(request: web.Request, path: str, *, chat: bool) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    tenant: Tenant | None = None
    try:
        hop = request.headers.get(HOP)
        if hop is not None and (
            gateway.peers is None or not gateway.peers.is_peer(request.headers.get(PEER_KEY))
        ):
            raise _not_a_peer()
        tenant = _tenant(gateway, request)
        raw = await request.read()
        incoming = parse(raw, chat=chat)
        tiers, start, why = _resolve(gateway, incoming, tenant, request.headers.get(TIER_HEADER))
        _check_residency(gateway, tenant, tiers[start].name, forwarded=hop is not None)
        # A peer's request passed the guardrails where it entered; its answer passes them
        # there too.
        guardrails = gateway.guardrails if hop is None else None
        if guardrails is not None:
            checked = await guardrails.before(incoming.body, chat=chat)
            if checked is not incoming.body:
                raw = orjson.dumps(checked)
                incoming = parse(raw, chat=chat)
        reservation: Reservation | None = None
        if tenant is not None and hop is None:  # a peer's request: charged where it entered
            incoming, raw, tokens = _reserve(gateway, tenant, incoming, raw)
            try:
                reservation = await gateway.limits.acquire(tenant, tokens)
            except forward.RateLimitedError:
                gateway.metrics.rejected.labels(incoming.model, "TenantLimit", tenant.label).inc()
                raise
    except ApiError as error:  # refused before routing: a line of its own
        if access.isEnabledFor(logging.INFO):
            access.info(orjson.dumps(_refused_record(request, error, tenant)).decode())
        raise
    label = "" if tenant is None else tenant.label
    exchange = forward.Exchange(
        request,
        incoming,
        gateway.clock(),
        gateway.metrics,
        gateway.clock,
        label,
        tiers[start].key,
        guardrails,
        chat=chat,
    )
    # A tenant's answers kept for its repeats; a peer's request is kept where it entered.
    ttl_s = None if tenant is None or hop is not None else tenant.cache_ttl_s
    cache_key = None if ttl_s is None else key_of(label, path, incoming.body)
    try:
        if reservation is not None and tenant is not None:
            exchange.headers.update(gateway.limits.headers(tenant))
        if gateway.settings.region is not None:
            exchange.headers[REGION] = gateway.settings.region
        if cache_key is not None:
            if (kept := gateway.responses.get(cache_key)) is not None:
                return await _replay(gateway, exchange, kept)
            exchange.headers[CACHE_HEADER] = "miss"
            gateway.metrics.cache_lookups.labels(incoming.model, "miss", label).inc()
            exchange.recording = bytearray() if incoming.stream else None
        answer = await _tiered(gateway, exchange, path, raw, tenant, tiers, start, why, hop)
        if cache_key is not None and ttl_s is not None:
            _keep(gateway, exchange, cache_key, ttl_s)
        return answer
    finally:
        if reservation is not None:
            used = exchange.usage
            spent = used.get("prompt_tokens", 0) + used.get("completion_tokens", 0)
            charged = spent if used or exchange.cached else reservation.tokens
            gateway.limits.settle(reservation, charged)
        if access.isEnabledFor(logging.INFO):
            access.info(orjson.dumps(exchange.access_record(gateway.clock())).decode())


def _resolve(
    gateway: Gateway, incoming: ClientRequest, tenant: Tenant | None, asked: str | None
) -> tuple[list[Model], int, Reason | None]:
    """The models that may serve the request (an alias's tiers it may use, in order, or the
    one it names), where it starts among them and why not at the first; 404 for a model the
    tenant may not use, 400 for a tier header naming none of the alias's tiers."""
    alias = gateway.settings.aliases.get(incoming.model)
    if alias is None:
        model = gateway.pool.models.get(incoming.model)
        if model is None or not may_use(tenant, model):
            raise _unknown(incoming.model)
        return [model], 0, None
    tiers = _tiers(gateway, alias, tenant)
    if not tiers:
        raise _unknown(incoming.model)
    label = "" if tenant is None else tenant.label
    try:
        start, why = alias.start(
            [model.name for model in tiers], label, incoming.prompt_tokens, asked
        )
    except ValueError:
        names = ", ".join(model.name for model in tiers)
        raise ApiError(
            400,
            f"`{TIER_HEADER}: {asked}` names no tier of `{alias.name}`; its tiers: {names}.",
            "invalid_request_error",
            None,
            "invalid_tier",
        ) from None
    if why is not None:
        gateway.metrics.escalations.labels(
            alias.name, tiers[0].name, tiers[start].name, why, label
        ).inc()
    return tiers, start, why


def _tiers(gateway: Gateway, alias: Alias, tenant: Tenant | None) -> list[Model]:
    """The alias's tiers that are served and that ``tenant`` may use, cheapest first."""
    found = (gateway.pool.models.get(name) for name in alias.tiers)
    return [model for model in found if model is not None and may_use(tenant, model)]


async def _tiered(
    gateway: Gateway,
    exchange: forward.Exchange,
    path: str,
    raw: bytes,
    tenant: Tenant | None,
    tiers: list[Model],
    index: int,
    why: Reason | None,
    hop: str | None,
) -> web.StreamResponse:
    """Route the request at its tier; with an alias, a tier whose replicas are all busy or
    failed (as its rules allow) passes it to the next."""
    asked = exchange.incoming.model
    alias = gateway.settings.aliases.get(asked)
    while True:
        model = tiers[index]
        if alias is not None:
            body = {**exchange.incoming.body, "model": model.name}
            raw = orjson.dumps(body)
            exchange.incoming = dataclasses.replace(exchange.incoming, body=body, model=model.name)
            exchange.deployment = model.key
            exchange.headers[MODEL_HEADER] = model.name
            if why is not None:
                exchange.headers[ESCALATED_HEADER] = why
        rules = alias.escalate if alias is not None and index + 1 < len(tiers) else None
        try:
            return await _route(
                gateway, exchange, path, raw, tenant, forwarded=hop is not None, escalate=rules
            )
        except _Escalation as step:
            assert alias is not None
            why, index = step.reason, index + 1
            exchange.unavailable = None
            gateway.metrics.escalations.labels(
                alias.name, model.name, tiers[index].name, why, exchange.tenant
            ).inc()


class _Escalation(Exception):  # noqa: N818 -- a step up, not an error
    """The tier cannot take the request and its alias's rules send it to the next."""

    def __init__(self, reason: Reason) -> None:
        self.reason = reason


async def _replay(gateway: Gateway, exchange: forward.Exchange, kept: Answer) -> web.StreamResponse:
    """Answer from the response cache: the bytes the first client got, as SSE for a stream."""
    exchange.cached = True
    exchange.status = 200
    exchange.headers[CACHE_HEADER] = "hit"
    if kept.model != exchange.incoming.model:
        exchange.headers[MODEL_HEADER] = kept.model
    tenant, model = exchange.tenant, exchange.incoming.model
    gateway.metrics.cache_lookups.labels(model, "hit", tenant).inc()
    saved = gateway.metrics.cache_saved_tokens
    saved.labels(model, "prompt", tenant).inc(kept.prompt_tokens)
    saved.labels(model, "completion", tenant).inc(kept.completion_tokens)
    exchange.count("")
    if exchange.incoming.stream:
        response = await exchange.start_stream()
        with contextlib.suppress(ConnectionError):
            await response.write(kept.body)
        return response
    return web.Response(
        body=kept.body,
        headers={
            "Content-Type": kept.content_type,
            forward.REQUEST_ID: exchange.request[forward.REQUEST_ID_KEY],
            **exchange.headers,
        },
    )


def _keep(gateway: Gateway, exchange: forward.Exchange, key: bytes, ttl_s: float) -> None:
    """Keep a whole, successful answer for the next same request."""
    answer = exchange.answer
    if exchange.status != 200 or not exchange.complete or answer is None:
        return
    if exchange.incoming.stream:
        body = None if exchange.recording is None else bytes(exchange.recording)
        content_type = "text/event-stream"
    else:
        assert isinstance(answer, web.Response)
        body = answer.body if isinstance(answer.body, bytes) else None
        content_type = answer.content_type
    if body is None:
        return
    gateway.responses.put(
        key,
        Answer(
            body,
            content_type,
            exchange.incoming.model,
            exchange.usage.get("prompt_tokens", 0),
            exchange.usage.get("completion_tokens", 0),
        ),
        ttl_s,
    )


def _reserve(
    gateway: Gateway, tenant: Tenant, incoming: ClientRequest, raw: bytes
) -> tuple[ClientRequest, bytes, int]:
    """The tokens a tenant's request reserves: its prompt's estimate plus its ``max_tokens``.
    Without one, and under a token limit, the request is capped at the default, so its
    answer cannot outgrow what it reserved."""
    body = incoming.body
    asked = body.get("max_completion_tokens", body.get("max_tokens"))
    if isinstance(asked, int) and not isinstance(asked, bool) and asked > 0:
        return incoming, raw, incoming.prompt_tokens + asked
    cap = gateway.settings.default_max_tokens
    limits = tenant.limits
    if limits.tokens_per_minute is None and limits.tokens_per_day is None:
        return incoming, raw, incoming.prompt_tokens + cap
    capped = {**body, "max_tokens": cap}
    return (
        dataclasses.replace(incoming, body=capped),
        orjson.dumps(capped),
        (incoming.prompt_tokens + cap),
    )


async def _route(
    gateway: Gateway,
    exchange: forward.Exchange,
    path: str,
    raw: bytes,
    tenant: Tenant | None,
    *,
    forwarded: bool = False,
    escalate: Escalate | None = None,
) -> web.StreamResponse:
    """Send the request to replicas (or a peer region) until one answers it, or answer the
    error; a request a peer ``forwarded`` stays here. With an alias's ``escalate`` rules
    (and a tier above), :class:`_Escalation` when no replica can take it or all failed."""
    incoming = exchange.incoming
    blocks = checkpoints(incoming.prompt)
    key = gateway.pool.models[incoming.model].key  # held, even if the model goes meanwhile
    tried: set[str] = set()
    peers = None if forwarded else gateway.peers
    try:
        while True:
            replica, cached, pick = await _replica(
                gateway, exchange, blocks, tried, tenant, peers, escalate
            )
            tried.add(replica.name)
            prefill = max(1, incoming.prompt_tokens - cached * forward.BLOCK_TOKENS)
            try:
                if pick is None:
                    sent = gateway.clock()
                    try:
                        outcome = await forward.send(
                            gateway.session, replica, path, raw, exchange, prefill
                        )
                    finally:  # a peer's replica is metered by the peer
                        exchange.held(gateway.clock() - sent)
                else:
                    outcome = await _forward_to_peer(gateway, exchange, pick, key, path, raw)
            finally:  # a slot freed, however the attempt ended: the next waiter looks
                gateway.pool.pass_on(key)
            if pick is not None and outcome is forward.Outcome.RETRY:
                continue  # the local replicas, or another peer
            if outcome is not forward.Outcome.RETRY:
                if pick is None:
                    # Recorded once a replica took it: a burst sharing the prefix follows it.
                    gateway.prefixes.record(blocks, replica.name, gateway.clock())
                exchange.count(replica.name)
                exchange.complete = outcome is forward.Outcome.DONE
                assert exchange.answer is not None
                return exchange.answer
            # Another replica; with peer regions, whichever comes first of a peer that can
            # take it and a replica here (held as when there is none, within the hold).
            others = _others(gateway, incoming.model, tried)
            if not others and escalate is not None and escalate.on_failure:
                raise _Escalation(Reason.FAILURE)
            if others or peers is not None:
                gateway.metrics.retries.labels(incoming.model).inc()
                continue
            unavailable = await forward.answer_unavailable(exchange)
            if unavailable is not None:
                exchange.count(replica.name)
                return unavailable
            raise ApiError(
                502, f"No replica of `{incoming.model}` could take the request.", "upstream_error"
            )
    except ApiError as error:
        answer = await exchange.fail(error)
        exchange.count("")
        return answer


def _check_residency(
    gateway: Gateway, tenant: Tenant | None, model: str, *, forwarded: bool
) -> None:
    """403 ``region_not_allowed`` when the tenant's residency excludes this region."""
    region = gateway.settings.region
    if tenant is None or tenant.regions is None or region is None or region in tenant.regions:
        return
    gateway.metrics.residency.labels(model, tenant.label, str(forwarded).lower()).inc()
    allowed = ", ".join(sorted(tenant.regions))
    raise ApiError(
        403,
        f"This gateway serves region {region}; your requests may be served in {allowed} only.",
        "permission_error",
        None,
        "region_not_allowed",
    )


def _refused_record(
    request: web.Request, error: ApiError, tenant: Tenant | None
) -> dict[str, object]:
    """The access log's line for a request refused before routing (no key, no such model,
    a limit): never a prompt or a key."""
    return {
        "time": round(time.time(), 3),
        "request_id": request[forward.REQUEST_ID_KEY],
        "path": request.path,
        "tenant": "" if tenant is None else tenant.label,
        "status": error.status,
        "error": error.code or error.type,
    }


async def _forward_to_peer(
    gateway: Gateway,
    exchange: forward.Exchange,
    pick: Pick,
    key: tuple[str, str],
    path: str,
    raw: bytes,
) -> forward.Outcome:
    """Send the request for the LLMDeployment ``key`` to a peer region's gateways, with the
    tenant's own key (the peer checks it against its own view of the tenant) and the peers'
    credential; the peer's answer, its errors included, is the client's."""
    assert gateway.peers is not None
    peer, model = pick.peer, exchange.incoming.model
    gateway.metrics.forwarded.labels(model, exchange.tenant, peer.region, pick.why).inc()
    headers = gateway.peers.headers()
    if (authorization := exchange.request.headers.get("Authorization")) is not None:
        headers["Authorization"] = authorization
    exchange.headers[REGION] = peer.region
    forwarded = gateway.pool.forwarded
    forwarded[key] = forwarded.get(key, 0) + 1  # demand this region could not serve
    try:
        outcome = await forward.send(
            gateway.session, peer.target, path, raw, exchange, 0, headers, retry_on=(429, 503)
        )
    finally:
        peer.done(model)
        forwarded[key] -= 1
        if not forwarded[key]:
            del forwarded[key]
    if outcome is forward.Outcome.RETRY and gateway.settings.region is not None:
        exchange.headers[REGION] = gateway.settings.region
        exchange.unavailable = None  # a peer's refusal is not the answer: the local one is
    return outcome


def _others(gateway: Gateway, model: str, tried: set[str]) -> bool:
    return any(name not in tried for name in gateway.pool.replicas_of(model))


async def _replica(
    gateway: Gateway,
    exchange: forward.Exchange,
    blocks: tuple[int, ...],
    tried: set[str],
    tenant: Tenant | None,
    peers: Peers | None,
    escalate: Escalate | None,
) -> tuple[Replica, int, Pick | None]:
    """A replica for the request and the prompt blocks it is believed to hold, or a peer
    region to send it to (with ``peers``: see :meth:`.peers.Peers.pick`), waiting in the
    room while there is none; ApiError (429, 503, 404) when the room is full, the wait runs
    out or the model is gone. A freed slot wakes the next waiter (:meth:`Pool.pass_on`), and
    a newcomer queues behind those waiting."""
    model = exchange.incoming.model
    key = gateway.pool.models[model].key
    entered: Wait | None = None
    ticket: int | None = None
    started = gateway.clock()
    deadline: float | None = None
    beat = started
    wake: asyncio.Event | None = None
    try:
        while True:
            if model not in gateway.pool.models:
                raise _unknown(model)
            wake = None if ticket is None else gateway.pool.waiter(key, ticket)
            # A newcomer does not pass requests already waiting: it queues behind them.
            if ticket is not None or not gateway.pool.queued(key):
                choice = _choose(gateway, exchange.incoming, blocks, tried)
            elif gateway.pool.replicas_of(model):
                choice = Choice(None, RouteReason.SATURATED)
            else:
                choice = Choice(None, RouteReason.NO_REPLICA)
            if peers is not None:
                allowed = None if tenant is None else tenant.regions
                served = gateway.pool.models[model]
                now = gateway.clock()
                own_s = (
                    exchange.incoming.prompt_tokens / gateway.settings.routing.prefill_tokens_per_s
                )
                pick = peers.pick(
                    model,
                    choice,
                    served.ttft_objective_s,
                    allowed,
                    now,
                    tried,
                    served.startup_s,
                    own_s,
                )
                if pick is not None:
                    return pick.peer.target, 0, pick
            if choice.replica is not None:
                return gateway.pool.get(model, choice.replica), choice.cached_blocks, None
            if entered is None and escalate is not None and escalate.on_saturation:
                raise _Escalation(Reason.SATURATION)
            why = Wait.QUEUED if choice.reason is RouteReason.SATURATED else Wait.HELD
            now = gateway.clock()
            if entered is None:
                if not gateway.room.enter(model):
                    retry = _wait_seconds(gateway, why)
                    raise _refused(gateway, exchange, "WaitingRoomFull", retry)
                entered, deadline = why, now + _wait_seconds(gateway, why)
                rank = 0 if tenant is None or tenant.priority is TenantPriority.INTERACTIVE else 1
                ticket = gateway.pool.join(key, rank, exchange.tenant)
                wake = gateway.pool.waiter(key, ticket)
            elif why is Wait.QUEUED and entered is Wait.HELD:
                # Held until replicas came, then queued behind them: the queue's own wait,
                # once (a flap back does not extend it again).
                entered, deadline = why, now + _wait_seconds(gateway, why)
            assert deadline is not None
            assert wake is not None
            if now >= deadline:
                raise _expired(gateway, exchange, entered)
            heartbeat = gateway.settings.heartbeat_seconds
            if exchange.incoming.stream and now - beat >= heartbeat:
                beat = now
                await exchange.heartbeat()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), min(deadline - now, heartbeat))
    finally:
        if ticket is not None:
            gateway.pool.leave(key, ticket)
            if wake is not None and wake.is_set():
                # Woken: a slot it will not take goes to the next; one it took, the next
                # looks too (more may have freed), until one finds none and waits.
                gateway.pool.pass_on(key)
        if entered is not None:
            gateway.room.leave(model)
            waited = gateway.clock() - started
            exchange.waited_s += waited
            gateway.metrics.waited.labels(model, entered.value, exchange.tenant).observe(waited)


def _choose(
    gateway: Gateway, incoming: ClientRequest, blocks: tuple[int, ...], tried: set[str]
) -> Choice:
    now = gateway.clock()
    loads = [load for load in gateway.pool.loads(incoming.model, now) if load.name not in tried]
    request = RouteRequest(
        prompt_tokens=incoming.prompt_tokens,
        cached_blocks=gateway.prefixes.matched(blocks, now),
        block_tokens=forward.BLOCK_TOKENS,
        session_replica=None,
    )
    return choose(loads, request, gateway.settings.routing)


def _unknown(model: str) -> ApiError:
    return ApiError(
        404,
        f"The model `{model}` does not exist.",
        "invalid_request_error",
        "model",
        "model_not_found",
    )


def _wait_seconds(gateway: Gateway, why: Wait) -> float:
    settings = gateway.settings
    return settings.hold_seconds if why is Wait.HELD else settings.queue_seconds


def _refused(gateway: Gateway, exchange: forward.Exchange, reason: str, retry_s: float) -> ApiError:
    model = exchange.incoming.model
    gateway.metrics.rejected.labels(model, reason, exchange.tenant).inc()
    return forward.RateLimitedError(
        f"The model `{model}` has too many requests waiting; retry later.", retry_s
    )


def _expired(gateway: Gateway, exchange: forward.Exchange, why: Wait) -> ApiError:
    model = exchange.incoming.model
    gateway.metrics.rejected.labels(model, f"{why.value}Expired", exchange.tenant).inc()
    if why is Wait.QUEUED:
        return forward.RateLimitedError(
            f"Every replica of `{model}` stayed busy for {gateway.settings.queue_seconds:g} s;"
            " retry later.",
            gateway.settings.queue_seconds,
        )
    return ApiError(
        503,
        f"No replica of `{model}` became ready within {gateway.settings.hold_seconds:g} s.",
        "service_unavailable",
        None,
        "model_not_ready",
    )
