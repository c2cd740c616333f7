"""Session fixtures of the parity suite: real vLLM on CPU and the simulator, side by side.

One vLLM engine per session (startup ~15 s, ~1.1 GB). Nothing here skips: if vLLM cannot
be installed or started the suite fails, since parity unproven is not parity.

* ``vllm_python``: the venv ``install_vllm.sh`` made (``make vllm``; never installed here);
* ``tiny_model``: ``tiny_model.py`` run by that venv (cached model dir);
* ``vllm_url`` / ``sim_url``: both servers on loopback with the same served name, slots,
  context length and KV blocks; vLLM is started by ``llmfleet launch`` (the launcher's
  argv must be accepted by real vLLM 0.32), the simulator directly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runtime.conftest import free_port, stop, wait_healthy

HERE = Path(__file__).resolve().parent
MODEL_NAME = "tiny"
MAX_NUM_SEQS = 4
MAX_MODEL_LEN = 1024
BLOCK_SIZE = 32
NUM_BLOCKS = 64
SHARED_FLAGS = [
    "--served-model-name", MODEL_NAME, "--host", "127.0.0.1",
    "--max-num-seqs", str(MAX_NUM_SEQS), "--max-model-len", str(MAX_MODEL_LEN),
    "--block-size", str(BLOCK_SIZE), "--num-gpu-blocks-override", str(NUM_BLOCKS),
]  # fmt: skip
VLLM_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "VLLM_HOST_IP": "127.0.0.1",
    "VLLM_LOOPBACK_IP": "127.0.0.1",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
}


def _run(cmd: list[str], what: str, timeout: float) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        pytest.fail(
            f"{what} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def vllm_python() -> str:
    """The cached vLLM venv's python; ``make vllm`` (a step of ``make test``) installs it."""
    return _run(["bash", str(HERE / "install_vllm.sh"), "--check"], "finding vllm-cpu", 60)


@pytest.fixture(scope="session")
def tiny_model(vllm_python: str) -> str:
    return _run([vllm_python, str(HERE / "tiny_model.py")], "building the tiny model", 600)


def _serve(
    cmd: list[str], env: dict[str, str], log: Path, port: int, deadline: float
) -> Iterator[str]:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_healthy(port, deadline, proc, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def vllm_url(
    vllm_python: str, tiny_model: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Real vLLM, started through ``llmfleet launch`` (so its argv is checked by vLLM too)."""
    port = free_port()
    config = {
        "model": tiny_model,
        "servedModelNames": [MODEL_NAME],
        "host": "127.0.0.1",
        "port": port,
        "maxNumSeqs": MAX_NUM_SEQS,
        "maxModelLen": MAX_MODEL_LEN,
        "dtype": "float32",
        "gpuCheck": False,
        "drainTimeoutSeconds": 5,
        "engineCommand": [vllm_python, "-m", "vllm.entrypoints.openai.api_server"],
        "extraArgs": [
            "--block-size", str(BLOCK_SIZE), "--num-gpu-blocks-override", str(NUM_BLOCKS),
            "--enforce-eager",
        ],
    }  # fmt: skip
    env = {**os.environ, **VLLM_ENV, "LLMFLEET_ENGINE_CONFIG": json.dumps(config)}
    cmd = [sys.executable, "-m", "llmfleet_runtime.launcher"]
    log = tmp_path_factory.mktemp("vllm") / "vllm.log"
    yield from _serve(cmd, env, log, port, 300)


@pytest.fixture(scope="session")
def sim_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    cmd = [
        sys.executable, "-m", "llmfleet_runtime.simulator", "--model", "tiny-llama-v1",
        "--port", str(port), *SHARED_FLAGS, "--profile", "fast", "--fault-slowdown", "3",
    ]  # fmt: skip
    log = tmp_path_factory.mktemp("sim") / "sim.log"
    yield from _serve(cmd, dict(os.environ), log, port, 30)
