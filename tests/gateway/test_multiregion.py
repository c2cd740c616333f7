"""Three regions, each in its own network namespace with its gateway and an engine simulator,
the WAN between them a Toxiproxy link per direction (:mod:`tests.regions`). Real processes:
``llmfleet gateway --region R --peer ...`` and ``python -m llmfleet_runtime.simulator``; the
clients are the official ``openai`` SDK from the root namespace.

Cases: answers name the region that served them and ``/v1/models`` the regions serving a
model; with region a's engine gone, a's requests fail over to b or c and none fails, while a
tenant restricted to a never reaches b or c (counted there); saturating a spills to the peers
and keeps a short request's time to first token within the objective; a partition between a
and its peers holds a's requests, and healing it lets them through; a forged peer request is
refused.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from llmfleet_gateway.peers import ModelSummary, Peers
from llmfleet_gateway.routing import Choice, RouteReason
from tests.gateway.conftest import http
from tests.gateway.regional import (
    GATEWAY_PORT,
    Site,
    start_site,
    tenant_manifests,
    write_manifests,
)
from tests.regions import Link, Toxiproxy, regions
from tests.runtime.conftest import stop

SLOTS = 4
OBJECTIVE_S = 0.5
OPEN_KEY, RESIDENT_KEY = (f"sk-{secrets.token_hex(8)}" for _ in range(2))
BUSY = "llmfleet_gateway_busy_seconds_total"


@dataclass
class World:
    sites: dict[str, Site]
    proxy: Toxiproxy
    links: dict[tuple[str, str], Link]

    def cut_off(self, name: str) -> None:
        for (source, _), link in self.links.items():
            if source == name:
                self.proxy.cut(link)

    def heal(self) -> None:
        for link in self.links.values():
            self.proxy.heal(link)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    key = tmp_path / "peer.key"
    key.write_text(secrets.token_hex(16))
    tenants = write_manifests(
        tmp_path / "tenants.yaml",
        tenant_manifests(["m"], {"open": (OPEN_KEY, None), "resident": (RESIDENT_KEY, ["a"])}),
    )
    with regions("a", "b", "c") as found, Toxiproxy.running(tmp_path / "toxiproxy.log") as proxy:
        by_name = dict(zip("abc", found, strict=True))
        links = {
            (source, target): proxy.link(by_name[source], by_name[target], GATEWAY_PORT)
            for source in by_name
            for target in by_name
            if source != target
        }
        flags = ["--ttft-objective-seconds", str(OBJECTIVE_S), "--peer-interval-seconds", "0.5"]
        flags += ["--hold-seconds", "8", "--scrape-seconds", "0.1"]
        # No engine queue: a replica's requests all hold a slot, so the estimate (prefill
        # only) is a request's real wait, and a saturated region spills at once.
        flags += ["--engine-queue", "0"]
        sites = {
            name: start_site(
                region,
                "m",
                {target: link.url for (source, target), link in links.items() if source == name},
                key,
                tenants,
                tmp_path,
                *flags,
                slots=SLOTS,
            )
            for name, region in by_name.items()
        }
        for site in sites.values():
            site.region.wait_listening(GATEWAY_PORT, timeout=30)
        world = World(sites, proxy, links)
        wait_until(
            "every gateway sees its peers",
            lambda: all(len(regions_of(site)) == 3 for site in sites.values()),
        )
        yield world
    log = "\n".join(p.read_text() for p in sorted(tmp_path.glob("gateway-*.log")))
    for secret in (OPEN_KEY, RESIDENT_KEY, key.read_text()):
        assert secret not in log


def wait_until(what: str, check: object, timeout: float = 20.0) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def regions_of(site: Site) -> list[str]:
    try:
        answer = http("GET", site.url + "/v1/models", Authorization=f"Bearer {OPEN_KEY}")
        return list(json.loads(answer.text)["data"][0]["regions"])
    except (OSError, KeyError, IndexError, ValueError):
        return []


def served_by(site: Site, key: str, stream: bool = False) -> str:
    """One short completion through ``site``: the region that served it."""
    sdk = site.client(key)
    if stream:
        with sdk.completions.with_streaming_response.create(
            model="m", prompt="hi", max_tokens=4, stream=True
        ) as answer:
            assert sum(1 for line in answer.iter_lines() if line.startswith("data: {")) == 4
            return answer.headers["x-llmfleet-region"]
    raw = sdk.completions.with_raw_response.create(model="m", prompt="hi", max_tokens=4)
    assert raw.parse().usage.completion_tokens == 4
    return raw.headers["x-llmfleet-region"]


def test_answers_and_models_name_their_regions(world: World) -> None:
    a = world.sites["a"]
    assert served_by(a, OPEN_KEY) == "a"
    assert sorted(regions_of(a)) == ["a", "b", "c"]
    body = json.dumps({"model": "m", "prompt": "hi", "max_tokens": 1}).encode()
    forged = http(
        "POST",
        a.url + "/v1/completions",
        body,
        Authorization=f"Bearer {OPEN_KEY}",
        **{"x-llmfleet-hop": "b"},
    )
    assert (forged.status, json.loads(forged.text)["error"]["code"]) == (401, "invalid_peer_key")


def test_an_outage_fails_over_and_residency_holds(world: World) -> None:
    a, b, c = (world.sites[name] for name in "abc")
    stop(a.engine)
    served = [served_by(a, OPEN_KEY, stream=i % 2 == 1) for i in range(12)]
    assert set(served) <= {"b", "c"}, served  # every one answered, none by the dead region
    assert a.metric("llmfleet_gateway_forwarded_requests_total", reason="Failover") == 12
    # The peers' replicas did the work, and the peers meter it for the tenant; a metered only
    # its tries at its dead engine.
    busy = {site.region.name: site.metric(BUSY, tenant="default/open") for site in (a, b, c)}
    assert busy["b"] + busy["c"] > 10 * busy["a"], busy
    with pytest.raises(openai.APIStatusError) as held:
        served_by(a, RESIDENT_KEY)
    # Refused by a's dead engine (502) or held for a's replicas (503): never sent away.
    assert held.value.status_code in (502, 503)
    for peer in (b, c):
        assert peer.metric("llmfleet_gateway_requests_total", tenant="default/resident") == 0
        assert peer.metric("llmfleet_gateway_residency_refusals_total") == 0
    with pytest.raises(openai.PermissionDeniedError) as refused:
        served_by(b, RESIDENT_KEY)
    assert refused.value.code == "region_not_allowed"


def test_saturation_spills_and_keeps_the_objective(world: World) -> None:
    a, b, c = (world.sites[name] for name in "abc")
    stopping = threading.Event()
    regions_seen: list[str] = []

    def flood() -> None:
        sdk = a.client(OPEN_KEY)
        while not stopping.is_set():
            raw = sdk.completions.with_raw_response.create(model="m", prompt="x", max_tokens=400)
            regions_seen.append(raw.headers["x-llmfleet-region"])

    threads = [threading.Thread(target=flood) for _ in range(2 * SLOTS)]  # a full, room at b, c
    for thread in threads:
        thread.start()
    try:
        wait_until("a spilling", lambda: {"b", "c"} & set(regions_seen), timeout=30)
        # What a spilled is demand its own autoscaler sees (requests pending at a).
        wait_until(
            "spilled requests counted as a's pending",
            lambda: a.metric("llmfleet_gateway_pending_requests") > 0,
        )
        waits = []
        for _ in range(10):
            started = time.monotonic()
            with a.client(OPEN_KEY).completions.with_streaming_response.create(
                model="m", prompt="hi", max_tokens=2, stream=True
            ) as answer:
                next(line for line in answer.iter_lines() if line.startswith("data: {"))
                waits.append(time.monotonic() - started)
        resident = served_by(a, RESIDENT_KEY)
    finally:
        stopping.set()
        for thread in threads:
            thread.join(timeout=60)
    assert resident == "a"
    assert sorted(waits)[8] < OBJECTIVE_S, waits  # p90: a slot at a takes 0.2 s on average
    assert a.metric("llmfleet_gateway_forwarded_requests_total", reason="Spill") > 0
    for peer in (b, c):
        assert peer.metric("llmfleet_gateway_requests_total", tenant="default/resident") == 0


def test_a_partition_holds_requests_and_healing_lets_them_through(world: World) -> None:
    a = world.sites["a"]
    stop(a.engine)
    world.cut_off("a")
    wait_until("a's peers down", lambda: a.metric("llmfleet_gateway_peer_up") == 0)
    answers: list[str] = []
    threads = [
        threading.Thread(target=lambda: answers.append(served_by(a, OPEN_KEY))) for _ in range(6)
    ]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    assert not answers  # held: no replica here, no peer reachable
    healed = time.monotonic()
    world.heal()
    for thread in threads:
        thread.join(timeout=20)
    assert len(answers) == 6
    assert set(answers) <= {"b", "c"}
    assert time.monotonic() - healed < 5  # a few peer polls


def peers_with(**spare: int) -> Peers:
    """Peers b and c that answered a summary just now, each ``spare`` requests of room."""
    urls = {name: f"http://{name}" for name in spare}
    found = Peers.of("a", urls, "key", interval=1.0, typical_s=0.1)
    for peer in found.peers:
        peer.up, peer.fetched_at = True, 0.0
        peer.models = {"m": ModelSummary(ready=1, wait_s=0.1, spare=spare[peer.region])}
    return found


def local(estimate: float | None, reason: RouteReason = RouteReason.LEAST_TTFT) -> Choice:
    return Choice(None if estimate is None else "r", reason, estimated_ttft_s=estimate)


def test_spill_by_estimate_has_hysteresis() -> None:
    """Local estimates of a short request (no prefill of its own): a typical one adds 0.1 s."""
    peers = peers_with(b=10)
    pick = peers.pick("m", local(0.5), 0.5, None, 0.0, set())  # typical: 0.6 > 0.5
    assert pick is not None
    assert (pick.peer.region, pick.why) == ("b", "Spill")
    assert peers.pick("m", local(0.35), 0.5, None, 0.0, set()) is not None  # 0.45: not < 0.4
    assert peers.pick("m", local(0.25), 0.5, None, 0.0, set()) is None  # 0.35: back home
    assert peers.pick("m", local(0.35), 0.5, None, 0.0, set()) is None  # and stays


def test_a_long_prompt_is_no_reason_to_leave() -> None:
    """Its own prefill is the same in every region: only the wait before it counts."""
    peers = peers_with(b=10)
    idle_here = local(0.9)  # 0.85 s of it the prompt's own prefill
    assert peers.pick("m", idle_here, 0.5, None, 0.0, set(), own_s=0.85) is None
    busy_here = local(1.4)  # 0.55 s of wait: the region is over the objective
    pick = peers.pick("m", busy_here, 0.5, None, 0.0, set(), own_s=0.85)
    assert pick is not None  # b: 0.1 s of wait + 0.85 s < 1.4 s
    assert pick.peer.region == "b"


def test_a_peer_gets_no_more_than_its_spare_room_and_residency_rules() -> None:
    peers = peers_with(b=2, c=1)
    saturated = local(None, RouteReason.SATURATED)
    picks = [peers.pick("m", saturated, None, None, 0.0, set()) for _ in range(4)]
    assert [p.peer.region if p else None for p in picks] == ["b", "b", "c", None]
    first = picks[0]
    assert first is not None
    first.peer.done("m")  # one ended: room for one more
    again = peers.pick("m", saturated, None, None, 0.0, set())
    assert again is not None
    assert again.peer.region == "b"
    fresh = peers_with(b=5, c=5)
    assert fresh.pick("m", saturated, None, frozenset({"a"}), 0.0, set()) is None
    only_c = fresh.pick("m", local(None, RouteReason.NO_REPLICA), None, frozenset({"c"}), 0, set())
    assert only_c is not None
    assert (only_c.peer.region, only_c.why) == ("c", "Failover")
    assert fresh.pick("m", saturated, None, None, 10.0, set()) is None  # summaries went stale
    cold = local(None, RouteReason.NO_REPLICA)
    assert fresh.pick("m", cold, None, None, 0.0, set(), startup_s=0.05) is None  # wakes first
    assert fresh.pick("m", cold, None, None, 0.0, set(), startup_s=90.0) is not None
