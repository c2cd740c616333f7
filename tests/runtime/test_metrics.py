"""The engine simulator's metrics record what vLLM records when vLLM records it: the
time to first token at the first token (so ``vllm:time_to_first_token_seconds_count``
counts requests started, which the autoscaler's request rate reads), not when the
request finishes."""

from __future__ import annotations

from llmfleet_runtime.simulator import FAST, Engine, Request
from llmfleet_runtime.simulator.metrics import EngineMetrics


def test_ttft_is_counted_at_the_first_token_not_at_the_finish() -> None:
    engine = Engine(FAST)
    metrics = EngineMetrics(engine, "m", process_metrics=False)
    engine.add(Request("long", 64, 500), 0.0)
    now, first_seen, finished = 0.0, False, False
    while not first_seen:
        now += 0.01
        for result in engine.advance(now):
            metrics.observe_step(result)
            first_seen |= any(token.index == 0 for token in result.tokens)
            finished |= bool(result.finished)
    assert not finished
    count = metrics.registry.get_sample_value(
        "vllm:time_to_first_token_seconds_count", {"model_name": "m", "engine": "0"}
    )
    assert count == 1
