"""Where the models, their replicas and the tenants are, read from the cluster.

Who uses it: :mod:`.server` runs :func:`watch_cluster` beside the server when no ``--model`` is
given. It lists and then watches LLMDeployments and the pods they own (label
``llmfleet.io/deployment``), and, unless told not to, LLMTenants and the Secrets of their
keys (label ``llmfleet.io/api-keys: "true"``: the gateway reads no other Secret), with
kubernetes-asyncio. After every change it gives the server a new tenant directory
(:func:`.tenants.build`: a removed key stops working at once) and gives the pool
the models (:func:`models_of`: each served name and LoRA adapter of each valid LLMDeployment)
and their serving pods (:func:`serving_replicas`: the shared contract's predicate, so a pod that
starts terminating leaves the pool at once and its requests in flight finish). Pods, not
EndpointSlices: a LeaderWorkerSet group serves from its leader only, and the local control
plane refuses loopback pod IPs in EndpointSlices. A watch that breaks lists again; nothing
here stops the server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pydantic

from llmfleet_contract.api import GROUP, PLURAL, VERSION, LLMDeployment, tenant
from llmfleet_contract.labels import API_KEYS, OWNER
from llmfleet_contract.pods import serving_url
from llmfleet_gateway import tenants
from llmfleet_gateway.pool import Model, Pool

log = logging.getLogger("llmfleet.gateway.discovery")
WATCH_SECONDS = 300
"""A watch asks the API server to end it after this; it resumes from its last version."""
WATCH_TIMEOUT = 330
"""No byte for this long (a half-open connection): the watch is dropped and listed again."""
Manifest = Mapping[str, Any]
Key = tuple[str, str]


_SEEN: dict[tuple[str, str], list[Model]] = {}


@dataclass(frozen=True)
class Cluster:
    """Where to watch LLMDeployments, their pods and the tenants."""

    namespaces: tuple[str, ...] = ()
    """Where to watch LLMDeployments and their pods; empty: every namespace."""
    kubeconfig: str | None = None
    """A kubeconfig file; None: in-cluster configuration, else the default kubeconfig."""
    tenants: bool = True
    """Watch LLMTenants and their Secrets, and ask every request for a tenant's key."""
    tenant_namespaces: tuple[str, ...] = ()
    """Where to read LLMTenants and their keys' Secrets (a Role in each grants it); empty:
    ``namespaces``."""
    region: str | None = None
    """This gateway's region: an LLMDeployment whose ``spec.serving.region`` names another
    is that region's to serve, not this gateway's."""


def models_of(body: Manifest) -> list[Model]:
    """The names an LLMDeployment serves, or none when its spec is not valid (the operator
    says why on its status). Remembered by (uid, resourceVersion): a pod event does not
    validate every LLMDeployment again."""
    meta = body.get("metadata") or {}
    version = (str(meta.get("uid", "")), str(meta.get("resourceVersion", "")))
    if all(version) and version in _SEEN:
        return _SEEN[version]
    found = _models_of(body)
    if all(version):
        if len(_SEEN) > 10_000:
            _SEEN.clear()
        _SEEN[version] = found
    return found


def _models_of(body: Manifest) -> list[Model]:
    meta = body.get("metadata") or {}
    try:
        obj = LLMDeployment.model_validate(
            {"metadata": {"name": meta.get("name"), "namespace": meta.get("namespace")}}
            | {"spec": body.get("spec") or {}}
        )
    except pydantic.ValidationError as error:
        log.warning(
            "LLMDeployment %s/%s is not valid, so it serves nothing: %d problem(s)",
            meta.get("namespace"),
            meta.get("name"),
            error.error_count(),
        )
        return []
    names = [*obj.served_names, *(a.name for a in obj.spec.model.lora_adapters or ())]
    namespace = obj.metadata.namespace or ""
    slots = obj.spec.engine.max_num_seqs
    serving = obj.spec.serving
    admits = None if serving.tenants is None else frozenset(serving.tenants)
    startup = ((body.get("status") or {}).get("signals") or {}).get("learnedStartupSeconds")
    return [
        Model(
            name,
            obj.metadata.name,
            namespace,
            slots,
            admits,
            serving.ttft_objective_seconds,
            serving.region,
            float(startup) if isinstance(startup, int | float) else None,
        )
        for name in names
    ]


def served_models(deployments: Iterable[Manifest], region: str | None = None) -> list[Model]:
    """Every model of ``deployments`` this region serves (those of another
    ``spec.serving.region`` left out); a name two LLMDeployments serve stays with the older
    one (a newer LLMDeployment never takes a served name, and its requests, over), and the
    other is logged."""
    chosen: dict[str, Model] = {}
    ordered = sorted(
        deployments,
        key=lambda d: (
            str(d["metadata"].get("creationTimestamp", "")),
            str(d["metadata"].get("uid", "")),
        ),
    )
    for body in ordered:
        for model in models_of(body):
            if region is not None and model.region not in (None, region):
                continue
            first = chosen.setdefault(model.name, model)
            if first is not model:
                log.warning(
                    "Model %s is served by LLMDeployments %s/%s and %s/%s; routing to the older",
                    model.name,
                    *first.key,
                    *model.key,
                )
    return list(chosen.values())


def serving_replicas(pods: Iterable[Manifest]) -> dict[Key, list[tuple[str, str]]]:
    """Each LLMDeployment's ready serving pods, as (pod name, URL)."""
    found: dict[Key, list[tuple[str, str]]] = {}
    for pod in pods:
        meta = pod.get("metadata") or {}
        owner = (meta.get("labels") or {}).get(OWNER)
        url = serving_url(pod)
        if owner and url:
            found.setdefault((meta.get("namespace", ""), owner), []).append((meta["name"], url))
    return found


