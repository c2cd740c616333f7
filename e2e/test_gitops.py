"""GitOps on the local control plane: autoscaling never shows as drift.

Case: a user's autoscaled LLMDeployment, applied server-side under Argo CD's field manager
(``argocd-controller``, as Argo CD's ServerSideApply sync does), is driven by load through the
real gateway until the operator scales it out; meanwhile the replica count of its Deployment
changes, but a server-side diff of the same manifest (``kubectl diff --server-side``, what
Argo CD's server-side diff and Flux's drift detection compute) is empty, and a dry-run apply
of it gives back the live spec unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from kit import EXAMPLES, get, ready, wait_for
from kubernetes.client import ApiClient, AppsV1Api
from localop import LocalOperator, kubectl
from traffic import Streams, gateway

MANAGER = "argocd-controller"


def server_side(kubeconfig: Path, namespace: str, manifest: dict[str, Any], *args: str) -> Any:
    """``kubectl <args> --server-side`` of ``manifest`` under Argo CD's field manager."""
    return kubectl(
        kubeconfig,
        *args,
        "--server-side",
        f"--field-manager={MANAGER}",
        "-n",
        namespace,
        "-f",
        "-",
        stdin=yaml.safe_dump(manifest),
    )


def deployment_replicas(api: ApiClient, namespace: str, name: str) -> int:
    replicas = AppsV1Api(api).read_namespaced_deployment(name, namespace).spec.replicas
    return int(replicas or 0)


def test_autoscaling_never_shows_as_drift(
    operator: LocalOperator, api_client: ApiClient, kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    manifest = yaml.safe_load((EXAMPLES / "llama-8b-simulated-autoscaled.yaml").read_text())
    name = manifest["metadata"]["name"]
    applied = server_side(kubeconfig, namespace, manifest, "apply")
    assert applied.returncode == 0, applied.stderr
    wait_for(f"{name} Ready", lambda: ready(api_client, namespace, name), timeout=120)
    assert deployment_replicas(api_client, namespace, name) == 1
    before = get(api_client, namespace, name)

    with (
        gateway(kubeconfig, namespace, tmp_path / "gateway.log") as address,
        Streams(address, clients=8, max_tokens=50) as load,
    ):
        wait_for(
            "the operator to scale out",
            lambda: deployment_replicas(api_client, namespace, name) > 1,
            timeout=90,
        )
        diff = server_side(kubeconfig, namespace, manifest, "diff")
        dry_run = server_side(
            kubeconfig, namespace, manifest, "apply", "--dry-run=server", "-o=json"
        )
        live = get(api_client, namespace, name)
    assert load.errors == []

    assert (diff.returncode, diff.stdout) == (0, ""), diff.stdout + diff.stderr
    assert dry_run.returncode == 0, dry_run.stderr
    assert json.loads(dry_run.stdout)["spec"] == live["spec"] == before["spec"]
    assert live["metadata"]["generation"] == before["metadata"]["generation"]
    assert live["status"]["desiredReplicas"] > 1
    # The operator's writes to the LLMDeployment are its status only: the user's manager
    # keeps the spec.
    spec_managers = {
        entry["manager"]
        for entry in live["metadata"]["managedFields"]
        if "f:spec" in (entry.get("fieldsV1") or {})
    }
    assert spec_managers == {MANAGER}
