"""Step latency of the simulated engine: how long one batch takes on a profile.

Pure functions, no I/O, no clock: :mod:`.engine` asks how long a step lasts, and issue
6's fleet simulator may ask the same question directly.

One engine step (vLLM V1 style) runs a single forward pass over every scheduled token:
the decode token of each running sequence plus the prompt tokens (or prompt chunks)
being prefilled. The measured table gives two pure cases:

* prefill of B prompts of N tokens in all, no decode: ``prefill_ms(N, B)`` (compute-bound,
  grows with N; batching prompts changes the cost by a measured multiplier);
* decode of a batch of B sequences: ``decode_ms(B)`` (memory-bound, nearly flat in B).

A mixed step costs the larger of the two views of the same pass: as a prefill of all its
tokens (decode tokens count as one token each), or as a decode over all its sequences.
Both pure cases come out exactly as measured.
"""

from __future__ import annotations

from .calibrate import interpolate
from .profiles import Profile


def prefill_ms(profile: Profile, tokens: int, seqs: int = 1) -> float:
    """Milliseconds to prefill ``tokens`` prompt tokens of ``seqs`` prompts in one step."""
    batch = interpolate(profile.prefill_batch_knots, float(max(seqs, 1)))
    return interpolate(profile.prefill_knots, float(tokens)) * batch


def decode_ms(profile: Profile, batch_size: int) -> float:
    """Milliseconds of one decode step over ``batch_size`` sequences."""
    return interpolate(profile.decode_knots, float(batch_size))


def step_seconds(
    profile: Profile, prefill_tokens: int, prefill_seqs: int, decode_seqs: int
) -> float:
    """Seconds of engine time for one step.

    ``prefill_tokens`` are the prompt tokens computed this step across ``prefill_seqs``
    sequences; ``decode_seqs`` sequences each add one decode token.
    """
    if prefill_tokens <= 0 and decode_seqs <= 0:
        return 0.0
    if prefill_tokens <= 0:
        return decode_ms(profile, decode_seqs) / 1000.0
    as_prefill = prefill_ms(profile, prefill_tokens + decode_seqs, prefill_seqs)
    if decode_seqs <= 0:
        return as_prefill / 1000.0
    as_decode = decode_ms(profile, decode_seqs + prefill_seqs)
    return max(as_prefill, as_decode) / 1000.0
