"""Shared helpers of the runtime tests: the committed fixtures, free ports, engines' health."""

from __future__ import annotations

import http.client
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
"""Small committed inputs, with their source and license (``tests/fixtures/README.md``)."""


@pytest.fixture
def perf_csv() -> Path:
    """The measured latency table's llama2-70b rows (what the calibrated profiles fit)."""
    return FIXTURES / "splitwise_perf_model_llama2_70b.csv"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGTERM ``process`` (if it still runs) and reap it; SIGKILL after ``timeout``."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_healthy(
    port: int,
    deadline: float = 20.0,
    process: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    """Poll ``/health`` on 127.0.0.1:``port`` until it answers 200; fail loudly otherwise.

    With ``process``, fail as soon as it exits; with ``log``, show the log's tail.
    """
    tail = (lambda: "\n" + log.read_text()[-4000:]) if log else (lambda: "")
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if process is not None and process.poll() is not None:
            pytest.fail(f"server on port {port} exited with {process.returncode}:{tail()}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.1)
        finally:
            conn.close()
    pytest.fail(f"server on port {port} not healthy after {deadline}s:{tail()}")
