"""The real node: a kubelet with containerd, runc and the CNI plugins on this machine.

Started and stopped by `cluster.py` when `LLMFLEET_REAL_NODE=1` (`down` stops it
whenever it is there). Pods on it are real containers of the images
`images/build.sh` makes, imported into the node's own containerd; their network
namespaces hang off the bridge `llmfleet0` (NODE_IP/24, made here), and nothing
else on the machine is touched but that bridge, its netfilter rules (the CNI
`firewall` plugin) and `/var/log/containers` links. The kubelet serves on
NODE_IP; pods reach the API server there through the relay (`relay.py`) and
the env `KUBERNETES_SERVICE_HOST=NODE_IP`, `KUBERNETES_SERVICE_PORT=<port>`
their manifests set (nothing here answers on the Service ClusterIP).

Files: `<state>/node/` holds the configs, `containerd/` (images; kept across
restarts so a warm `up` imports nothing), `containerd-state/` (the socket and
the running pods), `kubelet/` (its root dir), `cni-ipam/`, `pod-logs/`.
Only one real node per machine: the bridge is global.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from components import E2E, REPO, Layout, flags
from manifests import NODE_IP, POD_SUBNET, REAL_NODE_LABELS, REAL_NODE_NAME, REAL_NODE_TAINT
from processes import Processes

BRIDGE = "llmfleet0"
CNI_BIN = Path("/usr/lib/cni")
CONTAINERD_NAMESPACE = "k8s.io"  # the CRI plugin's
IMAGES = ("pause", "operator", "gateway", "engine-sim")  # images/build.sh's names
# (binary, Debian package) for tests/tools/install-deb.sh; CNI plugins are not on PATH.
PACKAGES = [("containerd", "containerd"), ("runc", "runc"), ("iptables", "iptables"),
            ("host-local", "containernetworking-plugins")]  # fmt: skip
COMPONENTS = ["containerd", "apiserver-relay", "kubelet"]
# The bridge's owner: one state folder at a time may run the machine's real node.
OWNER = Path("/run/llmfleet-node.owner")


class NodeError(Exception):
    """The real node cannot be set up; `component` names whose log to show, if any."""

    def __init__(self, message: str, component: str | None = None) -> None:
        super().__init__(f"{component}: {message}" if component else message)
        self.component = component


@dataclass(frozen=True)
class Paths:
    """Where the node's files live inside one state folder."""

    node: Path

    @classmethod
    def of(cls, layout: Layout) -> Paths:
        return cls(layout.state / "node")

    @property
    def containerd_root(self) -> Path:
        return self.node / "containerd"

    @property
    def containerd_state(self) -> Path:
        return self.node / "containerd-state"

    @property
    def socket(self) -> Path:
        return self.containerd_state / "containerd.sock"

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket}"

    @property
    def kubelet_root(self) -> Path:
        return self.node / "kubelet"

    @property
    def pod_logs(self) -> Path:
        return self.node / "pod-logs"

    @property
    def cni_conf(self) -> Path:
        return self.node / "cni"

    @property
    def ipam(self) -> Path:
        return self.node / "cni-ipam"

    @property
    def kube_binary(self) -> Path:
        """A file naming the `kube` binary the node was started with (`down` needs it)."""
        return self.node / "kube-binary"


# ---- configuration (pure) ------------------------------------------------------------


def containerd_config(paths: Paths, pause_image: str) -> str:
    """containerd's config: its own root, state and socket; the CRI plugin with runc."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{paths.containerd_root}"
state = "{paths.containerd_state}"
disabled_plugins = ["io.containerd.internal.v1.tracing", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "{paths.socket}"

[{cri}]
  sandbox_image = "{pause_image}"
  # Processes here lack CAP_SYS_RESOURCE: without this every sandbox fails
  # ("can't get final child's PID from pipe: EOF").
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false

[{cri}.cni]
  bin_dir = "{CNI_BIN}"
  conf_dir = "{paths.cni_conf}"
  max_conf_num = 1
"""


def cni_config(paths: Paths) -> dict[str, Any]:
    """The pod network: veths on the bridge, addresses from POD_SUBNET, no NAT (pods
    talk to the node's address and to each other only). `firewall` lets pod traffic
    through a FORWARD chain whose policy is DROP (dockerd sets that)."""
    ipam = {
        "type": "host-local",
        "ranges": [[{"subnet": POD_SUBNET, "gateway": NODE_IP}]],
        "dataDir": str(paths.ipam),
    }
    bridge = {
        "type": "bridge",
        "bridge": BRIDGE,
        "isGateway": True,
        "ipMasq": False,
        "hairpinMode": True,
        "ipam": ipam,
    }
    return {
        "cniVersion": "1.0.0",
        "name": "llmfleet",
        "plugins": [bridge, {"type": "firewall", "backend": "iptables"}],
    }


