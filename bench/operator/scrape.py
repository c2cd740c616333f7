"""What the operator's direct scrape costs at fleet scale, by HTTP client.

    flock /tmp/llmfleet-heavy.lock .venv/bin/python bench/operator/scrape.py

The workload of issue 23: 1,000 LLMDeployments of 2 replicas, each sized once per 15 s
period, so 66.7 ``samples()`` calls of 2 targets (133 GETs of an engine's ``/metrics``) a
second, made from 4 threads as the operator's 4 reconcile workers make them. A second
process (``scrape.py serve``, pinned to the last core) serves the real vLLM 0.32 page
(tests/fixtures) on 2,000 loopback addresses, one per pod; this process (pinned to the
first core) runs each client in turn, so its CPU time is the client's alone.

Two kinds of engine: ``vllm`` closes an idle connection after 5 s, as vLLM's server does
(``VLLM_HTTP_TIMEOUT_KEEP_ALIVE``), so at a 15 s period a pooled connection is never
reused; ``keep`` never closes one (the engine simulator's aiohttp server keeps it 75 s),
the best case for a pool. Per client and kind: CPU per GET (process time over the window,
split into HTTP and the parse measured alone), the share of one core at the rate, the
achieved rate, p50/p99 of a ``samples()`` call, the connections the server accepted per
GET, the process's open file descriptors at the peak and after ``close()``, and the most
GETs a second the client makes with its 4 threads running flat out.

Writes bench/results/operator-scrape.json (``make tables`` renders it into README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, cast

import aiohttp
import httpx
import urllib3

from llmfleet_contract.exposition import parse
from llmfleet_operator.autoscale.inputs import Sample
from llmfleet_operator.metrics import DirectScrape
from llmfleet_operator.metrics.parse import parse_engine, sample_from_values
from llmfleet_operator.metrics.readings import Miss, MissReason, Readings, Target

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "tests" / "fixtures" / "vllm-0.32.0-cpu-metrics.txt"
OUT = REPO / "bench" / "results" / "operator-scrape.json"
OBJECTS, REPLICAS, PERIOD_S, WORKERS = 1000, 2, 15.0, 4
TIMEOUT_S = 2.0
VLLM_IDLE_S = 5.0
FLAT_CALLS, FLAT_S = 150, 2.0
KINDS = {
    "vllm": "closes a connection idle for 5 s (vLLM's VLLM_HTTP_TIMEOUT_KEEP_ALIVE)",
    "keep": "keeps idle connections open",
}


# --- the engines: one process, 2,000 listening addresses --------------------------------


def pod_address(index: int) -> str:
    """127.201.0.1 ... : well away from the local control plane's 127.N.0.0/24 pod ranges."""
    return f"127.201.{index // 250}.{index % 250 + 1}"


def serve(pods: int, port: int, idle: float | None) -> None:
    """Answer every GET with the page; print one line when listening, then a JSON line of
    counts for every line read from stdin."""
    body = PAGE.read_bytes()
    head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
    head += f"Content-Length: {len(body)}\r\n"
    reply, closing = (
        (head + "\r\n").encode() + body,
        (head + "Connection: close\r\n\r\n").encode() + body,
    )
    counts = {"connections": 0, "requests": 0}

    class Engine(asyncio.Protocol):
        timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
            self.buffer = b""
            counts["connections"] += 1
            self.arm()

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
                request, self.buffer = self.buffer[:end].lower(), self.buffer[end + 4 :]
                counts["requests"] += 1
                if b"connection: close" in request:
                    self.transport.write(closing)
                    self.transport.close()
                    return
                self.transport.write(reply)
            self.arm()

        def arm(self) -> None:
            if self.timer is not None:
                self.timer.cancel()
            if idle is not None:
                self.timer = asyncio.get_running_loop().call_later(idle, self.transport.close)

        def connection_lost(self, exc: Exception | None) -> None:
            if self.timer is not None:
                self.timer.cancel()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for index in range(pods):
            await loop.create_server(Engine, pod_address(index), port, backlog=64)
        print("listening", flush=True)
        while await loop.run_in_executor(None, sys.stdin.readline):
            print(json.dumps(counts), flush=True)

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


