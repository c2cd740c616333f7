"""One level-based reconcile of an LLMDeployment: read, plan, apply, status.

Called by the work queue (:mod:`handlers`) for creates, updates, resyncs and child
events alike; it looks only at the current state, so a restart mid-way simply runs it
again. ``plan`` is pure; ``reconcile`` does the I/O through the ``Kube`` seam: it
server-side applies each desired child that differs from the live one (a new manifest,
whose hash it stamps on the child, or a hand edit of a field it sets, which is taken back;
an unchanged child costs no write), deletes children of a kind no longer wanted, and writes
the status only when it changed. An object in a child's place
that this LLMDeployment does not own is never taken over: ``Ready=False ChildConflict``
and a Warning Event until it is gone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pydantic

from llmfleet_contract import labels
from llmfleet_contract.api import (
    ADMITTED,
    ConditionStatus,
    ConditionType,
    EventReason,
    EventType,
    LLMDeployment,
    LLMDeploymentStatus,
    Reason,
)
from llmfleet_contract.pods import is_serving, serving_url, terminating
from llmfleet_operator.autoscaler import Autoscaler, builtin, without_scaling
from llmfleet_operator.children import (
    child_keys,
    child_name,
    children,
    desired_replicas,
    workload_kind,
)
from llmfleet_operator.kube import ClientError, Kube, KubeError
from llmfleet_operator.observe import (
    FALSE,
    Observed,
    blocked_status,
    compute_status,
    find_condition,
)
from llmfleet_operator.placement import (
    PREEMPTION_TAINTS,
    Room,
    Split,
    allocatable,
    eligible,
    is_spot,
    notice,
    room,
    split,
)
from llmfleet_operator.podspec import spot_tier
from llmfleet_operator.resources import (
    LEADER_WORKER_SET,
    LLMDEPLOYMENT,
    NODE,
    POD,
    WORKLOADS,
    Resource,
)

Manifest = dict[str, Any]
log = logging.getLogger("llmfleet.reconcile")

DOOMED_COST = -1_000_000
"""The pod-deletion-cost of a spot pod Pending past its node provisioning time: the one a
lower spot count removes."""

CONFLICT_RECHECK_SECONDS = 30.0
"""How soon a reconcile blocked by an object it does not own looks again (that object's
removal sends no event this operator watches)."""


@dataclass(frozen=True)
class Change:
    """One write the reconcile makes, worded as the Event it posts."""

    kind: Resource
    manifest: Manifest
    reason: Reason | EventReason | None
    """The Event's reason; None: no Event (a hand edit taken back)."""
    message: str


@dataclass(frozen=True)
class Plan:
    apply: list[Change] = field(default_factory=list)
    delete: list[tuple[Resource, str]] = field(default_factory=list)


def _template_hash(workload: Manifest | None) -> str | None:
    if workload is None:
        return None
    spec = workload.get("spec") or {}
    template = spec.get("template") or (spec.get("leaderWorkerTemplate") or {}).get(
        "leaderTemplate", {}
    )
    value = ((template.get("metadata") or {}).get("labels") or {}).get(labels.SPEC_HASH)
    return str(value) if value else None


def stamped(manifest: Manifest) -> Manifest:
    """``manifest`` with the hash of its content in its annotations: a field dropped from
    what the operator wants changes the hash, so the apply that removes it happens."""
    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]
    metadata = manifest["metadata"]
    annotations = {**(metadata.get("annotations") or {}), labels.APPLIED_HASH: digest}
    return {**manifest, "metadata": {**metadata, "annotations": annotations}}


def covers(live: Any, wanted: Any) -> bool:
    """Whether ``live`` holds every field of ``wanted`` with its value: what the API server
    adds (defaults, status, bookkeeping) is ignored; a list matches item by item."""
    if isinstance(wanted, dict):
        return isinstance(live, dict) and all(
            key in live and covers(live[key], value) for key, value in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(live, list) and len(live) == len(wanted) and all(map(covers, live, wanted))
        )
    return bool(live == wanted)


Key = tuple[Resource, str]
"""A child by kind and name."""