def kubelet_config(layout: Layout, paths: Paths) -> dict[str, Any]:
    """KubeletConfiguration: serves on NODE_IP, authenticates the API server by our CA
    and authorizes through the API server; no cgroup hierarchy of its own, no swap
    check, no image garbage collection (nothing could be pulled back)."""
    pki = layout.pki
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": NODE_IP,
        "port": layout.port("kubelet"),
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": layout.port("kubelet-healthz"),
        "tlsCertFile": str(pki / "kubelet" / "tls.crt"),
        "tlsPrivateKeyFile": str(pki / "kubelet" / "tls.key"),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": paths.endpoint,
        "cgroupDriver": "cgroupfs",
        "cgroupsPerQOS": False,
        "enforceNodeAllocatable": [],
        "failSwapOn": False,
        "podLogsDir": str(paths.pod_logs),
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        # The machine's disk is shared with everything else: evict only when it is full.
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
        },
        "registerWithTaints": [REAL_NODE_TAINT],
        "clusterDomain": "cluster.local",
        "serializeImagePulls": False,
    }


def kubelet(layout: Layout, paths: Paths, kube: Path, config: Path) -> list[str]:
    labels = ",".join(f"{key}={value}" for key, value in REAL_NODE_LABELS.items())
    values = {
        "config": config,
        "kubeconfig": layout.client_kubeconfig("kubelet"),
        "hostname-override": REAL_NODE_NAME,
        "node-ip": NODE_IP,
        "node-labels": labels,
        "root-dir": paths.kubelet_root,
        "v": 1,
    }
    return [str(kube), "kubelet", *flags(values)]


def relay(layout: Layout) -> list[str]:
    """The API server, as the pods see it: NODE_IP:<port>, relayed to its loopback port."""
    port = layout.port("apiserver")
    values = {"listen": f"{NODE_IP}:{port}", "to": f"127.0.0.1:{port}"}
    return [sys.executable, str(E2E / "relay.py"), *flags(values)]


def docker_reference(reference: str) -> str:
    """A reference as containerd's CRI names it (`llmfleet/pause:1` is on docker.io)."""
    first = reference.split("/", 1)[0]
    if "/" not in reference:
        return f"docker.io/library/{reference}"
    if "." in first or ":" in first or first == "localhost":
        return reference
    return f"docker.io/{reference}"


# ---- the node (I/O) --------------------------------------------------------------------


