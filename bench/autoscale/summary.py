"""The autoscaling bench's table and plots, from its points (called by :mod:`run`).

For each trace, SLO tier and startup time: ours' operating point is its cheapest swept
point with attainment >= ``GOAL`` (else its best attainment), held against the oracle
fitted to that goal (the bar: <= ``BAR`` x its GPU-hours), the raw oracle, and the fitted
oracle's schedule with its starts paid at that startup time (a clairvoyant fleet that
follows it: achievable, not a bound). Each baseline is then
priced at that same attainment: GPU-hours read off its own attainment/GPU-hours curve
(its Pareto front, linear between the two swept points around the attainment), its
direction flips from the first swept point that reaches it. A baseline whose sweep
never reaches the attainment is marked with its best. Last, the whole bar: ours'
cheapest swept point, at any target, that reaches the goal within the bar's cost, is
cheaper than every baseline and turns less than every autoscaler (:func:`whole_bar`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmfleet_fleetsim import fewest_flips, starting_seconds
from llmfleet_fleetsim import warm_start as fleet_warm_start

GOAL = 0.99
BAR = 1.25
"""Ours may cost at most this many times the fitted oracle's GPU-hours at the goal."""
MOST_FLIPS = 10
"""The most turns of a clairvoyant schedule the table looks for."""
NAMES = {
    "llmfleet": "llmfleet",
    "static": "static",
    "hpa": "HPA",
    "keda": "KEDA",
    "kpa": "KPA",
    "llm-d": "llm-d",
}
BASELINES = ("static", "hpa", "keda", "kpa", "llm-d")

Point = dict[str, Any]


def load(result: dict[str, Any], trace: str) -> str:
    """How a trace was loaded: ``x4`` (sped up), ``4 copies`` (overlaid), or both."""
    speed, copies = result["speed"][trace], result.get("copies", {}).get(trace, 1)
    if copies == 1:
        return f"x{speed:g}"
    return f"{copies} copies" + (f" x{speed:g}" if speed != 1 else "")


def front(points: Sequence[Point]) -> list[Point]:
    """The Pareto front: by GPU-hours, each point attaining more than every cheaper one."""
    best: list[Point] = []
    for point in sorted(points, key=lambda p: (p["gpu_hours"], -p["attainment"])):
        if not best or point["attainment"] > best[-1]["attainment"]:
            best.append(point)
    return best


def price(points: Sequence[Point], attainment: float) -> tuple[float | None, Point | None]:
    """GPU-hours at which ``points`` (one policy's sweep) reach ``attainment``, and the
    first swept point that reaches it; (None, None) if none does."""
    curve = front(points)
    for index, point in enumerate(curve):
        if point["attainment"] >= attainment:
            if index == 0:
                return point["gpu_hours"], point
            low = curve[index - 1]
            share = (attainment - low["attainment"]) / (point["attainment"] - low["attainment"])
            return low["gpu_hours"] + share * (point["gpu_hours"] - low["gpu_hours"]), point
    return None, None


def goal(ceiling: float) -> float:
    """The attainment ours is held to: 99%, or 99% of the ceiling where even requests
    served alone miss the SLO (a tight TTFT below a long prompt's prefill)."""
    return min(GOAL, GOAL * ceiling)


def warm_start(prepared: dict[str, Any], startup_s: float) -> int:
    """Replicas warm at the start of a replay at ``startup_s``, for every autoscaler and
    the clairvoyant fleet alike (:func:`llmfleet_fleetsim.warm_start` of the fitted
    oracle's needs)."""
    return fleet_warm_start(prepared["fitted_oracle_needs"], prepared["oracle_bucket_s"], startup_s)


def with_starts(prepared: dict[str, Any], startup_s: float) -> float | None:
    """The fitted oracle's GPU-hours with its starts charged at ``startup_s``
    (:func:`llmfleet_fleetsim.starting_seconds`) from :func:`warm_start`; None
    without a fitted oracle."""
    fitted: float | None = prepared.get("fitted_oracle_gpu_hours")
    if fitted is None:
        return None
    gpus: int = prepared["gpus_per_replica"]
    seconds = starting_seconds(
        prepared["fitted_oracle_needs"],
        prepared["oracle_bucket_s"],
        startup_s,
        warm_start(prepared, startup_s),
    )
    return fitted + seconds * gpus / 3600


