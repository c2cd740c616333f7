"""One replay end to end: :func:`simulate` (trace, deployment, policy -> :class:`~.report.Report`).

The entry point of the fleet simulator's Python API, called by the CLI
(``llmfleet simulate``) and the autoscaling bench. It sizes the engine from the
deployment, speeds the trace up, measures the oracle, runs :func:`.fleet.run` and
builds the report.
"""

from __future__ import annotations

import dataclasses
import time

from llmfleet_contract.api import LLMDeploymentSpec
from llmfleet_fleetsim.fleet import run
from llmfleet_fleetsim.oracle import capacity, ceiling, oracle, warm_start
from llmfleet_fleetsim.policies import StaticPolicy, make_policy
from llmfleet_fleetsim.report import Report, Settings, build
from llmfleet_fleetsim.slo import Slo
from llmfleet_fleetsim.trace import Trace
from llmfleet_fleetsim.view import Policy
from llmfleet_runtime.simulator import Profile, get_profile

DEFAULT_SCRAPE_S = 15.0
"""Prometheus' usual scrape interval (also the operator's Direct scrape period)."""
DEFAULT_LAG_S = 2.0
"""From a scrape to the sample being queryable (ingestion and query)."""


def fleet_profile(profile: Profile | str, spec: LLMDeploymentSpec) -> Profile:
    """``profile`` with the deployment's engine limits: maxNumSeqs, maxNumBatchedTokens and
    maxModelLen (the latter capped at what the KV cache holds)."""
    base = get_profile(profile) if isinstance(profile, str) else profile
    engine = spec.engine
    kv_tokens = base.num_gpu_blocks * base.block_size
    max_model_len = min(spec.model.max_model_len or base.max_model_len, kv_tokens)
    return base.with_overrides(
        max_num_seqs=engine.max_num_seqs,
        max_num_batched_tokens=engine.max_num_batched_tokens or base.max_num_batched_tokens,
        max_model_len=max_model_len,
    )


def _history_s(spec: LLMDeploymentSpec) -> float:
    """Samples a policy is shown: 10 minutes, or two stable windows if longer."""
    scaling = spec.autoscaling
    return max(600.0, 2.0 * scaling.stable_window_seconds if scaling else 0.0)


def simulate(
    trace: Trace,
    spec: LLMDeploymentSpec,
    policy: Policy | str,
    profile: Profile | str,
    startup_s: float,
    slo: Slo,
    *,
    scrape_s: float = DEFAULT_SCRAPE_S,
    lag_s: float = DEFAULT_LAG_S,
    speed: float = 1.0,
    copies: int = 1,
    target: float | None = None,
    capacity_rps: float | None = None,
    oracle_bucket_s: float = 60.0,
    max_drain_s: float = 3600.0,
    initial_replicas: int | None = None,
    warm: bool = False,
) -> Report:
    """Replay ``trace`` through a fleet of ``spec``'s replicas scaled by ``policy``.

    * ``policy``: a policy object (fresh: it keeps controller memory), or a name for
      :func:`.make_policy` (with ``target``). A static policy without a size gets the
      oracle's peak need.
    * ``profile``: an engine profile or its name (e.g. ``h100-llama2-70b-tp4``); the
      engine takes the deployment's maxNumSeqs, maxNumBatchedTokens and maxModelLen.
    * ``startup_s``: from a replica's creation to Ready (it costs GPU time meanwhile).
    * ``slo``: the TTFT and TPOT bounds of the attainment.
    * ``scrape_s``, ``lag_s``: the metrics pipeline (a sample is seen ``lag_s`` after it
      was taken, and taken every ``scrape_s``).
    * ``speed``: arrivals ``speed`` times faster (``speed`` times the load, same requests).
    * ``copies``: the trace overlaid on itself ``copies`` times (:meth:`.Trace.denser`):
      ``copies`` times the load over the same time.
    * ``capacity_rps``: one replica's capacity at the SLO for the oracle; None measures it
      (:func:`.oracle.capacity`, a few seconds on a 70B profile): measure once per trace,
      profile and SLO with :func:`.oracle.capacity` and pass it to every run of a sweep.
    * ``max_drain_s``: give up this long after the last arrival; unanswered requests fail.
    * ``initial_replicas``: warm replicas at the start (default: the policy's, which is
      ``max(1, minReplicas)`` for the autoscalers and the fleet size for static).
    * ``warm``: without ``initial_replicas``, an autoscaler starts with what the oracle
      needs in the minutes that begin within the first startup
      (:func:`.oracle.warm_start`), as a policy attached to a live fleet would: a trace
      that opens busy is then not judged on a backlog no policy could prevent.
    """
    engine_profile = fleet_profile(profile, spec)
    replay = trace.faster(speed).denser(copies)
    if isinstance(policy, str):
        policy = make_policy(policy, spec, target)
    if capacity_rps is None:
        capacity_rps = capacity(replay, engine_profile, slo)
    gpus = spec.parallelism.gpus_per_group
    best = oracle(replay, capacity_rps, gpus, bucket_s=oracle_bucket_s)
    if isinstance(policy, StaticPolicy) and policy.replicas is None:
        policy = dataclasses.replace(policy, replicas=max(1, best.peak if best else 1))
    settings = Settings(
        policy=policy.name,
        trace=trace.name,
        profile=engine_profile.name,
        slo_ttft_s=slo.ttft_s,
        slo_tpot_s=slo.tpot_s,
        startup_s=startup_s,
        scrape_s=scrape_s,
        lag_s=lag_s,
        speed=speed,
        copies=copies,
        period_s=policy.period_s,
        gpus_per_replica=gpus,
    )
    if warm and initial_replicas is None and not isinstance(policy, StaticPolicy):
        need = 0 if best is None else warm_start(best.needs, best.bucket_s, startup_s)
        most = spec.autoscaling.max_replicas if spec.autoscaling else need
        initial_replicas = max(policy.initial_replicas, min(need, most))
    started = time.perf_counter()
    outcome = run(
        replay,
        policy,
        engine_profile,
        startup_s=startup_s,
        scrape_s=scrape_s,
        lag_s=lag_s,
        max_drain_s=max_drain_s,
        history_s=_history_s(spec),
        initial_replicas=initial_replicas,
    )
    wall = time.perf_counter() - started
    started_with = policy.initial_replicas if initial_replicas is None else initial_replicas
    report = build(settings, replay, slo, outcome, best, capacity_rps, wall, started_with)
    return dataclasses.replace(report, ceiling=ceiling(replay, engine_profile, slo))
