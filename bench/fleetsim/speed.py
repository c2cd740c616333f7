"""Fleet simulator speed: simulated seconds per wall second on an hour of the conv trace.

    .venv/bin/python bench/fleetsim/speed.py [--policy llmfleet] [--cprofile]

Replays ``azure_llm_2023_conv.csv`` (about an hour, 19k requests) through
``examples/llama-70b-tp4.yaml`` on the ``h100-llama2-70b-tp4`` profile (60 s startup,
TTFT <= 2 s, TPOT <= 50 ms) with the chosen policy, against a target of 100x real time.
Two ratios: the whole ``simulate`` call (the oracle's capacity probes included) and the
replay alone. ``--cprofile`` prints where the time goes.

Traces come from ``$LLMFLEET_TRACES`` or ``../shared/traces`` beside the repo; without
them the bench says where to get them and skips.
Writes bench/results/fleetsim-speed.json.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import time
from pathlib import Path

import yaml

from llmfleet_contract.api import LLMDeployment
from llmfleet_fleetsim import PUBLIC_TRACES, Slo, load_trace, simulate

REPO = Path(__file__).resolve().parents[2]
PROFILE = "h100-llama2-70b-tp4"


def traces_dir() -> Path:
    return Path(os.environ.get("LLMFLEET_TRACES") or REPO.parent / "shared" / "traces")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--policy", default="llmfleet")
    parser.add_argument("--cprofile", action="store_true", help="print the top functions")
    parser.add_argument(
        "--out", type=Path, default=REPO / "bench" / "results" / "fleetsim-speed.json"
    )
    args = parser.parse_args()
    path = traces_dir() / "azure_llm_2023_conv.csv"
    if not path.is_file():
        print(
            f"bench/fleetsim: skipped: {path} is missing. {PUBLIC_TRACES}, or set $LLMFLEET_TRACES"
        )
        return
    trace = load_trace(path)
    manifest = yaml.safe_load((REPO / "examples" / "llama-70b-tp4.yaml").read_text())
    spec = LLMDeployment.model_validate(manifest).spec
    slo = Slo(ttft_s=2.0, tpot_s=0.05)
    profiler = cProfile.Profile() if args.cprofile else None
    started = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    report = simulate(trace, spec, args.policy, PROFILE, 60.0, slo)
    if profiler is not None:
        profiler.disable()
    wall = time.perf_counter() - started
    result = {
        "trace": trace.name,
        "requests": report.requests,
        "policy": args.policy,
        "profile": PROFILE,
        "cores": os.cpu_count(),
        "simulated_s": round(report.duration_s, 1),
        "wall_s": round(wall, 2),
        "replay_wall_s": round(report.wall_s, 2),
        "ratio": round(report.duration_s / wall, 1),
        "replay_ratio": round(report.duration_s / report.wall_s, 1),
        "target_ratio": 100,
        "mean_replicas": round(report.mean_replicas, 2),
        "attainment": round(report.attainment, 4),
    }
    print(json.dumps(result, indent=2))
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
