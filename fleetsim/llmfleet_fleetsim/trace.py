"""Request traces: read a CSV into arrivals and token counts, replay it faster or denser.

Called by :func:`llmfleet_fleetsim.simulate`'s callers (the CLI, the autoscaling
bench) and by the oracle. Two CSV layouts are read, told apart by the header:

* the Azure LLM inference traces (2023): ``TIMESTAMP,ContextTokens,GeneratedTokens``,
  timestamps such as ``2023-11-16 18:15:46.6805900``;
* a plain one: ``arrival_s,prompt_tokens,output_tokens`` (seconds, any origin).

Arrivals are shifted so that the first request arrives at 0 and sorted (stable). A bad
row raises :class:`TraceError` naming the file and the line.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
PLAIN_COLUMNS = ("arrival_s", "prompt_tokens", "output_tokens")


PUBLIC_TRACES = (
    "The Azure LLM inference traces of 2023 (azure_llm_2023_code.csv and"
    " azure_llm_2023_conv.csv: AzureLLMInferenceTrace_code.csv and _conv.csv of the"
    " Azure/AzurePublicDataset repository, CC-BY-4.0) are not in this repository: download"
    " them and point the bench at their folder"
)
"""Where a user gets the public traces the benches replay (they are too large to commit)."""


class TraceError(ValueError):
    """The trace file cannot be read; the message names the line."""


@dataclass(frozen=True)
class TraceRequest:
    """One request of a trace."""

    arrival_s: float
    """Seconds since the first request of the trace."""
    prompt_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class Trace:
    """A replayable trace: requests in arrival order, the first at 0."""

    name: str
    requests: tuple[TraceRequest, ...]

    @property
    def duration_s(self) -> float:
        """Seconds from the first arrival to the last."""
        return self.requests[-1].arrival_s if self.requests else 0.0

    def faster(self, speed: float) -> Trace:
        """The same requests arriving ``speed`` times faster (``speed`` times the load)."""
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        if speed == 1:
            return self
        return replace(
            self,
            requests=tuple(replace(r, arrival_s=r.arrival_s / speed) for r in self.requests),
        )

    def denser(self, copies: int, spread_s: float = 60.0) -> Trace:
        """``copies`` times the load over the same time: the trace overlaid on itself,
        the ``i``-th copy shifted by ``i x spread_s / copies`` seconds and wrapped around
        the duration. Unlike :meth:`faster`, ramps keep their length (a 20-minute ramp
        stays 20 minutes, against a fixed startup and scale-down window); only bursts
        shorter than ``spread_s`` are smoothed, since the copies' shifts decorrelate them."""
        if copies < 1:
            raise ValueError(f"copies must be at least 1, got {copies}")
        if copies == 1 or self.duration_s == 0:
            return self
        duration = self.duration_s
        shifted = []
        for i in range(copies):
            for request in self.requests:
                arrival = request.arrival_s + i * spread_s / copies
                if arrival > duration:  # wrapped around to the start
                    arrival -= duration
                shifted.append(replace(request, arrival_s=arrival))
        return replace(self, requests=tuple(sorted(shifted, key=lambda r: r.arrival_s)))


def trace_from_rows(name: str, rows: list[tuple[float, int, int]]) -> Trace:
    """A trace from ``(arrival_s, prompt_tokens, output_tokens)`` rows (tests, benches)."""
    ordered = sorted(rows, key=lambda row: row[0])
    start = ordered[0][0] if ordered else 0.0
    return Trace(name, tuple(TraceRequest(a - start, p, o) for a, p, o in ordered))


def load_trace(path: str | Path) -> Trace:
    """Read a trace CSV in either layout (see the module docstring)."""
    path = Path(path)
    try:
        with path.open(newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise TraceError(f"{path}: empty file, expected a header line")
            columns = tuple(cell.strip() for cell in header)
            if columns[:3] == AZURE_COLUMNS:
                parse_time = _azure_time
            elif columns[:3] == PLAIN_COLUMNS:
                parse_time = _seconds
            else:
                raise TraceError(
                    f"{path}: line 1: header {','.join(columns)!r} is neither"
                    f" {','.join(AZURE_COLUMNS)} nor {','.join(PLAIN_COLUMNS)}"
                )
            rows = [
                _row(path, line, cells, parse_time)
                for line, cells in enumerate(reader, start=2)
                if cells
            ]
    except OSError as error:
        raise TraceError(f"{path}: cannot read: {error.strerror or error}") from error
    if not rows:
        raise TraceError(f"{path}: no requests after the header")
    return trace_from_rows(path.stem, rows)


def _row(
    path: Path, line: int, cells: list[str], parse_time: Callable[[str], float]
) -> tuple[float, int, int]:
    if len(cells) < 3:
        raise TraceError(f"{path}: line {line}: expected 3 columns, got {len(cells)}")
    try:
        arrival = parse_time(cells[0].strip())
    except ValueError:
        raise TraceError(f"{path}: line {line}: bad time {cells[0]!r}") from None
    prompt = _count(path, line, "prompt tokens", cells[1])
    output = _count(path, line, "output tokens", cells[2])
    return arrival, prompt, output


def _count(path: Path, line: int, what: str, cell: str) -> int:
    try:
        value = int(cell.strip())
    except ValueError:
        raise TraceError(f"{path}: line {line}: {what} {cell!r} is not an integer") from None
    if value < 1:
        raise TraceError(f"{path}: line {line}: {what} must be at least 1, got {value}")
    return value


def _azure_time(text: str) -> float:
    # Naive times are read as UTC: no daylight-saving jump inside a trace.
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def _seconds(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value
