"""The Prometheus metrics source: per-pod instant queries with staleness checks.

Used by the operator's autoscaler (:mod:`llmfleet_operator.autoscaler`) when
``metrics.source`` is ``Prometheus``. The Prometheus at ``metrics.prometheusUrl`` must
scrape the engine pods and label their series with the pod's name in ``pod`` and its
namespace in ``namespace``, e.g.::

    relabel_configs:
      - {source_labels: [__meta_kubernetes_pod_name], target_label: pod}
      - {source_labels: [__meta_kubernetes_namespace], target_label: namespace}

(the labels the Prometheus Operator's PodMonitor and kube-prometheus already set).

One query for all the pods, evaluated at ``now``, asks for the raw samples of the last
``stalenessSeconds`` of the engine series and of ``up``; per pod: the newest scrape failed ->
unreachable; nothing in the window -> stale; a needed series absent -> missing metric.
Prometheus itself not answering makes every replica a miss with that reason; no
exception leaves :meth:`PrometheusSource.samples`. A second query reads the gateways'
pending prefill tokens per replica (``llmfleet_gateway_pending_prefill_tokens``, see
:mod:`~llmfleet_operator.metrics.parse`), where a gateway exports them.
"""

from __future__ import annotations

import math
import re
import urllib.parse
from collections import defaultdict
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import requests
from prometheus_api_client.exceptions import PrometheusApiClientException
from prometheus_api_client.prometheus_connect import PrometheusConnect
from urllib3.util.retry import Retry

from llmfleet_contract.metrics import (
    LLMDEPLOYMENT,
    LLMDEPLOYMENT_NAMESPACE,
    PENDING_PREFILL_TOKENS,
    PENDING_REQUESTS,
    REPLICA,
)
from llmfleet_operator.autoscale.inputs import Sample
from llmfleet_operator.metrics.parse import ENGINE_METRICS, sample_from_values
from llmfleet_operator.metrics.readings import Miss, MissReason, Readings, Target

UP = "up"
QUERY_ERRORS = (requests.RequestException, PrometheusApiClientException, ValueError)
"""What a query may raise: Prometheus unreachable, refusing, or answering garbage."""


def redacted(url: str) -> str:
    """``url`` without user info or query, for messages: either may hold a credential.
    Never raises (a message about a bad URL must not fail on it)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return "an unparseable URL"
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def pods_query(targets: Sequence[Target], staleness_seconds: float) -> str:
    """PromQL for the raw samples of the targets' engine series and ``up`` in the window:
    one query for every pod, so a slow Prometheus costs one timeout, not one per pod."""
    names = "|".join((UP, *ENGINE_METRICS))

    def any_of(values: set[str]) -> str:
        return _quote("|".join(re.escape(value) for value in sorted(values)))

    namespaces = any_of({t.namespace for t in targets})
    pods = any_of({t.pod for t in targets})
    return f'{{__name__=~"{names}",namespace=~{namespaces},pod=~{pods}}}[{int(staleness_seconds)}s]'


def sample_from_series(
    series: list[dict[str, Any]],
    target: Target,
    now: float,
    staleness_seconds: float,
    pending_prefill_tokens: int | None = None,
) -> Sample | Miss:
    """One pod's range-query result (Prometheus ``matrix`` items) as a sample, or a miss."""
    latest: dict[str, list[tuple[str, float, float]]] = defaultdict(list)
    for item in series:  # instance -> (series name, newest time, its value)
        if item.get("values"):
            time, value = item["values"][-1]
            labels = item["metric"]
            latest[labels.get("instance", "")].append(
                (labels["__name__"], float(time), float(value))
            )
    where = f"pod {target.namespace}/{target.pod}"
    if not latest:
        detail = f"Prometheus has no sample of {where} in the last {staleness_seconds:g}s"
        return Miss(target.replica, MissReason.STALE, detail)
    # A restarted pod may leave series under its previous address: read the newest only.
    instance = max(latest, key=lambda i: max(time for _, time, _ in latest[i]))
    rows = latest[instance]
    sampled_at = max(time for _, time, _ in rows)
    if now - sampled_at > staleness_seconds:
        detail = f"newest sample of {where} is {now - sampled_at:.0f}s old"
        return Miss(target.replica, MissReason.STALE, detail)
    if any(name == UP and value == 0 for name, _, value in rows):
        detail = f"Prometheus's last scrape of {where} ({instance}) failed"
        return Miss(target.replica, MissReason.UNREACHABLE, detail)
    # Every series of one scrape carries the scrape's time (engines set no timestamps):
    # a series older than the newest ``up`` vanished from the page since.
    scraped_at = max((time for name, time, _ in rows if name == UP), default=float("-inf"))
    values: dict[str, list[float]] = defaultdict(list)
    for name, time, value in rows:
        if time >= scraped_at:
            values[name].append(value)
    return sample_from_values(values, target.replica, sampled_at, pending_prefill_tokens)


