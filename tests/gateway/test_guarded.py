"""Guardrails in the gateway's path, through the official ``openai`` client.

The engine here is a small recording server (:func:`recording_engine`), not the simulator:
these cases need an engine that writes personal data in its answers, split across stream
chunks, and a record of what reached it, which the simulator does not give.

Cases: ``pii`` redacts the prompt before the engine sees it, a whole answer, and a stream
whose e-mail address is split across chunks, and times each stage; a plugin that fails
closed answers 503 ``guardrail_failed`` and sends nothing (before), withholds the answer
(after) or ends the stream with an error event (chunk); failing open, it is passed by; a
plugin that refuses answers 400 ``content_policy_violation``; none of the text reaches the
log or ``/metrics``.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
from aiohttp import web

from llmfleet_gateway.guardrails import Failure, load
from tests.gateway.conftest import MODEL, Stack, http, settings
from tests.runtime.conftest import free_port

StackFactory = Callable[..., Stack]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "guardrails"
ANSWER = "Mail me at jane.doe@example.com today"
CHUNKS = ("Mail me at jane.", "doe@exam", "ple.com to", "day")
SECRET = "alice.smith@corp.example"


@pytest.fixture(autouse=True)
def _fixture_plugins() -> Iterator[None]:
    """The misbehaving plugins of ``tests/fixtures/guardrails``, found by their entry points."""
    sys.path.insert(0, str(FIXTURES))
    importlib.invalidate_caches()
    yield
    sys.path.remove(str(FIXTURES))
    importlib.invalidate_caches()


def recording_engine(seen: list[dict[str, Any]]) -> web.Application:
    """An engine answering every chat completion with :data:`ANSWER` (a stream in
    :data:`CHUNKS`), and keeping the bodies it got in ``seen``."""

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        seen.append(body)
        usage = {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}
        if not body.get("stream"):
            message = {"role": "assistant", "content": ANSWER}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            answer = {"id": "x", "object": "chat.completion", "created": 0, "model": MODEL}
            return web.json_response(answer | {"choices": [choice], "usage": usage})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        last = len(CHUNKS) - 1
        for n, text in enumerate(CHUNKS):
            finish = "stop" if n == last else None
            choice = {"index": 0, "delta": {"content": text}, "finish_reason": finish}
            chunk = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": MODEL}
            await response.write(b"data: " + orjson.dumps(chunk | {"choices": [choice]}) + b"\n\n")
        tail = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": MODEL}
        await response.write(b"data: " + orjson.dumps(tail | {"choices": [], "usage": usage}))
        await response.write(b"\n\ndata: [DONE]\n\n")
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return app


def start(
    stack_factory: StackFactory, *plugins: tuple[str, Failure], **changes: Any
) -> tuple[Stack, list[Any]]:
    """A gateway with ``plugins`` (and ``changes`` to its settings) in front of a recording
    engine; the bodies the engine got."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    gateway = settings(
        replicas={MODEL: (url,)}, guardrails=load(plugins), scrape_seconds=0, **changes
    )
    stack = stack_factory(gateway, engines=0)
    seen: list[dict[str, Any]] = []
    stack.run(lambda: stack._serve(recording_engine(seen), port))
    return stack, seen


def sdk(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url, api_key="none", max_retries=0, timeout=30)


def ask(stack: Stack, **changes: Any) -> Any:
    message = {"role": "user", "content": f"I am {SECRET}, call +44 20 7946 0958"}
    with sdk(stack) as client:
        return client.chat.completions.create(**({"model": MODEL, "messages": [message]} | changes))


def streamed(stack: Stack) -> str:
    with sdk(stack) as client:
        stream = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True
        )
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def sample(stack: Stack, name: str, **labels: str) -> float:
    assert stack.gateway is not None
    return stack.gateway.metrics.registry.get_sample_value(name, labels) or 0.0


