"""The kopf wiring: watches feed the work queue and the cache; the queue runs the reconcile.

Called by :mod:`operator_main` (``llmfleet operator``). Only ``on.event`` and ``index``
handlers are used, so kopf keeps no state on the user's objects: no finalizer, no
last-handled-configuration annotation. Every watch event of an LLMDeployment, or of a
child or pod labelled with its name, enqueues that LLMDeployment; a periodic resync
enqueues every one whose watched objects changed since its last reconcile, and each one
every FULL_RESYNC_SECONDS. A reconcile of an autoscaled object asks to run again when its
next control period is due.

The same watches fill kopf indices of those objects, which kopf completes from its initial
listings before it runs any other handler: each reconcile reads its LLMDeployment, children
and pods from them (:mod:`.cache`), so one that finds nothing to do makes no API call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import kopf
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from llmfleet_contract.api import GROUP, PLURAL, VERSION
from llmfleet_contract.labels import OWNER
from llmfleet_operator.autoscale import SignalReading
from llmfleet_operator.autoscaler import Autoscaler
from llmfleet_operator.cache import CachedKube, Index, Written, packed, snapshot
from llmfleet_operator.kube import Credentials, Kube, Manifest
from llmfleet_operator.placement import PREEMPTION_TAINTS, notice
from llmfleet_operator.reconcile import reconcile
from llmfleet_operator.resources import CHILD_KINDS, LLMDEPLOYMENT, NODE, POD, Resource
from llmfleet_operator.workqueue import WorkQueue

log = logging.getLogger("llmfleet.operator")

BY_NODE = "llmfleet-pods-by-node"
"""The kopf index of llmfleet's pods by the node they are bound to: (namespace, owner)."""


LiveSignals = Callable[[], Iterable[tuple[str, str, Mapping[str, SignalReading]]]]
"""Each autoscaled LLMDeployment's signals at its last period (:meth:`Autoscaler.live`)."""


class Metrics:
    """The operator's own metrics, in a registry of its own (no process-global state)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reconciles = Counter(
            "llmfleet_operator_reconcile",
            "Reconciles by result.",
            ["result"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "llmfleet_operator_reconcile_duration_seconds",
            "Time per reconcile.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.queued = Gauge(
            "llmfleet_operator_queue_depth",
            "LLMDeployments waiting for a reconcile.",
            registry=self.registry,
        )
        self.known = Gauge(
            "llmfleet_operator_llmdeployments", "LLMDeployments watched.", registry=self.registry
        )
        self.api_requests = Counter(
            "llmfleet_operator_api_requests",
            "Requests to the API server by verb and resource, kopf's watches and discovery"
            " aside (a reconcile reads its watches: a quiet world costs none).",
            ["verb", "resource"],
            registry=self.registry,
        )
        self.statuses = Statuses()
        self.registry.register(self.statuses)
        self.gpu_seconds = GpuSeconds()
        self.registry.register(self.gpu_seconds)

    def show_signals(self, live: LiveSignals) -> None:
        """Export the autoscaler's live signals (:class:`Signals`)."""
        self.registry.register(Signals(live))


FULL_RESYNC_SECONDS = 600.0
"""How often the resync reconciles an LLMDeployment whose watched objects did not change."""

REPLICA_FIELDS = {"desired": "desiredReplicas", "current": "replicas", "ready": "readyReplicas"}


class Statuses(Collector):
    """Each watched LLMDeployment's conditions and replica counts, as its last watch event
    showed them: what alerts and dashboards read (ScalingLimited, MetricsAvailable, desired
    against ready) without listing objects. Built at scrape time, so a deleted object's or
    a changed reason's series goes with it."""

    def __init__(self) -> None:
        self.status: dict[tuple[str, str], Mapping[str, Any]] = {}

    def collect(self) -> Iterator[Metric]:
        conditions = GaugeMetricFamily(
            "llmfleet_operator_llmdeployment_condition",
            "An LLMDeployment's condition: 1 when True, 0 when False or Unknown.",
            labels=["namespace", "llmdeployment", "type", "status", "reason"],
        )
        replicas = GaugeMetricFamily(
            "llmfleet_operator_llmdeployment_replicas",
            "An LLMDeployment's serving groups: desired, current (existing) and ready.",
            labels=["namespace", "llmdeployment", "state"],
        )
        for (namespace, name), status in sorted(self.status.items()):
            for condition in status.get("conditions") or ():
                value = 1.0 if condition.get("status") == "True" else 0.0
                labels = [condition.get(k) or "" for k in ("type", "status", "reason")]
                conditions.add_metric([namespace, name, *labels], value)
            for state, key in REPLICA_FIELDS.items():
                replicas.add_metric([namespace, name, state], float(status.get(key) or 0))
        yield conditions
        yield replicas


