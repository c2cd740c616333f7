"""What the operator owns of an engine: its flags and environment, and the simulator's profiles.

The operator derives these ``vllm serve`` flags from the spec, and the launcher sets them: a
user's ``engine.extraArgs`` may not set one, since a passthrough that silently fights the spec
the operator scheduled GPUs and Services for is worse than a clear refusal. One pattern
decides it, :data:`OWNED_FLAG_PATTERN`: the API's CEL rule on ``extraArgs`` (run by the API
server at ``kubectl apply`` and by ``llmfleet validate``) embeds it, and the launcher's check
(:func:`owned_flags_in`) runs it, so both refuse exactly the same arguments.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

OWNED_FLAGS = frozenset(
    {
        "model", "revision", "served-model-name", "dtype", "quantization", "max-model-len",
        "tensor-parallel-size", "pipeline-parallel-size", "data-parallel-size", "max-num-seqs",
        "max-num-batched-tokens", "gpu-memory-utilization", "device-memory-utilization",
        "enable-prefix-caching", "no-enable-prefix-caching", "enable-chunked-prefill",
        "no-enable-chunked-prefill", "enable-lora", "no-enable-lora", "lora-modules",
        "max-loras", "max-lora-rank", "host", "port", "nnodes", "node-rank", "master-addr",
        "master-port", "headless", "distributed-executor-backend", "shutdown-timeout",
    }
)  # fmt: skip
"""Long ``vllm serve`` flags the launcher sets from the spec (without the leading ``--``),
with vLLM's aliases (``device-memory-utilization``) and negations."""

SHORT_FLAGS = {
    "-tp": "tensor-parallel-size",
    "-pp": "pipeline-parallel-size",
    "-dp": "data-parallel-size",
    "-q": "quantization",
    "-n": "nnodes",
    "-r": "node-rank",
}
"""vLLM's short spellings of owned flags."""


def _prefixes(words: Iterable[str]) -> str:
    """A regex of every non-empty prefix of ``words`` (a trie; ``-`` also matches ``_``)."""
    trie: dict[str, Any] = {}
    for word in words:
        node = trie
        for char in word:
            node = node.setdefault(char, {})

    def branch(node: dict[str, Any]) -> str:
        parts = [
            ("[-_]" if char == "-" else char) + (f"(?:{branch(child)})?" if child else "")
            for char, child in sorted(node.items())
        ]
        return parts[0] if len(parts) == 1 else "(?:" + "|".join(parts) + ")"

    return branch(trie)


_ONE_LETTER = sorted(s.removeprefix("-") for s in SHORT_FLAGS if len(s) == 2)
_LONGER = sorted(s.removeprefix("-") for s in SHORT_FLAGS if len(s) > 2)
_VALUE = "([=\\t\\n\\f\\r ].*)?"

OWNED_FLAG_PATTERN = (
    f"(?s)^(--{_prefixes(OWNED_FLAGS)}{_VALUE}"
    f"|-({'|'.join(_LONGER)}){_VALUE}"
    f"|-({'|'.join(_ONE_LETTER)}).*)$"
)
"""One argv token that sets an owned flag, or may: the flag alone, ``FLAG=VALUE`` or
``FLAG VALUE`` (one YAML list item with a space); a long flag abbreviated to any prefix
(vLLM's parser takes an unambiguous abbreviation, and fails on an ambiguous one anyway), with
``_`` for ``-``; a one-letter short flag with its value glued on (``-qawq``). The same in RE2
(the API server's CEL) and Python: whitespace spelled out, ``(?s)`` for newlines in values."""

_OWNED = re.compile(OWNED_FLAG_PATTERN)


def owned_flags_in(args: Iterable[str]) -> list[str]:
    """The arguments, of ``args``, that set a flag the operator owns."""
    return [arg for arg in args if _OWNED.fullmatch(arg)]


OWNED_ENV_NAMES = ("CUDA_VISIBLE_DEVICES", "VLLM_HOST_IP", "VLLM_PORT", "HF_TOKEN")
"""Environment the operator and LeaderWorkerSet set on engine pods."""
OWNED_ENV_PREFIXES = ("LLMFLEET_", "LWS_")
"""Prefixes of the environment the operator and LeaderWorkerSet own."""

SIMULATOR_PROFILES = (
    "a100-llama2-70b-tp2",
    "a100-llama2-70b-tp4",
    "a100-llama2-70b-tp8",
    "fast",
    "h100-llama2-70b-tp2",
    "h100-llama2-70b-tp4",
    "h100-llama2-70b-tp8",
)
"""The engine simulator's built-in performance profiles, by name (``spec.engine.simulator``);
the runtime's table of them is tested to hold exactly these."""
