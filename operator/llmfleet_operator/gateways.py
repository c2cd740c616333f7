"""Where the gateways are: the ready pods of the gateway's Deployment, found through the Kube seam.

Who uses it: :mod:`.operator_main` hands :class:`GatewayPods` to
:class:`~llmfleet_operator.metrics.DirectScrape` when ``--gateway-selector`` is set (the
chart's default), so the autoscaler reads every gateway replica's ``/metrics`` and sums
their pending requests and prefill tokens; a Service address would reach one replica per
read. The list is refreshed at most once per ``refresh_seconds``; while the API server does
not answer, the last list serves.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from llmfleet_contract.pods import ready_url
from llmfleet_operator.kube import Kube, KubeError
from llmfleet_operator.resources import POD

log = logging.getLogger("llmfleet.gateways")


class GatewayPods:
    """The base URLs of the ready pods that ``selector`` picks in ``namespace``."""

    def __init__(
        self, kube: Kube, namespace: str, selector: str, port: int, refresh_seconds: float = 5.0
    ) -> None:
        self._kube, self._namespace, self._selector = kube, namespace, selector
        self._port, self._refresh = port, refresh_seconds
        self._found: tuple[float, tuple[str, ...]] | None = None
        self._lock = threading.Lock()

    def __call__(self, now: float) -> Sequence[str]:
        with self._lock:
            if self._found is not None and 0 <= now - self._found[0] < self._refresh:
                return self._found[1]
            try:
                pods = self._kube.list(POD, self._namespace, self._selector)
            except KubeError as error:
                log.warning("Could not list the gateway pods: %s", error.message)
                urls = self._found[1] if self._found else ()
            else:
                found = (ready_url(pod, self._port) for pod in pods)
                urls = tuple(sorted(url for url in found if url))
            self._found = (now, urls)
            return urls
