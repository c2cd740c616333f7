"""Regions for multi-region tests: one network namespace per region, WAN faults by Toxiproxy.

Used by tests/test_regions.py (which proves it) and by the multi-region e2e tests. Needs root.

Topology, for a region with index n (1..254, the lowest free one)::

    root namespace                                 region namespace llmf-<6 hex>
    veth llmf-<6 hex>  10.213.n.1/30  <-- veth -->  eth0 10.213.n.2/30 (region.address), lo up
    toxiproxy-server, API on 127.0.0.1:<port>
    link a->b:8000 = proxy listening on 10.213.a.1:<p> (a's root side) -> upstream 10.213.b.2:8000

- A region's servers listen on ``region.address`` (or 0.0.0.0) inside it; ``region.popen``
  starts them there. Its loopback is its own: engines and gateways of one region may talk
  over 127.0.0.1.
- A region has no default route, only its /30: from inside, the one outside address it can
  reach is its root-side address ``region.host_address``. So region A reaches region B only
  through a link (``toxiproxy.link(a, b, port)``, ``link.url``), whatever ip_forward says; the
  tests check that the direct path fails. A root-namespace server bound to 0.0.0.0 is also
  reachable from a region at its ``host_address`` (one bound to 127.0.0.1 is not).
- B sees a linked connection arrive from 10.213.b.1 (the proxy), never from A's address: who
  sent a request must travel in the request, as behind any load balancer.
- The Toxiproxy API listens on the root namespace's loopback, out of every region's reach.

Why Toxiproxy: this kernel has no netem or tbf qdisc ("Specified qdisc kind is unknown"), so
latency, bandwidth, resets and cuts are done by a user-space TCP proxy. Its toxics act on a
connection's data, TCP only: the handshake with the proxy itself is instant, so a latency toxic
delays each chunk but not the connect. ``cut`` disables the proxy: open connections close and new
ones are refused at once; ``blackhole()`` accepts connections and delivers nothing, like a
partition seen by a client with a read timeout.

Namespaces are owned by the process that made them (a pid in /run/llmfleet-regions);
``sweep_stale`` removes those whose owner is gone (crashed runs) and runs before each allocation.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

PREFIX = "llmf-"
"""Names of the namespaces and root-side veths this module makes (and sweeps)."""
SUBNET = "10.213"
"""Region n is 10.213.n.0/30: .1 in the root namespace, .2 inside."""
STATE = Path("/run/llmfleet-regions")
"""One file per namespace holding its owner's pid, and the allocation lock."""
REPO = Path(__file__).resolve().parents[1]

Stream = Literal["upstream", "downstream"]
_USED = re.compile(rf"inet {re.escape(SUBNET)}\.(\d+)\.")


class RegionError(RuntimeError):
    """A namespace, veth or Toxiproxy operation failed; the message says which and why."""


def _ip(*args: str, check: bool = True) -> str:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RegionError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def _require_root() -> None:
    if os.geteuid() != 0:
        raise RegionError("regions need root (CAP_NET_ADMIN for ip netns and veth pairs)")


