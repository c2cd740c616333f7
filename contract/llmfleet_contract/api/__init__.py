"""The llmfleet API (llmfleet.io/v1alpha1): typed, frozen models, the source of truth.

Two kinds: LLMDeployment (a fleet serving one model) and LLMTenant (who may call which
models, and how much). The CRDs in ``crds/`` are generated from these models
(``make crds``); field docstrings are what ``kubectl explain llmdeployment.spec`` prints.
"""

from llmfleet_contract.api.base import ADMITTED
from llmfleet_contract.api.cel import CelRule
from llmfleet_contract.api.model import (
    DType,
    EngineSpec,
    EnvVar,
    LoraAdapter,
    ModelSpec,
)
from llmfleet_contract.api.placement import (
    ModelCacheSpec,
    ParallelismSpec,
    PlacementSpec,
    SpotSpec,
    Toleration,
)
from llmfleet_contract.api.resource import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAMES,
    VERSION,
    LLMDeployment,
    LLMDeploymentSpec,
    RolloutStrategy,
    ServingSpec,
)
from llmfleet_contract.api.scaling import (
    AutoscalingMode,
    AutoscalingSpec,
    MetricsSourceKind,
    ScalingTargets,
)
from llmfleet_contract.api.status import (
    MAX_DECISIONS,
    Condition,
    ConditionStatus,
    ConditionType,
    EventReason,
    EventType,
    LLMDeploymentStatus,
    Reason,
    ScalingDecision,
    Signals,
)
from llmfleet_contract.api.tenant import (
    LLMTenant,
    LLMTenantSpec,
    TenantLimits,
    TenantPriority,
    key_hash,
)

__all__ = [
    "ADMITTED",
    "API_VERSION",
    "GROUP",
    "KIND",
    "MAX_DECISIONS",
    "PLURAL",
    "SHORT_NAMES",
    "VERSION",
    "AutoscalingMode",
    "AutoscalingSpec",
    "CelRule",
    "Condition",
    "ConditionStatus",
    "ConditionType",
    "DType",
    "EngineSpec",
    "EnvVar",
    "EventReason",
    "EventType",
    "LLMDeployment",
    "LLMDeploymentSpec",
    "LLMDeploymentStatus",
    "LLMTenant",
    "LLMTenantSpec",
    "LoraAdapter",
    "MetricsSourceKind",
    "ModelCacheSpec",
    "ModelSpec",
    "ParallelismSpec",
    "PlacementSpec",
    "Reason",
    "RolloutStrategy",
    "ScalingDecision",
    "ScalingTargets",
    "ServingSpec",
    "Signals",
    "SpotSpec",
    "TenantLimits",
    "TenantPriority",
    "Toleration",
    "key_hash",
]
