"""The launcher as a real process: SIGTERM mid-stream drains, bad setups exit early.

Cases: the launcher runs the simulator (through the ``engineCommand`` seam) and receives
SIGTERM while a stream is half done: the stream completes with all its tokens and
``[DONE]``, a new request is refused, and the launcher exits 0 well before the deadline;
a pod that sees no GPUs exits 3 with the reason; a bad config exits 2; ``--print`` shows
the command.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.runtime.conftest import free_port, wait_healthy

SIM = [sys.executable, "-m", "llmfleet_runtime.simulator"]
LAUNCH = [sys.executable, "-m", "llmfleet_runtime.launcher"]


def launcher_env(config: dict[str, object]) -> dict[str, str]:
    return {**os.environ, "LLMFLEET_ENGINE_CONFIG": json.dumps(config)}


def test_sigterm_mid_stream_lets_the_stream_finish() -> None:
    port = free_port()
    config = {
        "model": "tiny",
        "host": "127.0.0.1",
        "port": port,
        "gpuCheck": False,
        "drainTimeoutSeconds": 30,
        "engineCommand": SIM,
        "extraArgs": ["--profile", "fast", "--fault-slowdown", "25"],
    }
    proc = subprocess.Popen(LAUNCH, env=launcher_env(config))
    try:
        wait_healthy(port)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        body = {"model": "tiny", "prompt": "drain me", "max_tokens": 40, "stream": True}
        conn.request(
            "POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"}
        )
        response = conn.getresponse()
        assert response.status == 200
        events: list[bytes] = []
        while len(events) < 5:
            line = response.fp.readline()
            if line.startswith(b"data: "):
                events.append(line)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        refused = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        refused.request("POST", "/v1/completions", json.dumps({**body, "stream": False}))
        assert refused.getresponse().status == 503
        refused.close()
        while True:
            line = response.fp.readline()
            if not line:
                break
            if line.startswith(b"data: "):
                events.append(line)
        conn.close()
        assert events[-1] == b"data: [DONE]\n"
        chunks = [json.loads(e[6:]) for e in events[:-1]]
        assert len(chunks) == 40
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"
        assert proc.wait(timeout=20) == 0
        assert time.monotonic() - started < 15
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_no_visible_gpus_exits_3_with_the_reason() -> None:
    config = {"model": "m", "tensorParallelSize": 2, "engineCommand": ["true"]}
    env = {**launcher_env(config), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(LAUNCH, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 3
    assert "sees 0 GPU(s) but its serving group needs 2 per node" in done.stderr


def test_bad_config_exits_2() -> None:
    env = launcher_env({"model": "m", "extraArgs": ["--port", "1"]})
    done = subprocess.run(LAUNCH, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "may not set --port" in done.stderr


def test_print_shows_the_command() -> None:
    env = launcher_env({"model": "m", "tensorParallelSize": 2})
    done = subprocess.run([*LAUNCH, "--print"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert done.stdout.startswith("vllm serve --model m --served-model-name m")


def test_bind_host_overrides_the_configured_host() -> None:
    env = launcher_env({"model": "m"}) | {"LLMFLEET_BIND_HOST": "127.3.0.7"}
    done = subprocess.run([*LAUNCH, "--print"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert " --host 127.3.0.7 " in done.stdout
    plain = subprocess.run(
        [*LAUNCH, "--print"],
        env=launcher_env({"model": "m"}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert " --host 0.0.0.0 " in plain.stdout


def test_headless_simulator_worker_serves_nothing_and_stops_on_sigterm() -> None:
    port = free_port()
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llmfleet_runtime.simulator",
            "--model",
            "m",
            "--headless",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert worker.stdout is not None
        assert b"Headless worker" in worker.stdout.readline()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=10) == 0
    finally:
        worker.kill()
        worker.wait()
        worker.stdout.close()  # type: ignore[union-attr]
