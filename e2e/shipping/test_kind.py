"""What `make kind` runs besides kind's own cluster: kind.sh builds the pinned kind from its
Go module (cached) when none is on PATH. The rest of `make kind` is this folder's tests,
whose steps (`ship.py`) the local target runs here too; only `kind create cluster` and
`kind load` need Docker and kind's node image."""

from __future__ import annotations

import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent


def test_kind_sh_builds_the_pinned_kind() -> None:
    found = subprocess.run(
        ["bash", str(HERE / "kind.sh"), "--binary"],
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    )
    kind = found.stdout.strip().splitlines()[-1]
    version = subprocess.run([kind, "version"], capture_output=True, text=True, check=True)
    pinned = next(
        line.split("=", 1)[1]
        for line in (HERE / "kind.sh").read_text().splitlines()
        if line.startswith("KIND_VERSION=")
    )
    assert version.stdout.startswith(f"kind {pinned} "), version.stdout
