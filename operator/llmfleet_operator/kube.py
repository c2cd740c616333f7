"""The only module that talks to the Kubernetes API (the rest of the operator is pure).

``Kube`` is the seam the reconcile depends on; ``DynamicKube`` implements it with the
official client's dynamic client: server-side apply with one field manager, reads that
return plain dicts, status patches through the status subresource, and Events.
Calls are synchronous; the operator runs them in worker threads. A write the API server
refuses (4xx) raises ``KubeError`` with the server's message; other failures propagate.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import DynamicApiError, NotFoundError, ResourceNotFoundError

from llmfleet_operator import labels
from llmfleet_operator.api import API_VERSION, KIND
from llmfleet_operator.children import ChildKind

Manifest = dict[str, Any]
Manifests = list[Manifest]
"""For annotations inside ``DynamicKube``, where ``list`` names its method."""
log = logging.getLogger("llmfleet.kube")

__all__ = [
    "ApiException",
    "Credentials",
    "DynamicKube",
    "Kube",
    "KubeError",
    "connect",
    "credentials",
]


class KubeError(Exception):
    """The API server refused a write; ``message`` is its own words (never a secret)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


class Kube(Protocol):
    """What the reconcile needs from the API server."""

    def get(self, kind: ChildKind, namespace: str, name: str) -> Manifest | None: ...

    def list(self, kind: ChildKind, namespace: str | None, selector: str) -> list[Manifest]: ...

    def apply(self, kind: ChildKind, manifest: Manifest) -> Manifest: ...

    def delete(self, kind: ChildKind, namespace: str, name: str) -> None: ...

    def patch_status(self, namespace: str, name: str, status: Manifest) -> None: ...

    def annotate(
        self, kind: ChildKind, namespace: str, name: str, annotations: dict[str, str]
    ) -> None: ...

    def event(self, obj: Manifest, kind: str, reason: str, message: str) -> None: ...

    def served(self, kind: ChildKind) -> bool: ...


LLMDEPLOYMENT = ChildKind(API_VERSION, KIND, "llmdeployments")
POD = ChildKind("v1", "Pod", "pods")
NODE = ChildKind("v1", "Node", "nodes")


@dataclass(frozen=True)
class Credentials:
    """How this process reaches the API server (for kopf's own watch connections)."""

    server: str
    ca_path: str | None
    insecure: bool
    token: str | None
    certificate_path: str | None
    private_key_path: str | None


def credentials(dynamic: DynamicClient) -> Credentials:
    configuration = dynamic.client.configuration
    keys = configuration.api_key or {}
    bearer = keys.get("authorization") or keys.get("BearerToken")
    return Credentials(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        token=bearer.removeprefix("Bearer ").strip() if bearer else None,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )


def _message(err: DynamicApiError) -> str:
    try:
        return str(json.loads(err.body or "")["message"])
    except (TypeError, ValueError, KeyError):
        return str(err.reason)


def connect(kubeconfig: str | None = None) -> DynamicClient:
    """In-cluster config when running in a pod, else the kubeconfig."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config(config_file=kubeconfig)
    return DynamicClient(client.ApiClient())


NODE_CACHE_SECONDS = 30.0
"""Node lists are reused this long: capacity changes slowly, and every control period of
every autoscaled object would otherwise list the whole cluster's nodes."""


