"""A gateway in front of engine simulators, all on loopback in one background event loop.

The official ``openai`` client (sync or async) talks to the gateway from the test's thread as
it would to any server; tests reach into the gateway's state through :meth:`Stack.run`.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import openai
import pytest
from aiohttp import web

from llmfleet_gateway.pool import Model
from llmfleet_gateway.server import GATEWAY, Gateway, GatewaySettings, create_app
from llmfleet_runtime.simulator import FAST
from llmfleet_runtime.simulator.server import STATE, SimSettings
from llmfleet_runtime.simulator.server import create_app as create_engine
from tests.runtime.conftest import free_port

T = TypeVar("T")
MODEL = "m"
KEY = ("ns", "m-deploy")
"""The LLMDeployment (namespace, name) behind MODEL."""


@dataclass
class Stack:
    """Engines and a gateway; ``url`` is the gateway's ``/v1``."""

    settings: GatewaySettings
    engines: int = 2
    wall: Callable[[], float] = time.time
    """The gateway's wall clock (tenant limit windows)."""
    served: tuple[str, ...] = (MODEL,)
    """The model names every engine answers to."""
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    runners: list[web.AppRunner] = field(default_factory=list)
    engine_urls: list[str] = field(default_factory=list)
    engine_apps: list[web.Application] = field(default_factory=list)
    gateway: Gateway | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def run(self, make: Callable[[], Awaitable[T]]) -> T:
        """Run a coroutine on the stack's loop and wait for its result."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(_call(make), self.loop)
        return future.result(timeout=60)

    async def _serve(self, app: web.Application, port: int) -> None:
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        self.runners.append(runner)

    async def start(self) -> None:
        for _ in range(self.engines):
            port = free_port()
            app = create_engine(SimSettings(profile=FAST, served_model_names=self.served))
            await self._serve(app, port)
            self.engine_apps.append(app)
            self.engine_urls.append(f"http://127.0.0.1:{port}")
        replicas = dict(self.settings.replicas)
        if not replicas and self.engine_urls:
            replicas = {self.settings.models[0].name: tuple(self.engine_urls)}
        app = create_app(replace(self.settings, replicas=replicas), wall=self.wall)
        self.port = free_port()
        await self._serve(app, self.port)
        self.gateway = app[GATEWAY]

    async def stop(self) -> None:
        for runner in reversed(self.runners):
            await runner.cleanup()

    def faults(self, index: int, **changes: Any) -> None:
        """Flip an engine's fault switches (``hang=True``, ...)."""

        async def flip() -> None:
            state = self.engine_apps[index][STATE]
            state.settings.faults.update(changes)
            state.driver.poke()

        self.run(flip)


async def _call(make: Callable[[], Awaitable[T]]) -> T:
    return await make()


def settings(**changes: Any) -> GatewaySettings:
    base = GatewaySettings(models=(Model(MODEL, "m-deploy", "ns", max_num_seqs=16),))
    return replace(base, **changes)


@contextmanager
def running(
    gateway: GatewaySettings | None = None,
    engines: int = 2,
    wall: Callable[[], float] = time.time,
    served: tuple[str, ...] = (MODEL,),
) -> Iterator[Stack]:
    """A stack on its own thread, stopped and joined on the way out."""
    stack = Stack(gateway or settings(), engines, wall=wall, served=served)
    thread = threading.Thread(target=stack.loop.run_forever, daemon=True)
    thread.start()
    try:
        stack.run(stack.start)
        yield stack
    finally:
        stack.run(stack.stop)
        stack.loop.call_soon_threadsafe(stack.loop.stop)
        thread.join(timeout=10)
        stack.loop.close()


@pytest.fixture
def stack_factory() -> Iterator[Callable[..., Stack]]:
    with ExitStack() as stacks:

        def make(
            gateway: GatewaySettings | None = None,
            engines: int = 2,
            wall: Callable[[], float] = time.time,
            served: tuple[str, ...] = (MODEL,),
        ) -> Stack:
            return stacks.enter_context(running(gateway, engines, wall, served))

        yield make


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


def http(method: str, url: str, body: bytes | None = None, **headers: str) -> Answer:
    """One plain HTTP exchange, read to the end (a stream included)."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return Answer(response.status, dict(response.headers), response.read().decode())
    except urllib.error.HTTPError as error:
        with error:
            return Answer(error.code, dict(error.headers), error.read().decode())


_SDKS: list[openai.OpenAI] = []


def sdk(stack: Stack, key: str = "none", retries: int = 0) -> openai.OpenAI:
    """An official client of the stack's gateway with ``key``, closed after the test (its
    pooled connections too)."""
    made = openai.OpenAI(base_url=stack.url, api_key=key, max_retries=retries, timeout=30)
    _SDKS.append(made)
    return made


@pytest.fixture(autouse=True)
def _close_sdks() -> Iterator[None]:
    yield
    while _SDKS:
        _SDKS.pop().close()
