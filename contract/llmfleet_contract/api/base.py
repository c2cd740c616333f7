"""The base of every API model: frozen, camelCase on the wire, CEL rules attached.

Field docstrings become the CRD's descriptions (``kubectl explain``), so every field
has one. A model declares its cross-field rules in ``cel_rules``; they are written into
the generated schema and checked by pydantic through the same evaluator.
"""

from __future__ import annotations

import re
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    PlainValidator,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

from llmfleet_contract.api.cel import CelRule, holds

ADMITTED: dict[str, Any] = {"admitted": True}
"""The validation context for an object read back from the API server: the API server
admitted it under the CRD, which carries the same CEL rules, so they are not evaluated again
(cel-python interprets them; they were a third of the operator's CPU per reconcile)."""


def _checks_rules(info: ValidationInfo) -> bool:
    return not (info.context or {}).get("admitted")


# A Kubernetes resource quantity (``16Gi``, ``500m``, ``1.5``), as strings.
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$"
Quantity = Annotated[str, Field(pattern=QUANTITY_PATTERN, max_length=32)]

# An RFC 1123 label (names of Kubernetes objects that end up in DNS).
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DnsLabel = Annotated[str, Field(pattern=DNS_LABEL_PATTERN, max_length=63)]

# An int or a percentage, like a Deployment's maxSurge ("25%" or 1).
PERCENT_PATTERN = r"^[0-9]+%$"


def _int_or_percent(value: Any) -> int | str:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and re.match(PERCENT_PATTERN, value):
        return value
    raise PydanticCustomError(
        "int_or_percent", "must be a non-negative integer or a percentage such as '25%'"
    )


IntOrPercent = Annotated[
    int | str,
    PlainValidator(_int_or_percent),
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "minimum": 0,
            "pattern": PERCENT_PATTERN,
        }
    ),
]


T = TypeVar("T")


def _unique(values: list[Any], key: str | None = None) -> list[Any]:
    seen: set[Hashable] = set()
    for value in values:
        identity = getattr(value, key) if key else value
        if identity in seen:
            raise PydanticCustomError("duplicate", "Duplicate value: {value}", {"value": identity})
        seen.add(identity)
    return values


# A list the API server treats as a set (``x-kubernetes-list-type: set``).
SetOf = Annotated[
    list[T],
    Field(json_schema_extra={"x-kubernetes-list-type": "set"}),
    AfterValidator(_unique),
]

# A list of objects keyed by ``name`` (``x-kubernetes-list-type: map``), merged per item
# by server-side apply.
ListByName = Annotated[
    list[T],
    Field(
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}
    ),
    AfterValidator(lambda values: _unique(values, "name")),
]


def _failed(rules: tuple[CelRule, ...], wire: Any) -> None:
    failed = [rule for rule in rules if not holds(rule, wire)]
    if failed:
        messages = "; ".join(rule.message for rule in failed)
        raise PydanticCustomError("cel", "{messages}", {"messages": messages})


@dataclass(frozen=True)
class Rules:
    """CEL rules on a value that is not a model, such as one item of a list of strings:
    ``Annotated[str, Rules(rule)]``. Written into that value's schema and checked by pydantic
    as :attr:`ApiModel.cel_rules` are. A rule on each item, rather than one on the list, is
    how an expensive rule (a long regex) stays within the API server's per-rule cost budget,
    and its error names the item."""

    rules: tuple[CelRule, ...]

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> Any:
        return core_schema.with_info_after_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        found = handler(schema)
        found["x-kubernetes-validations"] = [rule.to_schema() for rule in self.rules]
        return found

    def _check(self, value: Any, info: ValidationInfo) -> Any:
        if _checks_rules(info):
            _failed(self.rules, value)
        return value


class ApiModel(BaseModel):
    """Frozen, strict about unknown fields, camelCase aliases, docstrings as descriptions."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
        validate_default=True,
    )

    cel_rules: ClassVar[tuple[CelRule, ...]] = ()

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        if cls.cel_rules:
            target = handler.resolve_ref_schema(schema)
            target["x-kubernetes-validations"] = [rule.to_schema() for rule in cls.cel_rules]
        return schema

    @model_validator(mode="after")
    def _check_cel_rules(self, info: ValidationInfo) -> ApiModel:
        rules = type(self).cel_rules
        if not rules or not _checks_rules(info):
            return self
        _failed(rules, self.model_dump(mode="json", by_alias=True, exclude_none=True))
        return self