def clairvoyant_flips(prepared: dict[str, Any], gpu_hours: float) -> int | None:
    """The fewest direction flips of a schedule that holds the fitted oracle's need in
    every minute within ``gpu_hours`` (:func:`llmfleet_fleetsim.fewest_flips`):
    what a clairvoyant fleet with instant starts turns at that cost. None: more than
    :data:`MOST_FLIPS`, or no fitted oracle."""
    if prepared.get("fitted_oracle_gpu_hours") is None:
        return None
    hours = prepared["oracle_bucket_s"] * prepared["gpus_per_replica"] / 3600
    costs = fewest_flips(prepared["fitted_oracle_needs"], MOST_FLIPS)
    return next((f for f, cost in enumerate(costs) if cost * hours <= gpu_hours + 1e-9), None)


def ours_point(points: Sequence[Point], wanted: float) -> Point:
    """Ours' operating point: cheapest reaching ``wanted``, else the best attainment."""
    good = [p for p in points if p["attainment"] >= wanted]
    if good:
        return min(good, key=lambda p: p["gpu_hours"])
    return max(points, key=lambda p: (p["attainment"], -p["gpu_hours"]))


def groups(points: Sequence[Point]) -> dict[tuple[str, str, float], dict[str, list[Point]]]:
    out: dict[tuple[str, str, float], dict[str, list[Point]]] = {}
    for point in points:
        key = (point["trace"], point["tier"], point["startup_s"])
        out.setdefault(key, {}).setdefault(point["policy"], []).append(point)
    return out


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per trace x tier x startup: ours and every baseline at ours' attainment."""
    table = []
    for (trace, tier, startup), by_policy in sorted(groups(result["points"]).items()):
        if "llmfleet" not in by_policy:
            continue
        prepared = result["prepared"][trace][tier]
        wanted = goal(prepared["ceiling"])
        ours = ours_point(by_policy["llmfleet"], wanted)
        vs_oracle = ours["gpu_hours"] / prepared["oracle_gpu_hours"]
        fitted = prepared.get("fitted_oracle_gpu_hours")
        vs_fitted = None if fitted is None else ours["gpu_hours"] / fitted
        started = with_starts(prepared, startup)
        row: dict[str, Any] = {
            "trace": trace,
            "tier": tier,
            "startup_s": startup,
            "load": load(result, trace),
            "ceiling": prepared["ceiling"],
            "ours": ours,
            "oracle_gpu_hours": prepared["oracle_gpu_hours"],
            "oracle_replayed": prepared["oracle_replayed_attainment"],
            "vs_oracle": vs_oracle,
            "fitted_oracle_gpu_hours": fitted,
            "fitted_oracle_scale": prepared.get("fitted_oracle_scale"),
            "fitted_oracle_attainment": prepared.get("fitted_oracle_attainment"),
            "fitted_oracle_best_gpu_hours": prepared.get("fitted_oracle_best_gpu_hours"),
            "vs_fitted": vs_fitted,
            "fitted_oracle_started_gpu_hours": started,
            "vs_started": None if started is None else ours["gpu_hours"] / started,
            "clairvoyant_flips": clairvoyant_flips(prepared, ours["gpu_hours"]),
            "goal": wanted,
            "bar": ours["attainment"] >= wanted and vs_fitted is not None and vs_fitted <= BAR,
        }
        row["baselines"] = against(by_policy, ours)
        row["whole"] = whole_bar(by_policy, wanted, fitted)
        table.append(row)
    return table


