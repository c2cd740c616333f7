"""``llmfleet usage``: what each tenant used of each model since a time, and what it cost.

Reads Prometheus, over the window from ``--since`` to now:

- requests, and prompt and completion tokens as the engines counted them, by tenant and
  model: the gateways' ``llmfleet_gateway_requests_total`` and ``..._tokens_total``;
- each LLMDeployment's GPU-seconds: the operator's ``llmfleet_operator_gpu_seconds_total``
  (its serving groups times a group's GPUs, over time);
- the seconds each tenant's requests held one of its replicas, by model: the gateways'
  ``llmfleet_gateway_busy_seconds_total``.

Each LLMDeployment's GPU-seconds are split between tenants and models by those busy seconds.
Busy time rather than tokens: a request holds one of an engine's slots (and its KV cache)
for as long as it runs, which is what keeps other requests out, whatever its tokens;
tokens would undercharge a slow generation and overcharge a prompt the prefix cache served.
Time no request held a replica is split the same way: a fleet is sized and paid for the load
its tenants bring. A window in which an LLMDeployment served nobody shows its GPU-seconds
as ``(idle)``. So the tenants' GPU-seconds add up to the fleet's. Cost is GPU-hours times
``--gpu-hour-price``, else each LLMDeployment's price as the operator exports it
(``llmfleet_operator_gpu_hour_price``: its ``spec.placement.gpuHourPrice``, or the operator's
``--gpu-hour-price``); the GPU-seconds its ready spot replicas held
(``llmfleet_operator_spot_gpu_seconds_total``) at its spot price where it has one
(``spec.placement.spot.gpuHourPrice``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from prometheus_api_client.exceptions import PrometheusApiClientException
from prometheus_api_client.prometheus_connect import PrometheusConnect
from urllib3.util.retry import Retry

from llmfleet_contract.metrics import LLMDEPLOYMENT, LLMDEPLOYMENT_NAMESPACE
from llmfleet_operator.metrics.prometheus import redacted

IDLE = "(idle)"
"""The tenant of GPU-seconds no request used in the window."""
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

Deployment = tuple[str, str]
"""An LLMDeployment's (namespace, name)."""


@dataclass
class Row:
    """One tenant's use of one model in the window."""

    tenant: str
    model: str
    requests: float = 0.0
    prompt_tokens: float = 0.0
    completion_tokens: float = 0.0
    busy_seconds: float = 0.0
    gpu_seconds: float = 0.0
    cost: float | None = None


def window_seconds(since: str, now: float) -> float:
    """``--since`` as seconds before ``now``: a duration (``90m``, ``24h``, ``7d``) or an
    ISO 8601 time with its offset."""
    match = _DURATION.match(since.strip())
    if match:
        seconds = float(match.group(1)) * _SECONDS[match.group(2)]
    else:
        try:
            moment = datetime.fromisoformat(since.strip())
        except ValueError:
            raise ValueError(
                f"--since {since!r}: expected a duration (30m, 24h, 7d) or a time such as"
                " 2026-12-01T00:00:00+00:00"
            ) from None
        if moment.tzinfo is None:
            raise ValueError(f"--since {since!r}: give the time's offset (+00:00 for UTC)")
        seconds = now - moment.timestamp()
    if seconds <= 0:
        raise ValueError(f"--since {since!r} is not in the past")
    return seconds


@dataclass
class Share:
    """What one (tenant, model) pair used of the LLMDeployments behind it."""

    busy_seconds: float = 0.0
    gpu_seconds: float = 0.0
    cost: float | None = 0.0
    """None when an LLMDeployment it used has no price."""

    def add(self, seconds: float, gpus: float, price: float | None) -> None:
        self.busy_seconds += seconds
        self.gpu_seconds += gpus
        self.cost = None if price is None or self.cost is None else self.cost + gpus / 3600 * price


