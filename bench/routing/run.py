"""Routing bench: a trace replay over engine-simulator replicas, one router after another.

    flock /tmp/llmfleet-heavy.lock .venv/bin/python bench/routing/run.py [--traces DIR]

For each trace (Mooncake synthetic, Azure conversation) and each contender (ours, the plain
proxy's round-robin and least-load, vllm-router cache_aware), K engine simulators are
started cold (prefix caching on), the contender in front of them, and the trace's window
is replayed open loop through it (:mod:`client`); then all of them stop, so every
contender starts from empty caches on the same replicas and settings. Measured per
contender: TTFT p50 / p99 at the client, SLO attainment (TTFT within the request's SLO,
errors count as misses), the engines' prefix-cache hit rate (hits / queries over the run,
summed over replicas), requests per replica, CPU of each process, and the simulators'
``/health`` latency (their event loops' lag on this machine).

The SLO of a request is ``--slo-s`` plus ``--slo-prefill-factor`` times the time its whole
prompt takes to prefill on an idle replica of the profile: a 100k-token Mooncake prompt
cannot have its first token in 2 s on any replica, and should not count against a router.

Traces come from ``--traces``, else ``$LLMFLEET_TRACES``, else ``../shared/traces`` beside
the repository. Writes bench/results/routing.json; ``bench/tables.py`` renders the tables.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import os
import socket
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fleet
import prompts
from client import Lag, Outcome, replay

from llmfleet_runtime.simulator.perf import step_seconds
from llmfleet_runtime.simulator.profiles import get_profile

RESULTS = fleet.REPO / "bench" / "results"
TRACE_FILES = {"mooncake": "mooncake_synthetic.jsonl", "conv": "azure_llm_2023_conv.csv"}


@dataclass(frozen=True)
class Window:
    """The part of a trace replayed, how fast, and over how many replicas."""

    start_s: float
    window_s: float
    speed: float
    replicas: int


DEFAULTS = {
    "mooncake": Window(start_s=540.0, window_s=180.0, speed=1.0, replicas=8),
    "conv": Window(start_s=0.0, window_s=720.0, speed=4.0, replicas=4),
}
"""Mooncake's prompts reuse earlier blocks more as the trace goes on (its first minutes
hardly at all): minutes 9 to 12 at their own rate, over 8 replicas, offer about 90% of the
fleet's prefill capacity without a prefix cache and about 60% with an ideal one, where
routing decides which. Conversation prompts are short and never shared: its first 12
minutes four times faster keep 4 replicas about 65% busy."""


def traces_dir(option: str | None) -> Path:
    """``--traces``, else ``$LLMFLEET_TRACES``, else ``shared/traces`` beside the repo."""
    if option:
        return Path(option)
    if "LLMFLEET_TRACES" in os.environ:
        return Path(os.environ["LLMFLEET_TRACES"])
    return fleet.REPO.parent / "shared" / "traces"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cold_prefill_s(profile_name: str, tokens: int, chunk: int) -> float:
    """Seconds an idle replica takes to prefill ``tokens`` uncached prompt tokens."""
    profile = get_profile(profile_name)
    full, rest = divmod(tokens, chunk)
    seconds = full * step_seconds(profile, chunk, 1, 0)
    return seconds + (step_seconds(profile, rest, 1, 0) if rest else 0.0)


def percentile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile (nearest rank); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def offered_load(
    requests: list[prompts.Replayed], profile: str, replicas: int, chunk: int
) -> dict[str, float]:
    """Prompt tokens per second the replay offers, and that as a share of the fleet's
    prefill capacity (``chunk``-token steps back to back on every replica)."""
    span = max(r.arrival_s for r in requests) or 1.0
    tokens_per_s = sum(r.prompt_tokens for r in requests) / span
    capacity = replicas * chunk / step_seconds(get_profile(profile), chunk, 1, 0)
    ideal = prompts.ideal_cached_share(requests)
    return {
        "prompt_tokens_per_s": round(tokens_per_s),
        "fleet_prefill_tokens_per_s": round(capacity),
        "share_without_cache": round(tokens_per_s / capacity, 3),
        "ideal_cached_share": round(ideal, 3),
        "share_with_ideal_cache": round(tokens_per_s * (1 - ideal) / capacity, 3),
    }


def summarize(
    outcomes: list[Outcome], slos: list[float], lag: Lag, wall_s: float
) -> dict[str, Any]:
    ttfts = [o.ttft_s for o in outcomes if o.ttft_s is not None and o.error is None]
    e2es = [o.e2e_s for o in outcomes if o.e2e_s is not None and o.error is None]
    met = sum(
        1
        for o, slo in zip(outcomes, slos, strict=True)
        if o.error is None and o.ttft_s is not None and o.ttft_s <= slo
    )
    errors = Counter(o.error for o in outcomes if o.error is not None)
    return {
        "requests": len(outcomes),
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
        "ttft_p50_s": percentile(ttfts, 0.5),
        "ttft_p90_s": percentile(ttfts, 0.9),
        "ttft_p99_s": percentile(ttfts, 0.99),
        "ttft_mean_s": statistics.fmean(ttfts) if ttfts else None,
        "e2e_p50_s": percentile(e2es, 0.5),
        "e2e_p99_s": percentile(e2es, 0.99),
        "attainment": met / len(outcomes),
        "lag": {
            "sim_health_p50_s": percentile(lag.health_s, 0.5),
            "sim_health_p99_s": percentile(lag.health_s, 0.99),
            "sim_health_max_s": max(lag.health_s, default=None),
            "client_timer_p99_s": percentile(lag.timer_s, 0.99),
            "client_timer_max_s": max(lag.timer_s, default=None),
        },
        "wall_s": round(wall_s, 1),
    }


def access_summary(log: Path) -> dict[str, Any]:
    """Our gateway's access log, counted: replicas, statuses, route reasons if logged."""
    replicas: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    for line in log.read_text(errors="replace").splitlines():
        start = line.find("{")
        if "llmfleet.gateway.access" not in line or start < 0:
            continue
        try:
            record = json.loads(line[start:])
        except ValueError:
            continue
        replicas[str(record.get("replica"))] += 1
        statuses[str(record.get("status"))] += 1
        if "reason" in record:
            reasons[str(record["reason"])] += 1
    return {"replicas": dict(replicas), "statuses": dict(statuses), "reasons": dict(reasons)}


