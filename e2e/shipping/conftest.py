"""Fixtures of the shipping tier: the chart installed with the images built here, its pods run
by a real kubelet.

``LLMFLEET_TARGET`` picks the cluster: ``local`` (default) brings up the local control plane
with its real node (the e2e tier's ``cluster`` fixture, with ``LLMFLEET_REAL_NODE=1``);
``kind`` uses the cluster ``KUBECONFIG`` names, made by `e2e/shipping/kind.sh`. The steps
after that are the same (`ship.py`). Run alone (`make test-ship`): the chart's own operator
runs here, and the e2e tier's local operator must not reconcile the same objects.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Generator, Iterator
from pathlib import Path

import kubernetes
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ship
from node_fixtures import real_node  # noqa: F401

TARGET = os.environ.get("LLMFLEET_TARGET", "local")
if TARGET == "local":
    os.environ["LLMFLEET_REAL_NODE"] = "1"  # read by `cluster.sh up` (the cluster fixture)

TENANTS = "shipping"
_build_errors: list[str] = []


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build what is slow when cold (the control plane with its kubelet, the images: minutes)
    before any test's timeout starts; the fixtures then find them cached."""
    builds = [["bash", str(ship.REPO / "images" / "build.sh")]]
    if TARGET == "local":
        builds.append(["bash", str(ship.REPO / "e2e" / "controlplane" / "build.sh")])
    for argv in builds:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=3600, check=False)
        if result.returncode != 0:
            _build_errors.append(f"{' '.join(argv)}:\n{result.stderr[-5000:]}")


@pytest.fixture(scope="session")
def target(request: pytest.FixtureRequest) -> ship.Target:
    if _build_errors:
        pytest.fail("building failed:\n" + "\n".join(_build_errors), pytrace=False)
    if TARGET == "kind":
        return ship.Kind(os.environ.get("KIND_CLUSTER", "llmfleet"), Path(os.environ["KUBECONFIG"]))
    if TARGET != "local":
        pytest.fail(f"LLMFLEET_TARGET={TARGET}: expected local or kind", pytrace=False)
    request.getfixturevalue("real_node")  # the local control plane, with its real node
    state = request.getfixturevalue("cluster").state
    return ship.local(state, int(os.environ.get("LLMFLEET_CLUSTER_PORT_BASE", "16400")))


@pytest.fixture(scope="session")
def kubeconfig(target: ship.Target) -> Path:
    return target.kubeconfig


@pytest.fixture(scope="session")
def images(target: ship.Target) -> ship.Images:
    built = ship.build_images()
    target.load(list(built.refs.values()))
    ship.prepare_nodes(target.kubeconfig, target.nodes())
    return built


@pytest.fixture(scope="session")
def release(target: ship.Target, images: ship.Images, kubeconfig: Path) -> str:
    """The chart installed, its operator and gateway pods ready; the namespace of the tenants
    and models the tests create (the last test uninstalls it)."""
    ship.kubectl(kubeconfig, "apply", "-f", "-", stdin=_namespace(TENANTS))
    ship.install(kubeconfig, ship.chart_values(target, images, TENANTS))
    return TENANTS


def _namespace(name: str) -> str:
    return f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n"


@pytest.fixture(scope="session")
def api(kubeconfig: Path) -> Iterator[kubernetes.client.ApiClient]:
    client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    yield client
    client.close()


def _state(kubeconfig: Path) -> str:
    """Pods, events and the chart's pods' log tails: what one needs to see why a test of this
    tier failed."""
    parts = []
    commands = [
        ("get", "pods", "-A", "-o", "wide"),
        ("get", "llmdeployments", "-A", "-o", "wide"),
        ("get", "events", "-A", "--sort-by=.lastTimestamp"),
        *(
            ("logs", "-n", ship.SYSTEM, "--tail=30", "--prefix", "-l", selector)
            for selector in (
                "app.kubernetes.io/component=operator",
                "app.kubernetes.io/component=gateway",
            )
        ),
    ]
    for args in commands:
        argv = ["kubectl", f"--kubeconfig={kubeconfig}", *args]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        lines = (result.stdout + result.stderr).splitlines()[-60:]
        parts.append(f"$ kubectl {' '.join(args)}\n" + "\n".join(lines))
    return "\n\n".join(parts)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item,
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    found = getattr(item, "funcargs", {}).get("kubeconfig")
    if report.failed and isinstance(found, Path):
        try:
            report.sections.append(("shipping state", _state(found)))
        except (OSError, subprocess.SubprocessError) as error:
            report.sections.append(("shipping state", f"could not collect: {error}"))
    return report
