"""A region's serving stack inside its network namespace, for the multi-region tests.

Used by tests/gateway/test_multiregion.py (three such regions) and e2e/test_regions.py (two,
beside the local control plane's). A :class:`Site` is one engine simulator on the region's
loopback and one ``llmfleet gateway --model`` in front of it, listening on the region's
address, with its region, its peers (Toxiproxy links) and the tenants of a manifest file.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import yaml

from llmfleet_contract.api import key_hash
from llmfleet_contract.exposition import parse
from llmfleet_contract.labels import API_KEYS
from tests.gateway.conftest import http
from tests.regions import Region

VENV = Path(sys.executable).parent
GATEWAY_PORT, ENGINE_PORT = 8080, 8000


def tenant_manifests(
    models: list[str], tenants: dict[str, tuple[str, list[str] | None]]
) -> list[dict[str, Any]]:
    """Each tenant's Secret and LLMTenant (``tenants``: name -> key, regions or None), all
    allowed ``models``."""
    documents: list[dict[str, Any]] = []
    for name, (key, regions) in tenants.items():
        spec: dict[str, object] = {"apiKeys": {"name": f"{name}-keys"}, "models": models}
        if regions:
            spec["regions"] = regions
        documents += [
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": f"{name}-keys", "labels": {API_KEYS: "true"}},
                "stringData": {"k": key_hash(key)},
            },
            {
                "apiVersion": "llmfleet.io/v1alpha1",
                "kind": "LLMTenant",
                "metadata": {"name": name},
                "spec": spec,
            },
        ]
    return documents


def write_manifests(path: Path, documents: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump_all(documents))
    return path


@dataclass
class Site:
    """One region's engine and gateway processes."""

    region: Region
    engine: subprocess.Popen[bytes]
    gateway: subprocess.Popen[bytes]
    log: Path
    """The gateway's output (its access log included)."""

    @property
    def url(self) -> str:
        return f"http://{self.region.address}:{GATEWAY_PORT}"

    def client(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=30)

    def metric(self, name: str, **labels: str) -> float:
        return metric(self.url, name, **labels)


def metric(url: str, name: str, **labels: str) -> float:
    """The sum of a gateway's series ``name`` with ``labels``."""
    page = parse(http("GET", url + "/metrics").text)
    return sum(
        series.value
        for series in page.series
        if series.name == name and all(series.labels.get(k) == v for k, v in labels.items())
    )


def start_site(
    region: Region,
    model: str,
    peers: dict[str, str],
    peer_key: Path,
    tenants: Path,
    logs: Path,
    *flags: str,
    slots: int = 4,
) -> Site:
    """An engine of ``slots`` serving ``model`` and a gateway with ``peers`` (region -> URL as
    seen from inside ``region``); ``flags`` go to the gateway."""
    engine_log = logs / f"engine-{region.name}.log"
    gateway_log = logs / f"gateway-{region.name}.log"
    command = [str(VENV / "python"), "-m", "llmfleet_runtime.simulator", "--host", "127.0.0.1"]
    command += ["--port", str(ENGINE_PORT), "--served-model-name", model]
    command += ["--max-num-seqs", str(slots)]
    with engine_log.open("a") as out:
        engine = region.popen(command, stdout=out, stderr=subprocess.STDOUT)
    command = [str(VENV / "llmfleet"), "gateway", "--host", "0.0.0.0"]
    command += ["--port", str(GATEWAY_PORT), "--region", region.name]
    command += ["--model", f"{model}=http://127.0.0.1:{ENGINE_PORT}"]
    command += ["--max-num-seqs", str(slots), "--tenants", str(tenants)]
    command += ["--peer-key-file", str(peer_key), *flags]
    for name, url in peers.items():
        command += ["--peer", f"{name}={url}"]
    with gateway_log.open("w") as out:
        gateway = region.popen(command, stdout=out, stderr=subprocess.STDOUT)
    return Site(region, engine, gateway, gateway_log)
