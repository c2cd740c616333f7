"""Autoscaling bench: every policy over both Azure traces, two SLO tiers, two startup times.

    .venv/bin/python bench/autoscale/run.py [--traces DIR] [--workers 2] [--trace conv] ...

For each trace (Azure LLM inference 2023, code and conversation, sped up by ``SPEED`` so
that autoscaling has a fleet to size), each startup time (60 s, 180 s) and each policy
(ours, static, HPA, KEDA, Knative KPA, llm-d), sweeps the policy's main target over a
few points and replays the trace through the fleet simulator (``llmfleet_operator.
fleetsim``) on the H100 70B TP4 profile with the deployment in ``llama-70b-tp4.yaml``.
Two SLO tiers (TTFT <= 2 s and TTFT <= 500 ms, TPOT <= 50 ms for both): an autoscaler
is replayed once per tier, starting warm at that tier's need (:class:`Warm`); a static
fleet's one replay is judged at both. The oracles (raw, and fitted to the goal: lower
bounds on GPU-hours, see :mod:`setting`) are measured once per trace and tier, in
parallel, before the replays.

Writes bench/results/autoscale.json (every point), autoscale.md (the table, see
:mod:`summary`) and autoscale-<trace>-<tier>.png (attainment against GPU-hours).
Traces come from ``--traces``, else ``$LLMFLEET_TRACES``, else ``../shared/traces``
beside the repository.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import summary  # the bench's own modules, beside this script
from setting import (
    LAG_S,
    ORACLES,
    POLICIES,
    PROFILE,
    REPO,
    RESULTS,
    SCRAPE_S,
    SPEC_FILE,
    SPEED,
    STARTUPS,
    SWEEPS,
    TIER_TEXT,
    TIERS,
    TRACES,
    Warm,
    cached_prepare,
    missing_traces,
    profile,
    replay,
    spec,
    traces_dir,
)

from llmfleet_contract.api import LLMDeploymentSpec
from llmfleet_fleetsim import make_policy, oracle
from llmfleet_fleetsim.fleet import run
from llmfleet_fleetsim.report import Settings, build
from llmfleet_fleetsim.view import Policy


@dataclass(frozen=True)
class Job:
    trace: str
    path: str
    speed: float
    startup_s: float
    policy: str
    target: float
    capacities: tuple[tuple[str, float], ...]
    """The tiers the replay is judged at, each with one replica's capacity at its SLO
    (requests per second): both for a static fleet, one for an autoscaler."""
    initial: int
    """Replicas warm at the start, for every autoscaler alike: ``summary.warm_start`` at
    the tier judged."""
    copies: int
    """Copies of the trace overlaid (``Trace.denser``): 1 unless ``--copies``."""
    tweaks: tuple[tuple[str, str], ...] = ()
    """``--set`` overrides of ours' spec.autoscaling (dotted camelCase paths), for tuning."""
    sweep: str = "targets.slotsUsed"
    """The field of ours' spec.autoscaling that ``target`` sets."""


def tuned(
    deployment: LLMDeploymentSpec, target: float, tweaks: tuple[tuple[str, str], ...], sweep: str
) -> LLMDeploymentSpec:
    """``deployment`` with any ``--set`` overrides and ours' swept target, validated."""
    body = deployment.model_dump(by_alias=True, exclude_none=True)
    scaling = body["autoscaling"]
    for path, value in (*tweaks, (sweep, str(target))):
        *parents, leaf = path.split(".")
        node = scaling
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = yaml.safe_load(value)
    return LLMDeploymentSpec.model_validate(body)


def policy_for(job: Job) -> Policy:
    """A fresh policy for one replay. Ours sweeps ``job.sweep``, by default
    ``targets.slotsUsed`` (what holds a TPOT SLO on this profile; make_policy's target for
    ours is the prefill queue)."""
    deployment = spec()
    if job.policy == "llmfleet":
        inner = make_policy("llmfleet", tuned(deployment, job.target, job.tweaks, job.sweep))
    else:
        inner = make_policy(job.policy, deployment, job.target)
    return inner if job.policy == "static" else Warm(inner, job.initial)


