"""The operator's Lease: who may take it (pure) and one attempt through the Kube seam.

Cases: a missing, empty or own lease may be taken; another holder's fresh lease may not; an
expired one may. ``try_hold`` on an in-memory API (resourceVersions checked as the API
server checks them): creates the lease when there is none and loses a race to create it;
renews its own; leaves another's fresh lease alone; takes an expired one, counting the
transition; loses a race to a writer that changed the lease since it was read; releases its
own lease at shutdown (a standby takes it at once), never another's.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from llmfleet_operator.kube import ConflictError
from llmfleet_operator.leader import Holder, LeaseElector, may_take
from llmfleet_operator.resources import LEASE, Resource

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
Manifest = dict[str, Any]


@pytest.mark.parametrize(
    ("holder", "allowed"),
    [
        (None, True),
        (Holder(None, None, 15), True),
        (Holder("me", NOW, 15), True),
        (Holder("other", NOW - timedelta(seconds=10), 15), False),
        (Holder("other", NOW - timedelta(seconds=16), 15), True),
        (Holder("other", None, 15), True),
    ],
)
def test_may_take(holder: Holder | None, allowed: bool) -> None:
    assert may_take(holder, "me", NOW) is allowed


class MemoryLeases:
    """One Lease, with the API server's optimistic concurrency."""

    def __init__(self, lease: Manifest | None = None, race: bool = False) -> None:
        self.lease = lease
        self.version = 1
        self.race = race
        """Another writer changes the lease between our read and our write."""

    def get(self, kind: Resource, namespace: str, name: str) -> Manifest | None:
        assert kind == LEASE
        if self.lease is None:
            return None
        found = copy.deepcopy(self.lease)
        found["metadata"] = {"name": name, "resourceVersion": str(self.version)}
        if self.race:
            self.version += 1
        return found

    def create(self, kind: Resource, manifest: Manifest) -> Manifest:
        if self.lease is not None or self.race:
            raise ConflictError(409, "leases.coordination.k8s.io already exists")
        self.lease = {"spec": manifest["spec"]}
        return manifest

    def patch(self, kind: Resource, namespace: str, name: str, body: Manifest) -> Manifest:
        assert self.lease is not None
        if body["metadata"]["resourceVersion"] != str(self.version):
            raise ConflictError(409, "the object has been modified")
        self.lease["spec"].update(body["spec"])
        self.version += 1
        return body


def lease(holder: str, renewed: datetime, transitions: int = 0) -> Manifest:
    stamp = renewed.isoformat().replace("+00:00", "Z")
    spec = {"holderIdentity": holder, "renewTime": stamp, "leaseDurationSeconds": 15}
    return {"spec": {**spec, "leaseTransitions": transitions}}


def elector(leases: MemoryLeases) -> LeaseElector:
    return LeaseElector(leases, "llmfleet-system", "llmfleet-operator", "me")


def test_creates_the_lease_when_there_is_none() -> None:
    leases = MemoryLeases()
    assert elector(leases).try_hold(NOW)
    assert leases.lease is not None
    assert leases.lease["spec"]["holderIdentity"] == "me"


def test_loses_the_race_to_create_it() -> None:
    assert not elector(MemoryLeases(race=True)).try_hold(NOW)


def test_renews_its_own_and_respects_a_fresh_foreign_one() -> None:
    own = MemoryLeases(lease("me", NOW - timedelta(seconds=5)))
    assert elector(own).try_hold(NOW)
    assert own.lease is not None
    assert own.lease["spec"]["renewTime"].startswith("2026-11-22T12:00:00")
    assert own.lease["spec"]["leaseTransitions"] == 0
    foreign = MemoryLeases(lease("other", NOW - timedelta(seconds=5)))
    assert not elector(foreign).try_hold(NOW)
    assert foreign.lease is not None
    assert foreign.lease["spec"]["holderIdentity"] == "other"


def test_takes_an_expired_lease_and_counts_the_transition() -> None:
    leases = MemoryLeases(lease("other", NOW - timedelta(seconds=20), transitions=3))
    assert elector(leases).try_hold(NOW)
    assert leases.lease is not None
    assert leases.lease["spec"]["holderIdentity"] == "me"
    assert leases.lease["spec"]["leaseTransitions"] == 4


def test_loses_the_race_to_a_writer_that_changed_it_meanwhile() -> None:
    leases = MemoryLeases(lease("other", NOW - timedelta(seconds=20)), race=True)
    assert not elector(leases).try_hold(NOW)


def test_releases_its_own_lease_so_a_standby_takes_it_at_once() -> None:
    leases = MemoryLeases(lease("me", NOW - timedelta(seconds=1)))
    elector(leases).release()
    assert leases.lease is not None
    assert leases.lease["spec"]["holderIdentity"] == ""
    standby = LeaseElector(leases, "llmfleet-system", "llmfleet-operator", "standby")
    assert standby.try_hold(NOW)
    assert leases.lease["spec"]["holderIdentity"] == "standby"


def test_leaves_another_holders_lease_alone_and_survives_a_conflict() -> None:
    foreign = MemoryLeases(lease("other", NOW))
    elector(foreign).release()
    assert foreign.lease is not None
    assert foreign.lease["spec"]["holderIdentity"] == "other"
    racing = MemoryLeases(lease("me", NOW), race=True)
    elector(racing).release()  # logs, raises nothing: the lease lapses on its own
    assert racing.lease is not None
    assert racing.lease["spec"]["holderIdentity"] == "me"
