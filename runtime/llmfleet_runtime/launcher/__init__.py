"""The engine launcher: the container command of every vLLM pod the operator creates.

:mod:`.config` (the :class:`EngineConfig` the operator renders), :mod:`.argv` (pure:
config + group role -> ``vllm serve`` argv), :mod:`.gpus` (visible GPU check),
:mod:`.supervisor` (child process, SIGTERM drain), :mod:`.cli` (``llmfleet launch``).
"""

from .argv import GroupError, GroupRole, build_argv, group_role
from .config import CONFIG_ENV, EngineConfig, LoraAdapter, load_config

__all__ = [
    "CONFIG_ENV",
    "EngineConfig",
    "GroupError",
    "GroupRole",
    "LoraAdapter",
    "build_argv",
    "group_role",
    "load_config",
]
