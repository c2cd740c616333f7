"""Tenants at the gateway, through the official ``openai`` client against engine simulators.

Cases: a tenant lists and calls only its models, and another tenant's model answers exactly as
one that does not exist; both the tenant and the LLMDeployment must agree; a missing, wrong or
revoked key is the SDK's AuthenticationError; requests per minute refuse the next request
with RateLimitError and OpenAI's ``x-ratelimit-*`` and ``retry-after`` headers; tokens are
reserved at admission (prompt estimate plus ``max_tokens``) and settled with the engine's
usage; a request that could never fit a minute, and one over a spent daily budget
(``insufficient_quota``), carry ``x-should-retry: false`` and the SDK does not retry them; a
request without ``max_tokens`` under a token limit is capped at what it reserved; concurrent
requests are bounded; waiting requests are woken Interactive first, then tenants in turn;
no key, hash or prompt reaches the log or ``/metrics``. The directory itself: keys are found
by hash, a key two tenants share belongs to neither, a bad Secret entry is skipped, an
invalid tenant file is refused with the API server's words.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from llmfleet_contract.api import key_hash
from llmfleet_contract.labels import API_KEYS
from llmfleet_contract.openai import ApiError
from llmfleet_gateway.pool import Model, Pool
from llmfleet_gateway.tenants import Directory, build, load_file
from tests.gateway.conftest import MODEL, Stack, http, sdk, settings

StackFactory = Callable[..., Stack]
NOON = 1_800_000_030.0
"""A wall clock half way through a minute: the limit windows never roll during a test."""
OTHER = "other"


def tenant(
    name: str,
    models: list[str],
    key: str,
    limits: dict[str, int] | None = None,
    priority: str = "Interactive",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """An LLMTenant and its keys' Secret, as a user would apply them."""
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": f"{name}-keys", "namespace": "ns", "labels": {API_KEYS: "true"}},
        "stringData": {"laptop": key_hash(key)},
    }
    obj = {
        "apiVersion": "llmfleet.io/v1alpha1",
        "kind": "LLMTenant",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {
            "apiKeys": {"name": f"{name}-keys"},
            "models": models,
            "priority": priority,
            "limits": limits or {},
        },
    }
    return obj, secret


def directory(*tenants: tuple[dict[str, Any], dict[str, Any]]) -> Directory:
    return build([t for t, _ in tenants], [s for _, s in tenants])


def two_models(**changes: Any) -> Any:
    models = (
        Model(MODEL, "m-deploy", "ns", max_num_seqs=16),
        Model(OTHER, "other-deploy", "ns", max_num_seqs=16),
    )
    return settings(models=models, **changes)


def client(stack: Stack, key: str, retries: int = 0) -> openai.OpenAI:
    return sdk(stack, key, retries)


def start(stack_factory: StackFactory, tenants: Directory, **changes: Any) -> Stack:
    stack = stack_factory(two_models(tenants=tenants, **changes), engines=1, wall=lambda: NOON)
    assert stack.gateway is not None
    return stack


def test_a_tenant_sees_and_calls_only_its_models(stack_factory: StackFactory) -> None:
    stack = start(
        stack_factory,
        directory(tenant("a", ["m-deploy"], "key-a"), tenant("b", ["other-deploy"], "key-b")),
    )
    a, b = client(stack, "key-a"), client(stack, "key-b")
    assert [m.id for m in a.models.list()] == [MODEL]
    assert [m.id for m in b.models.list()] == [OTHER]
    assert a.completions.create(model=MODEL, prompt="hi", max_tokens=2).choices
    with pytest.raises(openai.NotFoundError) as hidden:
        b.completions.create(model=MODEL, prompt="hi", max_tokens=2)
    with pytest.raises(openai.NotFoundError) as missing:
        b.completions.create(model="nope", prompt="hi", max_tokens=2)
    assert hidden.value.code == missing.value.code == "model_not_found"
    assert hidden.value.message.replace(f"`{MODEL}`", "`X`") == missing.value.message.replace(
        "`nope`", "`X`"
    )


def test_the_llmdeployment_must_admit_the_tenant_too(stack_factory: StackFactory) -> None:
    models = (Model(MODEL, "m-deploy", "ns", 16, tenants=frozenset({"b"})),)
    stack = stack_factory(
        settings(models=models, tenants=directory(tenant("a", ["m-deploy"], "key-a"))),
        engines=1,
    )
    assert client(stack, "key-a").models.list().data == []
    with pytest.raises(openai.NotFoundError):
        client(stack, "key-a").completions.create(model=MODEL, prompt="hi", max_tokens=2)


