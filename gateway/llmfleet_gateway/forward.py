"""One request's trip to a replica and back: the upstream call and the client's answer.

Who calls it: :mod:`.server`, once per attempt (:func:`send`) with one :class:`Exchange` per
client request. Streams pass through as the engine wrote them, event by event, except the
usage chunk, which the gateway always asks for (to meter every stream) and drops again for a
client that did not. The exchange knows whether anything reached the client: until a data
event has, a connection error or a 503 is retried on another replica; after, an error ends
the stream with an error event. A held stream's heartbeats (SSE comments) do not count.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from enum import Enum

import aiohttp
import orjson
from aiohttp import web

from llmfleet_contract.openai import DONE, ApiError, error_event
from llmfleet_gateway.guardrails import Guardrails, StreamGuard
from llmfleet_gateway.incoming import CHARS_PER_TOKEN, ClientRequest
from llmfleet_gateway.metrics import GatewayMetrics
from llmfleet_gateway.pool import Replica
from llmfleet_gateway.prefix import BLOCK_CHARS

REQUEST_ID = "x-request-id"
"""The header that names a request, on every answer and on the request to the engine."""
REQUEST_ID_KEY = web.RequestKey("llmfleet_request_id", str)
BLOCK_TOKENS = max(1, round(BLOCK_CHARS / CHARS_PER_TOKEN))
"""Estimated tokens per prefix block."""
HEARTBEAT = b": waiting for a replica\n\n"
_USAGE_CHUNK = (b'"choices":[]', b'"usage":{')
_FAILURES = (aiohttp.ClientError, TimeoutError, OSError)
"""What an upstream call may raise: refused, reset, cut off, timed out."""
_KEPT_HEADERS = ("retry-after", "retry-after-ms", "x-should-retry")
"""The engine's headers a client's SDK acts on, passed through."""
MOST_EVENT_BYTES = 16 << 20
"""A stream whose event outgrows this is not an engine's: it is ended with an error."""
MOST_ERROR_BYTES = 64 << 10
MOST_RECORDED_BYTES = 4 << 20
"""The largest stream kept for the response cache."""


class Outcome(Enum):
    """How an attempt ended."""

    DONE = "done"
    """Answered by the replica (a success, or the engine's own error passed on)."""
    RETRY = "retry"
    """Nothing reached the client and the replica could not take it: try another."""
    FAILED = "failed"
    """It broke after the client got something, or the client left."""


class RateLimitedError(ApiError):
    """429 with OpenAI's ``rate_limit_exceeded`` (or ``insufficient_quota``) and a
    ``retry-after`` the SDKs honour; ``retry=False`` adds ``x-should-retry: false``."""

    def __init__(
        self,
        message: str,
        retry_after_s: float,
        *,
        code: str = "rate_limit_exceeded",
        headers: Mapping[str, str] | None = None,
        retry: bool = True,
    ) -> None:
        kind = "insufficient_quota" if code == "insufficient_quota" else "rate_limit_error"
        super().__init__(429, message, kind, None, code)
        self.retry_after_s = retry_after_s
        self.extra = dict(headers or {})
        if not retry:
            self.extra["x-should-retry"] = "false"

    def headers(self) -> dict[str, str]:
        return {
            "retry-after": str(max(1, round(self.retry_after_s))),
            "retry-after-ms": str(max(1, round(self.retry_after_s * 1000))),
            **self.extra,
        }


def error_response(error: ApiError) -> web.Response:
    headers: Mapping[str, str] | None = None
    if isinstance(error, RateLimitedError):
        headers = error.headers()
    return web.Response(
        body=orjson.dumps(error.body()),
        status=error.status,
        content_type="application/json",
        headers=headers,
    )


