"""The reconcile queue: one reconcile per object at a time, deduplicated, with backoff.

Filled by the watch handlers (:mod:`handlers`) with ``(namespace, name)`` keys; drained
by a few worker tasks. A key added while it is being reconciled runs once more
afterwards (the change may have come too late to be seen); a key whose reconcile
failed comes back after an exponential backoff, and a storm of events for it does not
shorten that backoff. A success resets it, and may ask to run again after a delay (the
autoscaler's control period): an event before then runs it at once, and the request
stands for the run after. Delays are scheduled through ``call_later`` (the running
loop's by default), so tests can run the queue on a clock of their own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from functools import partial
from typing import Protocol

log = logging.getLogger("llmfleet.queue")


def backoff(failures: int, base: float, cap: float) -> float:
    """Delay before retry number ``failures`` (1, 2, ...): base, 2 x base, ... up to cap."""
    return float(min(cap, base * 2 ** max(0, failures - 1)))


class Timer(Protocol):
    """A scheduled call that can still be called off (``asyncio.TimerHandle`` is one)."""

    def cancel(self) -> None: ...


def _loop_call_later(delay: float, callback: Callable[[], None]) -> Timer:
    return asyncio.get_running_loop().call_later(delay, callback)


class WorkQueue:
    """Keys waiting for a reconcile."""

    def __init__(
        self,
        work: Callable[[Hashable], Awaitable[float | None]],
        *,
        base_delay: float = 0.5,
        max_delay: float = 300.0,
        call_later: Callable[[float, Callable[[], None]], Timer] = _loop_call_later,
    ) -> None:
        self._work = work
        self._base, self._cap = base_delay, max_delay
        self._call_later = call_later
        self._ready: asyncio.Queue[Hashable] = asyncio.Queue()
        self._queued: set[Hashable] = set()
        self._running: set[Hashable] = set()
        self._again: set[Hashable] = set()
        self._failures: dict[Hashable, int] = {}
        self._timers: dict[Hashable, Timer] = {}

    def __len__(self) -> int:
        return len(self._queued)

    def add(self, key: Hashable, delay: float = 0.0) -> None:
        """Ask for a reconcile of ``key`` after ``delay`` seconds (0: as soon as possible)."""
        if key in self._running:
            self._again.add(key)
        elif key in self._queued:
            if delay == 0 and key in self._timers and not self._failures.get(key):
                self._timers.pop(key).cancel()
                self._ready.put_nowait(key)
        elif delay > 0:
            self._queued.add(key)
            self._timers[key] = self._call_later(delay, partial(self._due, key))
        else:
            self._queued.add(key)
            self._ready.put_nowait(key)

    def _due(self, key: Hashable) -> None:
        self._timers.pop(key, None)
        self._ready.put_nowait(key)

    async def run(self, workers: int) -> None:
        """Drain the queue with ``workers`` concurrent reconciles, forever."""
        await asyncio.gather(*(self._worker() for _ in range(workers)))

    async def _worker(self) -> None:
        while True:
            key = await self._ready.get()
            self._queued.discard(key)
            self._running.add(key)
            requeue_after: float | None = None
            try:
                requeue_after = await self._work(key)
            except asyncio.CancelledError:
                raise
            except Exception:
                failures = self._failures[key] = self._failures.get(key, 0) + 1
                delay = backoff(failures, self._base, self._cap)
                log.exception(
                    "Reconcile of %s failed (%d in a row); retrying in %.1fs", key, failures, delay
                )
            else:
                self._failures.pop(key, None)
                delay = 0.0
            finally:
                self._running.discard(key)
            again = key in self._again
            self._again.discard(key)
            if delay > 0:
                self.add(key, delay)
            elif again:
                self.add(key)
            if requeue_after is not None and not delay:
                self.add(key, max(requeue_after, 0.001))
