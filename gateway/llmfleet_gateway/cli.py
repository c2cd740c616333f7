"""``llmfleet gateway``: run the OpenAI gateway in front of a fleet's replicas.

Called by :mod:`llmfleet.cli` (``main(argv) -> exit code``). In a cluster (the default) the
gateway watches LLMDeployments and their pods (``--watch-namespace``, ``--kubeconfig``), and
LLMTenants with their keys' Secrets: every request needs a tenant's key unless
``--no-tenants`` opens the gateway. Without a cluster, replicas are given the way vllm-router
takes ``--worker-urls``: ``--model NAME=URL[,URL...]`` (repeatable), and tenants by
``--tenants FILE`` (the manifests a user would apply; without it the gateway is open). Bad
flags or an invalid tenant file exit with 2 and a message saying which.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import logging.handlers
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from llmfleet_contract.arguments import count, positive, whole
from llmfleet_gateway import guardrails, tiers
from llmfleet_gateway.discovery import Cluster
from llmfleet_gateway.pool import Model
from llmfleet_gateway.routing import RoutingSettings
from llmfleet_gateway.server import GatewaySettings, create_app
from llmfleet_gateway.tenants import Directory, load_file

log = logging.getLogger("llmfleet.gateway")


def _share(text: str) -> float:
    value = positive(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be at most 1, got {text}")
    return value


def _model(text: str) -> tuple[str, tuple[str, ...]]:
    name, _, urls = text.partition("=")
    found = tuple(url.strip().rstrip("/") for url in urls.split(",") if url.strip())
    if not name or not found:
        raise argparse.ArgumentTypeError(f"expected NAME=URL[,URL...], got {text!r}")
    bad = [url for url in found if not url.startswith("http://")]
    if bad:
        raise argparse.ArgumentTypeError(f"replica URLs must be http://HOST:PORT, got {bad[0]!r}")
    return name, found


def _peer(text: str) -> tuple[str, str]:
    name, _, url = text.partition("=")
    url = url.strip().rstrip("/")
    if not name or not url.startswith("http://"):
        raise argparse.ArgumentTypeError(f"expected NAME=http://HOST:PORT, got {text!r}")
    return name, url


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="llmfleet gateway",
        description="The OpenAI-compatible gateway: routes each request to the replica with the"
        " least estimated time to first token (prefix- and load-aware), holds requests while a"
        " model has no ready replica, queues them within bounds when all are busy, and exports"
        " the pending work the operator's autoscaler reads.",
    )
    p.add_argument(
        "--model",
        type=_model,
        action="append",
        metavar="NAME=URL[,URL...]",
        help="a model clients name and its replicas' URLs (repeatable); without it, discover"
        " models and replicas from the cluster's LLMDeployments and pods",
    )
    p.add_argument(
        "--namespace", default="default", help="with --model: the models' namespace label"
    )
    p.add_argument(
        "--tenants",
        type=Path,
        metavar="FILE",
        help="with --model: LLMTenants and their keys' Secrets (YAML manifests); without it"
        " the gateway is open",
    )
    p.add_argument(
        "--no-tenants",
        action="store_true",
        help="in a cluster: read no LLMTenants and ask no key (an open gateway)",
    )
    p.add_argument(
        "--tenant-namespace",
        action="append",
        default=[],
        metavar="NAMESPACE",
        help="in a cluster: read LLMTenants and their keys' Secrets here (repeatable); default:"
        " --watch-namespace, else every namespace",
    )
    p.add_argument(
        "--limit-share",
        type=_share,
        default=1.0,
        help="this replica's share of each tenant limit: 1/N for N gateway replicas",
    )
    p.add_argument(
        "--redis",
        metavar="URL",
        help="a Redis the gateway replicas share (redis://HOST:PORT/DB): tenant limits exact"
        " across them, leased in batches; unreachable, each replica falls back to its share",
    )
    p.add_argument(
        "--default-max-tokens",
        type=count,
        default=4096,
        help="completion tokens reserved (and the cap) for a request without max_tokens from"
        " a tenant with token limits",
    )
    p.add_argument(
        "--ttft-objective-seconds",
        type=positive,
        help="with --model: the models' time-to-first-token objective (in a cluster:"
        " spec.serving.ttftObjectiveSeconds); above it, requests spill to peer regions",
    )
    p.add_argument("--region", help="this gateway's region, named on every answer")
    p.add_argument(
        "--peer",
        type=_peer,
        action="append",
        default=[],
        metavar="REGION=URL",
        help="a peer region's gateways (repeatable; needs --region and --peer-key-file):"
        " requests fail over there when no local replica is ready, and spill there when the"
        " local ones are saturated or slower than the objective",
    )
    p.add_argument(
        "--peer-key-file",
        type=Path,
        metavar="FILE",
        help="the credential every region's gateways share (one line)",
    )
    p.add_argument("--peer-interval-seconds", type=positive, default=1.0)
    p.add_argument(
        "--watch-namespace",
        action="append",
        default=[],
        help="discover in this namespace (repeatable; default: every namespace)",
    )
    p.add_argument("--kubeconfig", help="default: in-cluster configuration, else ~/.kube/config")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--max-num-seqs", type=count, default=256, help="slots per replica")
    p.add_argument("--max-in-flight", type=count, default=256, help="requests per replica at most")
    p.add_argument(
        "--engine-queue",
        type=whole,
        default=RoutingSettings().engine_queue,
        help="requests a replica may be sent beyond its slots; more wait in the gateway,"
        " ordered by tenant priority and fairness",
    )
    p.add_argument("--wait-limit", type=count, default=256, help="waiting requests per model")
    p.add_argument("--hold-seconds", type=positive, default=300.0)
    p.add_argument("--queue-seconds", type=positive, default=30.0)
    p.add_argument("--scrape-seconds", type=positive, default=0.25)
    routing = RoutingSettings()
    p.add_argument(
        "--prefill-tokens-per-s",
        type=positive,
        default=routing.prefill_tokens_per_s,
        help="a replica's prefill speed, for the TTFT estimate (match the engine's hardware)",
    )
    p.add_argument(
        "--typical-prompt-tokens",
        type=count,
        default=routing.typical_prompt_tokens,
        help="prompt tokens assumed for each request in an engine's waiting queue",
    )
    p.add_argument(
        "--affinity-load-factor",
        type=positive,
        default=routing.affinity_load_factor,
        help="prefix and session affinity hold while a replica's requests are at most this"
        " factor x (mean + 1)",
    )
    p.add_argument(
        "--prefix-min-share",
        type=positive,
        default=routing.prefix_min_share,
        help="the share of a prompt a replica must hold for prefix affinity to override the"
        " estimate",
    )
    p.add_argument(
        "--prefix-ttl-seconds",
        type=positive,
        default=GatewaySettings(models=()).prefix_ttl_seconds,
        help="how long a replica is believed to keep a prompt's prefix cached (match the"
        " engines' cache turnover)",
    )
    p.add_argument(
        "--aliases",
        type=Path,
        metavar="FILE",
        help="model tiers (YAML): aliases clients name, served by a cheaper model first and a"
        " larger one by rule (see llmfleet_gateway.tiers)",
    )
    p.add_argument(
        "--response-cache-mib",
        type=count,
        default=64,
        help="memory for the response cache of tenants that opt in (spec.responseCache)",
    )
    p.add_argument(
        "--guardrail",
        type=guardrails.parse_flag,
        action="append",
        default=[],
        metavar="NAME[:open|:closed]",
        help="a guardrail plugin by its entry point (group llmfleet.guardrails; built in: pii),"
        " run in the order given (repeatable); closed (the default): a plugin that fails"
        " refuses the request (503), open: it is passed by",
    )
    p.add_argument("--log-level", default="INFO")
    return p


def settings_from_args(args: argparse.Namespace) -> GatewaySettings:
    given = args.model or []
    names = [name for name, _ in given]
    if len(set(names)) != len(names):
        raise ValueError("each --model NAME may be given once")
    if given and (args.watch_namespace or args.kubeconfig):
        raise ValueError(
            "--model and cluster discovery (--watch-namespace, --kubeconfig) exclude each other"
        )
    if args.tenants and not given:
        raise ValueError("--tenants FILE goes with --model; in a cluster tenants are LLMTenants")
    if args.no_tenants and given:
        raise ValueError("--no-tenants is for cluster mode; with --model, omit --tenants")
    models = tuple(
        Model(
            name,
            name,
            args.namespace,
            max_num_seqs=args.max_num_seqs,
            ttft_objective_s=args.ttft_objective_seconds,
        )
        for name in names
    )
    if args.ttft_objective_seconds is not None and not given:
        raise ValueError(
            "--ttft-objective-seconds goes with --model; in a cluster it is each"
            " LLMDeployment's spec.serving.ttftObjectiveSeconds"
        )
    if args.peer_key_file and not args.peer:
        raise ValueError("--peer-key-file goes with --peer")
    peers = dict(args.peer)
    if len(peers) != len(args.peer) or args.region in peers:
        raise ValueError("each --peer REGION may be given once, and not this gateway's --region")
    peer_key = None
    if peers:
        if not args.region or not args.peer_key_file:
            raise ValueError("--peer needs --region and --peer-key-file")
        try:
            peer_key = args.peer_key_file.read_text().strip()
        except OSError as error:
            raise ValueError(f"--peer-key-file {args.peer_key_file}: {error.strerror}") from None
        if not peer_key:
            raise ValueError(f"--peer-key-file {args.peer_key_file} is empty")
    tenants = Directory(open=True)
    if args.tenants:
        try:
            tenants = load_file(args.tenants, args.namespace)
        except OSError as error:
            raise ValueError(f"--tenants {args.tenants}: {error.strerror}") from None
    aliases = {}
    if args.aliases:
        aliases = tiers.load_file(args.aliases)
        clash = sorted(set(aliases) & set(names))
        if clash:
            raise ValueError(f"--aliases {args.aliases}: {clash[0]!r} is also a --model")
    cluster = None
    if not given:
        cluster = Cluster(
            tuple(args.watch_namespace),
            args.kubeconfig,
            tenants=not args.no_tenants,
            tenant_namespaces=tuple(args.tenant_namespace),
            region=args.region,
        )
    return GatewaySettings(
        models=models,
        replicas=dict(given),
        cluster=cluster,
        tenants=tenants,
        limit_share=args.limit_share,
        redis_url=args.redis,
        default_max_tokens=args.default_max_tokens,
        region=args.region,
        peers=peers,
        peer_key=peer_key,
        peer_interval_s=args.peer_interval_seconds,
        routing=RoutingSettings(
            max_in_flight=args.max_in_flight,
            engine_queue=args.engine_queue,
            prefill_tokens_per_s=args.prefill_tokens_per_s,
            typical_prompt_tokens=args.typical_prompt_tokens,
            affinity_load_factor=args.affinity_load_factor,
            prefix_min_share=args.prefix_min_share,
        ),
        wait_limit=args.wait_limit,
        hold_seconds=args.hold_seconds,
        queue_seconds=args.queue_seconds,
        scrape_seconds=args.scrape_seconds,
        prefix_ttl_seconds=args.prefix_ttl_seconds,
        aliases=aliases,
        response_cache_bytes=args.response_cache_mib << 20,
        guardrails=guardrails.load(args.guardrail),
    )


async def serve(settings: GatewaySettings, host: str, port: int) -> int:
    # A client that leaves cancels its handler: the engine's request is aborted with it.
    runner = web.AppRunner(create_app(settings), access_log=None, handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info(
        "Gateway listening on http://%s:%d for %s", host, port, [m.name for m in settings.models]
    )
    if settings.tenants.open and (settings.cluster is None or not settings.cluster.tenants):
        log.warning("The gateway is open: every caller reaches every model, with no key")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), ACCESS_FLUSH_SECONDS)
        for handler in logging.getLogger(ACCESS_LOGGER).handlers:
            handler.flush()
    await runner.cleanup()
    logging.shutdown()
    return 0


ACCESS_LOGGER = "llmfleet.gateway.access"
ACCESS_FLUSH_SECONDS = 0.5
"""The access log is written in batches, at most this late: a write and flush per request
cost a tenth of the gateway's CPU (measured, bench/gateway)."""


def _access_log() -> None:
    """One JSON line per request on stdout, as it is, buffered; the other logs as they are."""
    out = logging.StreamHandler(sys.stdout)
    out.setFormatter(logging.Formatter("%(message)s"))
    access = logging.getLogger(ACCESS_LOGGER)
    access.handlers = [
        logging.handlers.MemoryHandler(1024, flushLevel=logging.CRITICAL, target=out)
    ]
    access.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``llmfleet gateway``."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = settings_from_args(args)
    except ValueError as error:
        print(f"llmfleet gateway: {error}", file=sys.stderr)
        return 2
    _access_log()
    try:
        import uvloop
    except ImportError:  # the gateway extra brings it; without it asyncio's loop serves
        return asyncio.run(serve(settings, args.host, args.port))
    return uvloop.run(serve(settings, args.host, args.port))
