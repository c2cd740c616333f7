"""The reconcile queue, driven by its own events (no sleeping, no wall clock).

Cases: duplicate adds run once; the same key never runs concurrently; a key added
while running runs exactly once more; a failing key is retried (with the backoff delay)
until it succeeds; keys are independent; the backoff doubles up to its cap; a run that
asks to run again after a delay does, and an event before then runs it at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

from llmfleet_operator.workqueue import WorkQueue, backoff


def test_backoff_doubles_up_to_cap() -> None:
    assert [backoff(n, 0.5, 3.0) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


async def _drain(queue: WorkQueue, done: asyncio.Event) -> None:
    runner = asyncio.create_task(queue.run(workers=3))
    try:
        await asyncio.wait_for(done.wait(), timeout=5)
    finally:
        runner.cancel()


def test_duplicates_collapse_and_keys_run_alone() -> None:
    runs: list[Hashable] = []
    active: set[Hashable] = set()
    overlap = []
    done = asyncio.Event()

    async def work(key: Hashable) -> None:
        overlap.append(key in active)
        active.add(key)
        await asyncio.sleep(0)  # yield: let other workers try to pick the same key
        active.discard(key)
        runs.append(key)
        if len(runs) == 2:
            done.set()

    async def scenario() -> None:
        queue = WorkQueue(work)
        for _ in range(5):
            queue.add("a")
            queue.add("b")
        await _drain(queue, done)

    asyncio.run(scenario())
    assert sorted(map(str, runs)) == ["a", "b"]
    assert not any(overlap)


def test_added_while_running_runs_once_more() -> None:
    runs = []
    done = asyncio.Event()
    queue_holder: list[WorkQueue] = []

    async def work(key: Hashable) -> None:
        runs.append(key)
        if len(runs) == 1:
            for _ in range(3):  # changes seen during the first run
                queue_holder[0].add(key)
        else:
            done.set()

    async def scenario() -> None:
        queue = WorkQueue(work)
        queue_holder.append(queue)
        queue.add("a")
        await _drain(queue, done)
        await asyncio.sleep(0)

    asyncio.run(scenario())
    assert runs == ["a", "a"]


def test_failures_are_retried_until_success() -> None:
    attempts = []
    done = asyncio.Event()

    async def work(key: Hashable) -> None:
        attempts.append(key)
        if len(attempts) < 3:
            raise RuntimeError("API server said 500")
        done.set()

    async def scenario() -> None:
        queue = WorkQueue(work, base_delay=0.001, max_delay=0.002)
        queue.add("a")
        await _drain(queue, done)

    asyncio.run(scenario())
    assert attempts == ["a", "a", "a"]


def test_requeue_after_runs_again_and_an_event_comes_first() -> None:
    runs: list[str] = []
    done = asyncio.Event()
    queue_holder: list[WorkQueue] = []

    async def work(key: Hashable) -> float | None:
        runs.append("event" if len(runs) == 1 else "run")
        if len(runs) == 1:
            # A long period: the event below must not wait for it.
            asyncio.get_running_loop().call_soon(queue_holder[0].add, key)
            return 60.0
        if len(runs) == 2:
            return 0.01  # a short period: runs again by itself
        done.set()
        return None

    async def scenario() -> None:
        queue = WorkQueue(work)
        queue_holder.append(queue)
        queue.add("a")
        await _drain(queue, done)

    asyncio.run(scenario())
    assert runs == ["run", "event", "run"]
