"""The latency objective and vLLM's per-request latency definitions.

Used by :mod:`.report` (attainment of a replay) and :mod:`.oracle` (a replica's capacity
at the objective). Definitions as vLLM's benchmark computes them: TTFT is from the
request's arrival (at the gateway) to its first token; TPOT is ``(e2e - TTFT) /
(output_tokens - 1)``, the time per output token after the first. A request with one
output token is judged on TTFT alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Slo:
    """A latency objective: TTFT and TPOT bounds, in seconds."""

    ttft_s: float
    tpot_s: float

    def __post_init__(self) -> None:
        if self.ttft_s <= 0 or self.tpot_s <= 0:
            raise ValueError(f"SLO bounds must be positive: TTFT {self.ttft_s}, TPOT {self.tpot_s}")


def tpot(first_token: float, last_token: float, output_tokens: int) -> float | None:
    """Seconds per output token after the first (None for a one-token answer)."""
    if output_tokens < 2:
        return None
    return (last_token - first_token) / (output_tokens - 1)


def meets(
    slo: Slo,
    arrival: float,
    first_token: float | None,
    last_token: float | None,
    output_tokens: int,
) -> bool:
    """Whether one request met ``slo`` (a request never answered did not)."""
    if first_token is None or last_token is None:
        return False
    if first_token - arrival > slo.ttft_s:
        return False
    per_token = tpot(first_token, last_token, output_tokens)
    return per_token is None or per_token <= slo.tpot_s


def percentile(values: list[float], share: float) -> float | None:
    """The nearest-rank percentile of ``values`` (``share`` in 0..1); None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))
    return ordered[rank]
