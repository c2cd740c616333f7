"""The calibrated profiles reproduce the measured latency table within 10%.

Cases: for every calibrated profile and every measured cell (prompt size x batch size x
output length) except the outliers the fitter reports, a batch of that many prompts run
through the engine model gives a time to (last) first token within 10% of the measured
``prompt_time`` and a median decode step within 10% of ``token_time``; refitting the CSV
gives the knots committed in ``profiles.py``; the outliers are few and named; the API lists
exactly the built-in profiles.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from llmfleet_contract.engine import SIMULATOR_PROFILES
from llmfleet_runtime.simulator import CALIBRATED, PROFILES
from llmfleet_runtime.simulator.calibrate import Measurement, fit, measurements, read_rows
from llmfleet_runtime.simulator.check import cell_errors
from llmfleet_runtime.simulator.profiles import CSV_SOURCE

TOLERANCE = 0.10


def cells(csv: Path, name: str) -> tuple[list[Measurement], tuple[Measurement, ...]]:
    model, hardware, tp = CSV_SOURCE[name]
    found = measurements(read_rows(csv), model, hardware, tp)
    return found, fit(found).outliers


@pytest.mark.parametrize("name", sorted(CALIBRATED))
def test_profile_reproduces_measurements(perf_csv: Path, name: str) -> None:
    found, outliers = cells(perf_csv, name)
    kept = [cell for cell in found if cell not in outliers]
    errors = [
        e
        for e in cell_errors(CALIBRATED[name], kept)
        if e.prefill_error > TOLERANCE or e.decode_error > TOLERANCE
    ]
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


def test_the_api_names_exactly_the_built_in_profiles() -> None:
    """``spec.engine.simulator.profile`` (the contract's list) and the simulator agree."""
    assert sorted(PROFILES) == sorted(SIMULATOR_PROFILES)
