"""Three regions under load, one of them run by the operator on the local control plane.

Region ``a`` is this machine's own network namespace: the local control plane, the operator,
an LLMDeployment of two simulated replicas (``spec.serving.region: a``), LLMTenants applied
with kubectl, and the real gateway in cluster mode with the chart's service account. Regions
``b`` and ``c`` are network namespaces of their own, each with a gateway and an engine
simulator (:mod:`tests.gateway.regional`). Every path between regions is a Toxiproxy link
with 25 ms of latency each way.

In order: ``/v1/models`` names the three regions and answers name ``a``; the LLMDeployment
scaled to zero under streaming load: the streams fail over to the peers and none is lost;
a tenant restricted to ``a`` meanwhile is held and never reaches ``b`` or ``c`` (counted
there); a partition holds ``a``'s requests and healing it lets them through, no peer taking
more at once than the spare room it advertised; the replicas back, traffic fails back to
``a`` within seconds; ``a``'s gateway killed mid-stream: the streams it carried are lost and
counted, and clients that move to the next region's gateway lose nothing after.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from kit import EXAMPLES, apply, apply_ready, wait_for
from kubernetes.client import ApiClient
from localop import SYSTEM, LocalOperator, install_chart, kubectl
from traffic import MODEL, Streams, gateway_process

from tests.gateway.regional import (
    GATEWAY_PORT,
    Site,
    metric,
    start_site,
    tenant_manifests,
    write_manifests,
)
from tests.regions import Toxiproxy, latency, regions
from tests.runtime.conftest import free_port

OPEN_KEY, RESIDENT_KEY = (f"sk-e2e-{secrets.token_hex(12)}" for _ in range(2))
SPARE = 8
"""A peer's spare room when idle: 4 slots plus the default engine queue of 4."""


def answered_by(url: str, key: str, max_tokens: int = 4) -> str:
    """The region that served one completion through the gateway at ``url``."""
    sdk = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=60)
    raw = sdk.completions.with_raw_response.create(model=MODEL, prompt="hi", max_tokens=max_tokens)
    return raw.headers["x-llmfleet-region"]


def regions_of(url: str) -> list[str]:
    sdk = openai.OpenAI(base_url=url + "/v1", api_key=OPEN_KEY, max_retries=0)
    try:
        listed = sdk.models.list().data
    except openai.APIError:
        return []
    return sorted((listed[0].model_extra or {}).get("regions", [])) if listed else []


def most_at_once(log: Path, tenant: str, since: float) -> int:
    """The most requests of ``tenant`` a gateway's access log shows in flight at once (each
    from its arrival, ``time - duration_s``, to ``time``), among those that ended after
    ``since`` (wall clock)."""
    spans = []
    for line in log.read_text().splitlines():
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        if record.get("tenant") == tenant and "duration_s" in record and record["time"] > since:
            spans.append((record["time"] - record["duration_s"], record["time"]))
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    most = level = 0
    for _, step in edges:
        level += step
        most = max(most, level)
    return most


def set_replicas(kubeconfig: Path, namespace: str, name: str, replicas: int) -> None:
    patched = kubectl(
        kubeconfig, "patch", "llmdeployment", name, "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"replicas": replicas}}),
    )  # fmt: skip
    assert patched.returncode == 0, patched.stderr


