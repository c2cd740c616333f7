"""What to serve and how vLLM runs it: ``spec.model`` and ``spec.engine``.

The engine flags and environment the operator derives from the spec (parallelism, model,
ports, slots, ...) are *owned* (:mod:`llmfleet_contract.engine`): a user's ``extraArgs`` or
``env`` may not set them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from llmfleet_contract.api.base import ApiModel, DnsLabel, ListByName, Quantity, Rules, SetOf
from llmfleet_contract.api.cel import CelRule, cel_string
from llmfleet_contract.engine import (
    OWNED_ENV_NAMES,
    OWNED_ENV_PREFIXES,
    OWNED_FLAG_PATTERNS,
    SIMULATOR_PROFILES,
)

MODEL_SOURCE_SCHEMES = ("hf", "s3", "gs", "pvc", "oci")
_SOURCE_RULE = (
    "self.source.matches('^(" + "|".join(MODEL_SOURCE_SCHEMES) + r")://[^/\\s]+(/\\S*)?$')"
    " || self.source.matches('^/\\\\S*$')"
)
_SOURCE_MESSAGE = (
    "must be a URI with scheme "
    + ", ".join(f"{scheme}://" for scheme in MODEL_SOURCE_SCHEMES)
    + " or an absolute local path"
)


class DType(StrEnum):
    """Weight and activation precision, as vLLM's ``--dtype``."""

    AUTO = "auto"
    HALF = "half"
    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"
    FLOAT = "float"
    FLOAT32 = "float32"


class PullPolicy(StrEnum):
    """When the kubelet pulls the engine image."""

    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"


class SecretReference(ApiModel):
    """A Secret in the object's own namespace."""

    name: DnsLabel
    """Name of the Secret."""


class LoraAdapter(ApiModel):
    """A LoRA adapter served beside the base model under its own name."""

    cel_rules = (CelRule(_SOURCE_RULE, "source " + _SOURCE_MESSAGE, ".source"),)

    name: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._/-]+$")]
    """Model name clients put in requests to use this adapter."""
    source: Annotated[str, Field(max_length=1024)]
    """Where the adapter weights are: hf://, s3://, gs://, pvc://, oci:// or a local path."""


class ModelSpec(ApiModel):
    """The model to serve."""

    cel_rules = (
        CelRule(_SOURCE_RULE, "source " + _SOURCE_MESSAGE, ".source"),
        CelRule(
            "!has(self.loraAdapters) || !has(self.servedNames) ||"
            " self.loraAdapters.all(a, !(a.name in self.servedNames))",
            "loraAdapters names must differ from servedNames: a request's model name must"
            " pick exactly one of them",
            ".loraAdapters",
        ),
    )

    source: Annotated[str, Field(max_length=1024)]
    """Where the weights are. One of hf://ORG/NAME (Hugging Face), s3://BUCKET/PATH,
    gs://BUCKET/PATH, pvc://CLAIM/PATH (a PersistentVolumeClaim in this namespace),
    oci://REGISTRY/IMAGE (a model packaged as an image), or an absolute path that the
    engine image already holds."""
    revision: Annotated[str, Field(max_length=256, pattern=r"^[A-Za-z0-9._/-]+$")] | None = None
    """Branch, tag or commit of the model (hf:// sources). Pin a commit for
    reproducible rollouts: changing it rolls the pods."""
    served_names: (
        Annotated[
            SetOf[Annotated[str, Field(min_length=1, max_length=128)]],
            Field(min_length=1, max_length=8),
        ]
        | None
    ) = None
    """Names clients use in the OpenAI ``model`` field. Defaults to the
    LLMDeployment's name."""
    dtype: DType = DType.AUTO
    """Weight and activation precision (vLLM ``--dtype``)."""
    quantization: Annotated[str, Field(max_length=32, pattern=r"^[a-z0-9_-]+$")] | None = None
    """Quantization method as vLLM names it (e.g. ``fp8``, ``awq``, ``gptq``,
    ``compressed-tensors``). Unset: taken from the checkpoint's config."""
    max_model_len: Annotated[int, Field(ge=16, le=10_485_760)] | None = None
    """Context length in tokens (prompt plus output). Unset: the model's own limit.
    Lower it to fit more concurrent sequences into the KV cache."""
    lora_adapters: Annotated[ListByName[LoraAdapter], Field(max_length=32)] | None = None
    """LoRA adapters loaded at start and served under their own names."""
    max_lora_rank: Annotated[int, Field(ge=1, le=512)] | None = None
    """Highest rank among ``loraAdapters`` (vLLM ``--max-lora-rank``; vLLM's default is 16)."""
    pull_secret_ref: SecretReference | None = None
    """Secret with the credentials to fetch the weights (``HF_TOKEN`` for hf://,
    ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` for s3://, ...). Its keys are
    exposed to the engine as environment variables; never logged."""