class RealNode:
    """The machine's real node for one state folder: host setup, containerd, kubelet."""

    def __init__(self, layout: Layout, processes: Processes) -> None:
        self.layout = layout
        self.paths = Paths.of(layout)
        self.processes = processes

    def running(self) -> list[str]:
        return [name for name in COMPONENTS if self.processes.pid(name)]

    # -- up

    def prepare(self, kube: Path) -> None:
        """Before the control plane: packages, images, bridge, containerd with the images."""
        paths = self.paths
        self._claim()
        _install_packages()
        references = _build_images()
        paths.node.mkdir(parents=True, exist_ok=True)
        paths.kube_binary.write_text(f"{kube}\n")
        for fresh in (paths.pod_logs, paths.cni_conf):
            shutil.rmtree(fresh, ignore_errors=True)
            fresh.mkdir(parents=True)
        (paths.cni_conf / "10-llmfleet.conflist").write_text(json.dumps(cni_config(paths)))
        config = paths.node / "containerd.toml"
        config.write_text(containerd_config(paths, docker_reference(references["pause"])))
        _create_bridge()
        self.processes.start("containerd", ["containerd", "--config", str(config)])
        self._wait_for_containerd(kube)
        self._reset_sandboxes(kube)  # what a crashed run left behind
        _import_images(kube, paths, references)

    def load_images(self) -> dict[str, str]:
        """Build the images (cached) and import into the running node those it lacks
        or holds in an older build: name -> reference."""
        if not self.processes.pid("containerd"):
            raise NodeError("not running: bring the cluster up with LLMFLEET_REAL_NODE=1")
        references = _build_images()
        kube = Path(self.paths.kube_binary.read_text().strip())
        _import_images(kube, self.paths, references)
        return references

    def start(self, kube: Path) -> None:
        """After the API server is ready: the relay pods reach it by, then the kubelet."""
        config = self.paths.node / "kubelet.yaml"
        config.write_text(yaml.safe_dump(kubelet_config(self.layout, self.paths)))
        self.processes.start("apiserver-relay", relay(self.layout))
        self.processes.start("kubelet", kubelet(self.layout, self.paths, kube, config))

    # -- down

    def stop(self) -> None:
        """Stop the kubelet, remove every pod sandbox through containerd (so the CNI
        plugins release addresses and veths), stop containerd, then clear the host."""
        paths = self.paths
        if not paths.node.exists():
            return
        self.processes.stop("kubelet", timeout=20)
        kube = Path(paths.kube_binary.read_text().strip()) if paths.kube_binary.exists() else None
        config = paths.node / "containerd.toml"
        if kube and kube.exists() and paths.containerd_state.exists():
            if not self.processes.pid("containerd") and config.exists():
                # It died: started again, it finds the pods it ran, and can remove them.
                self.processes.start("containerd", ["containerd", "--config", str(config)])
                with contextlib.suppress(NodeError):
                    self._wait_for_containerd(kube)
            self._reset_sandboxes(kube)
        self.processes.stop("containerd", timeout=20)
        self.processes.stop("apiserver-relay")
        _unmount_under(paths.node)
        for transient in (paths.containerd_state, paths.kubelet_root, paths.ipam):
            shutil.rmtree(transient, ignore_errors=True)
        _remove_log_links(paths.pod_logs)
        if _owner() == str(self.layout.state):
            _delete_bridge()
            OWNER.unlink(missing_ok=True)

    def _wait_for_containerd(self, kube: Path, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while _cri_images(kube, self.paths.endpoint) is None:
            if not self.processes.pid("containerd"):
                raise NodeError("exited before it answered", "containerd")
            if time.monotonic() > deadline:
                raise NodeError(f"not answering after {timeout:.0f} s", "containerd")
            time.sleep(0.2)

    def _reset_sandboxes(self, kube: Path) -> None:
        result = subprocess.run(
            [str(kube), "cri-reset", self.paths.endpoint], capture_output=True, text=True
        )
        if result.returncode != 0:
            print(f"real node: {result.stderr.strip()}", file=sys.stderr)

    def _claim(self) -> None:
        owner = _owner()
        if owner and owner != str(self.layout.state):
            other = Processes(Path(owner))
            if any(other.pid(name) for name in COMPONENTS):
                message = f"the real node of {owner} is running; take that cluster down first"
                raise NodeError(message)
            RealNode(Layout(Path(owner), self.layout.port_base), other).stop()
        OWNER.write_text(str(self.layout.state))


def _owner() -> str | None:
    with contextlib.suppress(OSError):
        return OWNER.read_text().strip() or None
    return None


def _run(*argv: str, env: Mapping[str, str] | None = None) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise NodeError(f"{' '.join(argv)}: {(result.stderr or result.stdout).strip()}")
    return result.stdout


def _install_packages() -> None:
    env = {**os.environ, "PATH": f"{os.environ.get('PATH', '')}:{CNI_BIN}"}
    for binary, package in PACKAGES:
        _run("sh", str(REPO / "tests/tools/install-deb.sh"), binary, package, env=env)


def _saved_images() -> Path:
    """Where images/build.sh saves the images for the node (`<name>.tar`, `<name>.tar.id`)."""
    cache = Path(os.environ.get("LLMFLEET_CACHE") or Path.home() / ".cache" / "llmfleet")
    return cache / "images" / "saved"


def _build_images() -> dict[str, str]:
    """images/build.sh (cached): name -> reference, each also saved for `_import_images`."""
    build = ["bash", str(REPO / "images/build.sh"), "--save", str(_saved_images()), *IMAGES]
    output = _run(*build)
    return dict(zip(IMAGES, output.split(), strict=True))


def _cri_images(kube: Path, endpoint: str) -> dict[str, str] | None:
    """reference -> image id of what containerd holds; None while it does not answer."""
    result = subprocess.run([str(kube), "cri-images", endpoint], capture_output=True, text=True)
    if result.returncode != 0:
        return None
    return {ref: image for image, ref in (line.split() for line in result.stdout.splitlines())}


def _import_images(kube: Path, paths: Paths, references: dict[str, str]) -> None:
    """Import each saved image unless containerd holds the same image id for its reference."""
    saved = _saved_images()
    held = _cri_images(kube, paths.endpoint) or {}
    for name, reference in references.items():
        image_id = (saved / f"{name}.tar.id").read_text().strip()
        if held.get(docker_reference(reference)) == image_id:
            continue
        archive = str(saved / f"{name}.tar")
        ctr = ["ctr", "--address", str(paths.socket), "--namespace", CONTAINERD_NAMESPACE]
        _run(*ctr, "images", "import", archive)
        print(f"real node: imported {reference} ({image_id[:19]})", file=sys.stderr)


def _create_bridge() -> None:
    links = _run("ip", "-o", "link", "show")
    if f": {BRIDGE}:" not in links:
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
    if f" {NODE_IP}/" not in _run("ip", "-o", "-4", "addr", "show", "dev", BRIDGE):
        _run("ip", "addr", "add", f"{NODE_IP}/24", "dev", BRIDGE)
    _run("ip", "link", "set", BRIDGE, "up")


def _delete_bridge() -> None:
    subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True)


def _unmount_under(folder: Path) -> None:
    """Unmount whatever the kubelet and containerd left mounted below `folder`
    (volumes, sandbox /dev/shm), deepest first, before anything there is deleted."""
    prefix = f"{folder.resolve()}/"
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")  # "\040" is a space
        if point.startswith(prefix):
            points.append(point)
    for point in sorted(set(points), key=len, reverse=True):
        if subprocess.run(["umount", point], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True)


def _remove_log_links(pod_logs: Path) -> None:
    """The kubelet links each container's log into /var/log/containers; drop ours."""
    links = Path("/var/log/containers")
    if not links.is_dir():
        return
    for link in links.iterdir():
        with contextlib.suppress(OSError):
            if link.is_symlink() and str(link.readlink()).startswith(f"{pod_logs}/"):
                link.unlink()