def against(by_policy: dict[str, list[Point]], ours: Point) -> dict[str, dict[str, Any]]:
    """Each baseline priced at ``ours``' attainment: GPU-hours (and their ratio to ours'),
    flips and target at the first swept point reaching it, and the baseline's best."""
    priced = {}
    for name in BASELINES:
        if name not in by_policy:
            continue
        gpu_hours, reached = price(by_policy[name], ours["attainment"])
        best = max(by_policy[name], key=lambda p: (p["attainment"], -p["gpu_hours"]))
        priced[name] = {
            "gpu_hours": gpu_hours,
            "ratio": None if gpu_hours is None else gpu_hours / ours["gpu_hours"],
            "flips": None if reached is None else reached["flips"],
            "target": None if reached is None else reached["target"],
            "best_attainment": best["attainment"],
            "best_gpu_hours": best["gpu_hours"],
        }
    return priced


def whole_bar(
    by_policy: dict[str, list[Point]], wanted: float, fitted: float | None
) -> Point | None:
    """Ours' cheapest swept point that meets the whole bar, else None: the goal at <=
    ``BAR`` x the fitted oracle, cheaper than every baseline at its attainment (one that
    never reaches it counts as dearer), with fewer flips than every autoscaler that
    reaches it (a static fleet never turns, so it is held to cost alone)."""
    if fitted is None:
        return None
    for point in sorted(by_policy["llmfleet"], key=lambda p: p["gpu_hours"]):
        if point["attainment"] < wanted or point["gpu_hours"] > BAR * fitted:
            continue
        priced = against(by_policy, point).items()
        if all(
            entry["ratio"] is None
            or (entry["ratio"] > 1 and (name == "static" or point["flips"] < entry["flips"]))
            for name, entry in priced
        ):
            return point
    return None


def verdicts(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The table's judgement for machines (the run's JSON): per trace, tier and startup,
    ours' operating point, the bar, each baseline at its attainment, the whole bar."""

    def brief(point: Point | None) -> dict[str, Any] | None:
        keys = ("target", "attainment", "gpu_hours", "flips")
        return None if point is None else {key: point[key] for key in keys}

    return [
        {
            "trace": row["trace"],
            "tier": row["tier"],
            "startup_s": row["startup_s"],
            "goal": row["goal"],
            "fitted_oracle_gpu_hours": row["fitted_oracle_gpu_hours"],
            "ours": brief(row["ours"]),
            "vs_fitted": row["vs_fitted"],
            "bar": row["bar"],
            "baselines": {
                name: {"ratio": entry["ratio"], "flips": entry["flips"]}
                for name, entry in row["baselines"].items()
            },
            "whole_bar": brief(row["whole"]),
        }
        for row in rows(result)
    ]


def _cell(entry: dict[str, Any]) -> str:
    if entry["ratio"] is None:
        return f"never (best {entry['best_attainment']:.1%} at {entry['best_gpu_hours']:.0f})"
    return f"{entry['ratio']:.2f}x, {flips_text(entry['flips'])}"


def _fitted(row: dict[str, Any]) -> str:
    if row["fitted_oracle_gpu_hours"] is None:
        best = row["fitted_oracle_attainment"]
        return f"unreachable (best {best:.1%} at {row['fitted_oracle_best_gpu_hours']:.0f})"
    return (
        f"{row['fitted_oracle_gpu_hours']:.1f} (k={row['fitted_oracle_scale']:.2f}:"
        f" {row['fitted_oracle_attainment']:.1%})"
    )


def _bar(row: dict[str, Any]) -> str:
    if row["vs_fitted"] is None:
        return "no fitted oracle (not met)"
    return f"{row['vs_fitted']:.2f}x ({'met' if row['bar'] else 'not met'})"


def flips_text(count: int) -> str:
    """``1 flip`` or ``2 flips``: a table cell (also bench/tables.py)."""
    return f"{count} flip" if count == 1 else f"{count} flips"


def _whole(row: dict[str, Any]) -> str:
    point = row["whole"]
    if point is None:
        return "not met"
    ratio = point["gpu_hours"] / row["fitted_oracle_gpu_hours"]
    return (
        f"met at {point['target']:g}: {point['attainment']:.2%} at"
        f" {point['gpu_hours']:.1f} ({ratio:.2f}x), {flips_text(point['flips'])}"
    )


def number_text(value: float | None, form: str = "{:.1f}") -> str:
    """``value`` in ``form``, or ``-`` for None: a table cell (also bench/tables.py)."""
    return "-" if value is None else form.format(value)


