"""The contract's exposition parser reads what prometheus-client's own parser reads.

Cases: a real vLLM 0.32 page and pages that prometheus-client renders from random registries
(counters, gauges, histograms; label values with quotes, backslashes, newlines, braces and
commas; NaN and infinities) parse to the same samples as ``prometheus_client.parser``;
timestamps and OpenMetrics exemplars after a value are ignored; a family declared with no
series is known to the page (and, with the gauge prometheus-client renders for a labelled
family that has nothing to report, to the gateway readers); a malformed line raises
``ExpositionError`` naming its line.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from llmfleet_contract.exposition import ExpositionError, Series, parse
from tests.runtime.conftest import FIXTURES

Key = tuple[str, tuple[tuple[str, str], ...]]


def ours(text: str) -> dict[Key, float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in parse(text).series}


def theirs(text: str) -> dict[Key, float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): float(sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def same(a: dict[Key, float], b: dict[Key, float]) -> bool:
    return a.keys() == b.keys() and all(
        (math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k] for k in a
    )


def test_a_real_vllm_page() -> None:
    text = (FIXTURES / "vllm-0.32.0-cpu-metrics.txt").read_text()
    found = ours(text)
    assert len(found) > 100
    assert same(found, theirs(text))


label_values = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",)) | st.sampled_from('"\\\n{},= '),
    max_size=12,
)
values = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**6), 10**6)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    gauges=st.lists(st.tuples(label_values, values), max_size=4),
    counts=st.lists(st.tuples(label_values, st.integers(0, 10**6)), max_size=3),
    observations=st.lists(st.floats(0, 100), max_size=5),
)
def test_random_registries(
    gauges: list[tuple[str, float]], counts: list[tuple[str, int]], observations: list[float]
) -> None:
    registry = CollectorRegistry()
    gauge = Gauge("vllm:some_gauge", "a gauge", ["engine", "model_name"], registry=registry)
    for index, (label, value) in enumerate(gauges):
        gauge.labels(str(index), label).set(value)
    counter = Counter("llmfleet_some_total", "a counter", ["replica"], registry=registry)
    for label, count in counts:
        counter.labels(label).inc(count)
    histogram = Histogram("some_seconds", "a histogram", registry=registry)
    for observation in observations:
        histogram.observe(observation)
    text = generate_latest(registry).decode()
    assert same(ours(text), theirs(text))


def test_timestamps_exemplars_and_specials() -> None:
    text = (
        "# HELP a doc\n# TYPE a gauge\n"
        'a{x="1"} +Inf 1700000000000\n'
        'b_total{y="q\\"uo\\\\te\\n"} 3 # {trace_id="t"} 1.0\n'
        "c NaN\n"
        "d -Inf\n\n"
        "# EOF\n"
    )
    page = parse(text)
    assert page.families == {"a"}
    got = page.series
    assert got[0] == Series("a", {"x": "1"}, math.inf)
    assert got[1] == Series("b_total", {"y": 'q"uo\\te\n'}, 3.0)
    assert math.isnan(got[2].value)
    assert got[3].value == -math.inf


def test_a_declared_family_without_series() -> None:
    registry = CollectorRegistry()
    Gauge("llmfleet_gateway_pending_prefill_tokens", "doc", ["replica"], registry=registry)
    page = parse(generate_latest(registry).decode())
    assert page.series == []
    assert "llmfleet_gateway_pending_prefill_tokens" in page.families


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("9lives 1", "no metric name"),
        ('a{x="1" 1', "malformed labels"),
        ("a{x=1} 1", "malformed labels"),
        ('a{x="1"}', "no value"),
        ("a", "no value"),
        ("a one", "'one' is not a number"),
        ('a{x="1" y="2"} 1', "malformed labels"),
    ],
)
def test_malformed_lines_are_refused(line: str, why: str) -> None:
    with pytest.raises(ExpositionError, match=f"line 2: {why}"):
        parse("ok 1\n" + line + "\n")
