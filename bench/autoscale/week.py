"""The week-shaped bench (issue 25): always-on at peak vs scheduled floors vs ours.

    .venv/bin/python bench/autoscale/week.py [--traces DIR] [--workers 2] [--out PREFIX]

The conversation trace tiled over a (compressed) week and thinned by an office's diurnal
and weekly curve (:mod:`llmfleet_fleetsim.week`, every parameter in the constants below),
replayed on the bench's deployment (``llama-70b-tp4.yaml``) at the relaxed tier with 60 s
startups, by: static fleets (the smallest at the goal is "always-on at peak"), a
clock-only schedule of two sizes ("scheduled floors"), ours with a business-hours floor,
ours alone, and ours with a forecast (``llmfleet-forecast``, replayed over two weeks and
scored on the second). Every replay is scored on the same week: the second week of a
two-week load. Writes ``bench/results/week.{json,md}``. See the README's
"The week" section.

The spot rows (``--only spot``) replay ours with the business-hours floor with spot
preemptions (:mod:`llmfleet_fleetsim.preemption`) at each of ``PREEMPTION_RATES``;
``--merge`` adds the points of a run to the JSON already written (same labels replaced).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import tuned  # the bench's own modules, beside this script
from setting import LAG_S, PROFILE, RESULTS, SCRAPE_S, TIERS, Warm, profile, spec, traces_dir
from summary import week_markdown

from llmfleet_contract.api import AutoscalingSpec
from llmfleet_contract.api.scaling import ScheduleSpec
from llmfleet_fleetsim import capacity, load_trace, oracle, warm_start
from llmfleet_fleetsim.fleet import run
from llmfleet_fleetsim.forecast import ForecastPolicy, ScheduledPolicy
from llmfleet_fleetsim.outcome import Outcome
from llmfleet_fleetsim.policies import LlmfleetPolicy, StaticPolicy
from llmfleet_fleetsim.preemption import Preemptions
from llmfleet_fleetsim.report import flips
from llmfleet_fleetsim.slo import meets
from llmfleet_fleetsim.trace import Trace
from llmfleet_fleetsim.view import Policy
from llmfleet_fleetsim.week import DAY_S, OFFICE_WEEK, WEEK_S, week_load, window

# -- the load ---------------------------------------------------------------------------
TRACE_FILE = "azure_llm_2023_conv.csv"
CURVE = OFFICE_WEEK
PEAK = 2.0
"""The curve's peak as a multiple of the trace's own rate (about 11 requests/s)."""
WEEK_SPEED = 12.0
"""Week-clock seconds per replay second: a day lasts 2 h of replay, a week 14 h."""
SEED = 0
START = datetime(2024, 1, 1, tzinfo=UTC)  # a Monday, 00:00
TIER = "relaxed"
GOAL = 0.99
STARTUP_S = 60.0
# -- the policies -----------------------------------------------------------------------
BUSINESS = ScheduleSpec(
    name="business-hours", time_zone="UTC", days=["Mon", "Tue", "Wed", "Thu", "Fri"],
    start="07:00", end="20:00", min_replicas=1,
)  # fmt: skip
"""The window of the scheduled plans: the weekdays' ramps and plateau (curve 06-21)."""
OURS_TARGETS = (0.16, 0.2)
FORECAST_TARGETS = (0.2, 0.24)
SCHEDULED_TARGET = 0.2
# -- prices (assumed, not quoted: no price list is reachable from here) -----------------
ON_DEMAND_PER_GPU_HOUR = 4.00
SPOT_PER_GPU_HOUR = 1.60
"""Assumed: H100 on-demand about $4/GPU-hour and spot at 40% of it, the order of the
public clouds' 2025 list prices."""
# -- spot preemptions (assumed rates: see the README's "The week") ---------------------
PREEMPTION_RATES = (0.0, 1 / 24, 0.25, 1.0)
"""Notices per spot replica-hour of the replay's clock (the real rate: a replay hour holds
the load of a real hour): none, one a day, one every 4 hours, one an hour."""
NOTICE_S = 30.0
"""GKE's notice (AWS gives 120 s): the shorter loses more streams."""
PREEMPTION_SEED = 0


