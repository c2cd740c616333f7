"""Fit latency tables for simulator profiles from a measured latency CSV.

The input is splitwise-sim's ``perf_model.csv`` (columns ``model, hardware,
tensor_parallel, prompt_size, batch_size, token_size, prompt_time, token_time``;
times in milliseconds): each row is one measured batch of ``batch_size`` prompts of
``prompt_size`` tokens, prefilled together in ``prompt_time`` ms and then decoded at
``token_time`` ms per step.

Who calls it: ``bench/simulator`` (calibration error per profile), the calibration test,
and a maintainer regenerating the knots committed in :mod:`.profiles`. Nothing here runs
in a pod: the CSV is an input of the build, not of the runtime.

The fit is deliberately simple and auditable:

* prefill time of one prompt is a function of its tokens: the measured means become
  knots of a monotone piecewise-linear curve;
* a batch of B prompts costs the single-prompt time of all its tokens times a multiplier
  that depends on B (measured at the most common prompt size);
* decode time per step is a function of the batch size;
* a measurement that would bend a curve the wrong way (more work, much less time) is
  kept out of the knots and reported as an outlier, so the caller can show it rather
  than silently fit the model around it.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean

Knots = tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Measurement:
    """Mean latencies of one (prompt size, batch size, output tokens) cell of the CSV."""

    prompt_size: int
    batch_size: int
    token_size: int
    prompt_ms: float
    token_ms: float
    samples: int


@dataclass(frozen=True)
class Fit:
    """Knots fitted for one (model, hardware, tensor parallel) group, and what was left out."""

    prefill_knots: Knots
    batch_knots: Knots
    decode_knots: Knots
    outliers: tuple[Measurement, ...]


def read_rows(path: Path) -> list[dict[str, str]]:
    """Read the CSV at ``path`` into dict rows (the only I/O in this module)."""
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def measurements(
    rows: Iterable[Mapping[str, str]], model: str, hardware: str, tensor_parallel: int
) -> list[Measurement]:
    """Average the repeated runs of each cell of one group, sorted by cell."""
    cells: dict[tuple[int, int, int], list[tuple[float, float]]] = defaultdict(list)
    for row in rows:
        if (row["model"], row["hardware"], int(row["tensor_parallel"])) != (
            model,
            hardware,
            tensor_parallel,
        ):
            continue
        key = (int(row["prompt_size"]), int(row["batch_size"]), int(row["token_size"]))
        cells[key].append((float(row["prompt_time"]), float(row["token_time"])))
    return [
        Measurement(p, b, t, fmean(v[0] for v in runs), fmean(v[1] for v in runs), len(runs))
        for (p, b, t), runs in sorted(cells.items())
    ]


# A mean this much below the previous knot is a broken measurement, not noise.
OUTLIER_DROP = 0.10


def _monotone(points: dict[float, list[float]]) -> tuple[Knots, set[float]]:
    """Make a non-decreasing curve of the means; report the points that break it.

    A mean slightly below the previous knot (run-to-run noise) is raised to it; one more
    than :data:`OUTLIER_DROP` below is left out and reported.
    """
    knots: list[tuple[float, float]] = []
    dropped: set[float] = set()
    for x in sorted(points):
        y = fmean(points[x])
        if knots and y < knots[-1][1] * (1 - OUTLIER_DROP):
            dropped.add(x)
            continue
        knots.append((x, round(max(y, knots[-1][1]) if knots else y, 3)))
    return tuple(knots), dropped


# A batch multiplier below this is a broken measurement (e.g. a batch that did not fit).
MIN_BATCH_MULTIPLIER = 0.5


def fit(cells: list[Measurement]) -> Fit:
    """Fit the three knot tables of a profile from one group's measurements.

    * ``prefill_knots``: ms to prefill one prompt of N tokens (batch-1 rows);
    * ``batch_knots``: by how much a batch of B prompts of the most common prompt size
      costs more (or less) than one prompt of the same total tokens;
    * ``decode_knots``: ms of one decode step by batch size (all prompt and output
      lengths measured at that batch size averaged: context length is not modelled).
    """
    if not cells:
        raise ValueError("no measurements to fit")
    single: dict[float, list[float]] = defaultdict(list)
    for m in cells:
        if m.batch_size == 1:
            single[float(m.prompt_size)].append(m.prompt_ms)
    prefill_knots, prefill_dropped = _monotone(single)

    sizes: dict[int, set[int]] = defaultdict(set)
    for m in cells:
        sizes[m.prompt_size].add(m.batch_size)
    base = max(sizes, key=lambda p: (len(sizes[p]), -p))
    multipliers: dict[float, list[float]] = defaultdict(list)
    decode: dict[float, list[float]] = defaultdict(list)
    batch_dropped: set[float] = set()
    for m in cells:
        decode[float(m.batch_size)].append(m.token_ms)
        if m.prompt_size != base or m.batch_size == 1:
            continue
        multiplier = m.prompt_ms / interpolate(prefill_knots, float(base * m.batch_size))
        if multiplier < MIN_BATCH_MULTIPLIER:
            batch_dropped.add(float(m.batch_size))
        else:
            multipliers[float(m.batch_size)].append(multiplier)
    measured = [(b, round(fmean(v), 4)) for b, v in sorted(multipliers.items())]
    batch_knots: Knots = ((1.0, 1.0), *measured)
    decode_knots, decode_dropped = _monotone(decode)

    outliers = tuple(
        m
        for m in cells
        if (m.batch_size == 1 and float(m.prompt_size) in prefill_dropped)
        or (m.prompt_size == base and float(m.batch_size) in batch_dropped)
        or float(m.batch_size) in decode_dropped
    )
    return Fit(prefill_knots, batch_knots, decode_knots, outliers)


def interpolate(knots: Knots, x: float) -> float:
    """Piecewise-linear value of ``knots`` at ``x``; the end segments extend outwards.

    A single knot is a constant. The result never goes below zero.
    """
    if len(knots) == 1:
        return knots[0][1]
    if x <= knots[0][0]:
        (x0, y0), (x1, y1) = knots[0], knots[1]
    elif x >= knots[-1][0]:
        (x0, y0), (x1, y1) = knots[-2], knots[-1]
    else:
        lo, hi = 0, len(knots) - 1
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if knots[mid][0] <= x:
                lo = mid
            else:
                hi = mid
        (x0, y0), (x1, y1) = knots[lo], knots[hi]
    if x1 == x0:
        return max(0.0, y1)
    return max(0.0, y0 + (y1 - y0) * (x - x0) / (x1 - x0))
