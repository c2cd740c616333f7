"""What the operator owns of an engine: its flags and environment, and the simulator's profiles.

The operator derives these ``vllm serve`` flags from the spec, and the launcher sets them: a
user's ``engine.extraArgs`` may not set one, since a passthrough that silently fights the spec
the operator scheduled GPUs and Services for is worse than a clear refusal. One set of
patterns decides it, :data:`OWNED_FLAG_PATTERNS`: the API's CEL rules on each item of
``extraArgs`` (run by the API server at ``kubectl apply`` and by ``llmfleet validate``) embed
them, and the launcher's check (:func:`owned_flags_in`) runs them, so both refuse exactly the
same arguments.
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
            ("[-_]" if char == "-" else char) + (f"({branch(child)})?" if child else "")
            for char, child in sorted(node.items())
        ]
        return parts[0] if len(parts) == 1 else "(" + "|".join(parts) + ")"

    return branch(trie)


_VALUE = "([=\\t\\n\\f\\r ].*)?"
_ONE_LETTER = sorted(s.removeprefix("-") for s in SHORT_FLAGS if len(s) == 2)
_LONGER = sorted(s.removeprefix("-") for s in SHORT_FLAGS if len(s) > 2)
_SHORT = f"-({'|'.join(_LONGER)}){_VALUE}|-({'|'.join(_ONE_LETTER)}).*"
_MOST_CHARACTERS = 900
"""Per pattern: the API server prices a CEL regex by its length (times the longest item and
the most items), and refuses a CRD whose rule costs more than its budget."""


def _patterns() -> tuple[str, ...]:
    groups: list[list[str]] = [[]]
    for flag in sorted(OWNED_FLAGS):
        if groups[-1] and len(_prefixes([*groups[-1], flag])) > _MOST_CHARACTERS:
            groups.append([])
        groups[-1].append(flag)
    longs = [f"--{_prefixes(group)}{_VALUE}" for group in groups]
    return (f"(?s)^({longs[0]}|{_SHORT})$", *(f"(?s)^{long}$" for long in longs[1:]))


OWNED_FLAG_PATTERNS = _patterns()
"""Regexes of one argv token that sets an owned flag, or may (any one matching): the flag
alone, ``FLAG=VALUE`` or ``FLAG VALUE`` (one YAML list item with a space); a long flag
abbreviated to any prefix (vLLM's parser takes an unambiguous abbreviation, and fails on an
ambiguous one anyway), with ``_`` for ``-``; a one-letter short flag with its value glued on
(``-qawq``). The same in RE2 (the API server's CEL, one rule each) and Python: whitespace
spelled out, ``(?s)`` for newlines in values."""

_OWNED = tuple(re.compile(pattern) for pattern in OWNED_FLAG_PATTERNS)


def owned_flags_in(args: Iterable[str]) -> list[str]:
    """The arguments, of ``args``, that set a flag the operator owns."""
    return [arg for arg in args if any(owned.fullmatch(arg) for owned in _OWNED)]


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
