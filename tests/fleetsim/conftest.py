"""Shared fixtures of the fleet simulator tests: a small deployment, tiny synthetic traces."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from llmfleet_contract.api import LLMDeployment, LLMDeploymentSpec
from llmfleet_fleetsim import FleetView, Trace, trace_from_rows

DEPLOYMENT_YAML = """\
apiVersion: llmfleet.io/v1alpha1
kind: LLMDeployment
metadata:
  name: tiny
spec:
  model:
    source: hf://example/tiny
  engine:
    maxNumSeqs: 16
  parallelism:
    tensorParallelSize: 2
  autoscaling:
    minReplicas: 1
    maxReplicas: 4
"""


def deployment_spec(text: str = DEPLOYMENT_YAML) -> LLMDeploymentSpec:
    import yaml

    return LLMDeployment.model_validate(yaml.safe_load(text)).spec


@pytest.fixture
def spec() -> LLMDeploymentSpec:
    return deployment_spec()


@pytest.fixture
def deployment_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(DEPLOYMENT_YAML)
    return path


def steady(rate: float, seconds: float, prompt: int = 64, output: int = 16) -> Trace:
    """Requests evenly spaced at ``rate`` per second for ``seconds``."""
    count = int(rate * seconds)
    return trace_from_rows("steady", [(i / rate, prompt, output) for i in range(count)])


@dataclass
class Scripted:
    """A policy that asks for a replica count by time: ``plan`` is ``[(from_time, replicas)]``."""

    plan: list[tuple[float, int]]
    initial_replicas: int = 1
    period_s: float = 1.0
    name: str = "scripted"
    seen: list[FleetView] = field(default_factory=list)

    def decide(self, view: FleetView, now: float) -> int:
        self.seen.append(view)
        wanted = self.initial_replicas
        for start, replicas in self.plan:
            if now >= start:
                wanted = replicas
        return wanted