def run_contender(
    contender: str,
    requests: list[prompts.Replayed],
    slos: list[float],
    args: argparse.Namespace,
    replicas: int,
    logs: Path,
) -> dict[str, Any]:
    settings = fleet.SimulatorSettings(args.profile, args.max_num_seqs, args.max_model_len)
    logs.mkdir(parents=True, exist_ok=True)
    processes = fleet.Processes(logs)
    ports = [args.base_port + i for i in range(replicas)]
    router_port = args.base_port + replicas
    try:
        urls = fleet.start_simulators(processes, settings, ports)
        before = [fleet.prefix_counters(url) for url in urls]
        command = fleet.router_command(
            contender, urls, router_port, args.max_num_seqs, args.gateway_flag or []
        )
        router = processes.start(contender, command)
        router_url = f"http://127.0.0.1:{router_port}"
        fleet.wait_ready(f"{router_url}/health", router)
        pids = {name: p.pid for name, p in processes.running.items()}
        cpu_before = {name: fleet.cpu_seconds(pid) for name, pid in pids.items()}
        own_before = time.process_time()
        started = time.monotonic()
        outcomes, lag = asyncio.run(
            replay(router_url, urls, requests, fleet.MODEL, args.request_timeout_s)
        )
        wall = time.monotonic() - started
        cpu = {name: fleet.cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
        after = [fleet.prefix_counters(url) for url in urls]
        served = [fleet.requests_served(url) for url in urls]
    finally:
        processes.stop_all()
    hits = sum(a[0] - b[0] for a, b in zip(after, before, strict=True))
    queries = sum(a[1] - b[1] for a, b in zip(after, before, strict=True))
    result = summarize(outcomes, slos, lag, wall)
    result["prefix_hit_rate"] = hits / queries if queries else None
    result["prefix_hit_tokens"] = hits
    result["replica_requests"] = served
    sims = sum(v for k, v in cpu.items() if k.startswith("sim-"))
    result["cpu_cores"] = {
        "simulators": round(sims / wall, 3),
        "router": round(cpu[contender] / wall, 3),
        "client": round((time.process_time() - own_before) / wall, 3),
    }
    if contender == "ours":
        result["access_log"] = access_summary(logs / f"{contender}.log")
    return result


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--traces", help="directory of the trace files")
    p.add_argument("--trace", action="append", choices=tuple(TRACE_FILES), help="default: both")
    p.add_argument("--contender", action="append", choices=fleet.CONTENDERS, help="default: all")
    p.add_argument("--replicas", type=int, action="append", help="per --trace")
    p.add_argument("--profile", default="h100-llama2-70b-tp4")
    p.add_argument("--max-num-seqs", type=int, default=64)
    p.add_argument("--max-model-len", type=int, default=200_000)
    p.add_argument("--chunk-tokens", type=int, default=8192, help="the engine's token budget")
    p.add_argument("--start-s", type=float, action="append", help="per --trace, trace second")
    p.add_argument("--window-s", type=float, action="append", help="per --trace, trace seconds")
    p.add_argument("--speed", type=float, action="append", help="per --trace, arrival speed-up")
    p.add_argument("--slo-s", type=float, default=2.0)
    p.add_argument("--slo-prefill-factor", type=float, default=1.0)
    p.add_argument("--request-timeout-s", type=float, default=300.0)
    p.add_argument("--base-port", type=int, default=0, help="default: a free range")
    p.add_argument(
        "--gateway-flag", action="append", help="an extra flag for ours (repeat; --x=y form)"
    )
    p.add_argument("--output", default=str(RESULTS / "routing.json"))
    p.add_argument("--logs", help="folder for process logs (default: a temporary one)")
    args = p.parse_args(argv)
    if not args.base_port:
        args.base_port = free_port()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    folder = traces_dir(args.traces)
    traces = args.trace or list(TRACE_FILES)
    contenders = args.contender or list(fleet.CONTENDERS)
    logs = Path(args.logs or tempfile.mkdtemp(prefix="llmfleet-routing-"))
    logs.mkdir(parents=True, exist_ok=True)
    print(f"logs in {logs}", flush=True)
    started = time.monotonic()
    out: dict[str, Any] = {
        "command": "bench/routing/run.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": datetime.date.today().isoformat(),
        "cores": len(os.sched_getaffinity(0)),
        "simulator": {
            "profile": args.profile,
            "max_num_seqs": args.max_num_seqs,
            "max_model_len": args.max_model_len,
            "prefix_caching": True,
        },
        "slo": {"base_s": args.slo_s, "prefill_factor": args.slo_prefill_factor},
        "traces": {},
    }
    for index, trace in enumerate(traces):
        path = folder / TRACE_FILES[trace]
        if not path.is_file():
            print(f"skipped {trace}: {path} not found (pass --traces DIR)", file=sys.stderr)
            continue
        window = replace(
            DEFAULTS[trace],
            **{
                name: values[index]
                for name in ("start_s", "window_s", "speed", "replicas")
                if (values := getattr(args, name))
            },
        )
        build = prompts.mooncake if trace == "mooncake" else prompts.azure
        requests = build(path, window.start_s, window.window_s, window.speed)
        prompts.check_counts(requests)
        slos = [
            args.slo_s
            + args.slo_prefill_factor
            * cold_prefill_s(args.profile, r.prompt_tokens, args.chunk_tokens)
            for r in requests
        ]
        entry: dict[str, Any] = {
            "file": TRACE_FILES[trace],
            "date": datetime.date.today().isoformat(),
            "command": out["command"],
            "start_s": window.start_s,
            "window_s": window.window_s,
            "speed": window.speed,
            "replicas": window.replicas,
            "requests": len(requests),
            "replay_s": round(max(r.arrival_s for r in requests), 1),
            "load": offered_load(requests, args.profile, window.replicas, args.chunk_tokens),
            "slo_p50_s": percentile(slos, 0.5),
            "contenders": {},
            "skipped": {},
        }
        out["traces"][trace] = entry
        trace_started = time.monotonic()
        for contender in contenders:
            why = fleet.missing(contender)
            if why is not None:
                entry["skipped"][contender] = why
                print(f"{trace} {contender}: skipped, {why}", flush=True)
                continue
            result = run_contender(
                contender, requests, slos, args, window.replicas, logs / f"{trace}-{contender}"
            )
            entry["contenders"][contender] = result
            print(
                f"{trace} {contender}: p50 {result['ttft_p50_s']} p99 {result['ttft_p99_s']}"
                f" attainment {result['attainment']:.3f} hit {result['prefix_hit_rate']}"
                f" errors {result['errors']}",
                flush=True,
            )
        entry["wall_s"] = round(time.monotonic() - trace_started)
    out["wall_s"] = round(time.monotonic() - started)
    output = Path(args.output)
    if output.is_file():  # a run of one trace keeps the other's last results
        kept = json.loads(output.read_text())["traces"]
        out["traces"] = {**kept, **out["traces"]}
    output.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
