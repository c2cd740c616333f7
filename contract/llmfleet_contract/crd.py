"""Generate the CRDs from the API models (``llmfleet crds``, ``make crds``).

Pydantic writes JSON Schema; the API server wants a *structural* OpenAPI v3 schema.
``structural()`` bridges the two: it inlines ``$ref``s, drops ``null`` branches and
titles, turns ``const`` into ``enum`` and numeric ``exclusiveMinimum`` into OpenAPI's
boolean form, and gives object fields built by a ``default_factory`` their complete
default, so the API server fills them in (CEL rules rely on those being present).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import yaml

from llmfleet_contract.api import resource, tenant
from llmfleet_contract.api.base import ApiModel
from llmfleet_contract.api.resource import GROUP, VERSION, LLMDeployment
from llmfleet_contract.api.tenant import LLMTenant

Schema = dict[str, Any]

_DROPPED_KEYS = {"title", "$defs"}

_LLMDEPLOYMENT_COLUMNS: tuple[Schema, ...] = (
    {"name": "Model", "type": "string", "jsonPath": ".spec.model.source"},
    {"name": "TP", "type": "integer", "jsonPath": ".spec.parallelism.tensorParallelSize"},
    {
        "name": "PP",
        "type": "integer",
        "jsonPath": ".spec.parallelism.pipelineParallelSize",
        "priority": 1,
    },
    {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas"},
    {"name": "Desired", "type": "integer", "jsonPath": ".status.desiredReplicas"},
    {"name": "Queue", "type": "number", "jsonPath": ".status.signals.prefillQueue"},
    {"name": "KV", "type": "number", "jsonPath": ".status.signals.kvCacheUsage"},
    {"name": "Slots", "type": "number", "jsonPath": ".status.signals.slotsUsed"},
    {"name": "Spot", "type": "integer", "jsonPath": ".status.spotReplicas", "priority": 1},
    {"name": "Schedule", "type": "string", "jsonPath": ".status.schedule", "priority": 1},
    {
        "name": "Status",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
)


@dataclass(frozen=True, eq=False)
class CrdKind:
    """One kind of the API, and what its CRD says beyond the model's schema (hashed by
    identity: there is one of each)."""

    model: type[ApiModel]
    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    printer_columns: tuple[Schema, ...]
    subresources: Schema

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"

    @property
    def file_name(self) -> str:
        """The YAML file's name in ``crds/`` and the chart."""
        return f"{GROUP}_{self.plural}.yaml"


