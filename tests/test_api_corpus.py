"""The API refuses every spec of the invalid corpus and accepts every example.

Cases:
- each example is accepted by the pydantic model and by the schema plus its CEL rules;
- each invalid spec is refused by the schema + CEL (the API server's view) with an
  error that names the field and says the rule, and by the pydantic model (the
  operator's view) with an error at or above that field;
- the corpus covers every CEL rule the models declare, so no rule goes untested;
- an object the API server admitted is not checked against the CEL rules again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from llmfleet_contract.api import ADMITTED, LLMDeployment
from llmfleet_contract.crd import LLMDEPLOYMENTS
from llmfleet_contract.validation import kind_of, model_errors, schema_errors
from tests.corpus import EXAMPLES, INVALID, TENANT_EXAMPLES, load_invalid


@pytest.mark.parametrize("path", EXAMPLES + TENANT_EXAMPLES, ids=lambda p: p.stem)
def test_example_is_valid(path: Path) -> None:
    ours = [doc for doc in yaml.safe_load_all(path.read_text()) if kind_of(doc)]
    assert ours
    for manifest in ours:
        assert schema_errors(manifest) == []
        assert model_errors(manifest) == []


def test_there_are_examples_of_each_shape() -> None:
    shapes = set()
    for path in EXAMPLES:
        spec = LLMDeployment.model_validate(yaml.safe_load(path.read_text())).spec
        parallelism = spec.parallelism
        if parallelism.nodes_per_group > 1:
            shapes.add("multi-node")
        elif parallelism.gpus_per_group > 1:
            shapes.add("tensor-parallel")
        else:
            shapes.add("single-gpu")
        if spec.autoscaling and spec.autoscaling.scale_to_zero.enabled:
            shapes.add("scale-to-zero")
    assert shapes == {"single-gpu", "tensor-parallel", "multi-node", "scale-to-zero"}


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_schema_and_cel_refuse(path: Path) -> None:
    case = load_invalid(path)
    errors = [str(e) for e in schema_errors(case.manifest)]
    assert errors, f"{case.name}: accepted by the schema"
    assert any(case.field in e and case.message in e for e in errors), (
        f"{case.name}: no error naming {case.field!r} with {case.message!r}: {errors}"
    )


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_model_refuses(path: Path) -> None:
    case = load_invalid(path)
    errors = model_errors(case.manifest)
    assert errors, f"{case.name}: accepted by the model"
    matching = [e for e in errors if case.model_message in e.detail]
    assert matching, f"{case.name}: {[str(e) for e in errors]}"
    assert any(case.field.startswith(e.path) for e in matching), (
        f"{case.name}: no error at or above {case.field!r}: {[str(e) for e in errors]}"
    )


def test_every_cel_rule_has_a_refused_case() -> None:
    from llmfleet_contract.crd import KINDS, openapi_schema

    messages: list[str] = []

    def collect(node: object) -> None:
        if isinstance(node, dict):
            messages.extend(v["message"] for v in node.get("x-kubernetes-validations", []))
            for child in node.values():
                collect(child)

    for kind in KINDS:
        collect(openapi_schema(kind))
    covered = {load_invalid(p).message for p in INVALID}
    untested = [m for m in set(messages) if not any(c in m for c in covered)]
    assert untested == []


def test_an_admitted_object_is_not_checked_against_the_cel_rules_again() -> None:
    """The operator validates objects the API server has admitted (``ADMITTED``): the CRD
    carries the CEL rules, so they are not evaluated twice; types and fields still are."""
    passed = 0
    for path in INVALID:
        case = load_invalid(path)
        model = (kind_of(case.manifest) or LLMDEPLOYMENTS).model
        errors: list[Any] = []
        try:
            model.model_validate(case.manifest, context=ADMITTED)
        except pydantic.ValidationError as err:
            errors = err.errors()
        assert [e for e in errors if e["type"] == "cel"] == [], case.name
        if not errors:
            passed += 1
            assert model_errors(case.manifest), case.name  # refused when not admitted
    assert passed >= 10  # the cases only a CEL rule refuses