def plan(
    desired: list[tuple[Resource, Manifest]],
    existing: dict[Key, Manifest | None],
    why_scaled: str = "",
) -> Plan:
    """What to apply (each desired child the live one does not already match, with the
    Event its change earns) and delete.

    ``why_scaled`` (the autoscaler's reason) ends the message of a replica change.
    """
    changes = []
    for kind, unstamped in desired:
        manifest = stamped(unstamped)
        name = manifest["metadata"]["name"]
        current = existing.get((kind, name))
        reason: Reason | EventReason | None
        if current is None:
            reason, message = EventReason.CREATED, f"Created {kind.kind} {name}"
        elif kind in WORKLOADS and _template_hash(current) != _template_hash(manifest):
            reason, message = (
                Reason.ROLLING_OUT,
                f"Rolling out {kind.kind} {name}: the pod template changed",
            )
        elif (
            kind in WORKLOADS
            and (current.get("spec") or {}).get("replicas") != manifest["spec"]["replicas"]
        ):
            before = (current.get("spec") or {}).get("replicas")
            reason, message = (
                EventReason.SCALED,
                f"Scaled {kind.kind} {name} from {before} to {manifest['spec']['replicas']}"
                + (f": {why_scaled}" if why_scaled else ""),
            )
        elif covers(current, manifest):
            continue  # as last applied, and nobody changed a field of ours: no write
        else:
            reason, message = None, ""  # a hand edit or a new field: put back, no Event
        changes.append(Change(kind, manifest, reason, message))
    wanted = {(kind, manifest["metadata"]["name"]) for kind, manifest in desired}
    stale = [
        key for key, manifest in existing.items() if manifest is not None and key not in wanted
    ]
    return Plan(changes, stale)


def _owned_by(child: Manifest | None, uid: str) -> Manifest | None:
    refs = ((child or {}).get("metadata") or {}).get("ownerReferences") or []
    return child if any(ref.get("uid") == uid for ref in refs) else None


def _largest_node_gpus(kube: Kube, resource: str) -> int | None:
    try:
        nodes = kube.list(NODE, None, "")
    except KubeError:  # nodes are optional knowledge: RBAC may not grant them
        return None
    return max((allocatable(node, resource) for node in nodes), default=0)


