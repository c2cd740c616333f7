"""Where the models and their replicas are, read from the cluster: LLMDeployments and pods.

Who uses it: :mod:`.cli` runs :func:`watch_cluster` beside the server when no ``--model`` is
given. It lists and then watches LLMDeployments and the pods they own (label
``llmfleet.io/deployment``), with kubernetes-asyncio, and after every change gives the pool
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
from collections.abc import Iterable, Mapping
from typing import Any

import pydantic

from llmfleet_contract.api import GROUP, PLURAL, VERSION, LLMDeployment
from llmfleet_contract.labels import OWNER
from llmfleet_contract.pods import serving_url
from llmfleet_gateway.pool import Model, Pool

log = logging.getLogger("llmfleet.gateway.discovery")
Manifest = Mapping[str, Any]
Key = tuple[str, str]


def models_of(body: Manifest) -> list[Model]:
    """The names an LLMDeployment serves, or none when its spec is not valid (the operator
    says why on its status)."""
    meta = body.get("metadata") or {}
    try:
        obj = LLMDeployment.model_validate(
            {"metadata": {"name": meta.get("name"), "namespace": meta.get("namespace")}}
            | {"spec": body.get("spec") or {}}
        )
    except pydantic.ValidationError:
        return []
    names = [*obj.served_names, *(a.name for a in obj.spec.model.lora_adapters or ())]
    namespace = obj.metadata.namespace or ""
    slots = obj.spec.engine.max_num_seqs
    return [Model(name, obj.metadata.name, namespace, max_num_seqs=slots) for name in names]


def served_models(deployments: Iterable[Manifest]) -> list[Model]:
    """Every model of ``deployments``; a name two LLMDeployments serve goes to the first by
    (namespace, name), and the other is logged."""
    chosen: dict[str, Model] = {}
    ordered = sorted(deployments, key=lambda d: (d["metadata"]["namespace"], d["metadata"]["name"]))
    for body in ordered:
        for model in models_of(body):
            first = chosen.setdefault(model.name, model)
            if first is not model:
                log.warning(
                    "Model %s is served by LLMDeployments %s/%s and %s/%s; routing to the first",
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


def update(pool: Pool, deployments: Iterable[Manifest], pods: Iterable[Manifest]) -> None:
    """Make the pool what the cluster says."""
    pool.set_models(served_models(deployments))
    replicas = serving_replicas(pods)
    for key in list(pool.groups):
        pool.set_replicas(key, sorted(replicas.get(key, ())))


class _Objects:
    """One kind's objects as last listed and watched, by (namespace, name)."""

    def __init__(self) -> None:
        self.items: dict[Key, Manifest] = {}

    def apply(self, kind: str, body: Manifest) -> None:
        meta = body["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        if kind == "DELETED":
            self.items.pop(key, None)
        else:
            self.items[key] = body


async def watch_cluster(
    pool: Pool, namespace: str | None, kubeconfig: str | None, retry_s: float = 2.0
) -> None:
    """Keep ``pool`` in line with the cluster until cancelled."""
    from kubernetes_asyncio import client, config, watch  # the cluster mode's dependency

    try:
        config.load_incluster_config()
    except config.ConfigException:
        await config.load_kube_config(config_file=kubeconfig)
    deployments, pods = _Objects(), _Objects()
    changed = asyncio.Event()
    async with client.ApiClient() as api:
        custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
        lists: tuple[tuple[Any, tuple[str, ...], dict[str, str]], ...]
        if namespace:
            lists = (
                (custom.list_namespaced_custom_object, (GROUP, VERSION, namespace, PLURAL), {}),
                (core.list_namespaced_pod, (namespace,), {"label_selector": OWNER}),
            )
        else:
            lists = (
                (custom.list_cluster_custom_object, (GROUP, VERSION, PLURAL), {}),
                (core.list_pod_for_all_namespaces, (), {"label_selector": OWNER}),
            )

        async def follow(objects: _Objects, lister: Any, args: tuple[Any, ...], kw: Any) -> None:
            while True:
                try:
                    listed = await lister(*args, **kw)
                    listed = (
                        listed
                        if isinstance(listed, dict)
                        else api.sanitize_for_serialization(listed)
                    )
                    objects.items.clear()
                    for item in listed.get("items") or []:
                        objects.apply("ADDED", item)
                    changed.set()
                    version = listed["metadata"]["resourceVersion"]
                    async with watch.Watch() as stream:
                        async for event in stream.stream(
                            lister, *args, resource_version=version, timeout_seconds=300, **kw
                        ):
                            body = event.get("raw_object") or event["object"]
                            if not isinstance(body, dict):
                                body = api.sanitize_for_serialization(body)
                            if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                                objects.apply(event["type"], body)
                                changed.set()
                except asyncio.CancelledError:
                    raise
                except Exception as error:  # a broken watch lists again; say why
                    log.warning("Watching the cluster failed, listing again: %s", error)
                    await asyncio.sleep(retry_s)

        tasks = [
            asyncio.create_task(follow(objects, lister, args, kw))
            for objects, (lister, args, kw) in zip((deployments, pods), lists, strict=True)
        ]
        try:
            while True:
                await changed.wait()
                changed.clear()
                update(pool, deployments.items.values(), pods.items.values())
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
