"""Leader election on a coordination.k8s.io Lease, so two operator replicas never both act.

Called by :mod:`operator_main` before kopf starts watching: a standby replica waits in
:func:`LeaseElector.acquire`; the leader renews in the background and, if it cannot
renew within the lease duration, stops the process (its restart comes back as a
standby). ``may_take`` is the pure decision; the rest is I/O through the Kube seam
(:class:`Leases`), with optimistic concurrency: a write against a stale ``resourceVersion``
is a :class:`~llmfleet_operator.kube.ConflictError`, and the race is lost, not fought.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from llmfleet_operator.kube import ConflictError, KubeError
from llmfleet_operator.resources import LEASE, Resource

Manifest = dict[str, Any]

log = logging.getLogger("llmfleet.leader")


@dataclass(frozen=True)
class Holder:
    """Who holds the lease, as last written."""

    identity: str | None
    renewed: datetime | None
    duration_seconds: int


class Leases(Protocol):
    """What the elector needs of the API server
    (:class:`~llmfleet_operator.kube_client.DynamicKube`)."""

    def get(self, kind: Resource, namespace: str, name: str) -> Manifest | None: ...

    def create(self, kind: Resource, manifest: Manifest) -> Manifest: ...

    def patch(self, kind: Resource, namespace: str, name: str, body: Manifest) -> Manifest: ...


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def may_take(holder: Holder | None, me: str, now: datetime) -> bool:
    """The lease is free, already ours, or its holder stopped renewing it in time."""
    if holder is None or not holder.identity or holder.identity == me or holder.renewed is None:
        return True
    return now - holder.renewed > timedelta(seconds=holder.duration_seconds)


class LeaseElector:
    """Holds ``namespace/name`` for ``identity``."""

    def __init__(
        self,
        kube: Leases,
        namespace: str,
        name: str,
        identity: str,
        *,
        duration_seconds: int = 15,
        renew_seconds: float = 5.0,
    ) -> None:
        self._kube, self._namespace, self._name = kube, namespace, name
        self.identity = identity
        self._duration, self._renew = duration_seconds, renew_seconds

    def try_hold(self, now: datetime | None = None) -> bool:
        """One attempt to take or renew the lease; True while we hold it."""
        now = now or datetime.now(UTC)
        spec: Manifest = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self._duration,
            "renewTime": now.isoformat(timespec="microseconds").replace("+00:00", "Z"),
        }
        lease = self._kube.get(LEASE, self._namespace, self._name)
        if lease is None:
            body = {
                "apiVersion": LEASE.api_version,
                "kind": LEASE.kind,
                "metadata": {"name": self._name, "namespace": self._namespace},
                "spec": {**spec, "acquireTime": spec["renewTime"]},
            }
            try:
                self._kube.create(LEASE, body)
            except ConflictError:
                return False  # someone else created it first
            return True
        held = lease.get("spec") or {}
        holder = Holder(
            held.get("holderIdentity"),
            _time(held.get("renewTime")),
            held.get("leaseDurationSeconds") or self._duration,
        )
        if not may_take(holder, self.identity, now):
            return False
        if holder.identity != self.identity:
            spec["acquireTime"] = spec["renewTime"]
            spec["leaseTransitions"] = (held.get("leaseTransitions") or 0) + 1
        version = lease["metadata"]["resourceVersion"]
        patch = {"metadata": {"resourceVersion": version}, "spec": spec}
        try:
            self._kube.patch(LEASE, self._namespace, self._name, patch)
        except ConflictError:
            return False  # lost the race for it
        return True

    def release(self) -> None:
        """Give the lease up when this replica stops leading on purpose (shutdown, a
        rollout), so a standby takes it at its next attempt instead of after it lapses."""
        try:
            lease = self._kube.get(LEASE, self._namespace, self._name)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            version = lease["metadata"]["resourceVersion"]
            patch = {"metadata": {"resourceVersion": version}, "spec": {"holderIdentity": ""}}
            self._kube.patch(LEASE, self._namespace, self._name, patch)
        except KubeError as err:  # it lapses on its own
            log.warning("Lease %s/%s not released: %s", self._namespace, self._name, err.message)
            return
        log.info("Released Lease %s/%s", self._namespace, self._name)

    async def acquire(self) -> None:
        """Wait until this replica leads."""
        logged = False
        while not await asyncio.to_thread(self._attempt):
            if not logged:
                log.info(
                    "Waiting for Lease %s/%s held by another replica", self._namespace, self._name
                )
                logged = True
            await asyncio.sleep(self._renew)
        log.info("Leading: holding Lease %s/%s as %s", self._namespace, self._name, self.identity)

    def _attempt(self) -> bool:
        try:
            return self.try_hold()
        except KubeError as err:
            log.warning("Lease %s/%s: %s", self._namespace, self._name, err.message)
        except Exception:  # a failed attempt, whatever it was: the lease lapses, never two leaders
            log.exception("Lease %s/%s: renewing failed", self._namespace, self._name)
        return False

    async def keep(self, on_lost: Callable[[], None]) -> None:
        """Renew until renewing fails for longer than the lease lasts; then ``on_lost``."""
        last = datetime.now(UTC)
        while True:
            await asyncio.sleep(self._renew)
            if await asyncio.to_thread(self._attempt):
                last = datetime.now(UTC)
            elif datetime.now(UTC) - last > timedelta(seconds=self._duration):
                log.error(
                    "Lost Lease %s/%s: stopping so that one replica leads",
                    self._namespace,
                    self._name,
                )
                on_lost()
                return