class DynamicKube:
    """``Kube`` over the dynamic client. Safe to share between worker threads."""

    def __init__(self, dynamic: DynamicClient, clock: Callable[[], float] = time.monotonic) -> None:
        self._dynamic = dynamic
        self._core = client.CoreV1Api(dynamic.client)
        self._clock = clock
        self._nodes: dict[str, tuple[float, list[Manifest]]] = {}
        self._nodes_lock = threading.Lock()

    def _resource(self, kind: ChildKind) -> Any:
        return self._dynamic.resources.get(api_version=kind.api_version, kind=kind.kind)

    def served(self, kind: ChildKind) -> bool:
        try:
            self._resource(kind)
        except ResourceNotFoundError:
            self._dynamic.resources.invalidate_cache()
            try:
                self._resource(kind)
            except ResourceNotFoundError:
                return False
        return True

    def get(self, kind: ChildKind, namespace: str, name: str) -> Manifest | None:
        try:
            found: Manifest = self._resource(kind).get(name=name, namespace=namespace).to_dict()
        except NotFoundError:
            return None
        return found

    def list(self, kind: ChildKind, namespace: str | None, selector: str) -> list[Manifest]:
        if kind == NODE:
            return self._list_nodes(selector)
        result = self._resource(kind).get(namespace=namespace, label_selector=selector)
        return [item.to_dict() for item in result.items]

    def _list_nodes(self, selector: str) -> Manifests:
        now = self._clock()
        with self._nodes_lock:
            cached = self._nodes.get(selector)
        if cached is not None and now - cached[0] < NODE_CACHE_SECONDS:
            return cached[1].copy()
        result = self._resource(NODE).get(namespace=None, label_selector=selector)
        nodes = [item.to_dict() for item in result.items]
        with self._nodes_lock:
            self._nodes[selector] = (now, nodes)
        return nodes.copy()

    def apply(self, kind: ChildKind, manifest: Manifest) -> Manifest:
        try:
            applied: Manifest = (
                self._resource(kind)
                .server_side_apply(
                    body=manifest,
                    name=manifest["metadata"]["name"],
                    namespace=manifest["metadata"].get("namespace"),
                    field_manager=labels.FIELD_MANAGER,
                    force_conflicts=True,
                )
                .to_dict()
            )
        except DynamicApiError as err:
            if err.status is not None and 400 <= err.status < 500:
                raise KubeError(err.status, _message(err)) from err
            raise
        return applied

    def delete(self, kind: ChildKind, namespace: str, name: str) -> None:
        with contextlib.suppress(NotFoundError):
            self._resource(kind).delete(
                name=name, namespace=namespace, body={"propagationPolicy": "Foreground"}
            )

    def patch_status(self, namespace: str, name: str, status: Manifest) -> None:
        self._resource(LLMDEPLOYMENT).status.patch(
            body={"status": status},
            name=name,
            namespace=namespace,
            content_type="application/merge-patch+json",
        )

    def annotate(
        self, kind: ChildKind, namespace: str, name: str, annotations: dict[str, str]
    ) -> None:
        try:
            self._resource(kind).patch(
                body={"metadata": {"annotations": annotations}},
                name=name,
                namespace=namespace,
                content_type="application/merge-patch+json",
            )
        except DynamicApiError as err:
            if err.status is not None and 400 <= err.status < 500:
                raise KubeError(err.status, _message(err)) from err
            raise

    def event(self, obj: Manifest, kind: str, reason: str, message: str) -> None:
        meta = obj["metadata"]
        now = datetime.now(UTC)
        body = client.CoreV1Event(
            metadata=client.V1ObjectMeta(
                generate_name=f"{meta['name']}.", namespace=meta["namespace"]
            ),
            involved_object=client.V1ObjectReference(
                api_version=API_VERSION,
                kind=KIND,
                name=meta["name"],
                namespace=meta["namespace"],
                uid=meta.get("uid"),
                resource_version=meta.get("resourceVersion"),
            ),
            type=kind,
            reason=reason,
            message=message[:1024],
            first_timestamp=now,
            last_timestamp=now,
            count=1,
            source=client.V1EventSource(component=labels.FIELD_MANAGER),
            reporting_component=labels.FIELD_MANAGER,
            reporting_instance=labels.FIELD_MANAGER,
        )
        try:
            self._core.create_namespaced_event(meta["namespace"], body)
        except ApiException as err:  # an Event is best effort; never fail a reconcile on it
            log.warning("Could not post Event %s on %s: %s", reason, meta["name"], err.reason)
