"""The load generator of the routing bench: an open-loop replay of streamed completions.

Who calls it: :mod:`run`, once per trace and contender. Each request leaves at its arrival
time whatever happened to the ones before it (open loop), streams, and is measured at the
client: time to first token (the first chunk carrying text) and end to end. A status other
than 200, a broken stream, an error event or no ``[DONE]`` is an error. Beside it, a probe
measures how late the simulators answer ``/health`` (their event loops' lag) and how late
this process's own timers fire, so a run that the machine could not keep up with shows it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import aiohttp
import orjson
from prompts import Replayed

DATA = b"data: "
DONE = b"[DONE]"


@dataclass
class Outcome:
    """One request as the client saw it."""

    ttft_s: float | None = None
    e2e_s: float | None = None
    error: str | None = None


@dataclass
class Lag:
    """Delays seen by the probe, in seconds."""

    health_s: list[float] = field(default_factory=list)
    """Time for a simulator to answer ``GET /health`` (its event loop's lag, plus loopback)."""
    timer_s: list[float] = field(default_factory=list)
    """How late this process's timers fired (the client's own lag)."""


async def _one(session: aiohttp.ClientSession, url: str, body: bytes, timeout_s: float) -> Outcome:
    outcome = Outcome()
    start = time.perf_counter()
    done = False
    try:
        async with session.post(
            url,
            data=body,
            headers={"Content-Type": "application/json"},
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as response:
            if response.status != 200:
                outcome.error = f"status {response.status}"
                await response.read()
                return outcome
            async for line in response.content:
                if not line.startswith(DATA):
                    continue
                payload = line[len(DATA) :].strip()
                if payload == DONE:
                    done = True
                    break
                if outcome.ttft_s is None or b'"error"' in payload:
                    chunk = orjson.loads(payload)
                    if "error" in chunk:
                        outcome.error = "error event"
                        return outcome
                    choices = chunk.get("choices") or [{}]
                    if choices[0].get("text"):
                        outcome.ttft_s = time.perf_counter() - start
    except (aiohttp.ClientError, TimeoutError) as error:
        outcome.error = type(error).__name__
        return outcome
    outcome.e2e_s = time.perf_counter() - start
    if not done:
        outcome.error = "no [DONE]"
    elif outcome.ttft_s is None:
        outcome.error = "no token"
    return outcome


async def _probe(
    session: aiohttp.ClientSession, engines: list[str], lag: Lag, stop: asyncio.Event
) -> None:
    period = 0.25
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(period)
        lag.timer_s.append(max(0.0, time.perf_counter() - before - period))
        for url in engines:
            start = time.perf_counter()
            try:
                async with session.get(
                    f"{url}/health", timeout=aiohttp.ClientTimeout(total=10)
                ) as response:
                    await response.read()
            except (aiohttp.ClientError, TimeoutError):
                continue
            lag.health_s.append(time.perf_counter() - start)


async def replay(
    router: str, engines: list[str], requests: list[Replayed], model: str, timeout_s: float
) -> tuple[list[Outcome], Lag]:
    """Send ``requests`` to ``router`` at their arrival times; every outcome, in order."""
    url = f"{router}/v1/completions"
    bodies = [
        orjson.dumps(
            {
                "model": model,
                "prompt": r.prompt,
                "max_tokens": r.max_tokens,
                "stream": True,
                "ignore_eos": True,
            }
        )
        for r in requests
    ]
    lag = Lag()
    stop = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        probe = asyncio.create_task(_probe(session, engines, lag, stop))
        tasks = []
        start = time.perf_counter()
        for request, body in zip(requests, bodies, strict=True):
            delay = start + request.arrival_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_one(session, url, body, timeout_s)))
        outcomes = list(await asyncio.gather(*tasks))
        stop.set()
        await probe
    return outcomes, lag
