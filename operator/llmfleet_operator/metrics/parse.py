"""Prometheus text exposition -> the numbers the scaling policy reads. Pure.

Called by :class:`~llmfleet_operator.metrics.direct.DirectScrape` on each engine's
``/metrics`` page (and usable by the fleet simulator). Reads vLLM V1 names:

- ``vllm:num_requests_waiting`` and ``vllm:num_requests_running``: summed over the
  ``engine`` label (a data-parallel server reports one series per engine core);
- ``vllm:kv_cache_usage_perc`` (0..1), or ``vllm:gpu_cache_usage_perc`` on engines older
  than V1: the mean over engines, since each engine has its own cache of the same size
  and a sum would pass 1;
- ``vllm:time_to_first_token_seconds_count`` (requests started), summed over engines,
  when the page has it: a counter the policy reads the rate of.

The gateway exports two gauges the autoscaler reads (its metric contract):

- per replica, the prompt tokens it sent that have no first token yet:
  ``llmfleet_gateway_pending_prefill_tokens{replica="<pod>",
  llmdeployment_namespace="<namespace>"}`` (:func:`pending_prefill_tokens`; a sample
  carries None where no gateway exports it);
- per LLMDeployment, the requests it holds because no replica is ready (the demand that
  scales from zero): ``llmfleet_gateway_pending_requests{llmdeployment="<name>",
  llmdeployment_namespace="<namespace>"}`` (:func:`pending_requests`). The labels are not
  ``namespace``/``pod``, which Prometheus sets to the gateway's own.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families

from llmfleet_operator.autoscale.inputs import Sample
from llmfleet_operator.metrics.readings import Miss, MissReason

WAITING = "vllm:num_requests_waiting"
RUNNING = "vllm:num_requests_running"
KV_CACHE_USAGE = "vllm:kv_cache_usage_perc"
KV_CACHE_USAGE_V0 = "vllm:gpu_cache_usage_perc"
STARTED = "vllm:time_to_first_token_seconds_count"
PENDING_PREFILL_TOKENS = "llmfleet_gateway_pending_prefill_tokens"
"""Gateway gauge, one series per replica (label ``replica``)."""
PENDING_REQUESTS = "llmfleet_gateway_pending_requests"
"""Gateway gauge, one series per LLMDeployment (labels ``llmdeployment``,
``llmdeployment_namespace``)."""
ENGINE_METRICS = (WAITING, RUNNING, KV_CACHE_USAGE, KV_CACHE_USAGE_V0, STARTED)
"""Every engine series the policy may read (the Prometheus source asks for these)."""


def series_values(text: str) -> dict[str, list[float]]:
    """Every sample value on a page, by sample name (one value per label set).

    Raises ``ValueError`` when the text is not Prometheus exposition.
    """
    values: dict[str, list[float]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[sample.name].append(float(sample.value))
    return dict(values)


def sample_from_values(
    values: Mapping[str, list[float]],
    replica: str,
    time: float,
    pending_prefill_tokens: int | None = None,
) -> Sample | Miss:
    """The policy's sample from one engine's series values, or why it cannot be made."""
    broken = [name for name in ENGINE_METRICS if not all(map(math.isfinite, values.get(name, ())))]
    if broken:
        return Miss(replica, MissReason.MISSING_METRIC, "not a number: " + ", ".join(broken))
    kv = values.get(KV_CACHE_USAGE) or values.get(KV_CACHE_USAGE_V0)
    needed = {WAITING: values.get(WAITING), RUNNING: values.get(RUNNING), KV_CACHE_USAGE: kv}
    absent = [name for name, found in needed.items() if not found]
    if absent or not kv:
        return Miss(replica, MissReason.MISSING_METRIC, "no " + ", ".join(absent))
    return Sample(
        time=time,
        replica=replica,
        waiting=round(sum(values[WAITING])),
        pending_prefill_tokens=pending_prefill_tokens,
        kv_cache_usage=min(1.0, max(0.0, sum(kv) / len(kv))),
        running=round(sum(values[RUNNING])),
        started=sum(values[STARTED]) if values.get(STARTED) else None,
    )


def parse_engine(
    text: str, replica: str, time: float, pending_prefill_tokens: int | None = None
) -> Sample | Miss:
    """One engine's ``/metrics`` page, scraped at ``time``, as a sample of ``replica``."""
    try:
        values = series_values(text)
    except ValueError as error:
        return Miss(replica, MissReason.MISSING_METRIC, f"unparseable metrics page: {error}")
    return sample_from_values(values, replica, time, pending_prefill_tokens)


def pending_prefill_tokens(text: str) -> dict[tuple[str, str], int] | None:
    """The gateway's pending prefill tokens by (namespace, replica); None when the page
    does not export the gauge (a replica it lists no series for has none pending).

    Raises ``ValueError`` when the text is not Prometheus exposition.
    """
    pending: dict[tuple[str, str], int] | None = None
    for family in text_string_to_metric_families(text):
        if family.name != PENDING_PREFILL_TOKENS:
            continue
        pending = pending if pending is not None else {}
        for sample in family.samples:
            labels = sample.labels
            if "replica" in labels and math.isfinite(sample.value):
                key = (labels.get("llmdeployment_namespace", ""), labels["replica"])
                pending[key] = pending.get(key, 0) + round(sample.value)
    return pending


def pending_requests(text: str, namespace: str, name: str) -> int | None:
    """Requests the gateway holds for LLMDeployment ``namespace/name``; None when the page
    has no series for it.

    Raises ``ValueError`` when the text is not Prometheus exposition.
    """
    found: int | None = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name == PENDING_REQUESTS
                and labels.get("llmdeployment") == name
                and labels.get("llmdeployment_namespace") == namespace
                and math.isfinite(sample.value)
            ):
                found = (found or 0) + round(sample.value)
    return found
