"""A reconcile's reads, from what the watches have shown: an unchanged world costs no API call.

Who uses it: :mod:`handlers` keeps kopf indices of the LLMDeployments, their children and
their pods (kopf runs index handlers on every object of its initial listings before any
other handler, so by the time a reconcile runs they hold everything listed). On the event
loop it takes a :class:`Snapshot` of one LLMDeployment's objects (:func:`snapshot`); the
reconcile then runs in a worker thread on a :class:`CachedKube` over that snapshot.

The snapshot answers for the LLMDeployment's own objects, absence included: the watches list
every object labelled as a child. What it cannot show, an object in a child's place that is
not labelled as ours, the reconcile asks the API server about (``get_live``) before it
creates that child, so it still refuses to take one over; anything that is not one of the
LLMDeployment's own objects is read from the API server too. Writes go to the API server,
and what each returns stands in for the watched object (:class:`Written`) until the watch
moves past the version the write replaced: a reconcile that follows a write before the
write's watch event has arrived sees the write, not the state before it, so it neither
writes again nor posts the same Event twice.
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from llmfleet_contract import labels
from llmfleet_contract.api import EventReason, EventType, Reason
from llmfleet_operator.children import child_keys
from llmfleet_operator.kube import Kube
from llmfleet_operator.resources import LLMDEPLOYMENT, POD, Resource

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Packed:
    """A watched body as a cache keeps it: its name and version, and the whole as compressed
    JSON (a tenth of the memory of the parsed body; each read parses a copy of its own)."""

    name: str
    version: str | None
    data: bytes

    def body(self) -> Manifest:
        found: Manifest = json.loads(zlib.decompress(self.data))
        return found


Index = Mapping[Hashable, Iterable[Packed]]
"""A kopf index as read here: ``(namespace, name)`` (pods: ``(namespace, owner)``) to the
bodies stored under it."""

WRITTEN_SECONDS = 30.0
"""How long a write stands in for a watch that has not caught up with it: past that, the
watch is read as it is (a watch that lags this much costs at most one repeated write)."""


def packed(body: Mapping[str, Any]) -> Packed:
    """What a cache keeps of a body: all of it but ``metadata.managedFields``, the largest
    part of an applied object and one no reconcile reads."""
    meta = body.get("metadata") or {}
    slim = {**body, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
    data = zlib.compress(json.dumps(slim, separators=(",", ":")).encode(), 1)
    return Packed(meta.get("name") or "", meta.get("resourceVersion"), data)


def _version(found: Packed | None) -> str | None:
    return None if found is None else found.version


@dataclass(frozen=True)
class _Write:
    replaced: str | None
    """The version the watch held when the write was made (None: it held nothing)."""
    body: Packed
    at: float


class Written:
    """What this operator's writes returned, by object. Shared by the worker threads."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, seconds: float = WRITTEN_SECONDS
    ) -> None:
        self._clock, self._seconds = clock, seconds
        self._writes: dict[tuple[Resource, str, str], _Write] = {}
        self._lock = threading.Lock()
        self._swept = clock()

    def __len__(self) -> int:
        return len(self._writes)

    def record(self, kind: Resource, replaced: str | None, body: Manifest) -> None:
        meta = body["metadata"]
        now = self._clock()
        write = _Write(replaced, packed(body), now)
        with self._lock:
            self._writes[(kind, meta.get("namespace") or "", meta["name"])] = write
            if now - self._swept > self._seconds:  # writes never read again (objects gone)
                self._swept = now
                self._writes = {
                    key: write
                    for key, write in self._writes.items()
                    if now - write.at <= self._seconds
                }

    def forget(self, kind: Resource, namespace: str, name: str) -> None:
        with self._lock:
            self._writes.pop((kind, namespace, name), None)

    def newer(
        self, kind: Resource, namespace: str, name: str, watched: Packed | None
    ) -> Packed | None:
        """The last write of the object while the watch still holds the version it
        replaced; else what the watch holds (and the write is forgotten)."""
        key = (kind, namespace, name)
        with self._lock:
            write = self._writes.get(key)
            if write is None:
                return watched
            if _version(watched) == write.replaced and self._clock() - write.at <= self._seconds:
                return write.body
            del self._writes[key]
            return watched


