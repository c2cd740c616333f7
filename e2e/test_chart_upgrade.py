"""The chart on a real API server: upgrades keep every LLMDeployment, and so does uninstall.

Cases: the previous chart version (0.1.0, read from git history into a temporary folder)
installed with LLMDeployments applied, then `helm upgrade` to the working tree's chart: every
LLMDeployment is still there (same uid), the CRDs keep their `keep` policy; `helm uninstall`
then leaves the CRDs and every LLMDeployment. And the operator's and the gateway's pods are
admitted by a namespace that enforces the restricted Pod Security Standard (the API server's
own PodSecurity admission, by a server-side dry run).

The CRDs belong to one release at a time: when another release of this cluster owns them (the
session's `operator` fixture installs one), this test adopts them for its own release and
gives them back afterwards, the way Helm documents adoption.
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from localop import CRDS, helm, kubectl

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "llmfleet"
PREVIOUS = "0.1.0"
# No image can run here: the workloads' objects and RBAC go through the upgrade, no pods.
NO_PODS = (
    "operator.replicas=0",
    "gateway.autoscaling.enabled=false",
    "gateway.replicas=0",
)
OWNER = ("meta.helm.sh/release-name", "meta.helm.sh/release-namespace")


def run(argv: list[str], stdin: str | None = None) -> str:
    result = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, f"{' '.join(argv)}:\n{result.stdout}{result.stderr}"
    return result.stdout


def ok(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    result = kubectl(kubeconfig, *args, stdin=stdin)
    assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
    return result.stdout


def chart_version(revision: str) -> str:
    path = f"{revision}:charts/llmfleet/Chart.yaml"
    version: str = yaml.safe_load(run(["git", "-C", str(REPO), "show", path]))["version"]
    return version


def previous_chart(into: Path) -> Path:
    """The chart as it was at the newest commit whose chart version is PREVIOUS: HEAD, or the
    parent of the commit that changed the version (nothing in the working tree is touched)."""
    revision = "HEAD"
    if chart_version(revision) != PREVIOUS:
        changes = run(
            ["git", "-C", str(REPO), "rev-list", "HEAD", "--", "charts/llmfleet/Chart.yaml"]
        ).split()
        # Newest first; the oldest one added the file (its parent has none): never reached.
        found = (c for c in changes if chart_version(c) != PREVIOUS == chart_version(f"{c}^"))
        newest = next(found, None)
        assert newest, f"no commit has chart version {PREVIOUS}"
        revision = f"{newest}^"
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", revision, "charts/llmfleet"],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "charts" / "llmfleet"


def crd_owners(kubeconfig: Path) -> dict[str, dict[str, str]]:
    owners = {}
    for crd in CRDS:
        found = kubectl(kubeconfig, "get", crd, "-o", "json")
        if found.returncode == 0:
            annotations = json.loads(found.stdout)["metadata"].get("annotations") or {}
            owners[crd] = {key: annotations[key] for key in OWNER if key in annotations}
    return owners


def set_owner(kubeconfig: Path, crd: str, release: str, namespace: str) -> None:
    ok(kubeconfig, "label", crd, "app.kubernetes.io/managed-by=Helm", "--overwrite")
    ok(
        kubeconfig,
        "annotate",
        crd,
        f"{OWNER[0]}={release}",
        f"{OWNER[1]}={namespace}",
        "--overwrite",
    )


@pytest.fixture
def adopted_crds(kubeconfig: Path, namespace: str) -> Iterator[str]:
    """A release name whose chart may own the CRDs for the test; the previous owner gets them
    back afterwards."""
    release = "upgrade-" + namespace.rsplit("-", 1)[-1]
    before = crd_owners(kubeconfig)
    for crd in before:
        set_owner(kubeconfig, crd, release, namespace)
    yield release
    for crd, owner in before.items():
        if len(owner) == 2:
            set_owner(kubeconfig, crd, owner[OWNER[0]], owner[OWNER[1]])


def llmdeployments(kubeconfig: Path, namespace: str) -> dict[str, str]:
    listed = json.loads(ok(kubeconfig, "get", "llmdeployments", "-n", namespace, "-o", "json"))
    return {item["metadata"]["name"]: item["metadata"]["uid"] for item in listed["items"]}


def sets(values: tuple[str, ...]) -> list[str]:
    return [flag for value in values for flag in ("--set", value)]


def test_upgrade_and_uninstall_keep_every_llmdeployment(
    kubeconfig: Path, namespace: str, adopted_crds: str, tmp_path: Path
) -> None:
    release = adopted_crds
    old = previous_chart(tmp_path)
    assert yaml.safe_load((old / "Chart.yaml").read_text())["version"] == PREVIOUS
    new_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]
    assert new_version != PREVIOUS
    common = [f"--kubeconfig={kubeconfig}", "-n", namespace]
    # The session's CRDs are newer and partly kubectl's (e2e/test_api.py applies them): the
    # old chart takes them over, as it would own them on a cluster it was installed on.
    old_install = [release, str(old), *common, *sets(NO_PODS), "--force-conflicts"]
    run([helm(), "install", *old_install, "--wait", "--timeout=120s"])
    ok(kubeconfig, "wait", "--for=condition=Established", *CRDS)

    example = yaml.safe_load((REPO / "examples" / "llama-8b-simulated.yaml").read_text())
    for name in ("first", "second", "third"):
        example["metadata"] = {"name": name, "namespace": namespace}
        ok(kubeconfig, "apply", "-f", "-", stdin=json.dumps(example))
    made = llmdeployments(kubeconfig, namespace)
    assert set(made) == {"first", "second", "third"}

    run(
        [
            helm(),
            "upgrade",
            release,
            str(CHART),
            *common,
            *sets(NO_PODS),
            "--wait",
            "--timeout=120s",
        ]
    )
    [listed] = json.loads(run([helm(), "list", *common, "-o", "json"]))
    assert (listed["chart"], listed["status"]) == (f"llmfleet-{new_version}", "deployed")
    assert llmdeployments(kubeconfig, namespace) == made  # the same objects: same uids
    for crd in CRDS:
        annotations = json.loads(ok(kubeconfig, "get", crd, "-o", "json"))["metadata"][
            "annotations"
        ]
        assert annotations["helm.sh/resource-policy"] == "keep"
    # The new chart's objects are there (its images, its RBAC).
    deployment = json.loads(
        ok(kubeconfig, "get", "deployment", f"{release}-operator", "-n", namespace, "-o", "json")
    )
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.startswith("ghcr.io/llmfleet/operator:")

    run([helm(), "uninstall", release, *common, "--wait", "--timeout=120s"])
    for crd in CRDS:
        ok(kubeconfig, "get", crd)
    assert llmdeployments(kubeconfig, namespace) == made
    gone = kubectl(kubeconfig, "get", "deployment", f"{release}-operator", "-n", namespace)
    assert gone.returncode != 0


def pod_of(deployment: dict[str, Any], namespace: str) -> dict[str, Any]:
    template = deployment["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": deployment["metadata"]["name"],
            "namespace": namespace,
            "labels": template["metadata"]["labels"],
        },
        "spec": template["spec"],
    }


def test_pods_are_admitted_under_the_restricted_pod_security_standard(
    kubeconfig: Path, namespace: str
) -> None:
    ok(
        kubeconfig,
        "label",
        "namespace",
        namespace,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
    )
    rendered = run([helm(), "template", "psa", str(CHART), "-n", namespace])
    deployments = [
        doc for doc in yaml.safe_load_all(rendered) if doc and doc["kind"] == "Deployment"
    ]
    assert {d["metadata"]["name"] for d in deployments} == {"psa-operator", "psa-gateway"}
    for deployment in deployments:
        pod = pod_of(deployment, namespace)
        pod["spec"]["serviceAccountName"] = "default"  # the dry run needs an existing one
        result = kubectl(kubeconfig, "create", "--dry-run=server", "-f", "-", stdin=json.dumps(pod))
        assert result.returncode == 0, result.stderr
        assert "Warning" not in result.stderr, result.stderr
    # And the check is real: a root container is refused in that namespace.
    root = pod_of(deployments[0], namespace)
    root["spec"]["serviceAccountName"] = "default"
    root["spec"]["securityContext"] = {"runAsUser": 0}
    refused = kubectl(kubeconfig, "create", "--dry-run=server", "-f", "-", stdin=json.dumps(root))
    assert refused.returncode != 0
    assert "violates PodSecurity" in refused.stderr
