"""The waiting room: requests that no replica can take yet, bounded per model.

Who uses it: :mod:`.server`. A request waits here when its model has no ready replica (it is
*held* while the operator scales the model up from zero) or when every replica is at its
in-flight bound (it is *queued*). Each model's room holds at most ``limit`` requests; one more
is refused at once (429), and a request waits at most its time to live. What waits is the
autoscaler's signal: ``llmfleet_gateway_pending_requests`` is :meth:`WaitingRoom.count`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum


class Wait(StrEnum):
    """Why a request waits."""

    HELD = "NoReadyReplica"
    """The model has no ready replica: held while it scales up (from zero, say)."""
    QUEUED = "Saturated"
    """Every replica is at its in-flight bound."""


@dataclass
class WaitingRoom:
    """How many requests wait per model, within ``limit`` each."""

    limit: int
    waiting: Counter[str] = field(default_factory=Counter)

    def enter(self, model: str) -> bool:
        """Take a place for a request of ``model``; False when the room is full."""
        if self.waiting[model] >= self.limit:
            return False
        self.waiting[model] += 1
        return True

    def leave(self, model: str) -> None:
        self.waiting[model] -= 1
        if self.waiting[model] <= 0:
            del self.waiting[model]

    def count(self, model: str) -> int:
        return self.waiting[model]
