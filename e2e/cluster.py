"""Bring the local e2e control plane up, report on it, and take it down.

Called by `e2e/cluster.sh` (`make cluster-up` / `make cluster-down`) and so by
the session fixture in `e2e/conftest.py`. `up` builds the binaries (cached, see
`controlplane/build.sh`), then starts on 127.0.0.1 only: etcd, kube-apiserver
(RBAC, token auth, service-account keys, default admission plugins),
kube-controller-manager, kube-scheduler, kwok with fake GPU nodes, the
LeaderWorkerSet controller (webhooks served on loopback, registered by URL) and
the pod runner. It waits until all are healthy and prints `export KUBECONFIG=`.
Every `up` from a stopped state starts from an empty etcd; credentials persist.

State folder (`$LLMFLEET_STATE_DIR`, default `<repo>/.llmfleet`): `kubeconfig`
(admin), `kubeconfigs/`, `pki/`, `pids/`, `logs/<component>.log`, `pods/` (logs
of pod processes), `etcd/`. Ports: `$LLMFLEET_CLUSTER_PORT_BASE` (16400) plus
the offsets in PORT_OFFSETS; the API server is on base + 43.
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

import pki
import yaml
from kubeapi import Api, ApiError
from processes import Processes

E2E = Path(__file__).resolve().parent
REPO = E2E.parent
PORT_OFFSETS = {
    "etcd": 1,
    "etcd-peer": 2,
    "apiserver": 43,
    "lws-webhook": 44,
    "controller-manager": 57,
    "scheduler": 59,
    "kwok": 80,
    "lws-health": 81,
}
COMPONENTS = [
    "etcd",
    "apiserver",
    "controller-manager",
    "scheduler",
    "kwok",
    "lws-controller",
    "podrunner",
]
SERVICE_CIDR = "10.96.0.0/16"  # required by the API server; nothing ever connects to it
GPU_NODES = int(os.environ.get("LLMFLEET_GPU_NODES", "4"))
GPU_PRODUCT = "NVIDIA-H100-80GB-HBM3"
DEFAULT_SA = "/api/v1/namespaces/default/serviceaccounts/default"


class StartError(Exception):
    """A component did not become healthy; `component` names whose log to show."""

    def __init__(self, component: str, message: str) -> None:
        super().__init__(f"{component}: {message}")
        self.component = component


def http_ok(port: int, path: str, tls: bool = True) -> bool:
    """True if GET https://127.0.0.1:port/path answers 200 (certificate not checked)."""
    conn: http.client.HTTPConnection
    if tls:
        conn = http.client.HTTPSConnection(
            "127.0.0.1", port, timeout=2, context=ssl._create_unverified_context()
        )
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def condition_true(obj: dict[str, Any], kind: str) -> bool:
    conditions = obj.get("status", {}).get("conditions") or []
    return any(c["type"] == kind and c["status"] == "True" for c in conditions)


def nodes_ready(api: Api) -> int:
    """How many nodes are Ready and untainted."""
    count = 0
    for node in api.get("/api/v1/nodes")["items"]:
        count += condition_true(node, "Ready") and not node["spec"].get("taints")
    return count


def exists(api: Api, path: str) -> bool:
    try:
        api.get(path)
    except ApiError as error:
        if error.status == 404:
            return False
        raise
    return True


def flags(values: dict[str, object]) -> list[str]:
    """Command-line flags, `--name=value`, from a mapping read like a config file."""
    return [f"--{name}={value}" for name, value in values.items()]


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def gpu_node(index: int) -> dict[str, Any]:
    """A fake 8-GPU node; its pods get IPs from 127.<index>.0.0/24."""
    name = f"gpu-node-{index}"
    resources = {
        "cpu": "192",
        "memory": "2Ti",
        "pods": "110",
        "ephemeral-storage": "10Ti",
        "nvidia.com/gpu": "8",
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                "topology.kubernetes.io/zone": "local-a",
                "nvidia.com/gpu.product": GPU_PRODUCT,
                "nvidia.com/gpu.count": "8",
            },
        },
        "spec": {"podCIDR": f"127.{index}.0.0/24", "podCIDRs": [f"127.{index}.0.0/24"]},
        # Nodes keep the status they are created with (a kubelet registers this way).
        "status": {
            "allocatable": resources,
            "capacity": resources,
            "addresses": [
                {"type": "InternalIP", "address": f"127.{index}.255.1"},
                {"type": "Hostname", "address": name},
            ],
        },
    }


