"""The OpenAI wire shapes the engine simulator and the gateway share.

Cases:
* request validation, one table: good completions and chat bodies and what they parse to
  (default model, prompt forms, ``max_tokens`` capped by the context left,
  ``max_completion_tokens`` first, stream options); bad bodies and the exact error body each
  gets, including which fault wins when a body has several;
* bad JSON and bytes that are not UTF-8;
* the error body: key order, ``code`` equal to the status, compact JSON;
* SSE framing: every event of a streamed completion or chat is ``data: {json}\\n\\n``, the
  role chunk, token chunks, the finish reason, the fingerprint and the usage chunk sit where
  vLLM puts them, and ``data: [DONE]`` ends the stream; an in-stream error event;
* ``ApiError`` raised inside a ``@contextmanager`` block and inside ``ExitStack`` (an entered
  context manager, and an exit callback raising while another error is pending) reaches the
  caller as itself, with its status and message.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from llmfleet_contract.openai import (
    DONE,
    ApiError,
    ChunkWriter,
    Conversation,
    GenerationRequest,
    Message,
    Prompt,
    decode_json,
    dumps,
    error_event,
    parse_request,
)

SERVED = ("tiny", "alias")
MAX_MODEL_LEN = 16


def words(prompt: Prompt) -> Sequence[str]:
    """A test tokenizer: one token per word, per id, or per word of each message plus two."""
    if isinstance(prompt, str):
        return prompt.split()
    if isinstance(prompt, Conversation):
        return [t for m in prompt.messages for t in [m.role, *m.content.split(), "</s>"]]
    return [str(t) for t in prompt]


def parse(body: Any, chat: bool = False) -> GenerationRequest:
    return parse_request(
        body, chat=chat, served_names=SERVED, max_model_len=MAX_MODEL_LEN, tokenize=words
    )


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def validation(kind: str, loc: str, msg: str) -> dict[str, Any]:
    message = f"1 validation error:\n  {{'type': '{kind}', 'loc': '{loc}', 'msg': '{msg}'}}"
    return {"error": {"message": message, "type": "Bad Request", "param": loc, "code": 400}}


def bad(message: str, param: str, status: int = 400, kind: str = "BadRequestError") -> Any:
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


TOO_LONG = (
    "This model's maximum context length is 16 tokens. However, your prompt contains at "
    "least {n} input tokens, which exceeds this limit even without any output tokens. "
    "Please reduce the length of the input prompt. (parameter=input_tokens, value={n})"
)
ONE_PROMPT = "One prompt is supported: a string or a list of token ids."
EMPTY = bad("Prompt cannot be empty. (parameter=prompt)", "prompt")
N_ONE = bad("Only n=1 is supported. (parameter=n)", "n")
NOT_INT = validation("int_type", "body.max_tokens", "Input should be a valid integer")
AT_LEAST_1 = bad(
    "max_tokens must be at least 1, got 0. (parameter=max_tokens, value=0)", "max_tokens"
)
UNKNOWN = bad(
    "The model `nope` does not exist. Valid aliases: tiny, alias.", "model", 404, "NotFoundError"
)
LONG = " ".join(["w"] * MAX_MODEL_LEN)

GOOD: list[tuple[str, bool, dict[str, Any], dict[str, Any]]] = [
    (
        "text, no model, no max_tokens: the first name and all the context left",
        False,
        {"prompt": "a b c"},
        {"model": "tiny", "prompt": "a b c", "max_tokens": 13, "max_tokens_given": False},
    ),
    (
        "a one-string list, an alias, streamed with usage",
        False,
        {
            "model": "alias",
            "prompt": ["a b"],
            "max_tokens": 4,
            "stream": True,
            "stream_options": {"include_usage": True},
            "ignore_eos": True,
        },
        {
            "model": "alias",
            "prompt": "a b",
            "max_tokens": 4,
            "max_tokens_given": True,
            "stream": True,
            "include_usage": True,
            "ignore_eos": True,
        },
    ),
    (
        "token ids; max_tokens above the context left is capped",
        False,
        {"prompt": [7, 8, 9], "max_tokens": 100, "n": None, "temperature": 0.3},
        {"prompt": (7, 8, 9), "prompt_pieces": ["7", "8", "9"], "max_tokens": 13},
    ),
    (
        "stream_options that is not an object: no usage",
        False,
        {"prompt": "a", "stream": True, "stream_options": "yes"},
        {"stream": True, "include_usage": False},
    ),
    (
        "chat: text parts joined, a null content, a role that is not a string",
        True,
        {
            "messages": [
                user([{"type": "text", "text": "a "}, {"text": "b"}, "skip"]),
                {"role": 7, "content": None},
            ],
            "max_tokens": 3,
        },
        {
            "prompt": Conversation((Message("user", "a b"), Message("7", ""))),
            "prompt_pieces": ["user", "a", "b", "</s>", "7", "</s>"],
            "max_tokens": 3,
        },
    ),
    (
        "chat: max_completion_tokens wins over max_tokens",
        True,
        {"messages": [user("hi")], "max_completion_tokens": 2, "max_tokens": 9},
        {"chat": True, "max_tokens": 2, "max_tokens_given": True},
    ),
    (
        "chat: an empty message list",
        True,
        {"messages": [], "max_completion_tokens": None, "max_tokens": 5},
        {"prompt": Conversation(()), "prompt_pieces": [], "max_tokens": 5},
    ),
]

BAD: list[tuple[str, bool, Any, dict[str, Any]]] = [
    ("not an object", False, [1, 2],
     validation("model_attributes_type", "body", "Input should be a valid dictionary")),
    ("unknown model", False, {"model": "nope", "prompt": "x"}, UNKNOWN),
    ("unknown model beats a missing prompt", True, {"model": "nope"}, UNKNOWN),
    ("no prompt", False, {"model": "tiny"}, validation("missing", "body.prompt", "Field required")),
    ("prompt is a number", False, {"prompt": 5}, bad(ONE_PROMPT, "prompt")),
    ("two prompts", False, {"prompt": ["a", "b"]}, bad(ONE_PROMPT, "prompt")),
    ("no token ids", False, {"prompt": []}, bad(ONE_PROMPT, "prompt")),
    ("ids mixed with text", False, {"prompt": [1, "b"]}, bad(ONE_PROMPT, "prompt")),
    ("empty prompt", False, {"prompt": ""}, EMPTY),
    ("empty prompt beats n", False, {"prompt": " ", "n": 2}, EMPTY),
    ("n above 1", False, {"prompt": "x", "n": 2}, N_ONE),
    ("n beats the context length", False, {"prompt": LONG, "n": 2}, N_ONE),
    ("prompt fills the context", False, {"prompt": LONG},
     bad(TOO_LONG.format(n=16), "input_tokens")),
    ("the context length beats max_tokens", False, {"prompt": LONG, "max_tokens": 0},
     bad(TOO_LONG.format(n=16), "input_tokens")),
    ("max_tokens a string", False, {"prompt": "x", "max_tokens": "5"}, NOT_INT),
    ("max_tokens a bool", False, {"prompt": "x", "max_tokens": True}, NOT_INT),
    ("max_tokens a float", False, {"prompt": "x", "max_tokens": 2.0}, NOT_INT),
    ("max_tokens 0", False, {"prompt": "x", "max_tokens": 0}, AT_LEAST_1),
    ("chat: no messages", True, {"model": "tiny"},
     validation("missing", "body.messages", "Field required")),
    ("chat: messages not a list", True, {"messages": "hi"},
     validation("list_type", "body.messages", "Input should be a valid list")),
    ("chat: a message without a role", True, {"messages": [user("a"), {"content": "b"}], "n": 2},
     validation("missing", "body.messages.role", "Field required")),
    ("chat: a text part not a string", True,
     {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
     validation("string_type", "body.messages.content.text", "Input should be a valid string")),
    ("chat: a message not an object", True, {"messages": ["hi"]},
     validation("missing", "body.messages.role", "Field required")),
    ("chat: max_completion_tokens 0", True, {"messages": [user("x")], "max_completion_tokens": 0},
     AT_LEAST_1),
    ("chat: over-long messages", True, {"messages": [user(LONG)]},
     bad(TOO_LONG.format(n=18), "input_tokens")),
]  # fmt: skip


@pytest.mark.parametrize(("case", "chat", "body", "fields"), GOOD, ids=[c[0] for c in GOOD])
def test_good_requests(case: str, chat: bool, body: dict[str, Any], fields: dict[str, Any]) -> None:
    request = parse(body, chat)
    got = {name: getattr(request, name) for name in fields}
    got = {k: list(v) if k == "prompt_pieces" else v for k, v in got.items()}
    assert got == fields, case


@pytest.mark.parametrize(("case", "chat", "body", "error"), BAD, ids=[c[0] for c in BAD])
def test_bad_requests(case: str, chat: bool, body: Any, error: dict[str, Any]) -> None:
    with pytest.raises(ApiError) as caught:
        parse(body, chat)
    assert caught.value.body() == error, case
    assert caught.value.status == error["error"]["code"], case


@pytest.mark.parametrize(
    ("raw", "loc", "detail"),
    [
        (b'{"model": "tiny",', "body.17", "Expecting property name enclosed in double quotes"),
        (b"", "body.0", "Expecting value"),
        (b"\xff\xfe", "body.0", "Expecting value"),
    ],
)
def test_bad_json(raw: bytes, loc: str, detail: str) -> None:
    with pytest.raises(ApiError) as caught:
        decode_json(raw)
    message = (
        f"1 validation error:\n  {{'type': 'json_invalid', 'loc': '{loc}', "
        f"'msg': 'JSON decode error', 'ctx': {{'error': '{detail}'}}}}"
    )
    assert caught.value.body() == bad(message, loc, kind="Bad Request")
    assert decode_json(b'{"prompt": "x"}') == {"prompt": "x"}


def test_error_body() -> None:
    error = ApiError(404, "The model `x` does not exist.", "NotFoundError", "model")
    assert (error.status, error.message, error.type, error.param) == (
        404, "The model `x` does not exist.", "NotFoundError", "model",
    )  # fmt: skip
    assert str(error) == "404 NotFoundError: The model `x` does not exist."
    assert dumps(ApiError(503, "Shutting down.", "ServiceUnavailableError").body()) == (
        '{"error":{"message":"Shutting down.","type":"ServiceUnavailableError",'
        '"param":null,"code":503}}'
    )


def events(stream: bytes) -> list[Any]:
    """Split a stream into its events, checking each one's framing; ``[DONE]`` stays bytes."""
    assert stream.endswith(b"\n\n")
    out: list[Any] = []
    for event in stream[:-2].split(b"\n\n"):
        assert event.startswith(b"data: "), event
        assert b"\n" not in event, event
        data = event.removeprefix(b"data: ")
        out.append(data if data == b"[DONE]" else json.loads(data))
    return out


