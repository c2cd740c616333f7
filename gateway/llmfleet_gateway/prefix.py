"""Prefix checkpoints of a prompt, and which replicas recently served them.

The server calls :func:`checkpoints` once per request on the prompt text, asks the
:class:`PrefixIndex` which replicas hold how many of its leading blocks
(:meth:`PrefixIndex.matched`, fed to :func:`llmfleet_gateway.routing.choose`), and records
the replica it sent the request to (:meth:`PrefixIndex.record`). The fleet simulator's
router does the same over its trace's prompts.

Checkpoints are chained xxh3-64 hashes: the prompt is cut into blocks of
:data:`BLOCK_CHARS` characters, and the checkpoint at a boundary of ``n`` blocks hashes
the segment since the previous boundary with the previous checkpoint as its seed. Two
prompts therefore share a checkpoint exactly when they share every block before its
boundary. The hash, its seeds and the boundaries are fixed, so every process and every
gateway replica computes the same values (never Python's ``hash()``, which is salted per
process). Only whole blocks count: an engine caches whole blocks too, and a partial tail
would make a prompt's last checkpoint differ from that of the longer prompt that extends it.

Which boundaries (:data:`BOUNDARIES`): every block up to :data:`DENSE_BLOCKS` (system
prompts and short conversations, where one block is a large share of the prompt), then two
per doubling (``2**k`` and ``3 * 2**(k-1)`` blocks), up to :data:`MAX_BLOCKS`. The cost is
one hash call per boundary plus one pass over the prompt's bytes, so it grows with the
logarithm of the prompt's length in calls and stops growing at :data:`MAX_BLOCKS`; hashing
every block would cost one interpreter round trip per block, which is what a long prompt
cannot afford on the hot path. The price is precision: a shared prefix is credited down to
the nearest boundary below it, at most a third short, the same for every replica compared.

The index is bounded (an LRU of checkpoints) and forgets what a replica's own cache has
probably evicted (a time-to-live); time is a parameter, nothing here reads a clock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from xxhash import xxh3_64_intdigest

BLOCK_CHARS = 256
"""Characters per block: about 64 tokens at about four characters per token (llm-d hashes
64-token blocks)."""

DENSE_BLOCKS = 16
"""Every block up to here is a boundary."""

MAX_BLOCKS = 4096
"""The deepest boundary: a longer prompt is identified by this much of its prefix, so no
prompt costs more than this many blocks of hashing."""


def _boundaries() -> tuple[int, ...]:
    bounds = list(range(1, DENSE_BLOCKS + 1))
    power = DENSE_BLOCKS
    while power < MAX_BLOCKS:
        bounds += [power * 3 // 2, power * 2]
        power *= 2
    return tuple(b for b in bounds if b <= MAX_BLOCKS)


BOUNDARIES: tuple[int, ...] = _boundaries()
"""Checkpoint ``i`` of a prompt covers its first ``BOUNDARIES[i]`` blocks."""

_SEED = 0x6C6C_6D66_6C65_6574
"""The first segment's seed (any fixed value does: it names this scheme)."""


def checkpoints(text: str) -> tuple[int, ...]:
    """The prompt's chained checkpoints, one per boundary its whole blocks reach."""
    whole = min(len(text) // BLOCK_CHARS, MAX_BLOCKS)
    out: list[int] = []
    seed = _SEED
    start = 0
    for bound in BOUNDARIES:
        if bound > whole:
            break
        end = bound * BLOCK_CHARS
        seed = xxh3_64_intdigest(text[start:end].encode(), seed)
        out.append(seed)
        start = end
    return tuple(out)


class PrefixIndex:
    """Which replicas recently served which checkpoints: at most ``capacity`` checkpoints,
    least recently recorded first out; a replica's entry older than ``ttl_s`` is ignored.

    One per model, owned by the gateway's pool (or the fleet simulator's router); not
    thread-safe (the gateway runs one event loop).
    """

    def __init__(self, capacity: int, ttl_s: float) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s}")
        self.capacity = capacity
        self.ttl_s = ttl_s
        self._served: OrderedDict[int, dict[str, float]] = OrderedDict()

    def __len__(self) -> int:
        """Checkpoints held."""
        return len(self._served)

    def record(self, checkpoints: Sequence[int], replica: str, now: float) -> None:
        """``replica`` was sent a prompt with these checkpoints at ``now``."""
        served = self._served
        # Deepest first, so a prompt's shallow checkpoints are the most recent and the
        # LRU drops deep ones first: what survives is still a run from block 0.
        for checkpoint in reversed(checkpoints):
            replicas = served.get(checkpoint)
            if replicas is None:
                served[checkpoint] = {replica: now}
            else:
                replicas[replica] = now
                served.move_to_end(checkpoint)
        while len(served) > self.capacity:
            served.popitem(last=False)

    def matched(self, checkpoints: Sequence[int], now: float) -> dict[str, int]:
        """Per replica, the leading blocks it is believed to hold: the boundary of its
        deepest checkpoint in an unbroken run from the first, each seen within ``ttl_s``.
        Replicas holding none are absent. A read: it refreshes nothing."""
        found: dict[str, int] = {}
        oldest = now - self.ttl_s
        served = self._served
        previous = 0
        for i, checkpoint in enumerate(checkpoints):
            replicas = served.get(checkpoint)
            if replicas is None:
                break
            blocks = BOUNDARIES[i]
            extended = False
            for replica, seen in replicas.items():
                # Only a replica that held every shallower checkpoint goes deeper.
                if seen >= oldest and found.get(replica, 0) == previous:
                    found[replica] = blocks
                    extended = True
            if not extended:
                break
            previous = blocks
        return found

    def forget(self, replica: str) -> None:
        """``replica`` left the pool: drop it everywhere (and checkpoints left with none)."""
        empty = []
        for checkpoint, replicas in self._served.items():
            if replicas.pop(replica, None) is not None and not replicas:
                empty.append(checkpoint)
        for checkpoint in empty:
            del self._served[checkpoint]
