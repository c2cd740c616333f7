"""One owned-flag matcher: ``llmfleet validate`` (the API's CEL rule) and the launcher refuse
exactly the same ``engine.extraArgs``.

Cases: every spelling of an owned flag (long, ``_`` for ``-``, ``=VALUE``, a value after a
space or a newline in one item, an abbreviation, vLLM's short flags alone, with ``=`` or with
the value glued to a one-letter one, aliases and negations) is refused by both; longer flags
that merely start like an owned one, values that look like flags, and flags the operator does
not own pass both; RE2 (the API server's regex engine) and Python's ``re`` agree on the
pattern for random tokens. The parity tier checks the list against vLLM's own parser.
"""

from __future__ import annotations

from typing import Any

import pytest
import re2
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from llmfleet_contract.engine import OWNED_FLAG_PATTERNS, OWNED_FLAGS, SHORT_FLAGS, owned_flags_in
from llmfleet_contract.validation import validate
from llmfleet_runtime.launcher import EngineConfig

REFUSED = [
    "-tp=2",
    "-dp=2",
    "-tp",
    "-pp=2",
    "--tensor-parallel-size=2",
    "--tensor-parallel-size 2",
    "--tensor_parallel_size=2",
    "--tensor-parallel-size",
    "--max_num_seqs\t4",
    "--no-enable-prefix-caching",
    "--enable-prefix-caching=false",
    "--model=other",
    "--port 1",
    "--headless",
    "-q awq",
    "-qawq",
    "-n2",
    "-r1",
    "--tensor-parallel=2",
    "--max-model 4096",
    "--no-enable-lora",
    "--device-memory-utilization=0.5",
    "--model=x\nbar",
]
ACCEPTED = [
    "--enforce-eager",
    "--kv-cache-dtype=fp8",
    "--tensor-parallel-size-extra=1",
    "--tensor-parallel-size\x0b2",
    "--models",
    "--portal",
    "-tpx",
    "-dpn",
    "-t",
    "2",
    "tp=2",
    "--swap-space 4",
    "--enable-lora-bias",
    "--max-model-len-extra",
]


def manifest(extra_args: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "llmfleet.io/v1alpha1",
        "kind": "LLMDeployment",
        "metadata": {"name": "m", "namespace": "default"},
        "spec": {"model": {"source": "hf://org/m"}, "engine": {"extraArgs": extra_args}},
    }


def validate_refuses(arg: str) -> bool:
    errors = validate(manifest([arg]))
    return any("extraArgs may not set flags" in str(error) for error in errors)


def launcher_refuses(arg: str) -> bool:
    try:
        EngineConfig(model="m", extra_args=(arg,))
    except ValidationError as error:
        return "may not set" in str(error)
    return False


@pytest.mark.parametrize("arg", REFUSED)
def test_both_refuse(arg: str) -> None:
    assert owned_flags_in([arg]) == [arg]
    assert validate_refuses(arg)
    assert launcher_refuses(arg)


@pytest.mark.parametrize("arg", ACCEPTED)
def test_both_accept(arg: str) -> None:
    assert owned_flags_in([arg]) == []
    assert not validate_refuses(arg)
    assert not launcher_refuses(arg)


def test_every_owned_flag_and_short_form_is_refused_by_both() -> None:
    spellings = [f"--{flag}=1" for flag in sorted(OWNED_FLAGS)] + [f"{s} 1" for s in SHORT_FLAGS]
    assert [arg for arg in spellings if not validate_refuses(arg)] == []
    assert [arg for arg in spellings if not launcher_refuses(arg)] == []


tokens = st.lists(
    st.sampled_from(["--", "-", "tp", "q", "model", "max", "-num", "_seqs", "=", " ", "\n", "\x0b"])
    | st.text(max_size=3),
    max_size=6,
).map("".join)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(token=tokens)
def test_re2_and_python_agree(token: str) -> None:
    by_re2 = any(re2.search(pattern, token) for pattern in OWNED_FLAG_PATTERNS)
    assert by_re2 == bool(owned_flags_in([token]))
