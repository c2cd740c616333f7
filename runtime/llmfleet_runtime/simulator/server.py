"""The simulator's OpenAI-compatible HTTP server (aiohttp.web).

Who calls it: :mod:`.cli` (``llmfleet engine-sim``) and tests, through
:func:`create_app`, an app factory taking its settings (no globals: several simulated
engines can share a process and an event loop).

Routes: ``GET /health``, ``GET /v1/models``, ``POST /v1/completions``,
``POST /v1/chat/completions``, ``GET /metrics``, ``GET /version``, and the simulator's own
``GET|POST /sim/faults`` (read or flip the fault switches at run time).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from llmfleet_contract import openai
from llmfleet_contract.openai import DONE, ApiError, ChunkWriter, GenerationRequest

from .driver import EngineDriver, Stream
from .engine import Engine
from .faults import Faults
from .metrics import EngineMetrics
from .profiles import Profile
from .requests import Request
from .tokens import TextSource, block_hashes, prompt_pieces

log = logging.getLogger("llmfleet.engine_sim")

VERSION = "0.32.0"
FINGERPRINT = f"vllm-{VERSION}-llmfleet-sim"


@dataclass(frozen=True)
class SimSettings:
    """Everything one simulated engine needs; built by the CLI or a test."""

    profile: Profile
    served_model_names: tuple[str, ...] = ("sim",)
    model_root: str = "sim"
    time_scale: float = 1.0
    seed: int = 0
    mean_output_tokens: int = 128
    """Mean of the drawn output length when a request gives no ``max_tokens``."""
    enable_prefix_caching: bool = True
    enable_chunked_prefill: bool = True
    faults: Faults = field(default_factory=Faults)


@dataclass
class SimState:
    """What the handlers share, stored on the app (not in module globals)."""

    settings: SimSettings
    driver: EngineDriver
    metrics: EngineMetrics
    rng: random.Random
    text: TextSource
    created: int
    draining: bool = False
    counter: int = 0


STATE = web.AppKey("llmfleet_sim_state", SimState)


def create_app(
    settings: SimSettings, *, clock: Callable[[], float] = time.monotonic
) -> web.Application:
    """Build the aiohttp application serving one simulated engine."""
    engine = Engine(
        settings.profile,
        enable_prefix_caching=settings.enable_prefix_caching,
        enable_chunked_prefill=settings.enable_chunked_prefill,
    )
    metrics = EngineMetrics(engine, settings.served_model_names[0])
    driver = EngineDriver(
        engine, metrics, settings.faults, time_scale=settings.time_scale, clock=clock
    )
    state = SimState(
        settings=settings,
        driver=driver,
        metrics=metrics,
        rng=random.Random(settings.seed),
        text=TextSource(settings.seed),
        created=int(time.time()),
    )
    app = web.Application()
    app[STATE] = state
    app.router.add_get("/health", _health)
    app.router.add_get("/version", _version)
    app.router.add_get("/v1/models", _models)
    app.router.add_post("/v1/completions", _completions)
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/sim/faults", _faults)
    app.router.add_post("/sim/faults", _faults)
    app.cleanup_ctx.append(_run_driver)
    return app


async def _run_driver(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.get_running_loop().create_task(app[STATE].driver.run())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=openai.dumps)


async def _health(request: web.Request) -> web.Response:
    return web.Response(status=200)


async def _version(request: web.Request) -> web.Response:
    return _json({"version": VERSION})


async def _models(request: web.Request) -> web.Response:
    s = request.app[STATE]
    body = openai.models_body(
        s.settings.served_model_names,
        s.settings.model_root,
        s.created,
        s.settings.profile.max_model_len,
    )
    return _json(body)


async def _metrics(request: web.Request) -> web.Response:
    s = request.app[STATE]
    s.metrics.refresh()
    return web.Response(
        body=generate_latest(s.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


async def _faults(request: web.Request) -> web.Response:
    s = request.app[STATE]
    if request.method == "POST":
        try:
            s.settings.faults.update(await request.json())
        except (ValueError, TypeError, AttributeError) as exc:
            return _json(ApiError(400, str(exc), "BadRequestError").body(), 400)
        s.driver.poke()
    return _json(s.settings.faults.as_dict())


async def _completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, chat=False)


async def _chat(request: web.Request) -> web.StreamResponse:
    return await _generate(request, chat=True)


async def _generate(request: web.Request, *, chat: bool) -> web.StreamResponse:
    s = request.app[STATE]
    settings = s.settings
    try:
        if s.draining:
            raise ApiError(503, "The server is shutting down.", "ServiceUnavailableError")
        body = openai.decode_json(await request.read())
        gen = openai.parse_request(
            body,
            chat=chat,
            served_names=settings.served_model_names,
            max_model_len=settings.profile.max_model_len,
            tokenize=prompt_pieces,
        )
        if settings.faults.error_rate and s.rng.random() < settings.faults.error_rate:
            raise ApiError(500, "Simulated engine failure.", "InternalServerError")
    except ApiError as err:
        return _json(err.body(), err.status)
    s.counter += 1
    digest = hashlib.blake2b(f"{settings.seed}:{s.counter}".encode(), digest_size=8).hexdigest()
    request_id = ("chatcmpl-" if chat else "cmpl-") + digest
    engine_request = _engine_request(s, gen, request_id)
    try:
        stream = s.driver.submit(engine_request)
    except ValueError as exc:
        return _json(ApiError(400, str(exc), "BadRequestError").body(), 400)
    try:
        if gen.stream:
            return await _stream(request, s, gen, stream, request_id)
        return await _whole(s, gen, stream, request_id)
    finally:
        s.driver.abort(request_id)  # no-op when it finished


def _engine_request(s: SimState, gen: GenerationRequest, request_id: str) -> Request:
    settings = s.settings
    stop_after = None
    if not gen.max_tokens_given and not gen.ignore_eos:
        # No max_tokens: the model would stop at EOS; draw that length (seeded).
        stop_after = 1 + int(s.rng.expovariate(1.0 / settings.mean_output_tokens))
    hashes: tuple[int, ...] = ()
    if settings.enable_prefix_caching:
        hashes = block_hashes(gen.prompt_pieces, settings.profile.block_size, salt=gen.model)
    return Request(
        request_id=request_id,
        prompt_tokens=len(gen.prompt_pieces),
        max_tokens=gen.max_tokens,
        stop_after=stop_after if stop_after is not None and stop_after < gen.max_tokens else None,
        block_hashes=hashes,
    )


async def _whole(
    s: SimState, gen: GenerationRequest, stream: Stream, request_id: str
) -> web.Response:
    rng = s.text.for_request(request_id)
    parts: list[str] = []
    reason = "length"
    while True:
        tokens = await stream.next_tokens()
        if not tokens:
            break
        for token in tokens:
            parts.append(TextSource.next_token(rng))
            if token.finish_reason is not None:
                reason = token.finish_reason
    build = openai.chat_body if gen.chat else openai.completion_body
    body = build(
        request_id,
        s.created,
        gen.model,
        "".join(parts),
        reason,
        len(gen.prompt_pieces),
        len(parts),
        FINGERPRINT,
    )
    return _json(body)


async def _stream(
    request: web.Request,
    s: SimState,
    gen: GenerationRequest,
    stream: Stream,
    request_id: str,
) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
    await response.prepare(request)
    writer = ChunkWriter(
        chat=gen.chat,
        request_id=request_id,
        created=int(time.time()),
        model=gen.model,
        fingerprint=FINGERPRINT,
    )
    rng = s.text.for_request(request_id)
    out = [writer.first()]
    produced = 0
    try:
        while True:
            tokens = await stream.next_tokens()
            if not tokens:
                break
            for token in tokens:
                produced += 1
                text = TextSource.next_token(rng)
                if token.finish_reason is None:
                    out.append(writer.token(text))
                else:
                    last = writer.last(text, token.finish_reason, usage_follows=gen.include_usage)
                    out.append(last)
            await response.write(b"".join(out))
            out = []
        if gen.include_usage:
            out.append(writer.usage(len(gen.prompt_pieces), produced))
        out.append(DONE)
        await response.write(b"".join(out))
        await response.write_eof()
    except ConnectionResetError:  # the client left: the caller aborts its request, as vLLM
        log.info("Aborted request %s: the client disconnected", request_id)
    return response
