"""Metric names and label keys that more than one part reads or writes: each defined once.

The engines (vLLM, and the engine simulator that mirrors it) export the ``vllm:`` families;
the gateway exports the ``llmfleet_gateway_`` gauges; the operator's autoscaler reads both,
from the pages themselves or through Prometheus. Producer and reader import the names from
here, as KubeAI's proxy and autoscaler share ``internal/metrics``.
"""

from __future__ import annotations

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

# The gateway's gauges, the autoscaler's view of work not yet visible on the engines. Their
# labels are not ``namespace``/``pod``, which Prometheus sets to the gateway's own.
PENDING_PREFILL_TOKENS = "llmfleet_gateway_pending_prefill_tokens"
"""Gauge, per replica (REPLICA, LLMDEPLOYMENT_NAMESPACE): prompt tokens the gateway sent to
that replica that have no first token yet."""
PENDING_REQUESTS = "llmfleet_gateway_pending_requests"
"""Gauge, per LLMDeployment (LLMDEPLOYMENT, LLMDEPLOYMENT_NAMESPACE): requests the gateway
holds or queues because no replica can take them (the demand that wakes a model from zero)."""
REPLICA = "replica"
"""Label: the replica's serving pod (an engine or a group's leader)."""
LLMDEPLOYMENT = "llmdeployment"
"""Label: the LLMDeployment's name."""
LLMDEPLOYMENT_NAMESPACE = "llmdeployment_namespace"
"""Label: the LLMDeployment's namespace."""