def test_missing_wrong_and_revoked_keys_are_authentication_errors(
    stack_factory: StackFactory,
) -> None:
    stack = start(stack_factory, directory(tenant("a", ["m-deploy"], "key-a")))
    with pytest.raises(openai.AuthenticationError) as wrong:
        client(stack, "key-b").completions.create(model=MODEL, prompt="hi", max_tokens=2)
    assert wrong.value.code == "invalid_api_key"
    assert http("GET", f"{stack.url}/models").status == 401
    assert client(stack, "key-a").completions.create(model=MODEL, prompt="hi", max_tokens=2)

    async def revoke() -> None:
        assert stack.gateway is not None
        stack.gateway.set_tenants(directory(tenant("a", ["m-deploy"], "another-key")))

    stack.run(revoke)
    with pytest.raises(openai.AuthenticationError):
        client(stack, "key-a").completions.create(model=MODEL, prompt="hi", max_tokens=2)


def test_requests_per_minute_with_openai_headers(
    stack_factory: StackFactory, caplog: pytest.LogCaptureFixture
) -> None:
    stack = start(
        stack_factory, directory(tenant("a", ["m-deploy"], "key-a", {"requestsPerMinute": 2}))
    )
    a = client(stack, "key-a")
    remaining = []
    for _ in range(2):
        raw = a.completions.with_raw_response.create(model=MODEL, prompt="hi", max_tokens=2)
        assert raw.headers["x-ratelimit-limit-requests"] == "2"
        assert raw.headers["x-ratelimit-reset-requests"] == "30000ms"
        remaining.append(raw.headers["x-ratelimit-remaining-requests"])
    assert remaining == ["1", "0"]
    logged = caplog.at_level(logging.INFO, "llmfleet.gateway.access")
    with logged, pytest.raises(openai.RateLimitError) as refused:
        a.completions.create(model=MODEL, prompt="hi", max_tokens=2)
    line = json.loads(caplog.records[-1].getMessage())
    assert (line["tenant"], line["status"], line["error"]) == ("ns/a", 429, "rate_limit_exceeded")
    assert line["request_id"] == refused.value.response.headers["x-request-id"]
    headers = refused.value.response.headers
    assert (headers["retry-after"], headers["retry-after-ms"]) == ("30", "30000")
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.value.code == "rate_limit_exceeded"
    assert "x-should-retry" not in headers


def test_tokens_are_reserved_then_settled_with_the_engines_usage(
    stack_factory: StackFactory,
) -> None:
    stack = start(
        stack_factory, directory(tenant("a", ["m-deploy"], "key-a", {"tokensPerMinute": 100}))
    )
    a = client(stack, "key-a")
    prompt = "w" * 40  # estimated at 10 tokens
    first = a.completions.with_raw_response.create(model=MODEL, prompt=prompt, max_tokens=3)
    assert first.headers["x-ratelimit-remaining-tokens"] == str(100 - 13)  # reserved
    usage = first.parse().usage
    assert usage is not None
    second = a.completions.with_raw_response.create(model=MODEL, prompt=prompt, max_tokens=3)
    settled = 100 - usage.total_tokens - 13  # the first settled, the second reserved
    assert second.headers["x-ratelimit-remaining-tokens"] == str(settled)


def test_a_request_no_minute_can_hold_is_not_retried(stack_factory: StackFactory) -> None:
    stack = start(
        stack_factory, directory(tenant("a", ["m-deploy"], "key-a", {"tokensPerMinute": 10}))
    )
    with pytest.raises(openai.RateLimitError) as refused:
        client(stack, "key-a", retries=2).completions.create(
            model=MODEL, prompt="hi", max_tokens=50
        )
    assert refused.value.response.headers["x-should-retry"] == "false"
    assert "lower max_tokens" in refused.value.message
    assert rejected(stack) == 1  # the SDK, told not to, did not retry


def test_a_spent_daily_budget_is_insufficient_quota_and_not_retried(
    stack_factory: StackFactory,
) -> None:
    stack = start(
        stack_factory, directory(tenant("a", ["m-deploy"], "key-a", {"tokensPerDay": 30}))
    )
    a = client(stack, "key-a", retries=2)
    assert a.completions.create(model=MODEL, prompt="w" * 40, max_tokens=8).usage
    with pytest.raises(openai.RateLimitError) as spent:
        a.completions.create(model=MODEL, prompt="w" * 40, max_tokens=8)
    assert spent.value.code == "insufficient_quota"
    assert spent.value.response.headers["x-should-retry"] == "false"
    assert rejected(stack) == 1


