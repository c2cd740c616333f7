"""Simulator capacity on one core: concurrent streams held in real time, and tokens/s.

    .venv/bin/python bench/simulator/capacity.py [--quick]

The simulator runs as its own process pinned to one core (``taskset``); the load
generator (aiohttp, this process) is pinned to another. Two measurements, each a short
bounded run against loopback:

* streams: N concurrent streams on the calibrated ``h100-llama2-70b-tp4`` profile with
  ``--max-num-seqs N``; the engine model says how many tokens/s N streams should get
  (N per decode step of ``decode_ms(N)``); the simulator keeps up when the client
  receives >= 90% of that. Baseline: the model's own expected rate.
* tokens/s: 256 streams on the ``fast`` profile scaled 20x (the engine asks for far more
  tokens than one core can send); the client-side rate is the ceiling of one core.

Writes bench/results/simulator-capacity.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from llmfleet_runtime.simulator.perf import decode_ms
from llmfleet_runtime.simulator.profiles import get_profile

REPO = Path(__file__).resolve().parents[2]
WARMUP, WINDOW = 2.0, 4.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_sim(flags: list[str], port: int) -> subprocess.Popen[bytes]:
    cores = sorted(os.sched_getaffinity(0))
    cmd = [sys.executable, "-m", "llmfleet_runtime.simulator", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--served-model-name", "sim", *flags]
    if len(cores) > 1 and subprocess.run(["which", "taskset"], capture_output=True).returncode == 0:
        cmd = ["taskset", "-c", str(cores[-1]), *cmd]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.monotonic() + 20
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("simulator did not start")


async def drive(port: int, streams: int, max_tokens: int) -> dict[str, float]:
    """Open ``streams`` streams; count tokens received inside the measurement window."""
    counts = {"tokens": 0, "errors": 0, "open": 0}
    window_start = time.monotonic() + WARMUP
    window_end = window_start + WINDOW
    url = f"http://127.0.0.1:{port}/v1/completions"
    body = {"model": "sim", "prompt": "bench", "max_tokens": max_tokens, "stream": True}
    timeout = aiohttp.ClientTimeout(total=None)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one() -> None:
            try:
                async with session.post(url, json=body) as response:
                    if response.status != 200:
                        counts["errors"] += 1
                        return
                    counts["open"] += 1
                    async for line in response.content:
                        now = time.monotonic()
                        if now >= window_end:
                            return
                        if now >= window_start and line.startswith(b"data: {"):
                            counts["tokens"] += 1
            except aiohttp.ClientError:
                counts["errors"] += 1

        tasks = [asyncio.ensure_future(one()) for _ in range(streams)]
        await asyncio.wait(tasks, timeout=WARMUP + WINDOW + 30)
        for t in tasks:
            t.cancel()
    return {
        "tokens_per_s": counts["tokens"] / WINDOW,
        "errors": counts["errors"],
        "streams_open": counts["open"],
    }


def run(flags: list[str], streams: int, max_tokens: int) -> dict[str, float]:
    port = free_port()
    proc = start_sim(flags, port)
    try:
        return asyncio.run(drive(port, streams, max_tokens))
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer stream counts")
    parser.add_argument(
        "--out", type=Path, default=REPO / "bench" / "results" / "simulator-capacity.json"
    )
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cores[0]})
    profile = get_profile("h100-llama2-70b-tp4")
    rows: list[dict[str, float]] = []
    report: dict[str, object] = {"cores": len(cores), "window_s": WINDOW, "streams": rows}
    counts = [500, 2000] if args.quick else [500, 1000, 2000, 4000]
    print(
        f"{'streams':>8} {'expected tok/s':>15} {'received tok/s':>15} {'ratio':>6} {'errors':>6}"
    )
    held = 0
    for n in counts:
        flags = ["--profile", profile.name, "--max-num-seqs", str(n), "--num-gpu-blocks-override"]
        flags += [str(max(profile.num_gpu_blocks, n * 300 // 16)), "--max-model-len", "4096"]
        got = run(flags, n, 4000)
        expected = n * 1000.0 / decode_ms(profile, n)
        ratio = got["tokens_per_s"] / expected
        if ratio >= 0.9 and not got["errors"]:
            held = n
        rows.append({"streams": n, "expected_tokens_per_s": round(expected), **got})
        rows[-1]["ratio"] = round(ratio, 3)
        print(
            f"{n:8} {expected:15.0f} {got['tokens_per_s']:15.0f} {ratio:6.2f} {got['errors']:6.0f}"
        )
    report["max_streams_held_real_time"] = held
    flags = ["--profile", "fast", "--max-num-seqs", "256", "--num-gpu-blocks-override", "8192"]
    got = run([*flags, "--time-scale", "20"], 256, 100000 // 64)
    report["max_tokens_per_s"] = round(got["tokens_per_s"])
    print(f"streams held in real time on one core: {held}")
    print(
        f"tokens/s ceiling on one core (256 streams, fast profile x20): {got['tokens_per_s']:.0f}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
