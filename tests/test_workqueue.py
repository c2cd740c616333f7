"""The reconcile queue on virtual time: its timers go to a clock that moves only when
the test moves it, so every delay is asserted exactly and nothing sleeps.

Cases: the backoff doubles up to its cap; duplicate adds of a key run it once; a key
never runs concurrently with itself, and one added while running runs exactly once more,
seeing the latest change; a failing key is retried after base, 2 x base, ... up to the
cap, until it succeeds, while other keys run at once; a success resets the backoff; a
storm of events does not shorten a backoff; a run that asks to run again after a delay
does, and an event before then runs it at once (the old request is dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass

from llmfleet_operator.workqueue import WorkQueue, backoff

LLAMA_8B = ("default", "llama-8b")
LLAMA_70B = ("default", "llama-70b")


def test_backoff_doubles_up_to_cap() -> None:
    assert [backoff(n, 0.5, 3.0) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


@dataclass
class Timer:
    due: float
    callback: Callable[[], None]
    cancelled: bool = False
    fired: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class VirtualClock:
    """Stands in for the loop's ``call_later``: timers fire only in :meth:`fire_next`."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[Timer] = []

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(self.now + delay, callback)
        self.timers.append(timer)
        return timer

    def pending(self) -> list[Timer]:
        return sorted((t for t in self.timers if not (t.cancelled or t.fired)), key=lambda t: t.due)

    def fire_next(self, until: float) -> bool:
        """Fire the earliest timer due by ``until``, moving the clock to it."""
        pending = self.pending()
        if not pending or pending[0].due > until:
            return False
        timer = pending[0]
        self.now, timer.fired = timer.due, True
        timer.callback()
        return True


Reconcile = Callable[[Hashable], Awaitable[float | None]]


class Harness:
    """A ``WorkQueue`` (three workers) on a :class:`VirtualClock`; every run is recorded
    as ``(key, clock time)``, and a run that starts while its key is running is an overlap.
    """

    def __init__(self, reconcile: Reconcile, **options: float) -> None:
        self.clock = VirtualClock()
        self.queue = WorkQueue(self._work, call_later=self.clock.call_later, **options)
        self.runs: list[tuple[Hashable, float]] = []
        self.overlaps: list[Hashable] = []
        self._reconcile = reconcile
        self._running: Counter[Hashable] = Counter()

    async def _work(self, key: Hashable) -> float | None:
        if self._running[key]:
            self.overlaps.append(key)
        self._running[key] += 1
        self.runs.append((key, self.clock.now))
        try:
            return await self._reconcile(key)
        finally:
            self._running[key] -= 1

    def times(self, key: Hashable) -> list[float]:
        return [when for k, when in self.runs if k == key]

    async def settle(self) -> None:
        """Let the workers go until nothing runs and every queued key waits on a timer."""
        for _ in range(1_000):
            await asyncio.sleep(0)
            idle = not any(self._running.values())
            if idle and len(self.queue) == len(self.clock.pending()):
                return
        raise AssertionError("the queue never settled")

    async def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` on, firing the timers due on the way in order."""
        until = self.clock.now + seconds
        await self.settle()
        while self.clock.fire_next(until):
            await self.settle()
        self.clock.now = until

    def play(self, scenario: Callable[[], Awaitable[None]]) -> None:
        async def main() -> None:
            workers = asyncio.create_task(self.queue.run(workers=3))
            try:
                await scenario()
            finally:
                workers.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await workers

        asyncio.run(main())


async def succeed(key: Hashable) -> None:
    return None


def test_duplicate_adds_run_once() -> None:
    harness = Harness(succeed)

    async def scenario() -> None:
        for _ in range(5):
            harness.queue.add(LLAMA_8B)
            harness.queue.add(LLAMA_70B)
        await harness.settle()

    harness.play(scenario)
    assert sorted(harness.runs) == [(LLAMA_70B, 0.0), (LLAMA_8B, 0.0)]
    assert harness.overlaps == []


def test_added_while_running_runs_alone_and_once_more() -> None:
    version: dict[Hashable, int] = {LLAMA_8B: 1}
    seen: list[tuple[Hashable, int]] = []

    async def reconcile(key: Hashable) -> None:
        seen.append((key, version[key]))
        if version[key] == 1:
            for _ in range(3):  # three changes land while this run is under way
                version[key] += 1
                harness.queue.add(key)
            for _ in range(10):  # give the other workers every chance to take the key
                await asyncio.sleep(0)

    harness = Harness(reconcile)

    async def scenario() -> None:
        harness.queue.add(LLAMA_8B)
        await harness.settle()

    harness.play(scenario)
    assert seen == [(LLAMA_8B, 1), (LLAMA_8B, 4)]
    assert harness.overlaps == []


def outage(failures: dict[Hashable, int]) -> Reconcile:
    """A reconcile that fails for each key as many times as ``failures`` says."""

    async def reconcile(key: Hashable) -> None:
        if failures.get(key, 0) > 0:
            failures[key] -= 1
            raise RuntimeError("API server said 500")

    return reconcile


def test_failures_back_off_doubling_to_the_cap_until_success() -> None:
    harness = Harness(outage({LLAMA_8B: 4}), base_delay=0.5, max_delay=1.5)

    async def scenario() -> None:
        harness.queue.add(LLAMA_8B)
        harness.queue.add(LLAMA_70B)  # healthy: neither waits for nor resets the other
        await harness.advance(60)

    harness.play(scenario)
    # Retries after 0.5, 1.0, 1.5 (the cap) and 1.5 seconds; the fifth run succeeds.
    assert harness.times(LLAMA_8B) == [0.0, 0.5, 1.5, 3.0, 4.5]
    assert harness.times(LLAMA_70B) == [0.0]


def test_a_success_resets_the_backoff() -> None:
    failures: dict[Hashable, int] = {LLAMA_8B: 3}
    harness = Harness(outage(failures), base_delay=0.5, max_delay=300)

    async def scenario() -> None:
        harness.queue.add(LLAMA_8B)
        await harness.advance(10)  # fails at 0, 0.5 and 1.5; succeeds at 3.5
        failures[LLAMA_8B] = 1
        harness.queue.add(LLAMA_8B)
        await harness.advance(10)

    harness.play(scenario)
    assert harness.times(LLAMA_8B) == [0.0, 0.5, 1.5, 3.5, 10.0, 10.5]


def test_an_event_storm_does_not_shorten_a_backoff() -> None:
    harness = Harness(outage({LLAMA_8B: 1}), base_delay=0.5, max_delay=300)

    async def scenario() -> None:
        harness.queue.add(LLAMA_8B)
        await harness.advance(0.25)
        for _ in range(5):
            harness.queue.add(LLAMA_8B)
        await harness.advance(10)

    harness.play(scenario)
    assert harness.times(LLAMA_8B) == [0.0, 0.5]


def test_requeue_after_runs_again_and_an_event_comes_first() -> None:
    version: dict[Hashable, int] = {LLAMA_8B: 1}
    seen: list[tuple[float, int]] = []

    async def reconcile(key: Hashable) -> float:
        seen.append((harness.clock.now, version[key]))
        return 60.0  # the control period

    harness = Harness(reconcile)

    async def scenario() -> None:
        harness.queue.add(LLAMA_8B)
        await harness.advance(5)
        version[LLAMA_8B] = 2  # an event, 55 seconds before the period is up
        harness.queue.add(LLAMA_8B)
        await harness.advance(100)

    harness.play(scenario)
    # At once for the event; then one period after that run, not after the first.
    assert seen == [(0.0, 1), (5.0, 2), (65.0, 2)]
