"""Credentials for the local e2e control plane: a CA, serving certificates,
service-account keys, static bearer tokens and kubeconfigs.

Called by `cluster.py` on `up`. Everything lives in `<state>/pki` and is made
once per state folder (so a kubeconfig a user copied keeps working across
restarts); `openssl` does the key work. The API server authenticates every
client by a token from `tokens.csv`; RBAC decides what each one may do.
"""

from __future__ import annotations

import base64
import secrets
import subprocess
from pathlib import Path

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
}

_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
_SERVER_EXTENSIONS = ["basicConstraints=critical,CA:FALSE", "extendedKeyUsage=serverAuth"]


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _make_ca(pki: Path) -> None:
    keys = ["-keyout", str(pki / "ca.key"), "-out", str(pki / "ca.crt")]
    _openssl("req", "-x509", *_EC, "-days", "3650", "-subj", "/CN=llmfleet-e2e-ca", *keys)


def _make_serving_cert(pki: Path, key: Path, crt: Path, cn: str, sans: list[str]) -> None:
    extensions = [f"subjectAltName={','.join(sans)}", *_SERVER_EXTENSIONS]
    addext = [arg for ext in extensions for arg in ("-addext", ext)]
    signer = ["-CA", str(pki / "ca.crt"), "-CAkey", str(pki / "ca.key")]
    keys = ["-keyout", str(key), "-out", str(crt)]
    _openssl("req", "-x509", *_EC, "-days", "3650", "-subj", f"/CN={cn}", *addext, *signer, *keys)


def _make_service_account_keys(pki: Path) -> None:
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(pki / "sa.key"))
    _openssl("ec", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))


def _write_tokens(pki: Path) -> None:
    lines = []
    for name, (user, groups) in USERS.items():
        lines.append(f'{secrets.token_hex(24)},{user},{name},"{groups}"')
    path = pki / "tokens.csv"
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


def ensure(pki: Path) -> None:
    """Create whatever part of the PKI is missing (all of it on a new state folder)."""
    pki.mkdir(parents=True, exist_ok=True)
    pki.chmod(0o700)
    if not (pki / "ca.crt").exists():
        _make_ca(pki)
    if not (pki / "apiserver.crt").exists():
        sans = ["IP:127.0.0.1", "DNS:localhost", "DNS:kubernetes", "DNS:kubernetes.default",
                "DNS:kubernetes.default.svc"]  # fmt: skip
        _make_serving_cert(
            pki, pki / "apiserver.key", pki / "apiserver.crt", "kube-apiserver", sans
        )
    webhook = pki / "lws-webhook"
    if not (webhook / "tls.crt").exists():
        webhook.mkdir(exist_ok=True)
        sans = ["IP:127.0.0.1", "DNS:localhost"]
        _make_serving_cert(pki, webhook / "tls.key", webhook / "tls.crt", "lws-webhook", sans)
    if not (pki / "sa.key").exists():
        _make_service_account_keys(pki)
    if not (pki / "tokens.csv").exists():
        _write_tokens(pki)


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
