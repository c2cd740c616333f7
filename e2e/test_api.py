"""The generated CRDs on a real API server: what `kubectl` users see.

Cases: every spec of the invalid corpus is refused by `kubectl apply` with an error that
names the field and the rule (the same words `llmfleet validate` prints offline); every
example is stored and listed with the printer columns; `kubectl scale` goes through the
scale subresource (and is refused where the built-in autoscaler owns replicas);
`kubectl explain` prints the field docs; the API server's defaults equal the pydantic
model's, so the operator and the API server read the same spec.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from localop import kubectl

from llmfleet_contract.api import LLMDeployment

REPO = Path(__file__).resolve().parent.parent
CRDS = REPO / "crds"
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
INVALID = sorted((REPO / "tests" / "corpus" / "invalid").glob("*.yaml"))


@pytest.fixture(scope="module")
def crd(kubeconfig: Path) -> None:
    applied = kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
    assert applied.returncode == 0, applied.stderr
    waited = kubectl(
        kubeconfig, "wait", "--for=condition=Established", "--timeout=60s", "-f", str(CRDS)
    )
    assert waited.returncode == 0, waited.stderr


def _header(path: Path) -> dict[str, str]:
    return {
        key.strip(): value.strip()
        for key, _, value in (
            line[2:].partition(":")
            for line in path.read_text().splitlines()
            if line.startswith("# ")
        )
    }


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_spec_is_refused_at_apply(
    crd: None, kubeconfig: Path, namespace: str, path: Path
) -> None:
    header = _header(path)
    result = kubectl(kubeconfig, "apply", "-n", namespace, "-f", str(path))
    assert result.returncode != 0, f"{path.stem}: accepted: {result.stdout}"
    assert header["message"] in result.stderr, result.stderr
    assert header.get("field", "") in result.stderr, result.stderr


def test_examples_are_stored_and_listed_with_columns(
    crd: None, kubeconfig: Path, namespace: str
) -> None:
    for path in EXAMPLES:
        result = kubectl(kubeconfig, "apply", "-n", namespace, "-f", str(path))
        assert result.returncode == 0, result.stderr
    listed = kubectl(kubeconfig, "get", "llmdeployments", "-n", namespace)
    assert listed.returncode == 0, listed.stderr
    header = listed.stdout.splitlines()[0].split()
    assert header == [
        "NAME",
        "MODEL",
        "TP",
        "READY",
        "DESIRED",
        "QUEUE",
        "KV",
        "SLOTS",
        "STATUS",
        "AGE",
    ]
    rows = {line.split()[0]: line.split() for line in listed.stdout.splitlines()[1:]}
    assert rows["llama-70b"][1:3] == ["hf://meta-llama/Llama-3.1-70B-Instruct", "4"]
    assert set(rows) == {yaml.safe_load(p.read_text())["metadata"]["name"] for p in EXAMPLES}
    short = kubectl(kubeconfig, "get", "llmd", "-n", namespace, "-o", "name")
    assert len(short.stdout.split()) == len(EXAMPLES)


def test_kubectl_scale_uses_the_scale_subresource(
    crd: None, kubeconfig: Path, namespace: str
) -> None:
    fixed = REPO / "examples" / "llama-405b-tp8-pp2.yaml"
    assert kubectl(kubeconfig, "apply", "-n", namespace, "-f", str(fixed)).returncode == 0
    scaled = kubectl(
        kubeconfig, "scale", "-n", namespace, "llmdeployment/llama-405b", "--replicas=3"
    )
    assert scaled.returncode == 0, scaled.stderr
    got = kubectl(
        kubeconfig, "get", "-n", namespace, "llmd/llama-405b", "-o", "jsonpath={.spec.replicas}"
    )
    assert got.stdout == "3"
    scale = kubectl(
        kubeconfig,
        "get",
        "--raw",
        f"/apis/llmfleet.io/v1alpha1/namespaces/{namespace}/llmdeployments/llama-405b/scale",
    )
    assert json.loads(scale.stdout)["spec"]["replicas"] == 3

    autoscaled = REPO / "examples" / "llama-8b.yaml"
    assert kubectl(kubeconfig, "apply", "-n", namespace, "-f", str(autoscaled)).returncode == 0
    refused = kubectl(
        kubeconfig, "scale", "-n", namespace, "llmdeployment/llama-8b", "--replicas=3"
    )
    assert refused.returncode != 0
    assert "replicas is managed by the built-in autoscaler" in refused.stderr


def test_kubectl_explain_prints_the_field_docs(crd: None, kubeconfig: Path) -> None:
    explained = kubectl(kubeconfig, "explain", "llmdeployment.spec.parallelism")
    assert explained.returncode == 0, explained.stderr
    assert "tensorParallelSize" in explained.stdout
    assert "GPUs each layer is split across" in explained.stdout


def _spec_as_stored(kubeconfig: Path, namespace: str, manifest: dict[str, Any]) -> dict[str, Any]:
    created = kubectl(
        kubeconfig,
        "create",
        "-n",
        namespace,
        "-o",
        "json",
        "-f",
        "-",
        stdin=yaml.safe_dump(manifest),
    )
    assert created.returncode == 0, created.stderr
    spec: dict[str, Any] = json.loads(created.stdout)["spec"]
    return spec


def test_api_server_defaults_equal_the_models(crd: None, kubeconfig: Path, namespace: str) -> None:
    for path in EXAMPLES:
        manifest = yaml.safe_load(path.read_text())
        stored = _spec_as_stored(kubeconfig, namespace, manifest)
        model = LLMDeployment.model_validate(manifest).spec
        assert stored == model.model_dump(mode="json", by_alias=True, exclude_none=True), path.name
