"""The engine model schedules like vLLM V1: slots, KV budget, preemption, prefix cache.

Cases: requests beyond max_num_seqs wait and are admitted as slots free; long prompts
are chunked within max_num_batched_tokens; a full KV cache preempts the newest running
request and it still completes; a shared prompt prefix is served from the prefix cache
(fewer prefill tokens, faster first token); aborts free their blocks; the same inputs
give the same outputs; and (property) any workload finishes with every block returned.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmfleet_runtime.simulator import FAST, Engine, Request, StepResult
from llmfleet_runtime.simulator.tokens import block_hashes, synthetic_block_hashes


def run(engine: Engine, until: float = 1e9) -> list[StepResult]:
    out: list[StepResult] = []
    while (t := engine.next_event_time()) is not None and t <= until:
        out += engine.advance(t)
    return out


def test_requests_beyond_the_slots_wait() -> None:
    engine = Engine(FAST.with_overrides(max_num_seqs=2))
    for i in range(5):
        engine.add(Request(f"r{i}", 10, 4), 0.0)
    engine.advance(0.0)
    assert (engine.num_running, engine.num_waiting) == (2, 3)
    steps = run(engine)
    assert (engine.num_running, engine.num_waiting) == (0, 0)
    assert max(len(s.tokens) for s in steps) == 2
    assert engine.counters.finished == {"length": 5}
    assert engine.counters.generation_tokens == 20


def test_long_prompt_is_chunked_within_the_token_budget() -> None:
    engine = Engine(FAST.with_overrides(max_num_batched_tokens=64))
    engine.add(Request("long", 200, 2), 0.0)
    engine.advance(0.0)
    steps = run(engine)
    assert [s.num_tokens for s in steps] == [64, 64, 64, 8, 1]
    assert steps[3].tokens[0].index == 0  # first token once the whole prompt is in


def test_without_chunked_prefill_a_prompt_waits_for_a_whole_budget() -> None:
    engine = Engine(FAST.with_overrides(max_num_batched_tokens=64), enable_chunked_prefill=False)
    engine.add(Request("a", 60, 3), 0.0)
    engine.add(Request("b", 60, 3), 0.0)
    engine.advance(0.0)
    assert (engine.num_running, engine.num_waiting) == (1, 1)


def test_full_kv_cache_preempts_the_newest_request_and_all_finish() -> None:
    profile = FAST.with_overrides(num_gpu_blocks=8, block_size=16, max_model_len=128)
    engine = Engine(profile)
    for i in range(3):
        engine.add(Request(f"r{i}", 30, 60), 0.0)  # 3 x 90 tokens > 128 tokens of KV
    engine.advance(0.0)
    steps = run(engine)
    assert engine.counters.preemptions > 0
    assert engine.counters.finished == {"length": 3}
    assert engine.kv_usage() == 0.0
    finished = {f.request_id: f for s in steps for f in s.finished}
    assert max(f.preemptions for f in finished.values()) >= 1
    assert all(f.output_tokens == 60 for f in finished.values())


def test_kv_usage_rises_with_load() -> None:
    engine = Engine(FAST.with_overrides(num_gpu_blocks=64, max_num_seqs=8, max_model_len=256))
    for i in range(8):
        engine.add(Request(f"r{i}", 100, 50), 0.0)
    engine.advance(0.0)
    engine.advance(engine.next_event_time() or 0.0)
    assert 0.5 < engine.kv_usage() <= 1.0


def test_shared_prefix_is_served_from_the_prefix_cache() -> None:
    pieces = [f" w{i}" for i in range(256)]
    hashes = block_hashes(pieces, FAST.block_size)
    engine = Engine(FAST)
    engine.add(Request("first", 256, 2, block_hashes=hashes), 0.0)
    engine.advance(0.0)
    first = run(engine)
    engine.add(Request("second", 256, 2, block_hashes=hashes), 10.0)
    engine.advance(10.0)
    second = run(engine)
    assert first[0].num_tokens == 256
    assert second[0].num_tokens == 256 - 240  # 15 cached blocks, the last one recomputed
    assert engine.counters.prefix_cache_hits == 240
    assert engine.counters.prefix_cache_queries == 512
    done = second[-1].finished[0]
    assert done.cached_tokens == 240


def test_prefix_cache_off_reuses_nothing() -> None:
    hashes = synthetic_block_hashes("sys", 256, "x", 256, FAST.block_size)
    engine = Engine(FAST, enable_prefix_caching=False)
    for i, t in enumerate((0.0, 10.0)):
        engine.add(Request(f"r{i}", 256, 1, block_hashes=hashes), t)
        engine.advance(t)
        run(engine)
    assert engine.counters.prefix_cache_hits == 0


def test_abort_frees_blocks_and_counts_abort() -> None:
    engine = Engine(FAST)
    engine.add(Request("a", 100, 50), 0.0)
    engine.advance(0.0)
    engine.advance(engine.next_event_time() or 0.0)
    assert engine.kv_usage() > 0
    done = engine.abort("a", 1.0)
    assert done is not None
    assert done.finish_reason == "abort"
    assert engine.kv_usage() == 0.0
    assert engine.abort("a", 1.0) is None


def test_stop_after_ends_with_stop() -> None:
    engine = Engine(FAST)
    engine.add(Request("a", 5, 100, stop_after=3), 0.0)
    engine.advance(0.0)
    steps = run(engine)
    assert steps[-1].finished[0].finish_reason == "stop"
    assert steps[-1].finished[0].output_tokens == 3


def test_refuses_what_vllm_refuses() -> None:
    engine = Engine(FAST)
    with pytest.raises(ValueError, match="max_model_len"):
        engine.add(Request("a", FAST.max_model_len, 1), 0.0)
    engine.add(Request("b", 1, 1), 0.0)
    with pytest.raises(ValueError, match="duplicate"):
        engine.add(Request("b", 1, 1), 0.0)
    with pytest.raises(ValueError, match="cannot hold"):
        Engine(FAST.with_overrides(num_gpu_blocks=1))


def test_same_inputs_same_outputs() -> None:
    def trace() -> list[tuple[float, int]]:
        engine = Engine(FAST.with_overrides(max_num_seqs=3, num_gpu_blocks=20, max_model_len=64))
        for i in range(10):
            engine.add(Request(f"r{i}", 20 + i, 10 + i), i * 0.001)
            engine.advance(i * 0.001)
        return [(s.end, s.num_tokens) for s in run(engine)]

    assert trace() == trace()


def test_slowdown_stretches_steps() -> None:
    engine = Engine(FAST)
    engine.slowdown = 3.0
    engine.add(Request("a", 10, 1), 0.0)
    engine.advance(0.0)
    slow = run(engine)[0]
    normal = Engine(FAST)
    normal.add(Request("a", 10, 1), 0.0)
    normal.advance(0.0)
    fast = run(normal)[0]
    assert slow.end - slow.start == pytest.approx(3 * (fast.end - fast.start))


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(1, 300),
            st.integers(1, 80),
            st.floats(0, 0.05),
            st.booleans(),
        ),
        min_size=1,
        max_size=25,
    ),
    st.integers(1, 6),
    st.integers(24, 80),
)
def test_any_workload_finishes_and_returns_every_block(
    requests: list[tuple[int, int, float, bool]], slots: int, blocks: int
) -> None:
    profile = FAST.with_overrides(
        max_num_seqs=slots, num_gpu_blocks=blocks, max_model_len=384, max_num_batched_tokens=128
    )
    engine = Engine(profile)
    now = 0.0
    for i, (prompt, output, gap, shared) in enumerate(requests):
        now += gap
        engine.advance(now)
        hashes = synthetic_block_hashes("p", 128 if shared else 0, f"r{i}", prompt, 16)
        engine.add(Request(f"r{i}", prompt, output, block_hashes=hashes), now)
        engine.advance(now)
        assert 0.0 <= engine.kv_usage() <= 1.0
        assert engine.num_running <= slots
    run(engine)
    assert not engine.has_work()
    assert engine.kv_usage() == 0.0
    assert sum(engine.counters.finished.values()) == len(requests)
    assert engine.counters.generation_tokens == sum(o for _, o, _, _ in requests)
