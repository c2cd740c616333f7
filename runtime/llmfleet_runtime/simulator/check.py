"""Replay the measured table through the engine model: the calibration error of a profile.

Who calls it: the calibration test (``tests/runtime/test_calibration.py``) and
``bench/simulator/calibration.py``. Pure: no clock, no I/O.

For each measured cell (B prompts of P tokens), B requests arrive together at t=0 on the
profile (with enough KV blocks and token budget for the batch to be prefilled in one
pass, as it was measured); the time until the last first token is compared with
``prompt_time`` and the median decode step of the full batch with ``token_time``.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import median

from .calibrate import Measurement
from .engine import Engine
from .profiles import Profile
from .requests import Request

DECODE_STEPS = 12


@dataclass(frozen=True)
class CellError:
    """Simulated vs measured latencies of one cell, and the relative errors."""

    cell: Measurement
    prefill_ms: float
    decode_ms: float

    @property
    def prefill_error(self) -> float:
        return abs(self.prefill_ms - self.cell.prompt_ms) / self.cell.prompt_ms

    @property
    def decode_error(self) -> float:
        return abs(self.decode_ms - self.cell.token_ms) / self.cell.token_ms


def simulate_cell(profile: Profile, prompt: int, batch: int) -> tuple[float, float]:
    """(ms until every request has its first token, median ms of a full-batch decode step)."""
    blocks = batch * -(-(prompt + DECODE_STEPS + 1) // profile.block_size)
    profile = profile.with_overrides(
        max_model_len=prompt + DECODE_STEPS + 1,
        num_gpu_blocks=max(profile.num_gpu_blocks, blocks),
        max_num_seqs=max(profile.max_num_seqs, batch),
        max_num_batched_tokens=max(profile.max_num_batched_tokens, batch * (prompt + 1)),
    )
    engine = Engine(profile, enable_prefix_caching=False)
    for i in range(batch):
        engine.add(Request(f"r{i}", prompt, DECODE_STEPS), 0.0)
    engine.advance(0.0)
    first: dict[str, float] = {}
    gaps: list[float] = []
    while (t := engine.next_event_time()) is not None:
        for step in engine.advance(t):
            if len(first) == batch and len(step.tokens) == batch:
                gaps.append(step.end - step.start)
            for token in step.tokens:
                first.setdefault(token.request_id, token.time)
    return max(first.values()) * 1000, median(gaps) * 1000


def cell_errors(profile: Profile, cells: list[Measurement]) -> list[CellError]:
    """The simulated latencies of every cell on ``profile``."""
    out = []
    for cell in cells:
        prefill, decode = simulate_cell(profile, cell.prompt_size, cell.batch_size)
        out.append(CellError(cell, prefill, decode))
    return out