def update(
    pool: Pool,
    deployments: Iterable[Manifest],
    pods: Iterable[Manifest],
    region: str | None = None,
) -> None:
    """Make the pool what the cluster says (only what changed wakes waiting requests)."""
    pool.set_models(served_models(deployments, region))
    replicas = serving_replicas(pods)
    for key in list(pool.groups):
        pool.set_replicas(key, sorted(replicas.get(key, ())))


class _WatchError(Exception):
    """An ERROR event in a watch; ``status`` 410: the version expired, list again."""

    def __init__(self, status: object, message: object) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class _Objects:
    """One kind's objects as last listed and watched, by (namespace, name)."""

    def __init__(self) -> None:
        self.items: dict[Key, Manifest] = {}
        self.listed = False

    def apply(self, kind: str, body: Manifest) -> None:
        meta = body["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        if kind == "DELETED":
            self.items.pop(key, None)
        else:
            self.items[key] = body


async def watch_cluster(
    pool: Pool,
    cluster: Cluster,
    on_tenants: Callable[[tenants.Directory], None],
    retry_s: float = 2.0,
) -> None:
    """Keep ``pool`` (and, with ``cluster.tenants``, the tenant directory given to
    ``on_tenants``) in line with the cluster until cancelled."""
    from kubernetes_asyncio import client, config, watch  # the cluster mode's dependency

    try:
        config.load_incluster_config()
    except config.ConfigException:
        await config.load_kube_config(config_file=cluster.kubeconfig)
    deployments: list[_Objects] = []
    pods: list[_Objects] = []
    tenants_found: list[_Objects] = []
    secrets: list[_Objects] = []
    changed = asyncio.Event()
    async with client.ApiClient() as api:
        custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
        watched: list[tuple[_Objects, Any, tuple[str, ...], dict[str, str]]] = []

        def follow_in(
            places: tuple[str, ...],
            plural: str,
            found: list[_Objects],
            core_found: list[_Objects],
            core_lists: tuple[Any, Any],
            selector: str,
        ) -> None:
            """Watch llmfleet.io ``plural`` into ``found`` and the core objects ``selector``
            picks (``core_lists``: the cluster-wide and the namespaced list call) into
            ``core_found``, in each of ``places``; empty: cluster-wide."""
            everywhere, namespaced = core_lists
            labels = {"label_selector": selector}
            for place in places or (None,):
                found.append(_Objects())
                core_found.append(_Objects())
                if place is None:
                    where: tuple[str, ...] = (GROUP, VERSION, plural)
                    watched.append((found[-1], custom.list_cluster_custom_object, where, {}))
                    watched.append((core_found[-1], everywhere, (), labels))
                else:
                    where = (GROUP, VERSION, place, plural)
                    watched.append((found[-1], custom.list_namespaced_custom_object, where, {}))
                    watched.append((core_found[-1], namespaced, (place,), labels))

        pod_lists = (core.list_pod_for_all_namespaces, core.list_namespaced_pod)
        follow_in(cluster.namespaces, PLURAL, deployments, pods, pod_lists, OWNER)
        if cluster.tenants:
            places = cluster.tenant_namespaces or cluster.namespaces
            secret_lists = (core.list_secret_for_all_namespaces, core.list_namespaced_secret)
            follow_in(
                places, tenant.PLURAL, tenants_found, secrets, secret_lists, f"{API_KEYS}=true"
            )

        async def follow(objects: _Objects, lister: Any, args: tuple[Any, ...], kw: Any) -> None:
            version: str | None = None  # None: list (again) before watching
            while True:
                try:
                    if version is None:
                        listed = await lister(*args, _request_timeout=WATCH_TIMEOUT, **kw)
                        if not isinstance(listed, dict):
                            listed = api.sanitize_for_serialization(listed)
                        objects.items.clear()
                        for item in listed.get("items") or []:
                            objects.apply("ADDED", item)
                        objects.listed = True
                        changed.set()
                        version = listed["metadata"]["resourceVersion"]
                    async with watch.Watch() as stream:
                        async for event in stream.stream(
                            lister,
                            *args,
                            resource_version=version,
                            timeout_seconds=WATCH_SECONDS,
                            allow_watch_bookmarks=True,
                            _request_timeout=WATCH_TIMEOUT,
                            **kw,
                        ):
                            body = event.get("raw_object") or event["object"]
                            if not isinstance(body, dict):
                                body = api.sanitize_for_serialization(body)
                            if event["type"] == "ERROR":  # a Status: 410 when too old
                                raise _WatchError(body.get("code"), body.get("message"))
                            if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                                objects.apply(event["type"], body)
                                changed.set()
                            version = (body.get("metadata") or {}).get("resourceVersion", version)
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    expired = getattr(error, "status", None) == 410
                    version = None  # list again: at once when the version expired (routine)
                    if not expired:
                        log.warning("Watching the cluster failed, listing again: %s", error)
                        await asyncio.sleep(retry_s)

        tasks = [asyncio.create_task(follow(*entry)) for entry in watched]
        try:
            while True:
                await changed.wait()
                changed.clear()
                if not all(objects.listed for objects, *_ in watched):
                    continue
                if cluster.tenants:
                    on_tenants(tenants.build(_items(tenants_found), _items(secrets)))
                update(pool, _items(deployments), _items(pods), cluster.region)
                pool.synced = True
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def _items(lists: list[_Objects]) -> list[Manifest]:
    return [item for objects in lists for item in objects.items.values()]