class Exchange:
    """One client request's answer, however many replicas it takes."""

    def __init__(
        self,
        request: web.Request,
        incoming: ClientRequest,
        arrived: float,
        metrics: GatewayMetrics,
        clock: Callable[[], float],
        tenant: str,
        deployment: tuple[str, str],
        guardrails: Guardrails | None = None,
        *,
        chat: bool = True,
    ) -> None:
        self.request, self.incoming, self.arrived = request, incoming, arrived
        self.metrics = metrics
        self.clock = clock
        self.tenant = tenant
        """The tenant's ``namespace/name`` (empty: an open gateway)."""
        self.deployment = deployment
        """The model's LLMDeployment (namespace, name), for its busy seconds."""
        self.guardrails = guardrails
        """The plugins that see the answer (after it, and on each streamed chunk)."""
        self.chat = chat
        self.headers: dict[str, str] = {}
        """Headers of the gateway's own for the answer (the tenant's rate limits)."""
        self.response: web.StreamResponse | None = None
        """Prepared once anything (a heartbeat included) went to the client."""
        self.forwarded = False
        """A data event reached the client: no retry after this."""
        self.answer: web.StreamResponse | None = None
        self.status = 0
        self.replica = ""
        """The replica that answered (empty: none)."""
        self.waited_s = 0.0
        self.ttft_s: float | None = None
        self.usage: dict[str, int] = {}
        self.unavailable: tuple[int, bytes, dict[str, str]] | None = None
        """The last replica's 503 (status, body, kept headers): the answer when none is left."""
        self.complete = False
        """The replica's answer reached the client whole."""
        self.cached = False
        """Answered from the response cache."""
        self.recording: bytearray | None = None
        """A stream's events as the client got them, for the response cache (None: not kept,
        or outgrew :data:`MOST_RECORDED_BYTES`)."""

    async def start_stream(self) -> web.StreamResponse:
        if self.response is None:
            self.response = web.StreamResponse(
                status=200,
                headers={
                    "Content-Type": "text/event-stream",
                    "Cache-Control": "no-cache",
                    REQUEST_ID: self.request[REQUEST_ID_KEY],
                    **self.headers,
                },
            )
            await self.response.prepare(self.request)
        return self.response

    async def heartbeat(self) -> None:
        response = await self.start_stream()
        with contextlib.suppress(ConnectionError):  # a client that left: the wait ends anyway
            await response.write(HEARTBEAT)

    async def fail(self, error: ApiError) -> web.StreamResponse:
        """Answer ``error``: a status and body before the stream began, an event after."""
        self.status = error.status
        if self.response is None:
            answer = error_response(error)
            answer.headers.update(self.headers)
            return answer
        with contextlib.suppress(ConnectionError):
            await self.response.write(error_event(error) + DONE)
        return self.response

    def count(self, replica: str) -> None:
        """Count the answer once it is settled (``replica`` empty: none answered)."""
        self.replica = replica
        self.metrics.requests.labels(
            self.incoming.model, replica, str(self.status), self.tenant
        ).inc()

    def access_record(self, now: float) -> dict[str, object]:
        """The access log's line for this request: never a prompt, a key or a header."""
        return {
            "time": round(time.time(), 3),
            "request_id": self.request[REQUEST_ID_KEY],
            "path": self.request.path,
            "model": self.incoming.model,
            "tenant": self.tenant,
            "stream": self.incoming.stream,
            "status": self.status,
            "replica": self.replica,
            "cached": self.cached,
            "prompt_tokens_estimate": self.incoming.prompt_tokens,
            **self.usage,
            "waited_s": round(self.waited_s, 4),
            "ttft_s": None if self.ttft_s is None else round(self.ttft_s, 4),
            "duration_s": round(now - self.arrived, 4),
        }

    def held(self, seconds: float) -> None:
        """Count ``seconds`` a replica of this region spent on the request."""
        namespace, deployment = self.deployment
        busy = self.metrics.busy.labels(deployment, namespace, self.incoming.model, self.tenant)
        busy.inc(max(0.0, seconds))

    def meter(self, usage: object) -> None:
        if not isinstance(usage, dict):
            return
        model = self.incoming.model
        for kind in ("prompt_tokens", "completion_tokens"):
            value = usage.get(kind)
            if isinstance(value, int) and value > 0:
                self.usage[kind] = value
                self.metrics.tokens.labels(model, kind.removesuffix("_tokens"), self.tenant).inc(
                    value
                )


class Attempt:
    """One try at one replica: what it adds to the replica's accounts, taken back once."""

    def __init__(self, replica: Replica, prefill_tokens: int) -> None:
        self.replica, self.prefill_tokens = replica, prefill_tokens
        self._pending = True
        replica.sent(prefill_tokens)

    def first_token(self) -> None:
        if self._pending:
            self._pending = False
            self.replica.first_token(self.prefill_tokens)

    def close(self) -> None:
        self.first_token()
        self.replica.finished()


