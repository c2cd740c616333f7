"""``llmfleet operator``: run the LLMDeployment operator.

Called by the ``llmfleet`` entry point. Connects to the API server (in-cluster, or the
kubeconfig), optionally waits to lead a Lease, serves the operator's metrics, and runs
kopf with llmfleet's handlers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable, Sequence

import kopf
from aiohttp import web
from prometheus_client import start_http_server

from llmfleet_operator.autoscaler import Autoscaler
from llmfleet_operator.gateways import GatewayPods
from llmfleet_operator.handlers import Metrics, Runtime, make_registry
from llmfleet_operator.kube_client import DynamicKube, connect, credentials
from llmfleet_operator.leader import LeaseElector
from llmfleet_operator.metrics import DirectScrape
from llmfleet_operator.placement import PREEMPTION_TAINTS

log = logging.getLogger("llmfleet.operator")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmfleet operator", description=__doc__.split("\n")[0])
    parser.add_argument("--kubeconfig", help="kubeconfig to use outside a cluster")
    parser.add_argument(
        "--namespace",
        action="append",
        dest="namespaces",
        help="watch only this namespace (repeatable); default: every namespace",
    )
    parser.add_argument("--workers", type=int, default=4, help="concurrent reconciles")
    parser.add_argument("--resync-seconds", type=float, default=60.0)
    parser.add_argument("--metrics-address", default="0.0.0.0")
    parser.add_argument("--metrics-port", type=int, default=8080, help="0 disables metrics")
    parser.add_argument("--health-port", type=int, default=8081, help="liveness endpoint /healthz")
    parser.add_argument(
        "--leader-election",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="hold a Lease so that only one replica acts",
    )
    parser.add_argument("--lease-namespace", default=os.environ.get("POD_NAMESPACE", "default"))
    parser.add_argument("--lease-name", default="llmfleet-operator")
    parser.add_argument("--identity", default=os.environ.get("POD_NAME", socket.gethostname()))
    parser.add_argument(
        "--gateway-metrics-url",
        action="append",
        default=[],
        help="a gateway's base URL; with metrics.source Direct, its /metrics page's"
        " llmfleet_gateway_pending_requests wakes a model scaled to zero and its"
        " llmfleet_gateway_pending_prefill_tokens feeds pendingPrefillTokensPerReplica"
        " (repeatable)",
    )
    parser.add_argument(
        "--gateway-selector",
        metavar="NAMESPACE/SELECTOR",
        help="read every ready gateway pod that SELECTOR picks in NAMESPACE instead (the"
        " chart's default): each gateway replica holds its own requests",
    )
    parser.add_argument("--gateway-port", type=int, default=8080, help="the gateway pods' port")
    parser.add_argument(
        "--gpu-hour-price",
        type=float,
        help="what a GPU-hour costs where an LLMDeployment's spec.placement.gpuHourPrice is"
        " unset (exported for llmfleet usage)",
    )
    parser.add_argument(
        "--preemption-taint",
        action="append",
        dest="preemption_taints",
        metavar="KEY",
        help="a taint key that says a node is about to be preempted: the spot replicas on it"
        f" are drained at once (repeatable; default: {', '.join(PREEMPTION_TAINTS)})",
    )
    parser.add_argument(
        "--watch-nodes",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="watch nodes, to act on a preemption notice as it comes (needs list and watch on"
        " nodes; without, the next reconcile that lists them acts, within 30 s)",
    )
    parser.add_argument("--log-level", default="INFO")
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # kopf logs every handler call; our reconcile logs what changed.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    dynamic = connect(args.kubeconfig)
    metrics = Metrics()
    metrics.gpu_seconds.default_price = args.gpu_hour_price
    kube = DynamicKube(dynamic, requests=metrics.api_requests)
    autoscaler = Autoscaler(DirectScrape(gateway_urls=_gateways(args, kube)))
    metrics.show_signals(autoscaler.live)
    runtime = Runtime(
        kube=kube,
        credentials=lambda: credentials(dynamic.client.configuration),
        metrics=metrics,
        autoscaler=autoscaler,
        workers=args.workers,
        resync_seconds=args.resync_seconds,
        notices=tuple(args.preemption_taints or PREEMPTION_TAINTS),
        forget_nodes=kube.forget_nodes,
    )
    if args.metrics_port:
        start_http_server(
            args.metrics_port, args.metrics_address, registry=runtime.metrics.registry
        )
    elector = None
    if args.leader_election:
        elector = LeaseElector(kube, args.lease_namespace, args.lease_name, args.identity)
    asyncio.run(_run(args, runtime, elector))
    return 0


def _gateways(
    args: argparse.Namespace, kube: DynamicKube
) -> Sequence[str] | Callable[[float], Sequence[str]]:
    """The gateways the autoscaler reads: the selected pods, or the URLs given."""
    if not args.gateway_selector:
        urls: list[str] = args.gateway_metrics_url
        return urls
    if args.gateway_metrics_url:
        raise SystemExit("--gateway-selector and --gateway-metrics-url exclude each other")
    namespace, _, selector = args.gateway_selector.partition("/")
    if not namespace or not selector:
        raise SystemExit("--gateway-selector: expected NAMESPACE/SELECTOR")
    return GatewayPods(kube, namespace, selector, args.gateway_port)


async def _run(args: argparse.Namespace, runtime: Runtime, elector: LeaseElector | None) -> None:
    health = await _serve_health(args.health_port) if args.health_port else None
    keeper = None
    try:
        if elector is not None:
            await elector.acquire()
            keeper = asyncio.create_task(elector.keep(lambda: os.kill(os.getpid(), signal.SIGTERM)))
        await kopf.operator(
            registry=make_registry(args.watch_nodes),
            memo=kopf.Memo(runtime=runtime),
            standalone=True,  # no kopf peering: the Lease decides who acts
            # Else kopf asks getpass for a user name, which an image's numeric user has not.
            identity=args.identity,
            clusterwide=not args.namespaces,
            namespaces=args.namespaces or (),
        )
    finally:
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            if elector is not None:
                await asyncio.to_thread(elector.release)
        if health is not None:
            await health.cleanup()


async def _serve_health(port: int) -> web.AppRunner:
    """``/healthz`` on ``port``, answered by this event loop from the start: a standby that
    waits for the Lease is as alive as the leader (kopf's own endpoint starts only with
    kopf, after the Lease, so a standby's liveness probe would fail and restart it)."""

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    return runner