def run_job(job: Job) -> list[dict[str, Any]]:
    """One replay, judged at every tier."""
    trace = replay(job.path, job.speed, job.copies)
    deployment = spec()
    target = job.target
    policy = policy_for(job)
    started = time.perf_counter()
    outcome = run(trace, policy, profile(), startup_s=job.startup_s, scrape_s=SCRAPE_S, lag_s=LAG_S)
    wall = time.perf_counter() - started
    gpus = deployment.parallelism.gpus_per_group
    points = []
    for tier, rps in job.capacities:
        slo = TIERS[tier]
        settings = Settings(
            policy=job.policy,
            trace=job.trace,
            profile=profile().name,
            slo_ttft_s=slo.ttft_s,
            slo_tpot_s=slo.tpot_s,
            startup_s=job.startup_s,
            scrape_s=SCRAPE_S,
            lag_s=LAG_S,
            speed=job.speed,
            copies=job.copies,
            period_s=policy.period_s,
            gpus_per_replica=gpus,
        )
        best = oracle(trace, rps, gpus)
        report = build(settings, trace, slo, outcome, best, rps, wall, job.initial)
        points.append(
            {
                "trace": job.trace,
                "tier": tier,
                "startup_s": job.startup_s,
                "policy": job.policy,
                "target": target,
                "attainment": report.attainment,
                "gpu_hours": report.gpu_hours,
                "oracle_gpu_hours": report.oracle_gpu_hours,
                "flips": report.direction_flips,
                "scale_ups": report.scale_ups,
                "scale_downs": report.scale_downs,
                "peak_replicas": report.peak_replicas,
                "mean_replicas": report.mean_replicas,
                "ttft_p99_s": report.ttft_p99_s,
                "tpot_p99_s": report.tpot_p99_s,
                "time_to_capacity_median_s": report.time_to_capacity_median_s,
                "refused": report.refused,
                "unanswered": report.unanswered,
                "wall_s": wall,
            }
        )
    return points


def sweep(policy: str, overrides: dict[str, str], prepared: dict[str, Any]) -> list[float]:
    """The targets to replay ``policy`` at (``--targets`` overrides them)."""
    if policy in overrides:
        return [float(t) for t in overrides[policy].split(",")]
    if policy == "static":
        peak = min(entry["oracle_peak"] for tier, entry in prepared.items() if tier in TIERS)
        return sorted({float(max(1, round(peak * share))) for share in SWEEPS["static"]})
    return list(SWEEPS[policy])


def baselines(
    earlier: dict[str, Any],
    oracles: dict[str, dict[str, Any]],
    replayed: list[str],
    startups: set[float],
) -> list[dict[str, Any]]:
    """The points of an earlier run (``--baselines-from``) of the policies this run does
    not replay, at this run's traces, tiers and startups. Its oracles must be this run's:
    the same load, tiers and code (else its baselines answered another question)."""
    for trace, tiers in oracles.items():
        theirs = earlier["prepared"].get(trace, {})
        if any(theirs.get(tier) != entry for tier, entry in tiers.items()):
            raise SystemExit(
                f"--baselines-from: its oracles for {trace} differ from this run's (another"
                " load, tier or simulator): replay the baselines here instead"
            )
    return [
        point
        for point in earlier["points"]
        if point["policy"] not in replayed
        and point["trace"] in oracles
        and point["tier"] in oracles[point["trace"]]
        and point["startup_s"] in startups
    ]


