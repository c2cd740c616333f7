"""Leader election on a coordination.k8s.io Lease, so two operator replicas never both act.

Called by :mod:`operator_main` before kopf starts watching: a standby replica waits in
:func:`LeaseElector.acquire`; the leader renews in the background and, if it cannot
renew within the lease duration, stops the process (its restart comes back as a
standby). ``may_take`` is the pure decision; the rest is I/O.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("llmfleet.leader")


@dataclass(frozen=True)
class Holder:
    """Who holds the lease, as last written."""

    identity: str | None
    renewed: datetime | None
    duration_seconds: int


def may_take(holder: Holder | None, me: str, now: datetime) -> bool:
    """The lease is free, already ours, or its holder stopped renewing it in time."""
    if holder is None or not holder.identity or holder.identity == me or holder.renewed is None:
        return True
    return now - holder.renewed > timedelta(seconds=holder.duration_seconds)


class LeaseElector:
    """Holds ``namespace/name`` for ``identity``."""

    def __init__(
        self,
        api: client.CoordinationV1Api,
        namespace: str,
        name: str,
        identity: str,
        *,
        duration_seconds: int = 15,
        renew_seconds: float = 5.0,
    ) -> None:
        self._api, self._namespace, self._name = api, namespace, name
        self.identity = identity
        self._duration, self._renew = duration_seconds, renew_seconds

    def try_hold(self, now: datetime | None = None) -> bool:
        """One attempt to take or renew the lease; True while we hold it."""
        now = now or datetime.now(UTC)
        spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self._duration,
            "renewTime": now.isoformat(timespec="microseconds").replace("+00:00", "Z"),
        }
        try:
            lease: Any = self._api.read_namespaced_lease(self._name, self._namespace)
        except ApiException as err:
            if err.status != 404:
                raise
            body: Any = {
                "metadata": {"name": self._name},
                "spec": {**spec, "acquireTime": spec["renewTime"]},
            }
            try:
                self._api.create_namespaced_lease(self._namespace, body)
            except ApiException as conflict:
                if conflict.status == 409:
                    return False  # someone else created it first
                raise
            return True
        holder = Holder(
            lease.spec.holder_identity,
            lease.spec.renew_time,
            lease.spec.lease_duration_seconds or self._duration,
        )
        if not may_take(holder, self.identity, now):
            return False
        if holder.identity != self.identity:
            spec["acquireTime"] = spec["renewTime"]
            spec["leaseTransitions"] = (lease.spec.lease_transitions or 0) + 1
        patch = {"metadata": {"resourceVersion": lease.metadata.resource_version}, "spec": spec}
        try:
            self._api.patch_namespaced_lease(self._name, self._namespace, patch)
        except ApiException as err:
            if err.status == 409:
                return False  # lost the race for it
            raise
        return True

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
        except ApiException as err:
            log.warning("Lease %s/%s: %s", self._namespace, self._name, err.reason)
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
