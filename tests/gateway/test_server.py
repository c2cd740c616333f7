"""The gateway against engine simulators on loopback, through the official ``openai`` client.

Cases: sync completions and chat, async streaming; a stream carries no usage chunk unless the
client asked for it, and the gateway meters it either way; ``/v1/models`` lists the models;
every answer has an ``x-request-id`` (the client's when it sent one); an unknown model is the
SDK's NotFoundError, a body that is not JSON a BadRequestError, and an engine's own 400 passes
through with its message; overload: beyond the replicas' in-flight bound requests wait, and
beyond the waiting room they get RateLimitError with ``retry-after``; a model with no replica
holds its request (counted in ``llmfleet_gateway_pending_requests``) and answers it once a
replica appears; a hold that runs out is a 503; a held stream receives SSE heartbeats; a
replica that refuses connections is retried on another before the first byte, once, and left
out while it backs off; the gateway's ``/metrics`` carries the pending prefill tokens per
replica with the contract's labels, and a stream takes back only its own; a slot freed by a
client that left goes to the waiting request at once, and waiting requests are served in
arrival order; when the only replica answers 503, the client gets that answer and its
``retry-after``; the access log has one JSON line per request and neither the prompt nor the
API key; a gateway that discovers the cluster is not ready before it has listed it (here: it
cannot, and stays unready).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import openai
import pytest
from aiohttp import web

from llmfleet_contract.exposition import parse
from llmfleet_contract.metrics import PENDING_PREFILL_TOKENS, PENDING_REQUESTS
from llmfleet_gateway.routing import RoutingSettings
from llmfleet_gateway.server import Cluster
from tests.gateway.conftest import KEY, MODEL, Stack, http, settings
from tests.runtime.conftest import free_port

StackFactory = Callable[..., Stack]
CHAT = [{"role": "user", "content": "hello there, how are you?"}]


def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url, api_key="none", max_retries=0, timeout=30)


def metric(stack: Stack, name: str, **labels: str) -> float | None:
    text = http("GET", stack.url.removesuffix("/v1") + "/metrics").text
    for series in parse(text).series:
        if series.name == name and all(series.labels.get(k) == v for k, v in labels.items()):
            return series.value
    return None


def open_stream(stack: Stack) -> Any:
    """A streamed completion left open (its engine hangs): close it to leave."""
    body = json.dumps({"model": MODEL, "prompt": "x", "max_tokens": 2, "stream": True}).encode()
    request = urllib.request.Request(
        f"{stack.url}/completions", body, {"Content-Type": "application/json"}
    )
    return urllib.request.urlopen(request, timeout=30)


def test_sync_completions_and_chat(stack_factory: StackFactory) -> None:
    stack = stack_factory()
    oa = client(stack)
    out = oa.completions.create(model=MODEL, prompt="hello there", max_tokens=5)
    assert out.usage is not None
    assert out.usage.completion_tokens == 5
    chat = oa.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=4)  # type: ignore[arg-type]
    assert chat.choices[0].message.role == "assistant"
    assert chat.usage is not None
    assert chat.usage.completion_tokens == 4
    assert [m.id for m in oa.models.list()] == [MODEL]


def test_streams_pass_through_and_are_metered(stack_factory: StackFactory) -> None:
    stack = stack_factory()

    async def run() -> tuple[list[openai.types.chat.ChatCompletionChunk], ...]:
        oa = openai.AsyncOpenAI(base_url=stack.url, api_key="none", max_retries=0)
        plain = await oa.chat.completions.create(
            model=MODEL,
            messages=CHAT,
            max_tokens=6,
            stream=True,  # type: ignore[arg-type]
        )
        without = [chunk async for chunk in plain]
        usage = await oa.chat.completions.create(
            model=MODEL,
            messages=CHAT,  # type: ignore[arg-type]
            max_tokens=6,
            stream=True,
            stream_options={"include_usage": True},
        )
        with_usage = [chunk async for chunk in usage]
        await oa.close()
        return without, with_usage

    started = time.monotonic()
    without, with_usage = asyncio.run(run())
    elapsed = time.monotonic() - started
    assert without[0].choices[0].delta.role == "assistant"
    assert without[-1].choices[0].finish_reason == "length"
    assert all(chunk.usage is None for chunk in without)
    assert with_usage[-1].choices == []
    assert with_usage[-1].usage is not None
    assert with_usage[-1].usage.completion_tokens == 6
    assert metric(stack, "llmfleet_gateway_tokens_total", model=MODEL, kind="completion") == 12
    # The seconds the two requests held the replica: what its GPU-seconds are split by.
    assert 0 < metric(stack, "llmfleet_gateway_busy_seconds_total", tenant="") <= elapsed


def test_request_ids_on_every_answer(stack_factory: StackFactory) -> None:
    stack = stack_factory()
    base = stack.url
    body = json.dumps({"model": MODEL, "prompt": "x", "max_tokens": 1}).encode()
    mine = http("POST", f"{base}/completions", body, **{"x-request-id": "abc-123"})
    assert mine.headers["x-request-id"] == "abc-123"
    for answer in (http("GET", f"{base}/models"), http("POST", f"{base}/completions", b"{")):
        assert len(answer.headers["x-request-id"]) == 32


def test_errors_arrive_as_the_sdks_exceptions(stack_factory: StackFactory) -> None:
    stack = stack_factory()
    oa = client(stack)
    with pytest.raises(openai.NotFoundError) as unknown:
        oa.completions.create(model="nope", prompt="x", max_tokens=1)
    assert unknown.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as engine:
        oa.completions.create(model=MODEL, prompt="x", max_tokens=0)
    assert "max_tokens" in engine.value.message
    raw = http("POST", f"{stack.url}/completions", b"not json")
    assert raw.status == 400
    assert raw.json()["error"]["type"] == "invalid_request_error"


def test_overload_waits_within_bounds_then_rate_limits(stack_factory: StackFactory) -> None:
    routing = RoutingSettings(max_in_flight=1)
    stack = stack_factory(settings(routing=routing, wait_limit=1, queue_seconds=30.0), engines=1)
    stack.faults(0, hang=True)
    oa = client(stack)
    started: list[threading.Thread] = []
    answers: list[str] = []

    def ask() -> None:
        out = oa.completions.create(model=MODEL, prompt="busy", max_tokens=2)
        answers.append(out.choices[0].text)

    for _ in range(2):  # the first takes the one slot, the second waits in the room
        thread = threading.Thread(target=ask)
        thread.start()
        started.append(thread)
    deadline = time.monotonic() + 10
    while metric(stack, PENDING_REQUESTS, llmdeployment="m-deploy") != 1:
        assert time.monotonic() < deadline, "the second request never waited"
        time.sleep(0.05)
    with pytest.raises(openai.RateLimitError) as refused:
        oa.completions.create(model=MODEL, prompt="one too many", max_tokens=2)
    assert refused.value.response.headers["retry-after"] == "30"
    assert refused.value.code == "rate_limit_exceeded"
    stack.faults(0, hang=False)
    for thread in started:
        thread.join(timeout=20)
    assert len(answers) == 2
    assert metric(stack, PENDING_REQUESTS, llmdeployment="m-deploy") == 0


def test_a_model_with_no_replica_holds_until_one_appears(stack_factory: StackFactory) -> None:
    stack = stack_factory(settings(replicas={MODEL: ()}), engines=1)
    assert stack.gateway is not None
    gateway, engine = stack.gateway, stack.engine_urls[0]
    oa = client(stack)
    answers: list[int] = []
    thread = threading.Thread(
        target=lambda: answers.append(
            oa.completions.create(
                model=MODEL, prompt="wake up", max_tokens=3
            ).usage.completion_tokens  # type: ignore[union-attr]
        )
    )
    thread.start()
    deadline = time.monotonic() + 10
    while (
        metric(stack, PENDING_REQUESTS, llmdeployment="m-deploy", llmdeployment_namespace="ns") != 1
    ):
        assert time.monotonic() < deadline, "the request was not held"
        time.sleep(0.05)

    async def scale_up() -> None:
        gateway.pool.set_replicas(KEY, [("engine-0", engine)])

    stack.run(scale_up)
    thread.join(timeout=20)
    assert answers == [3]


def test_a_hold_that_runs_out_is_a_503(stack_factory: StackFactory) -> None:
    stack = stack_factory(settings(replicas={MODEL: ()}, hold_seconds=0.3), engines=0)
    with pytest.raises(openai.InternalServerError) as expired:
        client(stack).completions.create(model=MODEL, prompt="x", max_tokens=1)
    assert expired.value.status_code == 503
    assert expired.value.code == "model_not_ready"


def test_a_held_stream_gets_heartbeats(stack_factory: StackFactory) -> None:
    stack = stack_factory(
        settings(replicas={MODEL: ()}, hold_seconds=0.9, heartbeat_seconds=0.2), engines=0
    )
    body = {"model": MODEL, "prompt": "x", "max_tokens": 1, "stream": True}
    response = http("POST", f"{stack.url}/completions", json.dumps(body).encode())
    text = response.text
    assert response.status == 200
    assert text.count(": waiting for a replica") >= 2
    assert '"code":"model_not_ready"' in text.replace(" ", "")
    assert text.endswith("data: [DONE]\n\n")


def test_a_refusing_replica_is_retried_on_another(stack_factory: StackFactory) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    stack = stack_factory(engines=1)
    assert stack.gateway is not None
    gateway = stack.gateway

    async def with_dead_replica() -> None:
        gateway.pool.set_replicas(KEY, [("dead", dead), ("live", stack.engine_urls[0])])

    stack.run(with_dead_replica)
    oa = client(stack)
    for _ in range(4):
        assert oa.completions.create(model=MODEL, prompt="x", max_tokens=1).choices
    # "dead" sorts first and is tried once; refused, it is left out while it backs off.
    assert metric(stack, "llmfleet_gateway_retries_total", model=MODEL) == 1


def test_pending_prefill_tokens_per_replica(stack_factory: StackFactory) -> None:
    stack = stack_factory(engines=1)
    stack.faults(0, hang=True)
    oa = client(stack)
    thread = threading.Thread(
        target=lambda: oa.completions.create(model=MODEL, prompt="y" * 400, max_tokens=1)
    )
    thread.start()
    replica = stack.engine_urls[0].removeprefix("http://")
    deadline = time.monotonic() + 10
    while (
        metric(stack, PENDING_PREFILL_TOKENS, replica=replica, llmdeployment_namespace="ns") != 100
    ):
        assert time.monotonic() < deadline, "no pending prefill tokens"
        time.sleep(0.05)
    stack.faults(0, hang=False)
    thread.join(timeout=20)
    assert metric(stack, PENDING_PREFILL_TOKENS, replica=replica) == 0


def test_access_log_has_one_json_line_without_prompt_or_key(
    stack_factory: StackFactory, caplog: pytest.LogCaptureFixture
) -> None:
    stack = stack_factory(engines=1)
    secret_prompt, key = "my secret prompt text", "sk-very-secret"
    oa = openai.OpenAI(base_url=stack.url, api_key=key, max_retries=0)
    with caplog.at_level(logging.INFO, logger="llmfleet.gateway.access"):
        oa.completions.create(model=MODEL, prompt=secret_prompt, max_tokens=2)
        deadline = time.monotonic() + 5
        while not caplog.records and time.monotonic() < deadline:
            time.sleep(0.01)
    [record] = [r for r in caplog.records if r.name == "llmfleet.gateway.access"]
    line = json.loads(record.getMessage())
    assert (line["model"], line["status"], line["completion_tokens"]) == (MODEL, 200, 2)
    assert len(line["request_id"]) == 32
    assert line["replica"] == stack.engine_urls[0].removeprefix("http://")
    assert secret_prompt not in record.getMessage()
    assert key not in caplog.text


def test_a_stream_beside_a_pending_request_leaves_its_tokens(stack_factory: StackFactory) -> None:
    stack = stack_factory(engines=1)
    assert stack.gateway is not None
    replica = stack.gateway.pool.get(MODEL, stack.engine_urls[0].removeprefix("http://"))
    replica.pending_prefill_tokens = 1000  # another request's, with no first token yet
    stream = client(stack).completions.create(
        model=MODEL, prompt="w" * 400, max_tokens=3, stream=True
    )
    assert list(stream)
    assert metric(stack, PENDING_PREFILL_TOKENS, replica=replica.name) == 1000


def test_a_freed_slot_goes_to_the_waiting_request_at_once(stack_factory: StackFactory) -> None:
    stack = stack_factory(settings(routing=RoutingSettings(max_in_flight=1)), engines=1)
    stack.faults(0, hang=True)
    first = open_stream(stack)
    second = threading.Thread(
        target=lambda: client(stack).completions.create(model=MODEL, prompt="y", max_tokens=2)
    )
    second.start()
    deadline = time.monotonic() + 10
    while metric(stack, PENDING_REQUESTS, llmdeployment="m-deploy") != 1:
        assert time.monotonic() < deadline, "the second request never waited"
        time.sleep(0.02)
    first.close()  # the client leaves: its slot is the waiting request's
    left = time.monotonic()
    while metric(stack, PENDING_REQUESTS, llmdeployment="m-deploy") != 0:
        assert time.monotonic() - left < 2, "the freed slot was not handed on"
        time.sleep(0.02)
    stack.faults(0, hang=False)
    second.join(timeout=20)


def test_the_only_replicas_503_reaches_the_client_as_it_was(stack_factory: StackFactory) -> None:
    """A stub engine that answers 503 with retry-after: the simulator has no such fault."""

    async def unavailable(request: web.Request) -> web.Response:
        body = {"error": {"message": "draining", "type": "ServiceUnavailable", "code": 503}}
        return web.json_response(body, status=503, headers={"retry-after": "7"})

    port = free_port()
    stub = web.Application()
    stub.router.add_post("/v1/completions", unavailable)
    stack = stack_factory(settings(replicas={MODEL: (f"http://127.0.0.1:{port}",)}), engines=0)

    async def serve_stub() -> None:
        await stack._serve(stub, port)

    stack.run(serve_stub)
    body = json.dumps({"model": MODEL, "prompt": "x", "max_tokens": 1}).encode()
    answer = http("POST", f"{stack.url}/completions", body)
    assert (answer.status, answer.headers["retry-after"]) == (503, "7")
    assert answer.json()["error"]["message"] == "draining"


def test_not_ready_until_discovery_lists_the_cluster(stack_factory: StackFactory) -> None:
    unreachable = Cluster(namespaces=("team",), kubeconfig="/nonexistent/kubeconfig")
    stack = stack_factory(settings(cluster=unreachable), engines=0)
    health = http("GET", stack.url.removesuffix("/v1") + "/health")
    assert health.status == 503


def test_waiting_requests_are_served_in_arrival_order(stack_factory: StackFactory) -> None:
    stack = stack_factory(settings(routing=RoutingSettings(max_in_flight=1)), engines=1)
    stack.faults(0, hang=True)
    first = open_stream(stack)
    done: list[str] = []

    def ask(name: str) -> None:
        client(stack).completions.create(model=MODEL, prompt=name, max_tokens=2)
        done.append(name)

    threads = []
    for waiting, name in enumerate(("second", "third"), start=1):
        thread = threading.Thread(target=ask, args=(name,))
        thread.start()
        threads.append(thread)
        deadline = time.monotonic() + 10
        while metric(stack, PENDING_REQUESTS, llmdeployment="m-deploy") != waiting:
            assert time.monotonic() < deadline, f"{name} never waited"
            time.sleep(0.02)
    first.close()  # its slot goes to the oldest waiting request
    time.sleep(0.3)
    stack.faults(0, hang=False)
    for thread in threads:
        thread.join(timeout=20)
    assert done == ["second", "third"]
