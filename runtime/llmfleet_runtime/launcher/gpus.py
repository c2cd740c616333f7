"""Does this pod see the GPUs its serving group needs? (checked before the engine starts)

Who calls it: :mod:`.cli`. :func:`visible_gpus` reads the env the device plugin and the
container runtime set, asking ``nvidia-smi`` (through an injected probe) only when the env
says "all"; :func:`gpu_problem` is the pure check.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Mapping

from .config import EngineConfig

Probe = Callable[[], int | None]


def nvidia_smi_count() -> int | None:
    """GPUs listed by ``nvidia-smi -L``; None when the tool is absent or fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def _count_list(value: str) -> int:
    return len([v for v in value.split(",") if v.strip()])


def visible_gpus(env: Mapping[str, str], probe: Probe = nvidia_smi_count) -> int:
    """How many GPUs this process may use."""
    cuda = env.get("CUDA_VISIBLE_DEVICES")
    if cuda is not None:
        return 0 if cuda.strip() in ("", "-1", "none", "NoDevFiles") else _count_list(cuda)
    nvidia = env.get("NVIDIA_VISIBLE_DEVICES")
    if nvidia is not None and nvidia.strip() not in ("all", ""):
        return 0 if nvidia.strip() in ("none", "void") else _count_list(nvidia)
    return probe() or 0


def gpu_problem(config: EngineConfig, visible: int) -> str | None:
    """Why the engine must not start on ``visible`` GPUs, or None when it may."""
    if not config.gpu_check:
        return None
    needed = config.gpus_needed_per_node
    if visible == needed:
        return None
    shape = (
        f"tensor_parallel_size {config.tensor_parallel_size} x pipeline_parallel_size "
        f"{config.pipeline_parallel_size} over {config.nodes} node(s)"
    )
    return (
        f"this pod sees {visible} GPU(s) but its serving group needs {needed} per node "
        f"({shape}); check the pod's nvidia.com/gpu request and the node's devices"
    )
