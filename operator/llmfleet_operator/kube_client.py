"""The Kube seam over the official client: the only module that imports the Kubernetes client.

``DynamicKube`` implements :class:`~llmfleet_operator.kube.Kube` with the dynamic client:
server-side apply with one field manager, reads that return plain dicts, status patches
through the status subresource, merge patches, creates (for the leader's Lease) and Events.
Calls are synchronous; the operator runs them in worker threads. The client's exceptions
leave this module only as :class:`~llmfleet_operator.kube.KubeError` and its subclasses.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError, ResourceNotFoundError
from prometheus_client import Counter
from urllib3.exceptions import HTTPError

from llmfleet_contract import labels
from llmfleet_contract.api import API_VERSION, KIND, EventReason, EventType, Reason
from llmfleet_operator.kube import (
    ClientError,
    ConflictError,
    Credentials,
    ForbiddenError,
    KubeError,
    ServerError,
)
from llmfleet_operator.resources import EVENT, LLMDEPLOYMENT, NODE, Resource

Manifest = dict[str, Any]
Manifests = list[Manifest]
"""For annotations inside ``DynamicKube``, where ``list`` names its method."""
log = logging.getLogger("llmfleet.kube")


def _message(err: ApiException) -> str:
    try:
        return str(json.loads(err.body or "")["message"])
    except (TypeError, ValueError, KeyError):
        return str(err.reason)


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """The client's exceptions, as this module's."""
    try:
        yield
    except ApiException as err:
        status, message = err.status or None, _message(err)  # 0: no HTTP answer (e.g. TLS)
        if status == 403:
            raise ForbiddenError(status, message) from err
        if status == 409:
            raise ConflictError(status, message) from err
        if status is not None and 400 <= status < 500:
            raise ClientError(status, message) from err
        raise ServerError(status, message) from err
    except HTTPError as err:
        raise ServerError(None, f"the API server did not answer: {err}") from err
    except ResourceNotFoundError as err:  # discovery: the kind is not served
        raise ClientError(404, f"the API server does not serve it: {err}") from err


def credentials(configuration: client.Configuration) -> Credentials:
    """The client's credentials as they are now: an in-cluster service-account token is
    re-read from its file when the client's refresh period is over (the kubelet rotates
    projected tokens), so kopf's re-login after a 401 gets the current one."""
    refresh = getattr(configuration, "refresh_api_key_hook", None)  # typed as always None
    if refresh is not None:
        refresh(configuration)
    keys = configuration.api_key or {}
    bearer = keys.get("authorization") or keys.get("BearerToken")
    # "Bearer <token>" from a kubeconfig, "bearer <token>" from the in-cluster loader.
    scheme, _, token = (bearer or "").strip().partition(" ")
    return Credentials(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        token=(token.strip() if scheme.lower() == "bearer" else bearer) or None,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )


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
ABSENT_CACHE_SECONDS = 60.0
"""A kind the API server does not serve (LeaderWorkerSet not installed) is asked about again
after this long: each miss makes the client read all of discovery again, and every reconcile
asks."""


def _node_capacity(node: Manifest) -> Manifest:
    """What the reconcile reads of a node (its name, labels, taints and capacity): a copy
    of each cached node is handed to every reconcile, so the rest would cost on each."""
    meta, spec, status = (node.get(key) or {} for key in ("metadata", "spec", "status"))
    return {
        "metadata": {"name": meta.get("name"), "labels": meta.get("labels") or {}},
        "spec": {key: spec[key] for key in ("taints", "unschedulable") if key in spec},
        "status": {key: status[key] for key in ("allocatable", "capacity") if key in status},
    }


