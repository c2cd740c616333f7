"""The metrics-source seam: what a source is asked (targets) and answers (readings, misses).

Plain frozen dataclasses shared by the parser (:mod:`.parse`), the sources (:mod:`.direct`,
:mod:`.prometheus`) and the operator's autoscaler (:mod:`llmfleet_operator.autoscaler`),
which turns :class:`Readings` into the policy's samples and the ``MetricsAvailable``
condition. Every replica a source could not read comes back as a :class:`Miss` with its
reason, never as an exception."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from llmfleet_operator.autoscale.inputs import Sample


@dataclass(frozen=True)
class Target:
    """One replica to read: its leader pod, where it serves and how Prometheus labels it."""

    replica: str
    """The replica (serving group), as in :attr:`Sample.replica`."""
    url: str
    """The engine's base URL (``http://POD_IP:PORT``); :class:`DirectScrape` reads
    ``{url}/metrics``."""
    pod: str
    """The pod that serves ``/metrics`` (the leader in a multi-node group); Prometheus
    must carry it in the ``pod`` label."""
    namespace: str
    """The pod's namespace; Prometheus must carry it in the ``namespace`` label."""


class MissReason(StrEnum):
    """Why a replica has no sample this period."""

    UNREACHABLE = "Unreachable"
    """The engine did not answer, or answered with an error."""
    SOURCE_UNREACHABLE = "SourceUnreachable"
    """Prometheus itself did not answer: nothing is known of any replica."""
    STALE = "Stale"
    """The newest sample is older than ``metrics.stalenessSeconds``."""
    MISSING_METRIC = "MissingMetric"
    """The page answered but lacks a metric the policy needs, or does not parse."""


@dataclass(frozen=True)
class Miss:
    """A replica that could not be read, and why."""

    replica: str
    reason: MissReason
    detail: str
    """For people: e.g. ``GET http://10.0.0.5:8000/metrics: connection refused``."""


@dataclass(frozen=True)
class Readings:
    """One period's answer: a sample per replica that was read, a miss per one that was not."""

    samples: tuple[Sample, ...] = ()
    missing: tuple[Miss, ...] = ()

    @classmethod
    def of(cls, results: Iterable[Sample | Miss]) -> Readings:
        """Each target's sample or miss, sorted into the two, in their order."""
        found = list(results)
        return cls(
            samples=tuple(r for r in found if isinstance(r, Sample)),
            missing=tuple(r for r in found if isinstance(r, Miss)),
        )


class MetricsSource(Protocol):
    """Where samples come from: :class:`DirectScrape` or :class:`PrometheusSource`."""

    def samples(self, targets: Sequence[Target], now: float) -> Readings:
        """A sample or a miss for every target, as of ``now``; never raises for one target."""
        ...

    def gateway_pending(self, namespace: str, name: str, now: float) -> int | None:
        """Requests the gateway holds for the LLMDeployment ``namespace/name`` because no
        replica is ready; None when no gateway reports it. Never raises."""
        ...