async def send(
    session: aiohttp.ClientSession | None,
    replica: Replica,
    path: str,
    raw: bytes,
    exchange: Exchange,
    prefill_tokens: int,
    headers: Mapping[str, str] | None = None,
    retry_on: tuple[int, ...] = (503,),
) -> Outcome:
    """Forward the request to ``replica`` and answer the client from it; ``prefill_tokens``
    (the prompt less what the replica is believed to have cached) are pending on the replica
    until the first token. ``headers`` go with it (a peer region's credentials); an answer
    of a status in ``retry_on`` before anything reached the client is tried elsewhere."""
    assert session is not None
    incoming = exchange.incoming
    attempt = Attempt(replica, prefill_tokens)
    try:
        async with session.post(
            replica.url + path,
            data=incoming.upstream_body(raw),
            headers={
                "Content-Type": "application/json",
                "Accept-Encoding": "identity",
                REQUEST_ID: exchange.request[REQUEST_ID_KEY],
                **(headers or {}),
            },
        ) as upstream:
            replica.reached()
            if upstream.status in retry_on and not exchange.forwarded:
                body = await upstream.content.read(MOST_ERROR_BYTES)
                exchange.unavailable = (upstream.status, body, _kept(upstream))
                return Outcome.RETRY
            if upstream.status != 200 or not incoming.stream:
                body = await upstream.read()
                attempt.first_token()
                await _whole(exchange, upstream.status, body, _kept(upstream), upstream)
                return Outcome.DONE
            return await _stream(exchange, upstream, attempt)
    except _FAILURES as error:
        if isinstance(error, aiohttp.ClientConnectorError):
            replica.unreachable(exchange.clock())
        if not exchange.forwarded:
            return Outcome.RETRY
        await exchange.fail(
            ApiError(502, f"The replica failed mid-answer: {error}", "upstream_error")
        )
        return Outcome.FAILED
    finally:
        attempt.close()


def _kept(upstream: aiohttp.ClientResponse) -> dict[str, str]:
    return {name: upstream.headers[name] for name in _KEPT_HEADERS if name in upstream.headers}


async def answer_unavailable(exchange: Exchange) -> web.StreamResponse | None:
    """The last replica's 503, as the engine wrote it, when every replica gave one."""
    if exchange.unavailable is None:
        return None
    status, body, headers = exchange.unavailable
    await _whole(exchange, status, body, headers, None)
    return exchange.answer


async def _whole(
    exchange: Exchange,
    status: int,
    body: bytes,
    headers: dict[str, str],
    upstream: aiohttp.ClientResponse | None,
) -> None:
    """A whole answer (or the engine's error) passed on as it is."""
    exchange.status = status
    if exchange.response is not None:  # an error for a held stream: it goes in the stream
        exchange.answer = await exchange.fail(_engine_error(status, body))
        return
    if status == 200:
        with contextlib.suppress(orjson.JSONDecodeError, AttributeError):
            exchange.meter(orjson.loads(body).get("usage"))
        if exchange.guardrails is not None:
            try:
                body = await _after(exchange.guardrails, body, exchange.chat)
            except ApiError as error:
                exchange.answer = await exchange.fail(error)
                return
    content_type = "application/json"
    if upstream is not None:
        content_type = upstream.headers.get("Content-Type", content_type)
    exchange.answer = web.Response(
        body=body,
        status=status,
        headers={
            "Content-Type": content_type,
            REQUEST_ID: exchange.request[REQUEST_ID_KEY],
            **exchange.headers,
            **headers,
        },
    )


async def _after(guardrails: Guardrails, body: bytes, chat: bool) -> bytes:
    """A whole answer as the guardrails leave it."""
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body  # not the engine's JSON: passed on as written
    if not isinstance(answer, dict):
        return body
    checked = await guardrails.after(answer, chat=chat)
    return body if checked is answer else orjson.dumps(checked)


