"""The GitOps examples (gitops/examples/) against the schemas of the projects that read them.

Cases: the Argo CD Applications and the Flux OCIRepository and HelmRelease are valid for their
CRDs' openAPIV3Schema (fetched from the Go module proxy by fetch-crds.sh, cached): types,
enums, required fields, and no unknown field (kubectl's strict field validation); a typo is
refused; the chart values they set pass the chart's values.schema.json; the LLMDeployment
passes ``llmfleet validate``'s checks.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from llmfleet_contract.validation import validate
from tests.gitops.snapshots import REPO

EXAMPLES = REPO / "gitops" / "examples"
Schema = dict[str, Any]


@pytest.fixture(scope="module")
def crds() -> dict[tuple[str, str], Schema]:
    """openAPIV3Schema by (apiVersion, kind), for every version each fetched CRD serves."""
    fetched = subprocess.run(
        ["bash", str(Path(__file__).parent / "fetch-crds.sh")],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert fetched.returncode == 0, fetched.stderr
    schemas = {}
    for path in Path(fetched.stdout.split()[-1]).glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                schema = version["schema"]["openAPIV3Schema"]
                schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def documents(*parts: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(EXAMPLES.joinpath(*parts).read_text()) if d]


def unknown_fields(value: Any, schema: Schema, path: str = "") -> Iterator[str]:
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return
    if isinstance(value, dict) and "properties" in schema:
        for key, item in value.items():
            if key not in schema["properties"]:
                yield f"{path}.{key}".lstrip(".")
            else:
                yield from unknown_fields(item, schema["properties"][key], f"{path}.{key}")
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key, item in value.items():
            yield from unknown_fields(item, schema["additionalProperties"], f"{path}.{key}")
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            yield from unknown_fields(item, schema["items"], f"{path}[{index}]")


def problems(document: dict[str, Any], crds: dict[tuple[str, str], Schema]) -> list[str]:
    """Why the API server would refuse ``document`` (empty: it would accept it)."""
    schema = crds[(document["apiVersion"], document["kind"])]
    found = [f"unknown field {f!r}" for f in unknown_fields(document, schema)]
    validator = jsonschema.Draft4Validator(schema)
    found += [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(document)
    ]
    return found


CUSTOM_RESOURCES = {
    "argocd-applications": ("argocd", "applications.yaml"),
    "flux-helmrelease": ("flux", "helmrelease.yaml"),
}


@pytest.mark.parametrize("parts", CUSTOM_RESOURCES.values(), ids=CUSTOM_RESOURCES.keys())
def test_examples_fit_their_crds(
    parts: tuple[str, ...], crds: dict[tuple[str, str], Schema]
) -> None:
    for document in documents(*parts):
        assert problems(document, crds) == [], document["metadata"]["name"]


def test_kinds_covered(crds: dict[tuple[str, str], Schema]) -> None:
    kinds = {d["kind"] for parts in CUSTOM_RESOURCES.values() for d in documents(*parts)}
    assert kinds == {"Application", "OCIRepository", "HelmRelease"}


def test_a_typo_is_refused(crds: dict[tuple[str, str], Schema]) -> None:
    application = documents("argocd", "applications.yaml")[0]
    application["spec"]["syncPolicy"]["automated"]["selfheal"] = True
    release = documents("flux", "helmrelease.yaml")[1]
    release["spec"]["chartRef"]["kind"] = "GitRepository"
    assert problems(application, crds) == ["unknown field 'spec.syncPolicy.automated.selfheal'"]
    assert problems(release, crds) == [
        "spec.chartRef.kind: 'GitRepository' is not one of ['OCIRepository', 'HelmChart',"
        " 'ExternalArtifact']"
    ]


def chart_values() -> Iterator[dict[str, Any]]:
    yield documents("argocd", "applications.yaml")[0]["spec"]["source"]["helm"]["valuesObject"]
    yield documents("flux", "helmrelease.yaml")[1]["spec"]["values"]


@pytest.mark.parametrize("values", list(chart_values()), ids=["argocd", "flux"])
def test_chart_values_pass_the_charts_schema(values: dict[str, Any]) -> None:
    schema = yaml.safe_load((REPO / "charts" / "llmfleet" / "values.schema.json").read_text())
    chart = yaml.safe_load((REPO / "charts" / "llmfleet" / "values.yaml").read_text())
    merged = merge(chart, values)
    jsonschema.validators.validator_for(schema)(schema).validate(merged)


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            out[key] = merge(base[key], value)
        else:
            out[key] = value
    return out


def test_the_model_passes_llmfleet_validate() -> None:
    [model] = documents("models", "llama-8b.yaml")
    assert validate(model) == []