def markdown(result: dict[str, Any]) -> str:
    """The table for people (bench/results/autoscale.md)."""
    table = rows(result)
    tiers = result["tiers"]
    lines = [
        "# Autoscaling bench",
        "",
        f"Profile `{result['profile']}`, deployment `{result['deployment']}`; scrape every"
        f" {result['scrape_s']:.0f}s, seen {result['lag_s']:.0f}s later. Tiers: "
        + "; ".join(f"{name} = {text}" for name, text in tiers.items())
        + ". Load: "
        + ", ".join(f"{trace} {load(result, trace)}" for trace in result["speed"])
        + " (xN: arrivals N times faster; N copies: the trace overlaid on itself N times"
        " over the same time; either way the fleet is tens of replicas, not a handful).",
        "",
        "Ours: the cheapest swept point with attainment >= the goal (99%, or 99% of the"
        f" ceiling where that is lower), else its best. **Bar: goal reached at <= {BAR}x the"
        " fitted oracle's GPU-hours** (column ours/fitted oracle). Baselines:"
        " GPU-hours to reach the same attainment on their own swept curve, as a ratio to"
        " ours (>1: ours is cheaper), and their flips there; `never`: no swept point"
        " reaches it. Ceiling: requests that meet the SLO served alone on an idle replica.",
        "",
        "Raw oracle: the simulator's lower bound (future known, instant starts, 60 s"
        " buckets, a replica's capacity probed with evenly spaced arrivals); in brackets,"
        " the attainment of its own per-minute counts replayed through the simulator's"
        " router with instant starts. Fitted oracle: the same schedule with that capacity"
        " scaled by k (bisection) until the replay reaches the goal: still perfect"
        " foresight, instant starts and per-minute sizing, so a lower bound a real"
        " autoscaler cannot beat at the goal, but one a fleet is known to reach;"
        " `unreachable`: no k down to 1/8 reached the goal (best replay shown)."
        " Fitted + starts: what a clairvoyant fleet following the fitted schedule pays at"
        " the row's startup time (GPU-hours count starting replicas): each replica it"
        " adds starts a startup ahead of its minute, kept across a gap shorter than a"
        " startup instead of restarted, warm at the start as every autoscaler is: with"
        " the most the fitted schedule holds in the minutes that begin within the first"
        " startup, which no ordered replica could serve (`fleetsim.starting_seconds`,"
        " `summary.warm_start`). Achievable, not a bound: a fleet"
        " that does not follow the schedule may pay less (a static fleet on code does);"
        " the bar is judged against the fitted oracle. Flips, in brackets: the fewest a"
        " clairvoyant fleet needs at ours' GPU-hours (a schedule that holds the fitted"
        " oracle's need in every minute and turns at most that often,"
        f" `fleetsim.fewest_flips`; `-`: more than {MOST_FLIPS}, or no fitted oracle).",
        "",
        "Whole bar: ours' cheapest swept point (any target, not only the cheapest at the"
        " goal) that reaches the goal within the bar's cost, is cheaper than every baseline"
        " at its own attainment (one that never reaches it counts as dearer) and turns"
        " fewer times than every autoscaler there (a static fleet never turns: it is held"
        " to cost alone); `not met`: no swept point does.",
        "",
        "| trace | tier | startup | ceiling (goal) | raw oracle GPU-h (replayed)"
        " | fitted oracle GPU-h (k: replayed) | fitted + starts GPU-h"
        f" | ours: {result.get('ours_sweeps', 'targets.slotsUsed').rsplit('.', 1)[-1]}"
        " | attainment | GPU-h"
        " | ours/raw oracle | ours/fitted oracle (bar) | ours/fitted + starts | flips | "
        + " | ".join(NAMES[b] for b in BASELINES)
        + " | whole bar |",
        "|" + "---|" * (15 + len(BASELINES)),
    ]
    for row in table:
        ours = row["ours"]
        cells = [
            f"{row['trace']} {row['load']}",
            row["tier"],
            f"{row['startup_s']:.0f}s",
            f"{row['ceiling']:.1%} ({row['goal']:.1%})",
            f"{row['oracle_gpu_hours']:.1f} ({row['oracle_replayed']:.1%})",
            _fitted(row),
            number_text(row["fitted_oracle_started_gpu_hours"]),
            f"{ours['target']:g}",
            f"{ours['attainment']:.2%}",
            f"{ours['gpu_hours']:.1f}",
            f"{row['vs_oracle']:.2f}x",
            _bar(row),
            number_text(row["vs_started"], "{:.2f}x"),
            f"{ours['flips']} ({number_text(row['clairvoyant_flips'], '{:d}')})",
        ]
        cells += [_cell(row["baselines"][b]) if b in row["baselines"] else "-" for b in BASELINES]
        cells.append(_whole(row))
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"{result['replays']} replays (an autoscaler's per tier, a static fleet's judged at"
        " both)"
        f" in {result['runtime_s']:.0f}s with {result['workers']} workers:"
        f" `{result['command']}`.",
        "",
        *([result["merged"], ""] if "merged" in result else []),
        *(
            [
                "Baselines not replayed in this run are the points of"
                f" `{result['baselines_from']}` (same oracles, checked), with their sweeps.",
                "",
            ]
            if "baselines_from" in result
            else []
        ),
        "Every swept point (attainment, GPU-hours, flips) is in autoscale.json; the curves"
        " are in autoscale-<trace>-<tier>.png.",
        "",
    ]
    return "\n".join(lines)


