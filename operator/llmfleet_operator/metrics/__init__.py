"""Metrics sources: per-replica engine samples for the autoscaler.

The operator's autoscaler (:mod:`llmfleet_operator.autoscaler`) picks a :class:`MetricsSource` from
``spec.autoscaling.metrics``: :class:`DirectScrape` (the embedded default) or
:class:`PrometheusSource`, and feeds the :class:`Readings` to
:func:`llmfleet_operator.autoscale.decide`. :mod:`.parse` turns pages and query results into
samples for both. The metric names are the shared contract's (:mod:`llmfleet_contract.metrics`).
"""

from llmfleet_operator.metrics.direct import DirectScrape
from llmfleet_operator.metrics.parse import parse_engine, pending_prefill_tokens, pending_requests
from llmfleet_operator.metrics.prometheus import PrometheusSource, redacted
from llmfleet_operator.metrics.readings import MetricsSource, Miss, MissReason, Readings, Target

__all__ = [
    "DirectScrape",
    "MetricsSource",
    "Miss",
    "MissReason",
    "PrometheusSource",
    "Readings",
    "Target",
    "parse_engine",
    "pending_prefill_tokens",
    "pending_requests",
    "redacted",
]
