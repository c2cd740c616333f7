"""The simulator's HTTP server in-process (aiohttp test server, official openai client).

Cases: the openai client gets completions and streams; ``error_rate=1`` answers 500 in
vLLM's error envelope; ``hang`` stalls streams until lifted through ``POST /sim/faults``;
an unknown fault is a 400; a repeated prompt shows prefix-cache hits in ``/metrics``;
``time_scale`` runs engine time faster than wall time while metrics keep engine seconds;
the CLI's crash switch exits the process with status 1; a client that leaves mid-stream
aborts its request, with an INFO line and no error.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import openai
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from llmfleet_runtime.simulator import FAST, get_profile
from llmfleet_runtime.simulator.cli import build_parser, settings_from_args
from llmfleet_runtime.simulator.faults import Faults
from llmfleet_runtime.simulator.server import SimSettings, create_app
from tests.runtime.conftest import free_port, stop, wait_healthy


def with_client(settings: SimSettings, body: Callable[[TestClient], Awaitable[None]]) -> None:
    async def main() -> None:
        async with TestClient(TestServer(create_app(settings))) as client:
            await body(client)

    asyncio.run(main())


async def metric(client: TestClient, name: str) -> float:
    text = await (await client.get("/metrics")).text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(name)


def test_openai_client_against_the_simulator() -> None:
    async def body(client: TestClient) -> None:
        oa = openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key="x", max_retries=0)
        out = await oa.completions.create(model="sim", prompt="hello there", max_tokens=7)
        assert out.usage is not None
        assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (2, 7)
        stream = await oa.chat.completions.create(
            model="sim", messages=[{"role": "user", "content": "hi"}], max_tokens=3, stream=True
        )
        chunks = [c async for c in stream]
        assert chunks[0].choices[0].delta.role == "assistant"
        assert chunks[-1].choices[0].finish_reason == "length"
        await oa.close()
        assert await metric(client, "vllm:generation_tokens_total") == 10

    with_client(SimSettings(profile=FAST), body)


def test_error_rate_answers_500_in_the_vllm_envelope() -> None:
    async def body(client: TestClient) -> None:
        response = await client.post("/v1/completions", json={"prompt": "x", "max_tokens": 1})
        assert response.status == 500
        error = (await response.json())["error"]
        assert (error["type"], error["code"]) == ("InternalServerError", 500)

    with_client(SimSettings(profile=FAST, faults=Faults(error_rate=1.0)), body)


def test_hang_stalls_until_lifted() -> None:
    async def body(client: TestClient) -> None:
        request = client.post("/v1/completions", json={"prompt": "x", "max_tokens": 3})
        pending = asyncio.ensure_future(request)
        done, _ = await asyncio.wait({pending}, timeout=0.3)
        assert not done
        assert (await client.get("/health")).status == 200
        lifted = await client.post("/sim/faults", json={"hang": False})
        assert (await lifted.json())["hang"] is False
        response = await asyncio.wait_for(pending, 5)
        assert response.status == 200
        bad = await client.post("/sim/faults", json={"explode": True})
        assert bad.status == 400

    with_client(SimSettings(profile=FAST, faults=Faults(hang=True)), body)


def test_repeated_prompt_hits_the_prefix_cache() -> None:
    async def body(client: TestClient) -> None:
        prompt = " ".join(f"word{i}" for i in range(200))
        for _ in range(2):
            r = await client.post("/v1/completions", json={"prompt": prompt, "max_tokens": 2})
            assert r.status == 200
        assert await metric(client, "vllm:prefix_cache_hits_total") >= 192

    with_client(SimSettings(profile=FAST), body)


def test_time_scale_runs_engine_time_faster() -> None:
    profile = get_profile("h100-llama2-70b-tp4")

    async def body(client: TestClient) -> None:
        start = time.monotonic()
        prompt = "x " * 500
        r = await client.post("/v1/completions", json={"prompt": prompt, "max_tokens": 20})
        assert r.status == 200
        wall = time.monotonic() - start
        e2e = await metric(client, "vllm:e2e_request_latency_seconds_sum")
        assert 0.5 < e2e < 1.0  # ~60 ms prefill + 19 x ~30 ms decode, in engine seconds
        assert wall < e2e / 5

    with_client(SimSettings(profile=profile, time_scale=50.0), body)


def test_flags_keep_vllm_names_and_ignore_the_rest() -> None:
    flags = ["--model", "m", "--served-model-name", "a", "b", "--max-num-seqs", "7"]
    flags += ["--tensor-parallel-size", "4", "--no-enable-prefix-caching"]
    args, unknown = build_parser().parse_known_args([*flags, "--fault-error-rate", "0.5"])
    settings = settings_from_args(args)
    assert settings.served_model_names == ("a", "b")
    assert settings.profile.max_num_seqs == 7
    assert settings.enable_prefix_caching is False
    assert settings.faults.error_rate == 0.5
    assert unknown == ["--tensor-parallel-size", "4"]


def test_crash_switch_exits_1() -> None:
    cmd = [sys.executable, "-m", "llmfleet_runtime.simulator", "--host", "127.0.0.1"]
    cmd += ["--port", str(free_port()), "--fault-crash-after", "0.2"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "Simulated crash" in done.stderr


def test_a_client_that_leaves_mid_stream_aborts_its_request_quietly(tmp_path: Path) -> None:
    """The real server (no handler cancellation, as ``llmfleet engine-sim`` runs it): the
    next write finds the connection closed, and the request is aborted with an INFO line,
    never a traceback."""
    port, log = free_port(), tmp_path / "engine.log"
    cmd = [sys.executable, "-m", "llmfleet_runtime.simulator", "--host", "127.0.0.1"]
    with log.open("w") as out:
        process = subprocess.Popen([*cmd, "--port", str(port)], stdout=out, stderr=out)
    try:
        wait_healthy(port, process=process, log=log)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        body = json.dumps({"prompt": "x", "max_tokens": 1000, "stream": True})
        connection.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        connection.getresponse().readline()
        connection.close()
        deadline = time.monotonic() + 10
        while "client disconnected" not in log.read_text():
            assert time.monotonic() < deadline, "the engine went on with the request"
            time.sleep(0.05)
    finally:
        stop(process)
    assert "Traceback" not in log.read_text()
