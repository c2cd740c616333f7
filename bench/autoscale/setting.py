"""The autoscaling bench's setting: what is replayed, and what each replay is measured
against (called by :mod:`run`).

Constants (traces, speeds, startups, SLO tiers, each policy's sweep), the deployment and
its engine profile, and :func:`prepare`: per trace and tier, one replica's capacity at the
SLO, the attainment ceiling, the raw oracle (replayed with instant starts) and the oracle
fitted to the goal (:func:`llmfleet_fleetsim.oracle_at`), measured once and
shared by every replay of that trace.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import summary  # the bench's own module, beside this script (run.py puts it on the path)
import yaml

import llmfleet_fleetsim
import llmfleet_runtime.simulator
from llmfleet_contract.api import LLMDeploymentSpec
from llmfleet_fleetsim import (
    PUBLIC_TRACES,
    Slo,
    capacity,
    ceiling,
    fleet_profile,
    load_trace,
    oracle_at,
)
from llmfleet_fleetsim.trace import Trace
from llmfleet_fleetsim.view import FleetView, Policy
from llmfleet_runtime.simulator import Profile

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RESULTS = REPO / "bench" / "results"
ORACLES = REPO / ".cache" / "bench-autoscale" / "oracles"
"""Prepared oracles by a hash of their inputs (:func:`cached_prepare`); git-ignored."""
SPEC_FILE = HERE / "llama-70b-tp4.yaml"
PROFILE = "h100-llama2-70b-tp4"
TRACES = ("code", "conv")
SPEED = {"code": 2.0, "conv": 4.0}
"""Arrivals this many times faster: one hour of either trace at speed 1 needs only a
handful of 70B TP4 replicas (the oracle: ~3 on average); sped up, tens at the peaks,
where autoscaling decides the bill. The code trace only x2: its bursts are 13x its mean
within 10 s, and faster still they are shorter than any startup."""
STARTUPS = (60.0, 180.0)
TIERS = {"relaxed": Slo(ttft_s=2.0, tpot_s=0.05), "strict": Slo(ttft_s=0.5, tpot_s=0.05)}
TIER_TEXT = {"relaxed": "TTFT<=2s TPOT<=50ms", "strict": "TTFT<=500ms TPOT<=50ms"}
SCRAPE_S, LAG_S = 15.0, 2.0
POLICIES = ("llmfleet", "static", "hpa", "keda", "kpa", "llm-d")

SWEEPS: dict[str, tuple[float, ...]] = {
    # Ours: slotsUsed, running / maxNumSeqs (64) per replica; the spec file sets the rest.
    # Dense where the goal is crossed (0.07-0.1 strict, 0.15-0.2 relaxed).
    "llmfleet": (0.02, 0.05, 0.07, 0.08, 0.09, 0.1, 0.125, 0.15, 0.16, 0.17, 0.18, 0.19, 0.2, 0.25),
    # Replicas, warm for the whole replay, as multiples of the raw oracle's peak need;
    # dense where either tier's goal is crossed (about 1.1x on conv relaxed, 1.6-2x strict),
    # so that a baseline is not priced off a line between two far-apart fleets.
    # 1.0-1.3 by 0.05, 1.4-2.0 by 0.1.
    "static": (0.75, *(n / 20 for n in range(20, 27)), *(n / 10 for n in range(14, 21)), 2.25, 2.5),
    # vllm:num_requests_running per pod (0.8 x maxNumSeqs = 51 is the usual setting).
    # As dense as ours where it matters (ours' slotsUsed x 64 = running per pod).
    "hpa": (1.0, 2.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 16.0, 24.0, 51.0),
    # vllm:num_requests_waiting per replica (the production-stack default is 5).
    "keda": (0.5, 1.0, 2.0, 5.0),
    # Requests in flight per pod (Knative's default container concurrency target is 100).
    "kpa": (1.0, 2.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 16.0, 24.0, 100.0),
    # KV usage at which a replica counts as saturated (the default is 0.8).
    "llm-d": (0.02, 0.05, 0.1, 0.2, 0.4, 0.8),
}
"""The main target each policy is swept over (what ``make_policy(target=...)`` sets)."""


def traces_dir(option: str | None) -> Path:
    """``--traces``, else ``$LLMFLEET_TRACES``, else the workplace's ``shared/traces``."""
    if option:
        return Path(option)
    if "LLMFLEET_TRACES" in os.environ:
        return Path(os.environ["LLMFLEET_TRACES"])
    return REPO.parent / "shared" / "traces"


def missing_traces(directory: Path, names: Iterable[str]) -> str | None:
    """Why the bench cannot run (which trace files are missing, and where to get them)."""
    missing = [name for name in names if not (directory / name).is_file()]
    if not missing:
        return None
    return f"skipped: {', '.join(missing)} not in {directory}. {PUBLIC_TRACES}; pass --traces DIR"


