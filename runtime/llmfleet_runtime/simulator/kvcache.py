"""KV block pool with a prefix cache, the way vLLM V1's block manager accounts for it.

Who calls it: :mod:`.engine` only. Pure bookkeeping, no clock.

A block is *free* when no running request holds it: either never filled (anonymous) or
holding a cached prompt block with no reader (evictable, LRU order). ``usage()`` counts
both as free, as ``vllm:kv_cache_usage_perc`` does. A cached block is named by the
chained hash of its tokens (see :func:`.tokens.block_hashes`); a new request that starts
with the same blocks reuses them instead of computing them again.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence


class BlockPool:
    """The KV blocks of one engine replica."""

    def __init__(self, num_blocks: int, *, enable_prefix_caching: bool = True) -> None:
        if num_blocks <= 0:
            raise ValueError("num_blocks must be positive")
        self.num_blocks = num_blocks
        self.enable_prefix_caching = enable_prefix_caching
        self._anonymous_free = num_blocks
        self._refs: dict[int, int] = {}
        self._evictable: OrderedDict[int, None] = OrderedDict()

    def free_blocks(self) -> int:
        """Blocks a request could be given now (evicting cached ones if needed)."""
        return self._anonymous_free + len(self._evictable)

    def usage(self) -> float:
        """Fraction of blocks held by requests, 0..1."""
        return 1.0 - self.free_blocks() / self.num_blocks

    def match_prefix(self, hashes: Sequence[int]) -> int:
        """How many leading blocks of ``hashes`` are in the cache."""
        if not self.enable_prefix_caching:
            return 0
        count = 0
        for h in hashes:
            if h not in self._refs and h not in self._evictable:
                break
            count += 1
        return count

    def evictable_among(self, hashes: Sequence[int]) -> int:
        """How many of ``hashes`` are cached but unused (acquiring them uses free blocks)."""
        return sum(1 for h in hashes if h in self._evictable)

    def acquire_cached(self, hashes: Sequence[int]) -> None:
        """Take a reference on cached blocks found by :meth:`match_prefix`."""
        for h in hashes:
            if h in self._evictable:
                del self._evictable[h]
            self._refs[h] = self._refs.get(h, 0) + 1

    def allocate(self, count: int) -> bool:
        """Take ``count`` anonymous blocks, evicting least recently used cached ones."""
        if count <= 0:
            return True
        if count > self.free_blocks():
            return False
        from_free = min(count, self._anonymous_free)
        self._anonymous_free -= from_free
        for _ in range(count - from_free):
            self._evictable.popitem(last=False)
        return True

    def register(self, block_hash: int) -> bool:
        """Name one just-filled anonymous block of a request ``block_hash``.

        Returns False (the block stays anonymous) when caching is off or another request
        already cached the same block.
        """
        if not self.enable_prefix_caching or block_hash in self._refs:
            return False
        if block_hash in self._evictable:
            return False
        self._refs[block_hash] = 1
        return True

    def release(self, anonymous: int, cached: Sequence[int]) -> None:
        """Give back a request's blocks; cached ones stay reusable until evicted.

        Cached blocks are released tail first, so a prompt's first blocks (the ones most
        likely shared) are the last to be evicted.
        """
        self._anonymous_free += anonymous
        for h in reversed(cached):
            refs = self._refs[h] - 1
            if refs:
                self._refs[h] = refs
            else:
                del self._refs[h]
                self._evictable[h] = None
