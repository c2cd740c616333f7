"""Traffic for the e2e tests: the real gateway run on this machine, and streaming clients.

Used by test_autoscaling.py and test_gateway.py. :func:`gateway` runs ``llmfleet gateway``
in cluster mode with the chart's gateway service account (its token only), discovering one
namespace's LLMDeployments and pods, as the chart's gateway pods would. :class:`Streams` is
load through it: clients of the official ``openai`` client, each streaming one completion
after another, every stream checked for its full token count; a stream that fails or comes
up short is a lost stream.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Self

from kit import REPO, wait_for
from localop import GATEWAY_ACCOUNT, service_account_kubeconfig
from openai import OpenAI

from tests.runtime.conftest import free_port, stop

MODEL = "llama-8b"


@contextmanager
def gateway(kubeconfig: Path, namespace: str, log: Path, *, tenants: bool = False) -> Iterator[str]:
    """The real gateway, discovering the namespace's LLMDeployments and pods with the chart's
    least-privilege service account (its token only); yields its ``host:port``. With
    ``tenants`` it reads the namespace's LLMTenants and asks every request for a key (the
    chart's Role must let it read the namespace's Secrets); without, it is open."""
    with gateway_process(kubeconfig, namespace, log, tenants=tenants) as (address, _):
        yield address


@contextmanager
def gateway_process(
    kubeconfig: Path,
    namespace: str,
    log: Path,
    *,
    tenants: bool = False,
    extra: Sequence[str] = (),
    port: int | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """:func:`gateway` on ``port`` (None: a free one) with ``extra`` flags (the last of a
    repeated flag wins) and ``env`` added to its environment, yielding its process too."""
    port = port or free_port()
    account = service_account_kubeconfig(
        kubeconfig, log.with_suffix(".kubeconfig"), GATEWAY_ACCOUNT
    )
    command = [
        str(REPO / ".venv" / "bin" / "llmfleet"),
        "gateway",
        "--kubeconfig",
        str(account),
        "--watch-namespace",
        namespace,
        "--port",
        str(port),
        "--hold-seconds",
        "240",
        *(() if tenants else ("--no-tenants",)),
        *extra,
    ]
    with log.open("w") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    try:
        wait_for("the gateway", lambda: http_ok(f"127.0.0.1:{port}", "/health"), timeout=30)
        yield f"127.0.0.1:{port}", process
    finally:
        stop(process)


def http_ok(address: str, path: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def complete(address: str, max_tokens: int) -> str:
    """Stream one completion from an engine or the gateway at ``address``; its finish reason."""
    client = OpenAI(base_url=f"http://{address}/v1", api_key="unused", max_retries=0)
    finish = ""
    stream = client.completions.create(
        model=MODEL, prompt="count to a thousand", max_tokens=max_tokens, stream=True
    )
    for chunk in stream:
        finish = chunk.choices[0].finish_reason or finish if chunk.choices else finish
    return finish


def lost(client: OpenAI, prompt: str, max_tokens: int) -> str | None:
    """Stream one completion of ``max_tokens`` tokens; what went wrong, or None when every
    token arrived, the finish reason says so and the usage chunk counts them all."""
    tokens, finish, counted = 0, None, None
    stream = client.completions.create(
        model=MODEL,
        prompt=prompt,
        max_tokens=max_tokens,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.choices:
            tokens += 1 if chunk.choices[0].text else 0
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage is not None:
            counted = chunk.usage.completion_tokens
    if (tokens, finish, counted) == (max_tokens, "length", max_tokens):
        return None
    return f"{tokens} tokens, finish {finish}, usage {counted}"


class Clients:
    """Client threads (``self.threads``, started by the subclass's ``__init__``) that run
    until the block ends (``self.stopping``), then are joined."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []

    def __enter__(self) -> Self:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=120)


class Streams(Clients):
    """``clients`` threads, each streaming one completion of ``max_tokens`` tokens after
    another through ``address`` until the block ends (then each finishes its stream);
    ``errors`` holds each lost stream, none retried (the SDK's retries are off).

    The clients start one by one over ``spread`` seconds; given a stream's length, their
    streams then end at different times instead of in lockstep, so at any moment some
    stream has just begun."""

    def __init__(
        self, address: str, clients: int, max_tokens: int, spread: float = 0.0, key: str = "unused"
    ) -> None:
        super().__init__()
        self.address, self.max_tokens, self.key = address, max_tokens, key
        self.errors: list[str] = []
        self.done = 0
        self.sending = 0
        self.threads = [
            threading.Thread(target=self._client, args=(i, spread * i / clients))
            for i in range(clients)
        ]

    def _client(self, number: int, delay: float) -> None:
        client = OpenAI(base_url=f"http://{self.address}/v1", api_key=self.key, max_retries=0)
        if self.stopping.wait(delay):
            return
        with self.lock:
            self.sending += 1
        sent = 0
        while not self.stopping.is_set():
            sent += 1
            try:
                error = lost(client, f"client {number}, stream {sent}: count", self.max_tokens)
            except Exception as failure:  # every failure is a lost stream: report it
                error = repr(failure)
            with self.lock:
                self.done += 1
                if error is not None:
                    self.errors.append(f"client {number}, stream {sent}: {error}")

    @property
    def all_sending(self) -> bool:
        return self.sending == len(self.threads)


def drained(pod_log: Path) -> int | None:
    """How many requests an engine pod still had in flight when SIGTERM reached it (the
    simulator logs it as it starts draining); None if its log says no SIGTERM came."""
    found = re.search(r"Draining (\d+) in-flight requests", pod_log.read_text(errors="replace"))
    return int(found[1]) if found else None