class Engines:
    """The serving process, pinned to the last core."""

    def __init__(self, pods: int, idle: float | None) -> None:
        cores = sorted(os.sched_getaffinity(0))
        for port in range(18431, 18531):  # a port free on every address
            cmd = [sys.executable, __file__, "serve", "--pods", str(pods), "--port", str(port)]
            cmd += ["--idle", str(idle)] if idle is not None else []
            pin = ["taskset", "-c", str(cores[-1])] if len(cores) > 1 else []
            self.proc = subprocess.Popen(
                [*pin, *cmd], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
            assert self.proc.stdout is not None
            if self.proc.stdout.readline().strip() == "listening":
                self.port = port
                return
            self.proc.wait()
        raise RuntimeError("no port free on every pod address")

    def counts(self) -> dict[str, int]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        counts: dict[str, int] = json.loads(self.proc.stdout.readline())
        return counts

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


# --- the clients: samples() the way DirectScrape answers it ------------------------------


class Source(Protocol):
    def samples(self, targets: Sequence[Target], now: float) -> Readings: ...
    def close(self) -> None: ...


def full_parse(text: str, replica: str, time: float) -> Sample | Miss:
    """The parse before: every line of the page."""
    return sample_from_values(parse(text).values(), replica, time)


class Threaded:
    """A blocking GET per target, fanned out on threads: a pool per call (as before) or
    one shared pool."""

    def __init__(self, get: Callable[[str], str], shared: bool, full: bool = False) -> None:
        self._get, self._full = get, full
        self._pool = ThreadPoolExecutor(16) if shared else None

    def _read(self, target: Target, now: float) -> Sample | Miss:
        try:
            text = self._get(target.url + "/metrics")
        except Exception as error:
            return Miss(target.replica, MissReason.UNREACHABLE, str(error))
        if self._full:
            return full_parse(text, target.replica, now)
        return parse_engine(text, target.replica, now)

    def samples(self, targets: Sequence[Target], now: float) -> Readings:
        if self._pool is not None:
            return Readings.of(self._pool.map(lambda t: self._read(t, now), targets))
        with ThreadPoolExecutor(min(16, len(targets))) as pool:
            return Readings.of(pool.map(lambda t: self._read(t, now), targets))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()


def urllib_get() -> Callable[[str], str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def get(url: str) -> str:
        with opener.open(url, timeout=TIMEOUT_S) as response:
            body: bytes = response.read(4 << 20)
        return body.decode("utf-8", "replace")

    return get


def urllib3_get(pool: urllib3.PoolManager) -> Callable[[str], str]:
    def get(url: str) -> str:
        response = pool.request("GET", url, preload_content=False, retries=False)
        try:
            if response.status != 200:
                raise ValueError(f"HTTP {response.status}")
            return response.read(4 << 20).decode("utf-8", "replace")
        finally:
            response.release_conn()

    return get


class Httpx(Threaded):
    def __init__(self, keepalive: bool = True) -> None:
        limits = httpx.Limits(
            max_connections=None,
            max_keepalive_connections=None if keepalive else 0,
            keepalive_expiry=30.0,  # as aiohttp's below
        )
        self.client = httpx.Client(timeout=TIMEOUT_S, trust_env=False, limits=limits)
        super().__init__(self._fetch, shared=True)

    def _fetch(self, url: str) -> str:
        response = self.client.get(url)
        response.raise_for_status()
        return response.text

    def close(self) -> None:
        super().close()
        self.client.close()


class Urllib3(Threaded):
    def __init__(self) -> None:
        self.pool = urllib3.PoolManager(num_pools=4096, maxsize=1, timeout=TIMEOUT_S)
        super().__init__(urllib3_get(self.pool), shared=True)

    def close(self) -> None:
        super().close()
        self.pool.clear()


class Aiohttp:
    """One session on a loop in its own thread; each call's GETs gathered there, parsed in
    the caller's thread."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._session = asyncio.run_coroutine_threadsafe(self._open(), self._loop).result()

    async def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30)
        timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
        return aiohttp.ClientSession(connector=connector, timeout=timeout)

    async def _get(self, url: str) -> str | Exception:
        try:
            async with self._session.get(url) as response:
                response.raise_for_status()
                return (await response.read()).decode("utf-8", "replace")
        except (aiohttp.ClientError, TimeoutError) as error:
            return error

    async def _gather(self, urls: list[str]) -> list[str | Exception]:
        return list(await asyncio.gather(*(self._get(url) for url in urls)))

    def samples(self, targets: Sequence[Target], now: float) -> Readings:
        urls = [target.url + "/metrics" for target in targets]
        pages = asyncio.run_coroutine_threadsafe(self._gather(urls), self._loop).result()
        return Readings.of(
            [
                Miss(t.replica, MissReason.UNREACHABLE, str(page))
                if isinstance(page, Exception)
                else parse_engine(page, t.replica, now)
                for t, page in zip(targets, pages, strict=True)
            ]
        )

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._session.close(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


class Shipped:
    """The operator's own :class:`DirectScrape`, as the autoscaler calls it."""

    def __init__(self) -> None:
        self._scrape = DirectScrape(timeout_seconds=TIMEOUT_S)

    def samples(self, targets: Sequence[Target], now: float) -> Readings:
        return self._scrape.samples(targets, now)

    def close(self) -> None:
        pass


BEFORE = "urllib, a thread pool per call, whole page parsed (before)"
SHIPPED = "urllib, a thread pool per call (shipped DirectScrape)"
CLIENTS: dict[str, Callable[[], Source]] = {
    BEFORE: lambda: Threaded(urllib_get(), shared=False, full=True),
    SHIPPED: Shipped,
    "urllib, 16 shared threads": lambda: Threaded(urllib_get(), shared=True),
    "urllib3 PoolManager, 16 shared threads": Urllib3,
    "httpx.Client pool, 16 shared threads": Httpx,
    "httpx.Client without keep-alive, 16 shared threads": lambda: Httpx(keepalive=False),
    "aiohttp session on a loop thread": Aiohttp,
}


# --- the driver ---------------------------------------------------------------------------


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def drive(
    source: Source, calls: list[list[Target]], rate: float | None, seconds: float
) -> dict[str, Any]:
    """Make ``calls`` from WORKERS threads, call i due at i / rate (flat out without a
    rate); a call not begun ``seconds`` after the start is not made."""
    took: list[float] = []
    misses: list[str] = []
    lock, index = threading.Lock(), iter(range(len(calls)))
    peak, running, gets = [open_fds()], [True], [0]

    def worker(start: float) -> None:
        while True:
            with lock:
                i = next(index, None)
            if i is None or time.monotonic() > start + seconds:
                return
            if rate is not None and (wait := start + i / rate - time.monotonic()) > 0:
                time.sleep(wait)
            begun = time.monotonic()
            result = source.samples(calls[i], time.time())
            with lock:
                took.append(time.monotonic() - begun)
                misses.extend(m.detail for m in result.missing)
                gets[0] += len(calls[i])

    def watch() -> None:
        while running[0]:
            peak[0] = max(peak[0], open_fds())
            time.sleep(0.5)

    watcher = threading.Thread(target=watch)
    watcher.start()
    cpu, start = time.process_time(), time.monotonic()
    threads = [threading.Thread(target=worker, args=(start,)) for _ in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall, cpu = time.monotonic() - start, time.process_time() - cpu
    running[0] = False
    watcher.join()
    took.sort()
    return {
        "gets": gets[0],
        "wall_s": wall,
        "cpu_ms_per_get": 1e3 * cpu / gets[0],
        "core_share": cpu / wall,
        "gets_per_s": gets[0] / wall,
        "p50_ms": 1e3 * statistics.median(took),
        "p99_ms": 1e3 * took[min(len(took) - 1, int(0.99 * len(took)))],
        "misses": len(misses),
        "first_miss": misses[0] if misses else None,
        "fds_peak": peak[0],
    }


def parse_cost(parser: Callable[[str, str, float], Sample | Miss], seconds: float = 0.5) -> float:
    """CPU ms to turn the page into a sample, parsed for about ``seconds``."""
    text = PAGE.read_text()
    assert isinstance(parser(text, "r", 0.0), Sample)
    runs, cpu, end = 0, time.process_time(), time.monotonic() + seconds
    while time.monotonic() < end:
        parser(text, "r", 0.0)
        runs += 1
    return 1e3 * (time.process_time() - cpu) / runs


def run_kind(kind: str, clients: list[str], window_s: float) -> list[dict[str, Any]]:
    """Each client against 2,000 engines of one kind: (``keep``: the pool filled first) a
    window at the rate, then a flat-out pass (over engines not yet read when idle
    connections close, over the window's own when they stay open)."""
    engines = Engines(OBJECTS * REPLICAS, VLLM_IDLE_S if kind == "vllm" else None)
    url = f"http://{{}}:{engines.port}"
    pods = [
        Target(f"r{i}", url.format(pod_address(i)), f"pod-{i}", "bench")
        for i in range(OBJECTS * REPLICAS)
    ]
    calls = [pods[i : i + REPLICAS] for i in range(0, len(pods), REPLICAS)]
    rate = OBJECTS / PERIOD_S
    timed = calls[: round(rate * window_s)]
    flat = timed[:FLAT_CALLS] if kind == "keep" else calls[-FLAT_CALLS:]
    rows = []
    try:
        for name in clients:
            parser = full_parse if name == BEFORE else parse_engine
            parse_ms = parse_cost(parser)
            fds_before = open_fds()
            source = CLIENTS[name]()
            if kind == "keep":
                drive(source, timed, None, 2 * window_s)
            counts = engines.counts()
            row = drive(source, timed, rate, 1.25 * window_s)
            accepted = engines.counts()
            row["connections_per_get"] = (accepted["connections"] - counts["connections"]) / (
                accepted["requests"] - counts["requests"]
            )
            row["max_gets_per_s"] = drive(source, flat, None, FLAT_S)["gets_per_s"]
            source.close()
            row["fds_peak"] -= fds_before
            row["fds_after_close"] = open_fds() - fds_before
            # Measured alone, just before and just after: other work on the machine moves it.
            parse_ms = (parse_ms + parse_cost(parser)) / 2
            row["parse_ms_per_get"] = parse_ms
            row["http_ms_per_get"] = row["cpu_ms_per_get"] - parse_ms
            rows.append({"client": name, "engines": kind, **row})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    finally:
        engines.stop()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    server = sub.add_parser("serve", help="(internal) the engines' process")
    server.add_argument("--pods", type=int, required=True)
    server.add_argument("--port", type=int, required=True)
    server.add_argument("--idle", type=float)
    parser.add_argument("--window", type=float, default=6.0, help="seconds at the rate, per run")
    parser.add_argument("--clients", nargs="*", default=list(CLIENTS), choices=list(CLIENTS))
    parser.add_argument("--output", type=Path, default=OUT)
    args = parser.parse_args()
    if args.command == "serve":
        serve(args.pods, args.port, args.idle)
        return 0
    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, cores[:1])
    started = time.monotonic()
    parse_ms = {"full": parse_cost(full_parse), "shipped": parse_cost(parse_engine)}
    runs = [row for kind in KINDS for row in run_kind(kind, args.clients, args.window)]
    result = {
        "setup": {
            "objects": OBJECTS,
            "replicas": REPLICAS,
            "period_s": PERIOD_S,
            "workers": WORKERS,
            "target_gets_per_s": OBJECTS * REPLICAS / PERIOD_S,
            "window_s": args.window,
            "page_bytes": PAGE.stat().st_size,
            "page_lines": PAGE.read_text().count("\n"),
            "engines": KINDS,
            "cores": len(cores),
            "library_versions": {
                "aiohttp": aiohttp.__version__,
                "httpx": httpx.__version__,
                "urllib3": importlib.metadata.version("urllib3"),
            },
        },
        "parse_ms": parse_ms,
        "runs": runs,
        "bench_s": round(time.monotonic() - started, 1),
    }
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output} in {result['bench_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
