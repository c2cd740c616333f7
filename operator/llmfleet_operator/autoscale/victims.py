"""Which replicas go first on scale-down: a pure order for ``pod-deletion-cost``.

Called by the operator (which turns the order into
``controller.kubernetes.io/pod-deletion-cost`` annotations, first to go lowest) and by
the fleet simulator. Starting replicas go first: they serve nobody yet. Then ready ones
by fewest in-flight requests (running + waiting of their newest sample), so draining
finishes soonest. A replica that became ready less than ``settle_seconds`` ago goes after
the settled ones: its low count says it is new, not idle, and the router is still
filling it. A ready replica with no sample goes after the measured ones of its group:
nobody knows it is idle. Ties go by name, so the order is the same on every pass.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from llmfleet_operator.autoscale.inputs import Replica, ReplicaPhase, Sample


def deletion_order(
    replicas: Iterable[Replica], samples: Iterable[Sample], now: float, settle_seconds: float
) -> tuple[str, ...]:
    """Every replica's name, first to go first."""
    newest: dict[str, tuple[float, int]] = {}
    for sample in samples:
        # Of two samples at one time, the busier counts: the order must not depend on
        # the order the samples came in.
        seen = (sample.time, sample.running + sample.waiting)
        if sample.time <= now and seen > newest.get(sample.replica, (-math.inf, 0)):
            newest[sample.replica] = seen

    def rank(replica: Replica) -> tuple[int, float, str]:
        if replica.phase is ReplicaPhase.STARTING:
            # The newest start has the least progress to lose.
            return (0, -replica.started_at, replica.name)
        seen = newest.get(replica.name)
        in_flight = math.inf if seen is None else float(seen[1])
        settling = replica.ready_at is not None and now - replica.ready_at < settle_seconds
        return (2 if settling else 1, in_flight, replica.name)

    return tuple(replica.name for replica in sorted(replicas, key=rank))
