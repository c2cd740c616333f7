"""Where a serving group runs: ``spec.parallelism`` and ``spec.placement``.

One replica is one serving group of tensor x pipeline parallel GPUs. A group that fits
on one node is one pod; a larger one spans ``TP x PP / gpusPerNode`` nodes as a
LeaderWorkerSet group, each pod taking ``gpusPerNode`` GPUs.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field

from llmfleet_contract.api.base import ApiModel, Quantity, SetOf
from llmfleet_contract.api.cel import CelRule

_GROUP_GPUS = "(self.tensorParallelSize * self.pipelineParallelSize)"

# A qualified extended resource name, e.g. nvidia.com/gpu or amd.com/gpu.
_RESOURCE_NAME_PATTERN = r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$"


class ParallelismSpec(ApiModel):
    """How one replica's model is split across GPUs."""

    cel_rules = (
        CelRule(
            f"{_GROUP_GPUS} <= self.gpusPerNode || {_GROUP_GPUS} % self.gpusPerNode == 0",
            "tensorParallelSize x pipelineParallelSize must fit on one node (at most"
            " gpusPerNode) or be a multiple of gpusPerNode, so every node of a group"
            " holds the same number of GPUs",
        ),
    )

    tensor_parallel_size: Annotated[int, Field(ge=1, le=256)] = 1
    """GPUs each layer is split across (vLLM ``--tensor-parallel-size``)."""
    pipeline_parallel_size: Annotated[int, Field(ge=1, le=64)] = 1
    """Pipeline stages the layers are split into (vLLM ``--pipeline-parallel-size``)."""
    gpus_per_node: Annotated[int, Field(ge=1, le=64)] = 8
    """GPUs a node of the target pool offers. A group needing more than this spans
    ``tensorParallelSize x pipelineParallelSize / gpusPerNode`` nodes."""

    @property
    def gpus_per_group(self) -> int:
        return self.tensor_parallel_size * self.pipeline_parallel_size

    @property
    def nodes_per_group(self) -> int:
        return max(1, self.gpus_per_group // self.gpus_per_node)

    @property
    def gpus_per_pod(self) -> int:
        return min(self.gpus_per_group, self.gpus_per_node)


class TolerationOperator(StrEnum):
    """How a toleration matches a taint's value."""

    EXISTS = "Exists"
    EQUAL = "Equal"


class TaintEffect(StrEnum):
    """Which taint effect a toleration tolerates."""

    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class Toleration(ApiModel):
    """A core/v1 Toleration."""

    cel_rules = (
        CelRule(
            "!(self.operator == 'Exists' && has(self.value) && self.value != '')",
            "value must be empty when operator is Exists",
            ".value",
        ),
    )

    key: Annotated[str, Field(max_length=316)] | None = None
    """Taint key; empty with operator Exists tolerates every taint."""
    operator: TolerationOperator = TolerationOperator.EQUAL
    """Exists (any value) or Equal (the given value)."""
    value: Annotated[str, Field(max_length=63)] | None = None
    """Taint value for operator Equal."""
    effect: TaintEffect | None = None
    """Effect to tolerate; empty tolerates every effect."""
    toleration_seconds: int | None = None
    """For NoExecute: how long the pod stays bound after the taint appears."""


class ModelCacheSpec(ApiModel):
    """Volume the engine downloads weights into and loads them from."""

    cel_rules = (
        CelRule(
            "!(has(self.claimName) && has(self.sizeLimit))",
            "set claimName (a PersistentVolumeClaim) or sizeLimit (an emptyDir), not both",
        ),
    )

    claim_name: Annotated[str, Field(min_length=1, max_length=253)] | None = None
    """PersistentVolumeClaim to use (shared across replicas if ReadWriteMany). Unset:
    an emptyDir per pod, so each new pod downloads the weights again."""
    size_limit: Quantity | None = None
    """Size limit of the emptyDir when no claim is given."""
    mount_path: Annotated[str, Field(pattern=r"^/", max_length=256)] = "/models"
    """Where the volume is mounted in the engine container."""


class SpotSpec(ApiModel):
    """Burst capacity on spot (preemptible) nodes above an on-demand floor.

    The first ``onDemandReplicas`` replicas run on the other eligible nodes (never on one
    matching ``nodeSelector``); the rest run on spot nodes while these have room, and on
    on-demand nodes while they have none. A replica whose node gets a preemption notice
    (a taint the operator knows, e.g. ``karpenter.sh/disrupted``) is drained at once and
    replaced. A separate workload (``<name>-spot``) runs the spot replicas.
    """

    node_selector: Annotated[
        dict[str, Annotated[str, Field(max_length=63)]], Field(min_length=1, max_length=8)
    ]
    """Labels that mark the spot nodes (e.g. ``karpenter.sh/capacity-type: spot``,
    ``cloud.google.com/gke-spot: "true"``)."""
    tolerations: Annotated[list[Toleration], Field(max_length=32)] | None = None
    """Taints of the spot nodes the spot replicas tolerate, beside ``placement.tolerations``
    (e.g. ``kubernetes.azure.com/scalesetpriority=spot:NoSchedule``)."""
    on_demand_replicas: Annotated[int, Field(ge=0, le=10_000)] = 1
    """Replicas kept on on-demand nodes whatever spot offers (fewer when fewer are
    wanted)."""
    gpu_hour_price: (
        Annotated[str, Field(pattern=r"^[0-9]{1,9}(\.[0-9]{1,6})?$", max_length=16)] | None
    ) = None
    """What one of these GPUs costs an hour on a spot node (``"1.60"``): ``llmfleet usage``
    prices the GPU-hours of the ready spot replicas with it. Unset: the on-demand price."""
    node_provisioning_seconds: Annotated[int, Field(ge=0, le=3_600)] = 0
    """With a node provisioner that adds spot nodes for Pending pods (Karpenter, the
    cluster autoscaler): spot replicas are asked for whether or not a spot node has room,
    and one Pending longer than this falls back on demand (then spot is tried again, the
    on-demand replica staying until a spot one is ready). 0: only the room on the spot
    nodes that exist counts, and no spot pod is asked for beyond it."""


class PlacementSpec(ApiModel):
    """Which nodes and GPUs the engine pods may use."""

    gpu_resource_name: Annotated[str, Field(max_length=253, pattern=_RESOURCE_NAME_PATTERN)] = (
        "nvidia.com/gpu"
    )
    """Extended resource the pods request GPUs as (``nvidia.com/gpu``, ``amd.com/gpu``)."""
    gpu_product_label: Annotated[str, Field(max_length=316)] = "nvidia.com/gpu.product"
    """Node label that names the GPU model (set by NVIDIA GPU feature discovery)."""
    gpu_products: (
        Annotated[SetOf[Annotated[str, Field(max_length=63)]], Field(max_length=16)] | None
    ) = None
    """GPU models the pods may run on (values of ``gpuProductLabel``, e.g.
    ``NVIDIA-H100-80GB-HBM3``); any of them. Unset: any node with the GPU resource."""
    node_selector: dict[str, Annotated[str, Field(max_length=63)]] | None = None
    """Node labels the pods require, added to the GPU product selection."""
    tolerations: Annotated[list[Toleration], Field(max_length=32)] | None = None
    """Taints the pods tolerate (GPU nodes are often tainted ``nvidia.com/gpu``)."""
    affinity: (
        Annotated[
            dict[str, Any],
            Field(
                json_schema_extra=lambda schema: schema.update(
                    {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                )
            ),
        ]
        | None
    ) = None
    """A core/v1 Affinity, given to the pods as is (e.g. to spread replicas over zones)."""
    spot: SpotSpec | None = None
    """Run replicas above an on-demand floor on spot nodes. Unset: no distinction."""
    priority_class_name: Annotated[str, Field(max_length=253)] | None = None
    """PriorityClass of the pods, so serving can preempt batch work."""
    shared_memory_size: Quantity = "16Gi"
    """Size of the memory-backed ``/dev/shm`` (NCCL and vLLM workers exchange tensors
    through it). Counts against the pod's memory."""
    model_cache: ModelCacheSpec | None = None
    """Volume for the weights. Unset: an emptyDir at ``/models``."""
    gpu_hour_price: (
        Annotated[str, Field(pattern=r"^[0-9]{1,9}(\.[0-9]{1,6})?$", max_length=16)] | None
    ) = None
    """What one of these GPUs costs an hour (``"2.50"``), in the currency the platform
    reports in: ``llmfleet usage`` prices this model's GPU-hours with it. Unset: the
    operator's ``--gpu-hour-price`` (the chart's ``operator.gpuHourPrice``)."""
