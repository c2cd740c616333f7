"""What bench/operator/throughput.py reads from /metrics: the API server's mutating
requests by resource, and quantiles of the operator's reconcile histogram.

Both are snapshots taken before and after a phase; the functions here diff two snapshots.
Pure functions over Prometheus text, so they are checked without a cluster.
"""

from __future__ import annotations

import math
import subprocess
import urllib.request
from collections import Counter
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

# apiserver_request_total names a create POST and an update PUT (the audit log's "create"
# and "update"); APPLY is a server-side apply patch.
MUTATING_VERBS = frozenset({"POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"})
RECONCILE_HISTOGRAM = "llmfleet_operator_reconcile_duration_seconds"


def apiserver_text(kubeconfig: Path) -> str:
    """The API server's own /metrics (an admin kubeconfig)."""
    return subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", "get", "--raw", "/metrics"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout


def http_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as reply:
        text: str = reply.read().decode()
    return text


def mutating_requests(text: str) -> Counter[str]:
    """apiserver_request_total of the mutating verbs, by `resource[/subresource] VERB`."""
    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        if family.name != "apiserver_request":
            continue
        for sample in family.samples:
            labels = sample.labels
            if not sample.name.endswith("_total") or labels.get("verb") not in MUTATING_VERBS:
                continue
            resource = labels.get("resource", "")
            if labels.get("subresource"):
                resource += f"/{labels['subresource']}"
            counts[f"{resource} {labels['verb']}"] += int(sample.value)
    return counts


def request_delta(before: str, after: str) -> dict[str, int]:
    """Mutating requests made between two scrapes, by `resource[/subresource] VERB`."""
    delta = mutating_requests(after)
    delta.subtract(mutating_requests(before))
    return {key: count for key, count in sorted(delta.items()) if count > 0}


def buckets(text: str, name: str = RECONCILE_HISTOGRAM) -> dict[float, float]:
    """A histogram's cumulative bucket counts, by upper bound."""
    found: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name == f"{name}_bucket":
                found[float(sample.labels["le"])] = sample.value
    return found


def quantile(q: float, before: dict[float, float], after: dict[float, float]) -> float | None:
    """The q-quantile of the observations between two snapshots, interpolated linearly
    inside its bucket as Prometheus' histogram_quantile does (None without observations;
    the highest finite bound when it falls in the +Inf bucket)."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return None
    rank = q * counts[-1]
    lower, below = 0.0, 0.0
    for bound, cumulative in zip(bounds, counts, strict=True):
        if cumulative >= rank:
            if math.isinf(bound):
                return lower
            inside = cumulative - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, cumulative
    return lower


def observations(before: dict[float, float], after: dict[float, float]) -> int:
    return int(after.get(math.inf, 0.0) - before.get(math.inf, 0.0))
