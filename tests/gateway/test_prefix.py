"""Prefix checkpoints and the bounded prefix index (pure: time is a parameter).

Cases:
- the boundaries: every block up to the dense ones, then two per doubling, up to the cap;
- checkpoints are pinned values (every process and gateway replica computes these, so a
  change of scheme is a change every replica must take at once);
- prompts sharing their first blocks share exactly the checkpoints those blocks cover, and
  nothing after the first block that differs; a different first block shares none (also
  as a property over generated prompts, derandomized);
- only whole blocks count: a prompt shorter than a block has none, and a partial tail
  changes nothing; a prompt past the cap has one checkpoint per boundary; any text works;
- the index: each replica's deepest checkpoint in an unbroken run from the first, as
  blocks; a replica missing a shallower checkpoint is not credited deeper; a read
  refreshes nothing;
- bounded: never more than ``capacity`` checkpoints, the least recently recorded out
  first, and a prompt's deep checkpoints before its shallow ones;
- ttl: an entry older than ``ttl_s`` is ignored, recording again refreshes it;
- forget: a replica that left is credited nothing, and checkpoints only it held go;
- a capacity below one or a ttl of zero is refused.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmfleet_gateway.prefix import (
    BLOCK_CHARS,
    BOUNDARIES,
    DENSE_BLOCKS,
    MAX_BLOCKS,
    PrefixIndex,
    checkpoints,
)

DETERMINISTIC = settings(derandomize=True, deadline=None)


def block(tag: int) -> str:
    """One whole block of text, distinct per tag."""
    return f"<{tag:05d}>".ljust(BLOCK_CHARS, "x")


def prompt(*tags: int, tail: str = "") -> str:
    return "".join(block(tag) for tag in tags) + tail


def shared(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """Leading checkpoints two prompts have in common."""
    count = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        count += 1
    return count


def test_boundaries() -> None:
    assert BOUNDARIES[:DENSE_BLOCKS] == tuple(range(1, DENSE_BLOCKS + 1))
    assert BOUNDARIES[DENSE_BLOCKS : DENSE_BLOCKS + 4] == (24, 32, 48, 64)
    assert list(BOUNDARIES) == sorted(set(BOUNDARIES))
    assert BOUNDARIES[-1] == MAX_BLOCKS


def test_checkpoints_are_pinned() -> None:
    assert checkpoints("a" * BLOCK_CHARS * 2) == (0x26E0033970745ACF, 0xCFBF84139389108B)


def test_shared_first_blocks_share_exactly_their_checkpoints() -> None:
    first = prompt(*range(40))
    second = prompt(*range(30), *range(100, 110))  # block 30 differs
    a, b = checkpoints(first), checkpoints(second)
    covered = sum(1 for bound in BOUNDARIES if bound <= 30)  # 1..16 and 24
    assert shared(a, b) == covered
    assert BOUNDARIES[covered - 1] == 24
    assert set(a[covered:]).isdisjoint(b)


def test_a_different_first_block_shares_none() -> None:
    a, b = checkpoints(prompt(*range(20))), checkpoints(prompt(99, *range(1, 20)))
    assert len(a) == len(b) == DENSE_BLOCKS
    assert set(a).isdisjoint(b)


def test_only_whole_blocks_count() -> None:
    assert checkpoints("") == ()
    assert checkpoints("x" * (BLOCK_CHARS - 1)) == ()
    assert len(checkpoints("x" * BLOCK_CHARS)) == 1
    assert checkpoints(prompt(1, 2, 3, tail="a partial block")) == checkpoints(prompt(1, 2, 3))


def test_past_the_cap_one_checkpoint_per_boundary() -> None:
    long = "y" * BLOCK_CHARS * (MAX_BLOCKS + 10)
    assert len(checkpoints(long)) == len(BOUNDARIES)
    assert checkpoints(long) == checkpoints(long[: BLOCK_CHARS * MAX_BLOCKS])


def test_any_text() -> None:
    text = "日本語のプロンプト🙂" * 100
    assert len(checkpoints(text)) == len(text) // BLOCK_CHARS
    assert checkpoints(text) != checkpoints("z" * len(text))


@DETERMINISTIC
@given(
    common=st.lists(st.integers(0, 3), max_size=70),
    rest=st.lists(st.integers(0, 3), min_size=2, max_size=2, unique=True),
    lengths=st.tuples(st.integers(0, 30), st.integers(0, 30)),
)
def test_shared_checkpoints_are_the_boundaries_within_the_shared_blocks(
    common: list[int], rest: list[int], lengths: tuple[int, int]
) -> None:
    # Two prompts equal for len(common) blocks, then differing in their next block.
    a = checkpoints(prompt(*common, rest[0], *[7] * lengths[0]))
    b = checkpoints(prompt(*common, rest[1], *[7] * lengths[1]))
    assert shared(a, b) == sum(1 for bound in BOUNDARIES if bound <= len(common))


ONE = checkpoints(prompt(*range(40)))  # 18 checkpoints: 1..16, 24 and 32 blocks
OTHER = checkpoints(prompt(*range(10), *range(200, 230)))


def test_matched_is_each_replicas_deepest_run() -> None:
    index = PrefixIndex(capacity=1000, ttl_s=60)
    index.record(ONE, "r1", now=0)
    index.record(OTHER, "r2", now=0)
    index.record(ONE[:3], "r3", now=0)
    assert index.matched(ONE, now=1) == {"r1": 32, "r2": 10, "r3": 3}
    assert index.matched(OTHER, now=1) == {"r1": 10, "r2": 32, "r3": 3}
    assert index.matched(checkpoints(prompt(500, 501)), now=1) == {}


def test_an_unbroken_run_from_the_first_block() -> None:
    index = PrefixIndex(capacity=1000, ttl_s=60)
    index.record(ONE[1:], "r1", now=0)  # no first checkpoint: nothing is credited
    index.record((*ONE[:2], *ONE[5:]), "r2", now=0)  # a gap after two
    assert index.matched(ONE, now=1) == {"r2": 2}


def test_matched_refreshes_nothing() -> None:
    index = PrefixIndex(capacity=2, ttl_s=60)
    index.record(ONE[:1], "r1", now=0)
    index.record(OTHER[1:2], "r1", now=0)
    index.matched(ONE, now=1)
    index.record(OTHER[2:3], "r1", now=2)  # the first recorded goes, read or not
    assert index.matched(ONE, now=3) == {}


def test_bounded_least_recent_first_and_deep_before_shallow() -> None:
    index = PrefixIndex(capacity=10, ttl_s=60)
    index.record(ONE, "r1", now=0)
    assert len(index) == 10
    assert index.matched(ONE, now=1) == {"r1": 10}  # the shallow ten stayed
    index.record(ONE[:4], "r2", now=1)  # touched: now the most recent
    index.record(checkpoints(prompt(300, 301, 302, 303, 304, 305)), "r3", now=1)
    assert len(index) == 10
    assert index.matched(ONE, now=2) == {"r1": 4, "r2": 4}


def test_ttl() -> None:
    index = PrefixIndex(capacity=1000, ttl_s=60)
    index.record(ONE, "r1", now=0)
    index.record(ONE[:5], "r2", now=30)
    assert index.matched(ONE, now=60) == {"r1": 32, "r2": 5}
    assert index.matched(ONE, now=61) == {"r2": 5}
    index.record(ONE[:2], "r1", now=61)
    assert index.matched(ONE, now=62) == {"r1": 2, "r2": 5}
    assert index.matched(ONE, now=91) == {"r1": 2}


def test_forget() -> None:
    index = PrefixIndex(capacity=1000, ttl_s=60)
    index.record(ONE, "r1", now=0)
    index.record(ONE[:3], "r2", now=0)
    index.forget("r1")
    assert index.matched(ONE, now=1) == {"r2": 3}
    assert len(index) == 3
    index.forget("gone")
    assert len(index) == 3


@pytest.mark.parametrize(("capacity", "ttl_s"), [(0, 60.0), (10, 0.0)])
def test_refuses_bad_bounds(capacity: int, ttl_s: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        PrefixIndex(capacity, ttl_s)
