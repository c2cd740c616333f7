"""Scale-down victim order (``deletion_order``), as a table and properties.

Cases: starting replicas go first (the newest start first); ready ones by fewest
in-flight requests (running + waiting of the newest sample, not an older one); a
replica ready less than the settle time goes after the settled ones, whatever its
count; a ready replica with no sample goes after the measured ones; ties by name;
samples from the future are ignored; of two samples at
one time the busier counts. Properties: the order is a permutation of the
replicas, deterministic (independent of input order), every starting replica precedes
every ready one, and every settled measured one precedes every settling one.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmfleet_operator.autoscale import Replica, ReplicaPhase, Sample, deletion_order

NOW = 10_000.0
SETTLE = 120.0


def up(name: str, ready_for: float = 600.0) -> Replica:
    return Replica(name, ReplicaPhase.READY, NOW - ready_for - 60, NOW - ready_for)


def starting(name: str, age: float = 10.0) -> Replica:
    return Replica(name, ReplicaPhase.STARTING, NOW - age)


def load(name: str, running: int, waiting: int = 0, age: float = 5.0) -> Sample:
    return Sample(NOW - age, name, waiting, None, 0.1, running)


@pytest.mark.parametrize(
    ("replicas", "samples", "order"),
    [
        (
            [up("a"), starting("s-old", age=50), up("b"), starting("s-new", age=5)],
            [load("a", 3), load("b", 1)],
            ("s-new", "s-old", "b", "a"),
        ),
        ([up("a"), up("b")], [load("a", 1, waiting=4), load("b", 3)], ("b", "a")),
        # The newest sample counts: a was busy, is idle now.
        ([up("a"), up("b")], [load("a", 9, age=20), load("a", 0), load("b", 2)], ("a", "b")),
        # Just ready and empty: not the first to go.
        (
            [up("fresh", ready_for=30), up("busy")],
            [load("fresh", 0), load("busy", 7)],
            ("busy", "fresh"),
        ),
        ([up("quiet"), up("unknown")], [load("quiet", 5)], ("quiet", "unknown")),
        ([up("b"), up("a")], [load("a", 2), load("b", 2)], ("a", "b")),
        ([up("a"), up("b")], [load("a", 0, age=-30), load("a", 5), load("b", 1)], ("b", "a")),
        # Two samples at one time: the busier counts.
        ([up("a"), up("b")], [load("a", 0), load("a", 4), load("b", 1)], ("b", "a")),
        ([], [], ()),
    ],
)
def test_deletion_order(
    replicas: list[Replica], samples: list[Sample], order: tuple[str, ...]
) -> None:
    assert deletion_order(replicas, samples, NOW, SETTLE) == order


@st.composite
def fleets(draw: st.DrawFn) -> tuple[list[Replica], list[Sample]]:
    count = draw(st.integers(0, 10))
    replicas, samples = [], []
    for i in range(count):
        name = f"r{i}"
        if draw(st.booleans()):
            replicas.append(starting(name, age=draw(st.floats(0, 300))))
            continue
        replicas.append(up(name, ready_for=draw(st.floats(0, 600))))
        for age in draw(st.lists(st.floats(0, 60), max_size=3)):
            samples.append(load(name, draw(st.integers(0, 50)), draw(st.integers(0, 20)), age))
    order = draw(st.permutations(replicas))
    return list(order), samples


@given(fleets())
def test_deletion_order_properties(fleet: tuple[list[Replica], list[Sample]]) -> None:
    replicas, samples = fleet
    order = deletion_order(replicas, samples, NOW, SETTLE)
    assert sorted(order) == sorted(r.name for r in replicas)
    assert deletion_order(reversed(replicas), reversed(samples), NOW, SETTLE) == order
    by_name = {r.name: r for r in replicas}
    position = {name: i for i, name in enumerate(order)}
    measured = {s.replica for s in samples}
    for a in replicas:
        for b in replicas:
            if a.phase is ReplicaPhase.STARTING and b.phase is ReplicaPhase.READY:
                assert position[a.name] < position[b.name]
            settled = a.ready_at is not None and NOW - a.ready_at >= SETTLE
            settling = b.ready_at is not None and NOW - b.ready_at < SETTLE
            if settled and a.name in measured and settling:
                assert position[a.name] < position[b.name], (by_name[a.name], by_name[b.name])