class PrometheusSource:
    """Reads each target's engine series from Prometheus. Close it (or use ``with``)."""

    def __init__(self, url: str, staleness_seconds: float = 60.0, timeout_seconds: int = 5) -> None:
        self._url = url.rstrip("/")
        self._staleness = staleness_seconds
        self._timeout = timeout_seconds
        # No retries: the next control period is the retry, and it must not wait on backoff.
        self._client = PrometheusConnect(url=self._url, retry=Retry(total=0))

    def samples(self, targets: Sequence[Target], now: float) -> Readings:
        """One sample (stamped with its scrape time) or one miss per target, in order."""
        if not targets:
            return Readings()
        try:
            series = self._client.custom_query(
                pods_query(targets, self._staleness),
                params={"time": f"{now:.3f}"},
                timeout=self._timeout,
            )
        except QUERY_ERRORS as error:
            down = f"Prometheus at {redacted(self._url)} did not answer: {type(error).__name__}"
            misses = (Miss(t.replica, MissReason.SOURCE_UNREACHABLE, down) for t in targets)
            return Readings(missing=tuple(misses))
        by_pod: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for item in series:
            labels = item.get("metric") or {}
            by_pod[labels.get("namespace", ""), labels.get("pod", "")].append(item)
        tokens = self._pending_prefill_tokens(targets, now)
        results = [
            sample_from_series(
                by_pod[t.namespace, t.pod],
                t,
                now,
                self._staleness,
                None if tokens is None else tokens.get((t.namespace, t.pod), 0),
            )
            for t in targets
        ]
        return Readings.of(results)

    def _pending_prefill_tokens(
        self, targets: Sequence[Target], now: float
    ) -> dict[tuple[str, str], int] | None:
        """The gateways' pending prefill tokens by (namespace, replica pod), summed over
        gateway pods; None when Prometheus has no such series for the targets' namespaces
        (no gateway exports them) or does not answer."""
        namespaces = _quote("|".join(sorted({re.escape(t.namespace) for t in targets})))
        query = (
            f"sum by ({LLMDEPLOYMENT_NAMESPACE}, {REPLICA})"
            f" ({PENDING_PREFILL_TOKENS}{{{LLMDEPLOYMENT_NAMESPACE}=~{namespaces}}})"
        )
        result = self._instant(query, now)
        if result is None:
            return None
        tokens = {}
        for item in result:
            labels, value = item["metric"], float(item["value"][1])
            if math.isfinite(value):
                key = (labels.get(LLMDEPLOYMENT_NAMESPACE, ""), labels.get(REPLICA, ""))
                tokens[key] = round(value)
        return tokens or None

    def gateway_pending(self, namespace: str, name: str, now: float) -> int | None:
        """Requests the gateways hold for ``namespace/name``, summed over gateway pods;
        None when Prometheus has no such series or does not answer."""
        query = (
            f"sum({PENDING_REQUESTS}{{{LLMDEPLOYMENT}={_quote(name)},"
            f"{LLMDEPLOYMENT_NAMESPACE}={_quote(namespace)}}})"
        )
        result = self._instant(query, now)
        value = float(result[0]["value"][1]) if result else math.nan
        return round(value) if math.isfinite(value) else None

    def _instant(self, query: str, now: float) -> list[dict[str, Any]] | None:
        """An instant query's result at ``now``; None when Prometheus does not answer."""
        try:
            result: list[dict[str, Any]] = self._client.custom_query(
                query, params={"time": f"{now:.3f}"}, timeout=self._timeout
            )
        except QUERY_ERRORS:
            return None
        return result

    def close(self) -> None:
        """Release the HTTP connections."""
        self._client.close()

    def __enter__(self) -> PrometheusSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
