"""Background processes of the local control plane, tracked by pid files.

Called by `cluster.py`. Each component runs in its own session (so its process
group id is its pid and a terminal's Ctrl-C does not reach it) with output in
`<state>/logs/<name>.log`. A pid file holds the pid and the process start time,
so a stale file can never make `stop` signal an unrelated process that reused
the pid. `stop` signals the whole group, which also ends the local processes
the pod runner started for pods.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie has exited; only its parent's wait is missing
        return None
    return fields[19]


class Processes:
    """Start, find and stop the named processes of one state folder."""

    def __init__(self, state: Path) -> None:
        self.pids = state / "pids"
        self.logs = state / "logs"

    def _pid_file(self, name: str) -> Path:
        return self.pids / f"{name}.pid"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
        self.pids.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        with self.log(name).open("wb") as log:
            process = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )
        self._pid_file(name).write_text(f"{process.pid} {_start_time(process.pid)}\n")
        return process.pid

    def pid(self, name: str) -> int | None:
        """The pid of `name` if the process it recorded still runs, else None."""
        try:
            pid_text, started = self._pid_file(name).read_text().split()
        except (OSError, ValueError):
            return None
        pid = int(pid_text)
        return pid if _start_time(pid) == started else None

    def recorded(self) -> list[str]:
        """Names that have a pid file, newest first (the order to stop them in)."""
        files = sorted(self.pids.glob("*.pid"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
        return [f.stem for f in files]

    def stop(self, name: str, timeout: float = 10.0) -> None:
        """SIGTERM the process group of `name`, SIGKILL it after `timeout`, forget it."""
        pid = self.pid(name)
        if pid is not None:
            _signal_group(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _group_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _group_alive(pid):
                _signal_group(pid, signal.SIGKILL)
                while _group_alive(pid):
                    time.sleep(0.05)
        self._pid_file(name).unlink(missing_ok=True)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    """True while any live (non-zombie) process is in process group `pgid`."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False
