"""Multi-region bench: the Azure code trace's bursts against three regions, with and without spill.

    flock /tmp/llmfleet-heavy.lock .venv/bin/python bench/multiregion/run.py [--traces DIR]

Three regions, each its own fleet of the autoscaling bench's deployment (``bench/autoscale``:
``llama-70b-tp4.yaml``, profile ``h100-llama2-70b-tp4``, 60 s startups, scrapes every 15 s
seen 2 s later) scaled by ours with the spec file's settings, a ``minReplicas`` floor and
``slotsUsed`` :data:`TARGET`; each replays the whole code trace at the bench's speed (x2),
started a third of the trace apart (:func:`llmfleet_fleetsim.regions.rotated`), so each
region carries the single-region bench's load and their bursts fall at other times. All
three run on one clock (:func:`llmfleet_fleetsim.regions.run_regions`):

* **isolated**: no spill; each region is the single-region bench's fleet. Its cheapest
  floor that reaches 95% is the reference: what one region spends to reach 95%;
* **spill**: the gateways forward by :meth:`llmfleet_gateway.peers.Peers.pick`, polling
  their peers' summaries every second over WAN round trips of 30-80 ms (:data:`RTT`), with
  the model's ``ttftObjectiveSeconds`` swept (:data:`SPILL_FLOORS`).

Attainment is judged at the relaxed tier (TTFT <= 2 s, TPOT <= 50 ms) per request, at the
region it entered; GPU-hours count every region's replicas from creation to removal. The
goal (issue 21): spill at >= 99% for no more GPU-hours per region than the reference.
Writes bench/results/multiregion.json; ``bench/tables.py`` renders multiregion.md and the
README's table.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "autoscale"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import setting  # the autoscaling bench's deployment, profile, tiers and traces
from gateways import gateways  # the gateway's Peers behind the simulator's seam
from setting import Warm

from llmfleet_contract.api import LLMDeploymentSpec
from llmfleet_fleetsim import Slo, make_policy
from llmfleet_fleetsim.outcome import Outcome
from llmfleet_fleetsim.regions import Region, Spill, rotated, run_regions
from llmfleet_fleetsim.replica import routing_settings
from llmfleet_fleetsim.slo import meets
from llmfleet_fleetsim.view import Policy

TRACE = "code"
TIER = "relaxed"
STARTUP_S = 60.0
"""The startup of the single-region figure the issue quotes (95.2%, bench/autoscale)."""
TARGET = 0.1
"""Ours' slotsUsed: on code, ours above a floor holds the floor (bench/autoscale/README.md,
Code: slotsUsed 0.02-0.1 reach what static fleets of the floor's size reach)."""
REGIONS = ("us-east", "us-central", "us-west")
RTT = {
    frozenset(("us-east", "us-central")): 0.03,
    frozenset(("us-central", "us-west")): 0.05,
    frozenset(("us-east", "us-west")): 0.08,
}
"""WAN round trips between the regions (seconds)."""
POLL_S = 1.0
ISOLATED_FLOORS = (28, 29, 30, 31, 32, 33, 34, 36, 40, 44, 48, 52)
"""minReplicas per region, swept without spill (dense where 95% is crossed)."""
SPILL_FLOORS = {
    0.2: (28, 30, 32, 34),
    0.3: (24, 26, 28, 29, 30, 31, 32, 33, 34),
    0.4: (28, 30, 32, 34),
    0.5: (28, 30, 32, 34, 36),
    2.0: (28, 30, 32),
}
"""Per ``ttftObjectiveSeconds`` (2.0: the tier's TTFT bound), minReplicas per region."""
REFERENCE_GOAL = 0.95
GOAL = 0.99


@dataclass(frozen=True)
class Job:
    path: str
    floor: int
    objective_s: float | None
    """None: isolated regions."""


