"""Session fixtures of the e2e tier: one local control plane for the whole run.

`cluster` brings the control plane up with `bash e2e/cluster.sh up` unless it is
already up, and takes it down at the end only if this session started it. If it
cannot start, every test that needs it errors with the reason (never a skip).
The cold Go build runs during collection, where the per-test timeout does not
apply. When a test that used the cluster fails, its report gets a section with
the cluster's objects, recent events and the tails of the component and pod
process logs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import kubernetes
import pytest

E2E = Path(__file__).resolve().parent
sys.path.insert(0, str(E2E))  # the helpers beside this file (kit.py, localop.py, ...)
sys.path.insert(1, str(E2E.parent))  # tests.pages: test stand-ins shared with the fast tier

import localop  # noqa: E402
from kit import LocalPrometheus  # noqa: E402
from localop import LocalOperator  # noqa: E402

REPO = E2E.parent

_build_error: list[str] = []


@dataclass(frozen=True)
class Cluster:
    state: Path
    kubeconfig: Path


def _state_dir() -> Path:
    return Path(os.environ.get("LLMFLEET_STATE_DIR") or REPO / ".llmfleet").resolve()


def _run(*argv: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the control plane (minutes when cold) before any test's timeout starts."""
    if not any("cluster" in getattr(item, "fixturenames", ()) for item in session.items):
        return
    result = _run("bash", str(E2E / "controlplane" / "build.sh"), timeout=3600)
    if result.returncode != 0:
        _build_error.append(result.stderr[-5000:])


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    if _build_error:
        pytest.fail(f"building the control plane failed:\n{_build_error[0]}", pytrace=False)
    already_up = _run("bash", str(E2E / "cluster.sh"), "status", timeout=60).returncode == 0
    if not already_up:
        result = _run("bash", str(E2E / "cluster.sh"), "up", timeout=900)
        if result.returncode != 0:
            output = (result.stdout + result.stderr)[-5000:]
            pytest.fail(f"cluster-up failed (exit {result.returncode}):\n{output}", pytrace=False)
    state = _state_dir()
    yield Cluster(state=state, kubeconfig=state / "kubeconfig")
    if not already_up:
        _run("bash", str(E2E / "cluster.sh"), "down", timeout=120)


@pytest.fixture(scope="session")
def kubeconfig(cluster: Cluster) -> Path:
    return cluster.kubeconfig


@pytest.fixture(scope="session")
def api_client(kubeconfig: Path) -> Iterator[kubernetes.client.ApiClient]:
    client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    yield client
    client.close()


@pytest.fixture
def namespace(
    api_client: kubernetes.client.ApiClient, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A fresh namespace for one test, deleted (without waiting) afterwards."""
    name = f"e2e-{request.node.name[5:25].replace('_', '-').strip('-')}-{uuid.uuid4().hex[:5]}"
    core = kubernetes.client.CoreV1Api(api_client)
    core.create_namespace({"metadata": {"name": name}})  # type: ignore[arg-type]
    yield name
    core.delete_namespace(name)


@pytest.fixture(scope="session")
def operator(cluster: Cluster, kubeconfig: Path) -> Iterator[LocalOperator]:
    """The chart installed by helm and the operator run with its service account's token."""
    localop.down(cluster.state)  # never test an operator started from older code
    running = localop.up(kubeconfig, cluster.state)
    yield running
    running.stop()


@pytest.fixture
def prometheus(kubeconfig: Path, namespace: str, tmp_path: Path) -> Iterator[LocalPrometheus]:
    """A Prometheus discovering this test's namespace's pods through the API server."""
    running = LocalPrometheus(kubeconfig, namespace, tmp_path / "prometheus")
    running.configure()
    running.start()
    yield running
    running.stop()


# ---- state dump on failure -----------------------------------------------------------


def _tail(path: Path, lines: int) -> str:
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return f"--- {path} (last {len(text)} lines)\n" + "\n".join(text)


def cluster_state(state: Path) -> str:
    """Objects, events and log tails: what one needs to see why an e2e test failed."""
    env = {**os.environ, "KUBECONFIG": str(state / "kubeconfig")}
    parts = []
    kinds = "nodes,pods,deployments,replicasets,statefulsets,services,leaderworkersets"
    for argv in (
        ["kubectl", "get", kinds, "-A", "-o", "wide"],
        ["kubectl", "get", "events", "-A", "--sort-by=.lastTimestamp"],
    ):
        result = subprocess.run(
            argv, capture_output=True, text=True, env=env, timeout=30, check=False
        )
        # This API server refuses loopback endpoints (see README): that noise hides the rest.
        lines = (result.stdout + result.stderr).splitlines()
        output = [line for line in lines if "may not be in the loopback range" not in line][-60:]
        parts.append(f"$ {' '.join(argv)}\n" + "\n".join(output))
    parts += [_tail(log, 15) for log in sorted((state / "logs").glob("*.log"))]
    noise = "may not be in the loopback range"
    parts = ["\n".join(ln for ln in part.splitlines() if noise not in ln) for part in parts]
    parts += [_tail(log, 15) for log in sorted((state / "pods").glob("*/*/*.log"))[-10:]]
    return "\n\n".join(parts)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item,
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and "cluster" in getattr(item, "fixturenames", ()):
        state = _state_dir()
        if (state / "kubeconfig").exists():
            try:
                report.sections.append(("cluster state", cluster_state(state)))
            except (OSError, subprocess.SubprocessError) as error:
                report.sections.append(("cluster state", f"could not collect: {error}"))
    return report
