"""The embedded metrics source: GET each engine pod's ``/metrics`` directly.

Used by the operator's autoscaler (:mod:`llmfleet_operator.autoscaler`) when
``metrics.source`` is ``Direct`` (the default, no Prometheus needed). Pods are read in
parallel with short timeouts; a pod that does not answer, answers with an error or lacks a
metric becomes a :class:`~llmfleet_operator.metrics.readings.Miss` with its reason, never an
exception."""

from __future__ import annotations

import http.client
import logging
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from llmfleet_operator.autoscale.inputs import Sample
from llmfleet_operator.metrics.parse import (
    parse_engine,
    pending_prefill_tokens,
    pending_requests,
)
from llmfleet_operator.metrics.readings import Miss, MissReason, Readings, Target

log = logging.getLogger("llmfleet.metrics")

MAX_BODY_BYTES = 4 * 1024 * 1024
"""A vLLM page is ~50 KB; anything past this is not an engine's metrics page."""

READ_ERRORS = (OSError, ValueError, http.client.HTTPException)
"""What a GET of a page may raise: refused, timed out, not HTTP, or not answering HTTP."""

GATEWAY_PAGE_SECONDS = 5.0
"""A gateway's page (or its failure) serves every LLMDeployment's period for this long:
each gateway is read once per round of periods, not once per LLMDeployment, and an
unreachable one costs one timeout, not one per LLMDeployment."""


class DirectScrape:
    """Reads ``{target.url}/metrics`` of every target, at most ``parallel`` at a time, and
    the gateways' ``/metrics`` pages at ``gateway_urls`` for each replica's pending prefill
    tokens and the requests waiting on zero."""

    def __init__(
        self,
        timeout_seconds: float = 2.0,
        parallel: int = 16,
        gateway_urls: Sequence[str] | Callable[[float], Sequence[str]] = (),
    ) -> None:
        """``gateway_urls``: the gateways' base URLs, or a function of the time giving them
        (:class:`~llmfleet_operator.gateways.GatewayPods`: every gateway replica)."""
        self._timeout = timeout_seconds
        self._parallel = parallel
        self._gateway_urls = gateway_urls
        self._pages: dict[str, tuple[float, str | None]] = {}
        # Pod IPs are reached directly: an HTTP(S)_PROXY meant for the outside must not apply.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def samples(self, targets: Sequence[Target], now: float) -> Readings:
        """One sample (stamped ``now``) or one miss per target, in the targets' order."""
        if not targets:
            return Readings()
        tokens = self._pending_prefill_tokens(now)
        with ThreadPoolExecutor(max_workers=min(self._parallel, len(targets))) as pool:
            results = list(pool.map(lambda target: self._read(target, now, tokens), targets))
        return Readings.of(results)

    def gateway_pending(self, namespace: str, name: str, now: float) -> int | None:
        """Requests every gateway holds for ``namespace/name``; None if none reports it."""
        counts = []
        for url in self._gateways(now):
            page = self._gateway_page(url, now)
            if page is None:
                continue
            try:
                counts.append(pending_requests(page, namespace, name))
            except ValueError as error:
                log.warning("Gateway metrics at %s unreadable: %s", url, error)
        known = [count for count in counts if count is not None]
        return sum(known) if known else None

    def _pending_prefill_tokens(self, now: float) -> dict[tuple[str, str], int] | None:
        """Prompt tokens the gateways sent each replica with no first token yet, by
        (namespace, replica); None when no gateway page read exports them."""
        found: dict[tuple[str, str], int] | None = None
        for url in self._gateways(now):
            page = self._gateway_page(url, now)
            if page is None:
                continue
            try:
                tokens = pending_prefill_tokens(page)
            except ValueError as error:
                log.warning("Gateway metrics at %s unreadable: %s", url, error)
                continue
            if tokens is not None:
                found = found if found is not None else {}
                for key, count in tokens.items():
                    found[key] = found.get(key, 0) + count
        return found

    def _gateways(self, now: float) -> list[str]:
        found = self._gateway_urls
        urls = [url.rstrip("/") + "/metrics" for url in (found(now) if callable(found) else found)]
        for gone in set(self._pages) - set(urls):  # a gateway pod that left
            del self._pages[gone]
        return urls

    def _gateway_page(self, url: str, now: float) -> str | None:
        """The gateway's page, read at most once per :data:`GATEWAY_PAGE_SECONDS`; None
        while it cannot be read."""
        cached = self._pages.get(url)
        if cached is not None and 0 <= now - cached[0] < GATEWAY_PAGE_SECONDS:
            return cached[1]
        page: str | None = None
        try:
            page = self._get(url)
        except READ_ERRORS as error:
            log.warning("Gateway metrics at %s unreadable: %s", url, error)
        self._pages[url] = (now, page)
        return page

    def _get(self, url: str) -> str:
        with self._opener.open(url, timeout=self._timeout) as response:
            body: bytes = response.read(MAX_BODY_BYTES)
        return body.decode("utf-8", "replace")

    def _read(
        self, target: Target, now: float, tokens: dict[tuple[str, str], int] | None
    ) -> Sample | Miss:
        url = target.url.rstrip("/") + "/metrics"
        try:
            text = self._get(url)
        except urllib.error.HTTPError as error:
            error.close()
            detail = f"GET {url}: HTTP {error.code}"
            return Miss(target.replica, MissReason.UNREACHABLE, detail)
        except READ_ERRORS as error:
            reason = getattr(error, "reason", error)
            return Miss(target.replica, MissReason.UNREACHABLE, f"GET {url}: {reason}")
        pending = None if tokens is None else tokens.get((target.namespace, target.pod), 0)
        return parse_engine(text, target.replica, now, pending)
