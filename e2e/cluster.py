"""Bring the local e2e control plane up, report on it, and take it down.

Called by `e2e/cluster.sh` (`make cluster-up` / `make cluster-down`) and so by
the session fixture in `e2e/conftest.py`. `up` builds the binaries (cached, see
`controlplane/build.sh`), then starts on 127.0.0.1 only: etcd, kube-apiserver
(Node and RBAC authorization, token auth, service-account keys, the default
admission plugins and NodeRestriction),
kube-controller-manager, kube-scheduler, kwok with fake GPU nodes, the
LeaderWorkerSet controller (webhooks served on loopback, registered by URL) and
the pod runner. With `LLMFLEET_REAL_NODE=1` it also runs a real node, `llmfleet-node`
(`node.py`: containerd and a kubelet running the images `images/build.sh` makes).
It waits until all are healthy and prints `export KUBECONFIG=`. Every `up` from a
stopped state starts from an empty etcd; credentials persist. `up` with the real node
beside a control plane already up adds the node only; `load-images` rebuilds the
images (cached) and imports the changed ones into the node. `down` stops everything
there is, the real node included.

State folder (`$LLMFLEET_STATE_DIR`, default `<repo>/.llmfleet`): `kubeconfig`
(admin), `kubeconfigs/`, `pki/`, `pids/`, `logs/<component>.log`, `pods/` (logs
of pod processes), `etcd/`, `node/` (the real node's). The API server listens on
127.0.0.1:`$LLMFLEET_CLUSTER_PORT_BASE` + 43 (16443); `$LLMFLEET_GPU_NODES` (4)
fake nodes.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import components
import node
import pki
import yaml
from components import E2E, REPO, Layout
from kubeapi import Api, ApiError
from manifests import (
    REAL_NODE_GPUS,
    REAL_NODE_NAME,
    gpu_capacity_patch,
    gpu_node,
    kubelet_api_admin_binding,
    lws_webhook_configurations,
)
from processes import Processes

COMPONENTS = [
    "etcd",
    "apiserver",
    "controller-manager",
    "scheduler",
    "kwok",
    "lws-controller",
    "podrunner",
]
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
CLUSTER_ROLE_BINDINGS = "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings"
WEBHOOKS = "/apis/admissionregistration.k8s.io/v1"
DEFAULT_SA = "/api/v1/namespaces/default/serviceaccounts/default"
AUTHENTICATION_CONFIGMAP = (
    "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication"
)


class StartError(Exception):
    """A component did not become healthy; `component` names whose log to show."""

    def __init__(self, component: str, message: str) -> None:
        super().__init__(f"{component}: {message}")
        self.component = component


START_ERRORS = (StartError, ApiError, OSError, subprocess.CalledProcessError, node.NodeError)

# ---- checks --------------------------------------------------------------------------


def http_ok(port: int, path: str, tls: bool = True) -> bool:
    """True if GET http(s)://127.0.0.1:port/path answers 200 (certificate not checked)."""
    conn: http.client.HTTPConnection
    if tls:
        unverified = ssl._create_unverified_context()
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=2, context=unverified)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def condition_true(obj: dict[str, Any], kind: str) -> bool:
    conditions = obj.get("status", {}).get("conditions") or []
    return any(c["type"] == kind and c["status"] == "True" for c in conditions)


def nodes_ready(api: Api) -> int:
    """How many kwok nodes are Ready and untainted."""
    nodes = api.get("/api/v1/nodes")["items"]
    kwok = [n for n in nodes if n["metadata"].get("annotations", {}).get("kwok.x-k8s.io/node")]
    return sum(condition_true(n, "Ready") and not n["spec"].get("taints") for n in kwok)


def real_node_usable(api: Api) -> bool:
    """The real node is Ready with its GPUs allocatable; gives it the GPUs when it
    has registered without them (they are not the kubelet's to report)."""
    path = f"/api/v1/nodes/{REAL_NODE_NAME}"
    try:
        found = api.get(path)
    except ApiError as error:
        if error.status == 404:
            return False  # not registered yet
        raise
    status = found.get("status", {})
    if status.get("capacity", {}).get("nvidia.com/gpu") != str(REAL_NODE_GPUS):
        api.strategic_patch(f"{path}/status", gpu_capacity_patch())
        return False
    gpus = status.get("allocatable", {}).get("nvidia.com/gpu")
    return condition_true(found, "Ready") and gpus == str(REAL_NODE_GPUS)


def exists(api: Api, path: str) -> bool:
    try:
        api.get(path)
    except ApiError as error:
        if error.status == 404:
            return False
        raise
    return True


# ---- the cluster ----------------------------------------------------------------------


