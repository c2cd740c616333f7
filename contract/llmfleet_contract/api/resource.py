"""The ``LLMDeployment`` resource (llmfleet.io/v1alpha1): spec, serving and identity."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field

from llmfleet_contract.api.base import ApiModel, DnsLabel, IntOrPercent, SetOf
from llmfleet_contract.api.cel import CelRule
from llmfleet_contract.api.model import EngineSpec, ModelSpec
from llmfleet_contract.api.placement import ParallelismSpec, PlacementSpec
from llmfleet_contract.api.scaling import AutoscalingSpec
from llmfleet_contract.api.status import LLMDeploymentStatus

GROUP = "llmfleet.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "LLMDeployment"
PLURAL = "llmdeployments"
SINGULAR = "llmdeployment"
SHORT_NAMES = ("llmd", "llmdeploy")
CATEGORIES = ("llmfleet",)

_ZERO = "['0', '0%']"
MAX_NAME_LENGTH = 52
# A LeaderWorkerSet <name>-group makes StatefulSets <lws>-<group> whose revision-hash
# label (<statefulset>-<10 characters>) must stay within 63 characters.
MAX_MULTI_NODE_NAME_LENGTH = 40


class RolloutStrategy(StrEnum):
    """How replicas are replaced when the pod template changes."""

    ROLLING_UPDATE = "RollingUpdate"
    RECREATE = "Recreate"


class RolloutSpec(ApiModel):
    """How a changed spec reaches the pods."""

    cel_rules = (
        CelRule(
            f"!(string(self.maxSurge) in {_ZERO} && string(self.maxUnavailable) in {_ZERO})",
            "maxSurge and maxUnavailable may not both be 0: the rollout could never progress",
        ),
    )

    strategy: RolloutStrategy = RolloutStrategy.ROLLING_UPDATE
    """RollingUpdate replaces groups a few at a time; Recreate stops every group first
    (for fleets with no spare GPUs)."""
    max_surge: IntOrPercent = 1
    """Extra groups during a RollingUpdate. Each one needs spare GPUs."""
    max_unavailable: IntOrPercent = 0
    """Groups that may be down during a RollingUpdate."""


class ServingSpec(ApiModel):
    """Who reaches this model, from where, and how replicas leave."""

    region: DnsLabel | None = None
    """The region this fleet serves in. A gateway started with ``--region`` serves it as
    local only there (a gateway of another region that discovers it leaves it alone, and
    reaches it through that region's gateways), and ``/v1/models`` names it. Unset: local
    to every gateway that discovers it."""
    ttft_objective_seconds: Annotated[float, Field(gt=0, le=600)] | None = None
    """The time to first token this model should meet. When every local replica's estimate
    is above it, a gateway with peer regions sends new requests to the peer that estimates
    the least below it (spill), until its own estimate falls back under 0.8 of it. Unset:
    spill only when every local replica is saturated."""
    tenants: Annotated[SetOf[DnsLabel], Field(max_length=256)] | None = None
    """LLMTenants (by name, in this namespace) allowed to call this model through the
    gateway; each must also list this LLMDeployment in its own ``spec.models``. Unset:
    every tenant that lists it."""
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)
    """How a changed spec reaches the pods."""
    drain_deadline_seconds: Annotated[int, Field(ge=0, le=3_600)] = 120
    """On scale-down or rollout, in-flight requests get this long to finish after the
    gateway stops sending new ones; then the engine stops."""


class LLMDeploymentSpec(ApiModel):
    """A fleet of vLLM replicas serving one model."""

    cel_rules = (
        CelRule(
            "!(has(self.autoscaling) && self.autoscaling.mode == 'Builtin' && has(self.replicas))",
            "replicas is managed by the built-in autoscaler: remove spec.replicas, or set"
            " autoscaling.mode: External to let an HPA or KEDA drive it",
            ".replicas",
        ),
        CelRule(
            "!has(self.autoscaling) || !has(self.replicas) ||"
            " (self.replicas >= self.autoscaling.minReplicas &&"
            " self.replicas <= self.autoscaling.maxReplicas)",
            "replicas must lie within [autoscaling.minReplicas, autoscaling.maxReplicas]",
            ".replicas",
        ),
        CelRule(
            "self.serving.rollout.strategy != 'Recreate' ||"
            " self.parallelism.tensorParallelSize * self.parallelism.pipelineParallelSize"
            " <= self.parallelism.gpusPerNode",
            "rollout strategy Recreate is not available when a group spans several nodes"
            " (LeaderWorkerSet rolls groups): use RollingUpdate with maxUnavailable",
            ".serving.rollout.strategy",
        ),
    )

    model: ModelSpec
    """The model to serve."""
    engine: EngineSpec = Field(default_factory=EngineSpec)
    """How vLLM runs."""
    parallelism: ParallelismSpec = Field(default_factory=ParallelismSpec)
    """How one replica is split across GPUs and nodes."""
    placement: PlacementSpec = Field(default_factory=PlacementSpec)
    """Which nodes and GPUs the pods use."""
    replicas: Annotated[int, Field(ge=0, le=10_000)] | None = None
    """Replicas (serving groups) when ``autoscaling`` is unset, or when an external
    scaler drives them (``autoscaling.mode: External``). ``kubectl scale`` sets it.
    Unset without autoscaling: 1."""
    autoscaling: AutoscalingSpec | None = None
    """Scale replicas from engine metrics. Unset: a fixed ``replicas``."""
    serving: ServingSpec = Field(default_factory=ServingSpec)
    """Region, tenants, rollout and draining."""


class ObjectMeta(ApiModel):
    """The part of metadata llmfleet reads; other metadata fields pass through."""

    model_config = ApiModel.model_config | {"extra": "allow"}

    name: str
    """Name: a DNS-1035 label of at most 52 characters, so that child names with their
    suffixes stay valid. Also the default served model name."""
    namespace: str | None = None
    """Namespace."""
    labels: dict[str, str] | None = None
    """Labels."""
    annotations: dict[str, str] | None = None
    """Annotations."""
    generation: int | None = None
    """Spec generation (set by the API server)."""


class LLMDeployment(ApiModel):
    """A fleet of tensor-parallel vLLM replicas serving one model, scaled from engine metrics."""

    cel_rules = (
        CelRule(
            f"size(self.metadata.name) <= {MAX_NAME_LENGTH}",
            f"metadata.name may be at most {MAX_NAME_LENGTH} characters: the names of the"
            " Deployment, Service and pods add suffixes to it",
        ),
        CelRule(
            "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
            "metadata.name must be a DNS-1035 label (lower case letters, digits and '-',"
            " starting with a letter): it names the Service",
        ),
        CelRule(
            "self.spec.parallelism.tensorParallelSize * self.spec.parallelism.pipelineParallelSize"
            " <= self.spec.parallelism.gpusPerNode"
            f" || size(self.metadata.name) <= {MAX_MULTI_NODE_NAME_LENGTH}",
            f"metadata.name may be at most {MAX_MULTI_NODE_NAME_LENGTH} characters when a replica"
            " spans several nodes: the LeaderWorkerSet's StatefulSets and labels add suffixes",
        ),
    )

    api_version: Literal["llmfleet.io/v1alpha1"] = "llmfleet.io/v1alpha1"
    """APIVersion."""
    kind: Literal["LLMDeployment"] = "LLMDeployment"
    """Kind."""
    metadata: ObjectMeta
    """Standard object metadata."""
    spec: LLMDeploymentSpec
    """Desired state."""
    status: LLMDeploymentStatus | None = None
    """Observed state (written by the operator)."""

    @property
    def served_names(self) -> list[str]:
        return self.spec.model.served_names or [self.metadata.name]
