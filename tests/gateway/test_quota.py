"""Tenant limits exact across two gateway replicas sharing a real Redis (``redis-server`` on
loopback, started here).

Cases: under load well above a tenant's requests- and tokens-per-minute, two replicas admit
together no more than each limit (counted by the answers the clients got, and the tokens the
engines reported, streams included), and not much less (what leases strand is bounded);
Redis stopped mid-window, both keep serving on their local shares (the gauge and ``/health``
say so) within the documented bound; Redis back, what they admitted meanwhile is charged
there, and the next window is exact again.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator

import openai
import pytest
import redis

from llmfleet_gateway.quota import KEY_PREFIX, LEASE_FRACTION
from tests.gateway.conftest import MODEL, Stack, http
from tests.gateway.test_tenants import NOON, client, directory, tenant, two_models
from tests.runtime.conftest import free_port, stop

StackFactory = Callable[..., Stack]
LIMIT = 40


class Redis:
    """A redis-server of the test's own, stopped and started again on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed: run `make tools`"
        flags = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), *flags], stdout=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=self.port).ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)

    def get(self, key: str) -> int:
        return int(redis.Redis(port=self.port).get(KEY_PREFIX + key) or 0)


@pytest.fixture
def shared() -> Iterator[Redis]:
    server = Redis()
    server.start()
    yield server
    server.stop()


def replicas(
    stack_factory: StackFactory, store: Redis, limits: dict[str, int], wall: list[float]
) -> list[Stack]:
    tenants = directory(tenant("a", ["m-deploy"], "key-a", limits))
    return [
        stack_factory(
            two_models(tenants=tenants, redis_url=store.url, limit_share=0.5),
            engines=1,
            wall=lambda: wall[0],
        )
        for _ in range(2)
    ]


def hammer(stacks: list[Stack], count: int, max_tokens: int) -> tuple[int, int]:
    """``count`` requests, alternating replicas, every other one streamed: (answered, tokens
    the engines reported)."""
    answered = tokens = 0
    for index in range(count):
        sdk = client(stacks[index % 2], "key-a")
        request = {"model": MODEL, "prompt": "w" * 40, "max_tokens": max_tokens}
        try:
            if index % 4 < 2:
                out = sdk.completions.create(**request)
                usage = out.usage
            else:
                chunks = sdk.completions.create(
                    **request, stream=True, stream_options={"include_usage": True}
                )
                usage = [chunk.usage for chunk in chunks][-1]
        except openai.RateLimitError:
            continue
        answered += 1
        tokens += usage.total_tokens if usage else 0
    return answered, tokens


def test_two_replicas_admit_no_more_than_the_limit(
    stack_factory: StackFactory, shared: Redis
) -> None:
    wall = [NOON]
    stacks = replicas(stack_factory, shared, {"requestsPerMinute": LIMIT}, wall)
    answered, _ = hammer(stacks, 3 * LIMIT, max_tokens=2)
    stranded = 2 * LIMIT * LEASE_FRACTION  # at most one unused lease per replica
    assert LIMIT - stranded <= answered <= LIMIT

    budget = 600
    wall[0] += 60  # a new minute: a tenant bound by tokens
    stacks = replicas(stack_factory, shared, {"tokensPerMinute": budget}, wall)
    answered, tokens = hammer(stacks, 60, max_tokens=8)
    assert tokens <= budget
    assert answered >= 10


def test_redis_down_serves_on_local_shares_then_resyncs(
    stack_factory: StackFactory, shared: Redis
) -> None:
    wall = [NOON]
    stacks = replicas(stack_factory, shared, {"requestsPerMinute": LIMIT}, wall)
    before, _ = hammer(stacks, 10, max_tokens=2)
    assert before == 10
    shared.stop()
    during, _ = hammer(stacks, 3 * LIMIT, max_tokens=2)
    # The bound: what was leased before, plus each replica's share of the limit.
    assert during + before <= LIMIT + 2 * 0.5 * LIMIT
    assert during > 0  # service went on
    for stack in stacks:
        base = stack.url.removesuffix("/v1")
        assert "quota store is unreachable" in http("GET", base + "/health").text
        assert "llmfleet_gateway_quota_store_up 0.0" in http("GET", base + "/metrics").text

    shared.start()
    key = f"ns/a:requests:{int(NOON // 60)}"
    deadline = time.monotonic() + 10
    while shared.get(key) < during - 2 * LIMIT * LEASE_FRACTION:  # a restart lost the rest
        assert time.monotonic() < deadline, "what was admitted meanwhile never reached Redis"
        time.sleep(0.1)
    for stack in stacks:
        while "unreachable" in http("GET", stack.url.removesuffix("/v1") + "/health").text:
            assert time.monotonic() < deadline, "the replica never saw Redis return"
            time.sleep(0.1)

    wall[0] += 60  # the next window is exact again
    answered, _ = hammer(stacks, 3 * LIMIT, max_tokens=2)
    assert LIMIT - 2 * LIMIT * LEASE_FRACTION <= answered <= LIMIT