def ours(floor: int) -> Policy:
    """Ours with the bench's spec, ``minReplicas`` ``floor`` and slotsUsed :data:`TARGET`,
    starting warm at its floor."""
    body = setting.spec().model_dump(by_alias=True, exclude_none=True)
    body["autoscaling"]["minReplicas"] = floor
    body["autoscaling"]["targets"]["slotsUsed"] = TARGET
    spec = LLMDeploymentSpec.model_validate(body)
    return Warm(make_policy("llmfleet", spec), floor)


def met(slo: Slo, outcome: Outcome, region: Region) -> int:
    return sum(
        meets(slo, r.arrival_s, outcome.first_token[i], outcome.last_token[i], r.output_tokens)
        for i, r in enumerate(region.trace.requests)
    )


def run_job(job: Job) -> dict[str, Any]:
    """One replay of the three regions."""
    trace = setting.replay(job.path, setting.SPEED[TRACE])
    offset = trace.duration_s / len(REGIONS)
    regions = [
        Region(name, rotated(trace, k * offset), ours(job.floor)) for k, name in enumerate(REGIONS)
    ]
    profile = setting.profile()
    spill = None
    if job.objective_s is not None:
        routing = routing_settings(profile)
        spill = Spill(RTT, gateways(job.objective_s, profile.max_num_seqs, routing, POLL_S), POLL_S)
    started = time.perf_counter()
    outcome = run_regions(
        regions,
        profile,
        startup_s=STARTUP_S,
        scrape_s=setting.SCRAPE_S,
        lag_s=setting.LAG_S,
        spill=spill,
    )
    wall = time.perf_counter() - started
    slo = setting.TIERS[TIER]
    gpus = setting.spec().parallelism.gpus_per_group
    per_region = {}
    for region in regions:
        found = outcome.regions[region.name]
        served = outcome.served_in[region.name]
        per_region[region.name] = {
            "requests": len(region.trace.requests),
            "met": met(slo, found, region),
            "gpu_hours": found.replica_seconds * gpus / 3600,
            "served_elsewhere": sum(1 for where in served if where != region.name),
            "peak_replicas": max((p.total for p in found.timeline), default=0),
            "scale_ups": sum(1 for c in found.changes if c.after > c.before),
        }
    requests = sum(r["requests"] for r in per_region.values())
    gpu_hours = sum(r["gpu_hours"] for r in per_region.values())
    return {
        "mode": "isolated" if spill is None else "spill",
        "objective_s": job.objective_s,
        "floor": job.floor,
        "attainment": sum(r["met"] for r in per_region.values()) / requests,
        "gpu_hours": gpu_hours,
        "gpu_hours_per_region": gpu_hours / len(regions),
        "forwarded": sum(outcome.forwarded.values()) / requests,
        "forwards": {f"{a}->{b}": n for (a, b), n in sorted(outcome.forwarded.items())},
        "reasons": outcome.reasons,
        "regions": per_region,
        "duration_s": next(iter(outcome.regions.values())).end_s,
        "wall_s": round(wall, 1),
    }


def jobs(path: str) -> list[Job]:
    found = [Job(path, floor, None) for floor in ISOLATED_FLOORS]
    return found + [Job(path, f, objective) for objective, fs in SPILL_FLOORS.items() for f in fs]


def cheapest(points: list[dict[str, Any]], goal: float) -> dict[str, Any] | None:
    """The point with the fewest GPU-hours at ``goal`` or above."""
    reached = [p for p in points if p["attainment"] >= goal]
    return min(reached, key=lambda p: p["gpu_hours"], default=None)


