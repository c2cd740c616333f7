"""The kstatus verdict (sigs.k8s.io/cli-utils, what Flux reads health with) on the real status
snapshots, computed by the library itself (gitops/kstatus, built and cached by its build.sh).

Cases: every snapshot reads as its row of ``VERDICTS``: Ready -> Current, a rollout and an
unobserved spec and a scale-up (Ready False) -> InProgress, Degraded/Stalled -> Failed with
the operator's message. One row is a known gap, marked strict xfail so that a fix shows:
kstatus calls an object without any status Current (its rule for resources without
conditions), so a Flux health check that runs before the operator's first status write passes.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.gitops.snapshots import REPO, SNAPSHOTS, VERDICTS, load

GAPS = {
    "fresh": "kstatus: an object with no status and no conditions is Current",
}


@pytest.fixture(scope="module")
def kstatus() -> Path:
    built = subprocess.run(
        ["bash", str(REPO / "gitops" / "kstatus" / "build.sh")],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    return Path(built.stdout.split()[-1])


@pytest.fixture(scope="module")
def verdicts(kstatus: Path) -> dict[str, dict[str, str]]:
    cases = sorted(VERDICTS)
    paths = [str(SNAPSHOTS / f"{case}.json") for case in cases]
    ran = subprocess.run([kstatus, *paths], capture_output=True, text=True, timeout=60, check=True)
    return dict(zip(cases, map(json.loads, ran.stdout.splitlines()), strict=True))


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(case, marks=pytest.mark.xfail(strict=True, reason=GAPS[case]))
        if case in GAPS
        else case
        for case in sorted(VERDICTS)
    ],
)
def test_snapshot_kstatus(case: str, verdicts: dict[str, dict[str, str]]) -> None:
    assert verdicts[case]["status"] == VERDICTS[case].kstatus, verdicts[case]


@pytest.mark.parametrize("case", ["insufficient-gpus", "missing-pvc", "child-conflict"])
def test_failed_carries_the_operators_message(
    case: str, verdicts: dict[str, dict[str, str]]
) -> None:
    [stalled] = [c for c in load(case)["status"]["conditions"] if c["type"] == "Stalled"]
    assert verdicts[case]["message"] == stalled["message"]


def test_reads_yaml_lists_from_stdin(kstatus: Path) -> None:
    listed = {"apiVersion": "v1", "kind": "List", "items": [load("ready"), load("not-observed")]}
    ran = subprocess.run(
        [kstatus], input=json.dumps(listed), capture_output=True, text=True, check=True
    )
    assert [json.loads(line)["status"] for line in ran.stdout.splitlines()] == [
        "Current",
        "InProgress",
    ]
