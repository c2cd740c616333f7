"""A parser of the Prometheus text exposition format (version 0.0.4), the engines' and the
gateway's ``/metrics`` pages. Pure and dependency-free.

Called by the operator's direct scrape (:mod:`llmfleet_operator.metrics`) and by tests that
read the engine simulator's or real vLLM's pages. It returns a :class:`Page`: every sample
as a :class:`Series` (a histogram's ``_bucket``, ``_sum`` and ``_count`` are samples like any
other; a timestamp or an OpenMetrics exemplar after the value is ignored) and the families
the page declares in ``# TYPE`` lines, so that a family with no series (a gauge with labels
that has nothing to report) reads as exported and empty, not as absent. A line it cannot read raises
:class:`ExpositionError` naming the line: a page that does not parse is never half read.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_TYPE = re.compile(r"#\s*TYPE\s+([a-zA-Z_:][a-zA-Z0-9_:]*)\s")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:,|(?=\}))')
_CLOSE = re.compile(r"\s*\}")
_VALUE = re.compile(r"\s+(\S+)(?:\s+-?[0-9]+)?\s*(?:#.*)?$")
_UNESCAPE = re.compile(r"\\(.)")
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}
_SPECIAL = {"+Inf": math.inf, "-Inf": -math.inf, "Inf": math.inf, "NaN": math.nan}


class ExpositionError(ValueError):
    """The text is not Prometheus exposition."""


@dataclass(frozen=True)
class Series:
    """One sample: a name, its labels and its value."""

    name: str
    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class Page:
    """A parsed page: its samples in page order and the families it declares."""

    series: list[Series]
    families: frozenset[str]

    def named(self, name: str) -> list[Series]:
        return [series for series in self.series if series.name == name]

    def values(self) -> dict[str, list[float]]:
        """Every sample value, by sample name (one value per label set)."""
        found: dict[str, list[float]] = {}
        for series in self.series:
            found.setdefault(series.name, []).append(series.value)
        return found


def parse(text: str) -> Page:
    """The page's samples and declared families."""
    found, families = [], set()
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.strip()
        if line.startswith("#"):
            if declared := _TYPE.match(line + " "):
                families.add(declared[1])
        elif line:
            try:
                found.append(_series(line))
            except ExpositionError as error:
                raise ExpositionError(f"line {number}: {error}: {line[:200]!r}") from None
    return Page(found, frozenset(families))


def _series(line: str) -> Series:
    name = _NAME.match(line)
    if name is None:
        raise ExpositionError("no metric name")
    labels: dict[str, str] = {}
    at = name.end()
    if line.startswith("{", at):
        at += 1
        while (close := _CLOSE.match(line, at)) is None:
            label = _LABEL.match(line, at)
            if label is None:
                raise ExpositionError("malformed labels")
            labels[label[1]] = _UNESCAPE.sub(lambda m: _ESCAPES.get(m[1], m[0]), label[2])
            at = label.end()
        at = close.end()
    value = _VALUE.match(line, at)
    if value is None:
        raise ExpositionError("no value")
    return Series(name[0], labels, _number(value[1]))


def _number(text: str) -> float:
    if text in _SPECIAL:
        return _SPECIAL[text]
    try:
        return float(text)
    except ValueError:
        raise ExpositionError(f"{text!r} is not a number") from None
