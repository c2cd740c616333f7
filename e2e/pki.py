"""Credentials for the local e2e control plane: a CA, serving certificates,
service-account keys, static bearer tokens and kubeconfigs.

Called by `cluster.py` on `up`. Everything lives in `<state>/pki` and is made
once per state folder (so a kubeconfig a user copied keeps working across
restarts); `openssl` does the key work. The API server authenticates every
client by a token from `tokens.csv`; RBAC (and, for the real node's kubelet, the
Node authorizer) decides what each one may do. For the real node (`node.py`)
there are also the kubelet's serving certificate and the client certificate the
API server presents to it.
"""

from __future__ import annotations

import base64
import secrets
import subprocess
from pathlib import Path

from manifests import NODE_IP, REAL_NODE_NAME

# (user, groups): one token per client. system:masters for the test-only helpers
# (kwok acts as the kubelet of every fake node, the pod runner patches pod status,
# the LWS controller would otherwise need its whole ClusterRole copied here).
# The controller-manager and scheduler use their real bootstrap RBAC identities.
USERS: dict[str, tuple[str, str]] = {
    "admin": ("llmfleet-admin", "system:masters"),
    "controller-manager": ("system:kube-controller-manager", ""),
    "scheduler": ("system:kube-scheduler", ""),
    "kwok": ("llmfleet-kwok", "system:masters"),
    "lws-controller": ("llmfleet-lws-controller", "system:masters"),
    "podrunner": ("llmfleet-podrunner", "system:masters"),
    # The real node's kubelet (LLMFLEET_REAL_NODE=1): a node identity, so the Node
    # authorizer and NodeRestriction limit it to its own node and pods.
    "kubelet": (f"system:node:{REAL_NODE_NAME}", "system:nodes"),
}
# What the API server presents to kubelets (`kubectl logs`, exec); RBAC binds it
# to the bootstrap role system:kubelet-api-admin.
KUBELET_CLIENT = "kube-apiserver-kubelet-client"
APISERVER_SANS = ["IP:127.0.0.1", f"IP:{NODE_IP}", "DNS:localhost", "DNS:kubernetes",
                  "DNS:kubernetes.default", "DNS:kubernetes.default.svc"]  # fmt: skip

_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
_LEAF = "basicConstraints=critical,CA:FALSE"


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _make_ca(pki: Path) -> None:
    keys = ["-keyout", str(pki / "ca.key"), "-out", str(pki / "ca.crt")]
    _openssl("req", "-x509", *_EC, "-days", "3650", "-subj", "/CN=llmfleet-e2e-ca", *keys)


def _make_cert(pki: Path, key: Path, crt: Path, cn: str, extensions: list[str]) -> None:
    addext = [arg for ext in [_LEAF, *extensions] for arg in ("-addext", ext)]
    signer = ["-CA", str(pki / "ca.crt"), "-CAkey", str(pki / "ca.key")]
    keys = ["-keyout", str(key), "-out", str(crt)]
    _openssl("req", "-x509", *_EC, "-days", "3650", "-subj", f"/CN={cn}", *addext, *signer, *keys)


def _make_serving_cert(pki: Path, key: Path, crt: Path, cn: str, sans: list[str]) -> None:
    extensions = [f"subjectAltName={','.join(sans)}", "extendedKeyUsage=serverAuth"]
    _make_cert(pki, key, crt, cn, extensions)


def _has_sans(crt: Path, sans: list[str]) -> bool:
    """True if certificate `crt` exists and names every one of `sans` (as "IP:..."/"DNS:...")."""
    if not crt.exists():
        return False
    result = subprocess.run(
        ["openssl", "x509", "-in", str(crt), "-noout", "-ext", "subjectAltName"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    # "X509v3 Subject Alternative Name: \n    IP Address:127.0.0.1, DNS:localhost"
    names = result.stdout.partition("\n")[2].split(",")
    present = {name.strip().replace("IP Address:", "IP:") for name in names}
    return all(san in present for san in sans)


def _make_service_account_keys(pki: Path) -> None:
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(pki / "sa.key"))
    _openssl("ec", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))


def _write_tokens(pki: Path) -> None:
    """Give every client of USERS a token, keeping the tokens already issued."""
    path = pki / "tokens.csv"
    lines = path.read_text().splitlines() if path.exists() else []
    issued = {line.split(",")[2] for line in lines}
    for name, (user, groups) in USERS.items():
        if name not in issued:
            lines.append(f'{secrets.token_hex(24)},{user},{name},"{groups}"')
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


def ensure(pki: Path) -> None:
    """Create whatever part of the PKI is missing (all of it on a new state folder).

    A serving certificate made before a name was added to its SANs is made again
    from the same CA, so clients that trust the CA keep working.
    """
    pki.mkdir(parents=True, exist_ok=True)
    pki.chmod(0o700)
    if not (pki / "ca.crt").exists():
        _make_ca(pki)
    if not _has_sans(pki / "apiserver.crt", APISERVER_SANS):
        _make_serving_cert(
            pki, pki / "apiserver.key", pki / "apiserver.crt", "kube-apiserver", APISERVER_SANS
        )
    webhook = pki / "lws-webhook"
    if not (webhook / "tls.crt").exists():
        webhook.mkdir(exist_ok=True)
        sans = ["IP:127.0.0.1", "DNS:localhost"]
        _make_serving_cert(pki, webhook / "tls.key", webhook / "tls.crt", "lws-webhook", sans)
    kubelet = pki / "kubelet"
    kubelet_sans = [f"IP:{NODE_IP}", f"DNS:{REAL_NODE_NAME}"]
    if not _has_sans(kubelet / "tls.crt", kubelet_sans):
        kubelet.mkdir(exist_ok=True)
        _make_serving_cert(pki, kubelet / "tls.key", kubelet / "tls.crt", "kubelet", kubelet_sans)
    if not (pki / "kubelet-client.crt").exists():
        keys = (pki / "kubelet-client.key", pki / "kubelet-client.crt")
        _make_cert(pki, *keys, KUBELET_CLIENT, ["extendedKeyUsage=clientAuth"])
    if not (pki / "sa.key").exists():
        _make_service_account_keys(pki)
    _write_tokens(pki)


def has_node_credentials(pki: Path) -> bool:
    """True if an API server started on this PKI can serve the real node: it knows the
    kubelet's token and its certificate names the node's bridge address."""
    tokens = pki / "tokens.csv"
    issued = tokens.exists() and any(
        line.split(",")[2] == "kubelet" for line in tokens.read_text().splitlines()
    )
    return issued and _has_sans(pki / "apiserver.crt", APISERVER_SANS)


def token(pki: Path, name: str) -> str:
    """The bearer token of client `name` (a key of USERS)."""
    for line in (pki / "tokens.csv").read_text().splitlines():
        fields = line.split(",")
        if fields[2] == name:
            return fields[0]
    raise KeyError(name)


def ca_bundle(pki: Path) -> str:
    """The CA certificate, base64-encoded as kubeconfigs and webhooks want it."""
    return base64.b64encode((pki / "ca.crt").read_bytes()).decode()


def write_kubeconfig(path: Path, pki: Path, server: str, name: str) -> None:
    """A self-contained kubeconfig (CA inline) for client `name`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters:
- name: llmfleet-e2e
  cluster:
    server: {server}
    certificate-authority-data: {ca_bundle(pki)}
users:
- name: {name}
  user:
    token: {token(pki, name)}
contexts:
- name: llmfleet-e2e
  context:
    cluster: llmfleet-e2e
    user: {name}
current-context: llmfleet-e2e
"""
    )
    path.chmod(0o600)