@cache
def spec() -> LLMDeploymentSpec:
    return LLMDeploymentSpec.model_validate(yaml.safe_load(SPEC_FILE.read_text())["spec"])


@cache
def profile() -> Profile:
    return fleet_profile(PROFILE, spec())


@cache
def replay(path: str, speed: float, copies: int = 1) -> Trace:
    return load_trace(path).faster(speed).denser(copies)


def ceilings(trace: Trace) -> dict[str, float]:
    """Per tier, the share of the trace's requests that meet the SLO each alone on an idle
    replica (:func:`llmfleet_fleetsim.ceiling`): no fleet does better."""
    return {tier: ceiling(trace, profile(), slo) for tier, slo in TIERS.items()}


def prepare(trace: str, path: str, speed: float, tier: str, copies: int = 1) -> dict[str, Any]:
    """For one trace and tier: one replica's capacity, the attainment ceiling and goal,
    the raw oracle (and its replay's attainment) and the oracle fitted to the goal."""
    sped = replay(path, speed, copies)
    gpus = spec().parallelism.gpus_per_group
    slo = TIERS[tier]
    ceiling = ceilings(sped)[tier]
    goal = summary.goal(ceiling)
    rps = capacity(sped, profile(), slo)
    fit = oracle_at(sped, profile(), slo, gpus, goal, capacity_rps=rps)
    assert fit is not None
    return {
        "trace": trace,
        "tier": tier,
        "capacity_rps": rps,
        "ceiling": ceiling,
        "goal": goal,
        "oracle_gpu_hours": fit.raw.gpu_hours,
        "oracle_peak": fit.raw.peak,
        "oracle_replayed_attainment": fit.raw_attainment,
        "fitted_oracle_gpu_hours": fit.fitted.gpu_hours if fit.fitted else None,
        "fitted_oracle_scale": fit.scale,
        "fitted_oracle_peak": fit.fitted.peak if fit.fitted else None,
        # The warm start (summary.warm_start) and what summary.rows charges for starts at
        # each startup time (fleetsim.starting_seconds).
        "fitted_oracle_needs": list((fit.fitted or fit.raw).needs),
        "oracle_bucket_s": fit.raw.bucket_s,
        "gpus_per_replica": gpus,
        "fitted_oracle_attainment": fit.attainment,
        "fitted_oracle_best_gpu_hours": fit.best_gpu_hours,
        "fitted_oracle_replays": fit.replays,
    }


def _inputs() -> list[Path]:
    """Every file an oracle depends on besides its trace: this bench's setting, the
    deployment, the fleet simulator and the engine simulator (its profiles
    included). Not the scaling policy: no oracle runs it."""
    found = [HERE / "setting.py", SPEC_FILE]
    for package in (llmfleet_fleetsim, llmfleet_runtime.simulator):
        root = Path(package.__path__[0])
        found += [p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    return sorted(found)


def cached_prepare(
    trace: str, path: str, speed: float, tier: str, copies: int = 1, fresh: bool = False
) -> tuple[dict[str, Any], bool]:
    """:func:`prepare`, read from :data:`ORACLES` when the same inputs (trace file,
    speed, copies, tier, goal and the code of :func:`_inputs`) were measured before; with
    ``fresh`` measured again. Also whether it came from the cache."""
    digest = hashlib.sha256(json.dumps([trace, speed, copies, tier, summary.GOAL]).encode())
    for source in (Path(path), *_inputs()):
        digest.update(source.read_bytes())
    cached = ORACLES / f"{trace}-{tier}-{digest.hexdigest()[:16]}.json"
    if cached.exists() and not fresh:
        entry: dict[str, Any] = json.loads(cached.read_text())
        return entry, True
    entry = prepare(trace, path, speed, tier, copies)
    ORACLES.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(entry, indent=1) + "\n")
    return entry, False


@dataclass
class Warm:
    """A policy that starts the replay with ``initial_replicas`` warm replicas.

    The traces start at full load; starting every autoscaler at one replica would make
    the first minutes (a cold start no SLO survives) dominate every run. Every
    autoscaler starts with what the fitted oracle (the schedule known to reach the
    tier's goal) holds at most in the minutes no ordered replica can serve yet, those
    beginning within the first startup (``summary.warm_start``). So an autoscaler is
    replayed once per tier and startup, each start sized for its SLO.
    It decides only once it has a sample taken under load: the scrape at time 0 sees
    warm, empty replicas, which a controller attached to a live fleet would never see.
    """

    inner: Policy
    initial_replicas: int

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def period_s(self) -> float:
        return self.inner.period_s

    def decide(self, view: FleetView, now: float) -> int:
        if not any(sample.time > 0 for sample in view.samples):
            return view.current
        return self.inner.decide(view, now)

    def victim_order(self, view: FleetView, now: float) -> tuple[str, ...] | None:
        """The inner policy's scale-down order (ours'), else None: the ReplicaSet's."""
        order = getattr(self.inner, "victim_order", None)
        return None if order is None else tuple(order(view, now))