class GpuSeconds(Collector):
    """Each LLMDeployment's GPU-seconds so far: its serving groups (``status.replicas``: every
    group that exists, started or not, holds its GPUs) times a group's GPUs (tensor x
    pipeline parallel), integrated between its watch events; and of those, the ones its
    ready spot replicas held (``status.spotReplicas``). What ``llmfleet usage`` splits
    between tenants. Counted from this process's start: Prometheus' ``increase`` reads
    across a restart or a change of leader."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._held: dict[tuple[str, str], tuple[float, tuple[float, float], tuple[float, float]]]
        self._held = {}
        """(since, GPUs held since then, GPU-seconds before then) by LLMDeployment; each of
        the last two as (all, on spot)."""
        self._prices: dict[tuple[str, str], tuple[float | None, float | None]] = {}
        """(a GPU-hour's price, on spot) by LLMDeployment."""
        self.default_price: float | None = None
        """A GPU-hour's price where ``spec.placement.gpuHourPrice`` is unset (None: none)."""

    def observe(self, key: tuple[str, str], body: Mapping[str, Any] | None) -> None:
        """The object as a watch event shows it (None: deleted)."""
        now = self._clock()
        since, gpus, total = self._held.get(key, (now, (0.0, 0.0), (0.0, 0.0)))
        if body is None:
            self._held.pop(key, None)
            self._prices.pop(key, None)
            return
        spec, status = body.get("spec") or {}, body.get("status") or {}
        placement = spec.get("placement") or {}
        given = placement.get("gpuHourPrice")
        price = float(given) if given is not None else self.default_price
        spot_given = (placement.get("spot") or {}).get("gpuHourPrice")
        self._prices[key] = (price, None if spot_given is None else float(spot_given))
        parallelism = spec.get("parallelism") or {}
        group = parallelism.get("tensorParallelSize", 1) * parallelism.get(
            "pipelineParallelSize", 1
        )
        replicas = float(status.get("replicas") or 0)
        spot = min(replicas, float(status.get("spotReplicas") or 0))
        spent = (total[0] + (now - since) * gpus[0], total[1] + (now - since) * gpus[1])
        self._held[key] = (now, (replicas * group, spot * group), spent)

    def collect(self) -> Iterator[Metric]:
        now = self._clock()
        held = [
            (
                "llmfleet_operator_gpu_seconds",
                "GPU-seconds each LLMDeployment's serving groups held.",
            ),
            (
                "llmfleet_operator_spot_gpu_seconds",
                "Of those, the GPU-seconds its ready replicas on spot nodes held.",
            ),
        ]
        for index, (name, text) in enumerate(held):
            found = CounterMetricFamily(name, text, labels=["namespace", "llmdeployment"])
            for (namespace, deployment), (since, gpus, total) in sorted(self._held.items()):
                found.add_metric(
                    [namespace, deployment], total[index] + (now - since) * gpus[index]
                )
            yield found
        prices = [
            (
                "llmfleet_operator_gpu_hour_price",
                "What a GPU-hour of each LLMDeployment costs (spec.placement.gpuHourPrice, else"
                " the operator's --gpu-hour-price).",
            ),
            (
                "llmfleet_operator_spot_gpu_hour_price",
                "What a GPU-hour of each LLMDeployment costs on spot nodes"
                " (spec.placement.spot.gpuHourPrice).",
            ),
        ]
        for index, (name, text) in enumerate(prices):
            gauge = GaugeMetricFamily(name, text, labels=["namespace", "llmdeployment"])
            for (namespace, deployment), found_prices in sorted(self._prices.items()):
                if (value := found_prices[index]) is not None:
                    gauge.add_metric([namespace, deployment], value)
            yield gauge


class Signals(Collector):
    """Each autoscaled LLMDeployment's signals as its last control period read them: the
    status shows them only when one moves by its step (each change is a write), these at
    every scrape."""

    def __init__(self, live: LiveSignals) -> None:
        self.live = live

    def collect(self) -> Iterator[Metric]:
        labels = ["namespace", "llmdeployment", "signal"]
        value, target, replicas = (
            GaugeMetricFamily(name, text, labels=labels)
            for name, text in (
                ("llmfleet_operator_signal", "A signal at the last period, per ready replica."),
                ("llmfleet_operator_signal_target", "The spec's per-replica target of a signal."),
                (
                    "llmfleet_operator_signal_replicas",
                    "Replicas a signal asks for: what it needs now plus headroom for its trend.",
                ),
            )
        )
        for namespace, name, readings in sorted(self.live(), key=lambda one: one[:2]):
            for signal, reading in sorted(readings.items()):
                value.add_metric([namespace, name, signal], reading.per_replica)
                target.add_metric([namespace, name, signal], reading.target)
                replicas.add_metric([namespace, name, signal], reading.projected)
        yield from (value, target, replicas)


@dataclass
class Runtime:
    """What the handlers share, kept in kopf's memo."""

    kube: Kube
    credentials: Callable[[], Credentials]
    """The client's credentials, read again at each kopf login (a rotated token)."""
    metrics: Metrics
    autoscaler: Autoscaler | None = None
    workers: int = 4
    resync_seconds: float = 60.0
    known: dict[tuple[str, str], int | None] = field(default_factory=dict)
    """Every LLMDeployment watched, with the ``metadata.generation`` of its last event."""
    indices: dict[Resource, Index] = field(default_factory=dict)
    """kopf's indices of the watched objects, by kind (set at startup)."""
    written: Written = field(default_factory=Written)
    reconciled: dict[tuple[str, str], tuple[frozenset[Any], float]] = field(default_factory=dict)
    """When each LLMDeployment was last reconciled, and the versions of its objects then."""
    notices: tuple[str, ...] = PREEMPTION_TAINTS
    """Taint keys that say a node is about to be preempted."""
    noticed: set[str] = field(default_factory=set)
    """The nodes seen with such a taint (each acted on once)."""
    forget_nodes: Callable[[], None] = lambda: None
    """Drops the client's cached node list (a node got a notice)."""
    queue: WorkQueue | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    executor: ThreadPoolExecutor | None = None

    async def reconcile_key(self, key: Hashable) -> float | None:
        namespace, name = key if isinstance(key, tuple) else ("", str(key))
        started = time.perf_counter()
        found = snapshot(self.indices, self.written, namespace, name)
        kube = CachedKube(self.kube, found, self.written)
        try:
            requeue = await asyncio.get_running_loop().run_in_executor(
                self.executor,
                reconcile,
                kube,
                namespace,
                name,
                None,
                self.autoscaler,
                self.notices,
            )
        except Exception:
            self.metrics.reconciles.labels(result="error").inc()
            raise
        else:
            self.metrics.reconciles.labels(result="success").inc()
            self.reconciled[(namespace, name)] = (found.versions(), time.monotonic())
        finally:
            self.metrics.duration.observe(time.perf_counter() - started)
            self.metrics.queued.set(len(self.queue or ()))
        return requeue

    def node_changed(self, name: str, node: Manifest, owners: Iterable[tuple[str, str]]) -> None:
        """A node's first event with a preemption notice: reconcile the LLMDeployments with
        pods on it, from a fresh list of nodes (their spot pods there are drained)."""
        if notice(node, self.notices) is None:
            self.noticed.discard(name)
            return
        if name in self.noticed:
            return
        self.noticed.add(name)
        self.forget_nodes()
        for namespace, owner in set(owners):
            self.enqueue(namespace, owner)

    def enqueue(self, namespace: str | None, name: str | None) -> None:
        if self.queue is not None and namespace and name:
            self.queue.add((namespace, name))
            self.metrics.queued.set(len(self.queue))

    async def resync(self) -> None:
        """Every ``resync_seconds``, enqueue each LLMDeployment whose objects changed since
        its last reconcile (an event missed), or that was last reconciled FULL_RESYNC_SECONDS
        ago (what no watched object shows: nodes' capacity). A reconcile reads the watches,
        so one of an unchanged world would only compute again what it computed before."""
        while True:
            await asyncio.sleep(self.resync_seconds)
            for namespace, name in self.due(time.monotonic()):
                self.enqueue(namespace, name)

    def due(self, now: float) -> list[tuple[str, str]]:
        """The LLMDeployments a resync at ``now`` reconciles."""

        def changed(namespace: str, name: str) -> bool:
            last = self.reconciled.get((namespace, name))
            if last is None or now - last[1] >= FULL_RESYNC_SECONDS:
                return True
            return snapshot(self.indices, self.written, namespace, name).versions() != last[0]

        return [key for key in list(self.known) if changed(*key)]


def make_registry(watch_nodes: bool = True) -> kopf.OperatorRegistry:
    """A fresh registry with llmfleet's handlers (one per operator instance); with
    ``watch_nodes``, a node's preemption notice is acted on as it comes (else at the next
    reconcile that lists the nodes)."""
    registry = kopf.OperatorRegistry()

    watched = {
        LLMDEPLOYMENT: "llmfleet-index",
        **{kind: f"llmfleet-index-{kind.plural}" for kind in (*CHILD_KINDS, POD)},
    }

    @kopf.on.startup(registry=registry)
    async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **indices: Any) -> None:
        # kopf's own log lines are not Events on the user's objects; ours are.
        settings.posting.enabled = False
        settings.watching.server_timeout = 300
        runtime: Runtime = memo["runtime"]
        runtime.indices = {kind: indices[index] for kind, index in watched.items()}
        # Reconciles wait for a thread of their own, not for the loop's default executor,
        # which other blocking calls (the leader's Lease, kopf's) share.
        runtime.executor = ThreadPoolExecutor(runtime.workers, thread_name_prefix="reconcile")
        runtime.queue = WorkQueue(runtime.reconcile_key)
        runtime.tasks = [
            asyncio.create_task(runtime.queue.run(runtime.workers)),
            asyncio.create_task(runtime.resync()),
        ]

    @kopf.on.login(registry=registry)
    def login(memo: Any, **_: Any) -> kopf.ConnectionInfo:
        """kopf watches with the same credentials the operator's client uses."""
        found: Credentials = memo["runtime"].credentials()
        return kopf.ConnectionInfo(
            server=found.server,
            ca_path=found.ca_path,
            insecure=found.insecure,
            token=found.token,
            certificate_path=found.certificate_path,
            private_key_path=found.private_key_path,
        )

    @kopf.on.cleanup(registry=registry)
    async def stop(memo: kopf.Memo, **_: Any) -> None:
        runtime: Runtime = memo["runtime"]
        for task in runtime.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if runtime.autoscaler is not None:
            runtime.autoscaler.close()
        if runtime.executor is not None:
            runtime.executor.shutdown(wait=False, cancel_futures=True)

    # The handlers are coroutines: kopf runs a plain function in a thread, and the work
    # queue belongs to the event loop.
    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def llmdeployment_changed(
        type: str | None,
        namespace: str | None,
        name: str,
        body: kopf.Body,
        memo: Any,
        **_: Any,
    ) -> None:
        runtime: Runtime = memo["runtime"]
        if not namespace:
            return
        key = (namespace, name)
        if type == "DELETED":
            runtime.known.pop(key, None)
            runtime.reconciled.pop(key, None)
            runtime.metrics.gpu_seconds.observe(key, None)
            runtime.metrics.statuses.status.pop(key, None)
            if runtime.autoscaler is not None:
                runtime.autoscaler.forget(namespace, name)
        else:
            generation = body.get("metadata", {}).get("generation")
            changed = key not in runtime.known or runtime.known[key] != generation
            runtime.known[key] = generation
            runtime.metrics.statuses.status[key] = dict(body.get("status") or {})
            runtime.metrics.gpu_seconds.observe(key, body)
            # The operator's own status writes change no generation: reconciling on them
            # would double the API calls of every control period. The resync covers
            # label and annotation edits.
            if type != "MODIFIED" or changed:
                runtime.enqueue(namespace, name)
        runtime.metrics.known.set(len(runtime.known))

    def child_changed(kind: Resource) -> Callable[..., Any]:
        async def changed(
            type: str | None,
            namespace: str | None,
            name: str,
            labels: Mapping[str, str],
            memo: Any,
            **_: Any,
        ) -> None:
            runtime: Runtime = memo["runtime"]
            if type == "DELETED" and namespace:
                runtime.written.forget(kind, namespace, name)
            runtime.enqueue(namespace, labels.get(OWNER))

        return changed

    # Coroutines too: kopf would run a plain function in a thread, for every event.
    async def by_name(
        namespace: str | None, name: str, body: kopf.Body, **_: Any
    ) -> dict[Any, Any]:
        return {(namespace, name): packed(body)}

    async def by_owner(
        namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any
    ) -> dict[Any, Any]:
        return {(namespace, labels[OWNER]): packed(body)}

    if watch_nodes:

        async def by_node(
            namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any
        ) -> dict[Any, Any] | None:
            node = (body.get("spec") or {}).get("nodeName")
            return {node: (namespace, labels[OWNER])} if node else None

        kopf.index(
            "", "v1", POD.plural, labels={OWNER: kopf.PRESENT}, id=BY_NODE, registry=registry
        )(by_node)

        @kopf.on.event("", "v1", NODE.plural, registry=registry)
        async def node_changed(
            type: str | None, name: str, body: kopf.Body, memo: Any, **kwargs: Any
        ) -> None:
            runtime: Runtime = memo["runtime"]
            if type == "DELETED":
                runtime.noticed.discard(name)
            else:
                runtime.node_changed(name, dict(body), kwargs[BY_NODE].get(name, ()))

    group, _, version = LLMDEPLOYMENT.api_version.rpartition("/")
    kopf.index(group, version, LLMDEPLOYMENT.plural, id=watched[LLMDEPLOYMENT], registry=registry)(
        by_name
    )
    for kind in (*CHILD_KINDS, POD):
        group, _, version = kind.api_version.rpartition("/")
        owned = {OWNER: kopf.PRESENT}
        kopf.index(group, version, kind.plural, labels=owned, id=watched[kind], registry=registry)(
            by_owner if kind == POD else by_name
        )
        kopf.on.event(group, version, kind.plural, labels=owned, registry=registry)(
            child_changed(kind)
        )
    return registry
