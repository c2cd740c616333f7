"""The ``LLMTenant`` resource (llmfleet.io/v1alpha1): who may call which models, and how much.

A tenant is a namespaced object beside the LLMDeployments it may call. The gateway reads it
and the Secret its ``apiKeys`` names: a request carrying one of that Secret's keys is the
tenant's. Keys are never stored, only their SHA-256 (see :func:`key_hash`), so the Secret
(and a Git repository holding it) gives nothing away.

A tenant reaches an LLMDeployment when both sides agree: the tenant lists it in
``spec.models``, and the LLMDeployment's ``spec.serving.tenants`` is unset or lists the
tenant. Anything else answers exactly as a model that does not exist.
"""

from __future__ import annotations

import hashlib
import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field

from llmfleet_contract.api.base import ApiModel, DnsLabel, SetOf
from llmfleet_contract.api.cel import CelRule
from llmfleet_contract.api.model import SecretReference
from llmfleet_contract.api.resource import ObjectMeta

KIND = "LLMTenant"
PLURAL = "llmtenants"
SINGULAR = "llmtenant"
SHORT_NAMES = ("llmt",)

KEY_HASH_PREFIX = "sha256:"
KEY_HASH_PATTERN = re.compile(r"^sha256:[0-9a-f]{64}$")


def key_hash(key: str) -> str:
    """What a tenant's Secret holds for an API key: ``sha256:<64 lower-case hex digits>``."""
    return KEY_HASH_PREFIX + hashlib.sha256(key.encode()).hexdigest()


class TenantPriority(StrEnum):
    """Which tenants a saturated gateway serves first."""

    INTERACTIVE = "Interactive"
    BATCH = "Batch"


class TenantLimits(ApiModel):
    """What one tenant may use, across every gateway replica. Unset: no limit."""

    requests_per_minute: Annotated[int, Field(ge=1, le=10_000_000)] | None = None
    """Requests admitted per minute."""
    tokens_per_minute: Annotated[int, Field(ge=1, le=10_000_000_000)] | None = None
    """Prompt plus completion tokens per minute. A request reserves its prompt estimate
    plus its ``max_tokens`` when admitted, and settles with the engine's usage when it ends
    (an aborted request pays what was generated), so concurrent requests cannot overshoot."""
    concurrent_requests: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    """Requests (streams or not) in flight at once."""
    tokens_per_day: Annotated[int, Field(ge=1, le=10_000_000_000_000)] | None = None
    """A budget of tokens per UTC day, reserved and settled like ``tokensPerMinute``.
    Spent, requests are refused until the next day, and told not to retry."""


class ResponseCache(ApiModel):
    """The tenant's answers kept at the gateway and given again for the same request."""

    ttl_seconds: Annotated[int, Field(ge=1, le=86_400)] = 300
    """How long an answer is given again. Only deterministic requests are kept (``temperature``
    0, or a ``seed``), matched exactly on their body (key order and ``user`` aside), within
    the gateway's memory bound (``--response-cache-mib``), and never for another tenant."""


class LLMTenantSpec(ApiModel):
    """A tenant: its keys, its models, its limits and its priority."""

    api_keys: SecretReference
    """The Secret, in the tenant's namespace, holding the tenant's API keys as hashes: each
    data entry (any name) holds one key's ``sha256:<64 hex digits>`` (``llmfleet key``
    prints a new key and its hash). The Secret must carry the label
    ``llmfleet.io/api-keys: "true"``: the gateway reads no other Secret. Removing an entry
    revokes that key."""
    models: Annotated[SetOf[DnsLabel], Field(min_length=1, max_length=256)]
    """The LLMDeployments, by name in the tenant's namespace, this tenant may call (by any
    of their served names); one that does not admit the tenant in its
    ``spec.serving.tenants`` stays out of reach."""
    priority: TenantPriority = TenantPriority.INTERACTIVE
    """Under saturation, the gateway serves Interactive tenants' waiting requests before
    Batch ones, and shares what is left fairly among the tenants of one priority."""
    limits: TenantLimits = Field(default_factory=TenantLimits)
    """Rate, token and concurrency limits."""
    regions: Annotated[SetOf[DnsLabel], Field(min_length=1, max_length=64)] | None = None
    """Data residency: the only regions (a gateway's ``--region``) where this tenant's
    requests may be served. A gateway of another region refuses them (403
    ``region_not_allowed``) and no gateway forwards them there, whatever the load. Unset:
    any region."""
    response_cache: ResponseCache | None = None
    """Opt in to the gateway's response cache: a repeated deterministic request is answered
    from it (``x-llmfleet-cache: hit``), without an engine. Unset: never cached."""


class LLMTenant(ApiModel):
    """A tenant of the gateway: API keys (hashed), the models it may call, limits, priority."""

    cel_rules = (
        CelRule(
            "self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')"
            " && size(self.metadata.name) <= 63",
            "metadata.name must be a DNS label (at most 63 lower case letters, digits and '-'):"
            " LLMDeployments name their tenants in spec.serving.tenants",
        ),
    )

    api_version: Literal["llmfleet.io/v1alpha1"] = "llmfleet.io/v1alpha1"
    """APIVersion."""
    kind: Literal["LLMTenant"] = "LLMTenant"
    """Kind."""
    metadata: ObjectMeta
    """Standard object metadata."""
    spec: LLMTenantSpec
    """Desired state."""
