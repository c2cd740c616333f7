"""The region harness (tests/regions.py): namespaces, links through Toxiproxy, faults, cleanup.

Cases: region A reaches B through its link and by no direct path, and B sees the proxy as the
client; latency, bandwidth, a cut, a blackhole and a reset act on the link and heal when removed;
closing a region leaves no namespace, veth or process; the sweep removes namespaces whose owner
died and spares live ones. A server runs in B, clients in A (`ip netns exec`); needs root.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.regions import (
    STATE,
    Link,
    Region,
    Toxic,
    Toxiproxy,
    bandwidth,
    blackhole,
    latency,
    namespaces,
    regions,
    reset_peer,
    sweep_stale,
)

PORT = 8000

SERVER = r"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall
    def do_GET(self):
        if self.path.startswith("/bytes/"):
            body = b"x" * int(self.path[len("/bytes/"):])
        else:
            body = f"{sys.argv[3]} from {self.client_address[0]}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Handler).serve_forever()
"""

# GET url `count` times over one connection; print each round trip, or the error's type.
CLIENT = r"""
import http.client, json, sys, time, urllib.parse
url = urllib.parse.urlsplit(sys.argv[1])
count, limit = int(sys.argv[2]), float(sys.argv[3])
start, rounds, body, error = time.monotonic(), [], b"", None
try:
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=limit)
    conn.connect()
    for _ in range(count):
        begin = time.monotonic()
        conn.request("GET", url.path or "/")
        body = conn.getresponse().read()
        rounds.append(time.monotonic() - begin)
except Exception as e:
    error = type(e).__name__
elapsed = time.monotonic() - start
report = {"rounds": rounds, "body": body[:100].decode(), "error": error, "elapsed": elapsed}
print(json.dumps(report))
"""


@dataclass(frozen=True)
class World:
    a: Region
    b: Region
    toxiproxy: Toxiproxy
    link: Link


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    if os.geteuid() != 0:
        pytest.fail("tests/test_regions.py needs root: it makes network namespaces and veths")
    with regions("a", "b") as (a, b), Toxiproxy.running() as toxiproxy:
        b.popen([sys.executable, "-I", "-c", SERVER, b.address, str(PORT), "b"])
        b.wait_listening(PORT)
        yield World(a, b, toxiproxy, toxiproxy.link(a, b, PORT))


@pytest.fixture
def net(world: World) -> World:
    world.toxiproxy.reset()
    return world


def get(region: Region, url: str, count: int = 1, limit: float = 2.0) -> dict[str, Any]:
    """Run the client inside ``region``; its JSON report."""
    result = region.run([sys.executable, "-I", "-c", CLIENT, url, str(count), str(limit)])
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def ok(region: Region, url: str, count: int = 1) -> dict[str, Any]:
    report = get(region, url, count)
    assert report["error"] is None, report
    return report


def test_a_reaches_b_through_its_link_only(net: World) -> None:
    a, b = net.a, net.b
    # B sees the proxy's address (B's root side), not A's.
    assert ok(a, net.link.url)["body"] == f"b from {b.host_address}"
    for region, url in [
        (a, f"http://{b.address}:{PORT}"),  # direct: no route
        (b, net.link.url),  # A's link is out of B's reach
        (a, net.toxiproxy.api + "/version"),  # the API is on the root namespace's loopback
    ]:
        report = get(region, url)
        assert report["error"] is not None, (region.name, url, report)
        assert report["elapsed"] < 1.0, report


def test_latency_shows_in_round_trip_and_goes_away(net: World) -> None:
    baseline = statistics.median(ok(net.a, net.link.url, count=5)["rounds"])
    toxic = latency(100, jitter_ms=10)
    net.toxiproxy.add_toxic(net.link, toxic)
    rounds = ok(net.a, net.link.url, count=5)["rounds"]
    net.toxiproxy.remove_toxic(net.link, toxic)
    healed = statistics.median(ok(net.a, net.link.url, count=5)["rounds"])

    assert all(0.085 <= r <= 0.4 for r in rounds), rounds
    assert statistics.median(rounds) / baseline > 5, (baseline, rounds)
    assert healed < baseline + 0.03, (baseline, healed)


def test_bandwidth_limits_a_download(net: World) -> None:
    url = net.link.url + "/bytes/30000"
    fast = ok(net.a, url)["rounds"][0]
    net.toxiproxy.add_toxic(net.link, bandwidth(100))  # KB/s: ~0.3 s for 30 kB
    slow = ok(net.a, url)["rounds"][0]
    assert 0.2 < slow < 2.0, (fast, slow)
    assert slow > 5 * fast, (fast, slow)


def test_cut_refuses_at_once_and_heal_restores(net: World) -> None:
    ok(net.a, net.link.url)
    net.toxiproxy.cut(net.link)
    report = get(net.a, net.link.url)
    assert report["error"] == "ConnectionRefusedError", report
    assert report["elapsed"] < 0.5, report
    net.toxiproxy.heal(net.link)
    assert ok(net.a, net.link.url)["body"].startswith("b from")


@pytest.mark.parametrize(
    ("toxic", "errors", "within"),
    [
        (blackhole(), {"TimeoutError"}, (0.4, 1.5)),  # the client's 0.5 s read timeout
        (reset_peer(), {"ConnectionResetError", "RemoteDisconnected"}, (0.0, 0.5)),
    ],
    ids=["blackhole", "reset_peer"],
)
def test_fault_fails_requests_until_removed(
    net: World, toxic: Toxic, errors: set[str], within: tuple[float, float]
) -> None:
    net.toxiproxy.add_toxic(net.link, toxic)
    report = get(net.a, net.link.url, limit=0.5)
    assert report["error"] in errors, report
    assert within[0] <= report["elapsed"] <= within[1], report
    net.toxiproxy.remove_toxic(net.link, toxic)
    ok(net.a, net.link.url)


def test_close_leaves_no_namespace_veth_or_process() -> None:
    with Region.create("c") as c:
        # A child of the region's process: only the namespace sweep can find it.
        shell = c.popen(["sh", "-c", "sleep 60 & echo $!; wait"], stdout=subprocess.PIPE)
        assert shell.stdout is not None
        orphan = int(shell.stdout.readline())
        assert c.netns in namespaces()
    assert c.netns not in namespaces()
    assert subprocess.run(["ip", "link", "show", c.netns], capture_output=True).returncode != 0
    assert not (STATE / c.netns).exists()
    assert shell.returncode is not None
    assert not _running(orphan)


def test_sweep_removes_dead_owners_namespaces_and_spares_live_ones(world: World) -> None:
    with Region.create("stale") as stale:
        finished = subprocess.Popen(["true"])
        finished.wait()
        (STATE / stale.netns).write_text(str(finished.pid))
        assert sweep_stale() == [stale.netns]
        assert stale.netns not in namespaces()
        assert {world.a.netns, world.b.netns} <= set(namespaces())
    ok(world.a, world.link.url)


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (its reaper may lag a moment)."""
    end = time.monotonic() + 2
    while time.monotonic() < end:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        if state == "Z":
            return False
        time.sleep(0.05)
    return True
