"""Runs the engine model against a clock and hands each request its tokens (asyncio).

Who calls it: :mod:`.server` (one driver per simulated engine). No HTTP here.

Engine time is wall time since start multiplied by ``time_scale`` (10 means an engine
step that takes 30 ms on the profiled GPU takes 3 ms here; latencies in ``/metrics`` stay
in engine seconds, as the real hardware would report them). One task advances the engine
to "now", delivers the tokens of every completed step, and sleeps until the next step
ends or a request arrives at an idle engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from .engine import Engine
from .faults import Faults
from .metrics import EngineMetrics
from .requests import FinishedRequest, Request, StepResult, TokenOutput


class Stream:
    """Delivery buffer of one in-flight request."""

    __slots__ = ("_waiter", "finished", "pending", "request")

    def __init__(self, request: Request) -> None:
        self.request = request
        self.pending: list[TokenOutput] = []
        self.finished: FinishedRequest | None = None
        self._waiter: asyncio.Future[None] | None = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next_tokens(self) -> list[TokenOutput]:
        """Wait for tokens; returns them all (empty list: the request left the engine)."""
        while not self.pending and self.finished is None:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        tokens, self.pending = self.pending, []
        return tokens


class EngineDriver:
    """Owns the engine's time and the streams of its in-flight requests."""

    def __init__(
        self,
        engine: Engine,
        metrics: EngineMetrics | None,
        faults: Faults,
        *,
        time_scale: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.engine = engine
        self.metrics = metrics
        self.faults = faults
        self.time_scale = time_scale
        self._clock = clock
        self._t0 = clock()
        self._streams: dict[str, Stream] = {}
        self._wake = asyncio.Event()

    @property
    def in_flight(self) -> int:
        """Requests submitted and not yet finished or aborted."""
        return len(self._streams)

    def engine_now(self) -> float:
        return (self._clock() - self._t0) * self.time_scale

    def submit(self, request: Request) -> Stream:
        """Queue ``request`` in the engine; raises ``ValueError`` if the engine refuses it."""
        self._advance()
        self.engine.add(request, self.engine_now())
        stream = Stream(request)
        self._streams[request.request_id] = stream
        self._advance()
        self._wake.set()
        return stream

    def abort(self, request_id: str) -> None:
        """The client left: drop the request and count it as aborted."""
        stream = self._streams.pop(request_id, None)
        if stream is None:
            return
        done = self.engine.abort(request_id, self.engine_now())
        if done is not None and self.metrics is not None:
            self.metrics.observe_finished(done)
        stream.finished = done
        stream._wake()

    def poke(self) -> None:
        """Re-read the fault switches now (after ``POST /sim/faults``)."""
        self._wake.set()

    def _advance(self) -> None:
        if self.faults.hang:
            return
        self.engine.slowdown = self.faults.slowdown
        for result in self.engine.advance(self.engine_now()):
            self._deliver(result)

    def _deliver(self, result: StepResult) -> None:
        if self.metrics is not None:
            self.metrics.observe_step(result)
        streams = self._streams
        for token in result.tokens:
            stream = streams.get(token.request_id)
            if stream is not None:
                stream.pending.append(token)
                stream._wake()
        for done in result.finished:
            stream = streams.pop(done.request_id, None)
            if stream is not None:
                stream.finished = done
                stream._wake()

    async def run(self) -> None:
        """Drive the engine until cancelled."""
        while True:
            self._advance()
            next_end = None if self.faults.hang else self.engine.next_event_time()
            self._wake.clear()
            if next_end is None:
                await self._wake.wait()
                continue
            delay = (next_end - self.engine_now()) / self.time_scale
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
