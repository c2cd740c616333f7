"""Offline validation of LLMDeployment and LLMTenant manifests, the way the API server would.

Called by ``llmfleet validate`` (a GitOps pre-merge step) and by the tests. For each
document: apply the schema's defaults, refuse unknown fields (kubectl's strict field
validation), check the structural schema and list types, evaluate every CEL rule, and,
if all of that passed, build the pydantic model (the operator's own view). Errors are
worded like the API server's: ``<field path>: <what>: <why>``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

import jsonschema
import pydantic

from llmfleet_contract.api import API_VERSION, GROUP
from llmfleet_contract.api.cel import CelError, CelRule, holds
from llmfleet_contract.crd import KINDS, LLMDEPLOYMENTS, CrdKind, apply_defaults, openapi_schema

Schema = dict[str, Any]
Path = tuple[str | int, ...]


@dataclass(frozen=True)
class FieldError:
    """One refusal, located at a field."""

    path: str
    detail: str

    def __str__(self) -> str:
        return f"{self.path}: {self.detail}" if self.path else self.detail


@cache
def _schema(kind: CrdKind) -> Schema:
    return openapi_schema(kind)


def validate(manifest: dict[str, Any]) -> list[FieldError]:
    """Every reason the API server (or, failing that, the operator) would refuse ``manifest``."""
    return schema_errors(manifest) or model_errors(manifest)


def schema_errors(manifest: dict[str, Any]) -> list[FieldError]:
    """What the API server refuses: unknown fields, the structural schema, CEL rules."""
    if manifest.get("apiVersion") != API_VERSION:
        return [
            FieldError(
                "apiVersion",
                f"Unsupported value: {_show(manifest.get('apiVersion'))}:"
                f' supported values: "{API_VERSION}"',
            )
        ]
    schema = _schema(kind_of(manifest) or LLMDEPLOYMENTS)
    document = apply_defaults(copy.deepcopy(manifest), schema)
    errors = [*_unknown_fields(document, schema, ()), *_schema_errors(document, schema)]
    return errors + list(_cel_errors(coerce_numbers(document, schema), schema, ()))


def model_errors(manifest: dict[str, Any]) -> list[FieldError]:
    """What the pydantic model (the operator's and the gateway's view) refuses."""
    try:
        (kind_of(manifest) or LLMDEPLOYMENTS).model.model_validate(manifest)
    except pydantic.ValidationError as err:
        return [_pydantic_error(e) for e in err.errors()]
    return []


def kind_of(document: Any) -> CrdKind | None:
    """The API kind ``document`` claims to be, or None for any other object."""
    if not isinstance(document, dict) or not str(document.get("apiVersion", "")).startswith(
        f"{GROUP}/"
    ):
        return None
    return next((kind for kind in KINDS if kind.kind == document.get("kind")), None)


# --- defaults and types, as the API server applies them before validating --------


def coerce_numbers(value: Any, schema: Schema) -> Any:
    """Ints where the schema says ``number`` become floats, as the API server's CEL sees them."""
    if schema.get("type") == "number" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dict) and "properties" in schema:
        props = schema["properties"]
        return {k: coerce_numbers(v, props[k]) if k in props else v for k, v in value.items()}
    if isinstance(value, list) and "items" in schema:
        return [coerce_numbers(item, schema["items"]) for item in value]
    return value


# --- the checks --------------------------------------------------------------------


def _unknown_fields(value: Any, schema: Schema, path: Path) -> Iterator[FieldError]:
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return
    if isinstance(value, dict) and "properties" in schema:
        for key, item in value.items():
            if key in schema["properties"]:
                yield from _unknown_fields(item, schema["properties"][key], (*path, key))
            else:
                yield FieldError("", f'unknown field "{_dotted((*path, key))}"')
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            yield from _unknown_fields(item, schema["items"], (*path, index))


def _schema_errors(document: Any, schema: Schema) -> Iterator[FieldError]:
    validator = jsonschema.Draft4Validator(schema)
    for error in sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.path))):
        yield _from_jsonschema(error)
    yield from _list_type_errors(document, schema, ())


def _list_type_errors(value: Any, schema: Schema, path: Path) -> Iterator[FieldError]:
    if isinstance(value, dict) and "properties" in schema:
        for key, item in value.items():
            if key in schema["properties"]:
                yield from _list_type_errors(item, schema["properties"][key], (*path, key))
    elif isinstance(value, list) and "items" in schema:
        list_type = schema.get("x-kubernetes-list-type")
        keys = schema.get("x-kubernetes-list-map-keys", [])
        seen: list[Any] = []
        for index, item in enumerate(value):
            identity = (
                [item.get(k) for k in keys]
                if list_type == "map" and isinstance(item, dict)
                else item
            )
            if list_type in ("set", "map") and identity in seen:
                shown = _show(identity[0] if list_type == "map" and len(keys) == 1 else identity)
                yield FieldError(_dotted((*path, index)), f"Duplicate value: {shown}")
            seen.append(identity)
            yield from _list_type_errors(item, schema["items"], (*path, index))


def _cel_errors(value: Any, schema: Schema, path: Path) -> Iterator[FieldError]:
    if value is None:
        return
    for entry in schema.get("x-kubernetes-validations", []):
        rule = CelRule(entry["rule"], entry["message"], entry.get("fieldPath"))
        try:
            ok = holds(rule, value)
        except CelError:
            continue  # wrong types underneath: the schema errors already say so
        if not ok:
            where = _dotted(path) + (rule.field_path or "")
            yield FieldError(
                where, f'Invalid value: "{schema.get("type", "object")}": {rule.message}'
            )
    if isinstance(value, dict) and "properties" in schema:
        for key, item in value.items():
            if key in schema["properties"]:
                yield from _cel_errors(item, schema["properties"][key], (*path, key))
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            yield from _cel_errors(item, schema["items"], (*path, index))


# --- wording ------------------------------------------------------------------------


def _dotted(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict | list):
        return f'"{"object" if isinstance(value, dict) else "array"}"'
    return str(value)


def _from_jsonschema(error: jsonschema.ValidationError) -> FieldError:
    path = _dotted(tuple(error.absolute_path))
    value, kind = error.instance, str(error.validator)
    arg: Any = error.validator_value
    schema = error.schema if isinstance(error.schema, dict) else {}
    if kind == "required":
        missing = error.message.split("'")[1]  # "'maxReplicas' is a required property"
        return FieldError(_dotted((*error.absolute_path, missing)), "Required value")
    if kind == "enum":
        allowed = ", ".join(_show(v) for v in arg)
        return FieldError(path, f"Unsupported value: {_show(value)}: supported values: {allowed}")
    exclusive = schema.get(f"exclusive{kind.capitalize()}") is True
    details = {
        "type": f"must be of type {arg}",
        "minimum": f"should be greater than {'' if exclusive else 'or equal to '}{arg}",
        "maximum": f"should be less than {'' if exclusive else 'or equal to '}{arg}",
        "pattern": f"should match '{arg}'",
        "maxLength": f"may not be more than {arg} bytes",
        "minLength": f"should be at least {arg} chars long",
        "maxItems": f"must have at most {arg} items",
        "minItems": f"should have at least {arg} items",
        "anyOf": "must be an integer or a string",
    }
    return FieldError(path, f"Invalid value: {_show(value)}: {details.get(kind, error.message)}")


def _pydantic_error(error: Any) -> FieldError:
    return FieldError(
        _dotted(tuple(error["loc"])), f"Invalid value: {_show(error.get('input'))}: {error['msg']}"
    )
