"""``llmfleet launch``: start this pod's part of a vLLM serving group, and drain it.

Who calls it: the ``llmfleet`` entry point (``main(argv)``) as the container command of
every engine pod the operator creates.

Steps: load the engine config (``--config FILE`` or ``$LLMFLEET_ENGINE_CONFIG``), work
out the pod's role (single node, or LeaderWorkerSet leader / worker), check the visible
GPUs, build the ``vllm serve`` command, run it under :func:`.supervisor.run_engine`.
``--print`` shows the command instead of running it.

Exit status: the engine's; 2 for a bad config, 3 when the visible GPUs do not match the
group, 4 for a bad group environment.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from .argv import GroupError, build_argv, group_role
from .config import BIND_HOST_ENV, load_config
from .gpus import gpu_problem, visible_gpus
from .supervisor import run_engine

EXIT_CONFIG = 2
EXIT_GPUS = 3
EXIT_GROUP = 4

log = logging.getLogger("llmfleet.launcher")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``llmfleet launch``."""
    parser = argparse.ArgumentParser(prog="llmfleet launch", description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, help="engine config file (JSON or YAML)")
    parser.add_argument("--print", action="store_true", help="print the engine command and exit")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    env = dict(os.environ)
    try:
        config = load_config(args.config, env)
    except (OSError, ValueError, ValidationError) as exc:
        print(f"llmfleet launch: invalid engine config: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if env.get(BIND_HOST_ENV):  # pods sharing one network stack (the local pod runner)
        config = config.model_copy(update={"host": env[BIND_HOST_ENV]})
    try:
        role = group_role(config, env)
    except (GroupError, ValueError) as exc:
        print(f"llmfleet launch: {exc}", file=sys.stderr)
        return EXIT_GROUP
    command = build_argv(config, role)
    if args.print:
        print(shlex.join(command))
        return 0
    problem = gpu_problem(config, visible_gpus(env) if config.gpu_check else 0)
    if problem:
        print(f"llmfleet launch: refusing to start: {problem}", file=sys.stderr)
        return EXIT_GPUS
    what = "leader" if role.is_leader else f"worker {role.rank}"
    log.info("Starting engine (%s of %d node(s)): %s", what, role.nodes, shlex.join(command))
    return run_engine(command, drain_timeout=config.drain_timeout_seconds, env=env)
