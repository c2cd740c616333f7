"""The OpenAI wire shapes llmfleet speaks, as vLLM writes them: requests, responses, stream
chunks and error bodies.

Who calls it: the engine simulator's server (:mod:`llmfleet_runtime.simulator.server`)
today, and the gateway next, so that what a client sees from either matches what a real
vLLM engine sends (field names, order, nulls, error bodies and codes; ``tests/parity``
checks the simulator's bodies against real vLLM). Pure functions and values: the HTTP
servers around it are the callers' (aiohttp), and so is tokenization, passed in as a
:class:`Tokenizer` (the simulator counts tokens its own way; a gateway estimates them).

Supported: ``/v1/completions`` with one prompt (a string, a one-string list, or token
ids) and ``/v1/chat/completions`` with string (or text-part) message contents; ``n=1``;
``stream`` with ``stream_options.include_usage``; ``max_tokens`` (or
``max_completion_tokens``), ``ignore_eos``. Other sampling fields are accepted and ignored.

Errors are :class:`ApiError`, answered with the body ``{"error": {"message", "type",
"param", "code"}}`` and the status in ``code``. A stream is ``data: {json}\\n\\n`` events
ended by :data:`DONE`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class ApiError(Exception):
    """An error answered with the OpenAI body ``{"error": {...}}`` and an HTTP status.

    A plain exception, not a frozen dataclass: ``contextlib`` assigns ``__traceback__`` and
    ``__context__`` to exceptions that leave a ``with`` block, and a frozen dataclass turns
    that assignment into ``FrozenInstanceError``, hiding the error it carried.
    """

    status: int
    """The HTTP status, also the body's ``code``."""
    message: str
    type: str
    """vLLM's error type: ``"BadRequestError"``, ``"NotFoundError"``, ..."""
    param: str | None
    """The request field at fault, if any."""
    code: str | None
    """OpenAI's error code (``model_not_found``, ``rate_limit_exceeded``); None: the status,
    as vLLM writes it."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(status, message, type, param, code)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def __str__(self) -> str:
        return f"{self.status} {self.type}: {self.message}"

    def body(self) -> dict[str, Any]:
        """The response body."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.status if self.code is None else self.code,
            }
        }


def dumps(body: Any) -> str:
    """A response body as the servers write it: compact JSON."""
    return json.dumps(body, separators=(",", ":"))


def decode_json(raw: bytes) -> Any:
    """Parse a request body; bad JSON becomes vLLM's 400 validation error."""
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        pos = getattr(exc, "pos", getattr(exc, "start", 0))
        detail = getattr(exc, "msg", str(exc))
        raise _validation("json_invalid", f"body.{pos}", "JSON decode error", detail) from None


def _validation(kind: str, loc: str, msg: str, error: str | None = None) -> ApiError:
    ctx = f", 'ctx': {{'error': {error!r}}}" if error else ""
    message = f"1 validation error:\n  {{'type': '{kind}', 'loc': '{loc}', 'msg': '{msg}'{ctx}}}"
    return ApiError(400, message, "Bad Request", loc)


@dataclass(frozen=True)
class Message:
    """One chat message: its role and its text (text parts joined)."""

    role: str
    content: str


@dataclass(frozen=True)
class Conversation:
    """The prompt of a chat completion: its messages, in order."""

    messages: tuple[Message, ...]


Prompt = str | tuple[int, ...] | Conversation
"""A completion's text or token ids, or a chat completion's messages."""


class Tokenizer(Protocol):
    """Splits a prompt into tokens, chat template included; their number is the prompt's
    length in tokens. The engine's own tokenizer, or an estimate."""

    def __call__(self, prompt: Prompt, /) -> Sequence[str]: ...


@dataclass(frozen=True)
class GenerationRequest:
    """A validated completions or chat body: what to generate and how to answer."""

    chat: bool
    model: str
    """The served name asked for (the first one when the body names none)."""
    prompt: Prompt
    prompt_pieces: Sequence[str]
    """The prompt as the :class:`Tokenizer` split it."""
    max_tokens: int
    """Output tokens allowed: as asked within the context left, or all the context left."""
    max_tokens_given: bool
    """Whether the body set ``max_tokens`` (else the model stops at its end of sequence)."""
    stream: bool
    include_usage: bool
    ignore_eos: bool


