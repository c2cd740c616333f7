"""The fleet simulator (``llmfleet simulate``): a trace through a simulated, autoscaled fleet.

Used by the CLI and by the autoscaling bench (``bench/autoscale``). Pure: no Kubernetes,
no HTTP; each replica is the engine simulator's :class:`~llmfleet_runtime.simulator.Engine`
and time is simulated.

The Python API::

    trace = load_trace("azure_llm_2023_conv.csv")
    spec = LLMDeployment.model_validate(yaml.safe_load(text)).spec
    slo = Slo(ttft_s=2.0, tpot_s=0.05)
    rps = capacity(trace, fleet_profile("h100-llama2-70b-tp4", spec), slo)  # once per sweep
    fitted = oracle_at(trace, fleet_profile(...), slo, 4, goal=0.99, capacity_rps=rps)
    report = simulate(trace, spec, make_policy("hpa", spec, target=32), "h100-llama2-70b-tp4",
                      startup_s=60, slo=slo, capacity_rps=rps)
    report.attainment, report.gpu_hours, report.to_dict()

Modules: :mod:`.trace` (CSV in), :mod:`.fleet` (replicas, router, metrics, startup,
drain), :mod:`.preemption` (spot tiers and their preemptions) and :mod:`.outcome` (what
a replay produced), :mod:`.view` (what a policy sees, the Policy protocol),
:mod:`.policies` and :mod:`.baselines` (the six policies), :mod:`.oracle`, :mod:`.slo`,
:mod:`.report`, :mod:`.simulation` (:func:`simulate`),
:mod:`.plot` (matplotlib, lazy), :mod:`.cli`.
"""

from llmfleet_fleetsim.baselines import HpaPolicy, KedaPolicy, KpaPolicy, LlmdPolicy
from llmfleet_fleetsim.fleet import run
from llmfleet_fleetsim.oracle import (
    FittedOracle,
    Oracle,
    Schedule,
    capacity,
    ceiling,
    fewest_flips,
    oracle,
    oracle_at,
    replay_schedule,
    starting_seconds,
    warm_start,
)
from llmfleet_fleetsim.outcome import Change, Outcome, Point
from llmfleet_fleetsim.policies import (
    MAIN_TARGET,
    POLICY_NAMES,
    LlmfleetPolicy,
    StaticPolicy,
    make_policy,
)
from llmfleet_fleetsim.preemption import Preempted, Preemptions
from llmfleet_fleetsim.report import Report, Settings
from llmfleet_fleetsim.simulation import fleet_profile, simulate
from llmfleet_fleetsim.slo import Slo
from llmfleet_fleetsim.trace import (
    PUBLIC_TRACES,
    Trace,
    TraceError,
    TraceRequest,
    load_trace,
    trace_from_rows,
)
from llmfleet_fleetsim.view import FleetView, Policy

__all__ = [
    "MAIN_TARGET",
    "POLICY_NAMES",
    "PUBLIC_TRACES",
    "Change",
    "FittedOracle",
    "FleetView",
    "HpaPolicy",
    "KedaPolicy",
    "KpaPolicy",
    "LlmdPolicy",
    "LlmfleetPolicy",
    "Oracle",
    "Outcome",
    "Point",
    "Policy",
    "Preempted",
    "Preemptions",
    "Report",
    "Schedule",
    "Settings",
    "Slo",
    "StaticPolicy",
    "Trace",
    "TraceError",
    "TraceRequest",
    "capacity",
    "ceiling",
    "fewest_flips",
    "fleet_profile",
    "load_trace",
    "make_policy",
    "oracle",
    "oracle_at",
    "replay_schedule",
    "run",
    "simulate",
    "starting_seconds",
    "trace_from_rows",
    "warm_start",
]