def plots(result: dict[str, Any], prefix: Path) -> list[Path]:
    """One PNG per trace and tier: attainment against GPU-hours, a line per policy
    (joining its swept targets in order), a panel per startup time; zoomed near the goal
    (down to 80%, lower where ours stays below) and up to 6x the oracle's GPU-hours (or
    ours' widest point) (every point is in the JSON); the raw oracle, the fitted one, the
    bar (``BAR`` x the fitted one) and the fitted one with its starts as vertical lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    by_key = groups(result["points"])
    for trace in sorted({k[0] for k in by_key}):
        for tier in sorted({k[1] for k in by_key}):
            startups = sorted({k[2] for k in by_key if k[:2] == (trace, tier)})
            fig, axes = plt.subplots(
                1, len(startups), figsize=(6 * len(startups), 4.5), squeeze=False
            )
            for ax, startup in zip(axes[0], startups, strict=True):
                for policy, points in sorted(by_key[(trace, tier, startup)].items()):
                    ordered = sorted(points, key=lambda p: p["target"])
                    ax.plot(
                        [p["gpu_hours"] for p in ordered],
                        [100 * p["attainment"] for p in ordered],
                        marker="o",
                        linewidth=2.5 if policy == "llmfleet" else 1.2,
                        label=NAMES[policy],
                    )
                prepared = result["prepared"][trace][tier]
                ax.axvline(
                    prepared["oracle_gpu_hours"], color="grey", linestyle=":", label="oracle"
                )
                fitted = prepared.get("fitted_oracle_gpu_hours")
                if fitted is not None:
                    ax.axvline(fitted, color="black", linestyle=":", label="fitted oracle")
                    ax.axvline(BAR * fitted, color="black", linestyle="--", label=f"{BAR}x fitted")
                    started = with_starts(prepared, startup)
                    ax.axvline(started, color="black", linestyle="-.", label="fitted + starts")
                ax.axhline(100 * GOAL, color="black", linewidth=0.8)
                title = f"{trace} {load(result, trace)}, {result['tiers'][tier]}"
                ax.set_title(f"{title}, startup {startup:.0f}s", fontsize=9)
                ax.set_xlabel("GPU-hours")
                ax.set_ylabel("SLO attainment (%)")
                # The region that decides: near the goal, up to a few times the oracle.
                ours = by_key[(trace, tier, startup)].get("llmfleet", [])
                best = max((p["attainment"] for p in ours), default=1.0)
                widest = max((p["gpu_hours"] for p in ours), default=0.0)
                ax.set_ylim(min(80, 100 * best - 25), 100.5)
                right = max(6 * prepared["oracle_gpu_hours"], 1.3 * (fitted or 0), 1.1 * widest)
                ax.set_xlim(0, right)
                ax.grid(alpha=0.3)
            axes[0][0].legend(fontsize=8, loc="lower right")
            fig.tight_layout()
            path = prefix.parent / f"{prefix.name}-{trace}-{tier}.png"
            fig.savefig(path, dpi=90)
            plt.close(fig)
            written.append(path)
    return written


def week_bill(point: dict[str, Any], prices: dict[str, float]) -> float:
    """A week bench point's bill: its on-demand and spot GPU-hours at the run's prices."""
    return float(
        point["on_demand_gpu_hours"] * prices["on_demand"]
        + point["spot_gpu_hours"] * prices["spot"]
    )


def week_markdown(result: dict[str, Any]) -> str:
    """The table of a run of the week bench (``week.py``; bench/results/week.md)."""
    points, goal, prices = result["points"], result["goal"], result["prices"]
    goal_static = [p for p in points if p["kind"] == "static" and p["attainment"] >= goal]
    always = min(goal_static, key=lambda p: p["size"]) if goal_static else None
    ref = week_bill(always, prices) if always else None
    slo = result["slo"]
    header = (
        "| policy | attainment | notices (lost requests) | GPU-h / week"
        " | on-demand / spot GPU-h | bill $ / week | vs always-on | peak | changes"
        " | replay wall s |"
    )
    lines = [
        f"Week-shaped load (bench/autoscale/week.py): {result['load']['requests']} requests"
        f" in the scored week, tier {result['tier']} (TTFT <= {slo['ttft_s']:g} s, TPOT <="
        f" {slo['tpot_s'] * 1000:g} ms), goal {goal:.0%}, startup {result['startup_s']:g} s."
        f" GPU-hours per real week (the replay's x {result['week_speed']:g}); bill at"
        f" ${prices['on_demand']:.2f} on-demand and ${prices['spot']:.2f} spot per"
        " GPU-hour (assumed).",
        "",
        header,
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in points:
        bill = week_bill(p, prices)
        cut = f"{bill / ref - 1:+.0%}" if ref else "n/a"
        notices = f"{p['preemptions']} ({p['lost']})" if "preemptions" in p else "-"
        lines.append(
            f"| {p['label']} | {p['attainment']:.2%} | {notices} | {p['gpu_hours']:.0f} |"
            f" {p['on_demand_gpu_hours']:.0f} / {p['spot_gpu_hours']:.0f} | {bill:,.0f} |"
            f" {cut} | {p['peak_replicas']} | {p['changes']} | {p['wall_s']:.0f} |"
        )
    chosen = always["label"] if always else "no static fleet replayed reached the goal"
    lines += [
        "",
        f"Always-on at peak: {chosen} (the smallest static fleet replayed that reaches the goal).",
        *week_preemptions(result),
        "",
        f"Command: `{result['command']}`; wall time {result['runtime_s'] / 60:.1f} min"
        f" ({result['workers']} workers).",
        *(
            f"Merged: `{run['command']}` ({len(run['labels'])} rows); wall time"
            f" {run['runtime_s'] / 60:.1f} min ({run['workers']} workers)."
            for run in result.get("merged", [])
        ),
    ]
    return "\n".join(lines) + "\n"


def week_preemptions(result: dict[str, Any]) -> list[str]:
    """The sentence on the rows replayed with spot preemptions (none: nothing)."""
    preempted = [p for p in result["points"] if "preemption_rate" in p]
    if not preempted:
        return []
    first = preempted[0]
    return [
        "",
        "Rows `spot, R notices / spot replica-h`: ours with the business-hours floor, the"
        " replicas above the floor on spot and preempted: a Poisson process per spot replica"
        " at R notices per replica-hour of the replay's clock (seed"
        f" {first['preemption_seed']}); a notice of {first['notice_s']:g} s (no new request,"
        " what is still in the engine at its end lost: a miss), a replacement on spot at"
        " once, serving a startup later; GPU-hours priced by the tier each replica ran in"
        " (under notice: spot). Notices and lost requests are the replay's: a real week"
        f" holds {result['week_speed']:g} times as many of both, the same share of its"
        " requests.",
    ]