class EnvVar(ApiModel):
    """An environment variable for the engine container."""

    name: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
    """Variable name."""
    value: Annotated[str, Field(max_length=4096)] = ""
    """Variable value."""


class ContainerResources(ApiModel):
    """CPU and memory for the engine container. GPUs come from ``spec.parallelism``."""

    cpu: Quantity | None = None
    """CPU request and limit (e.g. ``16``)."""
    memory: Quantity | None = None
    """Memory request and limit (e.g. ``200Gi``). Must cover the shared memory volume."""


SimulatorProfile = StrEnum(  # type: ignore[misc]
    "SimulatorProfile", {name: name for name in SIMULATOR_PROFILES}
)
SimulatorProfile.__doc__ = "A performance profile of the engine simulator."


class SimulatorSpec(ApiModel):
    """Run llmfleet's engine simulator in place of vLLM.

    Same OpenAI API, metrics and scheduling behaviour (continuous batching, KV-cache
    budget, prefix cache), with latencies from a profile calibrated on real GPUs and no
    GPU work: for gateway and autoscaling tests, demos and capacity planning."""

    profile: SimulatorProfile = SimulatorProfile("fast")
    """Latency profile, e.g. ``h100-llama2-70b-tp4``; ``fast`` for tests."""
    time_scale: Annotated[float, Field(gt=0, le=10_000)] = 1.0
    """Simulated engine seconds per wall-clock second (speeds up or slows down)."""
    startup_delay_seconds: Annotated[float, Field(ge=0, le=3_600)] = 0.0
    """Seconds before the engine answers, to emulate loading weights."""


_NOT_OWNED = Rules(
    tuple(
        CelRule(
            "!self.matches(" + cel_string(pattern) + ")",
            "extraArgs may not set flags the operator derives from the spec (model,"
            " served names, revision, dtype, quantization, max model length, max_num_seqs,"
            " max_num_batched_tokens, GPU memory utilization, prefix caching, chunked"
            " prefill, parallelism, LoRA, host, port, shutdown timeout, multi-node flags),"
            " nor abbreviate one: set the matching spec field instead",
        )
        for pattern in OWNED_FLAG_PATTERNS
    )
)


class EngineSpec(ApiModel):
    """How vLLM runs: image, batching and memory knobs, and a checked passthrough."""

    cel_rules = (
        CelRule(
            "!has(self.env) || self.env.all(e, !(e.name in ["
            + ", ".join(f"'{name}'" for name in OWNED_ENV_NAMES)
            + "]) && "
            + " && ".join(f"!e.name.startsWith('{prefix}')" for prefix in OWNED_ENV_PREFIXES)
            + ")",
            "env may not set variables the operator owns ("
            + ", ".join(OWNED_ENV_NAMES)
            + ", "
            + ", ".join(f"{prefix}*" for prefix in OWNED_ENV_PREFIXES)
            + "): use spec.model.pullSecretRef for credentials",
            ".env",
        ),
    )

    image: Annotated[str, Field(min_length=1, max_length=512)] = (
        "ghcr.io/llmfleet/engine:v0.1.0-vllm0.32.0"
    )
    """Engine image: vLLM plus the llmfleet launcher."""
    image_pull_policy: PullPolicy = PullPolicy.IF_NOT_PRESENT
    """When to pull the image."""
    image_pull_secrets: Annotated[list[SecretReference], Field(max_length=8)] | None = None
    """Secrets for a private image registry."""
    max_num_seqs: Annotated[int, Field(ge=1, le=65_536)] = 256
    """Concurrent sequences per replica (vLLM ``--max-num-seqs``): the replica's slots.
    The autoscaler's slots-used signal is running requests divided by this."""
    max_num_batched_tokens: Annotated[int, Field(ge=1, le=1_048_576)] | None = None
    """Tokens per scheduler step (vLLM ``--max-num-batched-tokens``): the prefill chunk
    budget. Larger favours throughput, smaller favours inter-token latency."""
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] = 0.9
    """Share of each GPU's memory vLLM may use for weights, activations and KV cache."""
    enable_prefix_caching: bool = True
    """Reuse the KV cache of shared prompt prefixes."""
    enable_chunked_prefill: bool = True
    """Split long prefills into chunks that interleave with decodes."""
    extra_args: (
        Annotated[list[Annotated[str, Field(max_length=1024), _NOT_OWNED]], Field(max_length=64)]
        | None
    ) = None
    """Further ``vllm serve`` arguments, passed as is (e.g.
    ``--max-num-batched-tokens=8192``). Flags the operator owns are refused."""
    env: Annotated[ListByName[EnvVar], Field(max_length=64)] | None = None
    """Further environment variables for the engine (e.g. ``VLLM_ATTENTION_BACKEND``)."""
    resources: ContainerResources | None = None
    """CPU and memory of the engine container."""
    simulator: SimulatorSpec | None = None
    """Run the engine simulator instead of vLLM (the pods still request their GPUs, so
    scheduling behaves as for real). Unset: vLLM."""