def attribute(
    gpu_seconds: Mapping[Deployment, float],
    busy: Mapping[tuple[Deployment, str, str], float],
    prices: Mapping[Deployment, float],
) -> dict[tuple[str, str], Share]:
    """Each (tenant, model) pair's share: each LLMDeployment's GPU-seconds split by the busy
    seconds of its (model, tenant) pairs, priced at its GPU-hour price; an LLMDeployment
    nobody used is ``(IDLE, its namespace/name)``."""
    found: dict[tuple[str, str], Share] = {}
    for deployment in sorted(set(gpu_seconds) | {key[0] for key in busy}):
        used = {key[1:]: s for key, s in busy.items() if key[0] == deployment and s > 0}
        total, held = sum(used.values()), gpu_seconds.get(deployment, 0.0)
        price = prices.get(deployment)
        if total <= 0:
            if held > 0:
                idle = (IDLE, f"{deployment[0]}/{deployment[1]}")
                found.setdefault(idle, Share()).add(0.0, held, price)
            continue
        for (model, tenant), seconds in used.items():
            found.setdefault((tenant, model), Share()).add(seconds, held * seconds / total, price)
    return found


class Usage:
    """The window's figures from a Prometheus at ``url``."""

    def __init__(self, url: str, window_s: float, timeout_s: float = 10.0) -> None:
        self._client = PrometheusConnect(url=url, retry=Retry(total=0))
        self._window = f"{max(1000, round(window_s * 1000))}ms"
        """To the millisecond: a window rounded to whole seconds can start after ``--since``,
        and the requests of its first moments go uncounted."""
        self._timeout = timeout_s

    def _query(self, promql: str) -> list[tuple[dict[str, str], float]]:
        found = self._client.custom_query(promql, params={"timeout": f"{round(self._timeout)}s"})
        return [(series["metric"], float(series["value"][1])) for series in found]

    def _increase(self, metric: str, by: Iterable[str]) -> list[tuple[dict[str, str], float]]:
        """What ``metric`` counted in the window. ``increase()`` alone misses what a series
        counted before its first sample, and a series is born with its first count (a
        tenant's first request to a model, a new gateway pod): one born in the window counts
        from zero, so its value now is what it counted."""
        window = self._window
        grown = f"(increase({metric}[{window}]) and {metric} offset {window})"
        born = f"({metric} unless {metric} offset {window})"
        return self._query(f"sum by ({', '.join(by)}) ({grown} or {born})")

    def rows(self, price: float | None) -> list[Row]:
        """Every (tenant, model) pair with a figure in the window; costed at ``price`` a
        GPU-hour, else at each LLMDeployment's price as the operator exports it."""
        try:
            return self._rows(price)
        finally:
            self._client.close()

    def _rows(self, price: float | None) -> list[Row]:
        rows: dict[tuple[str, str], Row] = {}

        def row(tenant: str, model: str) -> Row:
            return rows.setdefault((tenant, model), Row(tenant or "(none)", model))

        for labels, value in self._increase("llmfleet_gateway_requests_total", ("tenant", "model")):
            row(labels.get("tenant", ""), labels.get("model", "")).requests += value
        tokens = self._increase("llmfleet_gateway_tokens_total", ("tenant", "model", "kind"))
        for labels, value in tokens:
            found = row(labels.get("tenant", ""), labels.get("model", ""))
            if labels.get("kind") == "prompt":
                found.prompt_tokens += value
            elif labels.get("kind") == "completion":
                found.completion_tokens += value
        held = {
            (labels.get("namespace", ""), labels.get("llmdeployment", "")): value
            for labels, value in self._increase(
                "llmfleet_operator_gpu_seconds_total", ("namespace", "llmdeployment")
            )
        }
        by = (LLMDEPLOYMENT_NAMESPACE, LLMDEPLOYMENT, "model", "tenant")
        busy = {
            (
                (labels.get(LLMDEPLOYMENT_NAMESPACE, ""), labels.get(LLMDEPLOYMENT, "")),
                labels.get("model", ""),
                labels.get("tenant", ""),
            ): value
            for labels, value in self._increase("llmfleet_gateway_busy_seconds_total", by)
        }
        prices = dict.fromkeys(held, price) if price is not None else self._prices(held)
        for (tenant, model), share in attribute(held, busy, prices).items():
            found = row(tenant, model)
            found.busy_seconds, found.gpu_seconds, found.cost = (
                share.busy_seconds,
                share.gpu_seconds,
                share.cost,
            )
        return sorted(rows.values(), key=lambda r: (r.tenant, r.model))

    def _prices(self, held: Mapping[Deployment, float]) -> dict[Deployment, float]:
        """Each LLMDeployment's GPU-hour price as the operator last exported it; with a spot
        price too, the window's mean of the two, weighted by the GPU-seconds ``held`` on
        spot (``llmfleet_operator_spot_gpu_seconds_total``)."""
        prices = self._last("llmfleet_operator_gpu_hour_price")
        spot_prices = self._last("llmfleet_operator_spot_gpu_hour_price")
        if not spot_prices:
            return prices
        on_spot = {
            (labels.get("namespace", ""), labels.get("llmdeployment", "")): value
            for labels, value in self._increase(
                "llmfleet_operator_spot_gpu_seconds_total", ("namespace", "llmdeployment")
            )
        }
        for deployment, spot_price in spot_prices.items():
            price, total = prices.get(deployment), held.get(deployment, 0.0)
            if price is not None and total > 0:
                spot = min(total, on_spot.get(deployment, 0.0))
                prices[deployment] = (price * (total - spot) + spot_price * spot) / total
        return prices

    def _last(self, metric: str) -> dict[Deployment, float]:
        """Each LLMDeployment's last value of ``metric`` in the window."""
        last = f"last_over_time({metric}[{self._window}])"
        return {
            (labels.get("namespace", ""), labels.get("llmdeployment", "")): value
            for labels, value in self._query(f"max by (namespace, llmdeployment) ({last})")
        }


