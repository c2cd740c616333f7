"""Our gateway at several commits, and vllm-router cache_aware, in one run of the gateway bench.

    flock /tmp/llmfleet-heavy.lock .venv/bin/python bench/gateway/commits.py REV [REV...]

Is a change in the gateway's figures from one run to the next ours, or the machine's? Each
``REV`` is checked out in a temporary git worktree and run from it (its packages first on
``PYTHONPATH``, this checkout's venv for the dependencies), beside the working tree's
gateway, each measured twice in turn, interleaved, with vllm-router cache_aware in the
middle, all by ``run.py``'s steps. Writes bench/results/gateway-commits.json and .md (the
table of ``run.py``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))
import run  # bench/gateway/run.py: the steps, the engines and the load
from contenders import REPO, Contender, _ours, _router

PACKAGES = ("gateway", "contract", "cli", "operator", "runtime", "fleetsim")
OUT = REPO / "bench" / "results" / "gateway-commits.json"


def _worktree(stack: ExitStack, rev: str, folder: Path) -> tuple[str, Path]:
    """``rev`` checked out under ``folder``, removed on the way out; its short hash."""
    short = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", rev],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    path = folder / short
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(path), rev], check=True
    )
    stack.callback(
        subprocess.run, ["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)]
    )
    return short, path


def _at(short: str, path: Path, turn: int) -> Contender:
    dirs = ":".join(str(path / package) for package in PACKAGES)
    label = f"llmfleet gateway at {short}" + (" (again)" if turn else "")
    return Contender(f"{short}-{turn}", label, _ours(), environment=(("PYTHONPATH", dirs),))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("revs", nargs="+", metavar="REV", help="a commit to measure (repeatable)")
    p.add_argument("--seconds", type=float, default=5.0, help="length of each step")
    args = p.parse_args(argv)
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gateway-at-")))
        trees = [_worktree(stack, rev, folder) for rev in args.revs]
        tree = "llmfleet gateway, this working tree"
        contenders = (
            Contender("direct", "direct (no proxy)", None),
            *(_at(short, path, 0) for short, path in trees),
            Contender("tree-0", tree, _ours()),
            Contender("router", "vllm-router cache_aware", _router("cache_aware")),
            *(_at(short, path, 1) for short, path in trees),
            Contender("tree-1", f"{tree} (again)", _ours()),
        )
        argv = ["--no-overload", "--seconds", str(args.seconds), "--out", str(OUT)]
        return run.main(argv, contenders)


if __name__ == "__main__":
    sys.exit(main())
