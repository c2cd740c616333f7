"""Command lines of the local control plane's processes, and where their files live.

Pure: `cluster.py` calls these to start each component. Every server binds
127.0.0.1 (the real node's kubelet and API relay, `node.py`, also its bridge
address); ports are `$LLMFLEET_CLUSTER_PORT_BASE` (16400) plus PORT_OFFSETS.
Flags are written as mappings so each reads like a component's config file.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    "kubelet-healthz": 48,  # the real node's kubelet (node.py), healthz on 127.0.0.1
    "kubelet": 50,  # ... and its API, on the node's bridge address
}
SERVICE_CIDR = "10.96.0.0/16"  # required by the API server; nothing ever connects to it


@dataclass(frozen=True)
class Layout:
    """The state folder and ports of one local control plane."""

    state: Path
    port_base: int

    def port(self, name: str) -> int:
        return self.port_base + PORT_OFFSETS[name]

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port('apiserver')}"

    @property
    def pki(self) -> Path:
        return self.state / "pki"

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig users and tests get."""
        return self.state / "kubeconfig"

    def client_kubeconfig(self, client: str) -> Path:
        return self.state / "kubeconfigs" / f"{client}.yaml"


def flags(values: Mapping[str, object]) -> list[str]:
    """Command-line flags, `--name=value`, from a mapping."""
    return [f"--{name}={value}" for name, value in values.items()]


def etcd(layout: Layout, bin_dir: Path) -> list[str]:
    client = f"http://127.0.0.1:{layout.port('etcd')}"
    peer = f"http://127.0.0.1:{layout.port('etcd-peer')}"
    values = {
        "name": "default",
        "data-dir": layout.state / "etcd",
        "listen-client-urls": client,
        "advertise-client-urls": client,
        "listen-peer-urls": peer,
        "initial-advertise-peer-urls": peer,
        "initial-cluster": f"default={peer}",
        "unsafe-no-fsync": "true",  # a throwaway test cluster: speed over durability
        "log-level": "warn",
    }
    return [str(bin_dir / "etcd"), *flags(values)]


def apiserver(layout: Layout, bin_dir: Path) -> list[str]:
    pki = layout.pki
    values = {
        "etcd-servers": f"http://127.0.0.1:{layout.port('etcd')}",
        "bind-address": "127.0.0.1",
        "advertise-address": "127.0.0.1",  # else the host's first address is published
        "secure-port": layout.port("apiserver"),
        "tls-cert-file": pki / "apiserver.crt",
        "tls-private-key-file": pki / "apiserver.key",
        # Published in kube-system/extension-apiserver-authentication, where the
        # controllers' delegated authentication reads it (kubeadm's set of flags).
        "client-ca-file": pki / "ca.crt",
        "requestheader-client-ca-file": pki / "ca.crt",
        "requestheader-allowed-names": "front-proxy-client",
        "requestheader-username-headers": "X-Remote-User",
        "requestheader-group-headers": "X-Remote-Group",
        "requestheader-extra-headers-prefix": "X-Remote-Extra-",
        "service-cluster-ip-range": SERVICE_CIDR,
        "service-account-issuer": layout.server,
        "service-account-key-file": pki / "sa.pub",
        "service-account-signing-key-file": pki / "sa.key",
        # Node: a kubelet may read and write only what its own pods need;
        # NodeRestriction: and change only its own Node and those pods.
        "authorization-mode": "Node,RBAC",
        "enable-admission-plugins": "NodeRestriction",
        "token-auth-file": pki / "tokens.csv",
        # How `kubectl logs`/exec reach the real node's kubelet (kwok's nodes have none).
        "kubelet-client-certificate": pki / "kubelet-client.crt",
        "kubelet-client-key": pki / "kubelet-client.key",
        "kubelet-certificate-authority": pki / "ca.crt",
        "kubelet-preferred-address-types": "InternalIP",
        "allow-privileged": "true",
        "profiling": "false",
        "v": 1,
    }
    return [str(bin_dir / "kube"), "apiserver", *flags(values)]


def _serving_controller(layout: Layout, name: str) -> dict[str, object]:
    """Flags kube-controller-manager and kube-scheduler share."""
    kubeconfig = layout.client_kubeconfig(name)
    return {
        "kubeconfig": kubeconfig,
        "authentication-kubeconfig": kubeconfig,
        "authorization-kubeconfig": kubeconfig,
        "bind-address": "127.0.0.1",
        "secure-port": layout.port(name),
        "leader-elect": "false",
        "profiling": "false",
        "v": 1,
    }


def controller_manager(layout: Layout, bin_dir: Path) -> list[str]:
    own = {
        "use-service-account-credentials": "true",  # each controller with its own RBAC
        "root-ca-file": layout.pki / "ca.crt",
        "service-account-private-key-file": layout.pki / "sa.key",
    }
    values = _serving_controller(layout, "controller-manager") | own
    return [str(bin_dir / "kube"), "controller-manager", *flags(values)]


def scheduler(layout: Layout, bin_dir: Path) -> list[str]:
    values = _serving_controller(layout, "scheduler")
    return [str(bin_dir / "kube"), "scheduler", *flags(values)]


def kwok(layout: Layout, bin_dir: Path) -> list[str]:
    values = {
        "kubeconfig": layout.client_kubeconfig("kwok"),
        "config": E2E / "kwok.yaml",
        "server-address": f"127.0.0.1:{layout.port('kwok')}",
    }
    return [str(bin_dir / "kwok"), *flags(values)]


def lws_configuration(layout: Layout) -> dict[str, Any]:
    """The LWS controller's config file: no leader election, no in-cluster cert
    management; webhooks served on loopback with a certificate from our CA."""
    return {
        "apiVersion": "config.lws.x-k8s.io/v1alpha1",
        "kind": "Configuration",
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "webhook": {
            "host": "127.0.0.1",
            "port": layout.port("lws-webhook"),
            "certDir": str(layout.pki / "lws-webhook"),
        },
        "metrics": {"bindAddress": "0"},
        "health": {"healthProbeBindAddress": f"127.0.0.1:{layout.port('lws-health')}"},
    }


def lws_controller(layout: Layout, bin_dir: Path, config: Path) -> list[str]:
    return [str(bin_dir / "lws-controller"), f"--config={config}", "--zap-log-level=info"]


def podrunner(layout: Layout) -> list[str]:
    values = {
        "kubeconfig": layout.client_kubeconfig("podrunner"),
        "state": layout.state,
        "llmfleet": REPO / ".venv" / "bin" / "llmfleet",
    }
    return [sys.executable, str(E2E / "podrunner.py"), *flags(values)]