class Cluster:
    """One local control plane, identified by its state folder."""

    def __init__(self, layout: Layout, gpu_nodes: int, real_node: bool = False) -> None:
        self.layout = layout
        self.state = layout.state
        self.gpu_nodes = gpu_nodes
        self.processes = Processes(layout.state)
        self.node = node.RealNode(layout, self.processes) if real_node else None
        self.components = COMPONENTS + (node.COMPONENTS if real_node else [])

    def is_up(self) -> bool:
        running = all(self.processes.pid(name) for name in self.components)
        return running and http_ok(self.layout.port("apiserver"), "/readyz")

    def status(self) -> int:
        for name in COMPONENTS + node.COMPONENTS:
            pid = self.processes.pid(name)
            if pid or name in self.components:  # the real node's only when asked for or there
                print(f"{name:20} {f'pid {pid}' if pid else 'stopped'}")
        up = self.is_up()
        print(f"cluster {'up' if up else 'down'} (state: {self.state})")
        return 0 if up else 1

    def up(self) -> int:
        if self.is_up():
            print(f"control plane already up (state: {self.state})")
            print(f"export KUBECONFIG={self.layout.kubeconfig}")
            return 0
        if self.node and self._control_plane_up() and pki.has_node_credentials(self.layout.pki):
            return self._add_node()
        self.down(quiet=True)  # whatever a half-finished start left behind
        started = time.monotonic()
        try:
            self._start_all(self._build())
        except START_ERRORS as error:
            self._report_failure(error)
            self.down(quiet=True)
            return 1
        print(f"control plane up in {time.monotonic() - started:.1f} s (state: {self.state})")
        print(f"export KUBECONFIG={self.layout.kubeconfig}")
        return 0

    def down(self, quiet: bool = False) -> int:
        names = self.processes.recorded()
        # The real node first, while containerd still runs to remove its pods' sandboxes.
        node.RealNode(self.layout, self.processes).stop()
        for name in self.processes.recorded():
            self.processes.stop(name)
        if not quiet:
            print(f"stopped {len(names)} control-plane processes (state: {self.state})")
        return 0

    def load_images(self) -> int:
        """Build the images and import the new ones into the real node (`load-images`)."""
        try:
            references = node.RealNode(self.layout, self.processes).load_images()
        except (node.NodeError, OSError) as error:
            print(f"load-images failed: {error}", file=sys.stderr)
            return 1
        print(*references.values(), sep="\n")
        return 0

    def _control_plane_up(self) -> bool:
        running = all(self.processes.pid(name) for name in COMPONENTS)
        return running and http_ok(self.layout.port("apiserver"), "/readyz")

    def _add_node(self) -> int:
        """Start the real node beside a control plane that runs without one (one this
        code started: the API server knows the kubelet's token and its address)."""
        assert self.node is not None
        started = time.monotonic()
        try:
            kube = self._build() / "kube"
            self.node.stop()  # whatever a half-finished start left behind
            self.node.prepare(kube)
            api = Api.from_kubeconfig(str(self.layout.kubeconfig))
            self._start_node(api, kube)
            ready = "registering its node Ready with GPUs"
            self._wait_for("kubelet", ready, lambda: real_node_usable(api))
        except START_ERRORS as error:
            self._report_failure(error)
            self.node.stop()
            return 1
        print(f"real node up in {time.monotonic() - started:.1f} s (state: {self.state})")
        print(f"export KUBECONFIG={self.layout.kubeconfig}")
        return 0

    def _report_failure(self, error: Exception) -> None:
        print(f"cluster-up failed: {error}", file=sys.stderr)
        if isinstance(error, StartError | node.NodeError) and error.component:
            self._print_log_tail(error.component)

    # ---- steps of up -------------------------------------------------------------------

    def _build(self) -> Path:
        build = ["bash", str(E2E / "controlplane" / "build.sh")]
        result = subprocess.run(build, check=True, stdout=subprocess.PIPE, text=True)
        return Path(result.stdout.strip().splitlines()[-1])

    def _prepare_state(self) -> None:
        layout = self.layout
        pki.ensure(layout.pki)
        pki.write_kubeconfig(layout.kubeconfig, layout.pki, layout.server, "admin")
        for client in pki.USERS:
            path = layout.client_kubeconfig(client)
            pki.write_kubeconfig(path, layout.pki, layout.server, client)
        for fresh in ("etcd", "pods"):
            shutil.rmtree(self.state / fresh, ignore_errors=True)
        (self.state / "podrunner.ready").unlink(missing_ok=True)

    def _start_all(self, bin_dir: Path) -> None:
        layout = self.layout
        self._prepare_state()
        kube = bin_dir / "kube"
        if self.node:
            self.node.prepare(kube)
        self.processes.start("etcd", components.etcd(layout, bin_dir))
        etcd_health = lambda: http_ok(layout.port("etcd"), "/health", tls=False)  # noqa: E731
        self._wait_for("etcd", "healthy", etcd_health)
        self.processes.start("apiserver", components.apiserver(layout, bin_dir))
        ready = lambda: http_ok(layout.port("apiserver"), "/readyz")  # noqa: E731
        self._wait_for("apiserver", "ready", ready, timeout=90)
        api = Api.from_kubeconfig(str(layout.kubeconfig))
        # The controllers read their client CA from this ConfigMap; without it they log errors.
        published = lambda: exists(api, AUTHENTICATION_CONFIGMAP)  # noqa: E731
        self._wait_for("apiserver", "publishing its authentication ConfigMap", published)
        self.processes.start("controller-manager", components.controller_manager(layout, bin_dir))
        self.processes.start("scheduler", components.scheduler(layout, bin_dir))
        if self.node:
            self._start_node(api, kube)
        for index in range(1, self.gpu_nodes + 1):
            api.request("POST", "/api/v1/nodes", gpu_node(index))
        self.processes.start("kwok", components.kwok(layout, bin_dir))
        self._start_lws(bin_dir, api)
        self.processes.start("podrunner", components.podrunner(layout))
        self._wait_until_usable(api)

    def _start_node(self, api: Api, kube: Path) -> None:
        assert self.node is not None
        binding = kubelet_api_admin_binding(pki.KUBELET_CLIENT)
        api.apply(f"{CLUSTER_ROLE_BINDINGS}/{binding['metadata']['name']}", binding)
        self.node.start(kube)

    def _start_lws(self, bin_dir: Path, api: Api) -> None:
        """CRD first (the controller needs it), then the controller, then its webhooks."""
        crd = yaml.safe_load((bin_dir / "lws-crd.yaml").read_text())
        crd_path = f"{CRDS}/{crd['metadata']['name']}"
        api.apply(crd_path, crd)
        established = lambda: condition_true(api.get(crd_path), "Established")  # noqa: E731
        self._wait_for("apiserver", "serving the LeaderWorkerSet CRD", established)

        layout = self.layout
        config = self.state / "lws-config.yaml"
        config.write_text(yaml.safe_dump(components.lws_configuration(layout)))
        argv = components.lws_controller(layout, bin_dir, config)
        kubeconfig = {"KUBECONFIG": str(layout.client_kubeconfig("lws-controller"))}
        self.processes.start("lws-controller", argv, env=kubeconfig)
        serving = lambda: port_open(layout.port("lws-webhook"))  # noqa: E731
        self._wait_for("lws-controller", "serving webhooks", serving)

        manifest = (bin_dir / "lws-webhooks.yaml").read_text()
        ca_bundle = pki.ca_bundle(layout.pki)
        for hooks in lws_webhook_configurations(manifest, layout.port("lws-webhook"), ca_bundle):
            resource = hooks["kind"].lower() + "s"
            api.apply(f"{WEBHOOKS}/{resource}/{hooks['metadata']['name']}", hooks)

    def _wait_until_usable(self, api: Api) -> None:
        port = self.layout.port
        kcm, sa = "controller-manager", "making the default ServiceAccount"
        checks: list[tuple[str, str, Callable[[], bool]]] = [
            (kcm, "healthy", lambda: http_ok(port(kcm), "/healthz")),
            ("scheduler", "healthy", lambda: http_ok(port("scheduler"), "/healthz")),
            ("lws-controller", "ready", lambda: http_ok(port("lws-health"), "/readyz", tls=False)),
            ("kwok", "reporting every node Ready", lambda: nodes_ready(api) == self.gpu_nodes),
            ("podrunner", "ready", (self.state / "podrunner.ready").exists),
            (kcm, sa, lambda: exists(api, DEFAULT_SA)),
        ]
        if self.node:
            ready = "registering its node Ready with GPUs"
            checks.append(("kubelet", ready, lambda: real_node_usable(api)))
        for component, what, check in checks:
            self._wait_for(component, what, check)
        for name in self.components:
            if not self.processes.pid(name):
                raise StartError(name, "exited")

    def _wait_for(
        self, component: str, what: str, check: Callable[[], bool], timeout: float = 60.0
    ) -> None:
        """Poll `check` until true; fail at once if `component` has exited."""
        deadline = time.monotonic() + timeout
        while not check():
            if not self.processes.pid(component):
                raise StartError(component, f"exited before it was {what}")
            if time.monotonic() > deadline:
                raise StartError(component, f"not {what} after {timeout:.0f} s")
            time.sleep(0.2)

    def _print_log_tail(self, component: str, lines: int = 40) -> None:
        log = self.processes.log(component)
        if log.exists():
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            print(f"--- last {len(tail)} lines of {log}", *tail, sep="\n", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "status", "load-images"])
    args = parser.parse_args()
    state = Path(os.environ.get("LLMFLEET_STATE_DIR") or REPO / ".llmfleet").resolve()
    layout = Layout(state, int(os.environ.get("LLMFLEET_CLUSTER_PORT_BASE", "16400")))
    gpu_nodes = int(os.environ.get("LLMFLEET_GPU_NODES", "4"))
    real_node = os.environ.get("LLMFLEET_REAL_NODE", "") not in ("", "0")
    cluster = Cluster(layout, gpu_nodes, real_node)
    commands: dict[str, Callable[[], int]] = {
        "up": cluster.up,
        "down": cluster.down,
        "status": cluster.status,
        "load-images": cluster.load_images,
    }
    return commands[args.command]()


if __name__ == "__main__":
    sys.exit(main())
