"""CEL rules: declared once on the API models, run by the API server and by us.

Each rule becomes an ``x-kubernetes-validations`` entry in the generated CRD, where
the API server evaluates it at ``kubectl apply``. The same rule is evaluated here with
cel-python by the pydantic models (the operator's view) and by ``llmfleet validate``
(the offline, pre-merge view), so the three can never disagree about what a rule says.

Rules stay inside the CEL subset that cel-go (Kubernetes) and cel-python share:
``has()``, ``size()``, ``matches()``, ``startsWith()``, macros and arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import celpy
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError


@dataclass(frozen=True)
class CelRule:
    """One ``x-kubernetes-validations`` entry.

    ``message`` is what a person reads when the rule fails, so it names the fields and
    says how to fix them. ``field_path`` (a JSONPath relative to the object the rule is
    on, e.g. ``.maxReplicas``) points the error at a field, as the API server does.
    """

    rule: str
    message: str
    field_path: str | None = None

    def to_schema(self) -> dict[str, str]:
        entry = {"rule": self.rule, "message": self.message}
        if self.field_path:
            entry["fieldPath"] = self.field_path
        return entry


def cel_string(text: str) -> str:
    """``text`` as a CEL string literal (single-quoted, backslashes and quotes escaped)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


class CelError(Exception):
    """A rule could not be evaluated (a bug in the rule, never in the user's input)."""


@cache
def _program(rule: str) -> celpy.Runner:
    env = celpy.Environment()
    return env.program(env.compile(rule))


def holds(rule: CelRule, value: Any) -> bool:
    """Evaluate ``rule`` with ``self`` bound to ``value`` (wire form: camelCase JSON).

    Numbers must already have the types the schema gives them (``number`` fields as
    float): cel-python, unlike cel-go, refuses to compare an int with a double.
    """
    try:
        result = _program(rule.rule).evaluate({"self": json_to_cel(value)})
    except CELEvalError as err:
        raise CelError(f"rule {rule.rule!r} failed to evaluate: {err}") from err
    if not isinstance(result, celtypes.BoolType):
        raise CelError(f"rule {rule.rule!r} returned {type(result).__name__}, not bool")
    return bool(result)