def write(result: dict[str, Any], out: Path) -> None:
    """The table (``out``.md), the points with the table's verdicts (``out``.json) and the
    plots (``out``-<trace>-<tier>.png) of a run."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(summary.markdown(result))
    result = {**result, "verdicts": summary.verdicts(result)}
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    summary.plots(result, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--traces", help="directory of azure_llm_2023_{code,conv}.csv")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--trace", action="append", choices=TRACES)
    parser.add_argument("--startup", action="append", type=float)
    parser.add_argument(
        "--targets",
        action="append",
        default=[],
        metavar="[POLICY=]VALUES",
        help="override a sweep with comma-separated values (ours without POLICY=;"
        " static: fleet sizes)",
    )
    parser.add_argument("--tier", action="append", choices=TIERS)
    parser.add_argument(
        "--sweep",
        default="targets.slotsUsed",
        metavar="PATH",
        help="the field of ours' spec.autoscaling the sweep sets (default targets.slotsUsed)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="override ours' spec.autoscaling, e.g. scaleDown.maxStep=20%% (tuning)",
    )
    parser.add_argument("--speed", action="append", default=[], metavar="TRACE=X")
    parser.add_argument(
        "--copies",
        action="append",
        default=[],
        metavar="TRACE=K",
        help="K copies of TRACE overlaid: K times the load over the same time (with --speed"
        " TRACE=1 in place of the speed-up)",
    )
    parser.add_argument("--out", default=str(RESULTS / "autoscale"), help="output path prefix")
    parser.add_argument(
        "--baselines-from",
        metavar="JSON",
        help="take the policies not replayed here from an earlier run with the same oracles"
        " (e.g. ours alone with other settings, priced against that run's baselines)",
    )
    parser.add_argument(
        "--fresh-oracles",
        action="store_true",
        help="measure the oracles again even when .cache holds them for the same inputs",
    )
    parser.add_argument(
        "--from-json",
        metavar="JSON",
        help="replay nothing: write the table, verdicts and plots of an earlier run's JSON"
        " to --out",
    )
    args = parser.parse_args(argv)
    if args.from_json:
        write(json.loads(Path(args.from_json).read_text()), Path(args.out))
        return 0
    directory = traces_dir(args.traces)
    tweaks = tuple(tuple(item.split("=", 1)) for item in args.set)
    for item in args.speed:
        name, value = item.split("=")
        SPEED[name] = float(value)
    asked = {name: int(value) for name, value in (item.split("=") for item in args.copies)}
    overrides = dict(
        item.split("=", 1) if "=" in item else ("llmfleet", item) for item in args.targets
    )
    tiers = args.tier or list(TIERS)
    names = args.trace or list(TRACES)
    copies = {name: asked.get(name, 1) for name in names}
    paths = {name: str(directory / f"azure_llm_2023_{name}.csv") for name in names}
    why = missing_traces(directory, [Path(path).name for path in paths.values()])
    if why:
        print(f"bench/autoscale: {why}")
        return 0
    policies = args.policies.split(",")
    startups = args.startup or list(STARTUPS)
    started = time.monotonic()
    with ProcessPoolExecutor(args.workers) as pool:
        pairs = [(name, tier) for name in names for tier in tiers]
        oracles = list(
            pool.map(
                cached_prepare,
                [n for n, _ in pairs],
                [paths[n] for n, _ in pairs],
                [SPEED[n] for n, _ in pairs],
                [t for _, t in pairs],
                [copies[n] for n, _ in pairs],
                [args.fresh_oracles] * len(pairs),
            )
        )
        by_trace: dict[str, dict[str, Any]] = {}
        for entry, _ in oracles:
            by_trace.setdefault(entry["trace"], {"trace": entry["trace"]})[entry["tier"]] = entry
        hits = sum(hit for _, hit in oracles)
        print(
            f"oracles prepared in {time.monotonic() - started:.0f}s"
            f" ({hits} of {len(oracles)} from {ORACLES.relative_to(REPO)})",
            flush=True,
        )
        jobs = [
            Job(
                name,
                paths[name],
                SPEED[name],
                startup,
                policy,
                float(target),
                tuple((tier, by_trace[name][tier]["capacity_rps"]) for tier in judged),
                max(summary.warm_start(by_trace[name][tier], startup) for tier in judged),
                copies[name],
                tweaks if policy == "llmfleet" else (),
                args.sweep,
            )
            for name in names
            for startup in startups
            for policy in policies
            for target in sweep(policy, overrides, by_trace[name])
            # A static fleet never starts a replica and ignores the warm start: one
            # replay serves every startup time and tier.
            if policy != "static" or startup == startups[0]
            for judged in ([tuple(tiers)] if policy == "static" else [(t,) for t in tiers])
        ]
        points = [p for batch in pool.map(run_job, jobs) for p in batch]
    points += [
        {**p, "startup_s": startup}
        for p in points
        if p["policy"] == "static"
        for startup in startups[1:]
    ]
    elapsed = time.monotonic() - started
    sweeps = {p: SWEEPS[p] for p in policies}
    if args.baselines_from:
        earlier = json.loads(Path(args.baselines_from).read_text())
        borrowed = baselines(earlier, by_trace, policies, set(startups))
        points += borrowed
        sweeps.update({p: earlier["sweeps"][p] for p in {q["policy"] for q in borrowed}})
    result = {
        "bench": "autoscale",
        "profile": PROFILE,
        "deployment": str(SPEC_FILE.relative_to(REPO)),
        "speed": {n: SPEED[n] for n in names},
        "copies": copies,
        "tiers": {tier: TIER_TEXT[tier] for tier in tiers},
        "scrape_s": SCRAPE_S,
        "lag_s": LAG_S,
        "sweeps": sweeps,
        "ours_sweeps": args.sweep,
        "prepared": by_trace,
        "points": points,
        "runtime_s": round(elapsed, 1),
        "workers": args.workers,
        "replays": len(jobs),
        **({"baselines_from": args.baselines_from} if args.baselines_from else {}),
        "command": " ".join(
            ["bench/autoscale/run.py", *(argv if argv is not None else sys.argv[1:])]
        ),
    }
    out = Path(args.out)
    write(result, out)
    print(f"{len(jobs)} replays in {elapsed:.0f}s with {args.workers} workers -> {out}.json")
    for p in sorted(
        points, key=lambda p: (p["trace"], p["tier"], p["startup_s"], p["policy"], p["target"])
    ):
        print(
            f"{p['trace']:5} {p['tier']:8} {p['startup_s']:4.0f} {p['policy']:9} {p['target']:6.2f}"
            f"  att {p['attainment']:.4f}  gpu-h {p['gpu_hours']:6.1f}"
            f" (oracle {p['oracle_gpu_hours']:.1f})  flips {p['flips']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