@cache
def loads(traces: str) -> tuple[Trace, Trace]:
    """The two-week load, and its second week on its own clock (what every policy is
    scored on)."""
    base = load_trace(Path(traces) / TRACE_FILE)
    fortnight = week_load(base, CURVE, peak=PEAK, days=14, week_speed=WEEK_SPEED, seed=SEED)
    week = WEEK_S / WEEK_SPEED
    return fortnight, window(fortnight, week, 2 * week)


@dataclass(frozen=True)
class Job:
    label: str
    kind: str
    """static, scheduled, ours, ours-scheduled, spot (ours-scheduled, preempted), forecast."""
    size: float
    """Replicas (static), off-hours replicas (scheduled), slotsUsed (ours)."""
    traces: str
    initial: int
    floor: int = 1
    """Business-hours replicas of the schedule (scheduled, ours-scheduled, spot)."""
    preemption_rate: float | None = None
    """Spot notices per replica-hour (spot)."""


def with_schedule(scaling: AutoscalingSpec, floor: int) -> AutoscalingSpec:
    return scaling.model_copy(
        update={"schedules": [BUSINESS.model_copy(update={"min_replicas": floor})]}
    )


def policy_for(job: Job) -> Policy:
    deployment = spec()
    assert deployment.autoscaling is not None
    if job.kind == "static":
        return StaticPolicy(int(job.size))
    if job.kind == "scheduled":
        off = deployment.autoscaling.model_copy(update={"min_replicas": int(job.size)})
        return ScheduledPolicy(with_schedule(off, job.floor), START, WEEK_SPEED)
    ours = tuned(deployment, job.size, (), "targets.slotsUsed")
    assert ours.autoscaling is not None
    if job.kind in ("ours-scheduled", "spot"):
        scaled = with_schedule(ours.autoscaling, job.floor)
        ours = ours.model_copy(update={"autoscaling": scaled})
    inner = LlmfleetPolicy(ours, start=START, clock_speed=WEEK_SPEED)
    if job.kind == "forecast":
        lead = STARTUP_S + inner.period_s
        return Warm(ForecastPolicy(inner, lead, WEEK_SPEED), job.initial)
    return Warm(inner, job.initial)


def run_job(job: Job) -> dict[str, Any]:
    fortnight, week = loads(job.traces)
    trace, offset = (fortnight, WEEK_S / WEEK_SPEED) if job.kind == "forecast" else (week, 0.0)
    policy = policy_for(job)
    floor = None
    scaling = spec().autoscaling
    if job.kind in ("ours-scheduled", "spot") and scaling is not None:
        floor = ScheduledPolicy(with_schedule(scaling, job.floor), START, WEEK_SPEED)
    preemptions = None
    if job.preemption_rate is not None and floor is not None:
        preemptions = Preemptions(job.preemption_rate, NOTICE_S, floor.at, PREEMPTION_SEED)
    started = time.perf_counter()
    outcome = run(trace, policy, profile(), startup_s=STARTUP_S, scrape_s=SCRAPE_S,
                  lag_s=LAG_S, preemptions=preemptions)  # fmt: skip
    wall = time.perf_counter() - started
    extra: dict[str, Any] = {}
    if preemptions is not None:
        extra = {"preemption_rate": job.preemption_rate, "notice_s": NOTICE_S,
                 "preemption_seed": PREEMPTION_SEED}  # fmt: skip
    return {"label": job.label, "kind": job.kind, "size": job.size, "floor": job.floor,
            **extra, **score(trace, outcome, offset, floor), "wall_s": round(wall, 1)}  # fmt: skip


