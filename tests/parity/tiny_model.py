"""Build the tiny Llama model the parity suite serves with real vLLM (no hub, no network).

    <vllm-venv>/bin/python tests/parity/tiny_model.py   # prints the model directory

Output: ``${LLMFLEET_CACHE_DIR:-~/.cache/llmfleet}/models/tiny-llama-v1`` (built once; a
``.complete`` marker makes later runs return at once). Runs in the vLLM venv (it needs
torch, transformers and tokenizers; the project venv has none of them).

What it makes:

* a byte-level BPE tokenizer trained with ``tokenizers`` on this interpreter's standard
  library sources (local text), with ``<s>``/``</s>`` and a small chat template;
* a random-weight ``LlamaConfig`` (hidden 64, 2 layers, 2 heads of 32, 1 KV head; head
  size 32 is one vLLM's CPU attention accepts), seeded so every build is identical.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

NAME = "tiny-llama-v1"
VOCAB_SIZE = 2048
MAX_POSITIONS = 2048
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}</s>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def cache_dir() -> Path:
    """The cache root shared with ``install_vllm.sh``."""
    root = os.environ.get("LLMFLEET_CACHE_DIR") or str(Path.home() / ".cache" / "llmfleet")
    return Path(root)


def _corpus(limit_bytes: int = 4_000_000) -> Iterator[str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    used = 0
    for path in sorted(stdlib.glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="ignore")
        used += len(text)
        yield text
        if used >= limit_bytes:
            return


def build(target: Path) -> None:
    """Write tokenizer and random weights to ``target`` (a fresh directory)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="</s>",
        model_max_length=MAX_POSITIONS,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(target)

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        max_position_embeddings=MAX_POSITIONS,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=True,
        torch_dtype="float32",
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(target, safe_serialization=True)


def ensure_model() -> Path:
    """Build the model unless a complete copy is cached; return its directory."""
    target = cache_dir() / "models" / NAME
    if (target / ".complete").exists():
        return target
    partial = target.with_name(NAME + f".partial-{os.getpid()}")
    partial.mkdir(parents=True, exist_ok=True)
    build(partial)
    (partial / ".complete").touch()
    if target.exists():  # a concurrent build finished first; keep its copy
        return target
    partial.rename(target)
    return target


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    sys.stdout.write(f"{ensure_model()}\n")
