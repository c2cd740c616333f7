"""The shipping path, one set of steps for every cluster: build the images, load them where
the cluster's nodes run containers, give the nodes their GPUs, install the chart, reach the
gateway.

Used by the shipping tier's fixtures (`conftest.py` beside this file) on two targets, so the
two cannot drift:

- ``local``: the local control plane with a real kubelet node (`LLMFLEET_REAL_NODE=1 bash
  e2e/cluster.sh up`); images go into the node's own containerd.
- ``kind``: a kind cluster (`make kind`, `e2e/shipping/kind.sh`); images go in with `kind load`.

Everything else is the same: the node that runs llmfleet's pods carries the label
``llmfleet.io/node=real`` (the local node also a taint of that key, so the kwok tier's pods
never land there; every pod here tolerates it) and the ``nvidia.com/gpu`` extended resource,
as GPU-less test clusters advertise GPUs; the chart is installed by ``helm upgrade
--install``; the tests reach the gateway with ``kubectl port-forward``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

if __name__ == "__main__":  # run as a script: the e2e helpers are in the folder above
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from components import PORT_OFFSETS
from localop import RELEASE, SYSTEM, helm
from manifests import (
    NODE_IP,
    REAL_NODE_LABELS,
    REAL_NODE_NAME,
    REAL_NODE_TAINT,
    gpu_capacity_patch,
)

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "llmfleet"
# The label of the node that runs the pods (the local node's taint has the same key and value).
NODE_SELECTOR = {REAL_NODE_TAINT["key"]: REAL_NODE_LABELS[REAL_NODE_TAINT["key"]]}
TOLERATION = {"key": REAL_NODE_TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}


def run(
    *argv: str | Path,
    stdin: str | None = None,
    timeout: float = 300,
    env: dict[str, str] | None = None,
) -> str:
    """Run a command (with ``env`` added to this process's); its stdout, or an error carrying
    its stderr."""
    result = subprocess.run(
        [str(a) for a in argv],
        input=stdin,
        env={**os.environ, **env} if env else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        command = " ".join(str(a) for a in argv)
        raise RuntimeError(f"{command} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    return run("kubectl", f"--kubeconfig={kubeconfig}", *args, stdin=stdin)


# ---- images -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Images:
    """References of the images `images/build.sh` built, by name."""

    refs: dict[str, str]
    ids: dict[str, str]

    def repository(self, name: str) -> str:
        return self.refs[name].rsplit(":", 1)[0]

    def tag(self, name: str) -> str:
        return self.refs[name].rsplit(":", 1)[1]


def build_images(names: Sequence[str] = ("operator", "gateway", "engine-sim")) -> Images:
    """Build (cached) the images into the local Docker daemon; the script starts one when none
    runs."""
    out = run("bash", REPO / "images" / "build.sh", *names, timeout=3600)
    refs = [line.strip() for line in out.splitlines() if line.strip()]
    by_name = {name: ref for name in names for ref in refs if f"/{name}:" in ref}
    ids = {
        name: run("docker", "image", "inspect", "-f", "{{.Id}}", ref).strip()
        for name, ref in by_name.items()
    }
    return Images(by_name, ids)


# ---- targets ----------------------------------------------------------------------------


class Target(Protocol):
    """Where the chart goes: how its nodes get images, and what the chart needs there."""

    kubeconfig: Path

    def load(self, refs: Sequence[str]) -> None: ...

    def nodes(self) -> list[str]:
        """The nodes llmfleet's pods run on."""
        ...

    def values(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Local:
    """The local control plane's real node (`e2e/node.py`): it already carries the label, the
    taint and the GPUs; images go into its containerd; pods reach the API server at the
    node's bridge address (no Service routing here), so the chart's pods are told where."""

    kubeconfig: Path
    api_env: list[dict[str, str]]

    def load(self, refs: Sequence[str]) -> None:
        run("bash", REPO / "e2e" / "cluster.sh", "load-images", env={"LLMFLEET_REAL_NODE": "1"})

    def nodes(self) -> list[str]:
        return [REAL_NODE_NAME]

    def values(self) -> dict[str, Any]:
        return {"operator": {"extraEnv": self.api_env}, "gateway": {"extraEnv": self.api_env}}


def local(state: Path, port_base: int) -> Local:
    """The local control plane of ``state`` (its API server at ``port_base`` + 43), whose
    real node is up."""
    port = port_base + PORT_OFFSETS["apiserver"]
    env = [
        {"name": "KUBERNETES_SERVICE_HOST", "value": NODE_IP},
        {"name": "KUBERNETES_SERVICE_PORT", "value": str(port)},
    ]
    return Local(state / "kubeconfig", env)


@dataclass(frozen=True)
class Kind:
    """A kind cluster: images loaded with `kind load`; its nodes labelled and given GPUs."""

    cluster: str
    kubeconfig: Path

    def load(self, refs: Sequence[str]) -> None:
        run("kind", "load", "docker-image", "--name", self.cluster, *refs, timeout=900)

    def nodes(self) -> list[str]:
        names = kubectl(self.kubeconfig, "get", "nodes", "-o", "name").split()
        return [name.removeprefix("node/") for name in names]

    def values(self) -> dict[str, Any]:
        return {}


def prepare_nodes(kubeconfig: Path, nodes: Sequence[str]) -> None:
    """Label ``nodes`` for llmfleet's pods and advertise GPUs on them as an extended resource
    in their status, as GPU-less test clusters do (the kubelet keeps a capacity it does not
    manage itself). The local node registers that way already: the same patch changes
    nothing there."""
    labels = [f"{key}={value}" for key, value in NODE_SELECTOR.items()]
    patch = json.dumps(gpu_capacity_patch())
    for node in nodes:
        kubectl(kubeconfig, "label", "--overwrite", f"node/{node}", *labels)
        kubectl(
            kubeconfig, "patch", "node", node, "--subresource=status", "--type=merge", "-p", patch
        )


# ---- the chart --------------------------------------------------------------------------


def placement() -> dict[str, Any]:
    """Scheduling of every pod of this tier: the real node only."""
    return {"nodeSelector": NODE_SELECTOR, "tolerations": [TOLERATION]}


def chart_values(target: Target, images: Images, tenant_namespace: str) -> dict[str, Any]:
    """The chart's values on ``target``: the images built here, the real node, no HPA (no
    metrics-server), the tenants of ``tenant_namespace``."""
    extra = target.values()

    def workload(name: str) -> dict[str, Any]:
        image = {"repository": images.repository(name), "tag": images.tag(name)}
        return {
            "image": image | {"pullPolicy": "IfNotPresent"},
            # A rebuilt image keeps its tag: its ID in the pod template rolls the pods.
            "podAnnotations": {"llmfleet.io/image-id": images.ids[name]},
            **placement(),
            **extra.get(name, {}),
        }

    return {
        "operator": workload("operator"),
        "gateway": workload("gateway")
        | {
            "replicas": 2,
            "autoscaling": {"enabled": False},
            "tenants": {"enabled": True, "namespaces": [tenant_namespace]},
        },
    }


def install(kubeconfig: Path, values: dict[str, Any], chart: Path = CHART) -> None:
    """`helm upgrade --install` the release and wait until its workloads are ready."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as file:
        yaml.safe_dump(values, file)
        file.flush()
        run(
            helm(),
            "upgrade",
            "--install",
            RELEASE,
            chart,
            f"--kubeconfig={kubeconfig}",
            "--namespace",
            SYSTEM,
            "--create-namespace",
            "--values",
            file.name,
            "--wait",
            "--timeout=300s",
            timeout=360,
        )


def uninstall(kubeconfig: Path) -> None:
    run(helm(), "uninstall", RELEASE, f"--kubeconfig={kubeconfig}", "--namespace", SYSTEM)


@contextmanager
def port_forward(kubeconfig: Path, namespace: str, target: str, port: int) -> Iterator[str]:
    """`kubectl port-forward` to ``target`` (e.g. ``svc/NAME``) on a free local port; yields
    ``127.0.0.1:PORT``."""
    command = [
        "kubectl",
        f"--kubeconfig={kubeconfig}",
        "port-forward",
        "--address=127.0.0.1",
        "-n",
        namespace,
        target,
        f":{port}",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    # It logs a line per connection: keep reading, or a full pipe would stall it.
    reader = threading.Thread(target=process.stdout.read, daemon=True)
    try:
        line = process.stdout.readline()
        found = re.search(r"127\.0\.0\.1:(\d+)", line)
        if not found:
            raise RuntimeError(f"kubectl port-forward {target}: {line.strip()}")
        reader.start()
        yield f"127.0.0.1:{found[1]}"
    finally:
        process.terminate()
        process.wait(timeout=30)
        if reader.is_alive():
            reader.join(timeout=5)  # at EOF now: the process is gone
        process.stdout.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Install the chart with the images built here on the local real node"
        " (up with `LLMFLEET_REAL_NODE=1 make cluster-up`), as the shipping tier does, and"
        " leave it running."
    )
    parser.add_argument("--tenants", default="default", help="the tenants' namespace")
    args = parser.parse_args()
    state = Path(os.environ.get("LLMFLEET_STATE_DIR") or REPO / ".llmfleet").resolve()
    target = local(state, int(os.environ.get("LLMFLEET_CLUSTER_PORT_BASE", "16400")))
    images = build_images()
    target.load(list(images.refs.values()))
    prepare_nodes(target.kubeconfig, target.nodes())
    install(target.kubeconfig, chart_values(target, images, args.tenants))
    print(run(helm(), "status", RELEASE, "-n", SYSTEM, f"--kubeconfig={target.kubeconfig}"))
    print(f"engine image for spec.engine.image: {images.refs['engine-sim']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
