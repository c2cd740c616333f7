"""Property: the API server's view and the operator's view of a spec always agree.

``schema_errors`` (generated schema + CEL, as ``kubectl apply`` sees it) and
``model_errors`` (the pydantic models the operator builds) are two readings of one set
of declarations. For random specs around every rule's boundary, either both accept or
both refuse; a disagreement means the generator lost or invented a constraint.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from llmfleet_contract.validation import model_errors, schema_errors

# Mostly valid values, so that both verdicts are common; the odd ones sit on boundaries.
small = st.sampled_from([1, 1, 1, 2, 2, 4, 8, 8, 3, 0, 16, -1])
ratio = st.sampled_from([0.5, 0.8, 0.9, 1, 0.01, 0, 1.01])
int_or_percent = st.sampled_from([1, 1, 3, "25%", "25%", 0, "0%", -1, "x"])
maybe = st.booleans()


@st.composite
def manifests(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {
            "source": draw(st.sampled_from(["hf://o/m", "s3://b/p", "/m", "hf://o/m", "ftp://x"])),
        }
    }
    if draw(maybe):
        spec["model"]["servedNames"] = draw(st.lists(st.sampled_from(["a", "b"]), max_size=3))
    if draw(maybe):
        spec["model"]["loraAdapters"] = [{"name": "a", "source": "hf://o/lora"}]
    if draw(maybe):
        spec["parallelism"] = {
            "tensorParallelSize": draw(small),
            "pipelineParallelSize": draw(small),
            "gpusPerNode": draw(small),
        }
    if draw(maybe):
        spec["engine"] = {
            "gpuMemoryUtilization": draw(ratio),
            "extraArgs": draw(
                st.lists(
                    st.sampled_from(["--enforce-eager", "--seed=1", "-x", "--port=1", "-tp"]),
                    max_size=3,
                )
            ),
        }
    if draw(maybe):
        spec["replicas"] = draw(small)
    if draw(maybe):
        scaling: dict[str, Any] = {
            "mode": draw(st.sampled_from(["Builtin", "External", "External", "Other"])),
            "minReplicas": draw(small),
            "maxReplicas": draw(small),
            "scaleToZero": {"enabled": draw(maybe)},
            "targets": {"kvCacheUsage": draw(ratio), "slotsUsed": draw(ratio)},
            "scaleDown": {"maxStep": draw(int_or_percent)},
        }
        if draw(maybe):
            scaling["stableWindowSeconds"] = draw(st.sampled_from([5, 6, 30, 60]))
            scaling["panicWindowSeconds"] = draw(st.sampled_from([0, 6, 30, 90]))
        if draw(maybe):
            scaling["metrics"] = {
                "source": draw(st.sampled_from(["Direct", "Prometheus"])),
                **({"prometheusUrl": "http://p:9090"} if draw(maybe) else {}),
            }
        spec["autoscaling"] = scaling
    if draw(maybe):
        spec["serving"] = {
            "rollout": {"maxSurge": draw(int_or_percent), "maxUnavailable": draw(int_or_percent)}
        }
    return {
        "apiVersion": "llmfleet.io/v1alpha1",
        "kind": "LLMDeployment",
        "metadata": {"name": draw(st.sampled_from(["ok", "ok", "ok", "Not-Ok", "x" * 53]))},
        "spec": spec,
    }


@settings(max_examples=400, deadline=None)
@given(manifests())
def test_schema_and_model_agree(manifest: dict[str, Any]) -> None:
    by_schema = [str(e) for e in schema_errors(manifest)]
    by_model = [str(e) for e in model_errors(manifest)]
    assert bool(by_schema) == bool(by_model), {"schema": by_schema, "model": by_model}