def score(
    trace: Trace, outcome: Outcome, offset: float, floor: ScheduledPolicy | None
) -> dict[str, Any]:
    """Attainment of the requests arriving in the scored week, and the replicas held
    through it (from the fleet's timeline, one point a scrape), per real week: the replay's
    GPU-hours x WEEK_SPEED. With ``floor``, the replica-hours up to it (on-demand) and
    above it (spot); a replay with preemptions counts its own tiers (the same split, plus
    the replicas under notice at spot), its notices and the requests they lost."""
    slo = TIERS[TIER]
    end = offset + WEEK_S / WEEK_SPEED
    met = total = lost = 0
    tiers = bool(outcome.lost)
    for i, r in enumerate(trace.requests):
        if offset <= r.arrival_s < end:
            total += 1
            met += meets(slo, r.arrival_s, outcome.first_token[i], outcome.last_token[i],
                         r.output_tokens)  # fmt: skip
            lost += tiers and outcome.lost[i]
    held = base = 0.0
    peak = 0
    points = [p for p in outcome.timeline if offset <= p.time < end]
    for p in points:
        held += p.total
        peak = max(peak, p.total)
        if tiers:
            base += p.total - p.spot
        elif floor is not None:
            base += min(p.total, floor.at(p.time - offset))
    gpus = spec().parallelism.gpus_per_group
    per_week = SCRAPE_S * gpus * WEEK_SPEED / 3600
    scored = [c for c in outcome.changes if offset <= c.time < end]
    preempted = [n for n in outcome.preempted if offset <= n.time < end]
    return {
        "requests": total,
        "attainment": met / total,
        **({"preemptions": len(preempted), "lost": lost} if tiers else {}),
        "gpu_hours": held * per_week,
        "on_demand_gpu_hours": (base if floor else held) * per_week,
        "spot_gpu_hours": (held - base) * per_week if floor else 0.0,
        "peak_replicas": peak,
        "mean_replicas": held / max(1, len(points)),
        "changes": len(scored),
        "flips": flips(scored),
    }


def plan(traces: str) -> tuple[dict[str, Any], list[Job]]:
    """The load's figures (oracle, capacity) and the replays they size."""
    _, week = loads(traces)
    slo = TIERS[TIER]
    rps = capacity(week, profile(), slo)
    gpus = spec().parallelism.gpus_per_group
    best = oracle(week, rps, gpus)
    assert best is not None
    minute = 60.0 * WEEK_SPEED  # week-clock seconds per oracle bucket

    def open_(i: int) -> bool:
        return BUSINESS.open_at(START + timedelta(seconds=(i + 0.5) * minute))

    business = [n for i, n in enumerate(best.needs) if open_(i)]
    off = [n for i, n in enumerate(best.needs) if not open_(i)]
    plateau = [n for i, n in enumerate(best.needs)
               if (i * minute) % DAY_S >= 9 * 3600 and (i * minute) % DAY_S < 17 * 3600
               and (i * minute) % WEEK_S < 5 * DAY_S]  # fmt: skip
    peak = best.peak
    initial = warm_start(best.needs, best.bucket_s, STARTUP_S)
    load = {
        "requests": len(week.requests),
        "capacity_rps": rps,
        "oracle_gpu_hours_per_week": best.gpu_hours * WEEK_SPEED,
        "oracle_peak": peak,
        "oracle_business_peak": max(business),
        "oracle_off_hours_peak": max(off),
        "oracle_plateau_low": min(plateau),
        "curve_mean": CURVE.mean(),
    }
    jobs = [Job(f"static {n}", "static", n, traces, n) for n in (peak, peak + 2, peak + 4)]
    jobs += [Job(f"scheduled {b}/{q}", "scheduled", q, traces, q, b)
             for b, q in ((peak + 2, max(off) + 1), (peak + 4, max(off) + 2))]  # fmt: skip
    jobs += [Job(f"ours {t}", "ours", t, traces, initial) for t in OURS_TARGETS]
    floor = min(plateau)
    jobs += [Job(f"ours+schedule {SCHEDULED_TARGET} floor {floor}", "ours-scheduled",
                 SCHEDULED_TARGET, traces, initial, floor)]  # fmt: skip
    jobs += [Job(f"forecast {t}", "forecast", t, traces, initial) for t in FORECAST_TARGETS]
    jobs += [Job(f"ours+schedule {SCHEDULED_TARGET} floor {floor} spot, {rate:.3g} notices"
                 " / spot replica-h", "spot", SCHEDULED_TARGET, traces, initial, floor, rate)
             for rate in PREEMPTION_RATES]  # fmt: skip
    return load, jobs


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--traces")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default=str(RESULTS / "week"))
    p.add_argument("--only", help="comma-separated job kinds to run")
    p.add_argument("--plan", action="store_true", help="print the load's figures and the jobs")
    p.add_argument("--from-json", type=Path, help="rewrite the table of a run, nothing replayed")
    merge = "add this run's points to the JSON at --out (same labels replaced)"
    p.add_argument("--merge", action="store_true", help=merge)
    args = p.parse_args()
    if args.from_json:
        args.from_json.with_suffix(".md").write_text(
            week_markdown(json.loads(args.from_json.read_text()))
        )
        return 0
    traces = str(traces_dir(args.traces))
    started = time.perf_counter()
    load, jobs = plan(traces)
    if args.only:
        jobs = [j for j in jobs if j.kind in args.only.split(",")]
    print(json.dumps(load, indent=1), *(j.label for j in jobs), sep="\n", flush=True)
    if args.plan:
        return 0
    with ProcessPoolExecutor(args.workers) as pool:
        points = []
        for point in pool.map(run_job, jobs):
            print(json.dumps(point), flush=True)
            points.append(point)
    command = " ".join(["bench/autoscale/week.py", *sys.argv[1:]])
    runtime_s = round(time.perf_counter() - started, 1)
    result = result_of(load, points, args.workers, command, runtime_s)
    out = Path(args.out)
    if args.merge:
        result = merged(json.loads(out.with_suffix(".json").read_text()), result)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(week_markdown(result))
    print(week_markdown(result))
    return 0


