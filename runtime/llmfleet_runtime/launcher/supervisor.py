"""Run the engine as a child process and drain it on SIGTERM (the launcher's shell).

Who calls it: :mod:`.cli`. Kubernetes sends SIGTERM to the container's PID 1, the
launcher; it forwards SIGTERM to the engine, which (vLLM with ``--shutdown-timeout N``, or
the simulator with the same flag) stops taking new requests and lets in-flight ones
finish. If the engine is still alive ``drain_timeout + grace`` seconds later it is killed.
The launcher exits with the engine's status (128 + signal number when a signal ended it).
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from types import FrameType

log = logging.getLogger("llmfleet.launcher")

KILL_GRACE_SECONDS = 10.0
"""Added to the drain deadline before SIGKILL: the engine's own shutdown after the drain."""


def exit_status(returncode: int) -> int:
    """A shell-style exit status for a child's ``returncode``."""
    return 128 - returncode if returncode < 0 else returncode


def run_engine(
    argv: Sequence[str],
    *,
    drain_timeout: float,
    env: Mapping[str, str] | None = None,
    grace: float = KILL_GRACE_SECONDS,
    poll: float = 0.1,
) -> int:
    """Start ``argv``, forward SIGTERM/SIGINT, enforce the drain deadline, return its status."""
    proc = subprocess.Popen(list(argv), env=None if env is None else dict(env))
    deadline: list[float] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if not deadline:
            log.info(
                "Received %s: draining engine for up to %.0fs",
                signal.Signals(signum).name,
                drain_timeout,
            )
            deadline.append(time.monotonic() + drain_timeout + grace)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            try:
                return exit_status(proc.wait(timeout=poll))
            except subprocess.TimeoutExpired:
                pass
            if deadline and time.monotonic() >= deadline[0]:
                log.warning("Engine still running after the drain deadline: killing it")
                proc.kill()
                return exit_status(proc.wait())
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
