"""Metric names and label keys that more than one part reads or writes: each defined once.

The engines (vLLM, and the engine simulator that mirrors it) export the ``vllm:`` families;
the gateway exports the ``llmfleet_gateway_`` gauges; the operator's autoscaler reads both,
from the pages themselves or through Prometheus. Producer and reader import the names from
here, as KubeAI's proxy and autoscaler share ``internal/metrics``; both read an engine's load
with :func:`engine_load`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# vLLM V1 engine families (one series per engine core: label ENGINE; MODEL_NAME names
# the served model).
WAITING = "vllm:num_requests_waiting"
"""Gauge: requests waiting for prefill (the prefill queue)."""
RUNNING = "vllm:num_requests_running"
"""Gauge: requests in the running batch (slots used)."""
KV_CACHE_USAGE = "vllm:kv_cache_usage_perc"
"""Gauge: KV-cache (HBM) usage, 0..1."""
KV_CACHE_USAGE_V0 = "vllm:gpu_cache_usage_perc"
"""Gauge: the same, on engines older than V1."""
TIME_TO_FIRST_TOKEN = "vllm:time_to_first_token_seconds"
"""Histogram: time to first token."""
STARTED = TIME_TO_FIRST_TOKEN + "_count"
"""Its count: requests that got their first token since the engine started (a counter)."""
ENGINE = "engine"
"""Label: the engine core's index (a data-parallel server reports one series per core)."""
MODEL_NAME = "model_name"
"""Label: the served model."""

ENGINE_LOAD = (WAITING, RUNNING, KV_CACHE_USAGE, KV_CACHE_USAGE_V0, STARTED)
"""Every engine series a reader of an engine's load may use."""


@dataclass(frozen=True)
class EngineLoad:
    """One engine server's load, as its page reports it."""

    waiting: int
    """The prefill queue, summed over engine cores."""
    running: int
    """Requests running, summed over engine cores."""
    kv_cache_usage: float
    """KV-cache usage, 0..1: the mean over engine cores (each has a cache of the same size,
    and a sum would pass 1)."""
    started: float | None
    """Requests started (summed), when the page has the counter."""


def engine_load(values: Mapping[str, Sequence[float]]) -> EngineLoad | str:
    """The load from a page's values by sample name, or why it cannot be read: the autoscaler's
    samples and the gateway's routing read engines the same way."""
    broken = [name for name in ENGINE_LOAD if not all(map(math.isfinite, values.get(name, ())))]
    if broken:
        return "not a number: " + ", ".join(broken)
    kv = values.get(KV_CACHE_USAGE) or values.get(KV_CACHE_USAGE_V0)
    needed = {WAITING: values.get(WAITING), RUNNING: values.get(RUNNING), KV_CACHE_USAGE: kv}
    absent = [name for name, found in needed.items() if not found]
    if absent or not kv:
        return "no " + ", ".join(absent)
    started = values.get(STARTED)
    return EngineLoad(
        waiting=round(sum(values[WAITING])),
        running=round(sum(values[RUNNING])),
        kv_cache_usage=min(1.0, max(0.0, sum(kv) / len(kv))),
        started=sum(started) if started else None,
    )


# The gateway's gauges, the autoscaler's view of work not yet visible on the engines. Their
# labels are not ``namespace``/``pod``, which Prometheus sets to the gateway's own.
PENDING_PREFILL_TOKENS = "llmfleet_gateway_pending_prefill_tokens"
"""Gauge, per replica (REPLICA, LLMDEPLOYMENT_NAMESPACE): prompt tokens the gateway sent to
that replica that have no first token yet."""
PENDING_REQUESTS = "llmfleet_gateway_pending_requests"
"""Gauge, per LLMDeployment (LLMDEPLOYMENT, LLMDEPLOYMENT_NAMESPACE): requests the gateway
holds or queues because no replica can take them, and those it sent to a peer region for
that reason (a spill or a failover). The demand that wakes a model from zero, and that the
autoscaler adds to the prefill queue: a region whose bursts its peers absorb still grows
to serve them itself."""
REPLICA = "replica"
"""Label: the replica's serving pod (an engine or a group's leader)."""
LLMDEPLOYMENT = "llmdeployment"
"""Label: the LLMDeployment's name."""
LLMDEPLOYMENT_NAMESPACE = "llmdeployment_namespace"
"""Label: the LLMDeployment's namespace."""