def reconcile(
    kube: Kube,
    namespace: str,
    name: str,
    now: datetime | None = None,
    autoscaler: Autoscaler | None = None,
    notices: Collection[str] = PREEMPTION_TAINTS,
) -> float | None:
    """Bring one LLMDeployment's children and status in line with its spec.

    ``notices`` are the taint keys that say a node is about to be preempted.

    With an ``autoscaler``, a ``Builtin`` object gets a control period when one is due.
    Returns the seconds until the next one (for the work queue), or None.
    """
    body = kube.get(LLMDEPLOYMENT, namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        if autoscaler is not None:
            autoscaler.forget(namespace, name)
        return None  # gone: owner references let the garbage collector remove the children
    uid = body["metadata"]["uid"]
    now = now or datetime.now(UTC)
    try:
        obj = LLMDeployment.model_validate(_without_server_fields(body), context=ADMITTED)
    except pydantic.ValidationError as err:
        problems = (f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        _report_blocked(kube, body, Reason.INVALID_SPEC, "; ".join(problems), now)
        return None
    found = {
        (kind, child): kube.get(kind, namespace, child)
        for kind, child in child_keys(name)
        if kube.served(kind)
    }
    if obj.spec.parallelism.nodes_per_group > 1 and not kube.served(LEADER_WORKER_SET):
        _report_blocked(
            kube,
            body,
            Reason.INVALID_SPEC,
            f"a replica spans {obj.spec.parallelism.nodes_per_group} nodes, which needs"
            " LeaderWorkerSet (leaderworkerset.x-k8s.io/v1): install it in the cluster",
            now,
        )
        return None
    pods = kube.list(POD, namespace, labels.selector_string(name))
    requeue, why = None, ""
    if autoscaler is not None:
        obj, requeue, why = _autoscale(kube, autoscaler, body, obj, pods, now)
    shares: Split | None = None
    doomed: dict[str, tuple[str, str]] = {}
    if obj.spec.placement.spot is not None:
        shares, doomed = _spot(kube, obj, pods, found, notices, now)
    desired = children(obj, uid, shares)
    for kind, manifest in desired:
        key = (kind, manifest["metadata"]["name"])
        if found.get(key) is None:  # to be created: is anything in its place?
            found[key] = kube.get_live(kind, namespace, key[1])
    existing = {key: _owned_by(child, uid) for key, child in found.items()}
    todo = plan(desired, existing, why)
    foreign = [
        f"{change.kind.kind} {change.manifest['metadata']['name']}"
        for change in todo.apply
        if found.get(key := (change.kind, change.manifest["metadata"]["name"])) is not None
        and existing.get(key) is None
    ]
    if foreign:
        _report_blocked(
            kube,
            body,
            Reason.CHILD_CONFLICT,
            "; ".join(f"{child} exists and is not owned by this LLMDeployment" for child in foreign)
            + ": llmfleet takes over nothing it did not create; delete or rename it",
            now,
        )
        return CONFLICT_RECHECK_SECONDS
    _drain(kube, body, doomed)
    kept = _wind_down_spot(kube, body, obj, existing, pods, todo)
    for kind, child in todo.delete:
        kube.delete(kind, namespace, child)
        kube.event(
            body,
            EventType.NORMAL,
            EventReason.DELETED,
            f"Deleted {kind.kind} {child}: no longer wanted",
        )
    applied: dict[Key, Manifest] = {}
    said: dict[Reason | EventReason, list[str]] = {}
    try:
        for change in todo.apply:
            try:
                key = (change.kind, change.manifest["metadata"]["name"])
                applied[key] = kube.apply(change.kind, change.manifest)
            except ClientError as err:
                child = f"{change.kind.kind} {change.manifest['metadata']['name']}"
                _report_blocked(kube, body, Reason.APPLY_FAILED, f"{child}: {err.message}", now)
                raise  # the work queue retries with backoff
            if change.reason:
                log.info("%s/%s: %s", namespace, name, change.message)
                said.setdefault(change.reason, []).append(change.message)
    finally:  # one Event per reason, not one per child: each is a write to the API server
        for reason, messages in said.items():
            kube.event(body, EventType.NORMAL, reason, "; ".join(messages))
    workloads = [
        live
        for kind, manifest in desired
        if kind in WORKLOADS
        and (live := applied.get(key := (kind, manifest["metadata"]["name"])) or existing.get(key))
    ] + kept
    observed = Observed(
        workloads, pods, _largest_node_gpus(kube, obj.spec.placement.gpu_resource_name)
    )
    status = compute_status(obj, observed, now)
    _warn_when_degraded(kube, body, status)
    _write_status(kube, body, status)
    return requeue


def _autoscale(
    kube: Kube,
    autoscaler: Autoscaler,
    body: Manifest,
    obj: LLMDeployment,
    pods: list[Manifest],
    now: datetime,
) -> tuple[LLMDeployment, float | None, str]:
    """Run a control period if one is due: the object with its new status, the seconds
    until the next period, and why the replicas changed (for the Event)."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    if not builtin(obj):
        autoscaler.forget(namespace, name)
        if obj.status is None:
            return obj, None, ""
        return obj.model_copy(update={"status": without_scaling(obj.status)}), None, ""
    uid = body["metadata"]["uid"]
    wait = autoscaler.due_in(obj, uid, now.timestamp())
    if wait > 0:
        return obj, wait, ""
    seconds = float(obj.spec.autoscaling.period_seconds)  # type: ignore[union-attr]
    try:
        period = autoscaler.run(obj, uid, pods, now, lambda: _room(kube, obj, pods))
    except Exception:  # a bug must not stop rollouts and status: hold, and say it in the log
        log.exception("%s/%s: the autoscaler failed; holding the replicas", namespace, name)
        return obj, seconds, ""
    conditions = obj.status.conditions if obj.status else None
    old = find_condition(conditions, ConditionType.METRICS_AVAILABLE)
    if period.metrics.status is FALSE and (old is None or old.status is not FALSE):
        log.warning("%s/%s: %s", namespace, name, period.metrics.message)
        kube.event(body, EventType.WARNING, period.metrics.reason, period.metrics.message)
    _set_deletion_costs(kube, namespace, pods, period.deletion_costs)
    decision = period.decision
    why = f"{decision.reason}: {decision.message}" if decision.changed else ""
    return obj.model_copy(update={"status": period.status}), seconds, why


def _room(kube: Kube, obj: LLMDeployment, pods: list[Manifest]) -> Room | None:
    """How many more replicas of ``obj`` fit on the nodes beside every pod llmfleet manages,
    on demand and on spot nodes (None: the nodes or those pods cannot be listed; RBAC may
    not grant them)."""
    try:
        nodes = kube.list(NODE, None, "")
        managed = kube.list(POD, None, labels.OWNER)
    except KubeError:
        return None

    def unbound(spot: bool) -> int:
        return sum(1 for p in pods if not p["spec"].get("nodeName") and is_spot(p) == spot)

    found = room(obj, nodes, managed, unbound(False))
    spot = obj.spec.placement.spot
    if spot is None:
        return found
    if spot.node_provisioning_seconds:
        return None  # a node provisioner adds nodes for Pending pods: the room is unknown
    return found + room(spot_tier(obj), nodes, managed, unbound(True))


def _spot(
    kube: Kube,
    obj: LLMDeployment,
    pods: list[Manifest],
    found: dict[Key, Manifest | None],
    notices: Collection[str],
    now: datetime,
) -> tuple[Split, dict[str, tuple[str, str]]]:
    """How the replicas are shared between on demand and spot, and the spot pods to drain:
    those on a node with a preemption notice (pod name to node and taint).

    Spot holds the spot replicas running on spot nodes without a notice, plus, only when
    more are wanted and a spot node exists, the room left on those nodes (the one
    cluster-wide listing of pods); with ``nodeProvisioningSeconds``, all that is wanted but
    the pods Pending longer, which are made first in line for the spot workload's
    scale-down (deletion cost). Without the nodes or the pods (RBAC, an API error) the
    shares stay as they are."""
    spot = obj.spec.placement.spot
    assert spot is not None
    total = desired_replicas(obj)
    wanted = max(0, total - spot.on_demand_replicas)
    serving = [pod for pod in pods if is_spot(pod) and is_serving(pod)]
    kind = workload_kind(obj)
    name = obj.metadata.name
    on_demand, spot_now = (
        None if (live := found.get((kind, child_name(kind, name, tier)))) is None
        else (live.get("spec") or {}).get("replicas")
        for tier in (False, True)
    )  # fmt: skip
    try:
        nodes = kube.list(NODE, None, "")
    except KubeError:
        ready = sum(1 for pod in serving if serving_url(pod))
        return split(total, spot.on_demand_replicas, spot_now or 0, on_demand, ready), {}
    going = {node["metadata"]["name"]: taint for node in nodes if (taint := notice(node, notices))}
    doomed = {
        pod["metadata"]["name"]: (where, going[where])
        for pod in pods
        if is_spot(pod) and not terminating(pod) and (where := pod["spec"].get("nodeName")) in going
    }
    tier = spot_tier(obj)
    usable = [n for n in nodes if n["metadata"]["name"] not in going]
    spot_nodes = {n["metadata"]["name"] for n in usable if eligible(n, tier.spec.placement)}
    fits = sum(1 for pod in serving if pod["spec"].get("nodeName") in spot_nodes)
    if spot.node_provisioning_seconds:
        waited = now.timestamp() - spot.node_provisioning_seconds
        stuck = [
            pod["metadata"]["name"]
            for pod in serving
            if not pod["spec"].get("nodeName")
            and datetime.fromisoformat(pod["metadata"]["creationTimestamp"]).timestamp() < waited
        ]
        _set_deletion_costs(
            kube, obj.metadata.namespace or "", pods, dict.fromkeys(stuck, DOOMED_COST)
        )
        fits = wanted - len(stuck)
    elif fits < wanted and spot_nodes:
        with contextlib.suppress(KubeError):  # unknown room: none added
            fits += room(tier, usable, kube.list(POD, None, labels.OWNER), 0).replicas
    ready = sum(1 for pod in serving if serving_url(pod) and pod["metadata"]["name"] not in doomed)
    return split(total, spot.on_demand_replicas, fits, on_demand, ready), doomed


def _wind_down_spot(
    kube: Kube,
    body: Manifest,
    obj: LLMDeployment,
    existing: dict[Key, Manifest | None],
    pods: list[Manifest],
    todo: Plan,
) -> list[Manifest]:
    """Once ``spec.placement.spot`` is removed, the spot workload goes as the on-demand one
    gets ready, not at once: it keeps the replicas the ready on-demand ones do not cover
    yet (taken out of ``todo``'s deletions while any is kept). Returns it while kept."""
    if obj.spec.placement.spot is not None:
        return []
    kind = workload_kind(obj)
    key = (kind, child_name(kind, obj.metadata.name, spot=True))
    live = existing.get(key)
    if live is None:
        return []
    ready = sum(1 for pod in pods if not is_spot(pod) and serving_url(pod))
    now = int((live.get("spec") or {}).get("replicas") or 0)
    keep = max(0, min(now, desired_replicas(obj) - ready))
    if keep == 0:
        return []
    todo.delete.remove(key)
    if keep < now:
        kube.patch(kind, body["metadata"]["namespace"], key[1], {"spec": {"replicas": keep}})
        message = (
            f"Scaled {kind.kind} {key[1]} from {now} to {keep}: spot removed from the spec,"
            f" {ready} on-demand replica(s) ready"
        )
        kube.event(body, EventType.NORMAL, EventReason.SCALED, message)
    return [live]


def _drain(kube: Kube, body: Manifest, doomed: dict[str, tuple[str, str]]) -> None:
    """Delete (gracefully: the engine finishes its streams) the spot pods on nodes about to
    be preempted, before the workloads are applied: the ReplicaSet's replacement, Pending
    where spot has no room left, is then the pod a lower spot count removes. Not an
    eviction: the node goes whatever the disruption budget says. A refused delete is a
    Warning Event; the reconcile goes on."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    for pod, (node, taint) in doomed.items():
        try:
            kube.delete(POD, namespace, pod)
        except KubeError as err:
            message = f"Could not drain pod {pod} on node {node} ({taint}): {err}"
            log.warning("%s/%s: %s", namespace, name, message)
            kube.event(body, EventType.WARNING, EventReason.DRAINED, message)
            continue
        message = f"Drained pod {pod} on node {node}: preemption notice ({taint}); replaced"
        log.info("%s/%s: %s", namespace, name, message)
        kube.event(body, EventType.NORMAL, EventReason.DRAINED, message)


def _set_deletion_costs(
    kube: Kube, namespace: str, pods: list[Manifest], costs: dict[str, int]
) -> None:
    """Annotate the pods so the ReplicaSet removes the cheapest first (best effort)."""
    for pod in pods:
        meta = pod["metadata"]
        cost = costs.get(meta["name"])
        if cost is None or (meta.get("annotations") or {}).get(labels.POD_DELETION_COST) == str(
            cost
        ):
            continue
        try:
            annotations = {labels.POD_DELETION_COST: str(cost)}
            kube.patch(POD, namespace, meta["name"], {"metadata": {"annotations": annotations}})
        except KubeError as err:  # gone meanwhile: nothing to order
            log.info("Could not set the deletion cost of pod %s: %s", meta["name"], err)


def _without_server_fields(body: Manifest) -> Manifest:
    """The object as the user wrote it plus the metadata the operator reads."""
    meta = body["metadata"]
    return {
        **{k: v for k, v in body.items() if k != "metadata"},
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "labels", "annotations", "generation")
            if k in meta
        },
    }


def _warn_when_degraded(kube: Kube, body: Manifest, status: LLMDeploymentStatus) -> None:
    """A Warning Event when Degraded turns True or changes its reason (pods that cannot be
    created, placed or kept running), once: `kubectl describe` and event-based alerts see
    it beside the condition."""
    new = find_condition(status.conditions, ConditionType.DEGRADED)
    if new is None or new.status is not ConditionStatus.TRUE:
        return
    conditions: list[Manifest] = (body.get("status") or {}).get("conditions") or []
    old = next((c for c in conditions if c.get("type") == new.type), {})
    if (old.get("status"), old.get("reason")) != ("True", new.reason):
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        log.warning("%s/%s: %s: %s", namespace, name, new.reason, new.message)
        kube.event(body, EventType.WARNING, new.reason, new.message)


def _write_status(kube: Kube, body: Manifest, status: LLMDeploymentStatus) -> None:
    """Patch the status subresource, only if it changed; a field the new status leaves out
    is removed (a merge patch keeps what it does not name)."""
    new = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    old = body.get("status") or {}
    if new != old:
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        kube.patch_status(namespace, name, merge_patch(old, new))


def merge_patch(old: Manifest, new: Manifest) -> Manifest:
    """The JSON merge patch (RFC 7386) that turns ``old`` into ``new``: ``new`` with a null
    for every key of ``old`` it drops, at every depth of objects (lists are replaced)."""
    patch: Manifest = {}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            patch[key] = merge_patch(before, value)
        else:
            patch[key] = value
    patch.update({key: None for key in old if key not in new})
    return patch


def _report_blocked(
    kube: Kube, body: Manifest, reason: Reason, message: str, now: datetime
) -> None:
    """Ready=False with ``reason`` plus a Warning Event, the Event once per new message."""
    meta = body["metadata"]
    try:
        old = LLMDeploymentStatus.model_validate(body.get("status") or {})
    except pydantic.ValidationError:
        old = LLMDeploymentStatus()
    ready = find_condition(old.conditions, ConditionType.READY)
    if ready is None or ready.reason != reason or ready.message != message:
        log.warning("%s/%s: %s: %s", meta["namespace"], meta["name"], reason, message)
        kube.event(body, EventType.WARNING, reason, message)
    _write_status(kube, body, blocked_status(old, meta.get("generation"), reason, message, now))