def parse_request(
    body: Any,
    *,
    chat: bool,
    served_names: Sequence[str],
    max_model_len: int,
    tokenize: Tokenizer,
) -> GenerationRequest:
    """Validate a completions (``chat=False``) or chat body; raise :class:`ApiError`.

    Checks run in a fixed order (the body, the model, the prompt, ``n``, the context
    length, ``max_tokens``): a body with several faults gets the first one's error.
    """
    if not isinstance(body, dict):
        raise _validation("model_attributes_type", "body", "Input should be a valid dictionary")
    model = body.get("model") or served_names[0]
    if model not in served_names:
        raise ApiError(
            404,
            f"The model `{model}` does not exist. Valid aliases: {', '.join(served_names)}.",
            "NotFoundError",
            "model",
        )
    prompt = _conversation(body) if chat else _prompt(body)
    pieces = tokenize(prompt)
    if not chat and not pieces:
        raise ApiError(
            400, "Prompt cannot be empty. (parameter=prompt)", "BadRequestError", "prompt"
        )
    if body.get("n", 1) not in (None, 1):
        raise ApiError(400, "Only n=1 is supported. (parameter=n)", "BadRequestError", "n")
    if len(pieces) >= max_model_len:
        raise ApiError(
            400,
            f"This model's maximum context length is {max_model_len} tokens. However, your "
            f"prompt contains at least {len(pieces)} input tokens, which exceeds this limit "
            "even without any output tokens. Please reduce the length of the input prompt. "
            f"(parameter=input_tokens, value={len(pieces)})",
            "BadRequestError",
            "input_tokens",
        )
    raw_max = body.get("max_completion_tokens") if chat else None
    if raw_max is None:
        raw_max = body.get("max_tokens")
    room = max_model_len - len(pieces)
    if raw_max is None:
        max_tokens, given = room, False
    else:
        if not isinstance(raw_max, int) or isinstance(raw_max, bool):
            raise _validation("int_type", "body.max_tokens", "Input should be a valid integer")
        if raw_max < 1:
            raise ApiError(
                400,
                f"max_tokens must be at least 1, got {raw_max}. "
                f"(parameter=max_tokens, value={raw_max})",
                "BadRequestError",
                "max_tokens",
            )
        max_tokens, given = min(raw_max, room), True
    options = body.get("stream_options") or {}
    return GenerationRequest(
        chat=chat,
        model=model,
        prompt=prompt,
        prompt_pieces=pieces,
        max_tokens=max_tokens,
        max_tokens_given=given,
        stream=bool(body.get("stream", False)),
        include_usage=bool(isinstance(options, dict) and options.get("include_usage")),
        ignore_eos=bool(body.get("ignore_eos", False)),
    )


def _prompt(body: dict[str, Any]) -> str | tuple[int, ...]:
    if "prompt" not in body:
        raise _validation("missing", "body.prompt", "Field required")
    prompt = body["prompt"]
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return tuple(prompt)
    raise ApiError(
        400,
        "One prompt is supported: a string or a list of token ids.",
        "BadRequestError",
        "prompt",
    )


def _conversation(body: dict[str, Any]) -> Conversation:
    messages = body.get("messages")
    if messages is None:
        raise _validation("missing", "body.messages", "Field required")
    if not isinstance(messages, list):
        raise _validation("list_type", "body.messages", "Input should be a valid list")
    out: list[Message] = []
    for message in messages:
        if not isinstance(message, dict) or "role" not in message:
            raise _validation("missing", "body.messages.role", "Field required")
        content = message.get("content") or ""
        if isinstance(content, list):
            texts = [p.get("text", "") for p in content if isinstance(p, dict)]
            if not all(isinstance(text, str) for text in texts):
                loc = "body.messages.content.text"
                raise _validation("string_type", loc, "Input should be a valid string")
            content = "".join(texts)
        out.append(Message(role=str(message["role"]), content=str(content)))
    return Conversation(tuple(out))


def usage(prompt_tokens: int, completion_tokens: int, *, details: bool) -> dict[str, Any]:
    """The ``usage`` object (full responses carry the two ``*_details`` nulls)."""
    out: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
    }
    if details:
        out["prompt_tokens_details"] = None
        out["completion_tokens_details"] = None
    return out


def completion_body(
    request_id: str, created: int, model: str, text: str, finish_reason: str,
    prompt_tokens: int, completion_tokens: int, fingerprint: str,
) -> dict[str, Any]:  # fmt: skip
    """A non-streamed ``text_completion`` response."""
    choice = {
        "index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason,
        "stop_reason": None, "token_ids": None, "prompt_logprobs": None,
        "prompt_token_ids": None, "routed_experts": None,
    }  # fmt: skip
    return {
        "id": request_id, "object": "text_completion", "created": created, "model": model,
        "choices": [choice], "service_tier": None, "system_fingerprint": fingerprint,
        "usage": usage(prompt_tokens, completion_tokens, details=True),
        "kv_transfer_params": None, "ec_transfer_params": None, "metrics": None,
    }  # fmt: skip