def test_pii_is_redacted_both_ways_and_timed(
    stack_factory: StackFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    stack, seen = start(stack_factory, ("pii", Failure.CLOSED))
    answer = ask(stack)
    assert seen[0]["messages"][0]["content"] == "I am [EMAIL], call [PHONE]"
    assert answer.choices[0].message.content == "Mail me at [EMAIL] today"
    assert streamed(stack) == "Mail me at [EMAIL] today"
    for stage in ("before", "after", "chunk"):
        count = sample(
            stack, "llmfleet_gateway_guardrail_seconds_count", guardrail="pii", stage=stage
        )
        assert count >= 1, stage
    assert (
        sample(
            stack,
            "llmfleet_gateway_guardrail_outcomes_total",
            guardrail="pii",
            stage="before",
            outcome="changed",
        )
        == 1
    )
    metrics = http("GET", stack.url.removesuffix("/v1") + "/metrics").text
    for text in (SECRET, "jane.doe"):
        assert text not in caplog.text
        assert text not in metrics


def test_a_plugin_failing_closed_refuses_withholds_and_ends_the_stream(
    stack_factory: StackFactory, caplog: pytest.LogCaptureFixture
) -> None:
    stack, seen = start(stack_factory, ("failing", Failure.CLOSED))
    with pytest.raises(openai.APIStatusError) as failed:
        ask(stack)
    assert failed.value.status_code == 503
    assert failed.value.code == "guardrail_failed"
    assert "`failing`" in failed.value.message
    assert SECRET not in failed.value.message
    assert seen == []  # never sent
    assert SECRET not in caplog.text


def test_failing_open_is_passed_by(stack_factory: StackFactory) -> None:
    stack, seen = start(stack_factory, ("pii", Failure.CLOSED), ("failing", Failure.OPEN))
    assert ask(stack).choices[0].message.content == "Mail me at [EMAIL] today"
    assert seen[0]["messages"][0]["content"] == "I am [EMAIL], call [PHONE]"
    assert streamed(stack) == "Mail me at [EMAIL] today"
    for stage in ("before", "after", "chunk"):
        failed = sample(
            stack,
            "llmfleet_gateway_guardrail_outcomes_total",
            guardrail="failing",
            stage=stage,
            outcome="failed_open",
        )
        assert failed >= 1, stage


def test_answers_are_withheld_when_a_plugin_fails_closed_on_them(
    stack_factory: StackFactory,
) -> None:
    stack, seen = start(stack_factory, ("failing-answers", Failure.CLOSED))
    with pytest.raises(openai.APIStatusError) as withheld:
        ask(stack)
    assert withheld.value.status_code == 503
    assert withheld.value.code == "guardrail_failed"
    assert "withheld" in withheld.value.message
    assert len(seen) == 1
    with pytest.raises(openai.APIError) as ended:
        streamed(stack)
    assert "`failing-answers` failed; the rest of the answer is withheld" in ended.value.message


def test_a_refusing_plugin_answers_400(stack_factory: StackFactory) -> None:
    stack, seen = start(stack_factory, ("refuse-all", Failure.CLOSED))
    with pytest.raises(openai.BadRequestError) as refused:
        ask(stack)
    assert refused.value.code == "content_policy_violation"
    assert "refuses everything" in refused.value.message
    assert seen == []


def test_a_peers_request_is_not_checked_again(stack_factory: StackFactory) -> None:
    """A request a peer region forwards passed the guardrails where it entered (and its
    answer passes them there): this region does not run them a second time."""
    refusing = ("refuse-all", Failure.CLOSED)
    stack, _ = start(stack_factory, refusing, region="b", peer_key="shared")
    body = orjson.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
    chat = stack.url + "/chat/completions"
    forwarded = http("POST", chat, body, **{"x-llmfleet-hop": "a", "x-llmfleet-peer-key": "shared"})
    assert forwarded.status == 200
    assert forwarded.json()["choices"][0]["message"]["content"] == ANSWER  # as it was
    assert http("POST", chat, body).status == 400  # entering here: refused
