"""``llmfleet simulate``: replay a trace through a simulated fleet and print the report.

Called by :mod:`llmfleet.cli` (``main(argv) -> exit code``). Reads the trace
and the LLMDeployment manifest, runs :func:`~llmfleet_fleetsim.simulate` (an autoscaler
warm at what the oracle needs in the first startup, unless ``--cold``), prints a table
(or JSON with ``--json``) with the trace's ceiling and the oracle beside the policy's
figures, and draws a PNG with ``--plot``. Bad arguments
or inputs exit with 2 and a message saying which.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

import pydantic
import yaml

from llmfleet_contract.api import LLMDeployment
from llmfleet_contract.arguments import count, non_negative, positive
from llmfleet_fleetsim.policies import MAIN_TARGET, POLICY_NAMES, make_policy
from llmfleet_fleetsim.simulation import DEFAULT_LAG_S, DEFAULT_SCRAPE_S, simulate
from llmfleet_fleetsim.slo import Slo
from llmfleet_fleetsim.trace import TraceError, load_trace
from llmfleet_runtime.simulator import PROFILES

PROG = "llmfleet simulate"


class UsageError(Exception):
    """An argument or input the simulator cannot use (exit code 2)."""


def parser() -> argparse.ArgumentParser:
    targets = "; ".join(f"{name}: {what}" for name, what in MAIN_TARGET.items())
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Replay a request trace through simulated vLLM replicas (the engine"
        " simulator's performance model) behind the gateway's router, with a metrics"
        " pipeline, replica startup time and a scaling policy; report SLO attainment,"
        " goodput, GPU-hours, direction flips and time to capacity against an oracle.",
    )
    p.add_argument(
        "--trace",
        required=True,
        type=Path,
        help="trace CSV: Azure LLM columns"
        " (TIMESTAMP,ContextTokens,GeneratedTokens) or arrival_s,prompt_tokens,"
        "output_tokens",
    )
    p.add_argument(
        "--deployment",
        required=True,
        type=Path,
        help="LLMDeployment YAML:"
        " engine limits, parallelism (GPUs per replica) and spec.autoscaling",
    )
    p.add_argument("--policy", required=True, choices=POLICY_NAMES)
    p.add_argument("--profile", required=True, help=f"engine profile: {', '.join(PROFILES)}")
    p.add_argument(
        "--startup-s",
        required=True,
        type=non_negative,
        help="seconds from a replica's creation to Ready",
    )
    p.add_argument("--slo-ttft-s", required=True, type=positive, help="TTFT bound, seconds")
    p.add_argument("--slo-tpot-s", required=True, type=positive, help="TPOT bound, seconds")
    p.add_argument(
        "--speed",
        type=positive,
        default=1.0,
        help="replay X times faster: arrival times divided by X, i.e. X times the load (default 1)",
    )
    p.add_argument(
        "--copies",
        type=count,
        default=1,
        help="overlay K copies of the trace, shifted within a minute: K times the load over"
        " the same time, ramps as long as in the trace (default 1)",
    )
    p.add_argument("--target", type=positive, help=f"override the main target ({targets})")
    p.add_argument("--replicas", type=int, help="static fleet size (default: the oracle's peak)")
    p.add_argument(
        "--scrape-s",
        type=positive,
        default=DEFAULT_SCRAPE_S,
        help=f"metrics scrape interval (default {DEFAULT_SCRAPE_S:g})",
    )
    p.add_argument(
        "--lag-s",
        type=non_negative,
        default=DEFAULT_LAG_S,
        help=f"from a scrape to the policy seeing it (default {DEFAULT_LAG_S:g})",
    )
    p.add_argument(
        "--capacity-rps",
        type=positive,
        help="one replica's capacity at the SLO for the oracle (default: measured)",
    )
    p.add_argument(
        "--start-time",
        type=_start_time,
        help="the wall-clock time of the trace's first second, an ISO 8601 time with its"
        " offset: spec.autoscaling.schedules apply by it",
    )
    p.add_argument(
        "--cold",
        action="store_true",
        help="start an autoscaler at its own minimum (max(1, minReplicas)), as a fleet created"
        " when the trace begins; by default it starts with what the oracle needs in the"
        " first startup, as when attached to a live fleet",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--plot", type=Path, metavar="PNG", help="draw load, replicas and TTFT")
    return p


def _start_time(text: str) -> datetime:
    try:
        found = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if found.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give the time's offset (+00:00): {text!r}")
    return found


def _deployment(path: Path) -> LLMDeployment:
    try:
        documents = list(yaml.safe_load_all(path.read_text()))
    except OSError as error:
        raise UsageError(f"--deployment {path}: cannot read: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise UsageError(f"--deployment {path}: not YAML: {error}") from None
    for document in documents:
        if isinstance(document, dict) and document.get("kind") == "LLMDeployment":
            try:
                return LLMDeployment.model_validate(document)
            except pydantic.ValidationError as error:
                raise UsageError(f"--deployment {path}: invalid LLMDeployment:\n{error}") from None
    raise UsageError(f"--deployment {path}: no LLMDeployment in the file")


def _run(args: argparse.Namespace) -> int:
    if args.profile not in PROFILES:
        raise UsageError(f"--profile: unknown {args.profile!r}; known: {', '.join(PROFILES)}")
    if args.replicas is not None and (args.policy != "static" or args.replicas < 1):
        raise UsageError("--replicas: only for --policy static, and at least 1")
    try:
        trace = load_trace(args.trace)
    except TraceError as error:
        raise UsageError(f"--trace: {error}") from None
    spec = _deployment(args.deployment).spec
    try:
        policy = make_policy(
            args.policy, spec, args.target, replicas=args.replicas, start=args.start_time
        )
    except ValueError as error:
        raise UsageError(f"--policy {args.policy}: {error}") from None
    report = simulate(
        trace,
        spec,
        policy,
        args.profile,
        args.startup_s,
        Slo(args.slo_ttft_s, args.slo_tpot_s),
        scrape_s=args.scrape_s,
        lag_s=args.lag_s,
        speed=args.speed,
        copies=args.copies,
        capacity_rps=args.capacity_rps,
        warm=not args.cold,
    )
    print(report.to_json() if args.json else report.table())
    if args.plot is not None:
        from llmfleet_fleetsim.plot import plot

        plot(report, args.plot)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``llmfleet simulate``; 0 on success, 2 on bad arguments or inputs."""
    p = parser()
    try:
        args = p.parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 2
    try:
        return _run(args)
    except UsageError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
