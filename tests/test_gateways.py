"""The operator finds every gateway replica through the Kube seam (``--gateway-selector``).

Cases: ready pods with an address become base URLs (an IPv6 one in brackets); a pod not
ready, without an address or terminating is left out; the list is read once per refresh
and read again after it; while the API server refuses, the last list serves; DirectScrape
sums the pending requests of every replica the finder names, each a real gateway; the
operator's flags pick the finder, the URLs given, or refuse a malformed or doubled choice.
"""

from __future__ import annotations

from typing import Any

import pytest

from llmfleet_operator import operator_main
from llmfleet_operator.gateways import GatewayPods
from llmfleet_operator.kube import ServerError
from llmfleet_operator.metrics import DirectScrape
from llmfleet_operator.resources import POD, Resource
from tests.test_metrics_sources import real_gateway

Manifest = dict[str, Any]


def pod(
    name: str, ip: str | None = "127.0.8.1", ready: bool = True, deleting: bool = False
) -> Manifest:
    meta: Manifest = {"name": name, "namespace": "llmfleet-system"}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-01T00:00:00Z"
    status: Manifest = {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    if ip:
        status["podIP"] = ip
    return {"metadata": meta, "status": status}


class Pods:
    """The Kube seam's list, counted; ``fail`` makes the API server refuse."""

    def __init__(self, pods: list[Manifest]) -> None:
        self.pods, self.calls, self.fail = pods, [], False

    def list(self, kind: Resource, namespace: str | None, selector: str) -> list[Manifest]:
        assert kind == POD
        self.calls.append((namespace, selector))
        if self.fail:
            raise ServerError(None, "the API server did not answer")
        return self.pods


def finder(pods: Pods) -> GatewayPods:
    return GatewayPods(pods, "llmfleet-system", "app=gw", 8080, refresh_seconds=5)  # type: ignore[arg-type]


def test_ready_pods_with_an_address_are_the_gateways() -> None:
    pods = Pods(
        [
            pod("a"),
            pod("b", ip="fd00::2"),
            pod("starting", ready=False),
            pod("no-address", ip=None),
            pod("leaving", deleting=True),
        ]
    )
    assert finder(pods)(0.0) == ("http://127.0.8.1:8080", "http://[fd00::2]:8080")
    assert pods.calls == [("llmfleet-system", "app=gw")]


def test_read_once_per_refresh_and_the_last_list_while_refused() -> None:
    pods = Pods([pod("a")])
    find = finder(pods)
    assert find(100.0) == find(104.9) == ("http://127.0.8.1:8080",)
    assert len(pods.calls) == 1
    pods.fail = True
    assert find(105.0) == ("http://127.0.8.1:8080",)
    assert len(pods.calls) == 2
    pods.fail, pods.pods = False, []
    assert find(110.0) == ()


def test_direct_scrape_sums_every_gateway_replica() -> None:
    with real_gateway({("team", "llama"): 2}) as one, real_gateway({("team", "llama"): 5}) as two:
        scrape = DirectScrape(gateway_urls=lambda now: [f"http://{one}", f"http://{two}"])
        assert scrape.gateway_pending("team", "llama", 0.0) == 7


def test_the_operators_flags_choose_the_finder() -> None:
    parse = operator_main._parser().parse_args
    kube: Any = Pods([])
    chosen = operator_main._gateways(parse(["--gateway-selector", "sys/app=gw"]), kube)
    assert isinstance(chosen, GatewayPods)
    assert operator_main._gateways(parse(["--gateway-metrics-url", "http://g:1"]), kube) == [
        "http://g:1"
    ]
    for bad in (
        ["--gateway-selector", "no-slash"],
        ["--gateway-selector", "a/b", "--gateway-metrics-url", "http://g:1"],
    ):
        with pytest.raises(SystemExit):
            operator_main._gateways(parse(bad), kube)
