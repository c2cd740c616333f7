"""Calibration error per simulator profile against the measured latency table.

    .venv/bin/python bench/simulator/calibration.py [--csv PATH] [--print-knots]

Replays every cell of splitwise-sim's table (llama2-70b, A100/H100, TP 2/4/8) through the
engine model and reports, per profile, the mean and worst relative error of the prefill
time (time to the batch's last first token) and of the decode step; cells the fitter
reports as outliers are listed and left out. Writes bench/results/simulator-calibration.json.
``--print-knots`` prints the fitted knot tables to paste into ``profiles.py``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from statistics import fmean

from llmfleet_runtime.simulator.calibrate import fit, measurements, read_rows
from llmfleet_runtime.simulator.check import cell_errors
from llmfleet_runtime.simulator.profiles import CALIBRATED, CSV_SOURCE

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CSV = REPO / "tests" / "fixtures" / "splitwise_perf_model_llama2_70b.csv"
"""The measured table's llama2-70b rows, committed with their source and license."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--print-knots", action="store_true")
    parser.add_argument(
        "--out", type=Path, default=REPO / "bench" / "results" / "simulator-calibration.json"
    )
    args = parser.parse_args()
    rows = read_rows(args.csv)
    report = {}
    print(
        f"{'profile':24} {'cells':>5} {'prefill mean/max err':>22}"
        f" {'decode mean/max err':>21}  outliers"
    )
    for name in sorted(CALIBRATED):
        model, hardware, tp = CSV_SOURCE[name]
        cells = measurements(rows, model, hardware, tp)
        fitted = fit(cells)
        if args.print_knots:
            print(
                f"    ({name!r}): (\n        {fitted.prefill_knots},\n        {fitted.batch_knots},"
            )
            print(f"        {fitted.decode_knots},\n    ),")
        kept = [c for c in cells if c not in fitted.outliers]
        errors = cell_errors(CALIBRATED[name], kept)
        pre = [e.prefill_error for e in errors]
        dec = [e.decode_error for e in errors]
        outliers = [f"{o.prompt_size}x{o.batch_size}" for o in fitted.outliers]
        report[name] = {
            "cells": len(errors),
            "prefill_error_mean": round(fmean(pre), 4),
            "prefill_error_max": round(max(pre), 4),
            "decode_error_mean": round(fmean(dec), 4),
            "decode_error_max": round(max(dec), 4),
            "outliers_prompt_x_batch": outliers,
        }
        print(
            f"{name:24} {len(errors):5} {fmean(pre):10.1%} / {max(pre):6.1%}"
            f" {fmean(dec):10.1%} / {max(dec):6.1%}  {', '.join(outliers) or '-'}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
