"""Trace loading: the Azure and the plain layout, sorting and the origin at 0, speed-up,
overlaid copies, and bad input refused with the file and line named."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmfleet_fleetsim import TraceError, load_trace, trace_from_rows


def write(tmp_path: Path, text: str, name: str = "trace.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_azure_layout(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n"
        "2023-11-16 18:15:50.9951690,396,109\n"
        "2023-11-16 18:16:46.6805900,10,1\n",
        "azure_conv.csv",
    )
    trace = load_trace(path)
    assert trace.name == "azure_conv"
    assert [r.prompt_tokens for r in trace.requests] == [374, 396, 10]
    assert [r.output_tokens for r in trace.requests] == [44, 109, 1]
    assert trace.requests[0].arrival_s == 0
    assert trace.requests[1].arrival_s == pytest.approx(4.314579)
    assert trace.duration_s == pytest.approx(60.0)


def test_plain_layout_is_sorted_and_starts_at_zero(tmp_path: Path) -> None:
    path = write(tmp_path, "arrival_s,prompt_tokens,output_tokens\n12.5,10,2\n10,20,3\n\n")
    trace = load_trace(path)
    assert [(r.arrival_s, r.prompt_tokens) for r in trace.requests] == [(0.0, 20), (2.5, 10)]


def test_faster_divides_arrivals() -> None:
    trace = trace_from_rows("t", [(0.0, 1, 1), (10.0, 1, 1)])
    assert trace.faster(4).requests[1].arrival_s == 2.5
    assert trace.faster(1) is trace
    with pytest.raises(ValueError, match="positive"):
        trace.faster(0)


def test_denser_overlays_shifted_copies_over_the_same_time() -> None:
    trace = trace_from_rows("t", [(0.0, 1, 1), (30.0, 2, 1), (60.0, 3, 1)])
    denser = trace.denser(2, spread_s=20.0)
    # The second copy is 10 s later; its last request wraps around the 60 s to 10 s.
    assert [(r.arrival_s, r.prompt_tokens) for r in denser.requests] == [
        (0.0, 1),
        (10.0, 1),
        (10.0, 3),
        (30.0, 2),
        (40.0, 2),
        (60.0, 3),
    ]
    assert denser.duration_s == trace.duration_s
    assert trace.denser(1) is trace
    with pytest.raises(ValueError, match="at least 1"):
        trace.denser(0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty file"),
        ("a,b,c\n1,2,3\n", "line 1: header 'a,b,c' is neither"),
        ("arrival_s,prompt_tokens,output_tokens\n", "no requests"),
        ("arrival_s,prompt_tokens,output_tokens\n1,2,3\n2,3\n", "line 3: expected 3 columns"),
        ("arrival_s,prompt_tokens,output_tokens\n1,2,3\nsoon,3,4\n", "line 3: bad time 'soon'"),
        ("arrival_s,prompt_tokens,output_tokens\nnan,3,4\n", "line 2: bad time 'nan'"),
        ("arrival_s,prompt_tokens,output_tokens\n1,many,3\n", "line 2: prompt tokens 'many'"),
        ("arrival_s,prompt_tokens,output_tokens\n1,2,0\n", "line 2: output tokens must be"),
        (
            "TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,1,1\n",
            "line 2: bad time 'yesterday'",
        ),
    ],
)
def test_bad_input_names_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(TraceError, match=message) as caught:
        load_trace(path)
    assert str(path) in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="cannot read"):
        load_trace(tmp_path / "absent.csv")
