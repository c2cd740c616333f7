"""The response cache: a tenant's repeated deterministic request answered without an engine.

Cases, through the official ``openai`` client: a repeat of a deterministic request is a hit,
with the same answer, no engine tokens and the tokens it saved counted; a stream replays as the
same SSE chunks; another tenant's identical request, a tenant that did not opt in and a
request that may vary are never answered from it; an expired answer is asked again. The store
itself: keys ignore key order and ``user`` and nothing else, expiry, the memory bound.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llmfleet_gateway.responses import Answer, ResponseCache, key_of
from llmfleet_gateway.tenants import build
from tests.gateway.conftest import MODEL, Stack, sdk, settings
from tests.gateway.test_tenants import tenant

StackFactory = Callable[..., Stack]
ASK: dict[str, Any] = {"model": MODEL, "prompt": "hello there", "max_tokens": 4, "temperature": 0}


def cached_tenant(name: str, key: str, ttl: int | None = 60) -> Any:
    obj, secret = tenant(name, ["m-deploy"], key)
    if ttl is not None:
        obj["spec"]["responseCache"] = {"ttlSeconds": ttl}
    return obj, secret


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def start(stack_factory: StackFactory) -> tuple[Stack, Clock]:
    tenants = [cached_tenant("a", "key-a"), cached_tenant("b", "key-b")]
    tenants.append(cached_tenant("plain", "key-p", ttl=None))
    directory = build([t for t, _ in tenants], [s for _, s in tenants])
    stack = stack_factory(settings(tenants=directory), engines=1)
    clock = Clock()
    assert stack.gateway is not None
    stack.gateway.responses.clock = clock
    return stack, clock


def ask(stack: Stack, key: str, **changes: Any) -> tuple[str | None, Any]:
    raw = sdk(stack, key).completions.with_raw_response.create(**(ASK | changes))
    return raw.headers.get("x-llmfleet-cache"), raw.parse()


def sample(stack: Stack, name: str, **labels: str) -> float:
    assert stack.gateway is not None
    return stack.gateway.metrics.registry.get_sample_value(name, labels) or 0.0


def engine_tokens(stack: Stack, tenant: str) -> float:
    return sample(
        stack, "llmfleet_gateway_tokens_total", model=MODEL, kind="completion", tenant=tenant
    )


def test_a_repeat_is_answered_from_the_cache_and_saves_its_tokens(
    stack_factory: StackFactory,
) -> None:
    stack, _ = start(stack_factory)
    said, first = ask(stack, "key-a")
    assert said == "miss"
    spent = engine_tokens(stack, "ns/a")
    assert spent == first.usage.completion_tokens > 0
    said, again = ask(stack, "key-a", user="someone-else")  # `user` does not change the work
    assert said == "hit"
    assert again.model_dump() == first.model_dump()
    assert engine_tokens(stack, "ns/a") == spent  # no engine did it again
    saved = sample(
        stack,
        "llmfleet_gateway_response_cache_saved_tokens_total",
        model=MODEL,
        kind="completion",
        tenant="ns/a",
    )
    assert saved == first.usage.completion_tokens
    lookups = "llmfleet_gateway_response_cache_lookups_total"
    assert sample(stack, lookups, model=MODEL, result="hit", tenant="ns/a") == 1
    assert sample(stack, lookups, model=MODEL, result="miss", tenant="ns/a") == 1
    assert sample(stack, "llmfleet_gateway_response_cache_entries") == 1
    assert ask(stack, "key-a", max_tokens=5)[0] == "miss"  # another request


def test_a_cached_stream_replays_as_the_same_events(stack_factory: StackFactory) -> None:
    stack, _ = start(stack_factory)

    def chunks() -> tuple[str | None, list[dict[str, Any]]]:
        with sdk(stack, "key-a").completions.with_streaming_response.create(
            **ASK, stream=True
        ) as response:
            return response.headers.get("x-llmfleet-cache"), [
                chunk.model_dump() for chunk in response.parse()
            ]

    said, first = chunks()
    assert said == "miss"
    assert len(first) > 1
    said, again = chunks()
    assert said == "hit"
    assert again == first


def test_it_is_never_shared_and_never_used_for_what_may_vary(
    stack_factory: StackFactory,
) -> None:
    stack, _ = start(stack_factory)
    ask(stack, "key-a")
    assert ask(stack, "key-b")[0] == "miss"  # the same request, another tenant
    ask(stack, "key-p")
    assert ask(stack, "key-p")[0] is None  # not opted in
    assert ask(stack, "key-a", temperature=0.8)[0] is None  # may vary
    assert ask(stack, "key-a", temperature=0.8, seed=7)[0] == "miss"  # a seed fixes it
    assert ask(stack, "key-a", temperature=0.8, seed=7)[0] == "hit"


def test_an_expired_answer_is_asked_again(stack_factory: StackFactory) -> None:
    stack, clock = start(stack_factory)
    ask(stack, "key-a")
    clock.now += 59
    assert ask(stack, "key-a")[0] == "hit"
    clock.now += 2
    assert ask(stack, "key-a")[0] == "miss"


def test_keys_ignore_order_and_user_only() -> None:
    base = {"model": "m", "prompt": "p", "temperature": 0, "max_tokens": 3}
    key = key_of("ns/a", "/v1/completions", base)
    assert key is not None
    reordered = dict(reversed(list(base.items()))) | {"user": "u"}
    assert key_of("ns/a", "/v1/completions", reordered) == key
    assert key_of("ns/b", "/v1/completions", base) != key
    assert key_of("ns/a", "/v1/chat/completions", base) != key
    assert key_of("ns/a", "/v1/completions", base | {"stream": True}) != key
    assert key_of("ns/a", "/v1/completions", base | {"max_tokens": 4}) != key
    assert key_of("ns/a", "/v1/completions", base | {"temperature": 0.1}) is None
    assert key_of("ns/a", "/v1/completions", {"model": "m", "prompt": "p"}) is None
    assert key_of("ns/a", "/v1/completions", base | {"seed": True}) is not None  # temperature 0


def test_the_store_keeps_within_its_bound_least_recently_used_out() -> None:
    clock = Clock()
    cache = ResponseCache(16 * 1024, clock)

    def answer(size: int) -> Answer:
        return Answer(b"x" * size, "application/json", "m", 1, 1)

    assert not cache.put(b"huge", answer(cache.largest + 1), 60)  # larger than a sixteenth
    for n in range(18):  # 17 fit
        assert cache.put(bytes([n]), answer(700), 60)
        if n == 1:
            assert cache.get(bytes([0])) is not None  # used: the second is now the oldest
    assert cache.bytes <= cache.max_bytes
    assert cache.get(bytes([0])) is not None
    assert cache.get(bytes([1])) is None
    assert cache.get(bytes([2])) is not None
    assert cache.get(bytes([17])) is not None
    cache.put(b"short", answer(10), 1)
    clock.now += 2
    assert cache.get(b"short") is None
    assert cache.bytes == sum(700 + 256 for _ in range(len(cache)))
