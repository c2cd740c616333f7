"""The launcher's pure parts: config validation, argv per group role, GPU check.

Cases (tables): single node with every optional flag; TP; PP; a two-node group's leader
and worker (vLLM's --nnodes/--node-rank/--master-addr/--headless); LoRA; passthrough
args; refused overrides of owned flags (all spellings); LeaderWorkerSet env errors;
visible-GPU counting from the env; the GPU mismatch message; config from file and env.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from llmfleet_runtime.launcher import EngineConfig, GroupError, GroupRole, build_argv, group_role
from llmfleet_runtime.launcher.config import load_config
from llmfleet_runtime.launcher.gpus import gpu_problem, visible_gpus

BASE = ["vllm", "serve", "--model", "m"]
SERVE = ["--served-model-name", "m", "--host", "0.0.0.0", "--port", "8000"]


def flags(**parallel: int) -> list[str]:
    return [
        "--tensor-parallel-size",
        str(parallel.get("tp", 1)),
        "--pipeline-parallel-size",
        str(parallel.get("pp", 1)),
    ]


DRAIN = ["--shutdown-timeout", "30"]

CASES = [
    ("defaults", {"model": "m"}, None, BASE + SERVE + flags() + DRAIN),
    (
        "every optional flag",
        {
            "model": "m",
            "revision": "abc",
            "servedModelNames": ["a", "b"],
            "dtype": "bfloat16",
            "quantization": "fp8",
            "maxModelLen": 4096,
            "maxNumSeqs": 64,
            "maxNumBatchedTokens": 8192,
            "gpuMemoryUtilization": 0.85,
            "enablePrefixCaching": True,
            "enableChunkedPrefill": False,
            "port": 9000,
            "drainTimeoutSeconds": 120,
        },
        None,
        [
            *BASE,
            *("--revision", "abc", "--served-model-name", "a", "b"),
            *("--host", "0.0.0.0", "--port", "9000", "--dtype", "bfloat16"),
            *("--quantization", "fp8", "--max-model-len", "4096", *flags()),
            *("--max-num-seqs", "64", "--max-num-batched-tokens", "8192"),
            *("--gpu-memory-utilization", "0.85", "--enable-prefix-caching"),
            *("--no-enable-chunked-prefill", "--shutdown-timeout", "120"),
        ],
    ),
    (
        "tensor parallel",
        {"model": "m", "tensorParallelSize": 8},
        None,
        BASE + SERVE + flags(tp=8) + DRAIN,
    ),
    (
        "tensor x pipeline on one node",
        {"model": "m", "tensorParallelSize": 4, "pipelineParallelSize": 2},
        None,
        BASE + SERVE + flags(tp=4, pp=2) + DRAIN,
    ),
    (
        "multi-node leader",
        {"model": "m", "tensorParallelSize": 8, "pipelineParallelSize": 2, "nodes": 2},
        GroupRole(nodes=2, rank=0, leader_address="lead.svc"),
        BASE
        + SERVE
        + flags(tp=8, pp=2)
        + ["--nnodes", "2", "--node-rank", "0", "--master-addr", "lead.svc"]
        + ["--master-port", "29500", "--distributed-executor-backend", "mp", *DRAIN],
    ),
    (
        "multi-node worker",
        {"model": "m", "tensorParallelSize": 8, "pipelineParallelSize": 2, "nodes": 2},
        GroupRole(nodes=2, rank=1, leader_address="lead.svc"),
        BASE
        + flags(tp=8, pp=2)
        + ["--nnodes", "2", "--node-rank", "1", "--master-addr", "lead.svc"]
        + ["--master-port", "29500", "--distributed-executor-backend", "mp", "--headless"],
    ),
    (
        "lora adapters",
        {"model": "m", "loraAdapters": [{"name": "sql", "path": "/a/sql"}], "maxLoras": 2},
        None,
        BASE
        + SERVE
        + flags()
        + ["--enable-lora", "--lora-modules", "sql=/a/sql"]
        + ["--max-loras", "2", *DRAIN],
    ),
    (
        "passthrough args go last",
        {"model": "m", "extraArgs": ["--kv-cache-dtype", "fp8", "--swap-space=4"]},
        None,
        BASE + SERVE + flags() + DRAIN + ["--kv-cache-dtype", "fp8", "--swap-space=4"],
    ),
    (
        "engine command seam",
        {"model": "m", "engineCommand": ["python", "-m", "sim"]},
        None,
        ["python", "-m", "sim", "--model", "m", *SERVE, *flags(), *DRAIN],
    ),
]


@pytest.mark.parametrize(("case", "config", "role", "expected"), CASES, ids=[c[0] for c in CASES])
def test_argv(
    case: str, config: dict[str, object], role: GroupRole | None, expected: list[str]
) -> None:
    assert build_argv(EngineConfig.model_validate(config), role) == expected


@pytest.mark.parametrize(
    "extra",
    [
        ["--tensor-parallel-size", "2"],
        ["--tensor_parallel_size=2"],
        ["-tp", "2"],
        ["--port=1"],
        ["--model", "other"],
        ["--no-enable-prefix-caching"],
        ["--headless"],
        ["--shutdown-timeout", "0"],
    ],
)
def test_owned_flags_are_refused(extra: list[str]) -> None:
    with pytest.raises(ValidationError, match="may not set"):
        EngineConfig(model="m", extra_args=tuple(extra))


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"model": "m", "tensorParallelSize": 3, "nodes": 2}, "divide evenly"),
        ({"model": "m", "tensorParallelSize": 8, "gpusPerNode": 4}, "gpus_per_node"),
        ({"model": "m", "gpuMemoryUtilization": 1.5}, "less than or equal"),
        ({"model": "m", "unknownField": 1}, "Extra inputs"),
    ],
)
def test_bad_configs(config: dict[str, object], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        EngineConfig.model_validate(config)


TWO_NODES = EngineConfig(model="m", tensor_parallel_size=8, pipeline_parallel_size=2, nodes=2)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"LWS_LEADER_ADDRESS": "l", "LWS_GROUP_SIZE": "2", "LWS_WORKER_INDEX": "0"},
            GroupRole(2, 0, "l"),
        ),
        (
            {"LWS_LEADER_ADDRESS": "l", "LWS_GROUP_SIZE": "2", "LWS_WORKER_INDEX": "1"},
            GroupRole(2, 1, "l"),
        ),
        ({"LWS_LEADER_ADDRESS": "l", "LWS_GROUP_SIZE": "2"}, GroupRole(2, 0, "l")),
    ],
)
def test_group_role_from_leaderworkerset_env(env: dict[str, str], expected: GroupRole) -> None:
    assert group_role(TWO_NODES, env) == expected


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({}, "missing LWS_LEADER_ADDRESS, LWS_GROUP_SIZE"),
        ({"LWS_LEADER_ADDRESS": "l", "LWS_GROUP_SIZE": "3"}, "asks for 2 nodes"),
        ({"LWS_LEADER_ADDRESS": "l", "LWS_GROUP_SIZE": "2", "LWS_WORKER_INDEX": "2"}, "outside"),
    ],
)
def test_group_env_errors(env: dict[str, str], match: str) -> None:
    with pytest.raises(GroupError, match=match):
        group_role(TWO_NODES, env)


def test_single_node_ignores_group_env() -> None:
    assert group_role(EngineConfig(model="m"), {"LWS_GROUP_SIZE": "9"}) == GroupRole()


@pytest.mark.parametrize(
    ("env", "probe", "expected"),
    [
        ({"CUDA_VISIBLE_DEVICES": "0,1,2,3"}, None, 4),
        ({"CUDA_VISIBLE_DEVICES": ""}, 8, 0),
        ({"NVIDIA_VISIBLE_DEVICES": "GPU-a,GPU-b"}, None, 2),
        ({"NVIDIA_VISIBLE_DEVICES": "none"}, 8, 0),
        ({"NVIDIA_VISIBLE_DEVICES": "all"}, 8, 8),
        ({}, 4, 4),
        ({}, None, 0),
    ],
)
def test_visible_gpus(env: dict[str, str], probe: int | None, expected: int) -> None:
    assert visible_gpus(env, probe=lambda: probe) == expected


def test_gpu_problem_explains_the_mismatch() -> None:
    config = EngineConfig(model="m", tensor_parallel_size=4, pipeline_parallel_size=2)
    assert gpu_problem(config, 8) is None
    problem = gpu_problem(config, 4)
    assert problem is not None
    assert "sees 4 GPU(s)" in problem
    assert "needs 8 per node" in problem
    assert gpu_problem(TWO_NODES, 8) is None
    assert gpu_problem(config.model_copy(update={"gpu_check": False}), 0) is None


def test_load_config_from_file_and_env(tmp_path: Path) -> None:
    path = tmp_path / "engine.yaml"
    path.write_text("model: m\ntensorParallelSize: 2\n")
    assert load_config(path, {}).tensor_parallel_size == 2
    env = {"LLMFLEET_ENGINE_CONFIG": json.dumps({"model": "x", "max_num_seqs": 3})}
    assert load_config(None, env).max_num_seqs == 3
    with pytest.raises(ValueError, match="no engine config"):
        load_config(None, {})