def lws_webhook_configurations(manifest: str, port: int, ca_bundle: str) -> list[dict[str, Any]]:
    """LWS's webhook configurations, pointed at its out-of-cluster server by URL.

    In a cluster they name a Service and get their CA injected; here the server
    listens on 127.0.0.1 with a certificate from our CA. The pod webhooks get the
    objectSelector that LWS's own kustomize patches add, so other pods never wait
    on LWS.
    """
    configurations = [doc for doc in yaml.safe_load_all(manifest) if doc]
    for configuration in configurations:
        configuration["metadata"]["name"] = "lws-" + configuration["metadata"]["name"]
        for hook in configuration["webhooks"]:
            path = hook["clientConfig"]["service"]["path"]
            hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{path}", "caBundle": ca_bundle}
            if "pods" in hook["rules"][0]["resources"]:
                selector = {"key": "leaderworkerset.sigs.k8s.io/name", "operator": "Exists"}
                hook["objectSelector"] = {"matchExpressions": [selector]}
    return configurations


class Cluster:
    """One local control plane, identified by its state folder."""

    def __init__(self, state: Path, port_base: int) -> None:
        self.state = state
        self.pki = state / "pki"
        self.kubeconfig = state / "kubeconfig"
        self.ports = {name: port_base + offset for name, offset in PORT_OFFSETS.items()}
        self.server = f"https://127.0.0.1:{self.ports['apiserver']}"
        self.processes = Processes(state)

    def wait_for(
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

    # ---- queries -----------------------------------------------------------------

    def is_up(self) -> bool:
        running = all(self.processes.pid(name) for name in COMPONENTS)
        return running and http_ok(self.ports["apiserver"], "/readyz")

    def api(self) -> Api:
        return Api.from_kubeconfig(str(self.kubeconfig))

    def status(self) -> int:
        for name in COMPONENTS:
            pid = self.processes.pid(name)
            print(f"{name:20} {'pid ' + str(pid) if pid else 'stopped'}")
        up = self.is_up()
        print(f"cluster {'up' if up else 'down'} (state: {self.state})")
        return 0 if up else 1

    # ---- up ----------------------------------------------------------------------

    def up(self) -> int:
        if self.is_up():
            print(f"control plane already up (state: {self.state})")
            print(f"export KUBECONFIG={self.kubeconfig}")
            return 0
        self.down(quiet=True)  # whatever a half-finished start left behind
        started = time.monotonic()
        try:
            self._start_all(self._build())
        except (StartError, ApiError, subprocess.CalledProcessError) as error:
            component = getattr(error, "component", None)
            print(f"cluster-up failed: {error}", file=sys.stderr)
            if component:
                self._print_log_tail(component)
            self.down(quiet=True)
            return 1
        print(f"control plane up in {time.monotonic() - started:.1f} s (state: {self.state})")
        print(f"export KUBECONFIG={self.kubeconfig}")
        return 0

    def _build(self) -> Path:
        result = subprocess.run(
            ["bash", str(E2E / "controlplane" / "build.sh")],
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        )
        return Path(result.stdout.strip().splitlines()[-1])

    def _prepare_state(self) -> None:
        pki.ensure(self.pki)
        pki.write_kubeconfig(self.kubeconfig, self.pki, self.server, "admin")
        for name in pki.USERS:
            pki.write_kubeconfig(
                self.state / "kubeconfigs" / f"{name}.yaml", self.pki, self.server, name
            )
        for fresh in ("etcd", "pods"):
            shutil.rmtree(self.state / fresh, ignore_errors=True)
        (self.state / "podrunner.ready").unlink(missing_ok=True)

    def _start_all(self, bin_dir: Path) -> None:
        self._prepare_state()
        self._start_etcd(bin_dir)
        self._start_apiserver(bin_dir)
        self._start_controller_manager(bin_dir)
        self._start_scheduler(bin_dir)
        api = self.api()
        for index in range(1, GPU_NODES + 1):
            api.request("POST", "/api/v1/nodes", gpu_node(index))
        self._start_kwok(bin_dir)
        self._start_lws(bin_dir, api)
        self._start_podrunner()
        self._wait_until_usable(api)

    def _start_etcd(self, bin_dir: Path) -> None:
        client = f"http://127.0.0.1:{self.ports['etcd']}"
        peer = f"http://127.0.0.1:{self.ports['etcd-peer']}"
        argv = [str(bin_dir / "etcd")]
        argv += flags(
            {
                "name": "default",
                "data-dir": self.state / "etcd",
                "listen-client-urls": client,
                "advertise-client-urls": client,
                "listen-peer-urls": peer,
                "initial-advertise-peer-urls": peer,
                "initial-cluster": f"default={peer}",
                "unsafe-no-fsync": "true",  # a test cluster: speed over durability
                "log-level": "warn",
            }
        )
        self.processes.start("etcd", argv)
        self.wait_for("etcd", "healthy", lambda: http_ok(self.ports["etcd"], "/health", tls=False))

    def _start_apiserver(self, bin_dir: Path) -> None:
        argv = [str(bin_dir / "kube"), "apiserver"]
        argv += flags(
            {
                "etcd-servers": f"http://127.0.0.1:{self.ports['etcd']}",
                "bind-address": "127.0.0.1",
                "advertise-address": "127.0.0.1",  # else the host's first address is published
                "secure-port": self.ports["apiserver"],
                "tls-cert-file": self.pki / "apiserver.crt",
                "tls-private-key-file": self.pki / "apiserver.key",
                "service-cluster-ip-range": SERVICE_CIDR,
                "service-account-issuer": self.server,
                "service-account-key-file": self.pki / "sa.pub",
                "service-account-signing-key-file": self.pki / "sa.key",
                "authorization-mode": "RBAC",
                "token-auth-file": self.pki / "tokens.csv",
                "allow-privileged": "true",
                "profiling": "false",
                "v": 1,
            }
        )
        self.processes.start("apiserver", argv)
        ready = lambda: http_ok(self.ports["apiserver"], "/readyz")  # noqa: E731
        self.wait_for("apiserver", "ready", ready, timeout=90)

    def _controller_flags(self, name: str) -> list[str]:
        """Flags kube-controller-manager and kube-scheduler share."""
        kubeconfig = self.state / "kubeconfigs" / f"{name}.yaml"
        return flags(
            {
                "kubeconfig": kubeconfig,
                "authentication-kubeconfig": kubeconfig,
                "authorization-kubeconfig": kubeconfig,
                "bind-address": "127.0.0.1",
                "secure-port": self.ports[name],
                "leader-elect": "false",
                "profiling": "false",
                "v": 1,
            }
        )

    def _start_controller_manager(self, bin_dir: Path) -> None:
        argv = [str(bin_dir / "kube"), "controller-manager"]
        argv += self._controller_flags("controller-manager")
        argv += flags(
            {
                "use-service-account-credentials": "true",  # each controller with its own RBAC
                "root-ca-file": self.pki / "ca.crt",
                "service-account-private-key-file": self.pki / "sa.key",
            }
        )
        self.processes.start("controller-manager", argv)

    def _start_scheduler(self, bin_dir: Path) -> None:
        argv = [str(bin_dir / "kube"), "scheduler", *self._controller_flags("scheduler")]
        self.processes.start("scheduler", argv)

    def _start_kwok(self, bin_dir: Path) -> None:
        argv = [str(bin_dir / "kwok")]
        argv += flags(
            {
                "kubeconfig": self.state / "kubeconfigs" / "kwok.yaml",
                "config": E2E / "kwok.yaml",
                "server-address": f"127.0.0.1:{self.ports['kwok']}",
            }
        )
        self.processes.start("kwok", argv)

    def _start_lws(self, bin_dir: Path, api: Api) -> None:
        crd = yaml.safe_load((bin_dir / "lws-crd.yaml").read_text())
        crd_path = (
            f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd['metadata']['name']}"
        )
        api.apply(crd_path, crd)
        established = lambda: condition_true(api.get(crd_path), "Established")  # noqa: E731
        self.wait_for("apiserver", "serving the LeaderWorkerSet CRD", established)
        config = self.state / "lws-config.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "config.lws.x-k8s.io/v1alpha1",
                    "kind": "Configuration",
                    "leaderElection": {"leaderElect": False},
                    "internalCertManagement": {"enable": False},
                    "webhook": {
                        "host": "127.0.0.1",
                        "port": self.ports["lws-webhook"],
                        "certDir": str(self.pki / "lws-webhook"),
                    },
                    "metrics": {"bindAddress": "0"},
                    "health": {"healthProbeBindAddress": f"127.0.0.1:{self.ports['lws-health']}"},
                }
            )
        )
        self.processes.start(
            "lws-controller",
            [str(bin_dir / "lws-controller"), f"--config={config}", "--zap-log-level=info"],
            env={"KUBECONFIG": str(self.state / "kubeconfigs" / "lws-controller.yaml")},
        )
        self.wait_for(
            "lws-controller", "serving webhooks", lambda: port_open(self.ports["lws-webhook"])
        )
        manifest = (bin_dir / "lws-webhooks.yaml").read_text()
        for configuration in lws_webhook_configurations(
            manifest, self.ports["lws-webhook"], pki.ca_bundle(self.pki)
        ):
            kind = configuration["kind"].lower() + "s"
            api.apply(
                f"/apis/admissionregistration.k8s.io/v1/{kind}/{configuration['metadata']['name']}",
                configuration,
            )

    def _start_podrunner(self) -> None:
        argv = [sys.executable, str(E2E / "podrunner.py")]
        argv += flags(
            {
                "kubeconfig": self.state / "kubeconfigs" / "podrunner.yaml",
                "state": self.state,
                "llmfleet": REPO / ".venv" / "bin" / "llmfleet",
            }
        )
        self.processes.start("podrunner", argv)

    def _wait_until_usable(self, api: Api) -> None:
        checks: list[tuple[str, str, Callable[[], bool]]] = [
            (
                "controller-manager",
                "healthy",
                lambda: http_ok(self.ports["controller-manager"], "/healthz"),
            ),
            ("scheduler", "healthy", lambda: http_ok(self.ports["scheduler"], "/healthz")),
            (
                "lws-controller",
                "ready",
                lambda: http_ok(self.ports["lws-health"], "/readyz", tls=False),
            ),
            ("kwok", "reporting every node Ready", lambda: nodes_ready(api) == GPU_NODES),
            ("podrunner", "ready", (self.state / "podrunner.ready").exists),
            (
                "controller-manager",
                "making the default ServiceAccount",
                lambda: exists(api, DEFAULT_SA),
            ),
        ]
        for component, what, check in checks:
            self.wait_for(component, what, check)
        for name in COMPONENTS:
            if not self.processes.pid(name):
                raise StartError(name, "exited")

    def _print_log_tail(self, component: str, lines: int = 40) -> None:
        log = self.processes.log(component)
        if log.exists():
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            print(f"--- last {len(tail)} lines of {log}", *tail, sep="\n", file=sys.stderr)

    # ---- down --------------------------------------------------------------------

    def down(self, quiet: bool = False) -> int:
        names = self.processes.recorded()
        for name in names:
            self.processes.stop(name)
        if not quiet:
            print(f"stopped {len(names)} control-plane processes (state: {self.state})")
        return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    args = parser.parse_args()
    state = Path(os.environ.get("LLMFLEET_STATE_DIR") or REPO / ".llmfleet").resolve()
    cluster = Cluster(state, int(os.environ.get("LLMFLEET_CLUSTER_PORT_BASE", "16400")))
    commands: dict[str, Callable[[], int]] = {
        "up": cluster.up,
        "down": cluster.down,
        "status": cluster.status,
    }
    return commands[args.command]()


if __name__ == "__main__":
    sys.exit(main())
