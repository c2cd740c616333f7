"""Performance profiles of the simulated engine: latency tables and KV capacity.

Who calls it: :mod:`.engine` (through :mod:`.perf`), the simulator CLI (``--profile``),
and the fleet simulator (:mod:`llmfleet_fleetsim`).

The ``llama2-70b`` profiles carry knots fitted by :func:`.calibrate.fit` from
splitwise-sim's measured latency table (llama2-70b on A100-80GB / H100-80GB at tensor
parallel 2, 4 and 8): prefill ms of one prompt by its tokens, a prefill multiplier by the
number of prompts batched together, decode ms per step by batch size.
Regenerate them with ``python bench/simulator/calibration.py --print-knots``; the
calibration test fails when they stop reproducing the CSV within 10%.

KV capacity is not in the CSV; it is derived from the model and the hardware the way
vLLM sizes its cache: (HBM x gpu_memory_utilization x GPUs - weights) / KV bytes per token,
rounded down to blocks. llama2-70b uses GQA: 80 layers x 8 KV heads x 128 dims x 2 (K, V)
x 2 bytes = 320 KiB per token.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .calibrate import Knots

GIB = 1 << 30
LLAMA2_70B_WEIGHT_BYTES = 138_000_000_000  # 69B parameters in bf16
LLAMA2_70B_KV_BYTES_PER_TOKEN = 80 * 8 * 128 * 2 * 2
HBM_80GB = 80 * GIB
ACTIVATION_RESERVE_PER_GPU = 2 * GIB  # activations, CUDA graphs, allocator slack


@dataclass(frozen=True)
class Profile:
    """How fast one engine replica is, and how much KV cache it has.

    Times are milliseconds of engine time (see :mod:`.perf` for how a step combines them).
    """

    name: str
    description: str
    prefill_knots: Knots
    """Milliseconds to prefill one prompt of N tokens."""
    prefill_batch_knots: Knots
    """Multiplier on the prefill time by the number of prompts prefilled together."""
    decode_knots: Knots
    """Milliseconds of one decode step by the number of sequences in the batch."""
    num_gpu_blocks: int
    block_size: int = 16
    max_model_len: int = 4096
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9

    def with_overrides(self, **changes: object) -> Profile:
        """A copy with some fields replaced (flags such as ``--max-num-seqs``)."""
        return replace(self, **changes)  # type: ignore[arg-type]


def kv_blocks(
    *,
    gpus: int,
    hbm_bytes: int,
    weight_bytes: int,
    kv_bytes_per_token: int,
    block_size: int,
    gpu_memory_utilization: float = 0.9,
) -> int:
    """KV blocks that fit beside the weights on ``gpus`` devices (vLLM's sizing rule)."""
    budget = gpus * (hbm_bytes * gpu_memory_utilization - ACTIVATION_RESERVE_PER_GPU)
    free = budget - weight_bytes
    if free <= 0:
        return 0
    return int(free // (kv_bytes_per_token * block_size))


def _llama2_70b(hardware: str, tp: int, prefill: Knots, batch: Knots, decode: Knots) -> Profile:
    blocks = kv_blocks(
        gpus=tp,
        hbm_bytes=HBM_80GB,
        weight_bytes=LLAMA2_70B_WEIGHT_BYTES,
        kv_bytes_per_token=LLAMA2_70B_KV_BYTES_PER_TOKEN,
        block_size=16,
    )
    return Profile(
        name=f"{hardware}-llama2-70b-tp{tp}",
        description=f"llama2-70b on {tp}x {hardware.upper()}-80GB (splitwise-sim measurements)",
        prefill_knots=prefill,
        prefill_batch_knots=batch,
        decode_knots=decode,
        num_gpu_blocks=blocks,
        tensor_parallel_size=tp,
    )


# fmt: off
_MEASURED: dict[tuple[str, int], tuple[Knots, Knots, Knots]] = {
    ('a100', 2): (
        ((128.0, 81.099), (256.0, 112.854), (512.0, 195.33), (1024.0, 377.275), (2048.0, 687.261),
         (4096.0, 1481.434), (8192.0, 2990.307)),
        ((1.0, 1.0), (2.0, 1.1038), (4.0, 1.23), (8.0, 1.0774), (16.0, 1.0815), (32.0, 1.0996)),
        ((1.0, 57.522), (2.0, 59.936), (4.0, 60.534), (8.0, 61.647), (16.0, 65.601),
         (32.0, 72.207), (64.0, 72.207)),
    ),
    ('a100', 4): (
        ((128.0, 66.559), (256.0, 78.535), (512.0, 127.561), (1024.0, 230.136), (2048.0, 403.3),
         (4096.0, 969.668), (8192.0, 2333.37)),
        ((1.0, 1.0), (2.0, 1.103), (4.0, 1.3184), (8.0, 1.2515), (16.0, 1.2366), (32.0, 1.0208),
         (64.0, 1.0279)),
        ((1.0, 44.445), (2.0, 45.006), (4.0, 45.17), (8.0, 45.873), (16.0, 48.664), (32.0, 52.426),
         (64.0, 72.757)),
    ),
    ('a100', 8): (
        ((128.0, 65.097), (256.0, 67.054), (512.0, 93.516), (1024.0, 154.621), (2048.0, 274.16),
         (4096.0, 651.328), (8192.0, 1544.365)),
        ((1.0, 1.0), (2.0, 1.0779), (4.0, 1.0656), (8.0, 1.1738), (16.0, 1.3362), (32.0, 1.0598),
         (64.0, 1.1061)),
        ((1.0, 45.132), (2.0, 45.132), (4.0, 45.78), (8.0, 46.503), (16.0, 50.44), (32.0, 53.161),
         (64.0, 71.261)),
    ),
    ('h100', 2): (
        ((128.0, 49.204), (256.0, 51.82), (512.0, 84.57), (1024.0, 157.803), (2048.0, 308.218),
         (4096.0, 642.012), (8192.0, 1339.156)),
        ((1.0, 1.0), (2.0, 0.9944), (4.0, 0.972), (8.0, 0.9435), (16.0, 0.8898), (32.0, 0.876)),
        ((1.0, 37.339), (2.0, 37.382), (4.0, 39.954), (8.0, 40.383), (16.0, 41.969),
         (32.0, 52.263)),
    ),
    ('h100', 4): (
        ((128.0, 48.889), (256.0, 54.311), (512.0, 61.461), (1024.0, 106.314), (2048.0, 200.929),
         (4096.0, 466.397), (8192.0, 943.277)),
        ((1.0, 1.0), (2.0, 0.9749), (4.0, 0.9813), (8.0, 0.9478), (16.0, 0.9353), (32.0, 0.9108),
         (64.0, 0.9284)),
        ((1.0, 29.375), (2.0, 29.992), (4.0, 29.992), (8.0, 31.414), (16.0, 32.836),
         (32.0, 36.918), (64.0, 51.987)),
    ),
    ('h100', 8): (
        ((128.0, 55.298), (256.0, 55.298), (512.0, 55.298), (1024.0, 78.306), (2048.0, 136.576),
         (4096.0, 378.648), (8192.0, 848.382)),
        ((1.0, 1.0), (2.0, 0.9872), (4.0, 0.971), (8.0, 0.9973), (16.0, 0.9493), (32.0, 0.8669),
         (64.0, 0.8023)),
        ((1.0, 30.495), (2.0, 30.495), (4.0, 31.796), (8.0, 32.426), (16.0, 34.167),
         (32.0, 38.859), (64.0, 49.987)),
    ),
}
# fmt: on

FAST = Profile(
    name="fast",
    description="a tiny engine for tests: ~1 ms prefill, 2-6 ms decode steps, 512 KV blocks",
    prefill_knots=((1.0, 1.0), (1024.0, 4.0), (8192.0, 24.0)),
    prefill_batch_knots=((1.0, 1.0),),
    decode_knots=((1.0, 2.0), (256.0, 6.0)),
    num_gpu_blocks=512,
    block_size=16,
    max_model_len=2048,
    max_num_seqs=16,
    max_num_batched_tokens=4096,
)

CALIBRATED: dict[str, Profile] = {
    p.name: p
    for p in (
        _llama2_70b(hw, tp, prefill, batch, decode)
        for (hw, tp), (prefill, batch, decode) in _MEASURED.items()
    )
}
"""Profiles fitted from the measured table, by name (e.g. ``h100-llama2-70b-tp4``)."""

PROFILES: dict[str, Profile] = {FAST.name: FAST, **CALIBRATED}
"""Every built-in profile by name."""

CSV_SOURCE: dict[str, tuple[str, str, int]] = {
    f"{hw}-llama2-70b-tp{tp}": ("llama2-70b", f"{hw}-80gb", tp) for hw, tp in _MEASURED
}
"""Which (model, hardware, tensor_parallel) group of the CSV each calibrated profile fits."""


def get_profile(name: str) -> Profile:
    """The built-in profile called ``name``; ``KeyError`` lists the known names."""
    try:
        return PROFILES[name]
    except KeyError:
        raise KeyError(f"unknown profile {name!r}; known: {', '.join(sorted(PROFILES))}") from None
