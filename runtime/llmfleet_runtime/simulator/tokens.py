"""Stand-in tokenizer and text source of the simulator (no model, no vocabulary file).

Who calls it: :mod:`.server` (the :class:`~llmfleet_contract.openai.Tokenizer` it hands to
the contract's request parser, block hashes, generated text) and any driver that has text
rather than token counts.

Token counts only need to be plausible (about one token per short word or punctuation
mark, like a BPE tokenizer on English or code); what matters is that the same text always
gives the same tokens, so equal prompt prefixes give equal KV block hashes and the prefix
cache behaves as in vLLM.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence

from llmfleet_contract.openai import Conversation, Prompt

_TOKEN = re.compile(r" ?[A-Za-z]{1,6}| ?\d{1,3}| ?[^\sA-Za-z\d]|\s+")

WORDS = (
    " the", " of", " and", " to", " a", " in", " is", " that", " for", " it", " as", " with",
    " on", " be", " by", " this", " are", " from", " at", " or", " an", " we", " can", " not",
    " model", " token", " cache", " batch", " queue", " serve", " node", " fleet", " engine",
    ",", ".", "\n", " (", ")", ":", " =", " def", " return", " self", " if", " data",
)  # fmt: skip


def tokenize(text: str) -> list[str]:
    """Split ``text`` into pseudo-tokens (always at least one for non-empty text)."""
    return _TOKEN.findall(text)


def prompt_pieces(prompt: Prompt) -> list[str]:
    """The pseudo-tokens of a request's prompt: its text, its token ids, or its messages
    wrapped in a stand-in chat template (the contract's ``Tokenizer``)."""
    if isinstance(prompt, str):
        return tokenize(prompt)
    if isinstance(prompt, Conversation):
        pieces = ["<s>"]
        for message in prompt.messages:
            pieces += [f"<|{message.role}|>", "\n", *tokenize(message.content), "</s>", "\n"]
        return [*pieces, "<|assistant|>", "\n"]
    return [str(t) for t in prompt]


def count_tokens(text: str) -> int:
    """How many pseudo-tokens ``text`` has."""
    return len(_TOKEN.findall(text))


def block_hashes(pieces: Sequence[str], block_size: int, salt: str = "") -> tuple[int, ...]:
    """Chained hashes of each full block of ``block_size`` tokens (vLLM's prefix-cache keys).

    A block's hash covers every token before it, so two prompts share a hash only while
    their whole prefix is equal. ``salt`` separates models.
    """
    hashes: list[int] = []
    parent = hashlib.blake2b(salt.encode(), digest_size=8).digest()
    for start in range(0, len(pieces) - block_size + 1, block_size):
        h = hashlib.blake2b(parent, digest_size=8)
        h.update("\x00".join(pieces[start : start + block_size]).encode())
        parent = h.digest()
        hashes.append(int.from_bytes(parent, "big"))
    return tuple(hashes)


def synthetic_block_hashes(
    shared_key: str, shared_tokens: int, unique_key: str, total_tokens: int, block_size: int
) -> tuple[int, ...]:
    """Block hashes for a prompt known only by its sizes (trace replay).

    Prompts with the same ``shared_key`` share their first ``shared_tokens`` tokens; the
    blocks after that are named by ``unique_key`` (e.g. the request id).
    """
    shared = shared_tokens // block_size
    out: list[int] = []
    for index in range(total_tokens // block_size):
        key = f"{shared_key if index < shared else unique_key}:{index}"
        out.append(int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big"))
    return tuple(out)


class TextSource:
    """Deterministic generated text: token ``i`` of a request depends only on seed and id."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def for_request(self, request_id: str) -> random.Random:
        """A random stream for one request's output text."""
        return random.Random(f"{self.seed}:{request_id}")

    @staticmethod
    def next_token(rng: random.Random) -> str:
        return WORDS[int(rng.random() * len(WORDS))]
