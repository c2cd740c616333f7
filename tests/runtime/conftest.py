"""Shared helpers of the runtime tests: where the shared traces are, free ports."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def traces_dir() -> Path:
    """``$LLMFLEET_TRACES_DIR`` or the workplace's ``shared/traces`` beside the repo."""
    return Path(os.environ.get("LLMFLEET_TRACES_DIR") or REPO.parent / "shared" / "traces")


@pytest.fixture
def perf_csv() -> Path:
    path = traces_dir() / "splitwise_sim_perf_model.csv"
    if not path.exists():
        pytest.fail(f"{path} is missing: the calibration check needs the shared latency table")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
