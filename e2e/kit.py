"""Helpers the e2e tests share: waiting, applying, reading LLMDeployments, a local Prometheus.

Used by the test modules beside it and by conftest.py's fixtures. The API is read with
the admin client; objects are applied with the real kubectl.
"""

from __future__ import annotations

import base64
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi
from localop import kubectl

from tests.runtime.conftest import stop

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
SIMULATED = EXAMPLES / "llama-8b-simulated.yaml"
GROUP, VERSION, PLURAL = "llmfleet.io", "v1alpha1", "llmdeployments"
PROMETHEUS_PORT = 19090


def wait_for(what: str, check: Callable[[], Any], timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def apply(kubeconfig: Path, namespace: str, manifest: dict[str, Any]) -> None:
    result = kubectl(
        kubeconfig, "apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(manifest)
    )
    assert result.returncode == 0, result.stderr


def apply_ready(api: ApiClient, kubeconfig: Path, namespace: str, manifest: dict[str, Any]) -> str:
    """Apply ``manifest`` and wait until the operator reports it Ready; its name."""
    apply(kubeconfig, namespace, manifest)
    name: str = manifest["metadata"]["name"]
    wait_for(f"{name} Ready", lambda: ready(api, namespace, name), timeout=120)
    return name


def get(api: ApiClient, namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name
    )
    return obj


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    for item in (obj.get("status") or {}).get("conditions") or []:
        if item["type"] == kind:
            return dict(item)
    return {}


def ready(api: ApiClient, namespace: str, name: str) -> bool:
    obj = get(api, namespace, name)
    return (
        condition(obj, "Ready").get("status") == "True"
        and obj["status"].get("observedGeneration") == obj["metadata"]["generation"]
    )


def pods(api: ApiClient, namespace: str, name: str) -> list[Any]:
    items = (
        CoreV1Api(api)
        .list_namespaced_pod(namespace, label_selector=f"llmfleet.io/deployment={name}")
        .items
    )
    return [p for p in items if not p.metadata.deletion_timestamp]


# ---- a local Prometheus that discovers pods through this API server -----------------


def _scrape_config(server: str, namespace: str, folder: Path) -> dict[str, Any]:
    return {
        "job_name": "llmfleet-engines",
        "scrape_interval": "1s",
        "kubernetes_sd_configs": [
            {
                "role": "pod",
                "api_server": server,
                "namespaces": {"names": [namespace]},
                "authorization": {"credentials_file": str(folder / "token")},
                "tls_config": {"ca_file": str(folder / "ca.crt")},
            }
        ],
        "relabel_configs": [
            {
                "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"],
                "regex": "true",
                "action": "keep",
            },
            {
                "source_labels": [
                    "__meta_kubernetes_pod_ip",
                    "__meta_kubernetes_pod_annotation_prometheus_io_port",
                ],
                "regex": "(.+);(.+)",
                "replacement": "$1:$2",
                "target_label": "__address__",
            },
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            # The labels llmfleet_operator.metrics.PrometheusSource selects engines by.
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        ],
    }


@dataclass
class LocalPrometheus:
    """Prometheus (built from its Go module) discovering one namespace's pods through the
    API server with a read-only service account, plus optional static targets (the
    gateway). Stop and start it to see what the operator does without it."""

    kubeconfig: Path
    namespace: str
    folder: Path
    static_targets: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{PROMETHEUS_PORT}"

    def configure(self) -> None:
        access = [
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": "prometheus", "namespace": self.namespace},
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": "prometheus", "namespace": self.namespace},
                "rules": [
                    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}
                ],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "prometheus", "namespace": self.namespace},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "prometheus",
                },
                "subjects": [
                    {"kind": "ServiceAccount", "name": "prometheus", "namespace": self.namespace}
                ],
            },
        ]
        applied = kubectl(self.kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump_all(access))
        assert applied.returncode == 0, applied.stderr
        token = kubectl(self.kubeconfig, "create", "token", "prometheus", "-n", self.namespace)
        cluster = yaml.safe_load(self.kubeconfig.read_text())["clusters"][0]["cluster"]
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "token").write_text(token.stdout.strip())
        ca = base64.b64decode(cluster["certificate-authority-data"])
        (self.folder / "ca.crt").write_bytes(ca)
        jobs = [_scrape_config(cluster["server"], self.namespace, self.folder)]
        if self.static_targets:
            jobs.append(
                {
                    "job_name": "static",
                    "scrape_interval": "1s",
                    "static_configs": [{"targets": self.static_targets}],
                }
            )
        config = yaml.safe_dump({"scrape_configs": jobs})
        (self.folder / "prometheus.yml").write_text(config)

    def start(self) -> None:
        binary = subprocess.run(
            ["bash", str(REPO / "e2e" / "install-prometheus.sh"), "--check"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()[-1]
        with (self.folder / "prometheus.log").open("ab") as log:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={self.folder / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.folder / 'data'}",
                    f"--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None