def table(rows: list[Row], currency: str) -> str:
    header = ["tenant", "model", "requests", "prompt tokens", "completion tokens", "GPU-hours"]
    priced = any(r.cost is not None for r in rows)
    lines = [header + ([f"cost ({currency})"] if priced else [])]
    for r in rows:
        cells = [r.tenant, r.model, f"{r.requests:,.0f}", f"{r.prompt_tokens:,.0f}"]
        cells += [f"{r.completion_tokens:,.0f}", f"{r.gpu_seconds / 3600:,.3f}"]
        if priced:
            cells.append("-" if r.cost is None else f"{r.cost:,.2f}")
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="llmfleet usage", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--prometheus",
        required=True,
        help="the Prometheus that scrapes the gateways and the operator",
    )
    parser.add_argument(
        "--since",
        default="24h",
        help="a duration (30m, 24h, 7d) or an ISO 8601 time with its offset",
    )
    parser.add_argument(
        "--tenant", action="append", help="only this tenant, namespace/name (repeatable)"
    )
    parser.add_argument(
        "--gpu-hour-price",
        type=float,
        help="what a GPU-hour costs, for every model (default: each LLMDeployment's price as"
        " the operator exports it)",
    )
    parser.add_argument("--currency", default="USD")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    now = time.time()
    try:
        window = window_seconds(args.since, now)
    except ValueError as error:
        parser.error(str(error))
    try:
        rows = Usage(args.prometheus, window).rows(args.gpu_hour_price)
    except (PrometheusApiClientException, OSError) as error:
        where = redacted(args.prometheus)  # a URL's credentials stay out of the message
        print(f"llmfleet usage: Prometheus at {where} did not answer: {error}", file=sys.stderr)
        return 1
    if args.tenant:
        rows = [r for r in rows if r.tenant in args.tenant]
    if args.json:
        document: dict[str, Any] = {
            "since": datetime.fromtimestamp(now - window).astimezone().isoformat(),
            "until": datetime.fromtimestamp(now).astimezone().isoformat(),
            "currency": args.currency if any(r.cost is not None for r in rows) else None,
            "rows": [asdict(r) for r in rows],
        }
        print(json.dumps(document, indent=2))
    else:
        print(table(rows, args.currency))
    return 0
