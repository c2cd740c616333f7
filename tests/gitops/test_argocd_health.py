"""The Argo CD health check (gitops/argocd/health-llmdeployment.lua) run by Lua 5.1, the
language of Argo CD's gopher-lua, with only the libraries Argo CD opens.

Cases: every real status snapshot reads as its row of ``VERDICTS`` (Healthy, Progressing for
a rollout, a scale-up, an unobserved spec and a fresh object, Degraded with the condition's
message, Suspended at spec.replicas 0, Healthy when autoscaled to zero); conditions the
operator never writes read Unknown; the argocd-cm snippet carries the script verbatim.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from lupa import lua51

from tests.gitops.snapshots import HEALTH_LUA, SNAPSHOTS, VERDICTS, load

# Argo CD opens only the base, package and table libraries (and a safe os) for health
# checks: drop the rest, so that a script using them fails here as it would there.
ARGOCD_LIBRARIES = """
string, math, io, debug, coroutine = nil, nil, nil, nil, nil
getmetatable("").__index = nil
"""


def health(obj: dict[str, Any]) -> dict[str, str]:
    lua = lua51.LuaRuntime()
    lua.execute(ARGOCD_LIBRARIES)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(HEALTH_LUA.read_text())
    return {str(key): str(value) for key, value in result.items()}


def test_every_snapshot_has_a_verdict() -> None:
    assert {path.stem for path in SNAPSHOTS.glob("*.json")} == set(VERDICTS)


@pytest.mark.parametrize("case", sorted(VERDICTS))
def test_snapshot_health(case: str) -> None:
    expected = VERDICTS[case]
    found = health(load(case))
    assert found["status"] == expected.argocd
    assert found["message"].startswith(expected.message), found["message"]


def test_the_degraded_message_is_the_operators() -> None:
    obj = load("insufficient-gpus")
    [degraded] = [c for c in obj["status"]["conditions"] if c["type"] == "Degraded"]
    assert health(obj)["message"] == f"InsufficientGPUs: {degraded['message']}"


def test_an_external_autoscaler_at_zero_is_healthy() -> None:
    obj = load("scaled-to-zero")
    obj["spec"].pop("replicas")
    obj["spec"]["autoscaling"] = {"mode": "External", "minReplicas": 0, "maxReplicas": 4}
    assert health(obj)["status"] == "Healthy"


def test_conditions_without_ready_read_unknown() -> None:
    obj = copy.deepcopy(load("ready"))
    obj["status"]["conditions"] = [
        c for c in obj["status"]["conditions"] if c["type"] not in ("Ready",)
    ]
    assert health(obj) == {
        "status": "Unknown",
        "message": "The llmfleet operator reports no Ready condition",
    }


def test_a_script_using_the_string_library_fails_here_as_in_argocd() -> None:
    lua = lua51.LuaRuntime()
    lua.execute(ARGOCD_LIBRARIES)
    with pytest.raises(lua51.LuaError):
        lua.execute('return string.format("%d", 1)')
    with pytest.raises(lua51.LuaError):
        lua.execute('return ("x"):upper()')


def test_argocd_cm_carries_the_script_verbatim() -> None:
    cm = yaml.safe_load((HEALTH_LUA.parent / "argocd-cm.yaml").read_text())
    assert cm["data"]["resource.customizations.health.llmfleet.io_LLMDeployment"] == (
        HEALTH_LUA.read_text()
    )
