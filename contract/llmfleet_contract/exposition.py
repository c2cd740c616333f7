"""A parser of the Prometheus text exposition format (version 0.0.4), the engines' and the
gateway's ``/metrics`` pages. Pure and dependency-free.

Called by the operator's direct scrape (:mod:`llmfleet_operator.metrics`) and by tests that
read the engine simulator's or real vLLM's pages. It returns every sample as a
:class:`Series`: ``# HELP`` and ``# TYPE`` lines and blank lines are skipped, a histogram's
``_bucket``, ``_sum`` and ``_count`` are samples like any other, and a timestamp or an
OpenMetrics exemplar after the value is ignored. A line it cannot read raises
:class:`ExpositionError` naming the line: a page that does not parse is never half read.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
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


def parse(text: str) -> list[Series]:
    """Every sample on the page, in page order."""
    found = []
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip() and not line.lstrip().startswith("#"):
            try:
                found.append(_series(line.strip()))
            except ExpositionError as error:
                raise ExpositionError(f"line {number}: {error}: {line[:200]!r}") from None
    return found


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
