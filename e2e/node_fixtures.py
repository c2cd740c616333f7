"""Fixtures for tests that need the real node (`node.py`): import them into a test module,

    from node_fixtures import real_node  # noqa: F401

`real_node` adds the node to the session's control plane (`LLMFLEET_REAL_NODE=1 bash
e2e/cluster.sh up`: a control plane already up keeps running and gets the node beside it),
then loads the current images into its containerd (`cluster.sh load-images`, so a node left
up by an earlier run never runs stale images). Building the images is part of the first
call (minutes when cold, cached after). The node goes down with the control plane.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

import pytest
from components import E2E, PORT_OFFSETS, REPO
from manifests import NODE_IP, REAL_NODE_NAME, REAL_NODE_TAINT
from node import IMAGES


@dataclass(frozen=True)
class RealNode:
    """What a test needs to put pods on the real node and let them reach the API server."""

    name: str
    images: dict[str, str]  # images/build.sh's name -> reference, loaded into the node
    api_host: str  # where pods reach the API server (KUBERNETES_SERVICE_HOST)
    api_port: int  # ... and its port (KUBERNETES_SERVICE_PORT)

    @property
    def api_env(self) -> list[dict[str, str]]:
        """Container env pointing the in-cluster config at the API server (there is no
        Service ClusterIP routing here; explicit env beats the kubelet's)."""
        return [
            {"name": "KUBERNETES_SERVICE_HOST", "value": self.api_host},
            {"name": "KUBERNETES_SERVICE_PORT", "value": str(self.api_port)},
        ]

    @property
    def placement(self) -> dict[str, object]:
        """Pod spec fields that put a pod on this node (and only there)."""
        toleration = {"key": REAL_NODE_TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}
        return {"nodeSelector": {"llmfleet.io/node": "real"}, "tolerations": [toleration]}


def _cluster_sh(command: str, timeout: float) -> str:
    env = {**os.environ, "LLMFLEET_REAL_NODE": "1"}
    argv = ["bash", str(E2E / "cluster.sh"), command]
    result = subprocess.run(
        argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr)[-5000:]
        pytest.fail(f"cluster.sh {command} failed ({result.returncode}):\n{output}", pytrace=False)
    return result.stdout


@pytest.fixture(scope="session")
def real_node(cluster: object) -> RealNode:
    _cluster_sh("up", timeout=1800)
    references = _cluster_sh("load-images", timeout=1800).split()
    port_base = int(os.environ.get("LLMFLEET_CLUSTER_PORT_BASE", "16400"))
    return RealNode(
        name=REAL_NODE_NAME,
        images=dict(zip(IMAGES, references, strict=True)),
        api_host=NODE_IP,
        api_port=port_base + PORT_OFFSETS["apiserver"],
    )
