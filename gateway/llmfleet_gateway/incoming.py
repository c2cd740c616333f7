"""What the gateway reads of a client's request: model, stream, the prompt's text and size.

Who calls it: :mod:`.server`, once per request, before routing. The gateway validates only
what it needs (a JSON object naming a model); the engine validates the rest and its error
reaches the client as it wrote it. The prompt's tokens are estimated from its characters (a
tokenizer would cost milliseconds per request; the engines' own usage counts settle it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from llmfleet_contract.openai import ApiError

CHARS_PER_TOKEN = 4.0
"""A rough English average; the estimate only orders replicas and sizes pending work."""


def bad_request(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, "invalid_request_error", param)


@dataclass(frozen=True)
class ClientRequest:
    """One parsed request."""

    body: dict[str, Any]
    model: str
    stream: bool
    wants_usage: bool
    """The client asked for the usage chunk (``stream_options.include_usage``)."""
    prompt: str
    """The prompt's text (a chat's roles and contents joined): what prefix affinity hashes."""
    prompt_tokens: int
    """Estimated from the prompt's characters."""

    def upstream_body(self, raw: bytes) -> bytes:
        """The body to send the engine: a stream always asks for the usage chunk, so the
        gateway can meter it (and drops it again for a client that did not ask)."""
        if not self.stream or self.wants_usage:
            return raw
        options = dict(self.body.get("stream_options") or {})
        options["include_usage"] = True
        return orjson.dumps({**self.body, "stream_options": options})


def parse(raw: bytes, *, chat: bool) -> ClientRequest:
    """Read ``raw``; :class:`ApiError` (400) when it is not a JSON object naming a model."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise bad_request("The body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise bad_request("The body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("you must provide a model parameter", "model")
    options = body.get("stream_options")
    prompt = _chat_text(body.get("messages")) if chat else _prompt_text(body.get("prompt"))
    return ClientRequest(
        body=body,
        model=model,
        stream=body.get("stream") is True,
        wants_usage=isinstance(options, dict) and options.get("include_usage") is True,
        prompt=prompt,
        prompt_tokens=max(1, round(len(prompt) / CHARS_PER_TOKEN)),
    )


def _chat_text(messages: Any) -> str:
    if not isinstance(messages, list):
        return ""
    parts = []
    for message in messages:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(
                str(part.get("text", "")) for part in content if isinstance(part, dict)
            )
        parts.append(f"{message.get('role', '')}\n{content or ''}")
    return "\n".join(parts)


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return "".join(prompt)
    if isinstance(prompt, list):  # token ids: about one token each
        return " " * round(len(prompt) * CHARS_PER_TOKEN)
    return ""
