"""The gateway bench's measurements: a load step through vegeta or the stream generator, the
CPU time a process tree spent, and what our gateway's features counted (its ``/metrics``).
Called by ``run.py``; every step is pinned to the load core.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

LOAD_CORE = "1"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of ``pid`` and of every live process below it."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / TICKS
    tree, grown = {pid}, True
    while grown:
        below = {child for child, parent in parents.items() if parent in tree} - tree
        grown = bool(below)
        tree |= below
    return sum(times.get(member, 0.0) for member in tree)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[int(q / 100 * (len(ordered) - 1))]


@dataclass(frozen=True)
class Tools:
    vegeta: Path
    streams: Path
    work: Path
    """A scratch folder for the attacks' result files."""


def requests(
    tools: Tools, targets: Path, rate: float, seconds: float, workers: int
) -> dict[str, Any]:
    """Non-streaming requests from ``targets`` (vegeta's JSON format, taken in turn) at
    ``rate`` per second, or from ``workers`` back to back when ``rate`` is 0. Latencies of
    the answers with status 200, in milliseconds; counts by status."""
    out = tools.work / "attack.bin"
    rate_flags = ["-rate", f"{rate:.0f}", "-max-workers", str(workers)]
    if rate == 0:
        rate_flags += ["-workers", str(workers)]
    subprocess.run(
        [
            *("taskset", "-c", LOAD_CORE, str(tools.vegeta), "attack", "-format", "json"),
            *("-targets", str(targets), "-duration", f"{seconds}s", "-timeout", "30s"),
            *rate_flags,
            *("-output", str(out)),
        ],
        check=True,
    )
    encoded = subprocess.run(
        [str(tools.vegeta), "encode", "-to", "json", str(out)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    codes: dict[str, int] = {}
    ok: list[float] = []
    first, last = float("inf"), 0.0
    for line in encoded.splitlines():
        hit = json.loads(line)
        code = str(hit["code"]) if hit["code"] else "error"
        codes[code] = codes.get(code, 0) + 1
        latency = hit["latency"] / 1e6
        if code == "200":
            ok.append(latency)
        start = _seconds(hit["timestamp"])
        first, last = min(first, start), max(last, start + latency / 1000)
    sent = sum(codes.values())
    return {
        "sent": sent,
        "codes": codes,
        "ok_per_second": len(ok) / (last - first) if sent else 0.0,
        "p50_ms": percentile(ok, 50),
        "p99_ms": percentile(ok, 99),
    }


def _seconds(stamp: str) -> float:
    """Epoch seconds of vegeta's RFC 3339 timestamp (its nanoseconds cut to microseconds)."""
    stamp = re.sub(r"(\.\d{6})\d*", r"\1", stamp).replace("Z", "+00:00")
    return datetime.fromisoformat(stamp).timestamp()


@dataclass(frozen=True)
class StreamLoad:
    """What the stream generator sends: URLs, a file of bodies, API keys (each taken in turn;
    no ``Authorization`` header when there are no keys)."""

    urls: list[str]
    bodies: Path
    keys: tuple[str, ...] = ()


def streams(
    tools: Tools, load: StreamLoad, rate: float, seconds: float, workers: int
) -> dict[str, Any]:
    """Streams at ``rate`` per second, or from ``workers`` back to back when ``rate`` is 0:
    the generator's report (``ok_per_second``, ``ttft_ms`` and ``total_ms`` percentiles)."""
    keys = ["-keys", ",".join(load.keys)] if load.keys else []
    done = subprocess.run(
        [
            *("taskset", "-c", LOAD_CORE, str(tools.streams), "-url", ",".join(load.urls)),
            *("-body", str(load.bodies), "-rate", str(rate), "-workers", str(workers)),
            *("-duration", f"{seconds}s", *keys),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def gateway_counters(port: int) -> dict[str, float]:
    """What our gateway's features counted so far (its ``/metrics``), summed over models and
    tenants: response cache lookups by result (``cache_hit``, ``cache_miss``) and what the
    cache holds, escalations past an alias's first tier, and per guardrail stage the seconds
    spent and the calls (``guardrail_seconds:STAGE``, ``guardrail_calls:STAGE``)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    out: dict[str, float] = {}

    def add(key: str, value: float) -> None:
        out[key] = out.get(key, 0.0) + value

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, labels = sample.name, sample.labels
            if name == "llmfleet_gateway_response_cache_lookups_total":
                add(f"cache_{labels['result']}", sample.value)
            elif name == "llmfleet_gateway_response_cache_entries":
                add("cache_entries", sample.value)
            elif name == "llmfleet_gateway_response_cache_bytes":
                add("cache_bytes", sample.value)
            elif name == "llmfleet_gateway_escalations_total":
                add("escalations", sample.value)
            elif name == "llmfleet_gateway_guardrail_seconds_sum":
                add(f"guardrail_seconds:{labels['stage']}", sample.value)
            elif name == "llmfleet_gateway_guardrail_seconds_count":
                add(f"guardrail_calls:{labels['stage']}", sample.value)
    return out


def features(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """What the features did between two readings of :func:`gateway_counters`: response cache
    hits and misses and the share of hits, what the cache held at the end, escalations, and
    per guardrail stage the calls and the mean microseconds per call (only what happened)."""

    def grown(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    out: dict[str, Any] = {}
    hits, misses = grown("cache_hit"), grown("cache_miss")
    if hits + misses:
        out["response_cache"] = {
            "hits": int(hits),
            "misses": int(misses),
            "hit_share": hits / (hits + misses),
            "entries": int(after.get("cache_entries", 0)),
            "bytes": int(after.get("cache_bytes", 0)),
        }
    if escalations := grown("escalations"):
        out["escalations"] = int(escalations)
    stages = sorted(key.split(":")[1] for key in after if key.startswith("guardrail_calls:"))
    guardrail = {
        stage: {
            "calls": int(calls),
            "us_per_call": 1e6 * grown(f"guardrail_seconds:{stage}") / calls,
        }
        for stage in stages
        if (calls := grown(f"guardrail_calls:{stage}"))
    }
    if guardrail:
        out["guardrail"] = guardrail
    return out