@dataclass(frozen=True)
class Snapshot:
    """One LLMDeployment's objects as the watches (and this operator's writes) show them."""

    namespace: str
    name: str
    objects: dict[tuple[Resource, str], Packed] = field(default_factory=dict)
    """The LLMDeployment and its children, by kind and name."""
    watched: dict[tuple[Resource, str], str | None] = field(default_factory=dict)
    """The version each object has in the watch (a write may stand in for it)."""
    pods: list[Packed] = field(default_factory=list)

    def versions(self) -> frozenset[tuple[tuple[Resource, str], str | None]]:
        """Which version of each object the watches hold: equal for an unchanged world."""
        return frozenset(self.watched.items())


def _first(index: Index | None, key: Hashable) -> Packed | None:
    if index is None or key not in index:
        return None
    return next(iter(index[key]), None)


def snapshot(
    indices: Mapping[Resource, Index], written: Written, namespace: str, name: str
) -> Snapshot:
    """``namespace/name``'s objects from ``indices``; call it where they are updated (the
    event loop), so it never reads an index while it changes."""
    found = Snapshot(namespace, name)
    for kind, own in [(LLMDEPLOYMENT, name), *child_keys(name)]:
        if kind not in indices:
            continue
        watched = _first(indices[kind], (namespace, own))
        found.watched[(kind, own)] = _version(watched)
        body = written.newer(kind, namespace, own, watched)
        if body is not None:
            found.objects[(kind, own)] = body
    pods = indices.get(POD)
    for pod in pods[(namespace, name)] if pods is not None and (namespace, name) in pods else ():
        found.watched[(POD, pod.name)] = pod.version
        found.pods.append(written.newer(POD, namespace, pod.name, pod) or pod)
    return found


class CachedKube:
    """``Kube`` for one reconcile: the snapshot's objects read from it, the rest and every
    write through ``kube``; each write is recorded in ``written``."""

    def __init__(self, kube: Kube, found: Snapshot, written: Written) -> None:
        self._kube, self._found, self._written = kube, found, written

    def _mine(self, namespace: str) -> bool:
        return namespace == self._found.namespace

    def get(self, kind: Resource, namespace: str, name: str) -> Manifest | None:
        if not self._mine(namespace) or (kind, name) not in self._found.watched:
            return self._kube.get(kind, namespace, name)
        found = self._found.objects.get((kind, name))
        return None if found is None else found.body()

    def get_live(self, kind: Resource, namespace: str, name: str) -> Manifest | None:
        return self._kube.get_live(kind, namespace, name)

    def list(self, kind: Resource, namespace: str | None, selector: str) -> list[Manifest]:
        found = self._found
        if (kind, namespace, selector) == (
            POD,
            found.namespace,
            labels.selector_string(found.name),
        ):
            return [pod.body() for pod in found.pods]
        return self._kube.list(kind, namespace, selector)

    def _record(self, kind: Resource, body: Manifest) -> Manifest:
        meta = body["metadata"]
        if self._mine(meta.get("namespace") or ""):
            self._written.record(kind, self._found.watched.get((kind, meta["name"])), body)
        return body

    def apply(self, kind: Resource, manifest: Manifest) -> Manifest:
        return self._record(kind, self._kube.apply(kind, manifest))

    def patch_status(self, namespace: str, name: str, status: Manifest) -> Manifest:
        return self._record(LLMDEPLOYMENT, self._kube.patch_status(namespace, name, status))

    def patch(self, kind: Resource, namespace: str, name: str, body: Manifest) -> Manifest:
        return self._record(kind, self._kube.patch(kind, namespace, name, body))

    def delete(self, kind: Resource, namespace: str, name: str) -> None:
        self._kube.delete(kind, namespace, name)
        self._written.forget(kind, namespace, name)

    def event(
        self, obj: Manifest, kind: EventType, reason: Reason | EventReason, message: str
    ) -> None:
        self._kube.event(obj, kind, reason, message)

    def served(self, kind: Resource) -> bool:
        return self._kube.served(kind)
