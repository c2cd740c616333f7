"""The layers hold at run time, not only in import-linter's graph.

Cases, each in a fresh interpreter: the contract's API, metrics, pods, engine and exposition
modules (and ``llmfleet validate``) load no Kubernetes client, kopf, aiohttp, HTTP library or
Prometheus client; the operator's reconcile loads no kopf, Kubernetes client, engine
simulator or fleet simulator.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("kubernetes", "kopf", "aiohttp", "httpx", "requests", "prometheus_api_client")


def loaded_after(statement: str, watched: tuple[str, ...]) -> list[str]:
    """The modules under ``watched`` (dotted prefixes) that ``statement`` loads."""
    probe = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    loaded: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return [m for m in loaded if any(m == w or m.startswith(w + ".") for w in watched)]


@pytest.mark.parametrize(
    "statement",
    [
        "import llmfleet_contract.api",
        "import llmfleet_contract.metrics, llmfleet_contract.exposition",
        "import llmfleet_contract.pods, llmfleet_contract.labels, llmfleet_contract.engine",
        "from llmfleet_contract.commands import validate",
    ],
)
def test_the_contract_loads_nothing_heavy(statement: str) -> None:
    assert loaded_after(statement, (*HEAVY, "prometheus_client")) == []


def test_the_reconcile_runs_without_kopf_the_client_or_the_simulators() -> None:
    watched = ("kubernetes", "kopf", "llmfleet_fleetsim", "llmfleet_runtime.simulator")
    assert loaded_after("import llmfleet_operator.reconcile", watched) == []