class DynamicKube:
    """``Kube`` over the dynamic client. Safe to share between worker threads."""

    def __init__(
        self,
        dynamic: DynamicClient,
        clock: Callable[[], float] = time.monotonic,
        requests: Counter | None = None,
    ) -> None:
        """``requests``: a counter labelled ``verb`` and ``resource`` that counts each
        request made (discovery aside)."""
        self._dynamic = dynamic
        self._requests = requests
        self._core = client.CoreV1Api(dynamic.client)
        self._clock = clock
        self._nodes: dict[str, tuple[float, list[Manifest]]] = {}
        self._nodes_lock = threading.Lock()
        self._absent: dict[Resource, float] = {}
        """When discovery last said a kind is not served."""

    @contextlib.contextmanager
    def _call(self, verb: str, kind: Resource) -> Iterator[None]:
        """One request to the API server: counted, and its errors translated."""
        if self._requests is not None:
            self._requests.labels(verb=verb, resource=kind.plural).inc()
        with _translated():
            yield

    def _resource(self, kind: Resource) -> Any:
        return self._dynamic.resources.get(api_version=kind.api_version, kind=kind.kind)

    def served(self, kind: Resource) -> bool:
        """Whether the API server serves ``kind``; a no is kept ABSENT_CACHE_SECONDS (the
        client refreshes its discovery on each miss by itself)."""
        missed = self._absent.get(kind)
        if missed is not None and 0 <= self._clock() - missed < ABSENT_CACHE_SECONDS:
            return False
        with _translated():
            try:
                self._resource(kind)
            except ResourceNotFoundError:
                self._absent[kind] = self._clock()
                return False
        self._absent.pop(kind, None)
        return True

    def get(self, kind: Resource, namespace: str, name: str) -> Manifest | None:
        """The object, or None. Read through the generated client's transport, not the
        dynamic client's ``get``, which formats a traceback for every 404: a child not
        created yet is asked about for every new LLMDeployment."""
        api = self._dynamic.client
        path = self._resource(kind).path(name=name, namespace=namespace)
        with self._call("GET", kind):
            response = api.call_api(
                *api.param_serialize(
                    "GET",
                    path,
                    header_params={"Accept": "application/json"},
                    auth_settings=["BearerToken"],
                )
            )
            data: bytes = response.read()
            if response.status == 404:
                return None
            if not 200 <= response.status <= 299:
                text = data.decode("utf-8", "replace")
                raise ApiException.from_response(http_resp=response, body=text, data=None)
        found: Manifest = json.loads(data)
        return found

    get_live = get

    def list(self, kind: Resource, namespace: str | None, selector: str) -> list[Manifest]:
        if kind == NODE:
            return self._list_nodes(selector)
        with self._call("LIST", kind):
            result = self._resource(kind).get(namespace=namespace, label_selector=selector)
        return [item.to_dict() for item in result.items]

    def forget_nodes(self) -> None:
        """The next listing of nodes asks the API server (a node just changed)."""
        with self._nodes_lock:
            self._nodes.clear()

    def _list_nodes(self, selector: str) -> Manifests:
        now = self._clock()
        with self._nodes_lock:
            cached = self._nodes.get(selector)
        if cached is not None and now - cached[0] < NODE_CACHE_SECONDS:
            return copy.deepcopy(cached[1])
        with self._call("LIST", NODE):
            result = self._resource(NODE).get(namespace=None, label_selector=selector)
        nodes = [_node_capacity(item.to_dict()) for item in result.items]
        with self._nodes_lock:
            self._nodes[selector] = (now, nodes)
        return copy.deepcopy(nodes)

    def apply(self, kind: Resource, manifest: Manifest) -> Manifest:
        with self._call("APPLY", kind):
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
        return applied

    def create(self, kind: Resource, manifest: Manifest) -> Manifest:
        """Create ``manifest``; :class:`ConflictError` when it exists."""
        with self._call("CREATE", kind):
            created: Manifest = (
                self._resource(kind)
                .create(body=manifest, namespace=manifest["metadata"].get("namespace"))
                .to_dict()
            )
        return created

    def delete(self, kind: Resource, namespace: str, name: str) -> None:
        with self._call("DELETE", kind), contextlib.suppress(NotFoundError):
            self._resource(kind).delete(
                name=name, namespace=namespace, body={"propagationPolicy": "Foreground"}
            )

    def patch_status(self, namespace: str, name: str, status: Manifest) -> Manifest:
        with self._call("PATCH", LLMDEPLOYMENT):
            patched: Manifest = (
                self._resource(LLMDEPLOYMENT)
                .status.patch(
                    body={"status": status},
                    name=name,
                    namespace=namespace,
                    content_type="application/merge-patch+json",
                )
                .to_dict()
            )
        return patched

    def patch(self, kind: Resource, namespace: str, name: str, body: Manifest) -> Manifest:
        """A JSON merge patch; with ``metadata.resourceVersion`` in ``body``, :class:`ConflictError`
        when the object changed since that version."""
        with self._call("PATCH", kind):
            patched: Manifest = (
                self._resource(kind)
                .patch(
                    body=body,
                    name=name,
                    namespace=namespace,
                    content_type="application/merge-patch+json",
                )
                .to_dict()
            )
        return patched

    def event(
        self, obj: Manifest, kind: EventType, reason: Reason | EventReason, message: str
    ) -> None:
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
            type=kind.value,
            reason=reason.value,
            message=message[:1024],
            first_timestamp=now,
            last_timestamp=now,
            count=1,
            source=client.V1EventSource(component=labels.FIELD_MANAGER),
            reporting_component=labels.FIELD_MANAGER,
            reporting_instance=labels.FIELD_MANAGER,
        )
        try:
            with self._call("CREATE", EVENT):
                self._core.create_namespaced_event(meta["namespace"], body)
        except KubeError as err:  # an Event is best effort; never fail a reconcile on it
            log.warning("Could not post Event %s on %s: %s", reason, meta["name"], err.message)