@pytest.mark.parametrize("chat", [False, True], ids=["completions", "chat"])
@pytest.mark.parametrize("include_usage", [False, True], ids=["plain", "usage"])
def test_stream_framing(chat: bool, include_usage: bool) -> None:
    writer = ChunkWriter(chat=chat, request_id="r-1", created=5, model="tiny", fingerprint="fp")
    stream = b"".join(
        [
            writer.first(),
            writer.token(' "quoted"\n'),
            writer.last(" end", "length", usage_follows=include_usage),
            writer.usage(3, 2) if include_usage else b"",
            DONE,
        ]
    )
    chunks = events(stream)
    assert chunks[-1] == b"[DONE]"
    chunks = chunks[:-1]
    if chat:
        assert chunks.pop(0)["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    head = {"id": "r-1", "object": "chat.completion.chunk" if chat else "text_completion"}
    for chunk in chunks:
        assert {k: chunk[k] for k in head} == head
        assert (chunk["created"], chunk["model"]) == (5, "tiny")
    texts = [c["choices"][0]["delta"]["content"] if chat else c["choices"][0]["text"]
             for c in chunks[:2]]  # fmt: skip
    assert texts == [' "quoted"\n', " end"]
    assert [c["choices"][0]["finish_reason"] for c in chunks[:2]] == [None, "length"]
    assert "system_fingerprint" not in chunks[0]
    if include_usage:
        assert "system_fingerprint" not in chunks[1]
        usage = {"prompt_tokens": 3, "total_tokens": 5, "completion_tokens": 2}
        assert chunks[2]["choices"] == []
        assert chunks[2]["usage"] == usage
        assert chunks[2]["system_fingerprint"] == "fp"
    else:
        assert chunks[1]["system_fingerprint"] == "fp"
        assert len(chunks) == 2


def test_error_event() -> None:
    event = error_event(ApiError(500, "Engine died.", "InternalServerError"))
    assert event == (
        b'data: {"error": {"message": "Engine died.", "type": "InternalServerError", '
        b'"param": null, "code": 500}}\n\n'
    )
    assert events(event + DONE)[0]["error"]["code"] == 500


@contextlib.contextmanager
def span() -> Iterator[None]:
    """A generator-based context manager, like a tracing span or a lock helper."""
    yield


def unknown_model() -> None:
    raise ApiError(404, "no such model", "NotFoundError", "model")


def in_a_contextmanager() -> None:
    with span():
        unknown_model()


def in_an_exit_stack() -> None:
    with contextlib.ExitStack() as stack:
        stack.enter_context(span())
        unknown_model()


def in_an_exit_callback() -> None:
    """``ExitStack`` chains the callback's error to the pending one (sets ``__context__``)."""
    with contextlib.ExitStack() as stack:
        stack.callback(unknown_model)
        raise ValueError("the first failure")


@pytest.mark.parametrize("handler", [in_a_contextmanager, in_an_exit_stack, in_an_exit_callback])
def test_api_error_crosses_context_managers(handler: Callable[[], None]) -> None:
    with pytest.raises(ApiError) as caught:
        handler()
    assert (caught.value.status, caught.value.message) == (404, "no such model")
    assert caught.value.body()["error"]["code"] == 404