def _alive(pid: int) -> bool:
    """``pid`` runs and is not a zombie (this machine's init reaps orphans late)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text() if pid > 0 else ""
    except FileNotFoundError:
        return False
    return bool(stat) and stat.rsplit(")", 1)[1].split()[0] != "Z"


def _reap(processes: Sequence[subprocess.Popen[bytes]], timeout: float) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    end = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(timeout=max(0.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for pipe in (process.stdin, process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()


def _kill_namespace(netns: str) -> None:
    """Kill whatever still runs in ``netns`` (a region is gone only when its processes are)."""
    for pid in _ip("netns", "pids", netns, check=False).split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    _ip("netns", "del", netns, check=False)
    _ip("link", "del", netns, check=False)  # the kernel frees a dead namespace's veth lazily
    (STATE / netns).unlink(missing_ok=True)


def namespaces() -> list[str]:
    """The names of this module's namespaces now present (any owner)."""
    listed = (line.split()[0] for line in _ip("netns", "list").splitlines() if line.strip())
    return sorted(name for name in listed if name.startswith(PREFIX))


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    STATE.mkdir(parents=True, exist_ok=True)
    with (STATE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _sweep_unlocked() -> list[str]:
    swept = []
    for netns in namespaces():
        owner = STATE / netns
        if not owner.exists() or not _alive(int(owner.read_text() or 0)):
            _kill_namespace(netns)
            swept.append(netns)
    present = set(namespaces())
    for owner in STATE.glob(PREFIX + "*"):
        if owner.name not in present and not _alive(int(owner.read_text() or 0)):
            owner.unlink()
    return swept


def sweep_stale() -> list[str]:
    """Remove the namespaces (and veths) whose owning process is gone; return their names."""
    _require_root()
    with _locked():
        return _sweep_unlocked()


@dataclass
class Region:
    """One region: a network namespace joined to the root namespace by a veth pair."""

    name: str
    """The test's name for it ("a", "eu-west"); Toxiproxy link names use it."""
    netns: str
    """The namespace, also the root-side veth: ``llmf-<6 hex>``."""
    index: int
    _processes: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)

    @property
    def address(self) -> str:
        """This region's own address, inside it: where its servers listen."""
        return f"{SUBNET}.{self.index}.2"

    @property
    def host_address(self) -> str:
        """The root side of its veth: where links from this region listen."""
        return f"{SUBNET}.{self.index}.1"

    @classmethod
    def create(cls, name: str) -> Region:
        """Make the namespace, veth and addresses; ``close()`` (or ``with``) removes them."""
        _require_root()
        netns = PREFIX + secrets.token_hex(3)
        with _locked():
            _sweep_unlocked()
            used = {int(n) for n in _USED.findall(_ip("-4", "-o", "addr"))}
            index = next((n for n in range(1, 255) if n not in used), None)
            if index is None:
                raise RegionError(f"no free {SUBNET}.n.0/30 left for region {name}")
            (STATE / netns).write_text(str(os.getpid()))
            region = cls(name, netns, index)
            try:
                _ip("netns", "add", netns)
                _ip("link", "add", netns, "type", "veth", "peer", "name", "eth0", "netns", netns)
                _ip("addr", "add", f"{region.host_address}/30", "dev", netns)
                _ip("link", "set", netns, "up")
                _ip("-n", netns, "addr", "add", f"{region.address}/30", "dev", "eth0")
                _ip("-n", netns, "link", "set", "eth0", "up")
                _ip("-n", netns, "link", "set", "lo", "up")
            except RegionError:
                _kill_namespace(netns)
                raise
        return region

    def popen(self, args: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start ``args`` inside the region (``ip netns exec`` execs it: the pid is the process's).

        The region stops it on ``close()``; keyword arguments go to ``subprocess.Popen``.
        """
        process = subprocess.Popen(["ip", "netns", "exec", self.netns, *args], **kwargs)
        self._processes.append(process)
        return process

    def run(self, args: Sequence[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run ``args`` inside the region to completion; output captured as text, not checked."""
        command = ["ip", "netns", "exec", self.netns, *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)

    def wait_listening(self, port: int, timeout: float = 10.0) -> None:
        """Wait until something accepts TCP on ``address:port`` (probed from the root side)."""
        end = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection((self.address, port), timeout=0.5).close()
                return
            except OSError as error:
                if time.monotonic() > end:
                    where = f"{self.address}:{port}"
                    raise RegionError(f"nothing listens on {where}: {error}") from None
                time.sleep(0.05)

    def close(self) -> None:
        """Stop its processes (SIGTERM, then SIGKILL after 5 s), remove namespace and veth."""
        _reap(self._processes, timeout=5.0)
        self._processes.clear()
        with _locked():
            _kill_namespace(self.netns)

    def __enter__(self) -> Region:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def regions(*names: str) -> Iterator[tuple[Region, ...]]:
    """``with regions("a", "b") as (a, b):`` — every one removed on exit, even after a failure."""
    with contextlib.ExitStack() as stack:
        yield tuple(stack.enter_context(Region.create(name)) for name in names)


@dataclass(frozen=True)
class Toxic:
    """A Toxiproxy toxic: ``type`` and ``attributes`` as its API spells them."""

    type: str
    attributes: Mapping[str, int]
    stream: Stream = "downstream"
    """downstream = data from the upstream (B) to the client (A); upstream = A to B."""
    toxicity: float = 1.0
    """The fraction of connections it applies to."""

    @property
    def name(self) -> str:
        return f"{self.type}_{self.stream}"


def latency(ms: int, jitter_ms: int = 0, stream: Stream = "downstream") -> Toxic:
    """Delay each chunk by ``ms`` ± ``jitter_ms`` (on both streams: add one per stream)."""
    return Toxic("latency", {"latency": ms, "jitter": jitter_ms}, stream)


def bandwidth(kilobytes_per_second: int, stream: Stream = "downstream") -> Toxic:
    return Toxic("bandwidth", {"rate": kilobytes_per_second}, stream)


def timeout(ms: int, stream: Stream = "downstream") -> Toxic:
    """Deliver nothing, then close the connection after ``ms`` (0: never close)."""
    return Toxic("timeout", {"timeout": ms}, stream)


def blackhole() -> Toxic:
    """Accept connections and deliver nothing, forever: a partition as a client sees it."""
    return timeout(0, "upstream")


def reset_peer(after_ms: int = 0, stream: Stream = "downstream") -> Toxic:
    """Reset the connection (TCP RST) after ``after_ms``."""
    return Toxic("reset_peer", {"timeout": after_ms}, stream)


@dataclass(frozen=True)
class Link:
    """A one-way path: a Toxiproxy proxy listening at ``listen``, forwarding to ``upstream``."""

    name: str
    listen: str
    """``host:port`` it listens on (for a link from a region: that region's root side)."""
    upstream: str

    @property
    def url(self) -> str:
        """``http://`` address of the target, as seen from the link's source."""
        return f"http://{self.listen}"


class Toxiproxy:
    """A running toxiproxy-server and a typed client of its HTTP API."""

    def __init__(self, process: subprocess.Popen[bytes], api: str) -> None:
        self.process = process
        self.api = api

    @classmethod
    @contextlib.contextmanager
    def running(cls, log: Path | None = None) -> Iterator[Toxiproxy]:
        """Start the server (built by tests/tools/install-toxiproxy.sh) and stop it on exit."""
        binary = subprocess.run(
            ["bash", str(REPO / "tests" / "tools" / "install-toxiproxy.sh"), "--check"],
            capture_output=True,
            text=True,
            check=False,
        )
        if binary.returncode != 0:
            raise RegionError(binary.stderr.strip())
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        with contextlib.ExitStack() as stack:
            out = stack.enter_context(log.open("wb")) if log else subprocess.DEVNULL
            argv = [binary.stdout.strip(), "-host", "127.0.0.1", "-port", str(port)]
            process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
            stack.callback(_reap, [process], 5.0)
            server = cls(process, f"http://127.0.0.1:{port}")
            server._wait_ready()
            yield server

    def _wait_ready(self, timeout: float = 10.0) -> None:
        end = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RegionError(f"toxiproxy-server exited with {self.process.returncode}")
            try:
                self._call("GET", "/version")
                return
            except (OSError, RegionError):
                if time.monotonic() > end:
                    raise RegionError(f"toxiproxy-server not answering at {self.api}") from None
                time.sleep(0.05)

    def _call(self, method: str, path: str, body: object = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.api + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as error:
            detail = error.read().decode().strip()
            error.close()
            raise RegionError(f"toxiproxy {method} {path}: {error.code} {detail}") from None
        return json.loads(text) if text and text[0] in "{[" else text

    def link(self, source: Region, target: Region, port: int, listen_port: int = 0) -> Link:
        """Open ``source`` -> ``target:port``; ``listen_port`` 0 picks a free one (kept on heal)."""
        name = f"{source.name}-{target.name}-{port}"
        return self.proxy(name, f"{source.host_address}:{listen_port}", f"{target.address}:{port}")

    def proxy(self, name: str, listen: str, upstream: str) -> Link:
        """Any link: from the root namespace (``listen`` on 127.0.0.1), or to it (``upstream``
        on 127.0.0.1, ``listen`` on a region's root side), for a region that is the host's."""
        body = {"name": name, "listen": listen, "upstream": upstream, "enabled": True}
        proxy = self._call("POST", "/proxies", body)
        return Link(name, str(proxy["listen"]), upstream)

    def remove(self, link: Link) -> None:
        self._call("DELETE", f"/proxies/{link.name}")

    def add_toxic(self, link: Link, toxic: Toxic) -> None:
        body = {"name": toxic.name, "type": toxic.type, "stream": toxic.stream}
        body_attrs = {"toxicity": toxic.toxicity, "attributes": dict(toxic.attributes)}
        self._call("POST", f"/proxies/{link.name}/toxics", {**body, **body_attrs})

    def remove_toxic(self, link: Link, toxic: Toxic) -> None:
        self._call("DELETE", f"/proxies/{link.name}/toxics/{toxic.name}")

    def cut(self, link: Link) -> None:
        """Disable the link: its open connections close, new ones are refused."""
        self._call("PATCH", f"/proxies/{link.name}", {"enabled": False})

    def heal(self, link: Link) -> None:
        """Enable the link again, on the same port."""
        self._call("PATCH", f"/proxies/{link.name}", {"enabled": True})

    def reset(self) -> None:
        """Enable every link and remove every toxic."""
        self._call("POST", "/reset")
