"""The LLMDeployment API (llmfleet.io/v1alpha1): typed, frozen models, the source of truth.

The CRD in ``crds/`` is generated from these models (``make crds``); field docstrings
are what ``kubectl explain llmdeployment.spec`` prints.
"""

from llmfleet_operator.api.cel import CelRule
from llmfleet_operator.api.model import (
    OWNED_ENGINE_FLAGS,
    DType,
    EngineSpec,
    EnvVar,
    LoraAdapter,
    ModelSpec,
    owned_flag,
)
from llmfleet_operator.api.placement import (
    ModelCacheSpec,
    ParallelismSpec,
    PlacementSpec,
    Toleration,
)
from llmfleet_operator.api.resource import (
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
from llmfleet_operator.api.scaling import (
    AutoscalingMode,
    AutoscalingSpec,
    MetricsSourceKind,
    ScalingTargets,
)
from llmfleet_operator.api.status import (
    MAX_DECISIONS,
    Condition,
    ConditionStatus,
    ConditionType,
    LLMDeploymentStatus,
    Reason,
    ScalingDecision,
    Signals,
)

__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "MAX_DECISIONS",
    "OWNED_ENGINE_FLAGS",
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
    "LLMDeployment",
    "LLMDeploymentSpec",
    "LLMDeploymentStatus",
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
    "Toleration",
    "owned_flag",
]
