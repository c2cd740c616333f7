"""The data the engine model takes and gives: requests in, tokens and finished requests out.

Who uses it: :mod:`.engine` produces these; :mod:`.metrics`, :mod:`.server` and issue 6's
fleet simulator consume them. Plain frozen dataclasses, so any driver can use them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Request:
    """One generation request as the engine sees it (token counts, not text)."""

    request_id: str
    prompt_tokens: int
    max_tokens: int
    """Output tokens after which the request stops with ``finish_reason="length"``."""
    stop_after: int | None = None
    """If set (and below ``max_tokens``), the request stops here with ``"stop"`` (EOS)."""
    block_hashes: tuple[int, ...] = ()
    """Chained hashes of the prompt's full KV blocks, for prefix caching (may be empty)."""


@dataclass(frozen=True)
class TokenOutput:
    """One output token of one request, sampled at the end of a step."""

    request_id: str
    index: int
    """0 for the first token."""
    time: float
    since_previous: float | None
    """Inter-token latency (None for the first token)."""
    finish_reason: str | None
    """``"length"`` or ``"stop"`` on the last token, else None."""
    since_arrival: float | None = None
    """Time to first token (on the first token only, else None)."""


@dataclass(frozen=True)
class FinishedRequest:
    """Timings of a request that left the engine, for the per-request histograms."""

    request_id: str
    finish_reason: str
    """``"length"``, ``"stop"`` or ``"abort"``."""
    prompt_tokens: int
    output_tokens: int
    max_tokens: int
    cached_tokens: int
    preemptions: int
    arrival: float
    first_scheduled: float | None
    first_token: float | None
    last_token: float | None
    finished: float


@dataclass(frozen=True)
class StepResult:
    """What one engine step produced."""

    start: float
    end: float
    tokens: list[TokenOutput]
    finished: list[FinishedRequest]
    num_tokens: int
    """Tokens computed in the step (prefill + decode), for ``iteration_tokens_total``."""


@dataclass
class EngineCounters:
    """Monotonic totals of one engine, read by the metrics collector."""

    prompt_tokens: int = 0
    prompt_tokens_cached: int = 0
    generation_tokens: int = 0
    prefix_cache_queries: int = 0
    prefix_cache_hits: int = 0
    preemptions: int = 0
    steps: int = 0
    finished: dict[str, int] = field(default_factory=dict)
