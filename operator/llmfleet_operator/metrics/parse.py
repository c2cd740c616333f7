"""An engine's or a gateway's ``/metrics`` page -> the numbers the scaling policy reads. Pure.

Called by :class:`~llmfleet_operator.metrics.direct.DirectScrape`; the names and labels are
the shared contract's (:mod:`llmfleet_contract.metrics`). From an engine it reads:

- the prefill queue and the running requests, summed over the ``engine`` label (a
  data-parallel server reports one series per engine core);
- the KV-cache usage (0..1; the V0 name on older engines): the mean over engines, since
  each engine has its own cache of the same size and a sum would pass 1;
- requests started (the time-to-first-token count), summed over engines, when the page has
  it: a counter the policy reads the rate of.

From a gateway it reads the pending prefill tokens per replica (:func:`pending_prefill_tokens`)
and the requests held per LLMDeployment (:func:`pending_requests`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from llmfleet_contract.exposition import ExpositionError, parse
from llmfleet_contract.metrics import (
    ENGINE_LOAD,
    LLMDEPLOYMENT,
    LLMDEPLOYMENT_NAMESPACE,
    PENDING_PREFILL_TOKENS,
    PENDING_REQUESTS,
    REPLICA,
    engine_load,
)
from llmfleet_operator.autoscale.inputs import Sample
from llmfleet_operator.metrics.readings import Miss, MissReason

ENGINE_METRICS = ENGINE_LOAD
"""Every engine series the policy may read (the Prometheus source asks for these)."""
_SERIES = tuple(name + after for name in ENGINE_METRICS for after in "{ \t")
"""How a line of one of those series starts: its name, then labels or a blank."""


def sample_from_values(
    values: Mapping[str, Sequence[float]],
    replica: str,
    time: float,
    pending_prefill_tokens: int | None = None,
) -> Sample | Miss:
    """The policy's sample from one engine's series values, or why it cannot be made."""
    load = engine_load(values)
    if isinstance(load, str):
        return Miss(replica, MissReason.MISSING_METRIC, load)
    return Sample(
        time=time,
        replica=replica,
        waiting=load.waiting,
        pending_prefill_tokens=pending_prefill_tokens,
        kv_cache_usage=load.kv_cache_usage,
        running=load.running,
        started=load.started,
    )


def parse_engine(
    text: str, replica: str, time: float, pending_prefill_tokens: int | None = None
) -> Sample | Miss:
    """One engine's ``/metrics`` page, scraped at ``time``, as a sample of ``replica``.

    Only the lines of :data:`ENGINE_METRICS` are parsed: a vLLM page has hundreds of
    lines, mostly histogram buckets, and parsing them all cost the operator more than
    fetching the page (bench/operator/scrape.py). So a malformed line elsewhere on the
    page does not cost the sample; one among the policy's series does, and a page with
    none of them (not an engine's) is missing them all.
    """
    wanted = "\n".join(line for line in text.split("\n") if line.lstrip().startswith(_SERIES))
    try:
        values = parse(wanted).values()
    except ExpositionError as error:
        return Miss(replica, MissReason.MISSING_METRIC, f"unparseable metrics page: {error}")
    return sample_from_values(values, replica, time, pending_prefill_tokens)


def pending_prefill_tokens(text: str) -> dict[tuple[str, str], int] | None:
    """The gateway's pending prefill tokens by (namespace, replica); None when the page
    does not export the gauge (a replica it lists no series for has none pending).

    Raises :class:`ExpositionError` when the text is not Prometheus exposition.
    """
    page = parse(text)
    found = page.named(PENDING_PREFILL_TOKENS)
    if not found and PENDING_PREFILL_TOKENS not in page.families:
        return None
    pending: dict[tuple[str, str], int] = {}
    for series in found:
        if REPLICA in series.labels and math.isfinite(series.value):
            key = (series.labels.get(LLMDEPLOYMENT_NAMESPACE, ""), series.labels[REPLICA])
            pending[key] = pending.get(key, 0) + round(series.value)
    return pending


def pending_requests(text: str, namespace: str, name: str) -> int | None:
    """Requests the gateway holds for LLMDeployment ``namespace/name``; None when the page
    has no series for it.

    Raises :class:`ExpositionError` when the text is not Prometheus exposition.
    """
    found: int | None = None
    for series in parse(text).named(PENDING_REQUESTS):
        labels = series.labels
        if (
            labels.get(LLMDEPLOYMENT) == name
            and labels.get(LLMDEPLOYMENT_NAMESPACE) == namespace
            and math.isfinite(series.value)
        ):
            found = (found or 0) + round(series.value)
    return found
