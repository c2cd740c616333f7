"""The engine config the operator renders for the launcher (a mounted file or an env var).

Who uses it: the operator imports :class:`EngineConfig` to render it (the operator is the
layer above the runtime); :mod:`.cli` loads it with :func:`load_config`; :mod:`.argv` turns
it into the ``vllm serve`` command line. ``extra_args`` may not set a flag the operator
owns (:mod:`llmfleet_contract.engine`, the same matcher the API's CEL rule runs).

Field names are snake_case in Python and camelCase on the wire (the operator writes
JSON or YAML with camelCase keys; both spellings are accepted when reading).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from llmfleet_contract.engine import owned_flags_in

CONFIG_ENV = "LLMFLEET_ENGINE_CONFIG"
"""Env var holding the config as JSON (used when no ``--config`` file is given)."""

BIND_HOST_ENV = "LLMFLEET_BIND_HOST"
"""Overrides the address the engine binds (``host``). Set by the local pod runner, where
every pod shares this machine's network stack and binds its own pod IP, not 0.0.0.0."""

DEFAULT_ENGINE_COMMAND = ("vllm", "serve")


class _Model(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True
    )


class LoraAdapter(_Model):
    """A LoRA adapter served beside the base model under its own name."""

    name: str = Field(min_length=1, description="Model name clients use for this adapter.")
    path: str = Field(min_length=1, description="Local path or hub id of the adapter.")


class EngineConfig(_Model):
    """How to run one vLLM serving group (one replica: TP x PP GPUs on one or more nodes)."""

    model: str = Field(min_length=1, description="Hub id or local path of the model weights.")
    revision: str | None = Field(None, description="Model revision (branch, tag or commit).")
    served_model_names: tuple[str, ...] = Field(
        (), description="Names the API answers to; default: the model."
    )
    dtype: Literal["auto", "half", "float16", "bfloat16", "float", "float32"] = "auto"
    quantization: str | None = Field(None, description="vLLM quantization method, e.g. awq, fp8.")
    max_model_len: int | None = Field(None, ge=1, description="Context length (tokens).")
    tensor_parallel_size: int = Field(1, ge=1)
    pipeline_parallel_size: int = Field(1, ge=1)
    nodes: int = Field(1, ge=1, description="Nodes in the group (LeaderWorkerSet size).")
    gpus_per_node: int | None = Field(
        None, ge=1, description="GPUs each pod must see; default TP x PP / nodes."
    )
    max_num_seqs: int | None = Field(None, ge=1, description="Concurrent sequences (slots).")
    max_num_batched_tokens: int | None = Field(None, ge=1)
    gpu_memory_utilization: float | None = Field(None, gt=0.0, le=1.0)
    enable_prefix_caching: bool | None = None
    enable_chunked_prefill: bool | None = None
    lora_adapters: tuple[LoraAdapter, ...] = ()
    max_loras: int | None = Field(None, ge=1)
    max_lora_rank: int | None = Field(None, ge=1)
    extra_args: tuple[str, ...] = Field(
        (), description="Passthrough vllm serve flags; may not set a flag the launcher owns."
    )
    host: str = "0.0.0.0"
    port: int = Field(8000, ge=1, le=65535)
    master_port: int = Field(29500, ge=1, le=65535, description="Multi-node rendezvous port.")
    drain_timeout_seconds: int = Field(
        30, ge=0, description="On SIGTERM, how long in-flight requests may run before exit."
    )
    gpu_check: bool = Field(True, description="Refuse to start unless the pod sees its GPUs.")
    engine_command: tuple[str, ...] = Field(
        DEFAULT_ENGINE_COMMAND,
        min_length=1,
        description="Command the flags are appended to (a seam: tests point it at the "
        "simulator or at `python -m vllm.entrypoints.openai.api_server`).",
    )

    @field_validator("extra_args")
    @classmethod
    def _no_owned_flags(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        owned = owned_flags_in(value)
        if owned:
            raise ValueError(
                f"extraArgs may not set {', '.join(owned)}: the launcher sets these from "
                "the spec; use the matching field instead"
            )
        return value

    @model_validator(mode="after")
    def _group_shape(self) -> EngineConfig:
        world = self.tensor_parallel_size * self.pipeline_parallel_size
        if world % self.nodes:
            raise ValueError(
                f"tensor_parallel_size x pipeline_parallel_size ({world}) must divide evenly "
                f"over {self.nodes} nodes"
            )
        if self.gpus_per_node is not None and self.gpus_per_node * self.nodes != world:
            raise ValueError(
                f"gpus_per_node ({self.gpus_per_node}) x nodes ({self.nodes}) must equal "
                f"tensor_parallel_size x pipeline_parallel_size ({world})"
            )
        return self

    @property
    def world_size(self) -> int:
        """GPUs of the whole group."""
        return self.tensor_parallel_size * self.pipeline_parallel_size

    @property
    def gpus_needed_per_node(self) -> int:
        return self.gpus_per_node or self.world_size // self.nodes

    @property
    def names(self) -> tuple[str, ...]:
        return self.served_model_names or (self.model,)


def load_config(path: Path | None, env: Mapping[str, str] | None = None) -> EngineConfig:
    """Read the config from ``path`` (JSON or YAML) or else from ``$LLMFLEET_ENGINE_CONFIG``."""
    environ = os.environ if env is None else env
    if path is not None:
        data = yaml.safe_load(path.read_text())
    elif environ.get(CONFIG_ENV):
        data = json.loads(environ[CONFIG_ENV])
    else:
        raise ValueError(f"no engine config: pass --config FILE or set {CONFIG_ENV}")
    return EngineConfig.model_validate(data)
