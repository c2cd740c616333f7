"""A replay's numbers: SLO attainment, goodput, GPU-hours, flips, time to capacity, the oracle.

Built by :func:`llmfleet_fleetsim.simulate` from the fleet's raw
:class:`~.fleet.Outcome`; printed by the CLI (:meth:`Report.table` or
:meth:`Report.to_json`) and read by the autoscaling bench (the fields).

Definitions (also in each field's docstring):

* attainment: share of the trace's requests with TTFT <= T and TPOT <= P (see
  :mod:`.slo`); refused and unanswered requests count as misses.
* goodput: requests meeting the SLO (and their output tokens) per second of the replay,
  from the first arrival to the last answer.
* GPU-hours: replica-seconds, from a replica's creation to its removal (starting and
  draining replicas count), x GPUs per replica (tensor x pipeline parallel) / 3600.
* direction flips: changes of the replica count whose direction (up or down) differs
  from the previous change's.
* time to capacity: for each scale-up, from the first scrape the policy had not yet seen
  at its last decision that did not scale up (the burst's first sample) to the first new
  replica being Ready. Median and max over scale-ups.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from llmfleet_fleetsim.oracle import Oracle, starting_seconds
from llmfleet_fleetsim.outcome import Change, Outcome, Point
from llmfleet_fleetsim.slo import Slo, meets, percentile, tpot
from llmfleet_fleetsim.trace import Trace


@dataclass(frozen=True)
class Settings:
    """How the replay ran."""

    policy: str
    trace: str
    profile: str
    slo_ttft_s: float
    slo_tpot_s: float
    startup_s: float
    scrape_s: float
    lag_s: float
    speed: float
    copies: int
    period_s: float
    gpus_per_replica: int


@dataclass(frozen=True)
class Report:
    """One replay's results (module docstring for the definitions)."""

    settings: Settings
    requests: int
    refused: int
    """Longer than the engine's max model length: vLLM answers 400."""
    unanswered: int
    """Not finished when the replay gave up."""
    attainment: float
    goodput_rps: float
    goodput_tokens_per_s: float
    ttft_p50_s: float | None
    ttft_p99_s: float | None
    tpot_p50_s: float | None
    tpot_p99_s: float | None
    gpu_hours: float
    mean_replicas: float
    """Replica-seconds over the replay's duration (starting and draining count)."""
    peak_replicas: int
    """Most replicas alive at a scrape."""
    scale_ups: int
    scale_downs: int
    direction_flips: int
    time_to_capacity_median_s: float | None
    time_to_capacity_max_s: float | None
    capacity_rps: float | None
    """Requests per second one replica sustains at the SLO (the oracle's unit)."""
    oracle_gpu_hours: float | None
    """The oracle's lower-bound estimate (:mod:`.oracle`); None when no capacity."""
    gpu_hours_vs_oracle: float | None
    oracle_started_gpu_hours: float | None
    """The oracle's schedule with its starts charged at ``settings.startup_s`` from the
    replay's warm start (:func:`.oracle.starting_seconds`): what a clairvoyant fleet that
    follows it pays (GPU-hours count starting replicas). Not a bound on every fleet."""
    duration_s: float
    """Simulated seconds, from the first arrival to the last answer."""
    wall_s: float
    """Seconds the replay took on this machine."""
    initial_replicas: int = 0
    """Replicas ready at the start of the replay."""
    ceiling: float | None = None
    """The share of requests that meet the SLO each alone on an idle replica: the most any
    fleet attains (:func:`.oracle.ceiling`); None when not measured."""
    changes: tuple[Change, ...] = field(default=(), repr=False, compare=False)
    """Every change of the replica count, in order (not in :meth:`to_dict`)."""
    timeline: tuple[Point, ...] = field(default=(), repr=False, compare=False)
    """The fleet at each scrape (for the plot; not in :meth:`to_dict`)."""
    ttfts: tuple[tuple[float, float], ...] = field(default=(), repr=False, compare=False)
    """``(arrival, TTFT)`` of every answered request (for the plot; not in :meth:`to_dict`)."""

    def to_dict(self) -> dict[str, object]:
        """Every number, JSON-ready (the series for the plot left out)."""
        out = asdict(self)
        del out["changes"], out["timeline"], out["ttfts"]
        return out

    def to_json(self) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def table(self) -> str:
        """A short table for people."""
        s = self.settings

        def num(value: float | None, spec: str = ".2f", unit: str = "") -> str:
            return "-" if value is None else f"{value:{spec}}{unit}"

        rows = [
            ("policy", f"{s.policy} on {s.trace} x{s.speed:g}"
                       f"{f', {s.copies} copies' if s.copies > 1 else ''} ({s.profile})"),
            ("SLO", f"TTFT <= {s.slo_ttft_s:g}s, TPOT <= {s.slo_tpot_s * 1000:g}ms"),
            ("attainment", f"{self.attainment:.2%} of {self.requests} requests"
                           f"{'' if self.ceiling is None else f'; ceiling {self.ceiling:.2%}'}"
                           f"{'' if self.ceiling is None else ' (each alone, idle replica)'}"),
            ("start", f"{self.initial_replicas} replica(s) ready"),
            ("goodput", f"{self.goodput_rps:.2f} req/s, {self.goodput_tokens_per_s:.0f} tok/s"),
            ("TTFT p50 / p99", f"{num(self.ttft_p50_s, '.3f')} / {num(self.ttft_p99_s, '.3f')} s"),
            ("TPOT p50 / p99", f"{num(self.tpot_p50_s, '.4f')} / {num(self.tpot_p99_s, '.4f')} s"),
            ("GPU-hours", f"{self.gpu_hours:.2f} ({self.mean_replicas:.2f} replicas on average)"),
            ("oracle GPU-hours", f"{num(self.oracle_gpu_hours)}"
                                 f" (x{num(self.gpu_hours_vs_oracle)}),"
                                 f" {num(self.oracle_started_gpu_hours)} with its starts"),
            ("scaling", f"{self.scale_ups} up, {self.scale_downs} down, "
                        f"{self.direction_flips} direction flips, peak {self.peak_replicas}"),
            ("time to capacity", f"median {num(self.time_to_capacity_median_s, '.0f', 's')}, "
                                 f"max {num(self.time_to_capacity_max_s, '.0f', 's')}"),
            ("simulated", f"{self.duration_s:.0f}s in {self.wall_s:.1f}s wall"),
        ]  # fmt: skip
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def flips(changes: Iterable[Change]) -> int:
    """Changes whose direction differs from the previous change's."""
    count, previous = 0, 0
    for change in changes:
        direction = 1 if change.after > change.before else -1
        if previous and direction != previous:
            count += 1
        previous = direction
    return count