def result_of(
    load: dict[str, Any], points: list[dict[str, Any]], workers: int, command: str, runtime_s: float
) -> dict[str, Any]:
    """A run's JSON: the load, its constants, its points and how it ran."""
    return {
        "bench": "week", "profile": PROFILE, "trace": TRACE_FILE,
        "curve": {"trough": CURVE.trough, "weekend_peak": CURVE.weekend_peak,
                  "ramp_up": CURVE.ramp_up, "ramp_down": CURVE.ramp_down},
        "peak": PEAK, "week_speed": WEEK_SPEED, "seed": SEED, "tier": TIER, "goal": GOAL,
        "startup_s": STARTUP_S, "slo": {"ttft_s": TIERS[TIER].ttft_s, "tpot_s": TIERS[TIER].tpot_s},
        "prices": {"on_demand": ON_DEMAND_PER_GPU_HOUR, "spot": SPOT_PER_GPU_HOUR},
        "load": load, "points": points, "workers": workers, "command": command,
        "runtime_s": runtime_s,
    }  # fmt: skip


def merged(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``old`` with ``new``'s points added (one of the same label replaced), after checking
    both replayed the same load; ``new``'s command and time are kept under ``merged``."""
    new = json.loads(json.dumps(new))  # tuples as the JSON's lists
    for key in ("trace", "curve", "peak", "week_speed", "seed", "tier", "startup_s", "load"):
        if old[key] != new[key]:
            raise SystemExit(f"cannot merge: {key} differs ({old[key]!r} != {new[key]!r})")
    labels = {p["label"] for p in new["points"]}
    points = [p for p in old["points"] if p["label"] not in labels] + new["points"]
    runs = [r for r in old.get("merged", []) if not labels.issuperset(r["labels"])]
    run = {"command": new["command"], "runtime_s": new["runtime_s"],
           "workers": new["workers"], "labels": sorted(labels)}  # fmt: skip
    return {**old, "points": points, "merged": [*runs, run]}


if __name__ == "__main__":
    raise SystemExit(main())