def _engine_error(status: int, body: bytes) -> ApiError:
    try:
        error = orjson.loads(body)["error"]
        return ApiError(status, str(error["message"]), str(error.get("type", "upstream_error")))
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return ApiError(status, body[:200].decode(errors="replace"), "upstream_error")


def _event_end(buffer: bytearray) -> int:
    """Where the last complete event of ``buffer`` ends (0: none yet)."""
    return max(buffer.rfind(b"\n\n") + 2, buffer.rfind(b"\r\n\r\n") + 4, 0)


async def _stream(
    exchange: Exchange, upstream: aiohttp.ClientResponse, attempt: Attempt
) -> Outcome:
    """Pass the engine's events through; the first data event is the first token."""
    incoming = exchange.incoming
    response = await exchange.start_stream()
    exchange.status = 200
    exchange.answer = response
    buffer = bytearray()
    first_at: float | None = None
    guard = None if exchange.guardrails is None else exchange.guardrails.stream(chat=exchange.chat)
    async for data in upstream.content.iter_any():
        buffer += data
        end = _event_end(buffer)
        if not end:
            if len(buffer) > MOST_EVENT_BYTES:
                await exchange.fail(
                    ApiError(502, "The replica sent an oversized event.", "upstream_error")
                )
                return Outcome.FAILED
            continue
        events = bytes(buffer[:end])
        del buffer[:end]
        if first_at is None:
            first_at = exchange.clock()
            exchange.ttft_s = first_at - exchange.arrived
            attempt.first_token()
            exchange.metrics.ttft.labels(incoming.model).observe(exchange.ttft_s)
        if not await _pass(exchange, response, events, first_at, guard):
            return Outcome.FAILED  # the client left: leaving the block aborts the engine's work
    if buffer and not await _pass(
        exchange, response, bytes(buffer), first_at or exchange.clock(), guard
    ):
        return Outcome.FAILED
    return Outcome.DONE


async def _pass(
    exchange: Exchange,
    response: web.StreamResponse,
    events: bytes,
    first_at: float,
    guard: StreamGuard | None,
) -> bool:
    """Write ``events`` to the client (the usage chunk metered, and dropped unless asked
    for; each chunk through the guardrails); False when the client is gone or a guardrail
    ended the stream."""
    if _USAGE_CHUNK[0] in events and _USAGE_CHUNK[1] in events:
        events = _usage(exchange, events, first_at)
    if guard is not None:
        try:
            events = _guarded(guard, events)
        except ApiError as error:
            await exchange.fail(error)
            return False
    try:
        await response.write(events)
    except ConnectionError:
        return False
    exchange.forwarded = True
    if exchange.recording is not None:
        exchange.recording += events
        if len(exchange.recording) > MOST_RECORDED_BYTES:
            exchange.recording = None
    return True


def _guarded(guard: StreamGuard, events: bytes) -> bytes:
    """``events`` with each data event's text as the guardrails leave it."""
    out = []
    for event in events.replace(b"\r\n", b"\n").split(b"\n\n"):
        if event.startswith(b"data: {"):
            with contextlib.suppress(orjson.JSONDecodeError):
                payload = orjson.loads(event[6:])
                if isinstance(payload, dict):
                    event = b"data: " + orjson.dumps(guard.event(payload))
        out.append(event)
    return b"\n\n".join(out)


def _usage(exchange: Exchange, events: bytes, first_at: float) -> bytes:
    """Meter the usage chunk; keep it only for a client that asked for it."""
    kept = []
    for event in events.replace(b"\r\n", b"\n").split(b"\n\n"):
        if event.startswith(b"data: {") and all(mark in event for mark in _USAGE_CHUNK):
            with contextlib.suppress(orjson.JSONDecodeError):
                usage = orjson.loads(event[6:]).get("usage")
                exchange.meter(usage)
                _tpot(exchange, usage, first_at)
            if not exchange.incoming.wants_usage:
                continue
        kept.append(event)
    return b"\n\n".join(kept)


def _tpot(exchange: Exchange, usage: object, first_at: float) -> None:
    if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
        tokens = usage["completion_tokens"]
        if tokens > 1:
            per_token = (exchange.clock() - first_at) / (tokens - 1)
            exchange.metrics.tpot.labels(exchange.incoming.model).observe(per_token)