LLMDEPLOYMENTS = CrdKind(
    LLMDeployment,
    resource.KIND,
    resource.PLURAL,
    resource.SINGULAR,
    resource.SHORT_NAMES,
    _LLMDEPLOYMENT_COLUMNS,
    {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    },
)
LLMTENANTS = CrdKind(
    LLMTenant,
    tenant.KIND,
    tenant.PLURAL,
    tenant.SINGULAR,
    tenant.SHORT_NAMES,
    (
        {"name": "Priority", "type": "string", "jsonPath": ".spec.priority"},
        {"name": "Models", "type": "string", "jsonPath": ".spec.models"},
        {"name": "Keys", "type": "string", "jsonPath": ".spec.apiKeys.name"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ),
    {},
)
KINDS = (LLMDEPLOYMENTS, LLMTENANTS)


def structural(node: Any, defs: dict[str, Schema]) -> Any:
    """Rewrite one pydantic JSON Schema node (recursively) into structural OpenAPI v3."""
    if isinstance(node, list):
        return [structural(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = copy.deepcopy(defs[node.pop("$ref").rsplit("/", 1)[-1]])
        # The field's own docstring describes it better than its type's docstring.
        node = {**target, **node}
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        branches = [b for b in node.pop("anyOf") if b != {"type": "null"}]
        if node.get("default", "") is None:
            del node["default"]
        if len(branches) == 1:
            return structural({**branches[0], **node}, defs)
        node["anyOf"] = branches
    if "const" in node:
        node["enum"] = [node.pop("const")]
    for bound in ("Minimum", "Maximum"):
        value = node.get(f"exclusive{bound}")
        if isinstance(value, int | float) and not isinstance(value, bool):
            node[bound.lower()] = value
            node[f"exclusive{bound}"] = True
    if node.get("x-kubernetes-preserve-unknown-fields"):
        node.pop("additionalProperties", None)
    if node.get("additionalProperties") is False:
        del node["additionalProperties"]
    if "description" in node:
        node["description"] = _prose(node["description"])
    result = {k: structural(v, defs) for k, v in node.items() if k not in _DROPPED_KEYS}
    if "properties" in node:
        _default_objects(node, result["properties"])
    return result


def _prose(docstring: str) -> str:
    """A docstring as ``kubectl explain`` should print it: one paragraph, plain quotes."""
    return " ".join(docstring.split()).replace("``", "`")


def apply_defaults(value: Any, schema: Schema) -> Any:
    """Fill in schema defaults top down, as the API server does (in place; returns value)."""
    if isinstance(value, dict) and "properties" in schema:
        for name, prop in schema["properties"].items():
            if name not in value and "default" in prop:
                value[name] = copy.deepcopy(prop["default"])
            if name in value:
                value[name] = apply_defaults(value[name], prop)
    elif isinstance(value, list) and "items" in schema:
        return [apply_defaults(item, schema["items"]) for item in value]
    return value


def _default_objects(raw: Schema, properties: dict[str, Schema]) -> None:
    """Give a complete default to object fields that are neither required nor optional-None.

    Those are the fields pydantic builds with a ``default_factory``: always present in
    the operator's view, so they must be present in the API server's too. The default
    is the object with its nested defaults filled in, not ``{}``: the API server checks
    a default against the CEL rules without defaulting inside it.
    """
    required = set(raw.get("required", []))
    for name, prop in properties.items():
        nullable = {"type": "null"} in raw["properties"][name].get("anyOf", [])
        if (
            prop.get("type") == "object"
            and "properties" in prop
            and "default" not in prop
            and name not in required
            and not nullable
        ):
            prop["default"] = apply_defaults({}, prop)


def openapi_schema(kind: CrdKind = LLMDEPLOYMENTS) -> Schema:
    """The ``openAPIV3Schema`` of the kind's CRD version."""
    raw = kind.model.model_json_schema(by_alias=True, mode="validation")
    schema: Schema = structural(raw, raw.get("$defs", {}))
    props = schema["properties"]
    props["apiVersion"] = {"type": "string", "description": "APIVersion of this object."}
    props["kind"] = {"type": "string", "description": "Kind of this object."}
    # The API server allows no schema for metadata beyond its type.
    props["metadata"] = {"type": "object"}
    schema["required"] = ["spec"]
    return schema


def build_crd(kind: CrdKind = LLMDEPLOYMENTS) -> Schema:
    """The CustomResourceDefinition object."""
    version: Schema = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": openapi_schema(kind)},
    }
    if kind.subresources:
        version["subresources"] = kind.subresources
    version["additionalPrinterColumns"] = list(kind.printer_columns)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": kind.crd_name},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": list(kind.short_names),
                "categories": list(resource.CATEGORIES),
            },
            "scope": "Namespaced",
            "versions": [version],
        },
    }


_HEADER = "# Generated by `make crds` from llmfleet_contract.api. Do not edit.\n"


def render_yaml(crd: Schema) -> str:
    return _HEADER + yaml.safe_dump(crd, sort_keys=False, width=100)


def render_chart_template(crd: Schema) -> str:
    """The same CRD as a Helm template behind ``crds.enabled`` / ``crds.keep``."""
    body = yaml.safe_dump(crd, sort_keys=False, width=100)
    head, rest = body.split("metadata:\n", 1)
    metadata = (
        "metadata:\n"
        "  annotations:\n"
        "    {{- if .Values.crds.keep }}\n"
        "    helm.sh/resource-policy: keep\n"
        "    {{- end }}\n"
        "  labels:\n"
        '    {{- include "llmfleet.labels" . | nindent 4 }}\n'
    )
    return _HEADER + "{{- if .Values.crds.enabled }}\n" + head + metadata + rest + "{{- end }}\n"
