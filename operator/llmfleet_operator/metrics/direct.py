"""The embedded metrics source: GET each engine pod's ``/metrics`` directly.

Used by the operator's autoscaling timer when ``metrics.source`` is ``Direct`` (the
default, no Prometheus needed). Pods are read in parallel with short timeouts; a pod
that does not answer, answers with an error or lacks a metric becomes a
:class:`~llmfleet_operator.metrics.readings.Miss` with its reason, never an exception.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from llmfleet_operator.autoscale.inputs import Sample
from llmfleet_operator.metrics.parse import parse_engine
from llmfleet_operator.metrics.readings import Miss, MissReason, Readings, Target

MAX_BODY_BYTES = 4 * 1024 * 1024
"""A vLLM page is ~50 KB; anything past this is not an engine's metrics page."""


class DirectScrape:
    """Reads ``{target.url}/metrics`` of every target, at most ``parallel`` at a time."""

    def __init__(self, timeout_seconds: float = 2.0, parallel: int = 16) -> None:
        self._timeout = timeout_seconds
        self._parallel = parallel
        # Pod IPs are reached directly: an HTTP(S)_PROXY meant for the outside must not apply.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def samples(self, targets: Sequence[Target], now: float) -> Readings:
        """One sample (stamped ``now``) or one miss per target, in the targets' order."""
        if not targets:
            return Readings()
        with ThreadPoolExecutor(max_workers=min(self._parallel, len(targets))) as pool:
            results = list(pool.map(lambda target: self._read(target, now), targets))
        return Readings(
            samples=tuple(r for r in results if isinstance(r, Sample)),
            missing=tuple(r for r in results if isinstance(r, Miss)),
        )

    def _read(self, target: Target, now: float) -> Sample | Miss:
        url = target.url.rstrip("/") + "/metrics"
        try:
            with self._opener.open(url, timeout=self._timeout) as response:
                body: bytes = response.read(MAX_BODY_BYTES)
        except urllib.error.HTTPError as error:
            error.close()
            detail = f"GET {url}: HTTP {error.code}"
            return Miss(target.replica, MissReason.UNREACHABLE, detail)
        except (OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            return Miss(target.replica, MissReason.UNREACHABLE, f"GET {url}: {reason}")
        return parse_engine(body.decode("utf-8", "replace"), target.replica, now)
