"""The processes of the routing bench: engine simulators and the router in front of them.

Who calls it: :mod:`run`. Every process is started with its output in the run's log folder
and stopped (SIGTERM, then SIGKILL) by the same :class:`Processes`; nothing outlives the
bench. Routers, each one process on loopback:

* ``ours``: ``llmfleet gateway --model NAME=URL,...``;
* ``round-robin`` and ``least-load``: ``bench/gateway/plain_proxy.py`` (a plain aiohttp
  proxy, the gateway bench's baseline);
* ``vllm-router``: vllm-router (PyPI) with ``--policy cache_aware``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from llmfleet_contract.exposition import Page, parse

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / ".venv" / "bin"
PLAIN_PROXY = REPO / "bench" / "gateway" / "plain_proxy.py"
VLLM_ROUTER = Path.home() / ".cache" / "llmfleet" / "bench-venv" / "bin" / "vllm-router"
MODEL = "sim"

HITS = "vllm:prefix_cache_hits_total"
QUERIES = "vllm:prefix_cache_queries_total"
"""The engines' prefix-cache counters, in tokens (vLLM V1 names)."""
SUCCESS = "vllm:request_success_total"

CONTENDERS = ("ours", "round-robin", "least-load", "vllm-router")


@dataclass(frozen=True)
class SimulatorSettings:
    """How every replica is run (the same for every contender)."""

    profile: str
    max_num_seqs: int
    max_model_len: int
    seed: int = 0

    def flags(self) -> list[str]:
        return [
            "--profile",
            self.profile,
            "--max-num-seqs",
            str(self.max_num_seqs),
            "--max-model-len",
            str(self.max_model_len),
            "--enable-prefix-caching",
            "--seed",
            str(self.seed),
        ]


@dataclass
class Processes:
    """Processes started by the bench, by name, with their logs in ``logs``."""

    logs: Path
    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("ab")
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        log.close()
        self.running[name] = process
        return process

    def stop(self, name: str) -> None:
        process = self.running.pop(name, None)
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name)


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    """Poll ``url`` until it answers 200; RuntimeError when the process dies or time runs out."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(url, timeout=1) as answer,
        ):
            if answer.status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout_s:g} s")


def start_simulators(
    processes: Processes, settings: SimulatorSettings, ports: list[int]
) -> list[str]:
    """Start one simulator per port (cold caches); their base URLs once all are ready."""
    urls = []
    for index, port in enumerate(ports):
        command = [sys.executable, "-m", "llmfleet_runtime.simulator", "--host", "127.0.0.1"]
        command += ["--port", str(port), "--served-model-name", MODEL, *settings.flags()]
        processes.start(f"sim-{index}", command)
        urls.append(f"http://127.0.0.1:{port}")
    for index, url in enumerate(urls):
        wait_ready(f"{url}/health", processes.running[f"sim-{index}"])
    return urls


def router_command(
    contender: str, urls: list[str], port: int, max_num_seqs: int, gateway_flags: list[str]
) -> list[str]:
    """The command line of ``contender`` listening on ``port`` in front of ``urls``."""
    if contender == "ours":
        return [
            str(BIN / "llmfleet"),
            "gateway",
            "--model",
            f"{MODEL}={','.join(urls)}",
            "--port",
            str(port),
            "--max-num-seqs",
            str(max_num_seqs),
            *gateway_flags,
        ]
    if contender in ("round-robin", "least-load"):
        policy = contender.replace("-", "_")
        return [sys.executable, str(PLAIN_PROXY), "--port", str(port), "--policy", policy, *urls]
    if contender == "vllm-router":
        return [
            str(VLLM_ROUTER),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--policy",
            "cache_aware",
            "--log-level",
            "warning",
            "--worker-urls",
            *urls,
        ]
    raise ValueError(f"unknown contender {contender!r}; known: {', '.join(CONTENDERS)}")


def missing(contender: str) -> str | None:
    """Why ``contender`` cannot run here, if it cannot."""
    if contender in ("round-robin", "least-load") and not PLAIN_PROXY.is_file():
        return f"{PLAIN_PROXY.relative_to(REPO)} is missing"
    if contender == "vllm-router" and not VLLM_ROUTER.is_file():
        return (
            f"{VLLM_ROUTER} is missing: python3 -m venv {VLLM_ROUTER.parents[1]}"
            f" && {VLLM_ROUTER.parent}/pip install vllm-router==0.1.17"
        )
    return None


def _page(url: str) -> Page:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as answer:
        return parse(answer.read().decode())


def requests_served(url: str) -> float:
    """Requests the engine finished (``vllm:request_success_total``, every reason)."""
    return sum(series.value for series in _page(url).named(SUCCESS))


def prefix_counters(url: str) -> tuple[float, float]:
    """The engine's prefix-cache (hits, queries) in tokens, from its /metrics."""
    page = _page(url)
    hits = sum(series.value for series in page.named(HITS))
    queries = sum(series.value for series in page.named(QUERIES))
    return hits, queries


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
