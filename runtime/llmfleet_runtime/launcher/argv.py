"""Build the engine command line from the config and the pod's place in its group (pure).

Who calls it: :mod:`.cli` (``llmfleet launch``), and the operator's tests may call it to
show what a spec will run.

Multi-node groups follow vLLM's own multi-node launch without Ray (vLLM >= 0.11,
checked against 0.32's ``vllm serve`` flags): every node runs ``vllm serve`` with the same
model and parallel flags plus ``--nnodes N --node-rank R --master-addr LEADER
--master-port P``; rank 0 (the leader) serves the API, the others add ``--headless``.
In a LeaderWorkerSet the leader address, group size and rank come from
``LWS_LEADER_ADDRESS``, ``LWS_GROUP_SIZE`` and ``LWS_WORKER_INDEX``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .config import EngineConfig


class GroupError(ValueError):
    """The pod's group environment does not match the config."""


@dataclass(frozen=True)
class GroupRole:
    """Where this pod sits in its serving group."""

    nodes: int = 1
    rank: int = 0
    leader_address: str | None = None

    @property
    def is_leader(self) -> bool:
        return self.rank == 0


def group_role(config: EngineConfig, env: Mapping[str, str]) -> GroupRole:
    """Read the LeaderWorkerSet env for a multi-node config; single node needs none."""
    if config.nodes == 1:
        return GroupRole()
    missing = [k for k in ("LWS_LEADER_ADDRESS", "LWS_GROUP_SIZE") if not env.get(k)]
    if missing:
        raise GroupError(
            f"a {config.nodes}-node group needs the LeaderWorkerSet env; "
            f"missing {', '.join(missing)}"
        )
    size = int(env["LWS_GROUP_SIZE"])
    if size != config.nodes:
        raise GroupError(f"LWS_GROUP_SIZE is {size} but the config asks for {config.nodes} nodes")
    rank = int(env.get("LWS_WORKER_INDEX", "0"))
    if not 0 <= rank < size:
        raise GroupError(f"LWS_WORKER_INDEX {rank} is outside the group of {size}")
    return GroupRole(nodes=size, rank=rank, leader_address=env["LWS_LEADER_ADDRESS"])


def _flag(argv: list[str], name: str, value: object) -> None:
    if value is not None:
        argv += [name, str(value)]


def _switch(argv: list[str], name: str, value: bool | None) -> None:
    if value is not None:
        argv.append(f"--{name}" if value else f"--no-{name}")


def build_argv(config: EngineConfig, role: GroupRole | None = None) -> list[str]:
    """The full engine command for this pod (engine command + flags + passthrough)."""
    role = role or GroupRole()
    argv = [*config.engine_command, "--model", config.model]
    _flag(argv, "--revision", config.revision)
    if role.is_leader:
        argv += ["--served-model-name", *config.names]
        argv += ["--host", config.host, "--port", str(config.port)]
    _flag(argv, "--dtype", config.dtype if config.dtype != "auto" else None)
    _flag(argv, "--quantization", config.quantization)
    _flag(argv, "--max-model-len", config.max_model_len)
    argv += ["--tensor-parallel-size", str(config.tensor_parallel_size)]
    argv += ["--pipeline-parallel-size", str(config.pipeline_parallel_size)]
    _flag(argv, "--max-num-seqs", config.max_num_seqs)
    _flag(argv, "--max-num-batched-tokens", config.max_num_batched_tokens)
    _flag(argv, "--gpu-memory-utilization", config.gpu_memory_utilization)
    _switch(argv, "enable-prefix-caching", config.enable_prefix_caching)
    _switch(argv, "enable-chunked-prefill", config.enable_chunked_prefill)
    if config.lora_adapters:
        argv.append("--enable-lora")
        if role.is_leader:
            argv += ["--lora-modules", *(f"{a.name}={a.path}" for a in config.lora_adapters)]
        _flag(argv, "--max-loras", config.max_loras)
        _flag(argv, "--max-lora-rank", config.max_lora_rank)
    if role.nodes > 1:
        argv += ["--nnodes", str(role.nodes), "--node-rank", str(role.rank)]
        argv += [
            "--master-addr",
            str(role.leader_address),
            "--master-port",
            str(config.master_port),
        ]
        argv += ["--distributed-executor-backend", "mp"]
        if not role.is_leader:
            argv.append("--headless")
    if role.is_leader:
        # vLLM drains itself on SIGTERM when given a shutdown timeout (0 aborts at once).
        argv += ["--shutdown-timeout", str(config.drain_timeout_seconds)]
    argv += list(config.extra_args)
    return argv