def test_no_max_tokens_under_a_token_limit_is_capped_at_the_reservation(
    stack_factory: StackFactory,
) -> None:
    stack = start(
        stack_factory,
        directory(tenant("a", ["m-deploy"], "key-a", {"tokensPerMinute": 1000})),
        default_max_tokens=3,
    )
    answer = client(stack, "key-a").completions.create(model=MODEL, prompt="count to a hundred")
    assert answer.usage is not None
    assert answer.usage.completion_tokens <= 3
    assert answer.choices[0].finish_reason == "length"


def test_concurrent_requests_are_bounded(stack_factory: StackFactory) -> None:
    stack = start(
        stack_factory, directory(tenant("a", ["m-deploy"], "key-a", {"concurrentRequests": 1}))
    )
    stack.faults(0, hang=True)
    body = json.dumps({"model": MODEL, "prompt": "x", "max_tokens": 2, "stream": True}).encode()
    request = urllib.request.Request(
        f"{stack.url}/completions",
        body,
        {"Content-Type": "application/json", "Authorization": "Bearer key-a"},
    )
    held = urllib.request.urlopen(request, timeout=30)
    try:
        with pytest.raises(openai.RateLimitError) as refused:
            client(stack, "key-a").completions.create(model=MODEL, prompt="hi", max_tokens=2)
        assert "in flight" in refused.value.message
    finally:
        held.close()
        stack.faults(0, hang=False)


def test_no_key_hash_or_prompt_in_the_log_or_metrics(
    stack_factory: StackFactory, caplog: pytest.LogCaptureFixture
) -> None:
    key, prompt = "sk-llmfleet-secret-key", "a private prompt nobody may read"
    stack = start(stack_factory, directory(tenant("a", ["m-deploy"], key)))
    with caplog.at_level(logging.DEBUG):
        client(stack, key).completions.create(model=MODEL, prompt=prompt, max_tokens=2)
        with pytest.raises(openai.AuthenticationError):
            client(stack, key + "x").completions.create(model=MODEL, prompt=prompt, max_tokens=2)
        page = http("GET", stack.url.removesuffix("/v1") + "/metrics").text
    assert 'tenant="ns/a"' in page
    for secret in (key, key_hash(key), key_hash(key).removeprefix("sha256:"), prompt):
        assert secret not in caplog.text
        assert secret not in page


def rejected(stack: Stack) -> float:
    from llmfleet_contract.exposition import parse

    page = parse(http("GET", stack.url.removesuffix("/v1") + "/metrics").text)
    return sum(
        series.value
        for series in page.series
        if series.name == "llmfleet_gateway_rejected_requests_total"
        and series.labels.get("reason") == "TenantLimit"
    )


def test_waiting_requests_wake_interactive_first_then_tenants_in_turn() -> None:
    async def order() -> list[str]:
        pool, key = Pool(), ("ns", "m-deploy")
        names = {}
        for name, rank, who in (
            ("batch", 1, "x"),
            ("a1", 0, "a"),
            ("a2", 0, "a"),
            ("a3", 0, "a"),
            ("b1", 0, "b"),
        ):
            names[pool.join(key, rank, who)] = name
        woken = []
        for _ in names:
            pool.pass_on(key)
            [ticket] = [t for t, w in pool.queues[key].items() if w.event.is_set()]
            woken.append(names[ticket])
            pool.leave(key, ticket)
        return woken

    assert asyncio.run(order()) == ["a1", "b1", "a2", "a3", "batch"]


def test_keys_are_found_by_hash_and_a_shared_key_belongs_to_no_one() -> None:
    a, b = tenant("a", ["m-deploy"], "same"), tenant("b", ["m-deploy"], "same")
    c = tenant("c", ["m-deploy"], "key-c")
    c[1]["stringData"]["broken"] = "not-a-hash"
    found = directory(a, b, c)
    assert found.authenticate("Bearer key-c").name == "c"
    for header in ("Bearer same", "Bearer nope", "key-c", None):
        with pytest.raises(ApiError) as refused:
            found.authenticate(header)
        assert refused.value.status == 401


def test_a_tenant_file_is_read_as_the_api_server_would(tmp_path: Path) -> None:
    obj, secret = tenant("a", ["m-deploy"], "key-a")
    path = tmp_path / "tenants.yaml"
    path.write_text(yaml.safe_dump_all([secret, obj]))
    assert load_file(path, "ns").authenticate("Bearer key-a").label == "ns/a"
    obj["spec"]["limits"] = {"requestsPerMinute": 0}
    path.write_text(yaml.safe_dump_all([secret, obj]))
    with pytest.raises(ValueError, match=r"spec\.limits\.requestsPerMinute"):
        load_file(path, "ns")