@pytest.mark.timeout(900)
def test_three_regions_fail_over_hold_residency_and_fail_back(
    operator: LocalOperator,
    api_client: ApiClient,
    kubeconfig: Path,
    namespace: str,
    tmp_path: Path,
) -> None:
    install_chart(kubeconfig, f"gateway.tenants.namespaces={{{SYSTEM},{namespace}}}")
    manifest: dict[str, Any] = yaml.safe_load((EXAMPLES / "llama-8b-simulated.yaml").read_text())
    manifest["spec"]["engine"]["maxNumSeqs"] = 4
    manifest["spec"]["serving"] = {"region": "a"}
    deployment = apply_ready(api_client, kubeconfig, namespace, manifest)
    tenants = {"open": (OPEN_KEY, None), "resident": (RESIDENT_KEY, ["a"])}
    models = [deployment, MODEL]  # the LLMDeployment in a; the static model's name in b and c
    for document in tenant_manifests(models, tenants):
        apply(kubeconfig, namespace, document)
    tenants_file = write_manifests(tmp_path / "tenants.yaml", tenant_manifests(models, tenants))
    key = tmp_path / "peer.key"
    key.write_text(secrets.token_hex(16))
    a_port = free_port()

    with regions("b", "c") as (b, c), Toxiproxy.running(tmp_path / "toxiproxy.log") as proxy:
        links = {
            ("b", "a"): proxy.proxy("b-a", f"{b.host_address}:0", f"127.0.0.1:{a_port}"),
            ("c", "a"): proxy.proxy("c-a", f"{c.host_address}:0", f"127.0.0.1:{a_port}"),
            ("a", "b"): proxy.proxy("a-b", "127.0.0.1:0", f"{b.address}:{GATEWAY_PORT}"),
            ("a", "c"): proxy.proxy("a-c", "127.0.0.1:0", f"{c.address}:{GATEWAY_PORT}"),
            ("b", "c"): proxy.link(b, c, GATEWAY_PORT),
            ("c", "b"): proxy.link(c, b, GATEWAY_PORT),
        }
        for link in links.values():
            proxy.add_toxic(link, latency(25, stream="upstream"))
            proxy.add_toxic(link, latency(25, stream="downstream"))

        def peers(name: str) -> dict[str, str]:
            return {target: link.url for (source, target), link in links.items() if source == name}

        flags = ("--namespace", namespace, "--peer-interval-seconds", "0.5")
        sites: dict[str, Site] = {
            region.name: start_site(
                region, MODEL, peers(region.name), key, tenants_file, tmp_path, *flags
            )
            for region in (b, c)
        }
        a_flags = ["--region", "a", "--peer-key-file", str(key)]
        a_flags += ["--peer-interval-seconds", "0.5", "--hold-seconds", "6"]
        for name, url in peers("a").items():
            a_flags += ["--peer", f"{name}={url}"]
        log_a = tmp_path / "gateway-a.log"
        started = gateway_process(
            kubeconfig, namespace, log_a, tenants=True, extra=a_flags, port=a_port
        )
        with started as (address, process):
            url_a = f"http://{address}"
            for site in sites.values():
                site.region.wait_listening(GATEWAY_PORT, timeout=30)
            wait_for("a sees its peers", lambda: regions_of(url_a) == ["a", "b", "c"], timeout=30)
            assert answered_by(url_a, OPEN_KEY) == "a"

            # The model's replicas go under streaming load: the streams fail over, none lost.
            with Streams(address, clients=4, max_tokens=100, spread=1.0, key=OPEN_KEY) as load:
                wait_for("the streams", lambda: load.all_sending and load.done >= 8)
                set_replicas(kubeconfig, namespace, deployment, 0)
                wait_for(
                    "a failing over",
                    lambda: metric(url_a, "llmfleet_gateway_forwarded_requests_total") >= 8,
                    timeout=60,
                )
                # What a's peers serve for it is demand a's autoscaler sees.
                wait_for(
                    "a's pending requests",
                    lambda: metric(url_a, "llmfleet_gateway_pending_requests") > 0,
                )
            assert load.errors == []

            # Residency under the outage: held for a's replicas, never sent to b or c.
            with pytest.raises(openai.APIStatusError) as held:
                answered_by(url_a, RESIDENT_KEY)
            assert held.value.status_code == 503
            resident = f"{namespace}/resident"
            for site in sites.values():
                assert site.metric("llmfleet_gateway_requests_total", tenant=resident) == 0

            # A partition: a's requests are held; healed, they go through, no burst.
            for name in ("b", "c"):
                proxy.cut(links[("a", name)])
            wait_for(
                "a's peers down",
                lambda: metric(url_a, "llmfleet_gateway_peer_up") == 0,
                timeout=30,
            )
            answers: list[str] = []
            held_requests = [
                threading.Thread(target=lambda: answers.append(answered_by(url_a, OPEN_KEY)))
                for _ in range(3 * SPARE)
            ]
            for thread in held_requests:
                thread.start()
            time.sleep(1.5)
            assert answers == []
            healed, since = time.monotonic(), time.time()
            for name in ("b", "c"):
                proxy.heal(links[("a", name)])
            for thread in held_requests:
                thread.join(timeout=30)
            assert len(answers) == 3 * SPARE
            assert set(answers) <= {"b", "c"}
            assert time.monotonic() - healed < 5
            for site in sites.values():
                assert most_at_once(site.log, f"{namespace}/open", since) <= SPARE

            # The replicas back: traffic fails back to a.
            set_replicas(kubeconfig, namespace, deployment, 2)
            back = time.monotonic()
            wait_for("failing back", lambda: answered_by(url_a, OPEN_KEY) == "a", timeout=120)
            failed_back_s = time.monotonic() - back

            # a's gateway killed under load: only the streams it carried are lost.
            entry = [url_a, sites["b"].url]
            lost, after = [], []
            stopping = threading.Event()

            def client() -> None:
                while not stopping.is_set():
                    for url in entry:
                        started = time.monotonic()
                        try:
                            answered_by(url, OPEN_KEY, max_tokens=50)
                            if started > killed_at[0]:
                                after.append(url)
                            break
                        except openai.APIConnectionError:
                            if started < killed_at[0]:
                                lost.append(url)  # in flight at a when it died
                                break
                            continue  # a is gone: the next region's gateway

            killed_at = [float("inf")]
            threads = [threading.Thread(target=client) for _ in range(4)]
            for thread in threads:
                thread.start()
            time.sleep(2)
            killed_at[0] = time.monotonic()
            process.kill()
            time.sleep(3)
            stopping.set()
            for thread in threads:
                thread.join(timeout=60)
    print(f"failed back in {failed_back_s:.1f} s; lost with a's gateway: {len(lost)}")
    assert len(lost) <= 4  # at most one in flight per client
    assert after
    assert set(after) == {sites["b"].url}
    logs = "\n".join(p.read_text() for p in tmp_path.glob("gateway-*.log"))
    for secret in (OPEN_KEY, RESIDENT_KEY, key.read_text()):
        assert secret not in logs
