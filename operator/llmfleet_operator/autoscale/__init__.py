"""The built-in autoscaler's pure core: engine samples in, a replica count with its reason out.

Used by the operator's autoscaler (:mod:`llmfleet_operator.autoscaler`, one period per
``periodSeconds`` inside the reconcile) and by the fleet simulator (``llmfleet
simulate``). Nothing here talks to Kubernetes, Prometheus or the network: the metrics
sources and the wiring live outside and pass everything in, time included.
"""

from llmfleet_operator.autoscale.inputs import (
    History,
    Level,
    Observation,
    Recommendation,
    Replica,
    ReplicaPhase,
    Sample,
)
from llmfleet_operator.autoscale.policy import Decision, decide
from llmfleet_operator.autoscale.signals import Signal, SignalReading
from llmfleet_operator.autoscale.victims import deletion_order

__all__ = [
    "Decision",
    "History",
    "Level",
    "Observation",
    "Recommendation",
    "Replica",
    "ReplicaPhase",
    "Sample",
    "Signal",
    "SignalReading",
    "decide",
    "deletion_order",
]
