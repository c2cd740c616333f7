"""Model tiers through the official ``openai`` client: an alias served by a cheap model first.

Cases: the first tier serves by default and the answer names it; each rule (a long prompt, a
listed tenant, the tier header) starts at the larger tier and says why; a tier with no ready
replica or whose replicas fail sends the request up, and with those rules off it is held or
fails as a plain model would; a tenant reaches only the tiers it may use; escalations are
counted; a bad alias file is refused saying why.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from llmfleet_gateway.cli import build_parser, settings_from_args
from llmfleet_gateway.pool import Model
from llmfleet_gateway.tiers import Alias, Escalate, load_file
from tests.gateway.conftest import MODEL, Stack, sdk, settings
from tests.gateway.test_tenants import directory, tenant
from tests.runtime.conftest import free_port

StackFactory = Callable[..., Stack]
BIG = "big"
ALIAS = "chat"
RULES = Escalate(prompt_tokens_above=200, tenants=frozenset({"ns/research"}))


def start(
    stack_factory: StackFactory,
    rules: Escalate = RULES,
    small: str | None = "engine",
    **changes: Any,
) -> Stack:
    """Two engines: the first serves the small model (or ``small`` is its replica's URL, or
    None: it has none), the second the big one; ``chat`` is their alias."""
    models = (
        Model(MODEL, "m-deploy", "ns", max_num_seqs=16),
        Model(BIG, "big-deploy", "ns", max_num_seqs=16),
    )
    alias = Alias(name=ALIAS, tiers=[MODEL, BIG], escalate=rules)
    gateway = settings(models=models, aliases={ALIAS: alias}, **changes)
    stack = stack_factory(gateway, engines=2, served=(MODEL, BIG))
    first, second = stack.engine_urls
    small_urls = {"engine": [first], None: []}.get(small, [small])

    async def place() -> None:
        assert stack.gateway is not None
        pool = stack.gateway.pool
        pool.set_replicas(("ns", "m-deploy"), ((u.removeprefix("http://"), u) for u in small_urls))
        pool.set_replicas(("ns", "big-deploy"), [(second.removeprefix("http://"), second)])

    stack.run(place)
    return stack


def ask(stack: Stack, prompt: str = "hi", key: str = "none", **headers: str) -> Any:
    raw = sdk(stack, key).completions.with_raw_response.create(
        model=ALIAS, prompt=prompt, max_tokens=2, extra_headers=headers
    )
    return raw.headers, raw.parse()


def escalations(stack: Stack, reason: str, tenant: str = "") -> float:
    assert stack.gateway is not None
    labels = {
        "alias": ALIAS,
        "from_model": MODEL,
        "to_model": BIG,
        "reason": reason,
        "tenant": tenant,
    }
    found = stack.gateway.metrics.registry.get_sample_value(
        "llmfleet_gateway_escalations_total", labels
    )
    return found or 0.0


def test_the_first_tier_serves_and_the_answer_names_it(stack_factory: StackFactory) -> None:
    stack = start(stack_factory)
    headers, answer = ask(stack)
    assert headers["x-llmfleet-model"] == answer.model == MODEL
    assert "x-llmfleet-escalated" not in headers
    listed = {m.id: m for m in sdk(stack).models.list()}
    assert listed[ALIAS].model_extra == {"tiers": [MODEL, BIG]}


def test_a_long_prompt_starts_at_the_larger_tier(stack_factory: StackFactory) -> None:
    stack = start(stack_factory)
    headers, answer = ask(stack, "word " * 400)  # about 500 tokens, above 200
    assert headers["x-llmfleet-model"] == answer.model == BIG
    assert headers["x-llmfleet-escalated"] == "PromptLength"
    assert escalations(stack, "PromptLength") == 1


def test_the_tier_header_picks_a_tier_and_a_wrong_one_is_refused(
    stack_factory: StackFactory,
) -> None:
    stack = start(stack_factory)
    headers, answer = ask(stack, **{"x-llmfleet-tier": BIG})
    assert answer.model == BIG
    assert headers["x-llmfleet-escalated"] == "Header"
    with pytest.raises(openai.BadRequestError) as refused:
        ask(stack, **{"x-llmfleet-tier": "huge"})
    assert refused.value.code == "invalid_tier"
    assert f"{MODEL}, {BIG}" in refused.value.message


def test_the_header_is_ignored_when_its_rule_is_off(stack_factory: StackFactory) -> None:
    stack = start(stack_factory, Escalate(header=False))
    _, answer = ask(stack, **{"x-llmfleet-tier": BIG})
    assert answer.model == MODEL


def test_a_listed_tenant_starts_at_the_larger_tier_and_a_tenant_sees_only_its_tiers(
    stack_factory: StackFactory,
) -> None:
    tenants = directory(
        tenant("research", ["m-deploy", "big-deploy"], "key-r"),
        tenant("app", ["m-deploy", "big-deploy"], "key-a"),
        tenant("cheap", ["m-deploy"], "key-c"),
    )
    stack = start(stack_factory, tenants=tenants)
    headers, answer = ask(stack, key="key-r")
    assert answer.model == BIG
    assert headers["x-llmfleet-escalated"] == "Tenant"
    assert escalations(stack, "Tenant", "ns/research") == 1
    assert ask(stack, key="key-a")[1].model == MODEL
    # Its only tier is the small one: no rule takes it past what it may use.
    headers, answer = ask(stack, "word " * 400, key="key-c")
    assert answer.model == MODEL
    assert "x-llmfleet-escalated" not in headers
    listed = {m.id: m for m in sdk(stack, "key-c").models.list()}
    assert listed[ALIAS].model_extra == {"tiers": [MODEL]}


def test_a_tier_with_no_ready_replica_sends_the_request_up(stack_factory: StackFactory) -> None:
    stack = start(stack_factory, small=None)
    headers, answer = ask(stack)
    assert answer.model == BIG
    assert headers["x-llmfleet-escalated"] == "Saturation"
    assert escalations(stack, "Saturation") == 1


def test_without_the_saturation_rule_the_request_waits_for_its_tier(
    stack_factory: StackFactory,
) -> None:
    stack = start(stack_factory, Escalate(on_saturation=False), small=None, hold_seconds=0.3)
    with pytest.raises(openai.APIStatusError) as held:
        ask(stack)
    assert held.value.status_code == 503
    assert held.value.code == "model_not_ready"


def test_a_tier_whose_replicas_fail_sends_the_request_up(stack_factory: StackFactory) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused
    stack = start(stack_factory, small=closed)
    headers, answer = ask(stack)
    assert answer.model == BIG
    assert headers["x-llmfleet-escalated"] == "Failure"
    assert escalations(stack, "Failure") == 1
    stream = sdk(stack).completions.create(model=ALIAS, prompt="hi", max_tokens=3, stream=True)
    assert {chunk.model for chunk in stream} == {BIG}


def test_without_the_failure_rule_a_failed_tier_answers_the_error(
    stack_factory: StackFactory,
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    stack = start(stack_factory, Escalate(on_failure=False), small=closed)
    with pytest.raises(openai.APIStatusError) as failed:
        ask(stack)
    assert failed.value.status_code == 502


def test_an_alias_file_is_read_and_a_bad_one_refused(tmp_path: Path) -> None:
    good = tmp_path / "aliases.yaml"
    good.write_text(
        "aliases:\n- name: chat\n  tiers: [small, large]\n"
        "  escalate: {promptTokensAbove: 6000, tenants: [team-a/research], onFailure: false}\n"
    )
    alias = load_file(good)["chat"]
    assert alias.tiers == ["small", "large"]
    assert alias.escalate.prompt_tokens_above == 6000
    assert not alias.escalate.on_failure
    cases = {
        "aliases:\n- name: chat\n  tiers: [small]\n": "at least 2",
        "aliases:\n- name: chat\n  tiers: [small, small]\n": "only one tier",
        "aliases:\n- name: chat\n  tiers: [a, b]\n  escalate: {promptTokens: 3}\n": "promptTokens",
        "aliases:\n- {name: c, tiers: [a, b]}\n- {name: c, tiers: [a, b]}\n": "one name",
        "aliases: [\n": "expected",
    }
    for text, said in cases.items():
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(ValueError, match=said):
            load_file(bad)
    args = build_parser().parse_args(["--model", "chat=http://127.0.0.1:1", "--aliases", str(good)])
    with pytest.raises(ValueError, match="'chat' is also a --model"):
        settings_from_args(args)
