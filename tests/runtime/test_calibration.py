"""The calibrated profiles reproduce the measured latency table within 10%.

Cases: for every calibrated profile and every measured cell (prompt size x batch size x
output length) except the outliers the fitter reports, a batch of that many prompts run
through the engine model gives a time to (last) first token within 10% of the measured
``prompt_time`` and a median decode step within 10% of ``token_time``; refitting the CSV
gives the knots committed in ``profiles.py``; the outliers are few and named.
"""

from __future__ import annotations

from pathlib import Path
from statistics import median

import pytest

from llmfleet_runtime.simulator import CALIBRATED, Engine, Request
from llmfleet_runtime.simulator.calibrate import Measurement, fit, measurements, read_rows
from llmfleet_runtime.simulator.profiles import CSV_SOURCE, Profile

TOLERANCE = 0.10
DECODE_STEPS = 12


def simulate(profile: Profile, prompt: int, batch: int) -> tuple[float, float]:
    """(ms until every request has its first token, median decode step ms)."""
    blocks = batch * -(-(prompt + DECODE_STEPS + 1) // profile.block_size)
    profile = profile.with_overrides(
        max_model_len=prompt + DECODE_STEPS + 1,
        num_gpu_blocks=max(profile.num_gpu_blocks, blocks),
        max_num_seqs=max(profile.max_num_seqs, batch),
        # The table measured each batch prefilled in one pass: no chunking.
        max_num_batched_tokens=max(profile.max_num_batched_tokens, batch * (prompt + 1)),
    )
    engine = Engine(profile, enable_prefix_caching=False)
    for i in range(batch):
        engine.add(Request(f"r{i}", prompt, DECODE_STEPS), 0.0)
    engine.advance(0.0)
    first: dict[str, float] = {}
    gaps: list[float] = []
    while (t := engine.next_event_time()) is not None:
        for step in engine.advance(t):
            if len(first) == batch and len(step.tokens) == batch:
                gaps.append(step.end - step.start)
            for token in step.tokens:
                first.setdefault(token.request_id, token.time)
    return max(first.values()) * 1000, median(gaps) * 1000


def cells(csv: Path, name: str) -> tuple[list[Measurement], tuple[Measurement, ...]]:
    model, hardware, tp = CSV_SOURCE[name]
    found = measurements(read_rows(csv), model, hardware, tp)
    return found, fit(found).outliers


@pytest.mark.parametrize("name", sorted(CALIBRATED))
def test_profile_reproduces_measurements(perf_csv: Path, name: str) -> None:
    found, outliers = cells(perf_csv, name)
    errors = []
    for cell in found:
        if cell in outliers:
            continue
        ttft, step = simulate(CALIBRATED[name], cell.prompt_size, cell.batch_size)
        prefill_err = abs(ttft - cell.prompt_ms) / cell.prompt_ms
        decode_err = abs(step - cell.token_ms) / cell.token_ms
        if prefill_err > TOLERANCE or decode_err > TOLERANCE:
            errors.append((cell, round(ttft, 1), round(step, 2), prefill_err, decode_err))
    assert not errors, errors


@pytest.mark.parametrize("name", sorted(CALIBRATED))
def test_committed_knots_are_the_fit(perf_csv: Path, name: str) -> None:
    found, _ = cells(perf_csv, name)
    fitted = fit(found)
    assert CALIBRATED[name].prefill_knots == fitted.prefill_knots
    assert CALIBRATED[name].prefill_batch_knots == fitted.batch_knots
    assert CALIBRATED[name].decode_knots == fitted.decode_knots


def test_outliers_are_few(perf_csv: Path) -> None:
    total = 0
    for name in CALIBRATED:
        found, outliers = cells(perf_csv, name)
        assert len(outliers) <= 1, (name, outliers)
        total += len(found)
    assert total > 100
