"""The replayed requests of the routing bench: arrivals, prompt text and output lengths.

Who calls it: :mod:`run` (bench/routing/run.py), once per trace before any process starts,
so building prompts costs nothing during the replay.

Both traces carry token counts, not text, so the text is made of the engine simulator's
stand-in tokens (:data:`llmfleet_runtime.simulator.tokens.WORDS`), which its tokenizer
counts one each: a prompt of ``n`` such tokens is ``n`` prompt tokens to the simulator, and
equal text gives equal KV block hashes, so its prefix cache sees what the trace records.

* Mooncake (``mooncake_synthetic.jsonl``): each ``hash_id`` names one 512-token block of
  text drawn from a random stream seeded by the id, so equal ids are equal text. A
  request's prompt is its blocks in order; the last block is cut so the prompt has the
  trace's ``input_length`` tokens. ``timestamp`` is in milliseconds.
* Azure conversation (``azure_llm_2023_conv.csv``): ``ContextTokens`` tokens of text seeded
  by the row, so no two prompts share a prefix (the trace says nothing of reuse).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from llmfleet_fleetsim.trace import load_trace
from llmfleet_runtime.simulator.tokens import WORDS, count_tokens

BLOCK_TOKENS = 512
"""Tokens per Mooncake ``hash_id``."""

_PIECES = tuple(word for word in WORDS if not word.isspace())
"""Stand-in tokens that stay one token wherever they stand: a newline would merge with the
whitespace after it into one token."""


@dataclass(frozen=True)
class Replayed:
    """One request to send."""

    arrival_s: float
    """Seconds after the replay starts (already divided by the speed factor)."""
    prompt: str
    prompt_tokens: int
    max_tokens: int
    blocks: tuple[int, ...] = ()
    """The trace's ``hash_ids`` (Mooncake), for the ideal cache's share."""


@cache
def _block(hash_id: int) -> tuple[str, ...]:
    return tuple(random.Random(f"mooncake-block:{hash_id}").choices(_PIECES, k=BLOCK_TOKENS))


def block_text(hash_id: int, tokens: int = BLOCK_TOKENS) -> str:
    """The first ``tokens`` tokens of block ``hash_id``'s text."""
    return "".join(_block(hash_id)[:tokens])


def text_of(seed: str, tokens: int) -> str:
    """``tokens`` stand-in tokens drawn from a stream seeded by ``seed``."""
    return "".join(random.Random(seed).choices(_PIECES, k=tokens))


def mooncake(path: Path, start_s: float, window_s: float, speed: float = 1.0) -> list[Replayed]:
    """The requests of trace seconds ``[start_s, start_s + window_s)``, arriving ``speed``
    times faster, the first window second at 0."""
    out = []
    with path.open() as lines:
        for line in lines:
            row = json.loads(line)
            arrival = row["timestamp"] / 1000.0 - start_s
            if arrival < 0:
                continue
            if arrival >= window_s:
                break
            ids: list[int] = row["hash_ids"]
            tokens = int(row["input_length"])
            last = tokens - BLOCK_TOKENS * (len(ids) - 1)
            if not 0 < last <= BLOCK_TOKENS:
                raise ValueError(f"{path}: {tokens} tokens do not fit {len(ids)} blocks")
            prompt = "".join(block_text(i) for i in ids[:-1]) + block_text(ids[-1], last)
            output = int(row["output_length"])
            out.append(Replayed(arrival / speed, prompt, tokens, output, tuple(ids)))
    return out


def azure(path: Path, start_s: float, window_s: float, speed: float = 1.0) -> list[Replayed]:
    """The requests of trace seconds ``[start_s, start_s + window_s)``, arriving ``speed``
    times faster, the first window second at 0."""
    out = []
    for index, request in enumerate(load_trace(path).requests):
        arrival = request.arrival_s - start_s
        if arrival < 0:
            continue
        if arrival >= window_s:
            break
        prompt = text_of(f"azure-conv:{index}", request.prompt_tokens)
        out.append(Replayed(arrival / speed, prompt, request.prompt_tokens, request.output_tokens))
    return out


def ideal_cached_share(requests: list[Replayed]) -> float:
    """The share of prompt tokens an unbounded prefix cache shared by every replica would
    hold, starting cold: each request's leading blocks seen in an earlier request."""
    seen: set[int] = set()
    cached = total = 0
    for request in requests:
        lead = 0
        for block in request.blocks:
            if block not in seen:
                break
            lead += 1
        cached += min(lead * BLOCK_TOKENS, request.prompt_tokens)
        total += request.prompt_tokens
        seen.update(request.blocks)
    return cached / total if total else 0.0


def check_counts(requests: list[Replayed], sample: int = 20) -> None:
    """Fail unless the simulator's tokenizer counts each sampled prompt as built."""
    for request in requests[:: max(1, len(requests) // sample)]:
        counted = count_tokens(request.prompt)
        if counted != request.prompt_tokens:
            raise AssertionError(f"prompt of {request.prompt_tokens} tokens counts {counted}")