def build(
    settings: Settings,
    trace: Trace,
    slo: Slo,
    outcome: Outcome,
    oracle: Oracle | None,
    capacity_rps: float | None,
    wall_s: float,
    warm: int | None = None,
) -> Report:
    """The report of one replay (module docstring); ``warm``: the replicas it started
    with (the oracle's starts are charged beyond them; default its first minute's)."""
    met = met_tokens = 0
    ttfts: list[tuple[float, float]] = []
    tpots: list[float] = []
    for index, request in enumerate(trace.requests):
        first, last = outcome.first_token[index], outcome.last_token[index]
        if first is None or last is None:
            continue
        ttfts.append((request.arrival_s, first - request.arrival_s))
        per_token = tpot(first, last, request.output_tokens)
        if per_token is not None:
            tpots.append(per_token)
        if meets(slo, request.arrival_s, first, last, request.output_tokens):
            met += 1
            met_tokens += request.output_tokens
    total = len(trace.requests)
    duration = outcome.end_s
    gpu_hours = outcome.replica_seconds * settings.gpus_per_replica / 3600
    delays = list(outcome.capacity_delays)
    ttft_values = [t for _, t in ttfts]
    return Report(
        settings=settings,
        requests=total,
        refused=sum(outcome.rejected),
        unanswered=total - len(ttfts) - sum(outcome.rejected),
        attainment=met / total if total else 1.0,
        goodput_rps=met / duration if duration > 0 else 0.0,
        goodput_tokens_per_s=met_tokens / duration if duration > 0 else 0.0,
        ttft_p50_s=percentile(ttft_values, 0.5),
        ttft_p99_s=percentile(ttft_values, 0.99),
        tpot_p50_s=percentile(tpots, 0.5),
        tpot_p99_s=percentile(tpots, 0.99),
        gpu_hours=gpu_hours,
        mean_replicas=outcome.replica_seconds / duration if duration > 0 else 0.0,
        peak_replicas=max((p.total for p in outcome.timeline), default=0),
        scale_ups=sum(1 for c in outcome.changes if c.after > c.before),
        scale_downs=sum(1 for c in outcome.changes if c.after < c.before),
        direction_flips=flips(outcome.changes),
        time_to_capacity_median_s=percentile(delays, 0.5),
        time_to_capacity_max_s=max(delays, default=None),
        capacity_rps=capacity_rps,
        oracle_gpu_hours=None if oracle is None else oracle.gpu_hours,
        gpu_hours_vs_oracle=(
            gpu_hours / oracle.gpu_hours if oracle is not None and oracle.gpu_hours > 0 else None
        ),
        oracle_started_gpu_hours=(
            None
            if oracle is None
            else oracle.gpu_hours
            + starting_seconds(oracle.needs, oracle.bucket_s, settings.startup_s, warm)
            * settings.gpus_per_replica
            / 3600
        ),
        duration_s=duration,
        wall_s=wall_s,
        initial_replicas=0 if warm is None else warm,
        changes=outcome.changes,
        timeline=outcome.timeline,
        ttfts=tuple(ttfts),
    )
