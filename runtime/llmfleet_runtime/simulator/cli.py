"""``llmfleet engine-sim``: run one simulated vLLM engine behind an OpenAI-compatible API.

Who calls it: the ``llmfleet`` entry point (``main(argv)``), ``python -m
llmfleet_runtime.simulator``, pod specs of the e2e tier, and the launcher in tests.

Flags keep ``vllm serve``'s names where they mean the same (``--host``, ``--port``,
``--model``, ``--served-model-name``, ``--max-num-seqs``, ``--max-model-len``,
``--max-num-batched-tokens``, ``--block-size``, ``--num-gpu-blocks-override``,
``--[no-]enable-prefix-caching``, ``--[no-]enable-chunked-prefill``, ``--seed``,
``--shutdown-timeout``), so a pod spec can swap one for the other; other ``vllm serve``
flags are accepted and ignored (give the model with ``--model``, not positionally, so an
ignored flag's value is never taken for it). Simulator-only flags: ``--profile``, ``--time-scale``,
``--startup-delay``, ``--mean-output-tokens`` and the ``--fault-*`` switches.

Shutdown follows vLLM's ``--shutdown-timeout``: on SIGTERM, 0 exits at once; N > 0 stops
taking new requests (503) and lets in-flight ones finish for up to N seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence

from aiohttp import web

from .faults import Faults
from .profiles import PROFILES, get_profile
from .server import STATE, SimSettings, create_app

log = logging.getLogger("llmfleet.engine_sim")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and ``--help``)."""
    p = argparse.ArgumentParser(prog="llmfleet engine-sim", description=__doc__.split("\n")[0])
    p.add_argument("--model", help="model name or path (reported as the models' root)")
    p.add_argument("--served-model-name", nargs="+", help="names the API answers to")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--profile", default="fast", choices=sorted(PROFILES))
    p.add_argument("--max-num-seqs", type=int)
    p.add_argument("--max-model-len", type=int)
    p.add_argument("--max-num-batched-tokens", type=int)
    p.add_argument("--block-size", type=int)
    p.add_argument("--num-gpu-blocks-override", type=int)
    p.add_argument("--enable-prefix-caching", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--enable-chunked-prefill", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shutdown-timeout", type=int, default=0, help="seconds to drain on SIGTERM")
    p.add_argument(
        "--headless",
        action="store_true",
        help="a worker of a multi-node group: serve nothing (the leader models the group)",
    )
    p.add_argument("--time-scale", type=float, default=1.0, help="engine seconds per wall second")
    p.add_argument("--startup-delay", type=float, default=0.0, help="seconds before listening")
    p.add_argument("--mean-output-tokens", type=int, default=128)
    p.add_argument("--fault-slowdown", type=float, default=1.0)
    p.add_argument("--fault-hang", action="store_true")
    p.add_argument("--fault-crash-after", type=float)
    p.add_argument("--fault-error-rate", type=float, default=0.0)
    return p


def settings_from_args(args: argparse.Namespace) -> SimSettings:
    """Turn parsed flags into :class:`SimSettings` (pure)."""
    overrides = {
        "max_num_seqs": args.max_num_seqs,
        "max_model_len": args.max_model_len,
        "max_num_batched_tokens": args.max_num_batched_tokens,
        "block_size": args.block_size,
        "num_gpu_blocks": args.num_gpu_blocks_override,
    }
    profile = get_profile(args.profile).with_overrides(**{k: v for k, v in overrides.items() if v})
    model = args.model or profile.name
    names = tuple(args.served_model_name or [model])
    faults = Faults()
    faults.update(
        {
            "slowdown": args.fault_slowdown,
            "hang": args.fault_hang,
            "crash_after": args.fault_crash_after,
            "error_rate": args.fault_error_rate,
        }
    )
    return SimSettings(
        profile=profile,
        served_model_names=names,
        model_root=model,
        time_scale=args.time_scale,
        seed=args.seed,
        mean_output_tokens=args.mean_output_tokens,
        enable_prefix_caching=args.enable_prefix_caching,
        enable_chunked_prefill=args.enable_chunked_prefill,
        faults=faults,
    )


async def serve(
    settings: SimSettings,
    host: str,
    port: int,
    *,
    startup_delay: float = 0.0,
    shutdown_timeout: float = 0.0,
) -> int:
    """Serve until SIGTERM/SIGINT, then drain as vLLM's ``--shutdown-timeout`` does."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    started = time.monotonic()
    try:
        await asyncio.wait_for(stop.wait(), startup_delay)
        return 0  # stopped while "loading the model"
    except TimeoutError:
        pass
    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    log.info(
        "Serving %s (profile %s) on %s:%d",
        ",".join(settings.served_model_names),
        settings.profile.name,
        host,
        port,
    )
    state = app[STATE]
    faults = settings.faults
    while not stop.is_set():
        if faults.crash or (
            faults.crash_after is not None and time.monotonic() - started >= faults.crash_after
        ):
            log.error("Simulated crash")
            os._exit(1)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.05)
    state.draining = True
    deadline = time.monotonic() + shutdown_timeout
    log.info(
        "Draining %d in-flight requests for up to %.0fs", state.driver.in_flight, shutdown_timeout
    )
    while state.driver.in_flight and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await runner.cleanup()
    return 0


async def idle_as_worker() -> int:
    """A headless worker, as vLLM runs one: no HTTP, alive until SIGTERM/SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("Headless worker: serving nothing; the group's leader models its GPUs")
    await stop.wait()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``llmfleet engine-sim``."""
    args, unknown = build_parser().parse_known_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if unknown:
        log.info("Ignoring vllm serve flags the simulator does not model: %s", " ".join(unknown))
    try:
        settings = settings_from_args(args)
    except (KeyError, ValueError) as exc:
        print(f"engine-sim: {exc}", file=sys.stderr)
        return 2
    if args.headless:
        return asyncio.run(idle_as_worker())
    return asyncio.run(
        serve(
            settings,
            args.host,
            args.port,
            startup_delay=args.startup_delay,
            shutdown_timeout=float(args.shutdown_timeout),
        )
    )
