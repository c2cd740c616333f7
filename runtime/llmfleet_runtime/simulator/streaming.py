"""Server-sent-event chunks of a streamed completion, byte-for-byte in vLLM 0.32's shape.

Who calls it: :mod:`.server`, once per streamed request. Each chunk is one
``data: {json}\\n\\n`` event; the stream ends with ``data: [DONE]``. The constant parts of
a request's chunks are rendered once, so a token costs one ``json.dumps`` of its text:
the simulator must carry thousands of streams on one core.
"""

from __future__ import annotations

import json

DONE = b"data: [DONE]\n\n"


class ChunkWriter:
    """Renders the chunks of one streamed completion or chat completion."""

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
        usage = json.dumps(
            {
                "prompt_tokens": prompt_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "completion_tokens": completion_tokens,
            },
            separators=(",", ":"),
        )
        return (
            self._head + f'[],"usage":{usage},"system_fingerprint":{self._fingerprint}}}\n\n'
        ).encode()

    def error(self, message: str, status: int) -> bytes:
        """An in-stream error event (vLLM sends one and then ``[DONE]``)."""
        body = {
            "error": {
                "message": message,
                "type": "InternalServerError",
                "param": None,
                "code": status,
            }
        }
        return ("data: " + json.dumps(body) + "\n\n").encode()