def chat_body(
    request_id: str, created: int, model: str, text: str, finish_reason: str,
    prompt_tokens: int, completion_tokens: int, fingerprint: str,
) -> dict[str, Any]:  # fmt: skip
    """A non-streamed ``chat.completion`` response."""
    message = {
        "role": "assistant", "content": text, "refusal": None, "annotations": None,
        "audio": None, "function_call": None, "reasoning": None,
    }  # fmt: skip
    choice = {
        "index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason,
        "stop_reason": None, "token_ids": None, "routed_experts": None,
    }  # fmt: skip
    return {
        "id": request_id, "object": "chat.completion", "created": created, "model": model,
        "choices": [choice], "service_tier": None, "system_fingerprint": fingerprint,
        "usage": usage(prompt_tokens, completion_tokens, details=True),
        "prompt_logprobs": None, "prompt_token_ids": None, "prompt_text": None,
        "kv_transfer_params": None, "ec_transfer_params": None, "metrics": None,
    }  # fmt: skip


def models_body(
    served_names: Sequence[str], root: str, created: int, max_model_len: int
) -> dict[str, Any]:
    """``GET /v1/models``."""
    permission = {
        "object": "model_permission", "created": created, "allow_create_engine": False,
        "allow_sampling": True, "allow_logprobs": True, "allow_search_indices": False,
        "allow_view": True, "allow_fine_tuning": False, "organization": "*", "group": None,
        "is_blocking": False,
    }  # fmt: skip
    data = [
        {
            "id": name, "object": "model", "created": created, "owned_by": "vllm",
            "root": root, "parent": None, "max_model_len": max_model_len,
            "permission": [{"id": f"modelperm-{_short_hash(name, created)}", **permission}],
        }
        for name in served_names
    ]  # fmt: skip
    return {"object": "list", "data": data}


def _short_hash(*parts: object) -> str:
    return hashlib.blake2b(repr(parts).encode(), digest_size=8).hexdigest()


DONE = b"data: [DONE]\n\n"
"""The event that ends every stream."""


def error_event(error: ApiError) -> bytes:
    """An error inside a stream (after its first byte): one event, then :data:`DONE`.

    vLLM writes this body with ``json.dumps``' default separators, unlike whole responses.
    """
    return ("data: " + json.dumps(error.body()) + "\n\n").encode()


class ChunkWriter:
    """Renders the events of one streamed completion or chat completion.

    The constant parts of a request's chunks are rendered once, so a token costs one
    ``json.dumps`` of its text: a simulated engine carries many streams on one core.
    """

    def __init__(
        self, *, chat: bool, request_id: str, created: int, model: str, fingerprint: str
    ) -> None:
        self.chat = chat
        head = json.dumps(
            {
                "id": request_id,
                "object": "chat.completion.chunk" if chat else "text_completion",
                "created": created,
                "model": model,
            },
            separators=(",", ":"),
        )[:-1]
        self._head = "data: " + head + ',"choices":'
        self._fingerprint = json.dumps(fingerprint)
        if chat:
            self._open = '[{"index":0,"delta":{"content":'
            self._mid = '},"logprobs":null,"finish_reason":null,"token_ids":null}]}\n\n'
        else:
            self._open = '[{"index":0,"text":'
            self._mid = (
                ',"logprobs":null,"finish_reason":null,"stop_reason":null,'
                '"prompt_token_ids":null,"token_ids":null}]}\n\n'
            )

    def first(self) -> bytes:
        """The chunk sent before any token (chat only: the assistant role)."""
        if not self.chat:
            return b""
        return (
            self._head + '[{"index":0,"delta":{"role":"assistant","content":""},'
            '"logprobs":null,"finish_reason":null}],"prompt_token_ids":null,"prompt_text":null}\n\n'
        ).encode()

    def token(self, text: str) -> bytes:
        """A chunk carrying one token's text."""
        return (self._head + self._open + json.dumps(text) + self._mid).encode()

    def last(self, text: str, finish_reason: str, *, usage_follows: bool = False) -> bytes:
        """The chunk of the last token, with its finish reason.

        It carries the fingerprint unless a usage chunk follows (which then carries it).
        """
        reason = json.dumps(finish_reason)
        fingerprint = "" if usage_follows else f',"system_fingerprint":{self._fingerprint}'
        if self.chat:
            tail = (
                f'}},"logprobs":null,"finish_reason":{reason},"stop_reason":null,'
                f'"token_ids":null}}]{fingerprint}}}\n\n'
            )
        else:
            tail = (
                f',"logprobs":null,"finish_reason":{reason},"stop_reason":null,'
                f'"prompt_token_ids":null,"token_ids":null}}]{fingerprint}}}\n\n'
            )
        return (self._head + self._open + json.dumps(text) + tail).encode()

    def usage(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        """The extra chunk of ``stream_options.include_usage``: no choices, the usage."""
        body = dumps(usage(prompt_tokens, completion_tokens, details=False))
        return (
            self._head + f'[],"usage":{body},"system_fingerprint":{self._fingerprint}}}\n\n'
        ).encode()
