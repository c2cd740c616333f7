"""Model tiers: an alias clients name, served by a cheaper model first and a larger one by rule.

Who uses it: :mod:`.server` resolves a request naming an alias to its first tier (or a later
one when a rule says so, :meth:`Alias.start`), and moves it one tier up when that tier's
replicas are all saturated or absent, or all fail before answering. The aliases come from
``llmfleet gateway --aliases FILE`` (YAML, the chart's ``gateway.aliases``)::

    aliases:
    - name: chat                  # what clients send as `model`
      tiers: [chat-small, chat-large]   # served model names, cheapest first
      escalate:
        promptTokensAbove: 6000   # a longer prompt (estimated) starts at the last tier
        tenants: [team-a/research]  # these tenants start at the last tier
        header: true              # `x-llmfleet-tier: MODEL` starts at that tier
        onSaturation: true        # every replica busy, or none ready: the next tier
        onFailure: true           # every replica failed before answering: the next tier

Never silent: the answer names the model that served it (``x-llmfleet-model``, and the body's
``model`` as the engine wrote it), an escalated one says why (``x-llmfleet-escalated``), and
``llmfleet_gateway_escalations_total`` counts each step. A tenant reaches an alias's tiers
that it may use and no other; an alias none of whose tiers it may use does not exist for it.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import pydantic
import yaml
from pydantic import Field

from llmfleet_contract.api.base import ApiModel

TIER_HEADER = "x-llmfleet-tier"
"""A client's choice of tier: the served name of one of the alias's tiers."""
MODEL_HEADER = "x-llmfleet-model"
"""On an alias's answer: the model that served it."""
ESCALATED_HEADER = "x-llmfleet-escalated"
"""On an escalated answer: why (the last step's :class:`Reason`)."""

ModelName = Annotated[str, Field(min_length=1, max_length=256)]


class Reason(StrEnum):
    """Why a request went past an alias's first tier."""

    HEADER = "Header"
    TENANT = "Tenant"
    PROMPT_LENGTH = "PromptLength"
    SATURATION = "Saturation"
    FAILURE = "Failure"


class Escalate(ApiModel):
    """When a request goes past the first tier."""

    prompt_tokens_above: Annotated[int, Field(ge=1)] | None = None
    tenants: frozenset[str] = frozenset()
    """Tenants by ``namespace/name``."""
    header: bool = True
    on_saturation: bool = True
    on_failure: bool = True


class Alias(ApiModel):
    name: ModelName
    tiers: Annotated[list[ModelName], Field(min_length=2, max_length=8)]
    escalate: Escalate = Field(default_factory=Escalate)

    @pydantic.field_validator("tiers")
    @classmethod
    def _distinct(cls, tiers: list[str]) -> list[str]:
        if len(set(tiers)) != len(tiers):
            raise ValueError("a model may be only one tier of an alias")
        return tiers

    def start(
        self, tiers: list[str], tenant: str, prompt_tokens: int, asked: str | None
    ) -> tuple[int, Reason | None]:
        """Where a request starts among ``tiers`` (those it may use, in order), and why
        it does not start at the first; ValueError for a tier header naming none of them."""
        rules = self.escalate
        if asked is not None and rules.header:
            if asked not in tiers:
                raise ValueError(asked)
            index = tiers.index(asked)
            return index, (Reason.HEADER if index else None)
        last = len(tiers) - 1
        if last and tenant in rules.tenants:
            return last, Reason.TENANT
        above = rules.prompt_tokens_above
        if last and above is not None and prompt_tokens > above:
            return last, Reason.PROMPT_LENGTH
        return 0, None


class AliasFile(ApiModel):
    aliases: list[Alias] = Field(default_factory=list)

    @pydantic.field_validator("aliases")
    @classmethod
    def _unique(cls, aliases: list[Alias]) -> list[Alias]:
        names = [alias.name for alias in aliases]
        if len(set(names)) != len(names):
            raise ValueError("two aliases have one name")
        return aliases


def load_file(path: Path) -> dict[str, Alias]:
    """The aliases of ``path`` by name; ValueError saying what is wrong."""
    try:
        found = AliasFile.model_validate(yaml.safe_load(path.read_text()) or {})
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: {error}") from None
    except pydantic.ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise ValueError(f"{path}: {problems}") from None
    return {alias.name: alias for alias in found.aliases}