def verdict(points: list[dict[str, Any]]) -> dict[str, Any]:
    """The reference (isolated at 95%), isolated at 99%, and per objective spill's
    cheapest point at 99% with the goal's verdict (its GPU-hours against the reference)."""
    isolated = [p for p in points if p["mode"] == "isolated"]
    reference = cheapest(isolated, REFERENCE_GOAL)
    spill: dict[str, dict[str, Any]] = {}
    ratios: list[float] = []
    for objective in SPILL_FLOORS:
        found = cheapest([p for p in points if p["objective_s"] == objective], GOAL)
        ratio = None
        if found is not None and reference is not None:
            ratio = found["gpu_hours"] / reference["gpu_hours"]
            ratios.append(ratio)
        spill[str(objective)] = {"point": found, "vs_reference": ratio}
    best = min(ratios, default=None)
    return {
        "reference": reference,
        "isolated_at_goal": cheapest(isolated, GOAL),
        "spill_at_goal": spill,
        "best_vs_reference": best,
        "goal_met": best is not None and best <= 1.0,
    }


def autoscale_static(folder: Path) -> dict[str, Any] | None:
    """bench/autoscale's cheapest static fleet at 95% on this trace, tier and startup (the
    single-region cross-check: isolated region us-east replays the same trace)."""
    source = folder / "autoscale.json"
    if not source.is_file():
        return None
    points = [
        p
        for p in json.loads(source.read_text())["points"]
        if (p["trace"], p["tier"], p["startup_s"], p["policy"])
        == (TRACE, TIER, STARTUP_S, "static")
    ]
    found = cheapest(points, REFERENCE_GOAL)
    if found is None:
        return None
    return {k: found[k] for k in ("target", "attainment", "gpu_hours")}


def tables() -> ModuleType:
    """bench/tables.py, which renders the result table. Imported here, not at the top: it
    loads bench/autoscale/summary.py as ``autoscale.summary`` where :mod:`setting` loads
    it as ``summary``, and mypy refuses a file under two names."""
    sys.path.insert(0, str(setting.REPO / "bench"))
    return importlib.import_module("tables")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--traces", help="directory of azure_llm_2023_code.csv")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=str(setting.RESULTS / "multiregion"))
    args = parser.parse_args(argv)
    directory = setting.traces_dir(args.traces)
    name = f"azure_llm_2023_{TRACE}.csv"
    why = setting.missing_traces(directory, [name])
    if why:
        print(f"bench/multiregion: {why}")
        return 0
    started = time.monotonic()
    with ProcessPoolExecutor(args.workers) as pool:
        points = list(pool.map(run_job, jobs(str(directory / name))))
    elapsed = time.monotonic() - started
    slo = setting.TIERS[TIER]
    result = {
        "bench": "multiregion",
        "trace": TRACE,
        "speed": setting.SPEED[TRACE],
        "requests_per_region": points[0]["regions"][REGIONS[0]]["requests"],
        "offsets": "a third of the trace apart",
        "profile": setting.PROFILE,
        "deployment": str(setting.SPEC_FILE.relative_to(setting.REPO)),
        "tier": TIER,
        "slo": {"ttft_s": slo.ttft_s, "tpot_s": slo.tpot_s},
        "startup_s": STARTUP_S,
        "scrape_s": setting.SCRAPE_S,
        "lag_s": setting.LAG_S,
        "slots_used": TARGET,
        "regions": list(REGIONS),
        "round_trip_s": {"-".join(sorted(pair)): rtt for pair, rtt in RTT.items()},
        "poll_s": POLL_S,
        "points": points,
        "verdict": verdict(points),
        "autoscale_static_at_reference": autoscale_static(setting.RESULTS),
        "runtime_s": round(elapsed, 1),
        "workers": args.workers,
        "cores": os.cpu_count(),
        "command": " ".join(
            ["bench/multiregion/run.py", *(argv if argv is not None else sys.argv[1:])]
        ),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(tables().multiregion_markdown(result))
    print(f"{len(points)} replays in {elapsed:.0f}s -> {out}.json")
    for p in points:
        print(
            f"{p['mode']:8} {p['objective_s'] or '-':>4} floor {p['floor']:3}"
            f"  att {p['attainment']:.4f}  gpu-h/region {p['gpu_hours_per_region']:6.1f}"
            f"  forwarded {p['forwarded']:.1%}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
