"""OpenAI-compatible request parsing and response bodies, shaped like vLLM 0.32's.

Who calls it: :mod:`.server`. Pure functions of the request body and the server's
settings; no I/O. The shapes (field names, order, nulls, error envelopes and codes) are
those real vLLM returns, checked by ``tests/parity``.

Supported: ``/v1/completions`` with one prompt (a string, a one-string list, or token
ids) and ``/v1/chat/completions`` with string (or text-part) message contents; ``n=1``;
``stream`` with ``stream_options.include_usage``; ``max_tokens`` (or
``max_completion_tokens``), ``ignore_eos``. Other sampling fields are accepted and ignored.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from .tokens import tokenize


@dataclass(frozen=True)
class ApiError(Exception):
    """An error answered with vLLM's envelope ``{"error": {...}}``."""

    status: int
    message: str
    type: str
    param: str | None = None

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.status,
            }
        }


@dataclass(frozen=True)
class Generation:
    """A validated request: what the engine must produce and how to answer."""

    chat: bool
    model: str
    prompt_pieces: list[str]
    max_tokens: int
    max_tokens_given: bool
    stream: bool
    include_usage: bool
    ignore_eos: bool


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


def parse(
    body: Any, *, chat: bool, served_names: tuple[str, ...], max_model_len: int
) -> Generation:
    """Validate a completions (``chat=False``) or chat body; raise :class:`ApiError`."""
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
    pieces = _chat_pieces(body) if chat else _prompt_pieces(body)
    n = body.get("n", 1)
    if n not in (None, 1):
        raise ApiError(
            400, "The simulator supports n=1 only. (parameter=n)", "BadRequestError", "n"
        )
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
    return Generation(
        chat=chat,
        model=model,
        prompt_pieces=pieces,
        max_tokens=max_tokens,
        max_tokens_given=given,
        stream=bool(body.get("stream", False)),
        include_usage=bool(isinstance(options, dict) and options.get("include_usage")),
        ignore_eos=bool(body.get("ignore_eos", False)),
    )


def _prompt_pieces(body: dict[str, Any]) -> list[str]:
    if "prompt" not in body:
        raise _validation("missing", "body.prompt", "Field required")
    prompt = body["prompt"]
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, str):
        pieces = tokenize(prompt)
    elif isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        pieces = [str(t) for t in prompt]
    else:
        raise ApiError(
            400,
            "The simulator takes one prompt: a string or a list of token ids.",
            "BadRequestError",
            "prompt",
        )
    if not pieces:
        raise ApiError(
            400, "Prompt cannot be empty. (parameter=prompt)", "BadRequestError", "prompt"
        )
    return pieces


def _chat_pieces(body: dict[str, Any]) -> list[str]:
    messages = body.get("messages")
    if messages is None:
        raise _validation("missing", "body.messages", "Field required")
    if not isinstance(messages, list):
        raise _validation("list_type", "body.messages", "Input should be a valid list")
    pieces: list[str] = ["<s>"]
    for message in messages:
        if not isinstance(message, dict) or "role" not in message:
            raise _validation("missing", "body.messages.role", "Field required")
        content = message.get("content") or ""
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        pieces += [f"<|{message['role']}|>", "\n", *tokenize(str(content)), "</s>", "\n"]
    pieces += ["<|assistant|>", "\n"]
    return pieces


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
    served_names: tuple[str, ...], root: str, created: int, max_model_len: int
) -> dict[str, Any]:
    """``GET /v1/models``."""
    return {
        "object": "list",
        "data": [
            {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": "vllm",
                "root": root,
                "parent": None,
                "max_model_len": max_model_len,
                "permission": [
                    {
                        "id": f"modelperm-{_short_hash(name, created)}",
                        "object": "model_permission",
                        "created": created,
                        "allow_create_engine": False,
                        "allow_sampling": True,
                        "allow_logprobs": True,
                        "allow_search_indices": False,
                        "allow_view": True,
                        "allow_fine_tuning": False,
                        "organization": "*",
                        "group": None,
                        "is_blocking": False,
                    }
                ],
            }
            for name in served_names
        ],
    }


def _short_hash(*parts: object) -> str:
    return hashlib.blake2b(repr(parts).encode(), digest_size=8).hexdigest()
